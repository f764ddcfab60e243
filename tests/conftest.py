import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest

import pyssh
from pyssh.testing import SSHServer, keygen

pytest_plugins = ["pyssh.testing"]

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
# one account per test run: two runs at once on one machine (a developer's and a
# check-wheel's, say) must not change each other's password or delete it under the other
ACCOUNT = f"pyssh-test-{os.getpid()}"


RAM_DISK = "/dev/shm"


def pytest_configure(config):
    """The tests' files (tmp_path: about 200 MB written by the quick tier alone) go to
    a RAM disk where there is one, unless --basetemp says where: on the shared CI
    machine the disk's write speed varied enough to double the transfer tests' times."""
    if config.option.basetemp or not os.access(RAM_DISK, os.W_OK):
        return
    config.option.basetemp = tempfile.mkdtemp(prefix="pyssh-tests-", dir=RAM_DISK)
    config._pyssh_ram_basetemp = config.option.basetemp


def pytest_unconfigure(config):
    path = getattr(config, "_pyssh_ram_basetemp", None)
    if path is not None:
        shutil.rmtree(path, ignore_errors=True)


# Debian's bash sources ~/.bashrc for every command sshd runs (SSH_SOURCE_BASHRC),
# unless it is not a top-level shell: a developer's ~/.bashrc (pyenv's init: 160 ms on
# the CI machine) then costs every remote command of the tests that much, and every
# scripted SFTP subsystem or ForceCommand (they run through the shell too). Every sshd
# the tests start begins each session's shell at SHLVL 2, so that it is skipped (5 ms).
QUICK_SHELL = ["SetEnv SHLVL=1"]


@pytest.fixture(scope="session", autouse=True)
def quick_shells():
    original = SSHServer.__init__

    def init(self, *args, extra_config=None, **kwargs):
        original(self, *args, extra_config=[*QUICK_SHELL, *(extra_config or [])], **kwargs)

    SSHServer.__init__ = init
    yield
    SSHServer.__init__ = original


@pytest.fixture(scope="session")
def server():
    """One sshd for the test session; password and keyboard-interactive on where
    PAM can check them (as root)."""
    with SSHServer(password_auth=IS_ROOT, kbdint_auth=IS_ROOT) as srv:
        yield srv


@pytest.fixture
def fresh_server():
    """An sshd of the test's own, for tests that change its files."""
    with SSHServer(password_auth=IS_ROOT, kbdint_auth=IS_ROOT) as srv:
        yield srv


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A temporary HOME with an empty ~/.ssh, and no ssh-agent."""
    h = tmp_path / "home"
    (h / ".ssh").mkdir(parents=True, mode=0o700)
    monkeypatch.setenv("HOME", str(h))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    return h


@pytest.fixture(scope="session")
def account():
    """A real local account with a password, for password and keyboard-interactive
    logins (PAM checks it). Needs root; created for the session and removed after."""
    if not IS_ROOT:
        pytest.skip("password and keyboard-interactive tests need root, to create a local account")
    assert shutil.which("useradd"), "useradd is missing (bash .ci/run installs passwd)"
    password = "pw-" + secrets.token_hex(8)
    created = subprocess.run(["id", ACCOUNT], capture_output=True).returncode != 0
    if created:
        subprocess.run(["useradd", "-m", "-s", "/bin/sh", ACCOUNT], check=True)
    subprocess.run(["chpasswd"], input=f"{ACCOUNT}:{password}\n", text=True, check=True)
    yield ACCOUNT, password
    if created:
        # sshd's process of a session that just closed may still hold the account
        def deleted():
            r = subprocess.run(["userdel", "-r", ACCOUNT], capture_output=True, text=True)
            return r.returncode == 0 or "currently used" not in r.stderr

        wait_until(deleted, 10, interval=0.1)


def wait_until(condition, timeout, interval=0.01):
    """Poll condition() until it is true or `timeout` seconds have passed (a monotonic
    deadline); returns its last value. For what gives no signal to wait on."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


@pytest.fixture
def agent(tmp_path, monkeypatch):
    """A real ssh-agent started for the test (stopped by its pid afterwards)."""
    sock = str(tmp_path / "agent.sock")
    out = subprocess.run(
        ["ssh-agent", "-s", "-a", sock], capture_output=True, text=True, check=True
    ).stdout
    pid = int(out.split("SSH_AGENT_PID=")[1].split(";")[0])
    monkeypatch.setenv("SSH_AUTH_SOCK", sock)
    try:
        yield sock
    finally:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


@pytest.fixture
def make_key(tmp_path):
    def make(name="key", kind="ed25519", passphrase="", fmt=None):
        return keygen(str(tmp_path / name), kind, passphrase=passphrase, fmt=fmt)

    return make


def open_sockets():
    """The number of sockets this process has open (Linux)."""
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                n += 1
        except OSError:
            pass
    return n


