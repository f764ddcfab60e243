"""Remote commands: exec_wait and exec_internal against a real sshd."""

import errno
import gc
import hashlib
import io
import os
import pathlib
import secrets
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import pyssh

from conftest import both_apis, interrupted_child, run_while_python_counts, wait_until

ASAN = "libasan" in os.environ.get("LD_PRELOAD", "")
# for the system tools the tests run (pgrep hangs with the ASan runtime preloaded)
TOOL_ENV = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}


def pgrep(*args):
    out = subprocess.run(
        ["pgrep", *args], capture_output=True, text=True, env=TOOL_ENV, timeout=30
    ).stdout
    return out.split()


@pytest.fixture
def session(server, api_connect):
    """A session through the API under test (both_apis: blocking and pyssh.aio)."""
    with api_connect(server) as s:
        yield s


def remote_pids(pattern):
    """PIDs of processes whose command line matches (the server is this machine)."""
    return [int(p) for p in pgrep("-f", pattern)]


def kill_all(pattern):
    """SIGKILL what a failed test left running (the commands it started)."""
    for pid in remote_pids(pattern):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def wait_gone(pattern, seconds=10.0):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if not remote_pids(pattern):
            return True
        time.sleep(0.05)
    return False


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def open_fds():
    return len(os.listdir("/proc/self/fd"))


# ---- exit statuses and signals -----------------------------------------------------------


@both_apis
@pytest.mark.slow
@pytest.mark.parametrize("status", [0, 1, 255])
def test_exit_status(session, status):
    assert session.exec_wait(f"exit {status}", stdout=None, stderr=None) == status
    r = session.exec_internal(f"exit {status}", error=False)
    assert r.status == status and r.signal is None and r.ok == (status == 0)
    assert r["status"] == status


@both_apis
def test_nonzero_status_raises_command_error_with_stderr_tail(session):
    script = 'for i in $(seq 1 50); do echo "line $i" >&2; done; echo out; exit 3'
    with pytest.raises(pyssh.CommandError) as ei:
        session.exec_internal(script)
    e = ei.value
    assert e.status == 3 and e.returncode == 3 and e.command == script
    assert e.stdout == b"out\n"
    assert e.stderr.startswith(b"line 1\n") and e.stderr.endswith(b"line 50\n")
    msg = str(e)
    assert "exited with status 3" in msg
    assert "line 50" in msg and "line 41" in msg  # the tail of stderr...
    assert "line 40\n" not in msg  # ...only the tail
    assert isinstance(e, pyssh.SSHError)
    assert e.result.status == 3


@both_apis
def test_the_stderr_tail_is_shown_escaped(session):
    """The message shows what the command wrote, but cannot drive the terminal that
    prints the traceback; the exception keeps the bytes as they came."""
    script = r"printf 'ok\n\033]0;pwned\007\033[2Jgone\n' >&2; exit 1"
    with pytest.raises(pyssh.CommandError) as ei:
        session.exec_internal(script)
    msg = str(ei.value)
    assert "\x1b" not in msg and "\x07" not in msg
    assert "ok\n\\x1b]0;pwned\\x07\\x1b[2Jgone" in msg
    assert ei.value.stderr == b"ok\n\x1b]0;pwned\x07\x1b[2Jgone\n"


@both_apis
def test_empty_stderr_is_said(session):
    with pytest.raises(pyssh.CommandError, match=r"status 1 \(its stderr was empty\)"):
        session.exec_internal("false")


@both_apis
@pytest.mark.slow
def test_killed_by_signal(session):
    r = session.exec_internal("kill -KILL $$", error=False)
    assert r.signal == "KILL"
    assert r.status == -signal.SIGKILL
    assert session.exec_wait("kill -TERM $$", stdout=None, stderr=None) == -signal.SIGTERM
    with pytest.raises(pyssh.CommandError, match="killed by signal SIGKILL") as ei:
        session.exec_internal("kill -KILL $$")
    assert ei.value.signal == "KILL"


@both_apis
def test_check_and_text(session):
    r = session.exec_internal("printf 'h\\xc3\\xa9llo'; printf 'bad \\xff' >&2")
    assert r.check() is r
    assert r.text() == r.stdout_text == "héllo"
    assert r.stderr_text == "bad \ufffd"
    assert "status=0" in repr(r)


# ---- output --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def blob(tmp_path_factory):
    """3 MB of random bytes with every byte value, in a file the server can read."""
    d = tmp_path_factory.mktemp("blob")
    os.chmod(d, 0o755)
    data = bytes(range(256)) * 16 + os.urandom(3_000_000)
    path = d / "blob.bin"
    path.write_bytes(data)
    os.chmod(path, 0o644)
    return path, data


