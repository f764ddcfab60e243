"""What SCP alone promises, against a real sshd (the server runs on this machine,
so remote paths are local paths in the test's temporary directory): remote names
quoted for the remote shell, the remote home, the server's messages parsed and a
hostile server refused. What SCP and SFTP promise alike is in test_transfers.py."""

import functools
import os
import re
import stat
import subprocess
import sys
import time

import pytest

import pyssh
from pyssh import _ssh

from conftest import (
    both_apis,
    run_while_python_counts,
)


@pytest.fixture
def session(server, api_connect):
    """A session through the API under test (both_apis: blocking and pyssh.aio)."""
    with api_connect(server) as s:
        yield s


@pytest.fixture
def hostile_scp(hostile_scp, api_connect):
    """conftest's hostile_scp, its session through the API under test."""
    return functools.partial(hostile_scp, connect=api_connect)


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


@both_apis
@pytest.mark.slow
def test_no_remote_shell_injection(session, area, tmp_path):
    """Remote names are quoted for the remote shell (names with quotes and shell
    characters that are files: test_transfers.py)."""
    src = area["local"] / "x.txt"
    src.write_bytes(b"x")
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


@both_apis
def test_one_missing_among_several_still_fetches_the_rest(session, area):
    (area["remote"] / "here.txt").write_bytes(b"here")
    with pytest.raises(pyssh.SCPFileNotFoundError):
        session.scp_download(
            [str(area["remote"] / "gone.txt"), str(area["remote"] / "here.txt")],
            to=area["back"],
            verbose=False,
        )
    assert (area["back"] / "here.txt").read_bytes() == b"here"


@both_apis
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


@both_apis
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


@both_apis
def test_hostile_dot_directory_cannot_change_the_target(hostile_scp, tmp_path):
    """CVE-2018-20685: "D0777 0 ." would chmod the target directory itself."""
    to = tmp_path / "to"
    to.mkdir(mode=0o700)
    with pytest.raises(pyssh.SCPProtocolError, match="outside the target") as ei:
        hostile_scp([b"D0777 0 .\n", b"E\n"], to=to)
    assert ei.value.server_message is None
    assert stat.S_IMODE(os.stat(to).st_mode) == 0o700 and os.listdir(to) == []


@both_apis
@pytest.mark.slow
def test_hostile_truncated_file_is_not_kept(hostile_scp, tmp_path):
    to = tmp_path / "to"
    to.mkdir()
    with pytest.raises(pyssh.SSHError, match="ended first"):
        hostile_scp([b"C0644 100 wanted\n", b"only ten b"], to=to)
    assert os.listdir(to) == []


@both_apis
def test_hostile_error_after_data_is_not_kept(hostile_scp, tmp_path):
    to = tmp_path / "to"
    to.mkdir()
    (to / "wanted").write_bytes(b"good")
    with pytest.raises(pyssh.SCPError, match="disk full"):
        hostile_scp([b"C0644 4 wanted\n", b"data\x02disk full\n"], to=to)
    assert os.listdir(to) == ["wanted"] and (to / "wanted").read_bytes() == b"good"


@both_apis
@pytest.mark.slow
def test_hostile_setuid_mode_is_dropped(hostile_scp, tmp_path):
    to = tmp_path / "to"
    to.mkdir()
    hostile_scp([b"C6755 4 wanted\n", b"data\0"], to=to)
    assert stat.S_IMODE(os.stat(to / "wanted").st_mode) == 0o755


# ---- Ctrl-C, threads --------------------------------------------------------------------


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


@both_apis
def test_tilde_is_the_remote_home(api_plain_session, area):
    s = api_plain_session
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


@both_apis
@pytest.mark.slow
def test_server_without_scp(tmp_path, api_connect):
    from pyssh.testing import SSHServer

    with (
        SSHServer(extra_config=["ForceCommand /nonexistent/bin/scp"]) as srv,
        api_connect(srv) as s,
    ):
        (tmp_path / "x").write_bytes(b"x")
        with pytest.raises(pyssh.SCPError, match="no scp command") as ei:
            s.scp_download("x", to=tmp_path, verbose=False)
        assert ei.value.filename == "x" and "/nonexistent/bin/scp" in ei.value.server_message
        with pytest.raises(pyssh.SCPError, match="no scp command") as ei:
            s.scp_upload(tmp_path / "x", to="some/dir", verbose=False)
        assert ei.value.filename == "some/dir" and "/nonexistent/bin/scp" in ei.value.server_message


