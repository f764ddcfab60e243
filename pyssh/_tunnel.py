"""Tunnels (port forwarding): the Python half of Session.tunnel, forward_local,
forward_remote and forward_dynamic, and of agent forwarding (connect's forward_agent).

The C type ``_ssh.Tunnel`` does the work: one loop per tunnel moves the data of
all its connections with the GIL released, through the session's socket. This
module checks arguments, makes the local listening socket (so that a port in use
is an ``OSError`` at once), and runs the loop either in the calling thread
(``Session.tunnel``, blocking like the R package's ``ssh_tunnel``) or in a
background thread (``forward_local``, ``forward_remote``).
"""

from __future__ import annotations

import atexit
import errno
import ipaddress
import logging
import os
import socket
import stat
import sys
import threading
import weakref
from dataclasses import dataclass
from typing import Any, Optional, Set, Tuple, Union

from . import _ssh
from ._tcp import Steps, run_steps
from ._util import check_open, check_timeout

log = logging.getLogger("pyssh")

Target = Union[str, Tuple[str, int], "os.PathLike[str]"]
# where a forward listens: a port, or a Unix socket's path
Listen = Union[int, str, "os.PathLike[str]"]

# sizeof(sun_path): a socket's path must be shorter (its NUL ends it)
_SUN_PATH = 104 if sys.platform == "darwin" or "bsd" in sys.platform else 108


@dataclass(frozen=True)
class TunnelStats:
    """What a tunnel carried. ``connections``: accepted (including those whose
    target could not be reached: ``failed``); ``active``: open right now;
    ``bytes_to_target`` / ``bytes_from_target``: payload bytes each way."""

    connections: int
    bytes_to_target: int
    bytes_from_target: int
    failed: int
    active: int


def _stats(t: Tuple[int, int, int, int, int]) -> TunnelStats:
    return TunnelStats(*t)


def _port(value: Any, what: str, zero_ok: bool) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        hint = " (a Unix socket's path starts with '/' or './')" if isinstance(value, str) else ""
        raise TypeError(f"{what} must be an int, not {type(value).__name__}{hint}")
    low = 0 if zero_ok else 1
    if not low <= value <= 65535:
        raise ValueError(
            f"{what} must be between {low} and 65535, not {value}"
            + (" (0 picks a free port)" if zero_ok else "")
        )
    return value


def parse_target(target: Any) -> Tuple[str, int]:
    """``"host:port"``, ``"[v6addr]:port"`` or ``(host, port)`` -> ``(host, port)``."""
    if isinstance(target, tuple) and len(target) == 2 and isinstance(target[0], str):
        host, port = target
        if not host:
            raise ValueError("the tunnel's target has an empty host name")
        return host, _port(port, "the target's port", False)
    if not isinstance(target, str):
        raise TypeError(f"target must be 'host:port' or (host, port), not {type(target).__name__}")
    text = target.strip()
    hint = "give it as 'host:port', e.g. 'db.internal:5432' ('[::1]:5432' for an IPv6 address)"
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or not text[end + 1 :].startswith(":"):
            raise ValueError(f"target {target!r} has no port: {hint}")
        host, port_text = text[1:end], text[end + 2 :]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise ValueError(f"target {target!r} has no port: {hint}")
        if ":" in host:
            raise ValueError(
                f"target {target!r}: put an IPv6 address in brackets: '[{host}]:{port_text}'"
            )
    if not host:
        raise ValueError(f"target {target!r} has no host: {hint}")
    if not port_text.isdigit():
        raise ValueError(f"target {target!r}: the port {port_text!r} is not a number: {hint}")
    return host, _port(int(port_text), "the target's port", False)


