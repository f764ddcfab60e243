"""SCP upload and download against a real sshd (the server runs on this machine,
so remote paths are local paths in the test's temporary directory)."""

import hashlib
import os
import re
import stat
import subprocess
import sys
import textwrap
import time

import pytest

import pyssh
from pyssh import _ssh

from conftest import (
    connection_killer,
    download_killed_midway,
    interrupt_download,
    interrupted_child,
    run_while_python_counts,
)


@pytest.fixture
def session(server):
    with server.connect() as s:
        yield s


@pytest.fixture
def area(tmp_path):
    """local/, remote/ and back/ directories the server can use."""
    os.chmod(tmp_path, 0o755)
    dirs = {}
    for name in ("local", "remote", "back"):
        d = tmp_path / name
        d.mkdir()
        dirs[name] = d
    return dirs


def digest(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def tree(root):
    """{relative path: (kind, mode, sha256 or None)} of everything under root."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            st = os.stat(p)
            if stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode), None)
            else:
                out[rel] = ("file", stat.S_IMODE(st.st_mode), digest(p))
    return out


def make_tree(root):
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "sub" / "empty too").mkdir()
    files = {
        "empty.txt": b"",
        "one.bin": b"x",
        ".hidden": b"hidden file\n",
        "sub/.hidden dir file": b"h",
        "sub/deeper/data.bin": os.urandom(300_000),
        "with space and 'quote'.txt": b"q",
        "ünïcødé ✓.txt": "ü".encode(),
        "dollar $HOME `id`.txt": b"$",
    }
    for rel, data in files.items():
        (root / rel).write_bytes(data)
    os.chmod(root / "one.bin", 0o600)
    os.chmod(root / "sub" / "deeper" / "data.bin", 0o755)
    os.chmod(root / "empty.txt", 0o644)
    os.chmod(root / "sub", 0o750)
    return files


@pytest.mark.slow
def test_tree_round_trip(session, area):
    src = area["local"] / "tree"
    src.mkdir()
    make_tree(src)
    target = tree(src)
    written = session.scp_upload(src, to=str(area["remote"]), verbose=False)
    assert written == [f"{area['remote']}/tree"]
    assert tree(area["remote"] / "tree") == target
    got = session.scp_download(str(area["remote"] / "tree"), to=area["back"], verbose=False)
    assert got == [str(area["back"] / "tree")]
    assert tree(area["back"] / "tree") == target
    assert not [p for p in os.listdir(area["back"] / "tree") if p.endswith(".pyssh-part")]


@pytest.mark.slow
@pytest.mark.parametrize("size", [0, 1, 100 << 20])
def test_file_round_trip(session, area, size):
    src = area["local"] / f"f{size}"
    with open(src, "wb") as f:
        for _ in range(size >> 20):
            f.write(os.urandom(1 << 20))
        f.write(os.urandom(size & ((1 << 20) - 1)))
    session.scp_upload(str(src), to=str(area["remote"]), verbose=False)
    assert digest(area["remote"] / src.name) == digest(src)
    session.scp_download(str(area["remote"] / src.name), to=str(area["back"]), verbose=False)
    assert digest(area["back"] / src.name) == digest(src)
    assert os.path.getsize(area["back"] / src.name) == size


@pytest.mark.slow
def test_many_small_files(session, area):
    src = area["local"] / "many"
    src.mkdir()
    for i in range(1000):
        (src / f"f{i:04d}").write_bytes(os.urandom(4096))
    session.scp_upload(src, to=str(area["remote"]), verbose=False)
    session.scp_download(str(area["remote"] / "many"), to=area["back"], verbose=False)
    assert tree(area["back"] / "many") == tree(src)


@pytest.mark.slow
def test_several_sources_and_a_symlink(session, area):
    a = area["local"] / "a.txt"
    a.write_bytes(b"A")
    link = area["local"] / "link.txt"
    os.symlink(a, link)
    written = session.scp_upload([a, str(link)], to=str(area["remote"]), verbose=False)
    assert written == [f"{area['remote']}/a.txt", f"{area['remote']}/link.txt"]
    # followed, as scp does: a regular file arrives
    assert not os.path.islink(area["remote"] / "link.txt")
    assert (area["remote"] / "link.txt").read_bytes() == b"A"
    # and down: a symlink on the server, at the top and inside a directory
    os.symlink(area["remote"] / "a.txt", area["remote"] / "rlink.txt")
    (area["remote"] / "d").mkdir()
    os.symlink(area["remote"] / "a.txt", area["remote"] / "d" / "inner link")
    session.scp_download(
        [str(area["remote"] / "rlink.txt"), str(area["remote"] / "d")],
        to=area["back"],
        verbose=False,
    )
    for got in (area["back"] / "rlink.txt", area["back"] / "d" / "inner link"):
        assert not os.path.islink(got) and got.read_bytes() == b"A"


@pytest.mark.slow
def test_preserve_keeps_times(session, area):
    src = area["local"] / "old"
    src.mkdir()
    f = src / "f.txt"
    f.write_bytes(b"old")
    os.utime(f, (1_000_000_000, 1_100_000_000))
    os.utime(src, (1_200_000_000, 1_300_000_000))
    session.scp_upload(src, to=str(area["remote"]), verbose=False, preserve=True)
    assert int(os.stat(area["remote"] / "old" / "f.txt").st_mtime) == 1_100_000_000
    assert int(os.stat(area["remote"] / "old").st_mtime) == 1_300_000_000
    session.scp_download(str(area["remote"] / "old"), to=area["back"], verbose=False, preserve=True)
    assert int(os.stat(area["back"] / "old" / "f.txt").st_mtime) == 1_100_000_000
    assert int(os.stat(area["back"] / "old" / "f.txt").st_atime) == 1_000_000_000
    assert int(os.stat(area["back"] / "old").st_mtime) == 1_300_000_000
    # without preserve, times are now
    session.scp_download(str(area["remote"] / "old" / "f.txt"), to=area["local"], verbose=False)
    assert os.stat(area["local"] / "f.txt").st_mtime > time.time() - 60


@pytest.mark.slow
def test_remote_names_are_quoted(session, area, tmp_path):
    weird = area["remote"] / "a 'b' \"c\" $d `e` ü;f"
    weird.mkdir()
    src = area["local"] / "x.txt"
    src.write_bytes(b"x")
    session.scp_upload(src, to=str(weird), verbose=False)
    assert (weird / "x.txt").read_bytes() == b"x"
    session.scp_download(str(weird / "x.txt"), to=area["back"], verbose=False)
    assert (area["back"] / "x.txt").read_bytes() == b"x"
    # no remote shell injection
    marker = tmp_path / "injected"
    with pytest.raises(pyssh.SCPError):
        session.scp_download(f"nothing; touch {marker}", to=area["back"], verbose=False)
    with pytest.raises(pyssh.SCPError):
        session.scp_download(f"$(touch {marker})", to=area["back"], verbose=False)
    with pytest.raises(pyssh.SCPError):
        session.scp_download(f"`touch {marker}`", to=area["back"], verbose=False)
    for to in (
        f"nothing; touch {marker}",
        f"$(touch {marker})",
        f"`touch {marker}`",
        f"~/$(touch {marker})",
    ):
        with pytest.raises(pyssh.SCPError):
            session.scp_upload(src, to=to, verbose=False)
    assert not marker.exists()


@pytest.mark.slow
def test_missing_remote_file(session, area):
    missing = str(area["remote"] / "nope.txt")
    with pytest.raises(pyssh.SCPFileNotFoundError) as ei:
        session.scp_download(missing, to=area["back"], verbose=False)
    e = ei.value
    assert isinstance(e, FileNotFoundError) and isinstance(e, pyssh.SCPError)
    assert e.filename == missing and "No such file" in str(e)
    assert os.listdir(area["back"]) == []
    assert session.exec_internal("echo usable").stdout == b"usable\n"


def test_one_missing_among_several_still_fetches_the_rest(session, area):
    (area["remote"] / "here.txt").write_bytes(b"here")
    with pytest.raises(pyssh.SCPFileNotFoundError):
        session.scp_download(
            [str(area["remote"] / "gone.txt"), str(area["remote"] / "here.txt")],
            to=area["back"],
            verbose=False,
        )
    assert (area["back"] / "here.txt").read_bytes() == b"here"


def test_upload_into_missing_remote_directory(session, area):
    src = area["local"] / "x.txt"
    src.write_bytes(b"x")
    with pytest.raises(pyssh.SCPError, match="No such file|not a directory"):
        session.scp_upload(src, to=str(area["remote"] / "no" / "such"), verbose=False)


def test_local_errors_before_any_traffic(session, area):
    with pytest.raises(FileNotFoundError):
        session.scp_upload(area["local"] / "missing", to=str(area["remote"]), verbose=False)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        session.scp_download("x", to=area["back"] / "missing", verbose=False)
    (area["back"] / "file").write_bytes(b"")
    with pytest.raises(NotADirectoryError):
        session.scp_download("x", to=area["back"] / "file", verbose=False)
    with pytest.raises(TypeError):
        session.scp_upload(b"bytes", verbose=False)
    with pytest.raises(ValueError):
        session.scp_upload([], verbose=False)
    with pytest.raises(ValueError, match="name the files"):
        session.scp_download("~", to=area["back"], verbose=False)


def test_wrong_argument_types(session, area):
    src = area["local"] / "x.txt"
    src.write_bytes(b"x")
    for call, where in ((session.scp_upload, "remote"), (session.scp_download, "local")):
        with pytest.raises(
            TypeError, match=f"to must be the {where} directory as str or os.PathLike, not bytes"
        ):
            call(str(src), to=os.fsencode(area["back"]), verbose=False)
        with pytest.raises(TypeError, match=f"to must be the {where} directory .* not int"):
            call(str(src), to=5, verbose=False)
        with pytest.raises(TypeError, match="a path or a sequence of paths"):
            call(5, to=str(area["back"]), verbose=False)
        with pytest.raises(TypeError, match="progress must be a callable"):
            call(str(src), to=str(area["back"]), verbose=False, progress=3)
    assert os.listdir(area["back"]) == []


@pytest.mark.slow
def test_progress_and_verbose(session, area, capsys):
    src = area["local"] / "p.bin"
    src.write_bytes(os.urandom(5 << 20))
    calls = []
    session.scp_upload(src, to=str(area["remote"]), progress=lambda *a: calls.append(a))
    assert calls[-1] == (str(src), 5 << 20, 5 << 20)
    assert all(0 <= moved <= total for _, moved, total in calls)
    out, err = capsys.readouterr()
    assert err.endswith(f"\r[100%] {src}\n") and out == ""  # on stderr only
    calls.clear()
    session.scp_download(
        str(area["remote"] / "p.bin"), to=area["back"], progress=lambda *a: calls.append(a)
    )
    assert calls[-1] == (str(area["back"] / "p.bin"), 5 << 20, 5 << 20)
    assert capsys.readouterr().err == f"{5 << 20:>10} {area['back'] / 'p.bin'}\n"


def test_progress_at_each_files_end(session, area, capsys):
    src = area["local"] / "d"
    (src / "sub").mkdir(parents=True)
    sizes = {"a": 0, "b": 1, "sub/c": 70_000}
    for rel, n in sizes.items():
        (src / rel).write_bytes(os.urandom(n))
    calls = []
    session.scp_upload(src, to=str(area["remote"]), progress=lambda *a: calls.append(a))
    ends = [c for c in calls if c[1] == c[2]]
    assert sorted(ends) == sorted((str(src / rel), n, n) for rel, n in sizes.items())
    assert capsys.readouterr().err.count("[100%] ") == 3
    calls.clear()
    session.scp_download(
        str(area["remote"] / "d"), to=area["back"], progress=lambda *a: calls.append(a)
    )
    ends = [c for c in calls if c[1] == c[2]]
    assert sorted(ends) == sorted((str(area["back"] / "d" / rel), n, n) for rel, n in sizes.items())
    assert sorted(capsys.readouterr().err.splitlines()) == sorted(
        f"{n:>10} {area['back'] / 'd' / rel}" for rel, n in sizes.items()
    )


class Stop(Exception):
    pass


@pytest.mark.slow
def test_raising_progress_stops_an_upload(session, area, capsys):
    """Raising from progress aborts an upload; verbose redrew [NN%] in place a few
    times a second, and the line is ended before the exception goes on."""
    src = area["local"] / "big.bin"
    with open(src, "wb") as f:
        f.truncate(4 << 30)  # sparse: read fast, seconds to send
    calls = []

    def stop(path, moved, total):
        calls.append((path, moved, total))
        if len(calls) == 3:
            raise Stop()

    with pytest.raises(Stop):
        session.scp_upload(src, to=str(area["remote"]), progress=stop)
    moved = [m for _, m, _ in calls]
    assert all(p == str(src) and t == 4 << 30 for p, _, t in calls)
    assert 0 < moved[0] < moved[1] < moved[2] < 4 << 30
    err = capsys.readouterr().err
    assert err.endswith("\n") and err.count("\n") == 1  # one line, ended after the stop
    draws = err.rstrip("\n").split("\r")
    assert draws[0] == ""  # each drawn over the last, from the start of the line
    # drawn after each progress call (not the third, which raised)
    assert [
        d for d in draws[1:] if re.fullmatch(r"\[ *\d{1,2}%\] " + re.escape(str(src)), d)
    ] == draws[1:]
    assert len(draws[1:]) == 2
    assert session.exec_internal("echo usable").stdout == b"usable\n"


@pytest.mark.slow
def test_upload_of_a_file_that_shrinks_midway(session, area):
    src = area["local"] / "shrinks.bin"
    with open(src, "wb") as f:
        f.truncate(4 << 30)

    def shrink(path, moved, total):
        if moved < total:
            os.truncate(src, 1000)

    with pytest.raises(OSError) as ei:
        session.scp_upload(src, to=str(area["remote"]), verbose=False, progress=shrink)
    assert not isinstance(ei.value, pyssh.SSHError)
    assert ei.value.filename == str(src) and "changed while it was being sent" in str(ei.value)
    assert session.exec_internal("echo usable").stdout == b"usable\n"


WRITE_FAILS_CHILD = textwrap.dedent("""
    import os, resource, signal, sys, pyssh
    address, key, known_hosts, remote, to = sys.argv[1:6]
    s = pyssh.connect(address, keyfile=key, known_hosts=known_hosts, config=False)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (8 << 20, resource.RLIM_INFINITY))
    try:
        s.scp_download(remote, to=to, verbose=False)
    except OSError as e:
        print(type(e).__name__, isinstance(e, pyssh.SSHError), e.errno, e.filename)
    print(sorted(os.listdir(to)))
    print(s.exec_internal("echo usable").stdout.decode().strip())