@both_apis
@pytest.mark.slow
def test_a_silent_server_times_out(tmp_path, api_connect):
    """A server whose scp never answers (here: a command that reads and says
    nothing): SSHTimeoutError after `timeout` seconds each way, no file left, and the
    session goes on. (Servers that talk without end: test_redteam.py.)"""
    from pyssh.testing import SSHServer

    os.chmod(tmp_path, 0o755)
    (tmp_path / "x").write_bytes(b"x")
    (tmp_path / "to").mkdir()
    with (
        SSHServer(extra_config=["ForceCommand exec cat >/dev/null"]) as srv,
        api_connect(srv) as s,
    ):
        for call in (
            lambda: s.scp_upload(tmp_path / "x", to="up", verbose=False, timeout=0.5),
            lambda: s.scp_download("x", to=tmp_path / "to", verbose=False, timeout=0.5),
        ):
            started = time.monotonic()
            with pytest.raises(pyssh.SSHTimeoutError, match="timeout=0.5"):
                call()
            assert time.monotonic() - started < 5
        assert os.listdir(tmp_path / "to") == []
        assert s.exec_internal("printf usable").stdout == b""  # (its ForceCommand's)


@both_apis
@pytest.mark.slow
def test_login_script_that_prints(tmp_path, api_connect):
    """What a ~/.bashrc that prints does to SCP: an error that says so."""
    from pyssh.testing import SSHServer

    (tmp_path / "x").write_bytes(b"x")
    with (
        SSHServer(
            extra_config=['ForceCommand echo Welcome; exec sh -c "$SSH_ORIGINAL_COMMAND"']
        ) as srv,
        api_connect(srv) as s,
    ):
        with pytest.raises(pyssh.SCPProtocolError, match="login script"):
            s.scp_download(str(tmp_path / "x"), to=tmp_path, verbose=False)
        with pytest.raises(pyssh.SCPProtocolError, match="login script"):
            s.scp_upload(tmp_path / "x", to=str(tmp_path / "up"), verbose=False)


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


# ---- pyssh.aio alone: cancellation, async callbacks, the loop kept free -----------------


def _aio_kw(server):
    return dict(keyfile=server.client_key, known_hosts=server.known_hosts, config=False)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["download", "upload"])
def test_aio_cancelled_transfer_leaves_no_partial_file(server, area, how):
    """Cancelling the task mid-transfer ends it at once: no partial file under its
    final name (the good one there kept), no temporary one, and the session goes on
    with another transfer. The blocking API's Ctrl-C tests (test_transfers.py) ask the
    same of KeyboardInterrupt."""
    import asyncio

    import pyssh.aio

    size = 2 << 30  # sparse: far longer to move than the test waits
    src = area["remote" if how == "download" else "local"] / "big.bin"
    with open(src, "wb") as f:
        f.truncate(size)
    dest = area["back" if how == "download" else "remote"]
    (dest / "big.bin").write_bytes(b"the good old content")
    (area["remote"] / "small").write_bytes(b"small")

    async def main():
        async with await pyssh.aio.connect(server.address, **_aio_kw(server)) as s:
            moving = asyncio.Event()

            def progress(path, moved, total):
                if moved > 0:
                    moving.set()

            method = s.scp_download if how == "download" else s.scp_upload
            task = asyncio.ensure_future(method(str(src), str(dest), progress=progress))
            await asyncio.wait_for(moving.wait(), 20)
            started = time.monotonic()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert time.monotonic() - started < 0.5
            if how == "download":
                assert os.listdir(dest) == ["big.bin"]  # no temporary file
                assert (dest / "big.bin").read_bytes() == b"the good old content"
            got = await s.scp_download(str(area["remote"] / "small"), area["back"])
            assert got == [str(area["back"] / "small")]
            assert (await s.run("echo usable")).stdout == b"usable\n"

    asyncio.run(main())


@pytest.mark.slow
def test_aio_async_progress_and_a_free_loop(server, area):
    """An async def progress is awaited between steps, in order; a 256 MiB download
    (over a second) leaves the loop free: a 1 ms heartbeat goes on throughout. Its
    worst delay is a few milliseconds on an idle machine (a step moves data for about
    4 ms); the bound is loose for a busy CI machine, and would still catch a transfer
    that holds the loop from start to end."""
    import asyncio

    import pyssh.aio

    size = 256 << 20
    src = area["remote"] / "quarter.bin"
    with open(src, "wb") as f:
        f.truncate(size)
    calls = []
    worst = [0.0]

    async def progress(path, moved, total):
        await asyncio.sleep(0)
        calls.append((path, moved, total))

    async def heartbeat(stop):
        while not stop.is_set():
            t = time.perf_counter()
            await asyncio.sleep(0.001)
            worst[0] = max(worst[0], time.perf_counter() - t - 0.001)

    async def main():
        async with await pyssh.aio.connect(server.address, **_aio_kw(server)) as s:
            stop = asyncio.Event()
            beat = asyncio.ensure_future(heartbeat(stop))
            try:
                await s.scp_download(str(src), area["back"], progress=progress)
            finally:
                stop.set()
                await beat

    asyncio.run(main())
    assert os.path.getsize(area["back"] / "quarter.bin") == size
    dest = str(area["back"] / "quarter.bin")
    assert calls[-1] == (dest, size, size)
    moved = [m for _, m, _ in calls]
    assert moved == sorted(moved)  # awaited in order (mid-file calls: a few a second)
    assert worst[0] < 0.25, f"the loop was held for {worst[0] * 1000:.1f} ms"
