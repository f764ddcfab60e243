"""session.interactive() and the pyssh command line, driven through a real
pseudo-terminal: the local terminal in raw mode and restored, Ctrl-C passed to
the remote side, the window size followed, exit statuses as ssh's."""

import contextlib
import fcntl
import os
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time

import pytest

import pyssh
from pyssh.__main__ import ERROR, _fields, main, parse_dynamic, parse_forward, parse_option
from pyssh._interactive import _Escape
from pyssh._process import encode_modes, modes_from_termios
from pyssh.testing import free_port

from conftest import wait_until

TIMEOUT = 20  # seconds for anything a terminal test waits for
# the child makes the pty its controlling terminal, so that a Ctrl-C the local
# terminal turned into SIGINT would reach it: raw mode must prevent that
CTTY = (
    "import fcntl, os, sys, termios; fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
    "os.execv(sys.argv[1], sys.argv[1:])"
)


def cli(server, *options):
    return [
        sys.executable, "-m", "pyssh", "-i", server.client_key,
        "-o", f"UserKnownHostsFile={server.known_hosts}", *options,
        f"{server.user}@127.0.0.1:{server.port}",
    ]  # fmt: skip


class Terminal:
    """A program on a new pseudo-terminal; the slave stays open here too, to read
    its attributes."""

    def __init__(self, argv, cols=80, rows=24):
        self.master, self.slave = os.openpty()
        self.resize(cols, rows)
        self.before = termios.tcgetattr(self.slave)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CTTY, *argv],
            stdin=self.slave, stdout=self.slave, stderr=self.slave, start_new_session=True,
        )  # fmt: skip
        self.out = b""

    def resize(self, cols, rows):
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def send(self, data):
        os.write(self.master, data)

    def expect(self, pattern, timeout=TIMEOUT):
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.out)
            if m is not None:
                self.out = self.out[m.end() :]
                return m
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.master], [], [], left)[0]:
                raise AssertionError(f"no {pattern!r} within {timeout} s; got {self.out[-600:]!r}")
            self.out += os.read(self.master, 65536)

    def wait(self):
        rc = self.proc.wait(TIMEOUT)
        with contextlib.suppress(OSError):  # what came last
            while select.select([self.master], [], [], 0)[0]:
                self.out += os.read(self.master, 65536)
        return rc

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)
        os.close(self.slave)


@pytest.fixture
def terminal(server, home):
    made = []

    def start(*options, command=None, **size):
        t = Terminal(cli(server, *options) + ([command] if command else []), **size)
        made.append(t)
        return t

    yield start
    for t in made:
        t.close()


def shell_ready(t):
    # a marker the command's echo cannot match: the shell computes it
    t.send(b"echo ready-$((20+22))\r")
    t.expect(rb"ready-42")


# ---- through a pseudo-terminal -------------------------------------------------------------


def test_shell_output_size_status_and_the_tty_restored(terminal):
    t = terminal(cols=100, rows=30)
    shell_ready(t)
    lflag = termios.tcgetattr(t.slave)[3]
    assert not lflag & (termios.ECHO | termios.ICANON | termios.ISIG)  # raw meanwhile
    t.send(b"echo hi; stty size; exit 3\r")
    t.expect(rb"[\r\n]hi\r\n30 100\r\n")
    assert t.wait() == 3
    assert termios.tcgetattr(t.slave) == t.before
    assert b"Connection to 127.0.0.1 closed." in t.out


@pytest.mark.slow
def test_ctrl_c_reaches_the_remote_command(terminal):
    t = terminal()
    shell_ready(t)
    # sh prints once it is the terminal's foreground job, then becomes the sleep: a
    # Ctrl-C sent before the shell made sleep the foreground job would miss it
    t.send(b"sh -c 'echo started-$((1+1)); exec sleep 30'; echo after-$((2+2))\r")
    t.expect(rb"started-2")
    t.send(b"\x03")
    # the shell is back long before the 30 s: sleep got SIGINT, the list stopped
    t.send(b"echo back-$((6*7))\r")
    t.expect(rb"back-42", timeout=10)
    assert b"after-4" not in t.out
    assert t.proc.poll() is None  # the local client did not get it
    t.send(b"exit\r")
    assert t.wait() == 0
    assert termios.tcgetattr(t.slave) == t.before


