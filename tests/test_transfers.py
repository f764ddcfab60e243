"""What SCP and SFTP promise alike, each test run over both against the real sshd
(the server runs on this machine, so remote paths are local paths in the test's
temporary directory). `proto` is a small adapter: upload(files, to, **kw) and
download(files, to, **kw) call session.scp_upload/scp_download or
session.sftp_upload/sftp_download, and it names each protocol's exception classes.
What one protocol alone promises is in test_scp.py or test_sftp.py; where the two
differ on purpose, the expectation is a parameter here (or the test is apart)."""

import hashlib
import os
import pathlib
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest

import pyssh
import pyssh.aio

from conftest import (
    both_apis,
    connection_killer,
    download_killed_midway,
    interrupt_download,
    interrupted_child,
)


class Proto:
    """One protocol's transfers on one session, with verbose=False by default."""

    def __init__(self, name, session):
        self.name = name
        self.session = session
        self.Error = {"scp": pyssh.SCPError, "sftp": pyssh.SFTPError}[name]
        self.FileNotFoundError = {
            "scp": pyssh.SCPFileNotFoundError,
            "sftp": pyssh.SFTPFileNotFoundError,
        }[name]
        self.PermissionError = {
            "scp": pyssh.SCPPermissionError,
            "sftp": pyssh.SFTPPermissionError,
        }[name]

    def upload(self, files, to, **kw):
        kw.setdefault("verbose", False)
        return getattr(self.session, f"{self.name}_upload")(files, to=to, **kw)

    def download(self, files, to, **kw):
        kw.setdefault("verbose", False)
        return getattr(self.session, f"{self.name}_download")(files, to=to, **kw)

    def __repr__(self):
        return self.name


def aio_lacks(api, method):
    """Skip the aio variant of a test whose method pyssh.aio does not offer yet."""
    if api == "aio" and not hasattr(pyssh.aio.AsyncSession, method):
        pytest.skip(f"pyssh.aio.AsyncSession has no {method} yet")


@pytest.fixture(params=["scp", "sftp"])
def proto(request, api, api_plain_session):
    """The transfers of one protocol, as the ordinary user of plain_session: its
    shell is /bin/sh (root's may read a slow ~/.bashrc before every scp), and it
    cannot read what only root may (permission errors). Through the API under test
    (both_apis: blocking and pyssh.aio)."""
    aio_lacks(api, f"{request.param}_upload")
    return Proto(request.param, api_plain_session)


@pytest.fixture
def area():
    """local/, remote/ and back/ directories; remote/ is writable by the ordinary
    user of plain_session. Outside pytest's temporary tree, whose top is root's
    alone (0700)."""
    top = pathlib.Path(tempfile.mkdtemp(prefix="pyssh-transfers-"))
    try:
        os.chmod(top, 0o755)
        dirs = {}
        for name in ("local", "remote", "back"):
            d = top / name
            d.mkdir()
            dirs[name] = d
        os.chmod(dirs["remote"], 0o777)
        yield dirs
    finally:
        shutil.rmtree(top, ignore_errors=True)


def shared_dir(path):
    """A remote directory made here that the ordinary user may write in too."""
    path.mkdir()
    os.chmod(path, 0o777)
    return path


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
    """Hidden files and directories, empty directories, modes, names with spaces,
    quotes, shell characters and unicode, a file of several buffers."""
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / ".hidden" / "sub").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "sub" / "empty too").mkdir()
    files = {
        "empty.txt": b"",
        "one.bin": b"x",
        ".hidden file": b"hidden file\n",
        ".hidden/sub/deep.bin": os.urandom(300_000),
        "sub/.hidden dir file": b"h",
        "sub/deeper/data.bin": os.urandom(300_000),
        "with space and 'quote'.txt": b"q",
        "ünïcødé ✓.txt": "ü".encode(),
        "héllo wörld ✓.txt": b"unicode",
        "dollar $HOME `id`.txt": b"$",
    }
    for rel, data in files.items():
        (root / rel).write_bytes(data)
    os.chmod(root / "one.bin", 0o600)
    os.chmod(root / ".hidden file", 0o600)
    os.chmod(root / "sub" / "deeper" / "data.bin", 0o755)
    os.chmod(root / "empty.txt", 0o644)
    os.chmod(root / "sub", 0o750)
    os.chmod(root / "empty", 0o750)
    return files