@both_apis
@pytest.mark.slow
def test_large_binary_output_on_both_streams(session, blob):
    path, data = blob
    r = session.exec_internal(f"cat {path}; cat {path} >&2; cat {path}")
    assert r.stdout == data + data
    assert r.stderr == data


@both_apis
def test_interleaved_streams_do_not_deadlock(session, blob):
    path, data = blob
    # both streams at once, each far more than a channel window
    cmd = f"for i in 1 2 3 4; do cat {path}; done & for i in 1 2 3 4; do cat {path} >&2; done; wait"
    r = session.exec_internal(cmd, timeout=60)
    assert r.stdout == data * 4
    assert r.stderr == data * 4


@both_apis
@pytest.mark.slow
def test_no_output(session):
    r = session.exec_internal("true")
    assert r.stdout == b"" and r.stderr == b"" and r.status == 0
    got = []
    assert session.exec_wait("true", stdout=got.append, stderr=got.append) == 0
    assert got == []


@both_apis
def test_unicode_command(session):
    r = session.exec_internal("echo 'héllo wörld ✓ 日本'")
    assert r.stdout.decode("utf-8") == "héllo wörld ✓ 日本\n"


@both_apis
def test_script_as_a_list(session):
    r = session.exec_internal(["cd /", "pwd", "x=42", "echo $x"])
    assert r.stdout == b"/\n42\n"


@both_apis
def test_callable_target_gets_bytes_in_large_chunks(session):
    chunks = []
    n = 8 * 1024 * 1024
    assert session.exec_wait(f"head -c {n} /dev/zero", stdout=chunks.append) == 0
    assert all(type(c) is bytes for c in chunks)
    assert sum(map(len, chunks)) == n and b"".join(chunks) == bytes(n)
    # tens of KiB per call while data flows, not 1 KiB reads
    assert n / len(chunks) >= 16 * 1024, f"{len(chunks)} calls for 8 MiB"


@both_apis
def test_default_targets_are_sys_stdout_and_stderr(session, capsys):
    print("before", flush=False)  # still in the text layer: must come out first
    assert session.exec_wait("echo out; echo err >&2") == 0
    print("after")
    out, err = capsys.readouterr()
    assert out == "before\nout\nafter\n"
    assert err == "err\n"


class NotebookStream:
    """Like Jupyter's sys.stdout: a text stream with no .buffer."""

    encoding = "UTF-8"

    def __init__(self):
        self.parts = []
        self.flushes = 0

    def write(self, s):
        assert isinstance(s, str)
        self.parts.append(s)
        return len(s)

    def flush(self):
        self.flushes += 1


@both_apis
def test_default_target_without_buffer_gets_decoded_text(session, monkeypatch):
    out, err = NotebookStream(), NotebookStream()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    # 3-byte characters, 300 KB: chunk boundaries fall inside characters
    text = "€" * 100_000
    assert session.exec_wait("yes '€' | head -n 100000 | tr -d '\\n'; echo 'é' >&2") == 0
    assert "".join(out.parts) == text
    assert "".join(err.parts) == "é\n"
    assert out.flushes >= 1


class ConsoleStream:
    """Like a terminal's sys.stdout/sys.stderr: a text layer over a binary .buffer.
    Records what reaches the buffer and each flush, and creates `flag` once `first`
    has reached it, which lets the remote command go on."""

    encoding = "utf-8"

    def __init__(self, flag, with_buffer):
        self.flag = flag
        self.events = []
        self.got = b""
        if with_buffer:
            self.buffer = self

    def write(self, data):
        self.events.append("write")
        self.got += data.encode() if isinstance(data, str) else bytes(data)
        if b"first" in self.got:
            self.flag.touch()
        return len(data)

    def flush(self):
        self.events.append("flush")


@both_apis
@pytest.mark.slow
@pytest.mark.parametrize("name", ["stdout", "stderr"])
@pytest.mark.parametrize("with_buffer", [True, False], ids=["buffer", "text"])
def test_default_targets_write_and_flush_as_data_arrives(
    session, monkeypatch, tmp_path, name, with_buffer
):
    # The command writes `first`, then waits (15 s at most) until it has reached
    # this process's sys.stdout/sys.stderr before it writes `second`: output held
    # back until the command ends would make it give up (status 3).
    flag = tmp_path / "flag"
    stream = ConsoleStream(flag, with_buffer)
    monkeypatch.setattr(sys, name, stream)
    to = "" if name == "stdout" else " >&2"
    cmd = (
        f"echo first{to}; i=0; while [ ! -e '{flag}' ]; do i=$((i+1)); "
        f"[ $i -gt 300 ] && exit 3; sleep 0.05; done; echo second{to}"
    )
    kw = {"stderr": None} if name == "stdout" else {"stdout": None}
    assert session.exec_wait(cmd, **kw) == 0
    assert stream.got == b"first\nsecond\n"
    # each write is flushed at once (a terminal shows it, a pipe passes it on)
    writes = [i for i, e in enumerate(stream.events) if e == "write"]
    assert writes and all(stream.events[i + 1 : i + 2] == ["flush"] for i in writes), stream.events