@pytest.mark.slow
def test_window_size_followed(terminal):
    t = terminal()
    shell_ready(t)
    t.resize(132, 50)  # the kernel sends SIGWINCH to the terminal's foreground
    os.kill(t.proc.pid, signal.SIGWINCH)
    for _ in range(20):  # the resize travels beside the keys: ask until it shows
        t.send(b"stty size\r")
        m = t.expect(rb"[\r\n](\d+ \d+)\r\n")
        if m.group(1) == b"50 132":
            break
    assert m.group(1) == b"50 132"
    t.send(b"exit 0\r")
    assert t.wait() == 0


@pytest.mark.slow
def test_tilde_dot_disconnects(terminal):
    t = terminal()
    shell_ready(t)
    t.send(b"sleep 30\r")
    t.send(b"~.")
    assert t.wait() == 255
    assert termios.tcgetattr(t.slave) == t.before


@pytest.mark.slow
def test_command_with_t_gets_a_terminal(terminal):
    t = terminal("-t", command="tty; exit 5")
    t.expect(rb"/dev/pts/\d+")
    assert t.wait() == 5
    assert termios.tcgetattr(t.slave) == t.before


@pytest.mark.slow
def test_command_without_t_gets_none(terminal):
    t = terminal(command="tty; exit 6")
    t.expect(rb"not a tty")
    assert t.wait() == 6


@pytest.mark.slow
def test_unknown_host_key_asked_on_the_terminal(server, home, tmp_path):
    kh = tmp_path / "known_hosts"
    argv = cli(server, "-o", f"UserKnownHostsFile={kh}") + ["echo in-$((5+5))"]
    t = Terminal(argv)
    try:
        t.expect(rb"continue connecting \(yes/no/\[fingerprint\]\)\? ")
        t.send(b"yes\r")
        t.expect(rb"in-10")
        assert t.wait() == 0
    finally:
        t.close()
    assert server.host_key_pub.split()[1] in kh.read_text()


# ---- the command line without a terminal ----------------------------------------------------


def run_cli(server, *args, stdin=b""):
    return subprocess.run(
        cli(server) + list(args), input=stdin, capture_output=True, timeout=TIMEOUT
    )


def test_cli_command_status_and_output(server, home):
    r = run_cli(server, "echo x; echo e >&2; exit 4")
    assert (r.returncode, r.stdout, r.stderr) == (4, b"x\n", b"e\n")


@pytest.mark.slow
def test_cli_stdin_streamed_then_eof(server, home):
    data = os.urandom(300_000)
    r = run_cli(server, "cat", stdin=data)
    assert r.returncode == 0
    assert r.stdout == data


@pytest.mark.slow
def test_cli_with_stdin_closed(server, home):
    # descriptor 0 closed: end of file for the command, never the connection read
    argv = ["sh", "-c", 'exec "$@" <&-', "sh", *cli(server), "cat; echo done"]
    r = subprocess.run(argv, capture_output=True, timeout=TIMEOUT)
    assert (r.returncode, r.stdout) == (0, b"done\n")


@pytest.mark.slow
def test_cli_signal_is_255(server, home):
    r = run_cli(server, "kill -TERM $$")
    assert r.returncode == 255


def test_cli_connection_refused(home):
    r = subprocess.run(
        [sys.executable, "-m", "pyssh", "-p", str(free_port()), "127.0.0.1", "true"],
        capture_output=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert r.returncode == 255
    assert r.stderr.startswith(b"pyssh: ")
    assert b"refused" in r.stderr


def test_cli_unknown_host_key_without_a_terminal(server, home):
    r = subprocess.run(
        cli(server, "-o", "UserKnownHostsFile=/dev/null") + ["true"],
        capture_output=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    assert r.returncode == 255
    assert b"StrictHostKeyChecking=accept-new" in r.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["-D", "1:2:3", "h"], "bad -D spec"),
        (["-L", "1:2", "h"], "bad -L spec"),
        (["-R", "x:h:1", "h"], "is not a port"),
        (["-L", "/l.sock:8080", "h"], "bad -L spec"),
        (["-R", "/a:h:1:2", "h"], "bad -R spec"),
        (["-L", "80:/h:22", "h"], "no host"),
        (["-o", "StrictHostKeyChecking=maybe", "h"], "bad StrictHostKeyChecking"),
        (["-N", "h", "ls"], "-N means no command"),
        ([], "no destination"),
    ],
)
def test_cli_usage_errors(args, message, capsys):
    try:
        rc = main(args)
    except SystemExit as e:
        rc = e.code
    assert rc == 255
    assert message in capsys.readouterr().err