""")


@pytest.mark.slow
def test_local_write_error_mid_download(server, area):
    """The local disk refuses (here RLIMIT_FSIZE: EFBIG) midway: an OSError with the
    destination's path; the good file there is kept, no temporary file is left."""
    big = area["remote"] / "big.bin"
    with open(big, "wb") as f:
        f.truncate(64 << 20)
    (area["back"] / "big.bin").write_bytes(b"good")
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            WRITE_FAILS_CHILD,
            server.address,
            server.client_key,
            server.known_hosts,
            str(big),
            str(area["back"]),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        f"OSError False 27 {area['back'] / 'big.bin'}",
        "['big.bin']",
        "usable",
    ]
    assert (area["back"] / "big.bin").read_bytes() == b"good"


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.slow
@pytest.mark.skipif(
    "libasan" in os.environ.get("LD_PRELOAD", ""),
    reason="AddressSanitizer's quarantine keeps freed memory: RSS says nothing",
)
@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads RSS from /proc")
def test_512_mib_each_way(session, area, capsys):
    """512 MiB each way: RSS stays flat (no file held in memory), a Python thread
    keeps running meanwhile (the GIL is released while the data moves), and the
    upload's [NN%] line is redrawn a few times a second, not per buffer."""
    size = 512 << 20
    src = area["local"] / "half.bin"
    with open(src, "wb") as f:
        f.truncate(size)
    peak = [0]

    def sample(path, moved, total):
        peak[0] = max(peak[0], rss_bytes())

    before = rss_bytes()
    start = time.monotonic()
    run_while_python_counts(
        lambda: session.scp_upload(src, to=str(area["remote"]), progress=sample)
    )
    elapsed = time.monotonic() - start
    assert os.path.getsize(area["remote"] / "half.bin") == size
    draws = capsys.readouterr().err.split("\r")[1:]
    assert draws[-1] == f"[100%] {src}\n"
    assert len(draws) <= 10 * elapsed + 2  # 2,048 buffers of 256 KiB
    run_while_python_counts(
        lambda: session.scp_download(
            str(area["remote"] / "half.bin"), to=area["back"], verbose=False, progress=sample
        )
    )
    assert os.path.getsize(area["back"] / "half.bin") == size
    assert peak[0] - before < 32 << 20, f"RSS grew by {(peak[0] - before) >> 20} MiB"