@both_apis
def test_text_stream_target(session):
    out, err = io.StringIO(), io.StringIO()
    assert session.exec_wait("echo 'ünï'; echo 'ërr' >&2", stdout=out, stderr=err) == 0
    assert out.getvalue() == "ünï\n"
    assert err.getvalue() == "ërr\n"


@both_apis
@pytest.mark.slow
@pytest.mark.parametrize("buffering", [-1, 0])
def test_binary_file_target(session, blob, tmp_path, buffering):
    path, data = blob
    with (
        open(tmp_path / "out", "wb", buffering=buffering) as f,
        open(tmp_path / "err", "wb", buffering=buffering) as g,
    ):
        assert session.exec_wait(f"cat {path}; head -c 1000 {path} >&2", stdout=f, stderr=g) == 0
    assert (tmp_path / "out").read_bytes() == data
    assert (tmp_path / "err").read_bytes() == data[:1000]


@both_apis
@pytest.mark.slow
@pytest.mark.parametrize("kind", [str, pathlib.Path])
def test_path_target_is_overwritten(session, tmp_path, kind):
    out, err = tmp_path / "out.txt", tmp_path / "err.txt"
    out.write_text("old content that is longer than the new one\n")
    assert session.exec_wait("echo new; echo oops >&2", stdout=kind(out), stderr=kind(err)) == 0
    assert out.read_text() == "new\n"
    assert err.read_text() == "oops\n"


@both_apis
def test_same_path_for_both_streams(session, tmp_path):
    both = tmp_path / "both.log"
    assert session.exec_wait("echo out; echo err >&2", stdout=str(both), stderr=both) == 0
    assert sorted(both.read_text().splitlines()) == ["err", "out"]


@both_apis
def test_none_discards(session, capfd):
    assert session.exec_wait("echo out; echo err >&2; exit 4", stdout=None, stderr=None) == 4
    assert capfd.readouterr() == ("", "")


@both_apis
def test_bad_targets(session):
    with pytest.raises(TypeError, match="stdout must be a callable"):
        session.exec_wait("true", stdout=42)
    with pytest.raises(TypeError, match="not bytes"):
        session.exec_wait("true", stderr=b"/tmp/x")
    assert session.exec_internal("echo fine").stdout == b"fine\n"


@both_apis
def test_unusable_file_objects_are_refused_before_the_command_starts(session, tmp_path):
    ran = tmp_path / "ran"
    cmd = f"touch '{ran}'; echo out; echo err >&2"
    data = tmp_path / "data"
    data.write_bytes(b"x\n")
    closed = open(tmp_path / "closed", "wb")
    closed.close()
    with (
        open(data, "rb") as reading,
        open(data) as reading_text,
        open(tmp_path / "w", "wb") as writing,
    ):
        for kw, match in [
            (dict(stdout=closed), r"stdout: the file object .* is closed"),
            (dict(stderr=reading), r"stderr: the file object .* is not open for writing"),
            (dict(stdout=reading_text), r"stdout: the file object .* is not open for writing"),
        ]:
            with pytest.raises(ValueError, match=match):
                session.exec_wait(cmd, **kw)
        for stdin, match in [
            (closed, r"stdin: the file object .* is closed"),
            (writing, r"stdin: the file object .* is not open for reading"),
        ]:
            with pytest.raises(ValueError, match=match):
                session.exec_internal(cmd, stdin=stdin)
    assert not ran.exists()


@both_apis
def test_path_targets_that_cannot_be_written(session, tmp_path):
    missing = tmp_path / "no" / "such" / "out.txt"
    with pytest.raises(
        FileNotFoundError,
        match=r"stdout: cannot write to '.*out\.txt': its directory .* does not "
        r"exist \(create it first\)",
    ):
        session.exec_wait("echo hi", stdout=missing)
    with pytest.raises(IsADirectoryError, match=r"stderr: cannot write to .*: it is a directory"):
        session.exec_wait("echo hi", stderr=str(tmp_path))
    # stdout's file, opened first, is closed when stderr's cannot be opened (the
    # count may only fall: an earlier test's session collected meanwhile closes its own)
    gc.collect()
    fds = open_fds()
    with pytest.raises(FileNotFoundError, match="stderr: cannot write") as ei:
        session.exec_wait("echo hi", stdout=tmp_path / "out.txt", stderr=missing)
    assert open_fds() <= fds, ei.value
    out = str(tmp_path / "out.txt")
    assert not any(
        os.path.realpath(f"/proc/self/fd/{fd}") == out for fd in os.listdir("/proc/self/fd")
    )
    assert session.exec_internal("echo usable").stdout == b"usable\n"