@contextlib.contextmanager
def echo_server():
    """A local TCP service that sends back what it gets, once."""
    lsock = socket.create_server(("127.0.0.1", 0))

    def serve():
        with contextlib.suppress(OSError):
            conn, _ = lsock.accept()
            with conn:
                conn.sendall(b"echo:" + conn.recv(100))

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    try:
        yield lsock.getsockname()[1]
    finally:
        lsock.close()
        th.join(TIMEOUT)


def test_cli_local_forward(server, home):
    port = free_port()
    with echo_server() as target:
        p = subprocess.Popen(
            cli(server, "-N", "-L", f"{port}:[127.0.0.1]:{target}"),
            stdin=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:

            def reached():
                with contextlib.suppress(OSError):
                    return socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)

            conn = wait_until(reached, TIMEOUT, interval=0.05)
            assert conn, p.stderr
            with conn:
                conn.sendall(b"ping")
                assert conn.recv(100) == b"echo:ping"
            p.send_signal(signal.SIGINT)
            assert p.wait(TIMEOUT) == 130
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()


def test_cli_local_forward_from_a_unix_socket(server, home):
    sockdir = tempfile.mkdtemp(prefix="pyssh-cli-", dir="/tmp")  # short: sun_path
    path = os.path.join(sockdir, "x.sock")
    try:
        with echo_server() as target:
            p = subprocess.Popen(
                cli(server, "-N", "-L", f"{path}:127.0.0.1:{target}"),
                stdin=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )  # fmt: skip
            try:
                conn = wait_until(lambda: unix_client(path), TIMEOUT, interval=0.05)
                assert conn, p.stderr
                assert os.stat(path).st_mode & 0o777 == 0o600
                with conn:
                    conn.sendall(b"ping")
                    assert conn.recv(100) == b"echo:ping"
                p.send_signal(signal.SIGINT)
                assert p.wait(TIMEOUT) == 130
                assert not os.path.exists(path)  # the tunnel removes its socket
            finally:
                if p.poll() is None:
                    p.kill()
                    p.wait()
    finally:
        shutil.rmtree(sockdir, ignore_errors=True)


def unix_client(path):
    """A socket connected to the Unix socket `path`, or None while nothing listens."""
    c = socket.socket(socket.AF_UNIX)
    c.settimeout(TIMEOUT)
    try:
        c.connect(path)
    except OSError:
        c.close()
        return None
    return c


