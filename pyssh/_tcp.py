"""The TCP connection, and the steps of connecting.

connect() is written once, as generators (``Steps``) that yield what they would
wait for: an ``_ssh.Op`` (a Session method called with ``defer=True``) or a request
of this module's (``TCPConnect``). ``run_steps`` runs them here, waiting for each in
turn as the blocking API always did; pyssh.Group's workers (``_group``) run many at
once, moving their Ops from one poll() per thread (``_ssh.Driver``).
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from typing import Any, Dict, Generator, List, Optional, TypeVar

from . import _ssh
from .errors import ConnectError, SSHTimeoutError

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


def resolve(host: str, port: int, deadline: Deadline, target: str) -> List[Any]:
    """getaddrinfo in a helper thread, so that Ctrl-C and the timeout still work
    while a slow resolver is busy (getaddrinfo itself cannot be interrupted)."""
    try:
        ipaddress.ip_address(host.split("%")[0])
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except ValueError:
        pass
    box: Dict[str, Any] = {}
    done = threading.Event()

    def work() -> None:
        try:
            box["result"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except BaseException as e:  # handed to the caller
            box["error"] = e
        finally:
            done.set()

    threading.Thread(target=work, name="pyssh-resolve", daemon=True).start()
    while not done.wait(0.1 if deadline.left() is None else min(0.1, deadline.left() or 0.0)):
        if deadline.expired():
            raise SSHTimeoutError(
                f"connecting to {target}: resolving {host!r} timed out after "
                f"{deadline.timeout:g} seconds"
            )
    if "error" in box:
        e = box["error"]
        raise ConnectError(
            f"connecting to {target}: cannot resolve host name {host!r}: "
            f"{getattr(e, 'strerror', None) or e}"
        ) from e
    infos: List[Any] = box["result"]
    return infos


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
    assert last is not None
    hint = (
        " (is an SSH server listening there?)" if isinstance(last, ConnectionRefusedError) else ""
    )
    raise ConnectError(
        last.errno, f"connecting to {target}: {last.strerror or last}{hint}"
    ) from last


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