# ---- stdin -------------------------------------------------------------------------------


@both_apis
@pytest.mark.slow
@pytest.mark.parametrize(
    "make",
    [
        lambda d: d,
        lambda d: bytearray(d),
        lambda d: memoryview(d),
        lambda d: io.BytesIO(d),
        lambda d: [d[:1000], b"", d[1000:5000], d[5000:]],
        lambda d: (d[i : i + 777] for i in range(0, len(d), 777)),
    ],
    ids=["bytes", "bytearray", "memoryview", "file", "list", "generator"],
)
def test_stdin_kinds(session, make):
    data = os.urandom(100_000) + bytes(range(256))
    r = session.exec_internal("cat", stdin=make(data))
    assert r.stdout == data


@both_apis
@pytest.mark.slow
def test_stdin_str_is_utf8(session):
    assert session.exec_internal("cat", stdin="héllo\n").stdout == "héllo\n".encode()
    assert session.exec_internal("cat", stdin=["a", b"b", "ç"]).stdout == "abç".encode()


@both_apis
@pytest.mark.slow
def test_stdin_real_file(session, blob):
    path, data = blob
    with open(path, "rb") as f:
        assert (
            session.exec_internal("sha256sum", stdin=f).stdout.split()[0].decode()
            == hashlib.sha256(data).hexdigest()
        )


@both_apis
@pytest.mark.slow
def test_stdin_larger_than_the_window(session):
    data = os.urandom(1 << 20) * 64  # 64 MiB, 32 times the channel window
    r = session.exec_internal("sha256sum; echo done >&2", stdin=data, timeout=120)
    assert r.stdout.split()[0].decode() == hashlib.sha256(data).hexdigest()
    assert r.stderr == b"done\n"


@both_apis
@pytest.mark.slow
def test_stdin_never_read(session):
    data = bytes(64 << 20)
    # a hang would end in SSHTimeoutError
    r = session.exec_internal("echo ignored", stdin=data, timeout=30)
    assert r.stdout == b"ignored\n"


@both_apis
def test_no_stdin_sends_eof_at_once(session):
    # a command that reads stdin gets end-of-file, instead of hanging
    r = session.exec_internal("cat; wc -c", timeout=20)
    assert r.stdout.split() == [b"0"]


@both_apis
@pytest.mark.slow
def test_stdin_while_output_flows(session):
    # the command writes as much as it reads: input and output move together
    data = os.urandom(1 << 20) * 16
    got = []
    assert (
        session.exec_wait("cat; cat /dev/null >&2", stdin=data, stdout=got.append, timeout=60) == 0
    )
    assert b"".join(got) == data


@both_apis
@pytest.mark.slow
def test_bad_stdin(session):
    with pytest.raises(TypeError, match="stdin must be bytes"):
        session.exec_internal("cat", stdin=42)
    with pytest.raises(TypeError, match="stdin items must be bytes"):
        session.exec_internal("cat", stdin=[b"ok", 42])
    with pytest.raises(TypeError, match="no order"):
        session.exec_internal("cat", stdin={b"a", b"b"})
    assert session.exec_internal("echo usable").stdout == b"usable\n"


@both_apis
def test_stdin_source_raising_propagates(session):
    class Broken(Exception):
        pass

    def source():
        yield b"first\n"
        raise Broken("the source failed")

    with pytest.raises(Broken, match="the source failed"):
        session.exec_internal("cat", stdin=source())
    assert session.exec_internal("echo usable").stdout == b"usable\n"


# ---- environment -------------------------------------------------------------------------


@both_apis
def test_env_accepted(session):
    r = session.exec_internal(
        'printf "%s|%s" "$PYSSH_A" "$PYSSH_B"', env={"PYSSH_A": "one two", "PYSSH_B": "ü=3"}
    )
    assert r.stdout.decode() == "one two|ü=3"


@both_apis
def test_env_refused_says_accept_env(session):
    with pytest.raises(pyssh.SSHError, match="NOT_ACCEPTED_VAR.*AcceptEnv"):
        session.exec_internal("true", env={"NOT_ACCEPTED_VAR": "x"})
    assert session.exec_internal("echo usable").stdout == b"usable\n"


