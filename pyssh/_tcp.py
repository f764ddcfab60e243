"""The TCP connection, and the steps of connecting.

connect() is written once, as generators (``Steps``) that yield what they would
wait for: an ``_ssh.Op`` (a Session method called with ``defer=True``) or a request
of this module's (``TCPConnect``). ``run_steps`` runs them here, waiting for each in
turn as the blocking API always did; pyssh.Group's workers (``_group``) run many at
once, moving their Ops from one poll() per thread (``_ssh.Driver``).
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import threading
import time
from typing import Any, Callable, Dict, Generator, List, Optional, TypeVar

from . import _ssh
from .errors import ConnectError, SSHTimeoutError

_IN_PROGRESS = {errno.EINPROGRESS, errno.EWOULDBLOCK}  # a non-blocking connect() under way

T = TypeVar("T")
Steps = Generator[Any, Any, T]
"""A flow that yields what it waits for and is sent (or thrown) the outcome."""


class Deadline:
    def __init__(self, timeout: Optional[float]):
        self.timeout = timeout
        self.end = None if timeout is None else time.monotonic() + timeout

    def left(self) -> Optional[float]:
        if self.end is None:
            return None
        return max(0.0, self.end - time.monotonic())

    def expired(self) -> bool:
        return self.end is not None and time.monotonic() >= self.end


def resolve_now(host: str, port: int) -> Optional[List[Any]]:
    """getaddrinfo for an address (it does not block), None for a name."""
    try:
        ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return None
    return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)


def resolve(host: str, port: int, deadline: Deadline, target: str) -> List[Any]:
    """getaddrinfo in a helper thread, so that Ctrl-C and the timeout still work
    while a slow resolver is busy (getaddrinfo itself cannot be interrupted)."""
    infos = resolve_now(host, port)
    if infos is not None:
        return infos
    box: Dict[str, Any] = {}
    done = threading.Event()

    def work() -> None:
        try:
            box["result"] = getaddrinfo(host, port, target)
        except BaseException as e:  # handed to the caller
            box["error"] = e
        finally:
            done.set()

    threading.Thread(target=work, name="pyssh-resolve", daemon=True).start()
    while not done.wait(0.1 if deadline.left() is None else min(0.1, deadline.left() or 0.0)):
        if deadline.expired():
            raise resolve_timeout(host, deadline, target)
    if "error" in box:
        raise box["error"]
    found: List[Any] = box["result"]
    return found


def getaddrinfo(host: str, port: int, target: str) -> List[Any]:
    """getaddrinfo (it blocks), its failure a ConnectError."""
    try:
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as e:
        raise ConnectError(
            f"connecting to {target}: cannot resolve host name {host!r}: {e.strerror or e}"
        ) from e


def resolve_timeout(host: str, deadline: Deadline, target: str) -> SSHTimeoutError:
    return SSHTimeoutError(
        f"connecting to {target}: resolving {host!r} timed out after {deadline.timeout:g} seconds"
    )


def tcp_connect(host: str, port: int, deadline: Deadline, target: str) -> socket.socket:
    infos = resolve(host, port, deadline, target)
    last: Optional[OSError] = None
    for family, kind, proto, _, addr in infos:
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(deadline.left())
            sock.connect(addr)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock
        except socket.timeout:
            sock.close()
            raise SSHTimeoutError(
                f"connecting to {target}: the TCP connection timed out after "
                f"{deadline.timeout:g} seconds"
            ) from None
        except OSError as e:
            sock.close()
            last = e
        except BaseException:
            sock.close()
            raise
    raise connect_failure(last, target)


def connect_failure(last: Optional[OSError], target: str) -> ConnectError:
    """Every address refused (or failed): the last one's error."""
    if last is None:
        return ConnectError(f"connecting to {target}: the host name has no address")
    hint = (
        " (is an SSH server listening there?)" if isinstance(last, ConnectionRefusedError) else ""
    )
    e = ConnectError(last.errno, f"connecting to {target}: {last.strerror or last}{hint}")
    e.__cause__ = last
    return e


class TCPConnect:
    """The request of a flow for a TCP connection (a connected socket)."""

    def __init__(self, host: str, port: int, deadline: Deadline, target: str):
        self.host, self.port, self.deadline, self.target = host, port, deadline, target

    def blocking(self) -> socket.socket:
        return tcp_connect(self.host, self.port, self.deadline, self.target)


def run_steps(steps: Steps[T]) -> T:
    """Run a flow here: wait for each Op (Op.wait) or request (its .blocking()) in
    turn. What it waited for raises where it was yielded."""
    value: Any = None
    error: Optional[BaseException] = None
    while True:
        try:
            item = steps.throw(error) if error is not None else steps.send(value)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        value, error = None, None
        try:
            value = item.wait() if isinstance(item, _ssh.Op) else item.blocking()
        except BaseException as e:  # handed to the flow, where it was waiting
            error = e


class Call:
    """A flow's request to run `fn` on a thread pool (`pool` names it: "resolve");
    past the `deadline` (if any) the flow gets `late` instead."""

    def __init__(
        self,
        pool: str,
        fn: Callable[[], Any],
        deadline: Optional[Deadline] = None,
        late: Optional[BaseException] = None,
    ):
        self.pool, self.fn, self.deadline, self.late = pool, fn, deadline, late


def tcp_steps(req: TCPConnect) -> Steps[socket.socket]:
    """TCPConnect without blocking (a Group's workers, pyssh.aio): resolve (a pool
    thread, unless an address), then a non-blocking connect() whose completion is
    an Op (wait_socket)."""
    infos = resolve_now(req.host, req.port)
    if infos is None:
        late = (
            resolve_timeout(req.host, req.deadline, req.target)
            if req.deadline.timeout is not None
            else None  # (no deadline: never late)
        )
        infos = yield Call(
            "resolve", lambda: getaddrinfo(req.host, req.port, req.target), req.deadline, late
        )
    last: Optional[OSError] = None
    for family, kind, proto, _, addr in infos:
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            err = sock.connect_ex(addr)
            if err in _IN_PROGRESS:
                what = f"connecting to {req.target}: the TCP connection"
                yield _ssh.wait_socket(
                    sock.fileno(), _ssh.POLLOUT, timeout=req.deadline.left(), what=what
                )
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err == 0:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                return sock
            sock.close()
            last = OSError(err, os.strerror(err))
        except BaseException:
            sock.close()
            raise
    raise connect_failure(last, req.target)