@pytest.mark.slow
def test_failed_download_leaves_no_partial_file(session, area):
    big = area["remote"] / "big.bin"
    with open(big, "wb") as f:
        f.truncate(1 << 30)  # sparse; over a second to send, so progress is called midway
    good = area["back"] / "big.bin"
    good.write_bytes(b"the good old content")

    def stop(path, moved, total):
        if moved < total:
            raise Stop()

    with pytest.raises(Stop):
        session.scp_download(str(big), to=area["back"], verbose=False, progress=stop)
    assert good.read_bytes() == b"the good old content"  # not replaced by a partial file
    assert os.listdir(area["back"]) == ["big.bin"]  # no temporary file left
    assert session.exec_internal("echo usable").stdout == b"usable\n"


def test_r_style_aliases(session, area):
    src = area["local"] / "r.txt"
    src.write_bytes(b"r")
    assert pyssh.scp_upload(session, [str(src)], to=str(area["remote"]), verbose=False) == [
        f"{area['remote']}/r.txt"
    ]
    assert pyssh.scp_download(
        session, str(area["remote"] / "r.txt"), to=str(area["back"]), verbose=False
    ) == [str(area["back"] / "r.txt")]


def test_libssh_scp_api_is_not_linked():
    """pyssh speaks SCP itself: nothing of libssh's deprecated ssh_scp_* is linked in
    (the static libssh's scp.o would come with any of its functions)."""
    import shutil

    assert shutil.which("nm"), "needs nm (binutils; bash .ci/run installs it)"
    r = subprocess.run(["nm", _ssh.__file__], capture_output=True, text=True)
    if r.returncode != 0 or " ssh_channel_write\n" not in r.stdout:
        pytest.skip("the extension's symbol table is stripped")
    assert not re.findall(r" (ssh_scp_\w+)", r.stdout)