@both_apis
@pytest.mark.parametrize(
    "env, err",
    [
        (["PYSSH_A=1"], TypeError),
        ({"PYSSH_A": 1}, TypeError),
        ({"": "x"}, ValueError),
        ({"A=B": "x"}, ValueError),
        ({"PYSSH_A": "a\0b"}, ValueError),
    ],
)
def test_bad_env(session, env, err):
    with pytest.raises(err):
        session.exec_internal("true", env=env)


# ---- argument checks and aliases -----------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    "command, err, match",
    [
        ("", ValueError, "empty"),
        ("   \n", ValueError, "empty"),
        (b"whoami", TypeError, "not bytes"),
        (42, TypeError, "str or a sequence"),
        (["echo", 1], TypeError, "must be a str"),
        ({"echo a", "echo b"}, TypeError, "no order"),
        ({"echo a": 1}, TypeError, "no order"),
        ("echo a\0b", ValueError, "NUL"),
        ("echo " + "x" * 300_000, ValueError, "stdin"),
    ],
)
@both_apis
def test_bad_commands(session, command, err, match):
    with pytest.raises(err, match=match):
        session.exec_wait(command)


@both_apis
@pytest.mark.parametrize("timeout", [0, -1, "5", True, float("nan")])
def test_bad_timeouts(session, timeout):
    with pytest.raises(ValueError, match="timeout must be a positive number"):
        session.exec_internal("true", timeout=timeout)


@both_apis
def test_timeout_beyond_any_float_is_no_limit(session):
    assert session.exec_internal("echo ok", timeout=10**400).stdout == b"ok\n"


@both_apis
def test_bad_error_flag(session):
    with pytest.raises(TypeError, match="error must be True or False"):
        session.exec_internal("true", error="yes")


@both_apis
def test_closed_session(server, tmp_path, api_connect):
    s = api_connect(server)
    s.close()
    with pytest.raises(pyssh.SessionClosedError):
        s.exec_wait("true")
    with pytest.raises(pyssh.SessionClosedError):
        s.exec_internal("true")
    # a path given as a target is not truncated for a command that cannot run
    out = tmp_path / "out.txt"
    out.write_bytes(b"keep me")
    with pytest.raises(pyssh.SessionClosedError):
        s.exec_wait("true", stdout=out)
    assert out.read_bytes() == b"keep me"


@pytest.mark.slow
def test_r_style_aliases(session):
    got = []
    assert (
        pyssh.ssh_exec_wait(
            session, command="echo hi; echo ho >&2", std_out=got.append, std_err=got.append
        )
        == 0
    )
    assert sorted(got) == [b"hi\n", b"ho\n"]
    r = pyssh.ssh_exec_internal(session, "exit 3", error=False)
    assert r["status"] == 3 and r["stdout"] == b"" and r["stderr"] == b""
    assert pyssh.ssh_exec_internal(session).stdout.strip().decode() == session.user
    with pytest.raises(pyssh.CommandError):
        pyssh.ssh_exec_internal(session, "exit 1")
    # R code passes the host by mistake
    with pytest.raises(TypeError, match="ssh_exec_wait: the first argument must be a session"):
        pyssh.ssh_exec_wait("me@host", "whoami")
    with pytest.raises(TypeError, match="ssh_exec_internal: the first argument must be a session"):
        pyssh.ssh_exec_internal(None)


# ---- stopping a command: timeout, Ctrl-C, a callback that raises ------------------------


@both_apis
@pytest.mark.slow
def test_timeout_closes_channel_and_session_stays_usable(session):
    # the error itself says the timeout fired (a finished `sleep 30` raises nothing)
    with pytest.raises(pyssh.SSHTimeoutError, match="nothing moved for 0.5 seconds") as ei:
        session.exec_wait("sleep 30", timeout=0.5)
    assert isinstance(ei.value, TimeoutError)
    assert "running the command" in str(ei.value) and "timeout=0.5" in str(ei.value)
    assert session.exec_internal("echo usable", timeout=10).stdout == b"usable\n"


@both_apis
@pytest.mark.slow
def test_timeout_is_inactivity_a_command_that_keeps_talking_runs_on(session):
    """The timeout is "no progress for so long", as ServerAliveInterval or curl's
    low-speed limit: a command that prints every 0.3 s for 2.4 s in all is not cut
    off by a timeout of 1 s; a silent second ends it."""
    script = "for i in 1 2 3 4 5 6 7 8; do echo $i; sleep 0.3; done"
    assert session.exec_internal(script, timeout=1).stdout.split() == [
        str(i).encode() for i in range(1, 9)
    ]
    with pytest.raises(pyssh.SSHTimeoutError, match="timeout=1"):
        session.exec_internal("echo a; sleep 0.3; echo b; sleep 5; echo c", timeout=1)