def no_temporary_files(root):
    return [
        os.path.join(d, n) for d, ds, fs in os.walk(root) for n in ds + fs if ".pyssh-" in n
    ] == []


class Stop(Exception):
    pass


# ---- files and trees, both ways -------------------------------------------------------------


@both_apis
@pytest.mark.parametrize(
    "size", [0, 1, (1 << 20) + 1, pytest.param(100 << 20, marks=pytest.mark.slow)]
)
def test_file_round_trip(proto, area, size):
    """The bytes and the mode (0640 is inside any usual umask) both ways; the paths
    written are returned; no temporary file is left beside the download."""
    src = area["local"] / f"f{size}"
    with open(src, "wb") as f:
        for _ in range(size >> 20):
            f.write(os.urandom(1 << 20))
        f.write(os.urandom(size & ((1 << 20) - 1)))
    os.chmod(src, 0o640)
    assert proto.upload(str(src), to=str(area["remote"])) == [f"{area['remote']}/{src.name}"]
    remote = area["remote"] / src.name
    assert digest(remote) == digest(src) and stat.S_IMODE(os.stat(remote).st_mode) == 0o640
    assert proto.download(str(remote), to=str(area["back"])) == [str(area["back"] / src.name)]
    back = area["back"] / src.name
    assert digest(back) == digest(src) and os.path.getsize(back) == size
    assert stat.S_IMODE(os.stat(back).st_mode) == 0o640
    assert os.listdir(area["back"]) == [src.name]  # no temporary file left


@both_apis
def test_tree_round_trip(proto, area):
    src = area["local"] / "tree"
    src.mkdir()
    make_tree(src)
    target = tree(src)
    assert proto.upload(src, to=str(area["remote"])) == [f"{area['remote']}/tree"]
    assert tree(area["remote"] / "tree") == target
    got = proto.download(str(area["remote"] / "tree"), to=area["back"])
    assert got == [str(area["back"] / "tree")]
    assert tree(area["back"] / "tree") == target
    assert no_temporary_files(area["back"])


@pytest.mark.slow
def test_many_small_files(proto, area):
    src = area["local"] / "many"
    src.mkdir()
    for i in range(1000):
        (src / f"f{i:04d}").write_bytes(os.urandom(4096))
    proto.upload(src, to=str(area["remote"]))
    proto.download(str(area["remote"] / "many"), to=area["back"])
    assert tree(area["back"] / "many") == tree(src)


@both_apis
def test_several_sources_and_a_symlink(proto, area):
    a = area["local"] / "a.txt"
    a.write_bytes(b"A")
    link = area["local"] / "link.txt"
    os.symlink(a, link)
    written = proto.upload([a, str(link)], to=str(area["remote"]))
    assert written == [f"{area['remote']}/a.txt", f"{area['remote']}/link.txt"]
    # followed, as scp does: a regular file arrives
    assert not os.path.islink(area["remote"] / "link.txt")
    assert (area["remote"] / "link.txt").read_bytes() == b"A"
    # and down: a symlink (to a file) on the server, at the top and inside a directory
    os.symlink(area["remote"] / "a.txt", area["remote"] / "rlink.txt")
    (area["remote"] / "d").mkdir()
    os.symlink(area["remote"] / "a.txt", area["remote"] / "d" / "inner link")
    proto.download([str(area["remote"] / "rlink.txt"), str(area["remote"] / "d")], to=area["back"])
    for got in (area["back"] / "rlink.txt", area["back"] / "d" / "inner link"):
        assert not os.path.islink(got) and got.read_bytes() == b"A"


@both_apis
def test_preserve_keeps_times(proto, area):
    src = area["local"] / "old"
    src.mkdir()
    f = src / "f.txt"
    f.write_bytes(b"old")
    os.utime(f, (1_000_000_000, 1_100_000_000))
    os.utime(src, (1_200_000_000, 1_300_000_000))
    proto.upload(src, to=str(area["remote"]), preserve=True)
    assert int(os.stat(area["remote"] / "old" / "f.txt").st_mtime) == 1_100_000_000
    assert int(os.stat(area["remote"] / "old").st_mtime) == 1_300_000_000
    proto.download(str(area["remote"] / "old"), to=area["back"], preserve=True)
    assert int(os.stat(area["back"] / "old" / "f.txt").st_mtime) == 1_100_000_000
    assert int(os.stat(area["back"] / "old" / "f.txt").st_atime) == 1_000_000_000
    assert int(os.stat(area["back"] / "old").st_mtime) == 1_300_000_000
    # without preserve, times are now
    proto.download(str(area["remote"] / "old" / "f.txt"), to=area["local"])
    assert os.stat(area["local"] / "f.txt").st_mtime > time.time() - 60