# ---- the parser of server messages ---------------------------------------------------------


@pytest.mark.parametrize(
    "line, expected",
    [
        (b"C0644 12 a b.txt", ("C", 0o644, 12, b"a b.txt")),
        (b"D0755 0 dir", ("D", 0o755, 0, b"dir")),
        (b"C0600 9223372036854775807 huge", ("C", 0o600, (1 << 63) - 1, b"huge")),
        (b"E", ("E",)),
        (b"T1700000000 0 1600000000 0", ("T", 1700000000, 1600000000)),
        (
            b"\x01scp: x: No such file or directory",
            ("warning", b"scp: x: No such file or directory"),
        ),
        (b"\x02fatal", ("error", b"fatal")),
    ],
)
def test_parse_good_messages(line, expected):
    assert _ssh.scp_parse(line) == expected


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"C0644 1 ..",
        b"C0644 1 .",
        b"C0644 1 ../../etc/passwd",
        b"C0644 1 a/b",
        b"D0755 0 /abs",
        b"C0644 1 ",
        b"C0644 1 a\0b",
        b"C10000 1 x",
        b"C 1 x",
        b"Cxyz 1 x",
        b"C0644 -1 x",
        b"C0644 9223372036854775808 x",
        b"C0644 1x x",
        b"C0644  1 x",
        b"Ex",
        b"T1 0 1",
        b"T1 1000000 1 0",
        b"X",
        b"C0644 1 a\nb",
        b"C0644 1 " + b"n" * 5000,
    ],
)
def test_parse_refuses_bad_or_unsafe_messages(line):
    with pytest.raises(pyssh.SCPProtocolError, match="the server sent"):
        _ssh.scp_parse(line)