@both_apis
@pytest.mark.slow
def test_timeout_output_before_it_is_kept(session):
    got = []
    with pytest.raises(pyssh.SSHTimeoutError):
        session.exec_wait("echo early; sleep 30", stdout=got.append, timeout=1)
    assert b"".join(got) == b"early\n"


@both_apis
@pytest.mark.slow
def test_timeout_signals_the_command(api_plain_session):
    # OpenSSH delivers the SIGHUP to an ordinary user's command (not to root's)
    marker = f"sleep 4{secrets.randbelow(1000)}.{secrets.randbelow(1000)}"
    with pytest.raises(pyssh.SSHTimeoutError):
        api_plain_session.exec_wait(f"exec {marker}", timeout=0.5)
    assert wait_gone(marker), "the remote command was not stopped"


def _close_right_after_start(session, command, n):
    """Start `command` on n channels, closing each one at once (as a loop that gives
    up on commands would); then the session must still run a command."""
    from pyssh import _ssh

    for _ in range(n):
        ch = _ssh.Channel(session)
        ch.exec(command, timeout=30)
        ch.close()
    assert session.exec_internal("echo ok", timeout=30).stdout == b"ok\n"


@pytest.mark.slow
def test_commands_closed_right_after_start_are_stopped(plain_session):
    # sshd answers the exec request once it has forked the command, but signals its
    # process group, which exists only once the child has called setsid(): a SIGHUP
    # sent at once could be dropped ("killpg: No such process" in sshd's log), and
    # the command (which would never read EOF) kept running, holding one of sshd's
    # MaxSessions slots and libssh's channel (freed only by the server's CLOSE).
    marker = f"sleep 5{secrets.randbelow(1000)}.{secrets.randbelow(1000)}"
    try:
        _close_right_after_start(plain_session, f"exec {marker}", 200)
        assert wait_gone(marker, 30), f"{len(remote_pids(marker))} commands were not stopped"
    finally:
        kill_all(marker)


@pytest.mark.slow
@pytest.mark.parametrize("user", ["own", "plain"])
def test_many_running_commands_closed_release_everything(user, session, plain_address, server):
    # 24 channels whose commands read stdin (as cat does), left running, then closed
    # one after another, twice: each command gets SIGHUP (OpenSSH refuses to signal
    # root's sessions) and EOF, so the server ends them all, and later commands run
    # as usual
    from pyssh import _ssh

    s = session if user == "own" else server.connect(address=plain_address)
    try:
        marker = f"pyssh-{secrets.token_hex(6)}"
        for _ in range(2):
            chans = [_ssh.Channel(s) for _ in range(24)]
            for ch in chans:
                ch.exec(f"exec grep -F {marker}", timeout=30)
            for ch in chans:
                ch.close()
            assert s.exec_internal("echo ok", timeout=30).stdout == b"ok\n"
        # (root's commands, which SIGHUP does not reach, each make close() wait 0.1 s)
        _close_right_after_start(s, f"exec grep -F {marker}", 60 if user == "plain" else 20)
        assert wait_gone(marker, 30), f"{len(remote_pids(marker))} commands were not stopped"
    finally:
        kill_all(marker)
        if s is not session:
            s.close()


class Boom(Exception):
    pass


@both_apis
def test_callback_exception_propagates_and_stops_the_command(session):
    marker = f"yes pyssh-{secrets.token_hex(4)}"
    calls = []
    err = Boom("stop here")

    def cb(chunk):
        calls.append(len(chunk))
        raise err

    with pytest.raises(Boom) as ei:
        session.exec_wait(marker, stdout=cb)
    assert ei.value is err  # unchanged
    assert len(calls) == 1  # no call after the exception
    # the channel was closed: `yes` gets EPIPE and ends
    assert wait_gone(marker), "the remote command was not stopped"
    assert session.exec_internal("echo usable").stdout == b"usable\n"


@both_apis
def test_file_target_error_propagates(session):
    # a write that fails while the command runs: a full disk
    with open("/dev/full", "wb", buffering=0) as f:
        with pytest.raises(OSError) as ei:
            session.exec_wait("echo hi", stdout=f)
    assert ei.value.errno == errno.ENOSPC
    assert session.exec_internal("echo usable").stdout == b"usable\n"


