"""Sessions: connecting, host key checking and authentication.

The C type ``pyssh._ssh.Session`` holds the libssh session and does every network
wait with the GIL released; this module decides what to do: parse the host string,
read the configuration, open the TCP connection, apply the host key policy and try
the authentication methods in pyssh's order.
"""

from __future__ import annotations

import base64
import functools
import getpass
import hashlib
import inspect
import ipaddress
import logging
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import (
    Any,
    Callable,
    Dict,
    List,
    Mapping,
    Optional,
    Sequence,
    Set,
    Tuple,
    TypeVar,
    Union,
)

from . import (
    _config,
    _exec,
    _jump,
    _keys,
    _known_hosts,
    _process,
    _scp,
    _sftp,
    _ssh,
    _tunnel,
    _util,
)
from ._names import printable
from ._tcp import Deadline, Steps, TCPConnect, run_steps
from .errors import (
    AuthenticationError,
    ConnectError,
    HostKeyError,
    HostKeyMismatchError,
    HostKeyRevokedError,
    PrivateKeyError,
    SSHError,
    UnknownHostKeyError,
)

__all__ = ["Session", "connect", "parse_host"]

log = logging.getLogger("pyssh")

PathType = Union[str, "os.PathLike[str]"]
Secret = Union[str, Callable[[str], str]]
HostKeyPolicy = Union[str, Callable[[str, int, str, str], bool]]
Algorithms = Union[str, Sequence[str], None]

_POLICIES = ("accept-new", "strict", "ignore")
_DEFAULT_KEYS = ("id_ed25519", "id_ecdsa", "id_rsa", "id_dsa")
_METHOD_NAMES = [
    (_ssh.SSH_AUTH_METHOD_PUBLICKEY, "publickey"),
    (_ssh.SSH_AUTH_METHOD_INTERACTIVE, "keyboard-interactive"),
    (_ssh.SSH_AUTH_METHOD_PASSWORD, "password"),
    (_ssh.SSH_AUTH_METHOD_HOSTBASED, "hostbased"),
    (_ssh.SSH_AUTH_METHOD_GSSAPI_MIC, "gssapi-with-mic"),
]


# ---- the host string ----------------------------------------------------------


def parse_host(host: str) -> Tuple[Optional[str], str, Optional[int]]:
    """Split ``"[user@]host[:port]"`` into (user, host, port).

    The last ``@`` separates the user (user names may contain ``@``); IPv6 literals
    are bracketed (``"user@[::1]:2222"``); a bare IPv6 address without a port is
    accepted too. Raises ValueError for malformed strings.
    """
    if not isinstance(host, str):
        raise TypeError(f"host must be a str like 'user@host:port', not {type(host).__name__}")
    text = host.strip()
    user: Optional[str] = None
    if "@" in text:
        user, _, text = text.rpartition("@")
        if not user:
            raise ValueError(f"invalid host {host!r}: empty user name before '@'")
    port: Optional[int] = None
    port_text: Optional[str] = None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"invalid host {host!r}: '[' without a closing ']'")
        name, rest = text[1:end], text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"invalid host {host!r}: unexpected {rest!r} after ']'")
            port_text = rest[1:]
    elif text.count(":") > 1:
        name = text  # a bare IPv6 address: no port possible
        try:
            ipaddress.IPv6Address(name.split("%")[0])
        except ValueError:
            raise ValueError(
                f"invalid host {host!r}: bracket IPv6 addresses, as in '[::1]:22'"
            ) from None
    elif ":" in text:
        name, _, port_text = text.partition(":")
    else:
        name = text
    if port_text is not None:
        if not port_text.isdigit():
            raise ValueError(f"invalid host {host!r}: the port must be a number, not {port_text!r}")
        port = _check_port(int(port_text), host)
    if not name:
        raise ValueError(f"invalid host {host!r}: no host name")
    if any(c.isspace() for c in name) or "/" in name:
        raise ValueError(f"invalid host {host!r}: a host name cannot contain spaces or '/'")
    return user, name, port


def _check_port(port: Any, where: str = "port") -> int:
    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError(f"port must be an int, not {type(port).__name__}")
    if not 1 <= port <= 65535:
        raise ValueError(f"invalid port {port} in {where!r}: ports are 1 to 65535")
    return port


def _format_target(user: Optional[str], host: str, port: int) -> str:
    h = f"[{host}]" if ":" in host else host
    return f"{user + '@' if user else ''}{h}:{port}"


# ---- secrets ------------------------------------------------------------------------


no_prompts = threading.local()
"""A thread that must never ask on the terminal (pyssh.Group's workers) sets `.on`."""


def _stdin_is_tty() -> bool:
    if getattr(no_prompts, "on", False):
        return False
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


def _ask(secret: Optional[Secret], prompt: str, what: str) -> Optional[str]:
    """A password or passphrase: the given str, the callable's answer, or getpass on
    a terminal (the prompt made printable: a keyboard-interactive one is the
    server's text). None when there is no way to get one."""
    if secret is None:
        return getpass.getpass(printable(prompt)) if _stdin_is_tty() else None
    if callable(secret):
        answer = secret(prompt)
        if isinstance(answer, bytes):
            answer = answer.decode()
        if answer is not None and not isinstance(answer, str):
            raise TypeError(f"the {what} callable must return a str, not {type(answer).__name__}")
        return answer
    return secret


# ---- the session ----------------------------------------------------------------------