@pytest.fixture
def plain_address(server, request):
    """The address of an ordinary (non-root) user. As root that is the test account,
    whose shell is /bin/sh: OpenSSH signals only non-root sessions, and root's shell
    here may read a slow ~/.bashrc for every command, which also writes to stderr
    when several run at once (pyenv's rehash lock: "rm: cannot remove ...")."""
    if IS_ROOT:
        name, _password = request.getfixturevalue("account")
        return f"{name}@{server.host}:{server.port}"
    return server.address


@pytest.fixture
def plain_session(server, plain_address):
    """A session of the ordinary user of plain_address."""
    with server.connect(address=plain_address) as s:
        yield s


INTERRUPT_CHILD = r"""
import os, sys, time, pyssh
address, key, known_hosts, remote, to, method = sys.argv[1:7]
s = pyssh.connect(address, keyfile=key, known_hosts=known_hosts, config=False)
started = [False]
def progress(path, moved, total):
    if not started[0]:
        started[0] = True
        print("started", flush=True)
try:
    getattr(s, method)(remote, to=to, verbose=False, progress=progress)
    print("finished", flush=True)
except KeyboardInterrupt:
    print("interrupted", time.monotonic(), flush=True)
print("left", sorted(os.listdir(to)), flush=True)
print("then", s.exec_internal("echo usable").stdout.decode().strip(), flush=True)
with s.sftp() as f:
    print("sftp", f.exists(remote), flush=True)
"""