@both_apis
def test_remote_names_with_quotes_and_shell_characters(proto, area):
    weird = shared_dir(area["remote"] / "a 'b' \"c\" $d `e` ü;f")
    src = area["local"] / "x.txt"
    src.write_bytes(b"x")
    proto.upload(src, to=str(weird))
    assert (weird / "x.txt").read_bytes() == b"x"
    proto.download(str(weird / "x.txt"), to=area["back"])
    assert (area["back"] / "x.txt").read_bytes() == b"x"


# ---- errors --------------------------------------------------------------------------------


@both_apis
def test_missing_remote_file(proto, area):
    """A FileNotFoundError of the protocol's own; the good file already in the
    target is kept; the session goes on."""
    missing = str(area["remote"] / "nope.txt")
    (area["back"] / "nope.txt").write_bytes(b"old good")
    with pytest.raises(proto.FileNotFoundError) as ei:
        proto.download(missing, to=area["back"])
    e = ei.value
    assert isinstance(e, FileNotFoundError) and isinstance(e, proto.Error)
    assert e.filename == missing and "No such file" in str(e)
    assert os.listdir(area["back"]) == ["nope.txt"]
    assert (area["back"] / "nope.txt").read_bytes() == b"old good"
    assert proto.session.exec_internal("echo usable").stdout == b"usable\n"


@both_apis
@pytest.mark.parametrize("what", ["file", "directory"])
def test_upload_into_missing_remote_directory(proto, area, what):
    if what == "file":
        src = area["local"] / "x.txt"
        src.write_bytes(b"x")
    else:
        src = area["local"] / "d"
        src.mkdir()
        (src / "x.txt").write_bytes(b"x")
    # SFTP looks first (a stat); SCP hears it from the remote scp
    expected = {
        "scp": (pyssh.SCPError, "No such file|not a directory"),
        "sftp": (pyssh.SFTPNotADirectoryError, "does not exist"),
    }[proto.name]
    with pytest.raises(expected[0], match=expected[1]):
        proto.upload(src, to=str(area["remote"] / "no" / "such"))
    assert not (area["remote"] / "no").exists()


@both_apis
def test_local_errors_before_any_traffic(proto, area):
    with pytest.raises(FileNotFoundError):
        proto.upload(area["local"] / "missing", to=str(area["remote"]))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        proto.download("x", to=area["back"] / "missing")
    (area["back"] / "file").write_bytes(b"")
    with pytest.raises(NotADirectoryError):
        proto.download("x", to=area["back"] / "file")
    with pytest.raises(TypeError):
        proto.upload(b"bytes", to=str(area["remote"]))
    with pytest.raises(ValueError):
        proto.upload([], to=str(area["remote"]))
    assert os.listdir(area["remote"]) == []


@both_apis
def test_download_permission_denied(proto, area, server):
    # an ordinary user cannot read the sshd's private host key
    with pytest.raises(proto.PermissionError) as ei:
        proto.download(server.host_key, to=area["back"])
    assert isinstance(ei.value, PermissionError) and "Permission denied" in str(ei.value)
    assert os.listdir(area["back"]) == []


@both_apis
def test_upload_permission_denied(proto, area):
    src = area["local"] / "x.txt"
    src.write_bytes(b"x")
    with pytest.raises(proto.PermissionError, match="Permission denied") as ei:
        proto.upload(src, to="/root")
    assert ei.value.filename == "/root/x.txt"  # the remote path the server refused
    if proto.name == "scp":  # what the remote scp said (SFTP has a status code)
        assert "/root/x.txt: Permission denied" in ei.value.server_message
    assert proto.session.exec_internal("echo usable").stdout == b"usable\n"


# ---- progress and verbose -------------------------------------------------------------------