class Session(_ssh.Session):
    """An SSH session: made by :func:`pyssh.connect`, closed by :meth:`disconnect`,
    by the end of a ``with`` block, or when it is garbage-collected.

    One session may be shared by threads: each libssh call holds the session's lock,
    which is never waited for with the GIL held, so other Python threads keep running.
    """

    user: str
    host: str
    port: int

    def __init__(self) -> None:
        super().__init__()
        self.user = ""
        self.host = ""
        self.port = 22
        self._identity: Optional[str] = None
        self._hostkey: Optional[_ssh.ServerKey] = None
        self._known_hosts: Optional[str] = None
        self._tunnels: Set[_tunnel.Tunnel] = set()
        self._unlink = False  # StreamLocalBindUnlink, forward_local's default
        self._hops: List[Session] = []  # the ProxyJump hosts' sessions, first first
        # connect() with the same arguments: another connection like this one, for
        # SFTP transfers over several connections (connections=)
        self._again: Optional[Callable[[], Session]] = None

    # context manager and lifetime
    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection, and first the tunnels running on it. Calling it
        again does nothing."""
        for t in list(self._tunnels):
            t.close(timeout=1.0)
        super().close()
        while self._hops:  # the jump hosts, after what went through them
            self._hops.pop().close()

    def disconnect(self) -> None:
        """Close the connection. Calling it again does nothing."""
        self.close()

    def __repr__(self) -> str:
        if self.closed or self._hostkey is None:
            return "<ssh session>\ndisconnected"
        return (
            f"<ssh session>\nconnected: {_format_target(self.user, self.host, self.port)}\n"
            f"server: {self._hostkey.sha256}"
        )

    __str__ = __repr__

    # ---- remote commands
    def exec_wait(
        self,
        command: _exec.Command,
        *,
        stdout: _exec.Sink = _exec.DEFAULT,
        stderr: _exec.Sink = _exec.DEFAULT,
        stdin: _exec.Source = None,
        timeout: Optional[float] = None,
        env: Optional[Mapping[str, str]] = None,
    ) -> int:
        """Run ``command`` on the server, streaming its output as it comes, and
        return its exit status (a non-zero status does not raise; ``-N`` when
        signal N killed it).

        ``command``: a str, or a list of str run as one script (joined by newlines).
        ``stdout`` / ``stderr``: where the output goes: by default this process's
        ``sys.stdout`` / ``sys.stderr`` (flushed as data arrives); a callable that
        gets each ``bytes`` chunk; a binary file object; a path (overwritten; the
        same path for both interleaves them); a text stream; or ``None`` to drop it.
        ``stdin``: bytes, str (sent as UTF-8), a file object or an iterable of
        bytes, streamed to the command, then end-of-file; with ``None`` the command
        gets end-of-file at once, so a command that reads stdin does not hang.
        ``timeout``: seconds without progress (no output received, no stdin sent):
        then the command gets SIGHUP, its channel is closed and ``SSHTimeoutError``
        raised (the session stays usable). A command that keeps producing output is
        never cut off; one that is silent for longer than ``timeout`` is. ``env``: environment
        variables, which the server must accept (sshd's ``AcceptEnv``).

        An exception raised by a callback (or Ctrl-C) stops the command the same
        way and propagates.
        """
        return _exec.run(self, command, stdout, stderr, stdin, timeout, env, capture=False).status

    def exec_internal(
        self,
        command: _exec.Command,
        *,
        error: bool = True,
        stdin: _exec.Source = None,
        timeout: Optional[float] = None,
        env: Optional[Mapping[str, str]] = None,
    ) -> _exec.ExecResult:
        """Run ``command`` and capture its output: returns an :class:`ExecResult`
        (``.status``, ``.stdout``, ``.stderr`` as bytes, ``.text()``). With
        ``error=True`` (the default) a non-zero exit status raises
        :class:`CommandError`, whose message ends with the tail of stderr. Other
        arguments as for :meth:`exec_wait`."""
        if not isinstance(error, bool):
            raise TypeError(f"error must be True or False, not {error!r}")
        result = _exec.run(self, command, None, None, stdin, timeout, env, capture=True)
        if error and result.status != 0:
            raise _exec.command_error(result)
        return result

    def popen(
        self,
        command: _exec.Command,
        *,
        pty: bool = False,
        term: str = "xterm-256color",
        size: Tuple[int, int] = (80, 24),
        modes: Optional[Mapping[str, int]] = None,
        env: Optional[Mapping[str, str]] = None,
        timeout: Optional[float] = None,
    ) -> _process.Process:
        """Start ``command`` and return a :class:`Process` (shaped like
        ``subprocess.Popen``) to feed and read it while it runs: ``stdin``,
        ``stdout``, ``stderr``, ``wait()``, ``communicate()``, ``expect()``,
        signals. ``pty=True`` gives it a terminal (``term``, ``size`` as
        (columns, rows), terminal ``modes`` such as ``{"ECHO": 0}``), as
        ``ssh -t`` does: its stderr is then part of stdout. ``env``: environment
        variables (sshd's ``AcceptEnv`` must list them). ``timeout``: for starting
        it. Use it in a ``with`` block: leaving it ends the command."""
        text = _exec.command_text(command)
        return _process.open_process(
            self, text, pty=pty, term=term, size=size, modes=modes,
            env=_exec.env_pairs(env), timeout=timeout,
        )  # fmt: skip

    def shell(
        self,
        *,
        term: str = "xterm-256color",
        size: Tuple[int, int] = (80, 24),
        modes: Optional[Mapping[str, int]] = None,
        env: Optional[Mapping[str, str]] = None,
        timeout: Optional[float] = None,
    ) -> _process.Process:
        """The user's login shell on a terminal, as a :class:`Process` (see
        :meth:`popen`): write commands to ``stdin``, read with ``expect()`` or
        ``read_until()``."""
        return _process.open_process(
            self, None, pty=True, term=term, size=size, modes=modes,
            env=_exec.env_pairs(env), timeout=timeout,
        )  # fmt: skip

    def interactive(
        self,
        command: Optional[_exec.Command] = None,
        *,
        pty: Optional[bool] = None,
        term: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
    ) -> int:
        """Attach the local terminal to ``command`` (None: the login shell), as
        ``ssh -t host`` does, and return its exit status when it ends. With stdin
        a terminal (``pty=None``) the remote side gets a terminal like the local
        one (``term``: default ``$TERM``; its size, followed on SIGWINCH; its
        modes) and the local one is in raw mode meanwhile, so Ctrl-C reaches the
        remote command; it is restored on every way out. Otherwise stdin, stdout
        and stderr are streamed, and the end of stdin is sent. ``~.`` at the start
        of a line disconnects (returns 255). A signal's end returns ``-N``, as
        :attr:`Process.returncode`. POSIX only. See docs/interactive.md."""
        from . import _interactive

        return _interactive.run(self, command, pty=pty, term=term, env=env)

    def scp_upload(
        self,
        files: Any,
        to: Any = ".",
        *,
        verbose: bool = True,
        progress: Optional[Callable[[str, int, int], Any]] = None,
        preserve: bool = False,
        timeout: Optional[float] = None,
    ) -> List[str]:
        """Copy local files and directories into the remote directory ``to`` (``"."``:
        the remote home; ``"~/x"``: x in it), over SCP. Directories go recursively, hidden
        files and empty directories included, with their modes (``preserve=True`` also
        keeps modification and access times, like ``scp -p``); symlinks are followed.
        ``verbose`` draws ``[NN%] path`` on stderr; ``progress(path, transferred, total)``
        is called a few times a second per file and at its end (raising from it stops
        the transfer). ``timeout``: seconds without progress before
        ``SSHTimeoutError`` (a stalled server; a slow transfer that keeps moving is
        never cut off). Returns the remote paths written (the top level)."""
        return _scp.upload(
            self, files, to, verbose, progress, preserve, _util.check_timeout(timeout)
        )

    def scp_download(
        self,
        files: Any,
        to: Any = ".",
        *,
        verbose: bool = True,
        progress: Optional[Callable[[str, int, int], Any]] = None,
        preserve: bool = False,
        timeout: Optional[float] = None,
    ) -> List[str]:
        """Copy remote files and directories (recursively) into the existing local
        directory ``to``, over SCP. Each file is written to a temporary file beside its
        destination and renamed into place once complete, so a failed transfer never
        leaves a partial file under the final name. What the server sends is checked:
        names that would escape ``to``, files not asked for, bad sizes or modes raise
        :class:`SCPProtocolError`. ``verbose`` prints ``<size> <path>`` per file on
        stderr; ``timeout`` as for :meth:`scp_upload`. Files get the server's mode
        masked by the local umask, as scp does (``preserve=True``: the mode and
        times as they are). Returns the local paths written (the top level)."""
        return _scp.download(
            self, files, to, verbose, progress, preserve, _util.check_timeout(timeout)
        )

    # ---- SFTP
    def sftp(self, *, timeout: Optional[float] = None) -> _sftp.SFTP:
        """Open an SFTP channel: a :class:`pyssh.SFTP` for transfers and remote file
        operations (a context manager; several may be open on one session, one per
        thread). ``timeout``: seconds without progress in any one operation (a
        transfer that keeps moving is never cut off) before ``SSHTimeoutError``. Raises
        :class:`pyssh.SFTPError` when the server has no SFTP subsystem."""
        return run_steps(self._sftp_steps(timeout=timeout))

    def _sftp_steps(self, *, timeout: Optional[float] = None) -> Steps[_sftp.SFTP]:
        """:meth:`sftp` as a flow (see ``_tcp.run_steps``)."""
        _util.check_open(self)
        return (yield from _sftp.open_steps(self, timeout))

    def sftp_upload(
        self,
        files: Any,
        to: Any = ".",
        *,
        verbose: bool = True,
        progress: Optional[Callable[[str, int, int], Any]] = None,
        preserve: bool = False,
        resume: bool = False,
        timeout: Optional[float] = None,
    ) -> List[str]:
        """:meth:`scp_upload` over SFTP (one SFTP channel, opened and closed)."""
        return run_steps(
            self._sftp_upload_steps(
                files,
                to,
                verbose=verbose,
                progress=progress,
                preserve=preserve,
                resume=resume,
                timeout=timeout,
            )
        )

    def _sftp_upload_steps(
        self,
        files: Any,
        to: Any = ".",
        *,
        verbose: bool = True,
        progress: Optional[Callable[[str, int, int], Any]] = None,
        preserve: bool = False,
        resume: bool = False,
        timeout: Optional[float] = None,
    ) -> Steps[List[str]]:
        """:meth:`sftp_upload` as a flow: the channel opened, the transfer, the
        channel closed."""
        with (yield from self._sftp_steps(timeout=timeout)) as s:
            return (yield from s._upload_steps(files, to, verbose, progress, preserve, resume))

    def sftp_download(
        self,
        files: Any,
        to: Any = ".",
        *,
        verbose: bool = True,
        progress: Optional[Callable[[str, int, int], Any]] = None,
        preserve: bool = False,
        resume: bool = False,
        timeout: Optional[float] = None,
    ) -> List[str]:
        """:meth:`scp_download` over SFTP (one SFTP channel, opened and closed)."""
        return run_steps(
            self._sftp_download_steps(
                files,
                to,
                verbose=verbose,
                progress=progress,
                preserve=preserve,
                resume=resume,
                timeout=timeout,
            )
        )

    def _sftp_download_steps(
        self,
        files: Any,
        to: Any = ".",
        *,
        verbose: bool = True,
        progress: Optional[Callable[[str, int, int], Any]] = None,
        preserve: bool = False,
        resume: bool = False,
        timeout: Optional[float] = None,
    ) -> Steps[List[str]]:
        """:meth:`sftp_download` as a flow: the channel opened, the transfer, the
        channel closed."""
        with (yield from self._sftp_steps(timeout=timeout)) as s:
            return (yield from s._download_steps(files, to, verbose, progress, preserve, resume))

    # ---- tunnels
    def tunnel(
        self,
        port: _tunnel.Listen = 5555,
        target: Optional[_tunnel.Target] = None,
        *,
        bind: str = "127.0.0.1",
        max_connections: Optional[int] = None,
        timeout: Optional[float] = None,
    ) -> _tunnel.TunnelStats:
        """Listen on ``bind:port`` and carry each connection to ``target``
        (``"host:port"``, as the server sees it) through the server, like
        ``ssh -N -L``. Blocks while it serves, any number of connections at once,
        until ``max_connections`` have been served (``1``: the R package's
        single-use tunnel), or ``timeout`` seconds pass with no connection open, or
        Ctrl-C, which raises :class:`KeyboardInterrupt` once the listening socket and
        every connection are closed. Returns a :class:`TunnelStats`.

        ``bind`` is loopback by default: ``"0.0.0.0"`` or ``"::"`` lets other
        machines use the tunnel. A port in use raises :class:`OSError` (EADDRINUSE)
        at once; a target the server cannot reach closes that connection and logs a
        warning on the ``"pyssh"`` logger; the session failing raises
        :class:`SSHError`. Other threads can use the session meanwhile.
        ``port`` may be a local Unix socket path and ``target`` a path on the
        server, as :meth:`forward_local`'s (docs/tunnels.md, "Unix-domain
        sockets"); the socket is made mode 0600 and removed at the end (a stale
        one is replaced only with ``StreamLocalBindUnlink yes`` in the config)."""
        if target is None:
            raise ValueError("tunnel() needs a target: tunnel(5555, 'host:port')")
        return _tunnel.run_blocking(
            self, port, target, bind, max_connections, timeout, self._unlink
        )

    def forward_local(
        self,
        port: _tunnel.Listen,
        target: _tunnel.Target,
        *,
        bind: str = "127.0.0.1",
        unlink: Optional[bool] = None,
    ) -> _tunnel.Tunnel:
        """Like :meth:`tunnel`, in the background: returns a running
        :class:`Tunnel` (a context manager; ``.port`` is the local port, also with
        ``port=0``, which picks a free one; ``.close()`` stops it; ``.stats``).
        Several tunnels can run on one session, beside commands and transfers.
        ``port`` may be a local Unix socket path and ``target`` a path on the
        server (docs/tunnels.md, "Unix-domain sockets"); ``unlink=True`` replaces
        a stale socket at that path (None: ``StreamLocalBindUnlink`` from the
        config, else no)."""
        if unlink is None:
            unlink = self._unlink
        return _tunnel.forward_local(self, port, target, bind, self._tunnels, unlink)

    def forward_remote(
        self,
        remote_port: _tunnel.Listen,
        target: _tunnel.Target,
        *,
        bind_address: str = "localhost",
        timeout: Optional[float] = None,
    ) -> _tunnel.Tunnel:
        """Like ``ssh -R``: the server listens on ``bind_address:remote_port``
        (``remote_port=0``: the server picks one; ``.port`` says which) and each
        connection to it is carried to ``target`` from this machine. Returns a
        running :class:`Tunnel`. ``timeout``: seconds to wait for the server's
        answer (default 30). The server decides who may connect: ``"localhost"``
        is its loopback; other addresses need ``GatewayPorts`` in its sshd_config.
        ``remote_port`` may be a Unix socket path on the server, ``target`` a
        local one (docs/tunnels.md, "Unix-domain sockets")."""
        return _tunnel.forward_remote(
            self, remote_port, target, bind_address, timeout, self._tunnels
        )

    def forward_dynamic(self, port: int = 1080, *, bind: str = "127.0.0.1") -> _tunnel.Tunnel:
        """Like ``ssh -D``: a SOCKS 4, 4a and 5 proxy (no authentication, CONNECT)
        on ``bind:port`` whose connections go out through the server, to the host
        and port each client asks for. Returns a running :class:`Tunnel` (``.port``
        is the local port, also with ``port=0``). Anyone who can reach the proxy
        can use this session to reach what the server can: keep ``bind`` a
        loopback address (another one is logged as a warning)."""
        return _tunnel.forward_dynamic(self, port, bind, self._tunnels)

    def info(self) -> Dict[str, Any]:
        """What this session is: user, host, port, identity (what authenticated:
        a key's path, "ssh-agent", "keyboard-interactive", "password" or "none"),
        connected, the server's key (type, SHA256 fingerprint as OpenSSH prints it,
        SHA-1 as colon-separated hex), the server's banner, and the negotiated
        cipher, MAC, key exchange and host key algorithms."""
        if self._hostkey is None:
            raise ConnectError("this session never connected")
        algos = self._algorithms()  # raises SessionClosedError once closed
        key_type, sha256, sha1, _ = self._hostkey
        return {
            "user": self.user,
            "host": self.host,
            "port": self.port,
            "identity": self._identity,
            "connected": self.connected,
            "key_type": key_type,
            "fingerprint": sha256,
            "sha256": sha256,
            "sha1": sha1,
            "server_banner": algos["server_banner"],
            "client_banner": algos["client_banner"],
            "issue_banner": algos["issue_banner"],
            "cipher": algos["cipher_out"],
            "cipher_in": algos["cipher_in"],
            "cipher_out": algos["cipher_out"],
            "mac": algos["mac_out"],
            "mac_in": algos["mac_in"],
            "mac_out": algos["mac_out"],
            "kex": algos["kex"],
            "hostkey": key_type,
            "known_hosts": self._known_hosts,
            "jump": [_format_target(h.user, h.host, h.port) for h in self._hops],
        }


# ---- host keys --------------------------------------------------------------------------


@dataclass(frozen=True)
class _HostKeyFiles:
    """Where host keys are looked up (the user's file first) and how new ones are
    written."""

    known_hosts: str
    global_files: Tuple[str, ...]
    hash_names: bool

    @property
    def paths(self) -> List[str]:
        return [self.known_hosts, *self.global_files]


@dataclass(frozen=True)
class _ServerKey:
    """A key a server sent: the target's, or a ProxyJump host's (hop 1, 2...)."""

    host: str
    port: int
    key_type: str
    fingerprint: str
    blob: bytes
    hop: Optional[int] = None

    def what(self) -> str:
        name = self.name()
        return name if self.hop is None else f"jump host {name} (ProxyJump hop {self.hop})"

    def name(self) -> str:
        return _known_hosts.lookup_name(self.host, self.port)


def _host_key_files(known_hosts: str, opts: Mapping[str, List[str]]) -> _HostKeyFiles:
    hashing = opts.get("hashknownhosts", ["no"])[0].lower() == "yes"
    globals_ = opts.get("globalknownhostsfile")
    files = (
        [os.path.expanduser(p) for p in globals_[0].split()]
        if globals_
        else _known_hosts.global_files()
    )
    return _HostKeyFiles(known_hosts, tuple(f for f in files if f != known_hosts), hashing)


def _where(entry: Optional[_known_hosts.Entry]) -> str:
    return f"{entry.path}:{entry.lineno}" if entry is not None else "known_hosts"


def _host_key_error(
    verdict: _known_hosts.Verdict, key: _ServerKey, files: _HostKeyFiles, policy: HostKeyPolicy
) -> HostKeyError:
    """The typed error for a key that is not accepted, saying what to do."""
    return _with(
        _host_key_problem(verdict, key, files, policy),
        host=key.host,
        port=key.port,
        key_type=key.key_type,
        fingerprint=key.fingerprint,
        known_hosts=files.known_hosts,
        hop=key.hop,
    )


def _host_key_problem(
    verdict: _known_hosts.Verdict, key: _ServerKey, files: _HostKeyFiles, policy: HostKeyPolicy
) -> HostKeyError:
    """_host_key_error's exception, with its message, before its attributes."""
    what, name, kh = key.what(), key.name(), files.known_hosts
    sent = f"the server sent {key.key_type} key {key.fingerprint}"
    if verdict.status == _known_hosts.REVOKED:
        return HostKeyRevokedError(
            f"REVOKED HOST KEY for {what}: {sent}, which {_where(verdict.entry)} marks "
            f"@revoked: the key is known to be compromised, and whoever holds it may be "
            f"impersonating the server. Not connecting, whatever the host_key_policy. Get "
            f"the server's new key from its administrator, check its fingerprint, and add it "
            f"to {kh}."
        )
    if verdict.status == _known_hosts.CHANGED:
        kind = (
            "a different key"
            if key.key_type in verdict.other_types
            else f"a key of another type ({', '.join(verdict.other_types)})"
        )
        return HostKeyMismatchError(
            f"HOST KEY MISMATCH for {what}: {sent}, but {_where(verdict.entry)} holds {kind} "
            f"for this host. Someone may be intercepting the connection (man-in-the-middle), "
            f"or the host's key was replaced. Not connecting. If you know the key changed "
            f"legitimately, remove the old entry with: ssh-keygen -R '{name}' -f '{kh}'"
        )
    if verdict.status == _known_hosts.CA_ONLY:
        why = (
            "pyssh was built without host certificate support (vendor/patches/"
            "libssh-*-host-certificates.patch)"
            if not _HOST_CERTIFICATES
            else "it sent a plain key, not a host certificate"
        )
        return UnknownHostKeyError(
            f"cannot verify {what}: {_where(verdict.entry)} names it only in a "
            f"@cert-authority line, so its key should be a host certificate signed by that "
            f"CA, but {why}. Not connecting; {sent}. Add the host's plain key after checking "
            f"its fingerprint: ssh-keyscan -p {key.port} {key.host} >> '{kh}'"
        )
    why = (
        "was refused by the host_key_policy callable"
        if callable(policy)
        else "is not known and host_key_policy='strict'"
    )
    return UnknownHostKeyError(
        f"unknown host {what}: its {key.key_type} key {key.fingerprint} {why} (looked up in "
        f"{', '.join(files.paths)}). If the fingerprint is right, add the key (for example "
        f"connect once with host_key_policy='accept-new', or ssh-keyscan)"
    )


def _check_host_key(key: _ServerKey, policy: HostKeyPolicy, files: _HostKeyFiles) -> None:
    """Apply the policy to a server's key, as OpenSSH's StrictHostKeyChecking does:
    a revoked key is refused under every policy (OpenSSH's "no" goes on with password
    authentication off; pyssh refuses); a changed one, or one only a @cert-authority
    line could vouch for, under all but "ignore"; an unknown one is refused
    ("strict"), asked about (a callable) or recorded. A host certificate signed by
    a CA trusted for the host, and valid, is accepted; any other certificate is
    judged as its plain key (OpenSSH's fallback)."""
    problem = None
    if key.key_type.endswith(_keys._CERT_SUFFIX):
        plain, problem = _check_host_certificate(key, files)
        if plain is None:
            return
        key = plain
    verdict = _known_hosts.check(files.paths, key.host, key.port, key.blob)
    status = verdict.status
    if status == _known_hosts.REVOKED:
        raise _host_key_error(verdict, key, files, policy)
    if policy == "ignore" or status == _known_hosts.OK:
        return
    if problem is not None and status == _known_hosts.CA_ONLY:
        raise _host_key_attrs(HostKeyError(problem), key, files)
    if status != _known_hosts.NEW or policy == "strict":
        raise _host_key_error(verdict, key, files, policy)
    if callable(policy) and not policy(key.host, key.port, key.key_type, key.fingerprint):
        raise _host_key_error(verdict, key, files, policy)
    _record_host_key(key, policy, files)


_HOST_CERTIFICATES = hasattr(_ssh.Key, "_verify_signature")  # the libssh patch is in


def _host_key_attrs(exc: HostKeyError, key: _ServerKey, files: _HostKeyFiles) -> HostKeyError:
    return _with(
        exc, host=key.host, port=key.port, key_type=key.key_type, fingerprint=key.fingerprint,
        known_hosts=files.known_hosts, hop=key.hop,
    )  # fmt: skip


def _fingerprint(blob: bytes) -> str:
    digest = hashlib.sha256(blob).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def _check_host_certificate(
    key: _ServerKey, files: _HostKeyFiles
) -> Tuple[Optional[_ServerKey], Optional[str]]:
    """A host certificate, checked as OpenSSH's check_host_key does: its key or CA
    revoked raises; signed by a CA that a @cert-authority line trusts for the host
    and valid: (None, None), accepted. Otherwise its plain key, to be judged as
    such, and why the certificate did not do (None when no CA is trusted for the
    host: then a certificate is just a key, as in OpenSSH)."""
    what = f"the host certificate of {key.what()}"
    try:
        cert = _keys.parse_certificate_blob(key.blob, what)
        plain_type = _known_hosts.blob_type(cert.key_blob)
        if plain_type is None:
            raise ValueError(f"{what} holds no valid key")
    except ValueError as e:
        raise _host_key_attrs(HostKeyError(f"{e}: not connecting"), key, files) from None
    plain = _ServerKey(
        key.host, key.port, plain_type, _fingerprint(cert.key_blob), cert.key_blob, key.hop
    )
    revoked = _known_hosts.certificate_revoked(
        files.paths, key.host, key.port, cert.key_blob, cert.ca_blob
    )
    if revoked is not None:
        raise _host_key_attrs(_certificate_revoked(plain, cert, revoked, files), plain, files)
    cas = _known_hosts.trusted_cas(files.paths, key.host, key.port)
    if not cas:
        return plain, None
    why: Optional[str] = (
        f"it is signed by CA {_fingerprint(cert.ca_blob)}, which no @cert-authority line "
        f"trusts for this host ({_where(cas[0])} names another)"
    )
    if any(e.blob == cert.ca_blob for e in cas):
        why = _known_hosts.certificate_problem(
            cert, key.host, time.time(),
            lambda: _ssh.Key._verify_signature(cert.ca_blob, cert.signature, cert.signed),
        )  # fmt: skip
        if why is None:
            log.debug("host certificate %r of %s accepted", cert.key_id, key.what())
            return None, None
    return plain, (
        f"HOST CERTIFICATE REFUSED for {key.what()}: the server sent a host certificate "
        f"(ID {cert.key_id[:80]!r}, {plain_type} key {plain.fingerprint}), but {why}. Not "
        f"connecting. Have the host's certificate reissued (ssh-keygen -s CA -h -n "
        f"{key.host} ...), or, after checking the key's fingerprint, add the plain key to "
        f"'{files.known_hosts}'"
    )


def _certificate_revoked(
    plain: _ServerKey, cert: _keys.Certificate, entry: _known_hosts.Entry, files: _HostKeyFiles
) -> HostKeyError:
    which = (
        f"the CA that signed its host certificate ({_fingerprint(cert.ca_blob)})"
        if entry.blob == cert.ca_blob
        else f"its {plain.key_type} key {plain.fingerprint}"
    )
    return HostKeyRevokedError(
        f"REVOKED HOST KEY for {plain.what()}: {which} is marked @revoked in {_where(entry)}. "
        f"Whoever holds it may be impersonating the server. Not connecting, whatever the "
        f"host_key_policy. Ask the server's administrator for a new certificate or key."
    )


def _offer_host_certificates(
    s: Session, algos: Mapping[str, Optional[str]], opts: Mapping[str, List[str]],
    files: _HostKeyFiles,
) -> None:  # fmt: skip
    """As OpenSSH does when known_hosts trusts a CA for the host (and neither the
    caller nor the configuration chose the host key algorithms): offer the host
    certificate algorithms first. Other hosts are offered exactly what they were."""
    if not _HOST_CERTIFICATES or algos.get("host_key_algorithms") or "hostkeyalgorithms" in opts:
        return
    if _known_hosts.trusted_cas(files.paths, s.host, s.port):
        s._set_host_key_algorithms(
            ",".join(_known_hosts.HOST_CERT_ALGORITHMS + _known_hosts.DEFAULT_HOST_KEY_ALGORITHMS)
        )


def _record_host_key(key: _ServerKey, policy: HostKeyPolicy, files: _HostKeyFiles) -> None:
    """Append the accepted key to known_hosts (locked, checked again under the lock:
    a writer that was first, or a revocation added meanwhile, wins)."""
    try:
        verdict = _known_hosts.append(
            files.known_hosts,
            key.host,
            key.port,
            key.blob,
            hash_names=files.hash_names,
            check_paths=files.paths,
        )
    except OSError as e:
        log.warning(
            "could not record the host key of %s in %s: %s", key.what(), files.known_hosts, e
        )
        return
    if verdict.status not in (_known_hosts.NEW, _known_hosts.OK):
        raise _host_key_error(verdict, key, files, policy)
    if verdict.status == _known_hosts.NEW:
        log.info(
            "added %s key %s for %s to %s",
            key.key_type,
            key.fingerprint,
            key.what(),
            files.known_hosts,
        )


def _target_key(s: Session, hop: Optional[int]) -> _ServerKey:
    assert s._hostkey is not None  # set by _handshake before host keys are checked
    key_type, sha256, b64 = s._hostkey.type, s._hostkey.sha256, s._hostkey.base64
    return _ServerKey(s.host, s.port, key_type, sha256, base64.b64decode(b64), hop)


_E = TypeVar("_E", bound=BaseException)


def _with(exc: _E, **attrs: Any) -> _E:
    for k, v in attrs.items():
        setattr(exc, k, v)
    return exc


# ---- authentication ---------------------------------------------------------------------------


class _Auth:
    """Tries the methods in pyssh's order and keeps the record for the error."""

    def __init__(
        self,
        s: Session,
        deadline: Deadline,
        password: Optional[Secret],
        passphrase: Optional[Secret],
    ):
        self.s = s
        self.deadline = deadline
        self.password = password
        self.passphrase = passphrase
        self.tried: List[str] = []
        self.keys: List[Tuple[str, str]] = []
        self.allowed = 0
        self.partial: List[str] = []
        self.certs: List[str] = []  # certificate= and CertificateFile
        self.certs_used: Set[str] = set()  # ... that went with a key tried

    def allows(self, bit: int) -> bool:
        return bool(self.allowed & bit)

    def done(self, rc: int, identity: str) -> bool:
        if rc == _ssh.SSH_AUTH_SUCCESS:
            self.s._identity = identity
            return True
        if rc == _ssh.SSH_AUTH_PARTIAL:
            self.partial.append(identity)
            self.allowed = self.s._auth_list()
        return False

    def identity(
        self,
        label: str,
        path: Optional[str],
        data: Optional[bytes],
        explicit: bool,
        certs: List[str],
    ) -> Steps[bool]:
        """One private key: with each of its certificates first, then alone (as OpenSSH)."""
        self.certs_used.update(certs)
        for cert in certs:
            if (yield from self.key(label, path, data, explicit, cert)):
                return True
        return (yield from self.key(label, path, data, explicit))

    def refused(self, label: str, cert: Optional[str], rc: int) -> bool:
        """Record why a key (or its certificate) was not accepted; False."""
        if cert is None:
            self.keys.append((label, "the server does not accept this key"))
        elif rc == _ssh.KEY_BAD_CERT:
            self.keys.append((cert, f"not a certificate of the key {label}"))
        else:
            try:
                why = _keys.read_certificate(cert).refusal(self.s.user)
            except (OSError, ValueError) as e:
                why = f"the server refused the certificate {cert}, which cannot be read now: {e}"
            self.keys.append((cert, why))
        return False

    def key(
        self,
        label: str,
        path: Optional[str],
        data: Optional[bytes],
        explicit: bool,
        cert: Optional[str] = None,
    ) -> Steps[bool]:
        """One private key, from a file (path) or text (data), with a certificate file."""
        s, t = self.s, self.deadline
        if path is not None or cert is not None:
            rc = yield s._auth_try_pubkey(path or "", timeout=t.left(), cert=cert, defer=True)
            if rc in (_ssh.SSH_AUTH_DENIED, _ssh.KEY_BAD_CERT):
                return self.refused(label, cert, rc)
        if path is not None:
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except OSError as e:
                if explicit:
                    raise
                self.keys.append((label, f"cannot be read: {e.strerror or e}"))
                return False
        assert data is not None
        if b"\0" in data:
            return self.unusable(label, path, explicit, "it is not a text key file")
        rc = yield s._auth_privkey(data, timeout=t.left(), cert=cert, defer=True)
        attempts = 0
        while rc == _ssh.KEY_ENCRYPTED or (rc == _ssh.KEY_UNUSABLE and attempts):
            if attempts and (self.passphrase is not None or not _stdin_is_tty() or attempts >= 3):
                return self.unusable(label, path, explicit, "wrong passphrase")
            prompt = f"Enter passphrase for key '{label}': "
            pp = _ask(self.passphrase, prompt, "passphrase")
            if pp is None:
                if explicit:
                    raise _with(
                        PrivateKeyError(
                            f"the key {label} is encrypted: pass passphrase= (a str or a callable)"
                        ),
                        path=path,
                    )
                self.keys.append((label, "encrypted, and no passphrase was given"))
                return False
            attempts += 1
            rc = yield s._auth_privkey(data, pp, timeout=t.left(), cert=cert, defer=True)
        if rc == _ssh.KEY_UNUSABLE:
            return self.unusable(
                label, path, explicit, "not a private key pyssh can read (PEM or OpenSSH format)"
            )
        if rc in (_ssh.SSH_AUTH_DENIED, _ssh.KEY_BAD_CERT):
            return self.refused(label, cert, rc)
        if rc == _ssh.SSH_AUTH_PARTIAL:
            self.keys.append((label, "accepted, but the server wants another method too"))
        return self.done(rc, label if cert is None else f"{label} (certificate {cert})")

    def agent_certificates(self) -> Steps[bool]:
        """The certificates whose private key is only in ssh-agent, which signs (as
        OpenSSH pairs a CertificateFile with an agent key)."""
        sign = getattr(_ssh, "_auth_agent_certificate", None)  # pyssh's libssh patch
        if sign is None or not self.certs:
            return False
        try:
            held = {k.blob() for k in _keys.agent_keys(timeout=self.deadline.left() or 10.0)}
        except SSHError:
            return False
        for cert in self.certs:
            if cert in self.certs_used or not self.allows(_ssh.SSH_AUTH_METHOD_PUBLICKEY):
                continue
            try:
                if _keys.read_certificate(cert).key_blob not in held:
                    continue
            except (OSError, ValueError):
                continue
            self.certs_used.add(cert)
            rc = yield self.s._auth_try_pubkey(
                "", timeout=self.deadline.left(), cert=cert, defer=True
            )
            if rc == _ssh.SSH_AUTH_SUCCESS:
                rc = sign(self.s, cert, timeout=self.deadline.left())
            if rc in (_ssh.SSH_AUTH_DENIED, _ssh.KEY_BAD_CERT):
                self.refused("ssh-agent", cert, rc)
                continue
            identity = f"ssh-agent (certificate {cert})"
            if rc == _ssh.SSH_AUTH_PARTIAL:
                self.keys.append((identity, "accepted, but the server wants another method too"))
            if self.done(rc, identity):
                return True
        return False

    def unusable(self, label: str, path: Optional[str], explicit: bool, why: str) -> bool:
        if explicit:
            raise _with(PrivateKeyError(f"cannot use the key {label}: {why}"), path=path)
        self.keys.append((label, why))
        return False

    def kbdint(self) -> Steps[bool]:
        password = self.password
        if password is None and not _stdin_is_tty():
            return False

        def respond(name: str, instruction: str, prompts: List[Tuple[str, bool]]) -> List[str]:
            answers = []
            for prompt, _echo in prompts:
                answer = _ask(password, prompt, "password")
                if answer is None:
                    raise _with(
                        AuthenticationError("keyboard-interactive: no answer to " + repr(prompt))
                    )
                answers.append(answer)
            return answers

        self.tried.append("keyboard-interactive")
        rc = yield self.s._auth_kbdint(respond, timeout=self.deadline.left(), defer=True)
        return self.done(rc, "keyboard-interactive")

    def password_method(self) -> Steps[bool]:
        prompt = f"{self.s.user}@{self.s.host}'s password: "
        pw = _ask(self.password, prompt, "password")
        if pw is None:
            return False
        self.tried.append("password")
        rc = yield self.s._auth_password(pw, timeout=self.deadline.left(), defer=True)
        return self.done(rc, "password")

    def failure(self) -> AuthenticationError:
        allowed = [name for bit, name in _METHOD_NAMES if self.allowed & bit]
        target = _format_target(self.s.user, self.s.host, self.s.port)
        parts = [f"authentication failed for {target}."]
        parts.append("Tried: " + (", ".join(self.tried) if self.tried else "nothing") + ".")
        parts.append("The server allows: " + (", ".join(allowed) or "nothing") + ".")
        for cert in self.certs:
            if cert not in self.certs_used:
                agent = "ssh-agent does not hold it" if _agent_socket() else "no ssh-agent"
                if _agent_socket() and not hasattr(_ssh, "_auth_agent_certificate"):
                    agent = "this build's libssh cannot sign a certificate with ssh-agent"
                why = f"no key pyssh tried is this certificate's ({agent})"
                self.keys.append((cert, why))
        if self.keys:
            parts.append("Keys: " + "; ".join(f"{p}: {why}" for p, why in self.keys) + ".")
        if self.partial:
            parts.append("Partly accepted: " + ", ".join(self.partial) + ".")
        if not self.tried:
            parts.append("Give keyfile=, load a key into ssh-agent, or give password=.")
        return _with(
            AuthenticationError(" ".join(parts)),
            methods_tried=list(self.tried),
            methods_allowed=allowed,
            keys=list(self.keys),
            user=self.s.user,
            host=self.s.host,
            port=self.s.port,
        )


def _agent_socket() -> bool:
    return bool(os.environ.get("SSH_AUTH_SOCK"))


def _key_argument(keyfile: Any) -> Tuple[Optional[str], Optional[bytes]]:
    """(path, None) or (None, key text) from the keyfile argument."""
    if isinstance(keyfile, _keys.Key):
        if not keyfile.has_private:
            raise ValueError("keyfile= needs a private key: this Key is a public key only")
        return None, keyfile._private_text()
    if isinstance(keyfile, bytes):
        if b"-----BEGIN" in keyfile or b"\n" in keyfile:
            return None, keyfile
        keyfile = os.fsdecode(keyfile)
    # key text, never taken for a path: a "not found" error would echo the secret
    if isinstance(keyfile, str) and ("-----BEGIN" in keyfile or "\n" in keyfile):
        return None, keyfile.encode()
    if isinstance(keyfile, (str, os.PathLike)):
        path = os.path.expanduser(os.fspath(keyfile))
        if not os.path.exists(path):
            raise FileNotFoundError(2, f"keyfile not found: {path}", path)
        if os.path.isdir(path):
            raise IsADirectoryError(21, f"keyfile is a directory, not a key: {path}", path)
        with open(path, "rb"):  # PermissionError now rather than later
            pass
        return path, None
    raise TypeError(
        f"keyfile must be a path, the key itself (str or bytes) or a pyssh.Key, "
        f"not {type(keyfile).__name__}"
    )


def _certificate_argument(certificate: Any) -> Optional[str]:
    """The certificate argument checked (a readable user certificate), as a path."""
    if certificate is None:
        return None
    if not isinstance(certificate, (str, os.PathLike)):
        raise TypeError(f"certificate must be a path, not {type(certificate).__name__}")
    path = os.path.expanduser(os.fspath(certificate))
    if not os.path.exists(path):
        raise FileNotFoundError(2, f"certificate not found: {path}", path)
    _keys.read_certificate(path)  # ValueError if it is not one
    return path


def _public_blob(path: Optional[str], key: Any) -> Optional[bytes]:
    """The public key of a key (a Key, or a file with a .pub beside it), or None."""
    if isinstance(key, _keys.Key):
        return key.blob()
    try:
        with open(f"{path}.pub", "rb") as f:
            return base64.b64decode(f.read(64 * 1024).split()[1], validate=True)
    except (OSError, IndexError, ValueError):
        return None


def _certificates_for(path: Optional[str], key: Any, listed: List[str]) -> List[str]:
    """A key's certificates, as OpenSSH finds them: its path + "-cert.pub", then those
    of certificate= and CertificateFile that certify it (all of them, for a key whose
    public half is unknown: libssh then refuses those that are not its own)."""
    found = [path + "-cert.pub"] if path and os.path.isfile(path + "-cert.pub") else []
    blob = _public_blob(path, key)
    for cert in listed:
        if cert in found or not os.path.isfile(cert):
            continue
        try:
            if blob is not None and _keys.read_certificate(cert).key_blob != blob:
                continue
        except (OSError, ValueError):
            pass  # offered: the report then says it is not this key's certificate
        found.append(cert)
    return found


def _key_label(keyfile: Any) -> str:
    """How the report names a key given as a Key or as text."""
    if isinstance(keyfile, _keys.Key):
        return f"<Key {keyfile.fingerprint()}>"
    return "<key given as text>"


def _identity_files(
    s: Session, opts: Dict[str, List[str]], home: str, certificate: Optional[str]
) -> Tuple[List[str], List[str]]:
    """The config's IdentityFile and CertificateFile paths, expanded (%h, ~), with
    the certificate= argument first."""

    def expand(p: str) -> str:
        return _config.expand_identity(p, host=s.host, user=s.user, port=s.port, home=home)

    identities = [expand(p) for p in opts.get("identityfile", [])]
    certs = [expand(p) for p in opts.get("certificatefile", [])]
    return identities, ([certificate] if certificate else []) + certs


def _authenticate(
    s: Session,
    deadline: Deadline,
    keyfile: Any,
    password: Optional[Secret],
    passphrase: Optional[Secret],
    opts: Dict[str, List[str]],
    home: str,
    fallback: bool = False,
    certificate: Optional[str] = None,
) -> Steps[None]:
    """`fallback` (a jump host): a key file given is tried first, then the host's own."""
    identities, certs = _identity_files(s, opts, home, certificate)
    a = _Auth(s, deadline, password, passphrase)
    a.certs = certs
    rc = yield s._auth_none(timeout=deadline.left(), defer=True)
    if rc == _ssh.SSH_AUTH_SUCCESS:
        s._identity = "none"
        return
    a.allowed = s._auth_list()

    if a.allows(_ssh.SSH_AUTH_METHOD_PUBLICKEY):
        if keyfile is not None:
            path, data = _key_argument(keyfile)
            a.tried.append("publickey")
            label = path or _key_label(keyfile)
            certs_of = _certificates_for(path, keyfile, certs)
            if (yield from a.identity(label, path, data, True, certs_of)):
                return
        if keyfile is None or fallback:
            if _agent_socket():
                a.tried.append("publickey (ssh-agent)")
                rc = yield s._auth_agent(timeout=deadline.left(), defer=True)
                if rc == _ssh.SSH_AUTH_DENIED:
                    a.keys.append(("ssh-agent", "no key of the agent was accepted"))
                if a.done(rc, "ssh-agent") or (yield from a.agent_certificates()):
                    return
            seen = set()
            defaults = [os.path.join(home, ".ssh", k) for k in _DEFAULT_KEYS]
            for path in identities + defaults:
                if path in seen or not a.allows(_ssh.SSH_AUTH_METHOD_PUBLICKEY):
                    continue
                seen.add(path)
                if not os.path.exists(path):
                    if path in identities:
                        a.keys.append((path, "IdentityFile not found"))
                    continue
                if "publickey" not in a.tried:
                    a.tried.append("publickey")
                certs_of = _certificates_for(path, None, certs)
                if (yield from a.identity(path, path, None, False, certs_of)):
                    return
    if a.allows(_ssh.SSH_AUTH_METHOD_INTERACTIVE) and (yield from a.kbdint()):
        return
    if a.allows(_ssh.SSH_AUTH_METHOD_PASSWORD) and (yield from a.password_method()):
        return
    raise a.failure()


# ---- connect ------------------------------------------------------------------------------------


def _check_secret(value: Any, name: str) -> None:
    if value is not None and not isinstance(value, str) and not callable(value):
        raise TypeError(
            f"{name} must be a str or a callable(prompt) -> str, not {type(value).__name__}"
        )


# long: the signature and docstring are the public API, one line per keyword argument
def connect(
    host: str,
    *,
    port: Optional[int] = None,
    user: Optional[str] = None,
    keyfile: Union[PathType, bytes, _keys.Key, None] = None,
    password: Optional[Secret] = None,
    passphrase: Optional[Secret] = None,
    certificate: Optional[PathType] = None,
    known_hosts: Optional[PathType] = None,
    host_key_policy: HostKeyPolicy = "accept-new",
    timeout: Optional[float] = 30.0,
    config: Union[bool, PathType] = True,
    verbose: int = 0,
    ciphers: Algorithms = None,
    kex: Algorithms = None,
    macs: Algorithms = None,
    host_key_algorithms: Algorithms = None,
    forward_agent: Union[bool, PathType, None] = None,
    keepalive_interval: Optional[float] = None,
    keepalive_count_max: Optional[int] = None,
    jump: Union[str, Sequence[str], None] = None,
) -> Session:
    """Connect to ``"[user@]host[:port]"``, check the host key, authenticate.

    See docs/connect.md for the authentication order, the cipher order and the
    keepalive, and docs/hostkeys.md for the host key policies. ``ciphers``, ``kex``,
    ``macs`` and ``host_key_algorithms`` take a list of names (or one comma-separated
    str), most preferred first, as OpenSSH's ``-c``, ``-oKexAlgorithms``, ``-m`` and
    ``-oHostKeyAlgorithms`` do; they win over ``~/.ssh/config``.
    A server silent for ``keepalive_interval`` seconds is probed, and lost (ConnectError)
    after ``keepalive_count_max`` unanswered probes (None: ServerAlive*, else off and 3).
    Raises ConnectError, SSHTimeoutError, HostKeyMismatchError, UnknownHostKeyError,
    HostKeyRevokedError, AuthenticationError or PrivateKeyError (all SSHError, an
    OSError); a host key error for a ProxyJump host has ``.hop`` set (1 for the first).
    ``forward_agent`` (``ssh -A``: True, a socket's path, False; None: ``ForwardAgent``
    from the config, else off) lets the server use your agent's keys: docs/connect.md.
    ``jump`` (``ssh -J``): the jump hosts, ``"user@j1:22,j2"`` or a list, first first;
    ``"none"``: none; None: ``ProxyJump`` from the config. Each is connected, checked and
    authenticated as a target is; an error on one has ``.hop`` set (docs/connect.md).
    ``keyfile`` may be a private :class:`pyssh.Key`; ``certificate`` (a path) is a user
    certificate offered with the key it certifies, as are ``KEY-cert.pub`` beside a key
    and ``CertificateFile`` (docs/connect.md, Certificates).
    """
    again = {k: v for k, v in locals().items() if k != "host"}  # the arguments, as given
    return run_steps(connect_steps(host, again))


# connect()'s keywords and their defaults (a Group's hosts, pyssh.aio.connect)
CONNECT_DEFAULTS: Dict[str, Any] = {
    name: p.default
    for name, p in inspect.signature(connect).parameters.items()
    if p.kind is inspect.Parameter.KEYWORD_ONLY
}


def connect_steps(host: str, kw: Dict[str, Any]) -> Steps[Session]:
    """connect(host, **kw), as steps (pyssh/_tcp.py); `kw`: all of connect's keywords."""
    k = SimpleNamespace(**kw)
    h_host, user, port = _host_user_port(host, k.user, k.port)
    _check_arguments(k.timeout, k.verbose, k.host_key_policy, k.password)
    keepalive = _keepalive_arguments(k.keepalive_interval, k.keepalive_count_max)
    passphrase = _passphrase_argument(k.passphrase)
    algos = _algorithms(k.ciphers, k.kex, k.macs, k.host_key_algorithms)
    if k.keyfile is not None:
        _key_argument(k.keyfile)  # fail on a missing file before touching the network
    cert = _certificate_argument(k.certificate)
    agent = _tunnel.agent_argument(k.forward_agent)  # True with no agent fails here too
    cfg = _config_argument(k.config)
    home = os.path.expanduser("~")
    kh = _known_hosts_path(k.known_hosts, home)
    hops = _jump.parse(k.jump)
    if k.verbose:
        _show_log_on_stderr(k.verbose)
    a = _Settings(
        k.keyfile, k.password, passphrase, kh, k.host_key_policy, cfg, home, k.verbose, algos, cert
    )
    s = Session()
    try:
        opts = yield from _open(s, h_host, user, port, a, Deadline(k.timeout), hops)
        _forward_agent(s, agent, opts)
        _start_keepalive(s, keepalive, opts)
        s._unlink = _config.yes_no(opts, "streamlocalbindunlink", "StreamLocalBindUnlink")
    except BaseException:
        s.close()
        raise
    log.debug("connected to %s as %s", _format_target(s.user, s.host, s.port), s._identity)
    s._again = functools.partial(connect, host, **{**kw, "forward_agent": False})
    return s


@dataclass
class _Settings:
    """connect()'s arguments, checked, for the target and its jump hosts."""

    keyfile: Any
    password: Optional[Secret]
    passphrase: Optional[Secret]
    known_hosts: str
    policy: HostKeyPolicy
    config: Union[bool, str, None]
    home: str
    verbose: int
    algos: Dict[str, Optional[str]]
    certificate: Optional[str] = None


def _open(
    s: Session,
    host: str,
    user: Optional[str],
    port: Optional[int],
    a: _Settings,
    deadline: Deadline,
    hops: Optional[List[str]],
    via: Optional[Session] = None,
    hop: Optional[int] = None,
) -> Steps[Dict[str, List[str]]]:
    """Configure, connect (through the jump hosts `hops`, else through `via`, the
    previous jump host, else directly), check the key and authenticate `s`: the
    target, or jump host number `hop`. Returns the options read from the config."""
    opts, proxy = _configure(
        s, host, user, port, a.config, a.home, a.known_hosts, a.verbose, a.algos
    )
    files = _host_key_files(a.known_hosts, opts)
    if via is None and hop is None:
        chain = _jump.from_config(opts) if hops is None else hops
        via = yield from _connect_hops(s, chain, a, deadline)
    sock = None if via is None else _jump.bridge(via, s, s.host, s.port)
    _offer_host_certificates(s, a.algos, opts, files)
    yield from _reach(s, deadline, proxy and via is None, a.policy, files, sock, hop)
    yield from _authenticate(
        s, deadline, a.keyfile, a.password, a.passphrase, opts, a.home, hop is not None,
        a.certificate,
    )  # fmt: skip
    return opts


def _connect_hops(
    s: Session, chain: List[str], a: _Settings, deadline: Deadline
) -> Steps[Optional[Session]]:
    """Connect the jump hosts one through the other, as `s`'s hops (closed with it);
    returns the last one. A jump host is given the target's key file and passphrase,
    and its password only when it is a callable (which sees whose prompt it is)."""
    pw = a.password if callable(a.password) else None
    hop_settings = _Settings(**{**a.__dict__, "password": pw, "algos": dict.fromkeys(a.algos)})
    via: Optional[Session] = None
    for n, spec in enumerate(chain, 1):
        h_user, h_host, h_port = parse_host(spec)
        h = Session()
        s._hops.append(h)  # closed by s's close, also on failure
        try:
            yield from _open(h, h_host, h_user, h_port, hop_settings, deadline, None, via, n)
        except SSHError as e:
            raise _hop_error(e, h, n) from None
        via = h
    return via


def _hop_error(e: SSHError, h: Session, n: int) -> SSHError:
    """The error on jump host `n`, naming it (a host key error names it already)."""
    if getattr(e, "hop", None) is None:
        e.hop = n  # type: ignore[attr-defined]
        name = _known_hosts.lookup_name(h.host, h.port)
        e.args = (f"jump host {name} (ProxyJump hop {n}): {e}",)
    return e


def _forward_agent(s: Session, agent: Union[str, bool, None], opts: Dict[str, List[str]]) -> None:
    """Start forwarding the agent (the argument's, else the config's), if asked to.
    Not for the more connections like this one (``_again``: SFTP over several), which
    run no commands."""
    if agent is None:
        agent = _tunnel.agent_from_config(opts.get("forwardagent", [None])[0])
    if isinstance(agent, str):
        _tunnel.forward_agent(s, agent, s._tunnels)


def _check_arguments(
    timeout: Optional[float], verbose: Any, host_key_policy: Any, password: Any
) -> None:
    _util.check_timeout(timeout)
    _check_verbose_and_policy(verbose, host_key_policy)
    _check_secret(password, "password")


def _keepalive_arguments(interval: Any, count_max: Any) -> Tuple[Optional[float], Optional[int]]:
    """keepalive_interval= (seconds, 0: off) and keepalive_count_max= (at least 1),
    checked; None: from the configuration."""
    if interval is not None:
        if isinstance(interval, bool) or not isinstance(interval, (int, float)):
            raise TypeError(
                f"keepalive_interval must be None or a number of seconds, "
                f"not {type(interval).__name__}"
            )
        if not 0 <= interval < float("inf"):
            raise ValueError(f"keepalive_interval must be 0 (off) or more, not {interval!r}")
    if count_max is not None:
        if isinstance(count_max, bool) or not isinstance(count_max, int):
            raise TypeError(
                f"keepalive_count_max must be None or an int, not {type(count_max).__name__}"
            )
        if count_max < 1:
            raise ValueError(f"keepalive_count_max must be at least 1, not {count_max!r}")
    return interval, count_max


def _start_keepalive(
    s: Session, arguments: Tuple[Optional[float], Optional[int]], opts: Dict[str, List[str]]
) -> None:
    """Start the keepalive of the authenticated session: the arguments, else
    ServerAliveInterval and ServerAliveCountMax, else off and 3."""
    interval, count_max = arguments
    cfg_interval, cfg_count = _config.keepalive(opts)
    if count_max is None:
        count_max = 3 if cfg_count is None else cfg_count
        _keepalive_arguments(None, count_max)  # ServerAliveCountMax 0: refused too
    if interval is None and cfg_interval:
        try:
            s._keepalive(cfg_interval, count_max)
        except NotImplementedError as e:  # a libssh without pyssh's patch
            log.warning("ServerAliveInterval in the ssh configuration is ignored: %s", e)
    elif interval:
        s._keepalive(float(interval), count_max)


def _host_user_port(
    host: str, user: Optional[str], port: Optional[int]
) -> Tuple[str, Optional[str], Optional[int]]:
    """The host string's host name, and its user and port merged with the user= and
    port= arguments (which may repeat them, not contradict them)."""
    h_user, h_host, h_port = parse_host(host)
    if user is not None:
        if not isinstance(user, str) or not user:
            raise TypeError("user must be a non-empty str")
        if h_user is not None and h_user != user:
            raise ValueError(
                f"user given twice with different values: {h_user!r} in host and user={user!r}"
            )
    if port is not None:
        _check_port(port)
        if h_port is not None and h_port != port:
            raise ValueError(
                f"port given twice with different values: {h_port} in host and port={port}"
            )
    user = user if user is not None else h_user
    port = port if port is not None else h_port
    return h_host, user, port


def _check_verbose_and_policy(verbose: Any, host_key_policy: Any) -> None:
    if isinstance(verbose, bool) or not isinstance(verbose, int) or not 0 <= verbose <= 4:
        raise ValueError(f"verbose must be an int from 0 to 4, not {verbose!r}")
    if not (callable(host_key_policy) or host_key_policy in _POLICIES):
        raise ValueError(
            f"host_key_policy must be one of {', '.join(map(repr, _POLICIES))} "
            f"or a callable(host, port, key_type, fingerprint) -> bool, "
            f"not {host_key_policy!r}"
        )


def _passphrase_argument(passphrase: Any) -> Optional[Secret]:
    """The passphrase argument checked; bytes decoded."""
    if (
        passphrase is not None
        and not isinstance(passphrase, (str, bytes))
        and not callable(passphrase)
    ):
        raise TypeError(
            f"passphrase must be a str or a callable(prompt) -> str, "
            f"not {type(passphrase).__name__}"
        )
    if isinstance(passphrase, bytes):
        passphrase = passphrase.decode()
    result: Optional[Secret] = passphrase
    return result


def _algorithms(
    ciphers: Algorithms, kex: Algorithms, macs: Algorithms, host_key_algorithms: Algorithms
) -> Dict[str, Optional[str]]:
    """The algorithm arguments, each as the comma-separated list libssh takes."""
    return {
        name: _algorithm_list(value, name)
        for name, value in (
            ("ciphers", ciphers),
            ("kex", kex),
            ("macs", macs),
            ("host_key_algorithms", host_key_algorithms),
        )
    }


def _config_argument(config: Union[bool, PathType, None]) -> Union[bool, str, None]:
    """config=: True, False (or None), or the path of a file that must exist."""
    if config is not True and config is not False and config is not None:
        config = os.fspath(config)
        if not os.path.isfile(config):
            raise FileNotFoundError(2, f"config file not found: {config}", config)
    return config


def _known_hosts_path(known_hosts: Optional[PathType], home: str) -> str:
    if known_hosts is not None:
        return os.path.expanduser(os.fspath(known_hosts))
    return os.path.join(home, ".ssh", "known_hosts")


def _configure(
    s: Session,
    host: str,
    user: Optional[str],
    port: Optional[int],
    config: Union[bool, str, None],
    home: str,
    kh: str,
    verbose: int,
    algos: Dict[str, Optional[str]],
) -> Tuple[Dict[str, List[str]], bool]:
    """Set the session's options from the arguments and the configuration files
    (libssh reads them too), and where it connects. Returns the options pyssh reads
    itself, and whether the connection goes through a ProxyCommand."""
    opts = _config.lookup(host, user=user, config=config, home=home) if config else {}
    # ProxyJump is pyssh's (connect's _connect_hops), and wins over ProxyCommand
    jumps = opts.get("proxyjump", ["none"])[0].lower() != "none"
    proxy = not jumps and opts.get("proxycommand", ["none"])[0].lower() != "none"
    eff_host, eff_user, eff_port = s._configure(
        host,
        user=user,
        port=port or 0,
        ssh_dir=os.path.join(home, ".ssh"),
        known_hosts=kh,
        config=config if config else None,
        verbose=verbose,
        default_user=_local_user(),
        default_ciphers=_ssh.DEFAULT_CIPHERS or None,
        **algos,
    )
    s.host, s.user, s.port = eff_host or host, eff_user or _local_user(), eff_port
    s._known_hosts = kh
    return opts, proxy


def _reach(
    s: Session,
    deadline: Deadline,
    proxy: bool,
    policy: HostKeyPolicy,
    files: _HostKeyFiles,
    sock: Optional[socket.socket] = None,
    hop: Optional[int] = None,
) -> Steps[None]:
    """Connect the configured session (over `sock`, the bridge from the previous jump
    host; or through its ProxyCommand; or directly) and check the server's key."""
    target = _format_target(s.user, s.host, s.port)
    what = f"connecting to {target}"
    if proxy:  # libssh runs the ProxyCommand
        what += " through a proxy"
    elif sock is None:
        sock = yield TCPConnect(s.host, s.port, deadline, target)
    fd = -1 if sock is None else sock.detach()
    yield s._connect(fd, timeout=deadline.left(), what=what, defer=True)
    s._hostkey = s._server_key()
    _check_host_key(_target_key(s, hop), policy, files)


def _algorithm_list(value: Algorithms, name: str) -> Optional[str]:
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else value
    try:
        items = [x.strip() for x in items]
    except (TypeError, AttributeError):
        raise TypeError(
            f"{name} must be a list of algorithm names or a comma-separated str, "
            f"not {type(value).__name__}"
        ) from None
    if not items or not all(items) or any(" " in x or "\0" in x for x in items):
        raise ValueError(
            f"{name} must name at least one algorithm, with no empty or "
            f"space-containing names: {value!r}"
        )
    return ",".join(items)


def _local_user() -> str:
    for name in ("LOGNAME", "USER", "LNAME", "USERNAME"):  # getpass.getuser's order
        user = os.environ.get(name)
        if user:
            return user
    return _account_name(os.getuid() if hasattr(os, "getuid") else -1)


@functools.lru_cache(maxsize=8)
def _account_name(uid: int) -> str:
    """The password database's name for uid (read once: a Group asks for every host)."""
    try:
        return getpass.getuser()
    except Exception:  # no login name in the environment or the password database
        return "root" if uid == 0 else "user"


_stderr_handler: Optional[logging.Handler] = None


def _show_log_on_stderr(verbose: int) -> None:
    """verbose > 0: libssh's lines also go to stderr, as in the seed's example.
    Adds one handler to the "pyssh" logger (once), unless it already has handlers."""
    global _stderr_handler
    level = {1: logging.WARNING, 2: logging.INFO, 3: logging.DEBUG}.get(verbose, 5)
    if _stderr_handler is None and not log.handlers:
        _stderr_handler = logging.StreamHandler(sys.stderr)
        _stderr_handler.setFormatter(logging.Formatter("pyssh: %(message)s"))
        log.addHandler(_stderr_handler)
    if log.level == logging.NOTSET or log.level > level:
        log.setLevel(level)