SIGINT_CHILD = textwrap.dedent("""
    import sys, time, pyssh
    address, key, known_hosts, how, n = sys.argv[1:6]
    s = pyssh.connect(address, keyfile=key, known_hosts=known_hosts, config=False)
    print("ready", flush=True)
    try:
        if how == "idle":
            s.exec_wait(f"sleep 30.{n}", stdout=None, timeout=20)
        elif how == "discarded":     # output flowing, read in C and dropped
            s.exec_wait(f"head -c {n} /dev/zero", stdout=None, timeout=20)
        elif how == "callback":      # output flowing to a Python callable
            s.exec_wait(f"head -c {n} /dev/zero", stdout=lambda chunk: None, timeout=20)
        else:                        # stdin flowing, as fast as the command reads it
            s.exec_wait(f"head -c {n} >/dev/null", stdin=iter(lambda: bytes(1 << 20), None),
                        timeout=20)
        print("finished", flush=True)
    except KeyboardInterrupt:
        print("interrupted", time.monotonic(), flush=True)
    print("then", s.exec_internal("echo usable", timeout=10).stdout.decode().strip(), flush=True)
""")


@pytest.mark.slow
@pytest.mark.parametrize("how", ["idle", "discarded", "callback", "stdin"])
def test_ctrl_c_interrupts_a_running_command(server, how):
    n = 100 * 2**30 + secrets.randbelow(10**6)  # 100 GiB and a bit: the marker
    marker = f"head -c {n}"
    command = f"sleep 30.{n}" if how == "idle" else marker  # what the child runs

    def running(p):
        # inside exec_wait: the command runs on the server
        assert wait_until(lambda: remote_pids(command), 10), p.stderr.read()

    try:
        with interrupted_child(
            SIGINT_CHILD,
            [server.address, server.client_key, server.known_hosts, how, n],
            ready="ready",
            before_signal=running,
        ) as p:
            assert p.stdout.readline().strip() == "then usable"
            assert p.wait(timeout=20) == 0
            # the channel was closed: the command's output pipe or stdin went with it
            # (`sleep` as root gets no SIGHUP from OpenSSH, and reads and writes nothing)
            assert wait_gone(marker), "the remote command was not stopped"
    finally:
        kill_all(command)


# ---- threads, the GIL, CPU ---------------------------------------------------------------


@pytest.mark.slow
def test_concurrent_commands_on_several_sessions(server, plain_address):
    # the plain account: its stderr is the command's alone (see plain_address)
    sessions = [server.connect(address=plain_address) for _ in range(3)]
    errors = []

    def work(s, tag):
        try:
            for i in range(8):
                r = s.exec_internal(f"printf '{tag}-{i}'; head -c 300000 /dev/zero >&2", timeout=60)
                assert r.stdout == f"{tag}-{i}".encode()
                assert r.stderr == bytes(300000)
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    threads = [
        threading.Thread(target=work, args=(s, f"s{k}t{j}"))
        for k, s in enumerate(sessions)
        for j in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for s in sessions:
        s.close()
    assert not any(t.is_alive() for t in threads)
    assert errors == []


@pytest.mark.slow
def test_other_threads_run_while_output_streams(session):
    assert (
        run_while_python_counts(
            lambda: session.exec_wait("head -c 400000000 /dev/zero", stdout=None)
        )
        == 0
    )


@both_apis
@pytest.mark.slow
@pytest.mark.parametrize("how", ["discard", "capture", "callback"])
def test_idle_command_uses_no_cpu(session, how):
    """Also once the command has printed something: a captured output used to make
    the loop spin through the pause (2.9 s of CPU in a 3 s sleep)."""
    cpu = time.process_time()
    script = "echo before; sleep 2; echo after"
    if how == "capture":
        assert session.exec_internal(script).stdout == b"before\nafter\n"
    else:
        got = []
        assert session.exec_wait(script, stdout=None if how == "discard" else got.append) == 0
        assert b"".join(got) == (b"" if how == "discard" else b"before\nafter\n")
    # "after" came, so the 2 s pause was waited through: this is its CPU
    assert time.process_time() - cpu < 0.2


# ---- a server that dies ----------------------------------------------------------------------


@both_apis
def test_server_killed_mid_command(fresh_server, api_connect):
    s = api_connect(fresh_server)
    conns = pgrep("-P", str(fresh_server.pid))
    assert len(conns) == 1  # this session's sshd process

    def kill_connection(chunk):
        # every process of this connection: ours, started by our sshd
        tree = [conns[0]] + pgrep("-P", conns[0])
        for pid in tree:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass

    lost = "the connection to the server was lost .*: .* connect again"
    # a hang would be the SSHTimeoutError
    with pytest.raises(pyssh.ConnectError, match=lost):
        s.exec_wait("echo started; sleep 30", stdout=kill_connection, timeout=10)
    with pytest.raises(pyssh.ConnectError, match=lost):
        s.exec_internal("true")
    s.close()


# ---- memory and leaks ----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(
    ASAN, reason="AddressSanitizer's quarantine keeps freed memory: RSS says nothing"
)
def test_two_gib_interleaved_through_callbacks_in_constant_memory(session):
    gib = 1 << 30
    seen = [0, 0]
    peak = [0]
    next_check = [0]
    gc.collect()
    before = rss_bytes()

    def counter(i):
        def cb(chunk):
            seen[i] += len(chunk)
            total = seen[0] + seen[1]
            if total >= next_check[0]:
                next_check[0] = total + (32 << 20)
                peak[0] = max(peak[0], rss_bytes())

        return cb

    cmd = f"head -c {gib} /dev/zero & head -c {gib} /dev/zero >&2; wait"
    assert session.exec_wait(cmd, stdout=counter(0), stderr=counter(1), timeout=300) == 0
    assert seen == [gib, gib]
    assert peak[0] - before < 32 << 20, f"RSS grew by {(peak[0] - before) >> 20} MiB"