def unix_path(value: Any, what: str, local: bool) -> Optional[str]:
    """A Unix socket's path when `value` names one (an os.PathLike, or a str
    starting with "/" or "./"), checked; None when it is a port or host:port."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
        if not isinstance(value, str):
            raise TypeError(f"{what}: give the socket's path as a str, not bytes")
    elif not (isinstance(value, str) and value.startswith(("/", "./"))):
        return None
    if "\0" in value:
        raise ValueError(f"{what} {value!r} contains a NUL byte")
    if sys.platform == "win32" or not hasattr(socket, "AF_UNIX"):
        raise NotImplementedError(
            f"{what} {value!r}: Unix-domain socket forwarding is not supported on this system"
        )
    size = len(os.fsencode(value))
    if local and size >= _SUN_PATH:
        raise ValueError(
            f"{what} {value!r} is {size} bytes: a socket's path must be under {_SUN_PATH}"
        )
    if not local and size >= 4096:
        raise ValueError(f"{what} {value!r} is too long ({size} bytes)")
    return value


def unix_listen_socket(path: str, unlink: bool) -> Tuple[socket.socket, Tuple[int, int]]:
    """A non-blocking listening AF_UNIX socket at `path`, mode 0600, and its
    (st_dev, st_ino), by which close() knows the file is still its own. A stale
    socket there is replaced only with `unlink`; any other file never is."""
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise FileNotFoundError(
            errno.ENOENT, f"cannot listen on {path}: the directory {parent} does not exist"
        )
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    if st is not None and not stat.S_ISSOCK(st.st_mode):
        raise FileExistsError(
            errno.EEXIST, f"cannot listen on {path}: it exists and is not a socket (not removed)"
        )
    if st is not None and not unlink:
        raise FileExistsError(
            errno.EEXIST,
            f"cannot listen on {path}: a socket exists there: pass unlink=True (or set "
            "StreamLocalBindUnlink yes in the ssh config, -o for pyssh's command line) "
            "to replace a stale one",
        )
    if st is not None:
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        try:
            # before listen(): until then a connect() is refused, so no one gets
            # in while the mode is the umask's (a umask would be process-wide)
            os.chmod(path, 0o600)
            st = os.lstat(path)
            sock.listen(128)
        except BaseException:
            os.unlink(path)
            raise
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock, (st.st_dev, st.st_ino)


def unix_remove(path: str, ident: Tuple[int, int]) -> None:
    """Remove the tunnel's socket file, unless something else is there now."""
    try:
        st = os.lstat(path)
        if (st.st_dev, st.st_ino) == ident and stat.S_ISSOCK(st.st_mode):
            os.unlink(path)
    except OSError:
        pass


def listen_socket(bind: str, port: int) -> socket.socket:
    """A non-blocking listening socket on bind:port. A port in use raises OSError
    (EADDRINUSE) with a message that says what to do."""
    if not isinstance(bind, str):
        raise TypeError(
            f"bind must be an address string such as '127.0.0.1', not {type(bind).__name__}"
        )
    if not bind:
        raise ValueError(
            "bind must be an address such as '127.0.0.1' ('0.0.0.0' listens on every interface)"
        )
    _port(port, "port", True)
    try:
        infos = socket.getaddrinfo(bind, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise OSError(
            errno.EADDRNOTAVAIL,
            f"cannot listen on {bind!r}: {e.strerror}; give a local address such as '127.0.0.1'",
        ) from None
    family, kind, proto, _, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        if sys.platform == "win32":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_EXCLUSIVEADDRUSE, 1)
        else:
            # lets a restarted tunnel reuse its port at once (TIME_WAIT); a port
            # another socket listens on is still refused
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(addr)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise OSError(
                    errno.EADDRINUSE,
                    f"cannot listen on {bind}:{port}: the port is already in use; "
                    "pick another port, or port=0 for a free one",
                ) from None
            if e.errno == errno.EADDRNOTAVAIL:
                raise OSError(
                    e.errno,
                    f"cannot listen on {bind}:{port}: {bind} is not an address of this machine",
                ) from None
            raise
        sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def run_blocking(
    session: Any,
    port: Any,
    target: Any,
    bind: str,
    max_connections: Optional[int],
    timeout: Optional[float],
    unlink: bool = False,
) -> TunnelStats:
    """Session.tunnel: serve in this thread until Ctrl-C, max_connections or timeout.
    `port` and `target` may be Unix sockets' paths, as forward_local's (`unlink`
    too)."""
    host, tport, shown_target = _target(target, False)
    lpath = unix_path(port, "the local socket", True)
    if max_connections is not None:
        if isinstance(max_connections, bool) or not isinstance(max_connections, int):
            raise TypeError("max_connections must be an int or None")
        if max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, not {max_connections}")
    idle = check_timeout(timeout)
    check_open(session)
    ident: Optional[Tuple[int, int]] = None
    if lpath is not None:
        sock, ident = unix_listen_socket(lpath, unlink)
    else:
        sock = listen_socket(bind, port)
    c = _ssh.Tunnel(session)
    try:
        c.listen_local(sock.fileno(), host, tport, tport == 0)
        shown = lpath if lpath is not None else f"{bind}:{sock.getsockname()[1]}"
        log.info("tunnel: listening on %s, to %s through %s", shown, shown_target, session.host)
        return _stats(c.run(max_connections=max_connections, idle_timeout=idle))
    finally:
        sock.close()
        c.close()
        if lpath is not None and ident is not None:
            unix_remove(lpath, ident)