# ---- a hostile server ---------------------------------------------------------------------

# hostile_scp (conftest): an sshd whose every command is a fake `scp -f`.


@pytest.mark.slow
@pytest.mark.parametrize(
    "steps, match",
    [
        ([b"C0644 4 ../evil\n", b"evil\0"], "outside the target"),
        ([b"C0644 4 /tmp/evil\n", b"evil\0"], "outside the target"),
        ([b"C0644 4 ..\n", b"evil\0"], "outside the target"),
        ([b"C0644 4 .\n", b"evil\0"], "outside the target"),
        ([b"C0644 4 \n", b"evil\0"], "empty name"),
        ([b"C0644 4 wan\0ted\n", b"evil\0"], "NUL"),
        ([b"C0644 4 wanted/../../evil\n", b"evil\0"], "outside the target"),
        ([b"D0755 0 wanted\n", b"C0644 4 ../../evil\n", b"evil\0", b"E\n"], "outside the target"),
        ([b"C0644 4 evil\n", b"evil\0"], "not asked for"),
        ([b"D0755 0 evil\n", b"C0644 4 x\n", b"evil\0", b"E\n"], "not asked for"),
        ([b"C0644 4 wanted\n", b"data\0", b"C0644 4 evil\n", b"evil\0"], "not asked for"),
        ([b"D0755 0 wanted\n", b"E\n", b"E\n"], "never entered"),
        ([b"E\n"], "never entered"),
        ([b"D0755 0 wanted\n"], "ended inside a directory"),
        ([b"C0644 4 wanted\n", b"data\0", b"E\n"], "never entered"),
        ([b"C0644 4 wanted\n", b"data\x05"], "end mark"),
        ([b"C0644 -4 wanted\n"], "size"),
        ([b"C99999 4 wanted\n"], "mode"),
        ([b"Q hello\n"], "unknown message"),
        ([b"C0644 4 wan" + b"t" * 9000], "longer than"),
    ],
)
def test_hostile_server_is_refused(hostile_scp, tmp_path, steps, match):
    to = tmp_path / "to"
    to.mkdir()
    with pytest.raises(pyssh.SCPProtocolError, match=match):
        hostile_scp(steps, to=to)
    leftovers = [p for p in os.listdir(to) if p != "wanted"]
    assert leftovers == []
    assert not (tmp_path / "evil").exists() and not os.path.exists("/tmp/evil")


