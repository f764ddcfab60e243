import os
import secrets
import shutil
import signal
import subprocess
import time

import pytest

from pyssh.testing import SSHServer, keygen

pytest_plugins = ["pyssh.testing"]

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
ACCOUNT = "pyssh-test"


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
    if shutil.which("useradd") is None:
        pytest.skip("useradd is not installed")
    password = "pw-" + secrets.token_hex(8)
    created = subprocess.run(["id", ACCOUNT], capture_output=True).returncode != 0
    if created:
        subprocess.run(["useradd", "-m", "-s", "/bin/sh", ACCOUNT], check=True)
    subprocess.run(["chpasswd"], input=f"{ACCOUNT}:{password}\n", text=True, check=True)
    yield ACCOUNT, password
    if created:
        # sshd's process of a session that just closed may still hold the account
        for _ in range(20):
            r = subprocess.run(["userdel", "-r", ACCOUNT], capture_output=True, text=True)
            if r.returncode == 0 or "currently used" not in r.stderr:
                break
            time.sleep(0.25)


@pytest.fixture
def agent(tmp_path, monkeypatch):
    """A real ssh-agent started for the test (stopped by its pid afterwards)."""
    sock = str(tmp_path / "agent.sock")
    out = subprocess.run(["ssh-agent", "-s", "-a", sock], capture_output=True, text=True, check=True).stdout
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