@contextlib.contextmanager
def interrupted_child(script, args, ready="started", before_signal=None):
    """Run the Python `script` in a child process with `args`; once it prints `ready`,
    call before_signal(child) if given, then send SIGINT: the child must print
    "interrupted <its time.monotonic()>" within half a second of the signal. Yields the
    child, to read what it prints next; kills it if it is still running afterwards."""
    p = subprocess.Popen(
        [sys.executable, "-c", script, *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert p.stdout.readline().strip() == ready, p.stderr.read()
        if before_signal is not None:
            before_signal(p)
        sent = time.monotonic()
        p.send_signal(signal.SIGINT)
        line = p.stdout.readline().split()
        assert line and line[0] == "interrupted", (line, p.stderr.read())
        assert float(line[1]) - sent < 0.5
        yield p
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def interrupt_download(server, method, remote, to):
    """Run session.<method>(remote, to) in a child process and send it SIGINT once data
    flows: KeyboardInterrupt within half a second, no partial file left in `to`, and the
    session usable afterwards (a command, an SFTP channel)."""
    with interrupted_child(
        INTERRUPT_CHILD, [server.address, server.client_key, server.known_hosts, remote, to, method]
    ) as p:
        assert p.stdout.readline().strip() == "left []"  # no partial file
        assert p.stdout.readline().strip() == "then usable"
        assert p.stdout.readline().strip() == "sftp True"
        assert p.wait(timeout=30) == 0


def connection_killer(server, connect=None):
    """A session on `server` (a fresh_server of the test's own) and a progress
    callable that SIGKILLs that session's sshd processes: the server dying
    mid-transfer. `connect`: api_connect's, for a session of the API under test."""
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}  # pgrep under ASan

    def children(pid):
        return subprocess.run(
            ["pgrep", "-P", str(pid)], capture_output=True, text=True, env=env
        ).stdout.split()

    s = server.connect() if connect is None else connect(server)
    conns = children(server.pid)
    assert len(conns) == 1  # this session's sshd process

    def kill_connection(path, moved, total):
        for pid in conns + children(conns[0]):  # ours: started by our sshd
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass

    return s, kill_connection


def download_killed_midway(server, tmp_path, method, connect=None):
    """Session `method` ("scp_download" or "sftp_download") of a 2 GiB file into a
    directory where a good file of that name stands, with the server killed midway:
    a ConnectError that says so, and the good file is left as it was (no partial file, no temporary
    one). Returns the (dead) session for further checks. `connect` as for
    connection_killer."""
    os.chmod(tmp_path, 0o755)
    (tmp_path / "b").mkdir()
    with open(tmp_path / "big", "wb") as f:
        f.truncate(2 << 30)
    (tmp_path / "b" / "big").write_bytes(b"old good")
    s, kill_connection = connection_killer(server, connect)
    with pytest.raises(pyssh.ConnectError, match="the connection to the server was lost"):
        getattr(s, method)(
            str(tmp_path / "big"), to=tmp_path / "b", verbose=False, progress=kill_connection
        )
    assert os.listdir(tmp_path / "b") == ["big"]
    assert (tmp_path / "b" / "big").read_bytes() == b"old good"
    return s


def run_while_python_counts(work):
    """Call work() while a pure-Python thread counts, and check that the count went
    on at a tenth of its idle rate at least: with the GIL held through work() it
    would not move at all. Returns work()'s result."""
    count = 0
    stop = False

    def spin():
        nonlocal count
        while not stop:
            count += 1

    t = threading.Thread(target=spin)
    t.start()
    try:
        time.sleep(0.3)  # the idle rate, measured over 0.3 s
        base_rate = count / 0.3
        count = 0
        start = time.monotonic()
        result = work()
        elapsed = time.monotonic() - start
        during = count
    finally:
        stop = True
        t.join()
    assert during > 0.1 * base_rate * elapsed, (during, base_rate, elapsed)
    return result


@pytest.fixture
def area(tmp_path):
    """A directory the test sshd's user can reach, with remote/ (the server's side:
    it runs on this machine) and to/ (a download target)."""
    os.chmod(tmp_path, 0o755)
    (tmp_path / "remote").mkdir()
    (tmp_path / "to").mkdir()
    return tmp_path


@pytest.fixture(scope="module")
def hostile_sftp(tmp_path_factory):
    """An sshd whose SFTP subsystem is tests/hostile_sftp.py: a real SFTP server on
    this machine's files that lies, stalls or floods as each test's scenario says.
    run(scenario, call, timeout=20) writes the scenario, connects, opens SFTP and
    returns call(sftp)."""
    d = tmp_path_factory.mktemp("hostile-sftp")
    os.chmod(d, 0o755)
    script = d / "hostile_sftp.py"
    shutil.copy(os.path.join(os.path.dirname(__file__), "hostile_sftp.py"), script)
    scenario = d / "scenario.txt"
    scenario.write_text("{}")
    with SSHServer(
        sftp=False, extra_config=[f"Subsystem sftp {sys.executable} {script} {scenario}"]
    ) as srv:

        def run(how, call, timeout=20):
            scenario.write_text(repr(how))
            with srv.connect() as s, s.sftp(timeout=timeout) as f:
                return call(f)

        run.server = srv
        yield run


FAKE_SCP = r"""
import ast, os, sys
here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "scenario.txt")) as f:
    steps = ast.literal_eval(f.read())
out = sys.stdout.buffer
for chunk in steps:
    if not sys.stdin.buffer.read(1):     # the client's acknowledgement
        break
    out.write(chunk)
    out.flush()
# done: end the output, then wait for the client to close its side (it has read all)
os.close(1)
os.close(2)
while sys.stdin.buffer.read(65536):
    pass
"""


@pytest.fixture(scope="module")
def hostile_scp(tmp_path_factory):
    """An sshd whose every command is a fake `scp -f` sending the scenario's chunks,
    one per acknowledgement. run(steps, to, files="wanted", timeout=10) downloads
    (`connect`: api_connect's, for a session of the API under test)."""
    d = tmp_path_factory.mktemp("hostile-scp")
    os.chmod(d, 0o755)
    script = d / "fake_scp.py"
    script.write_text(FAKE_SCP)
    with SSHServer(extra_config=[f"ForceCommand {sys.executable} {script}"]) as srv:

        def run(steps, to, files="wanted", timeout=10, connect=None):
            (d / "scenario.txt").write_text(repr(steps))
            with srv.connect() if connect is None else connect(srv) as s:
                return s.scp_download(files, to=to, verbose=False, timeout=timeout)

        yield run


class Echo:
    """An echo server on a Unix socket path or on 127.0.0.1 (path None)."""

    def __init__(self, path=None):
        if path is None:
            self.sock = socket.socket()
            self.sock.bind(("127.0.0.1", 0))
            self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        else:
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.bind(path)
            self.address = path
        self.sock.listen(16)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    @staticmethod
    def _one(conn):
        with conn:
            while True:
                data = conn.recv(1 << 16)
                if not data:
                    conn.shutdown(socket.SHUT_WR)
                    return
                conn.sendall(data)

    def close(self):
        self.sock.close()


# ---- the blocking API's behaviour tests, run again through pyssh.aio -----------------------

# A test decorated with @both_apis runs twice: "blocking" (pyssh.Session) and "aio"
# (tests/aio_adapter.py: pyssh.aio.AsyncSession with the blocking method names); the
# aio variants are slow-marked, so the quick tier runs the blocking ones alone.
API = ["blocking", pytest.param("aio", marks=pytest.mark.slow)]
both_apis = pytest.mark.parametrize("api", API, indirect=True)


@pytest.fixture
def api(request):
    """Which API the session fixtures give: "blocking" unless the test is
    parametrized with both_apis."""
    return getattr(request, "param", "blocking")


@pytest.fixture
def api_connect(api):
    """connect(server, **kwargs): server.connect(**kwargs) through the API under
    test (an AioSession for "aio", its event loop closed after the test)."""
    from aio_adapter import AioSession

    made = []

    def connect(server, **kwargs):
        if api == "blocking":
            return server.connect(**kwargs)
        s = AioSession.connect(server, **kwargs)
        made.append(s)
        return s

    yield connect
    for s in made:
        s.end()


@pytest.fixture
def api_plain_session(server, plain_address, api_connect):
    """plain_session through the API under test."""
    with api_connect(server, address=plain_address) as s:
        yield s