CAPTURE_CHILD = textwrap.dedent("""
    import resource, sys, pyssh
    address, key, known_hosts, n = sys.argv[1:5]
    n = int(n)
    s = pyssh.connect(address, keyfile=key, known_hosts=known_hosts, config=False)
    s.exec_internal("true")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    r = s.exec_internal(f"head -c {3 * n} /dev/zero; head -c {n} /dev/zero >&2")
    assert len(r.stdout) == 3 * n and len(r.stderr) == n
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(peak - before)
""")


@pytest.mark.slow
@pytest.mark.skipif(
    ASAN, reason="AddressSanitizer's quarantine keeps freed memory: RSS says nothing"
)
def test_exec_internal_holds_only_the_output(server):
    n = 64 << 20  # 192 MiB of stdout, 64 MiB of stderr
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            CAPTURE_CHILD,
            server.address,
            server.client_key,
            server.known_hosts,
            str(n),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    grown = int(out.stdout)
    # the output is 256 MiB: no second copy, no doubling left resident
    assert grown < 4 * n + (40 << 20), f"peak RSS grew by {grown >> 20} MiB for 256 MiB of output"


@pytest.mark.slow
@pytest.mark.skipif(
    ASAN, reason="AddressSanitizer's quarantine keeps freed memory: RSS says nothing"
)
def test_ten_thousand_commands_leak_nothing(plain_session):
    s = plain_session
    got = []
    for _ in range(100):
        s.exec_internal("true")
        s.exec_wait("echo x", stdout=got.append, stderr=None)
    gc.collect()
    rss, fds = rss_bytes(), open_fds()
    for _ in range(5000):
        r = s.exec_internal("echo x")
        assert r.stdout == b"x\n"
        got.clear()
        assert s.exec_wait("echo y >&2; exit 2", stdout=got.append, stderr=got.append) == 2
    gc.collect()
    assert open_fds() == fds
    # 4 MiB over 10,000 commands: a leak of 400 bytes per command would show
    assert rss_bytes() - rss < 4 << 20, f"RSS grew by {(rss_bytes() - rss) >> 10} KiB"


# ---- the demo --------------------------------------------------------------------------------


@pytest.mark.slow
def test_demo_runs_the_exec_examples(server):
    # python -m pyssh.demo starts its own sshd; its exec part: whoami streamed, the
    # three-command script, exec_internal capturing, a failing command's CommandError
    root = os.path.dirname(os.path.dirname(os.path.abspath(pyssh.__file__)))
    r = subprocess.run(
        [sys.executable, "-m", "pyssh.demo"],
        cwd=root,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert f"\n$ whoami\n{server.user}\n(exit status 0)\n" in out, out
    assert "tar tzvf hello.tar.gz\n" in out and "hello.txt\n" in out and "cleaned up /" in out, out
    assert (
        "exec_internal: ExecResult(command=\"uname -sr; echo 'a line on stderr' >&2\", "
        "status=0" in out
    ), out
    assert "  stderr: b'a line on stderr\\n'" in out, out
    assert "CommandError (status " in out and "its stderr ended with:" in out, out


@pytest.mark.slow
def test_commands_at_the_channel_limit_are_not_refused_by_a_close_in_flight():
    # sshd frees a closed channel's slot at the end of a pass of its main loop: an open
    # read in the same pass as a close was refused ("no more sessions") with only
    # MaxSessions - 1 channels in use. pyssh asks a refused open again (chanio.c).
    from concurrent.futures import ThreadPoolExecutor

    from conftest import QUICK_SHELL

    with pyssh.testing.SSHServer(extra_config=["MaxSessions 4", *QUICK_SHELL]) as srv:
        with srv.connect() as s, ThreadPoolExecutor(4) as pool:
            outs = list(pool.map(lambda i: s.exec_internal(f"echo {i}").stdout, range(300)))
    assert outs == [f"{i}\n".encode() for i in range(300)]