_running: weakref.WeakSet[Tunnel] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    """At exit, tunnels still open are closed: their connections end cleanly and
    the server stops listening for remote forwards (a daemon thread would
    otherwise be cut off wherever it is)."""
    for t in list(_running):
        try:
            t.close(timeout=1.0)
        except Exception:  # noqa: BLE001 - nothing to do about it at exit
            pass


class Tunnel:
    """A tunnel running in the background, made by :meth:`Session.forward_local`,
    :meth:`Session.forward_remote` or :meth:`Session.forward_dynamic`. A context
    manager: the end of the ``with`` block closes it.

    ``port``: where it listens (for a local forward, the local port, also when
    asked for port 0; for a remote forward, the server's port). ``target``: where
    connections go. ``stats``: a :class:`TunnelStats`. ``error``: the exception
    that ended it (the session failed or was closed), or None. ``close()`` stops
    it: the listening socket and every connection are closed.
    """

    def __init__(
        self,
        session: Any,
        registry: Set[Tunnel],
        c: Any,
        sock: Optional[socket.socket],
        kind: str,
        port: int,
        target: str,
        listen: str,
        unix: Optional[Tuple[str, Tuple[int, int]]] = None,
    ) -> None:
        self._session = session
        self._registry = registry  # the session's open tunnels, which its close() closes
        self._c = c
        self._sock = sock
        self.kind = kind
        self.port = port
        self.target = target
        self.listen = listen
        self._unix = unix  # a local socket's path and identity, removed at close
        self.error: Optional[BaseException] = None
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(
            target=self._serve, daemon=True, name=f"pyssh-tunnel-{kind}-{port}"
        )
        self._thread.start()
        _running.add(self)

    def _serve(self) -> None:
        try:
            self._c.run()
        except BaseException as e:  # noqa: BLE001 - kept for the owner, and logged
            self.error = e
            log.error("tunnel %s -> %s ended: %s", self.listen, self.target, e)
            self._release()

    def _release(self) -> None:
        if self._sock is not None:
            self._sock.close()
        unix, self._unix = self._unix, None
        if unix is not None:
            unix_remove(*unix)

    @property
    def stats(self) -> TunnelStats:
        """The counters so far: connections served, bytes each way, failures, open."""
        return _stats(self._c.stats)

    @property
    def active(self) -> bool:
        """True while the tunnel serves connections."""
        return self._thread.is_alive()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the tunnel: close the listening socket and every connection (and for
        a remote forward, ask the server to stop listening, waiting at most
        ``timeout`` seconds). Calling it again does nothing."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._c.stop()
        if threading.current_thread() is not self._thread:
            self._thread.join()
        self._release()
        self._c.close(timeout=timeout)
        self._registry.discard(self)
        _running.discard(self)

    def __enter__(self) -> Tunnel:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.active else ("failed" if self.error else "closed")
        return f"<pyssh.Tunnel {self.kind} {self.listen} -> {self.target}, {state}>"