def test_hostile_dot_directory_cannot_change_the_target(hostile_scp, tmp_path):
    """CVE-2018-20685: "D0777 0 ." would chmod the target directory itself."""
    to = tmp_path / "to"
    to.mkdir(mode=0o700)
    with pytest.raises(pyssh.SCPProtocolError, match="outside the target") as ei:
        hostile_scp([b"D0777 0 .\n", b"E\n"], to=to)
    assert ei.value.server_message is None
    assert stat.S_IMODE(os.stat(to).st_mode) == 0o700 and os.listdir(to) == []


@pytest.mark.slow
def test_hostile_truncated_file_is_not_kept(hostile_scp, tmp_path):
    to = tmp_path / "to"
    to.mkdir()
    with pytest.raises(pyssh.SSHError, match="ended first"):
        hostile_scp([b"C0644 100 wanted\n", b"only ten b"], to=to)
    assert os.listdir(to) == []


def test_hostile_error_after_data_is_not_kept(hostile_scp, tmp_path):
    to = tmp_path / "to"
    to.mkdir()
    (to / "wanted").write_bytes(b"good")
    with pytest.raises(pyssh.SCPError, match="disk full"):
        hostile_scp([b"C0644 4 wanted\n", b"data\x02disk full\n"], to=to)
    assert os.listdir(to) == ["wanted"] and (to / "wanted").read_bytes() == b"good"


@pytest.mark.slow
def test_hostile_setuid_mode_is_dropped(hostile_scp, tmp_path):
    to = tmp_path / "to"
    to.mkdir()
    hostile_scp([b"C6755 4 wanted\n", b"data\0"], to=to)
    assert stat.S_IMODE(os.stat(to / "wanted").st_mode) == 0o755


# ---- Ctrl-C, threads --------------------------------------------------------------------


@pytest.mark.slow
def test_ctrl_c_mid_download(server, area):
    big = area["remote"] / "big.bin"
    with open(big, "wb") as f:
        f.truncate(4 << 30)
    interrupt_download(server, "scp_download", big, area["back"])


UPLOAD_INTERRUPT_CHILD = textwrap.dedent("""
    import os, sys, time, pyssh
    address, key, known_hosts, src, to = sys.argv[1:6]
    s = pyssh.connect(address, keyfile=key, known_hosts=known_hosts, config=False)
    calls = [0]
    def progress(path, moved, total):
        calls[0] += 1
        if calls[0] == 2:     # after the first [NN%] line is drawn
            print("started", flush=True)
    try:
        s.scp_upload(src, to=to, progress=progress)
        print("finished", flush=True)
    except KeyboardInterrupt:
        print("interrupted", time.monotonic(), flush=True)
    print("then", s.exec_internal("echo usable").stdout.decode().strip(), flush=True)
    s.scp_upload(src + ".small", to=to, verbose=False)
    print("uploaded", flush=True)
""")