def test_progress_and_verbose(proto, area, capsys):
    src = area["local"] / "p.bin"
    src.write_bytes(os.urandom(5 << 20))
    calls = []
    proto.upload(src, to=str(area["remote"]), verbose=True, progress=lambda *a: calls.append(a))
    assert calls[-1] == (str(src), 5 << 20, 5 << 20)
    assert all(0 <= moved <= total for _, moved, total in calls)
    out, err = capsys.readouterr()
    assert err.endswith(f"\r[100%] {src}\n") and out == ""  # on stderr only
    calls.clear()
    proto.download(
        str(area["remote"] / "p.bin"),
        to=area["back"],
        verbose=True,
        progress=lambda *a: calls.append(a),
    )
    assert calls[-1] == (str(area["back"] / "p.bin"), 5 << 20, 5 << 20)
    assert capsys.readouterr().err == f"{5 << 20:>10} {area['back'] / 'p.bin'}\n"


def test_progress_at_each_files_end(proto, area, capsys):
    src = area["local"] / "d"
    (src / "sub").mkdir(parents=True)
    sizes = {"a": 0, "b": 1, "sub/c": 70_000}
    for rel, n in sizes.items():
        (src / rel).write_bytes(os.urandom(n))
    calls = []
    proto.upload(src, to=str(area["remote"]), verbose=True, progress=lambda *a: calls.append(a))
    ends = [c for c in calls if c[1] == c[2]]
    assert sorted(ends) == sorted((str(src / rel), n, n) for rel, n in sizes.items())
    assert capsys.readouterr().err.count("[100%] ") == 3
    calls.clear()
    proto.download(
        str(area["remote"] / "d"),
        to=area["back"],
        verbose=True,
        progress=lambda *a: calls.append(a),
    )
    ends = [c for c in calls if c[1] == c[2]]
    assert sorted(ends) == sorted((str(area["back"] / "d" / rel), n, n) for rel, n in sizes.items())
    assert sorted(capsys.readouterr().err.splitlines()) == sorted(
        f"{n:>10} {area['back'] / 'd' / rel}" for rel, n in sizes.items()
    )


@pytest.mark.slow
def test_raising_progress_stops_an_upload(proto, area, capsys):
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
        proto.upload(src, to=str(area["remote"]), verbose=True, progress=stop)
    moved = [m for _, m, _ in calls]
    assert all(p == str(src) and t == 4 << 30 for p, _, t in calls)
    assert 0 < moved[0] < moved[1] < moved[2] < 4 << 30
    assert proto.session.exec_internal("echo usable").stdout == b"usable\n"
    err = capsys.readouterr().err
    assert err.endswith("\n") and err.count("\n") == 1  # one line, ended after the stop
    draws = err.rstrip("\n").split("\r")
    assert draws[0] == ""  # each drawn over the last, from the start of the line
    # drawn after each progress call (not the third, which raised)
    assert [
        d for d in draws[1:] if re.fullmatch(r"\[ *\d{1,2}%\] " + re.escape(str(src)), d)
    ] == draws[1:]
    assert len(draws[1:]) == 2


@both_apis
@pytest.mark.slow
def test_raising_progress_leaves_no_partial_download(proto, area):
    big = area["remote"] / "big.bin"
    with open(big, "wb") as f:
        f.truncate(1 << 30)  # sparse; over a second to send, so progress is called midway
    good = area["back"] / "big.bin"
    good.write_bytes(b"the good old content")

    def stop(path, moved, total):
        if moved < total:
            raise Stop()

    with pytest.raises(Stop):
        proto.download(str(big), to=area["back"], progress=stop)
    assert good.read_bytes() == b"the good old content"  # not replaced by a partial file
    assert os.listdir(area["back"]) == ["big.bin"]  # no temporary file left
    assert proto.session.exec_internal("echo usable").stdout == b"usable\n"


# ---- the local side fails midway --------------------------------------------------------------


WRITE_FAILS_CHILD = textwrap.dedent("""
    import os, resource, signal, sys, pyssh
    address, key, known_hosts, method, remote, to = sys.argv[1:7]
    s = pyssh.connect(address, keyfile=key, known_hosts=known_hosts, config=False)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (8 << 20, resource.RLIM_INFINITY))
    try:
        getattr(s, method)(remote, to=to, verbose=False)
    except OSError as e:
        print(type(e).__name__, isinstance(e, pyssh.SSHError), e.errno, e.filename)
    print(sorted(os.listdir(to)))
    print(s.exec_internal("echo usable").stdout.decode().strip())
""")


@pytest.mark.slow
@pytest.mark.parametrize("method", ["scp_download", "sftp_download"])
def test_local_write_error_mid_download(server, area, method):
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
            method,
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