def _target(target: Any, local: bool) -> Tuple[str, int, str]:
    """(host, port, shown) of a target, or (path, 0, path) of a Unix socket's."""
    path = unix_path(target, "the target", local)
    if path is not None:
        return path, 0, path
    host, tport = parse_target(target)
    return host, tport, f"{host}:{tport}"


@dataclass
class Setup:
    """A forward set up, not yet served: its C tunnel, its local listening socket
    (None for a remote forward), and what it says about itself. The blocking
    :class:`Tunnel` serves it in a thread; ``pyssh.aio``'s ``AsyncTunnel`` in the
    event loop."""

    c: Any
    sock: Optional[socket.socket]
    kind: str
    port: int
    target: str
    listen: str
    unix: Optional[Tuple[str, Tuple[int, int]]] = None  # a local socket: path, identity

    def start(self, session: Any, registry: Set[Tunnel]) -> Tunnel:
        t = Tunnel(
            session,
            registry,
            self.c,
            self.sock,
            self.kind,
            self.port,
            self.target,
            self.listen,
            self.unix,
        )
        registry.add(t)
        return t


def local_setup(session: Any, port: Any, target: Any, bind: str, unlink: bool) -> Setup:
    """forward_local's checks, listening socket and C tunnel (nothing waits)."""
    host, tport, shown_target = _target(target, False)
    lpath = unix_path(port, "the local socket", True)
    check_open(session)
    ident: Optional[Tuple[int, int]] = None
    if lpath is not None:
        sock, ident = unix_listen_socket(lpath, unlink)
    else:
        sock = listen_socket(bind, port)
    try:
        c = _ssh.Tunnel(session)
        c.listen_local(sock.fileno(), host, tport, tport == 0)
    except BaseException:
        sock.close()
        if lpath is not None and ident is not None:
            unix_remove(lpath, ident)
        raise
    if lpath is not None and ident is not None:
        return Setup(c, sock, "local", 0, shown_target, lpath, (lpath, ident))
    bound = sock.getsockname()[1]
    shown = f"[{bind}]" if ":" in bind else bind
    return Setup(c, sock, "local", bound, shown_target, f"{shown}:{bound}")


def forward_local(
    session: Any, port: Any, target: Any, bind: str, registry: Set[Tunnel], unlink: bool = False
) -> Tunnel:
    return local_setup(session, port, target, bind, unlink).start(session, registry)


# how long a SOCKS client may take to send its request before it is closed (read at
# each forward_dynamic: tests make it short)
SOCKS_HANDSHAKE_TIMEOUT = 30.0


def dynamic_setup(session: Any, port: int, bind: str) -> Setup:
    """forward_dynamic's listening socket and C tunnel (nothing waits)."""
    check_open(session)
    sock = listen_socket(bind, port)
    c = _ssh.Tunnel(session)
    try:
        c.listen_dynamic(sock.fileno(), SOCKS_HANDSHAKE_TIMEOUT)
    except BaseException:
        sock.close()
        raise
    bound = sock.getsockname()[1]
    shown = f"[{bind}]" if ":" in bind else bind
    if not ipaddress.ip_address(sock.getsockname()[0].split("%")[0]).is_loopback:
        log.warning(
            "the SOCKS proxy listens on %s:%d, not on a loopback address: anyone who can "
            "reach it can use this SSH session to reach anything %s can",
            shown,
            bound,
            session.host,
        )
    return Setup(c, sock, "dynamic", bound, "SOCKS", f"{shown}:{bound}")


def forward_dynamic(session: Any, port: int, bind: str, registry: Set[Tunnel]) -> Tunnel:
    """Session.forward_dynamic: a SOCKS 4/4a/5 proxy on bind:port whose connections go
    out through the server (ssh -D)."""
    return dynamic_setup(session, port, bind).start(session, registry)