@pytest.mark.slow
def test_ctrl_c_mid_upload(server, area):
    """KeyboardInterrupt within half a second; the [NN%] line is ended; the session
    still runs commands and uploads."""
    src = area["local"] / "big.bin"
    with open(src, "wb") as f:
        f.truncate(4 << 30)
    (area["local"] / "big.bin.small").write_bytes(b"small")
    with interrupted_child(
        UPLOAD_INTERRUPT_CHILD,
        [server.address, server.client_key, server.known_hosts, src, area["remote"]],
    ) as p:
        assert p.stdout.readline().strip() == "then usable"
        assert p.stdout.readline().strip() == "uploaded", p.stderr.read()
        assert p.wait(timeout=30) == 0
        err = p.stderr.buffer.read().decode()  # as written: text mode would turn \r into \n
        assert err.startswith("\r[") and err.endswith(f"] {src}\n"), err[-300:]
        assert "[100%]" not in err
    assert (area["remote"] / "big.bin.small").read_bytes() == b"small"


@pytest.mark.slow
def test_two_transfers_in_two_threads(server, area):
    import threading

    data = {name: os.urandom(20 << 20) for name in ("t0", "t1")}
    for name, blob in data.items():
        (area["local"] / name).write_bytes(blob)
    errors = []

    def work(name):
        try:
            with server.connect() as s:
                s.scp_upload(area["local"] / name, to=str(area["remote"]), verbose=False)
                d = area["back"] / name
                d.mkdir()
                s.scp_download(str(area["remote"] / name), to=d, verbose=False)
                assert (d / name).read_bytes() == data[name]
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work, args=(n,)) for n in data]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not [t for t in threads if t.is_alive()], "a transfer hung"
    assert errors == []


# ---- the remote home, permissions, sizes over 4 GiB --------------------------------------


def test_tilde_is_the_remote_home(plain_session, area):
    s = plain_session
    home = s.exec_internal('printf %s "$HOME"').stdout.decode()
    sub = f"pyssh-scp-{os.getpid()}"
    s.exec_internal(f"mkdir -p ~/{sub}")
    try:
        src = area["local"] / "home file.txt"
        src.write_bytes(b"home")
        assert s.scp_upload(src, to=f"~/{sub}", verbose=False) == [f"~/{sub}/home file.txt"]
        assert s.exec_internal(f"cat ~/{sub}/'home file.txt'").stdout == b"home"
        assert s.scp_upload(src, verbose=False) == ["./home file.txt"]  # "." is the home
        assert s.exec_internal("cat 'home file.txt'").stdout == b"home"
        s.scp_download(f"~/{sub}/home file.txt", to=area["back"], verbose=False)
        assert (area["back"] / "home file.txt").read_bytes() == b"home"
        assert home and s.exec_internal(f"test -d {home}/{sub}").status == 0
    finally:
        s.exec_internal(f"rm -rf ~/{sub} 'home file.txt'")


def test_permission_denied(plain_session, area, server):
    # an ordinary user cannot read the sshd's private host key
    with pytest.raises(pyssh.SCPPermissionError) as ei:
        plain_session.scp_download(server.host_key, to=area["back"], verbose=False)
    assert isinstance(ei.value, PermissionError) and "Permission denied" in str(ei.value)
    assert os.listdir(area["back"]) == []


@pytest.mark.slow
def test_file_over_4_gib(session, area):
    size = (4 << 30) + 12345
    big = area["local"] / "sparse.bin"
    with open(big, "wb") as f:
        f.seek(size - 5)
        f.write(b"tail!")
    session.scp_upload(big, to=str(area["remote"]), verbose=False)
    got = area["remote"] / "sparse.bin"
    assert os.path.getsize(got) == size
    with open(got, "rb") as f:
        f.seek(size - 5)
        assert f.read() == b"tail!"
    os.unlink(got)  # the upload wrote it out in full: free the space before the download
    session.scp_download(str(big), to=area["back"], verbose=False)
    back = area["back"] / "sparse.bin"
    assert os.path.getsize(back) == size
    with open(back, "rb") as f:
        f.seek(size - 5)
        assert f.read() == b"tail!"