@both_apis
@pytest.mark.slow
def test_upload_of_a_file_that_shrinks_midway(proto, area):
    src = area["local"] / "shrinks.bin"
    with open(src, "wb") as f:
        f.truncate(4 << 30)

    def shrink(path, moved, total):
        if moved < total:
            os.truncate(src, 1000)

    with pytest.raises(OSError) as ei:
        proto.upload(src, to=str(area["remote"]), progress=shrink)
    assert not isinstance(ei.value, pyssh.SSHError)
    says = {"scp": "changed while it was being sent", "sftp": "became shorter while it was sent"}
    assert ei.value.filename == str(src) and says[proto.name] in str(ei.value)
    assert proto.session.exec_internal("echo usable").stdout == b"usable\n"


# ---- Ctrl-C, and the server dying -------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("method", ["scp_download", "sftp_download"])
def test_ctrl_c_mid_download(server, area, method):
    big = area["remote"] / "big.bin"
    with open(big, "wb") as f:
        f.truncate(4 << 30)
    interrupt_download(server, method, big, area["back"])


UPLOAD_INTERRUPT_CHILD = textwrap.dedent("""
    import os, sys, time, pyssh
    address, key, known_hosts, method, src, to = sys.argv[1:7]
    s = pyssh.connect(address, keyfile=key, known_hosts=known_hosts, config=False)
    calls = [0]
    def progress(path, moved, total):
        calls[0] += 1
        if calls[0] == 2:     # after the first [NN%] line is drawn
            print("started", flush=True)
    try:
        getattr(s, method)(src, to=to, progress=progress)
        print("finished", flush=True)
    except KeyboardInterrupt:
        print("interrupted", time.monotonic(), flush=True)
    print("then", s.exec_internal("echo usable").stdout.decode().strip(), flush=True)
    getattr(s, method)(src + ".small", to=to, verbose=False)
    print("uploaded", flush=True)
""")


@pytest.mark.slow
@pytest.mark.parametrize("method", ["scp_upload", "sftp_upload"])
def test_ctrl_c_mid_upload(server, area, method):
    """KeyboardInterrupt within half a second; the [NN%] line is ended; the session
    still runs commands and uploads."""
    src = area["local"] / "big.bin"
    with open(src, "wb") as f:
        f.truncate(4 << 30)
    (area["local"] / "big.bin.small").write_bytes(b"small")
    with interrupted_child(
        UPLOAD_INTERRUPT_CHILD,
        [server.address, server.client_key, server.known_hosts, method, src, area["remote"]],
    ) as p:
        assert p.stdout.readline().strip() == "then usable"
        assert p.stdout.readline().strip() == "uploaded", p.stderr.read()
        assert p.wait(timeout=30) == 0
        err = p.stderr.buffer.read().decode()  # as written: text mode would turn \r into \n
    assert (area["remote"] / "big.bin.small").read_bytes() == b"small"
    assert err.startswith("\r[") and "[100%]" not in err, err[-300:]
    assert err.endswith(f"] {src}\n"), err[-300:]


@both_apis
@pytest.mark.parametrize(
    "method", ["sftp_download", pytest.param("scp_download", marks=pytest.mark.slow)]
)
def test_server_killed_mid_download(fresh_server, tmp_path, method, api, api_connect):
    aio_lacks(api, method)
    s = download_killed_midway(fresh_server, tmp_path, method, api_connect)
    upload = method.replace("download", "upload")
    with pytest.raises(pyssh.SSHError):
        getattr(s, upload)(tmp_path / "b" / "big", to=str(tmp_path), verbose=False)
    s.close()


@both_apis
@pytest.mark.slow
@pytest.mark.parametrize("method", ["scp_upload", "sftp_upload"])
def test_server_killed_mid_upload(fresh_server, tmp_path, method, api, api_connect):
    """The server dies while a file goes up: a ConnectError that says so (no hang), and
    later calls on the dead session say so too."""
    os.chmod(tmp_path, 0o755)
    src = tmp_path / "big"
    with open(src, "wb") as f:
        f.truncate(4 << 30)
    (tmp_path / "up").mkdir()
    aio_lacks(api, method)
    s, kill_connection = connection_killer(fresh_server, api_connect)
    lost = "the connection to the server was lost"
    with pytest.raises(pyssh.ConnectError, match=lost):
        getattr(s, method)(src, to=str(tmp_path / "up"), verbose=False, progress=kill_connection)
    with pytest.raises(pyssh.ConnectError, match=lost):
        getattr(s, method)(src, to=str(tmp_path / "up"), verbose=False)
    s.close()
