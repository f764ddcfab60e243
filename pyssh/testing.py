"""A throwaway OpenSSH server on 127.0.0.1, for pyssh's tests and yours.

    from pyssh.testing import SSHServer

    with SSHServer() as server:
        with server.connect() as session:      # pyssh.connect with the right key
            print(session)

``SSHServer`` starts ``sshd`` from the system (Debian: ``apt-get install
openssh-server``) on a free port of 127.0.0.1, with fresh host and client keys,
its own authorized_keys and a known_hosts file that trusts it, all in a temporary
directory; it is stopped by its pid and the directory removed. It works as root
and as an ordinary user (then only that user can log in, and only with keys).

With pytest, ``pytest_plugins = ["pyssh.testing"]`` in a conftest.py gives the
fixture ``sshd_server`` (one server for the test session).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from typing import TYPE_CHECKING, Any, Iterator, List, Optional

if TYPE_CHECKING:  # pragma: no cover
    from .session import Session

__all__ = ["SSHServer", "find_sshd", "keygen", "free_port"]


def find_sshd() -> str:
    """The path of the system's sshd; RuntimeError if there is none."""
    for candidate in (shutil.which("sshd"), "/usr/sbin/sshd", "/usr/local/sbin/sshd", "/sbin/sshd"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError(
        "no sshd found: install OpenSSH's server (Debian: apt-get install openssh-server)"
    )


def keygen(
    path: str,
    kind: str = "ed25519",
    passphrase: str = "",
    comment: str = "pyssh-test",
    fmt: Optional[str] = None,
) -> str:
    """Make a key pair with ssh-keygen at `path` (and path.pub). Returns `path`."""
    cmd = ["ssh-keygen", "-q", "-t", kind, "-N", passphrase, "-C", comment, "-f", path]
    if kind == "rsa":
        cmd += ["-b", "2048"]
    if fmt:
        cmd += ["-m", fmt]
    subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    return path


def free_port() -> int:
    """A TCP port of 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class SSHServer:
    """A running sshd on 127.0.0.1. Attributes once started: ``host``, ``port``,
    ``user`` (who may log in), ``address`` ("user@127.0.0.1:port"), ``client_key``
    (a private key that is authorized), ``known_hosts`` (a file that trusts this
    server), ``host_key_line`` (its line), ``dir`` (the temporary directory), ``pid``.

    Options: ``password_auth`` and ``kbdint_auth`` enable those methods (they need
    PAM and so root: as another user sshd can only check keys); ``host_key_type``;
    ``sftp=False`` leaves out the SFTP subsystem (a server with SCP only);
    ``extra_config``: more sshd_config lines. A keyword they set replaces the
    default's line (``ListenAddress`` adds to it); a ``Match`` block among them goes at
    the end, as sshd requires.
    """

    def __init__(
        self,
        *,
        password_auth: bool = False,
        kbdint_auth: bool = False,
        host_key_type: str = "ed25519",
        extra_config: Optional[List[str]] = None,
        start_timeout: float = 15.0,
        sftp: bool = True,
    ):
        self.sftp = sftp
        self.password_auth = password_auth
        self.kbdint_auth = kbdint_auth
        self.host_key_type = host_key_type
        self.extra_config = list(extra_config or [])
        self.start_timeout = start_timeout
        self.host = "127.0.0.1"
        self.port = 0
        self.user = _current_user()
        self.dir = ""
        self.proc: Optional[subprocess.Popen[bytes]] = None

    # ---- life cycle
    def __enter__(self) -> SSHServer:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def pid(self) -> Optional[int]:
        """The sshd's process id while it runs."""
        return self.proc.pid if self.proc else None

    @property
    def address(self) -> str:
        """``user@host:port``, as pyssh.connect() takes it."""
        return f"{self.user}@{self.host}:{self.port}"

    def start(self) -> SSHServer:
        """Start sshd with fresh keys in a temporary directory; returns self."""
        sshd = find_sshd()
        self.dir = tempfile.mkdtemp(prefix="pyssh-sshd-")
        os.chmod(self.dir, 0o755)  # sshd as root reads authorized_keys as the user
        d = self.dir
        self.host_key = keygen(
            os.path.join(d, f"ssh_host_{self.host_key_type}_key"),
            self.host_key_type,
            comment="pyssh-test-host",
        )
        self.client_key = keygen(os.path.join(d, "id_ed25519"))
        self.authorized_keys = os.path.join(d, "authorized_keys")
        shutil.copyfile(self.client_key + ".pub", self.authorized_keys)
        os.chmod(self.authorized_keys, 0o644)
        if os.geteuid() == 0:
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege separation dir
        last_log = ""
        for _attempt in range(5):
            self.port = free_port()
            self.config = os.path.join(d, "sshd_config")
            with open(self.config, "w") as f:
                f.write("\n".join(self._config_lines()) + "\n")
            self.log_path = os.path.join(d, "sshd.log")
            log = open(self.log_path, "ab")
            try:
                self.proc = subprocess.Popen(
                    [sshd, "-D", "-e", "-f", self.config],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    start_new_session=True,
                )
            finally:
                log.close()
            if self._wait_ready():
                break
            last_log = self.log()
            self._kill()
        else:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise RuntimeError(f"sshd did not start; its log:\n{last_log}")
        with open(self.host_key + ".pub") as f:
            key_type, key_b64 = f.read().split()[:2]
        self.host_key_pub = f"{key_type} {key_b64}"
        self.host_key_line = f"[{self.host}]:{self.port} {self.host_key_pub}"
        self.known_hosts = os.path.join(d, "known_hosts")
        with open(self.known_hosts, "w") as f:
            f.write(self.host_key_line + "\n")
        return self

    def _config_lines(self) -> List[str]:
        root = os.geteuid() == 0
        pam = root and (self.password_auth or self.kbdint_auth)
        lines = (
            [
                f"Port {self.port}",
                f"ListenAddress {self.host}",
                f"HostKey {self.host_key}",
                f"PidFile {os.path.join(self.dir, 'sshd.pid')}",
                f"AuthorizedKeysFile {self.authorized_keys}",
                "StrictModes no",
                "PubkeyAuthentication yes",
                f"PasswordAuthentication {'yes' if self.password_auth else 'no'}",
                f"KbdInteractiveAuthentication {'yes' if self.kbdint_auth else 'no'}",
                f"UsePAM {'yes' if pam else 'no'}",
                "PermitRootLogin yes",
                "AllowTcpForwarding yes",
                "X11Forwarding no",
                "PrintMotd no",
                "AcceptEnv LANG LC_* PYSSH_*",
            ]
            + (["Subsystem sftp internal-sftp"] if self.sftp else [])
            + [
                "MaxStartups 100:30:200",
                "MaxSessions 100",
                "LoginGraceTime 30",
                "LogLevel VERBOSE",
            ]
        )
        # The caller's lines replace the defaults of the keywords they set (sshd keeps
        # the first value of most keywords but the last of some, MaxStartups among
        # them), but for ListenAddress, which adds; they come first, except a Match
        # block, which holds everything after it and so must stay last
        extra = self.extra_config
        match = next(
            (i for i, line in enumerate(extra) if line.lower().split()[:1] == ["match"]), len(extra)
        )
        given = {line.split()[0].lower() for line in extra[:match] if line.split()}
        given.discard("listenaddress")
        lines = [x for x in lines if x.split()[0].lower() not in given]
        return extra[:match] + lines + extra[match:]

    def _wait_ready(self) -> bool:
        end = time.monotonic() + self.start_timeout
        while time.monotonic() < end:
            if self.proc is None or self.proc.poll() is not None:
                return False
            try:
                with socket.create_connection((self.host, self.port), timeout=1) as s:
                    s.settimeout(2)
                    if s.recv(64).startswith(b"SSH-"):
                        return True
            except OSError:
                time.sleep(0.05)
        return False

    def _kill(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        try:
            os.kill(proc.pid, signal.SIGTERM)  # only the process we started, by its pid
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        except ProcessLookupError:
            pass

    def stop(self) -> None:
        """Stop sshd (by its pid) and remove the temporary directory."""
        self._kill()
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = ""

    # ---- helpers for tests
    def log(self) -> str:
        """What sshd wrote to its log so far."""
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except (OSError, AttributeError):
            return ""

    def authorize(self, public_key_path: str) -> None:
        """Add a public key (its .pub file) to this server's authorized_keys."""
        with open(public_key_path) as f, open(self.authorized_keys, "a") as out:
            out.write(f.read().strip() + "\n")

    def connect(self, **kwargs: Any) -> Session:
        """pyssh.connect to this server with its client key and known_hosts; keyword
        arguments override those defaults."""
        import pyssh

        kwargs.setdefault("keyfile", self.client_key)
        kwargs.setdefault("known_hosts", self.known_hosts)
        kwargs.setdefault("config", False)
        kwargs.setdefault("timeout", 20)
        return pyssh.connect(kwargs.pop("address", self.address), **kwargs)


def _current_user() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


try:
    import pytest
except ImportError:  # pytest is optional
    pytest = None  # type: ignore[assignment]

if pytest is not None:

    @pytest.fixture(scope="session")
    def sshd_server() -> Iterator[SSHServer]:
        """One throwaway sshd for the whole test session."""
        with SSHServer() as server:
            yield server