def test_upload_permission_denied(plain_session, area):
    src = area["local"] / "x.txt"
    src.write_bytes(b"x")
    with pytest.raises(pyssh.SCPPermissionError, match="Permission denied") as ei:
        plain_session.scp_upload(src, to="/root", verbose=False)
    assert ei.value.filename == "/root/x.txt"  # the remote path the server refused
    assert "/root/x.txt: Permission denied" in ei.value.server_message
    assert plain_session.exec_internal("echo usable").stdout == b"usable\n"


def test_server_without_scp(tmp_path):
    from pyssh.testing import SSHServer

    with SSHServer(extra_config=["ForceCommand /nonexistent/bin/scp"]) as srv, srv.connect() as s:
        (tmp_path / "x").write_bytes(b"x")
        with pytest.raises(pyssh.SCPError, match="no scp command") as ei:
            s.scp_download("x", to=tmp_path, verbose=False)
        assert ei.value.filename == "x" and "/nonexistent/bin/scp" in ei.value.server_message
        with pytest.raises(pyssh.SCPError, match="no scp command") as ei:
            s.scp_upload(tmp_path / "x", to="some/dir", verbose=False)
        assert ei.value.filename == "some/dir" and "/nonexistent/bin/scp" in ei.value.server_message


def test_login_script_that_prints(tmp_path):
    """What a ~/.bashrc that prints does to SCP: an error that says so."""
    from pyssh.testing import SSHServer

    (tmp_path / "x").write_bytes(b"x")
    with (
        SSHServer(
            extra_config=['ForceCommand echo Welcome; exec sh -c "$SSH_ORIGINAL_COMMAND"']
        ) as srv,
        srv.connect() as s,
    ):
        with pytest.raises(pyssh.SCPProtocolError, match="login script"):
            s.scp_download(str(tmp_path / "x"), to=tmp_path, verbose=False)
        with pytest.raises(pyssh.SCPProtocolError, match="login script"):
            s.scp_upload(tmp_path / "x", to=str(tmp_path / "up"), verbose=False)


@pytest.mark.slow
def test_server_killed_mid_download(fresh_server, tmp_path):
    s = download_killed_midway(fresh_server, tmp_path, "scp_download")
    with pytest.raises(pyssh.SSHError):
        s.scp_upload(tmp_path / "b" / "big", to=str(tmp_path), verbose=False)
    s.close()


@pytest.mark.slow
def test_demo_scp_example():
    """The demo's SCP example (python -m pyssh.demo) uploads a file, downloads it back
    and shows two equal checksums."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(pyssh.__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run(
        [sys.executable, "-m", "pyssh.demo"], capture_output=True, text=True, env=env, timeout=120
    )
    assert r.returncode == 0, r.stderr[-3000:]
    up = re.search(r"^sha256 uploaded +([0-9a-f]{64})$", r.stdout, re.M)
    down = re.search(r"^sha256 downloaded +([0-9a-f]{64})$", r.stdout, re.M)
    assert up and down and up.group(1) == down.group(1), r.stdout[-3000:]
    assert "\nthe same\n" in r.stdout
    assert re.search(r"\[100%\] .*hello\.bin\n", r.stderr)  # verbose upload
    assert re.search(r" 1048576 .*back/hello\.bin\n", r.stderr)  # verbose download


@pytest.mark.slow
def test_server_killed_mid_upload(fresh_server, tmp_path):
    """The server dies while a file goes up: a ConnectError that says so (no hang), and
    later calls on the dead session say so too."""
    os.chmod(tmp_path, 0o755)
    src = tmp_path / "big"
    with open(src, "wb") as f:
        f.truncate(4 << 30)
    (tmp_path / "up").mkdir()
    s, kill_connection = connection_killer(fresh_server)
    lost = "the connection to the server was lost"
    with pytest.raises(pyssh.ConnectError, match=lost):
        s.scp_upload(src, to=str(tmp_path / "up"), verbose=False, progress=kill_connection)
    with pytest.raises(pyssh.ConnectError, match=lost):
        s.scp_upload(src, to=str(tmp_path / "up"), verbose=False)
    s.close()
