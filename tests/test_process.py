"""Interactive processes: session.popen() and session.shell() against a real sshd."""

import logging
import os
import re
import threading
import time

import pytest

import pyssh
from pyssh import _ssh

from conftest import IS_ROOT, interrupted_child, wait_until

SHELL_PROMPT = "PS1='pyssh$ '; PROMPT_COMMAND=; bind 'set enable-bracketed-paste off' 2>/dev/null\n"


@pytest.fixture(scope="module")
def session(server, request):
    """An ordinary user's session (as root: the test account, whose shell is
    /bin/sh; root's may read a slow ~/.bashrc for every channel)."""
    address = server.address
    if IS_ROOT:
        name, _password = request.getfixturevalue("account")
        address = f"{name}@{server.host}:{server.port}"
    with server.connect(address=address) as s:
        yield s


def gone(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_streams_status_and_repr(session):
    with session.popen("echo out; echo err >&2; exit 3") as p:
        assert p.stdout.read() == b"out\n"
        assert p.stderr.read() == b"err\n"
        assert p.wait() == 3
        assert p.returncode == 3 and p.exit_signal is None
        assert "returncode=3" in repr(p)
    assert p.stdout.closed and p.stdin.closed


def test_lines_read1_readinto(session):
    with session.popen("printf 'a\\nbb\\nccc'") as p:
        assert p.stdout.readline() == b"a\n"
        assert list(p.stdout) == [b"bb\n", b"ccc"]
        assert p.stdout.read1() == b""
    with session.popen("printf 0123456789") as p:
        buf = bytearray(4)
        assert p.stdout.readinto(buf) == 4 and buf == b"0123"
        assert p.stdout.read(3) == b"456"
        assert p.stdout.readline(2) == b"78"
        assert p.stdout.read() == b"9"


def test_stdin_fed_incrementally(session):
    with session.popen("while read x; do echo got $x; done; echo end") as p:
        for word in ("one", "two"):
            p.stdin.write(f"{word}\n".encode())
            assert p.stdout.readline() == f"got {word}\n".encode()
        p.stdin.close()  # EOF: the loop ends
        assert p.stdout.read() == b"end\n"
        assert p.wait() == 0


def test_poll_then_returncode(session):
    with session.popen("read x; exit 7") as p:
        assert p.poll() is None
        p.stdin.write(b"go\n")
        assert p.wait(timeout=10) == 7
        assert p.poll() == 7


def test_writing_after_the_end_is_a_broken_pipe(session):
    with session.popen("exit 0") as p:
        p.wait(timeout=10)
        with pytest.raises(BrokenPipeError):
            p.stdin.write(b"x" * 100)


def test_communicate_small(session):
    with session.popen("cat; echo e >&2") as p:
        assert p.communicate(b"hello") == (b"hello", b"e\n")
        assert p.returncode == 0


@pytest.mark.slow
def test_communicate_64_mib_each_way(session):
    """Large input and large output at once: a writer that waited for the whole
    input to go before reading would deadlock on the windows."""
    data = os.urandom(1 << 20) * 64
    with session.popen("cat; head -c 67108864 /dev/zero >&2") as p:
        out, err = p.communicate(data, timeout=120)
    assert out == data
    assert len(err) == 64 << 20 and err.count(0) == len(err)
    assert p.returncode == 0


@pytest.mark.slow
def test_communicate_timeout_keeps_the_output(session):
    with session.popen("echo early; sleep 30") as p:
        with pytest.raises(pyssh.SSHTimeoutError, match="timed out after 0.3"):
            p.communicate(timeout=0.3)
        assert p.returncode is None
        assert p.stdout.read1() == b"early\n"


def test_one_thread_writes_while_another_reads(session):
    data = os.urandom(1 << 20) * 8
    with session.popen("cat") as p:

        def feed():
            p.stdin.write(data)
            p.stdin.close()

        t = threading.Thread(target=feed)
        t.start()
        got = p.stdout.read()
        t.join(30)
        assert got == data and p.wait() == 0


def test_unread_stderr_does_not_block_stdout(session):
    """4 MiB on stderr first: the channel's one window would fill with it if
    reading stdout did not take stderr aside."""
    with session.popen("head -c 4194304 /dev/zero >&2; echo done") as p:
        assert p.stdout.readline() == b"done\n"
        assert len(p.stderr.read()) == 4 << 20


def test_env(session):
    with session.popen("echo $PYSSH_X", env={"PYSSH_X": "from env"}) as p:
        assert p.stdout.read() == b"from env\n"


def test_env_refused_says_accept_env(session):
    with pytest.raises(pyssh.SSHError, match="AcceptEnv"):
        session.popen("true", env={"NOT_ACCEPTED": "1"})


# ---- a terminal -----------------------------------------------------------------------


def start_shell(session, **kwargs):
    sh = session.shell(**kwargs)
    sh.stdin.write(SHELL_PROMPT.encode())
    sh.expect(r"pyssh\$ $", timeout=10)
    return sh


def run_line(sh, line):
    sh.stdin.write(line.encode() + b"\n")
    sh.read_until(b"\n", timeout=10)  # the echo of the line
    return sh.read_until(b"pyssh$ ", timeout=10)[: -len(b"pyssh$ ")]


def test_shell_prompt_command_and_exit_status(session):
    with start_shell(session, size=(100, 30)) as sh:
        assert sh.stderr is None
        assert run_line(sh, "echo hi; echo there >&2") == b"hi\r\nthere\r\n"
        assert run_line(sh, "stty size; echo $TERM") == b"30 100\r\nxterm-256color\r\n"
        assert run_line(sh, "tty").startswith(b"/dev/pts/")
        sh.stdin.write(b"exit 5\n")
        assert sh.wait(timeout=10) == 5


def test_resize_is_seen_by_stty(session):
    with start_shell(session) as sh:
        assert run_line(sh, "stty size") == b"24 80\r\n"
        sh.resize(132, 43)
        assert run_line(sh, "stty size") == b"43 132\r\n"
    with session.popen("true") as p, pytest.raises(pyssh.SSHError, match="no terminal"):
        p.resize(10, 10)


def test_terminal_modes_are_sent(session):
    with session.popen("stty -a", pty=True, term="vt100", modes={"ECHO": 0, "ICANON": 1}) as p:
        out = p.stdout.read().decode()
    assert re.search(r"(^|\s)-echo(\s|$)", out) and re.search(r"(^|\s)icanon(\s|$)", out)
    with pytest.raises(ValueError, match="unknown terminal mode"):
        session.popen("true", pty=True, modes={"NOPE": 1})


def test_expect_and_read_until_time_out_showing_the_output(session):
    with session.popen("echo 'Password for x:'; sleep 30") as p:
        m = p.expect(rb"Password for (\w+):", timeout=10)
        assert m.group(1) == b"x"
        with pytest.raises(pyssh.SSHTimeoutError, match="Password for x:") as e:
            p.read_until("never", timeout=0.3)
        assert "timed out after 0.3 seconds" in str(e.value)


def test_expect_at_the_end_of_output_is_eof(session):
    with session.popen("echo done") as p:
        with pytest.raises(EOFError, match="done"):
            p.expect("more", timeout=10)


@pytest.mark.slow
def test_output_is_made_printable_in_errors(session):
    with session.popen("printf 'a\\033]0;title\\007b'; sleep 30") as p:
        with pytest.raises(pyssh.SSHTimeoutError) as e:
            p.expect("zzz", timeout=0.3)
        assert "\x1b" not in str(e.value) and "\x07" not in str(e.value)


# ---- signals --------------------------------------------------------------------------


def test_terminate_reports_the_signal(session):
    with session.popen("echo $$; exec sleep 30") as p:
        pid = int(p.stdout.readline())
        p.terminate()
        assert p.returncode == -15 and p.exit_signal == "TERM"
        assert wait_until(lambda: gone(pid), 10)


def test_send_signal_by_number_and_name(session):
    import signal

    with session.popen("trap 'echo usr1' USR1; echo ready; while :; do sleep 0.05; done") as p:
        p.stdout.readline()
        p.send_signal(signal.SIGUSR1)
        assert p.stdout.readline() == b"usr1\n"
        p.send_signal("SIGUSR1")
        assert p.stdout.readline() == b"usr1\n"
        p.kill()
        assert p.returncode == -9
    with pytest.raises(ValueError, match="not a signal name"):
        _ssh.Channel.signal(p._channel, "TE RM")


@pytest.mark.slow
@pytest.mark.skipif(not IS_ROOT, reason="sshd ignores signals only for root logins")
def test_ignored_signal_closes_the_channel_and_says_so(server, caplog):
    """OpenSSH's sshd ignores signal requests for root: kill() then closes the
    channel; on a terminal the command gets SIGHUP and ends."""
    with server.connect() as session, session.popen("echo $$; exec sleep 30", pty=True) as p:
        pid = int(p.stdout.readline())
        with caplog.at_level(logging.WARNING, logger="pyssh"):
            p.kill(grace=0.3)
        assert p.returncode == -9
        assert "did not deliver SIGKILL" in caplog.text
        assert wait_until(lambda: gone(pid), 10)
        assert session.exec_internal("echo ok").stdout == b"ok\n"


def test_closing_ends_the_command(session):
    p = session.popen("echo $$; exec sleep 30")
    pid = int(p.stdout.readline())
    p.close()
    p.close()
    assert wait_until(lambda: gone(pid), 10)


INTERRUPT_WAIT = r"""
import sys, time, pyssh
address, key, known_hosts, how = sys.argv[1:5]
s = pyssh.connect(address, keyfile=key, known_hosts=known_hosts, config=False)
p = s.popen("sleep 30")
try:
    print("started", flush=True)
    p.wait() if how == "wait" else p.expect("never")
except KeyboardInterrupt:
    print("interrupted", time.monotonic(), flush=True)
p.close()
print("then", s.exec_internal("echo usable").stdout.decode().strip(), flush=True)
"""


@pytest.mark.slow
@pytest.mark.parametrize("how", ["wait", "expect"])
def test_ctrl_c_during_wait_leaves_the_session_usable(server, how):
    args = [server.address, server.client_key, server.known_hosts, how]
    with interrupted_child(INTERRUPT_WAIT, args) as p:
        assert p.stdout.readline().strip() == "then usable"
        assert p.wait(timeout=30) == 0


def test_bad_arguments(session):
    with pytest.raises(ValueError, match="size"):
        session.popen("true", pty=True, size=(0, 10))
    with pytest.raises(ValueError, match="term"):
        session.popen("true", pty=True, term="a\nb")
    with pytest.raises(ValueError, match="empty"):
        session.popen(" ")
    with pytest.raises(ValueError, match="delimiter"):
        with session.popen("true") as p:
            p.read_until(b"")


@pytest.mark.slow
def test_an_idle_process_costs_no_cpu(session):
    """wait() and a blocked read sleep in poll(): no loop of short sleeps."""
    with session.popen("sleep 2; echo done") as p:
        before = time.process_time()
        assert p.stdout.readline() == b"done\n"
        assert p.wait() == 0
        used = time.process_time() - before
    assert used < 0.1, f"{used:.3f} s of CPU in a 2 s wait"


def test_ctrl_d_ends_input_on_a_terminal(session):
    with session.popen("cat", pty=True) as p:
        assert p.communicate(b"abc\n\x04", timeout=10) == (b"abc\r\nabc\r\n", None)
        assert p.returncode == 0