def remote_steps(
    session: Any, remote_port: Any, target: Any, bind_address: str, timeout: Optional[float]
) -> Steps[Setup]:
    """forward_remote's checks and request to the server, as a flow (the request
    to listen is an Op)."""
    host, tport, shown_target = _target(target, True)
    rpath = unix_path(remote_port, "the server's socket", False)
    if rpath is None:
        _port(remote_port, "remote_port", True)
    if not isinstance(bind_address, str):
        raise TypeError(
            "bind_address must be a str: 'localhost' (the server's loopback), "
            "'' or '0.0.0.0' (every interface, if the server's GatewayPorts allows)"
        )
    wait = check_timeout(timeout)
    check_open(session)
    c = _ssh.Tunnel(session)
    wait_s = 30.0 if wait is None else wait
    if rpath is not None:
        bound = yield c.listen_remote_unix(rpath, host, tport, wait_s, defer=True)
        return Setup(c, None, "remote", bound, shown_target, f"{rpath} (on the server)")
    bound = yield c.listen_remote(bind_address, remote_port, host, tport, wait_s, defer=True)
    shown = f"[{bind_address}]" if ":" in bind_address else (bind_address or "*")
    return Setup(c, None, "remote", bound, shown_target, f"{shown}:{bound} (on the server)")


def forward_remote(
    session: Any,
    remote_port: Any,
    target: Any,
    bind_address: str,
    timeout: Optional[float],
    registry: Set[Tunnel],
) -> Tunnel:
    setup = run_steps(remote_steps(session, remote_port, target, bind_address, timeout))
    return setup.start(session, registry)


# ---- agent forwarding (ssh -A) -------------------------------------------------------


def _agent_platform() -> None:
    if sys.platform == "win32":
        raise _ssh.SSHError(
            "agent forwarding is not supported on Windows: its OpenSSH agent listens on "
            "a named pipe, which pyssh does not reach"
        )


def _agent_env(name: str, what: str) -> str:
    path = os.environ.get(name)
    if not path:
        raise _ssh.SSHError(
            f"{what}, but {name} is unset: there is no agent to forward "
            "(start one with `eval $(ssh-agent)`, or give the path of its socket)"
        )
    return path


def agent_argument(forward_agent: Any) -> Union[str, bool, None]:
    """connect's forward_agent checked, before any network: the agent socket's path,
    False (no forwarding) or None (the config decides). True, or ``"$NAME"``, with
    the variable unset raises SSHError."""
    if forward_agent is None or forward_agent is False:
        return forward_agent
    _agent_platform()
    if forward_agent is True:
        return _agent_env("SSH_AUTH_SOCK", "forward_agent=True")
    if not isinstance(forward_agent, (str, os.PathLike)):
        raise TypeError(
            "forward_agent must be True, False, None or the path of an agent socket, "
            f"not {type(forward_agent).__name__}"
        )
    text = os.fspath(forward_agent)
    if not isinstance(text, str) or not text:
        raise ValueError(f"forward_agent must be a non-empty str path, not {forward_agent!r}")
    if text.startswith("$"):
        return _agent_env(text[1:], f"forward_agent={text!r}")
    return os.path.expanduser(text)


def agent_from_config(value: Optional[str]) -> Optional[str]:
    """ssh_config's ForwardAgent (yes, no, a path, or ``$NAME``): the agent socket's
    path, or None. A config that wants an agent where there is none is warned about,
    not an error: OpenSSH connects all the same."""
    if value is None or value.lower() in ("no", "false", "none"):
        return None
    try:
        _agent_platform()
        if value.lower() in ("yes", "true"):
            return _agent_env("SSH_AUTH_SOCK", "ForwardAgent yes (ssh_config)")
        if value.startswith("$"):
            return _agent_env(value[1:], f"ForwardAgent {value} (ssh_config)")
    except _ssh.SSHError as e:
        log.warning("the agent is not forwarded: %s", e)
        return None
    return os.path.expanduser(value)


def forward_agent(session: Any, path: str, registry: Set[Tunnel]) -> Tunnel:
    """Forward the agent at `path` on the session: a background tunnel takes the
    agent channels the server opens and connects each to `path` (only then)."""
    c = _ssh.Tunnel(session)
    c.listen_agent(path)
    t = Tunnel(session, registry, c, None, "agent", 0, path, "the server's agent channels")
    registry.add(t)
    log.debug("forwarding the agent at %s to %s", path, session.host)
    return t