def forward_from_socket_once(server, path, *options):
    """`pyssh -N -L path:...` with `options`: its exit status, after one echo through
    the socket when it listened (else at once)."""
    with echo_server() as target:
        p = subprocess.Popen(
            cli(server, *options, "-N", "-L", f"{path}:127.0.0.1:{target}"),
            stdin=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:

            def reached():
                return "ended" if p.poll() is not None else unix_client(path)

            conn = wait_until(reached, TIMEOUT, interval=0.05)
            if conn == "ended":  # let the echo server's accept() return
                socket.create_connection(("127.0.0.1", target), timeout=TIMEOUT).close()
            else:
                with conn:
                    conn.sendall(b"ping")
                    assert conn.recv(100) == b"echo:ping"
                p.send_signal(signal.SIGINT)
            return p.wait(TIMEOUT)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()


@pytest.mark.slow
def test_cli_stream_local_bind_unlink(server, home, tmp_path):
    sockdir = tempfile.mkdtemp(prefix="pyssh-cli-", dir="/tmp")  # short: sun_path
    path = os.path.join(sockdir, "x.sock")
    config = tmp_path / "config"
    config.write_text("Host *\n  StreamLocalBindUnlink yes\n")
    try:
        for options, status in [
            ((), ERROR),  # OpenSSH's default: a socket file there is an error
            (("-o", "StreamLocalBindUnlink=no"), ERROR),
            (("-o", "StreamLocalBindUnlink=yes"), 130),
            (("-F", str(config)), 130),
        ]:
            if not os.path.exists(path):
                s = socket.socket(socket.AF_UNIX)
                s.bind(path)  # a stale socket: nobody listens
                s.close()
            assert forward_from_socket_once(server, path, *options) == status, options
            assert os.path.exists(path) == (status == ERROR), options
    finally:
        shutil.rmtree(sockdir, ignore_errors=True)


@pytest.mark.slow
def test_cli_jump_and_remote_forward(server, home):
    # jump through the test server to itself: jump hosts authenticate with ~/.ssh's keys
    shutil.copy(server.client_key, home / ".ssh" / "id_ed25519")
    (home / ".ssh" / "known_hosts").write_text(server.host_key_line + "\n")
    port = free_port()
    with echo_server() as target:
        jump = f"{server.user}@127.0.0.1:{server.port}"
        # the command reaches the forwarded port from the server's side
        script = f"exec 3<>/dev/tcp/127.0.0.1/{port}; printf ping >&3; head -c 9 <&3"
        r = subprocess.run(
            cli(server, "-J", jump, "-R", f"{port}:127.0.0.1:{target}") + [f"bash -c '{script}'"],
            capture_output=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    assert (r.returncode, r.stdout) == (0, b"echo:ping"), r.stderr


@pytest.mark.slow
def test_cli_remote_forward_port_zero(server, home):
    r = subprocess.run(
        cli(server, "-R", "0:127.0.0.1:9") + ["true"],
        capture_output=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert r.returncode == 0
    assert re.search(rb"Allocated port \d+ for remote forward to 127.0.0.1:9", r.stderr)


@pytest.mark.slow
def test_cli_dynamic_forward(server, home):
    port = free_port()
    with echo_server() as target:
        p = subprocess.Popen(
            cli(server, "-N", "-D", str(port)), stdin=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        try:

            def reached():
                with contextlib.suppress(OSError):
                    return socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)

            conn = wait_until(reached, TIMEOUT, interval=0.05)
            assert conn, p.stderr
            with conn:  # SOCKS 5, no authentication, CONNECT 127.0.0.1:target
                conn.sendall(b"\x05\x01\x00")
                assert conn.recv(2) == b"\x05\x00"
                conn.sendall(b"\x05\x01\x00\x01" + socket.inet_aton("127.0.0.1"))
                conn.sendall(target.to_bytes(2, "big"))
                assert conn.recv(10)[:2] == b"\x05\x00"
                conn.sendall(b"ping")
                assert conn.recv(100) == b"echo:ping"
            p.send_signal(signal.SIGINT)
            assert p.wait(TIMEOUT) == 130
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()


def test_interactive_refused_off_posix(server, monkeypatch):
    from pyssh import _interactive

    with server.connect() as s:
        monkeypatch.setattr(_interactive.os, "name", "nt")
        with pytest.raises(pyssh.SSHError, match="POSIX terminal"):
            s.interactive()


# ---- the pieces ---------------------------------------------------------------------------


def test_forward_specs():
    assert parse_forward("8080:db:5432") == (None, 8080, "db", 5432)
    assert parse_forward("*:8080:db:5432") == ("*", 8080, "db", 5432)
    assert parse_forward("[::1]:8080:[fe80::1]:22") == ("::1", 8080, "fe80::1", 22)
    assert parse_dynamic("1080") == (None, 1080)
    # Unix sockets, as OpenSSH: a field starting with "/" (or "./") is a path
    assert parse_forward("/l.sock:db:5432") == (None, "/l.sock", "db", 5432)
    assert parse_forward("/l.sock:/r.sock") == (None, "/l.sock", "/r.sock", None)
    assert parse_forward("8080:/r.sock") == (None, 8080, "/r.sock", None)
    assert parse_forward("[::1]:8080:./r.sock") == ("::1", 8080, "./r.sock", None)
    assert parse_forward("/r.sock:[::1]:22", "-R") == (None, "/r.sock", "::1", 22)
    assert parse_forward("/r.sock:/l.sock", "-R") == (None, "/r.sock", "/l.sock", None)
    assert parse_forward("0:/l.sock", "-R") == (None, 0, "/l.sock", None)
    assert parse_dynamic("[::1]:1080") == ("::1", 1080)
    assert _fields("a:[b:c]:d") == ["a", "b:c", "d"]
    assert parse_option("StrictHostKeyChecking=yes") == ("stricthostkeychecking", "yes")
    assert parse_option("Port 22") == ("port", "22")


def test_modes_from_termios():
    master, slave = os.openpty()
    try:
        attrs = termios.tcgetattr(slave)
        attrs[3] &= ~termios.ECHO
        modes = modes_from_termios(attrs)
    finally:
        os.close(master)
        os.close(slave)
    assert modes["ECHO"] == 0 and modes["ICANON"] == 1
    assert modes["VINTR"] == 3  # Ctrl-C
    assert modes["CS8"] == 1 and modes["CS7"] == 0
    assert modes["TTY_OP_ISPEED"] > 0
    encode_modes(modes)  # every name is one RFC 4254 knows


def test_escape():
    e = _Escape()
    assert e.feed(b"~x") == (b"~x", False)
    assert e.feed(b"a~.") == (b"a~.", False)  # not at the start of a line
    assert e.feed(b"\r~~") == (b"\r~", False)
    assert e.feed(b"\r~") == (b"\r", False)
    assert e.feed(b".") == (b"", True)
