"""Tunnels in the event loop: ``pyssh.aio``'s ``AsyncSession.forward_local``,
``forward_remote`` and ``forward_dynamic`` return an :class:`AsyncTunnel`.

The forward is set up by the blocking API's own code (pyssh/_tunnel.py: the checks,
the local listening socket, the request to the server as an Op), and served by the
same C loop as the blocking background tunnel, but stepped by the event loop: the C
tunnel's ``run(defer=True)`` is an ``_ssh.Op`` whose ``step()`` moves what every
connection can move (about 4 ms at most) and reports every socket it waits for (the
session's, the listening socket, each connection's); a task drives it through
``pyssh.aio._drive``, woken by those sockets and by the session's bell (another
operation's step on the session read packets that may be the tunnel's). No thread.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable, Optional

from . import _ssh
from ._tunnel import Setup, TunnelStats, unix_remove

log = logging.getLogger("pyssh")

Drive = Callable[[_ssh.Op], Awaitable[Any]]


class AsyncTunnel:
    """A tunnel served by the event loop, made by ``AsyncSession.forward_local``,
    ``forward_remote`` or ``forward_dynamic``: the blocking :class:`pyssh.Tunnel`'s
    counterpart. ``async with`` closes it.

    ``port``: where it listens (the local port, also when asked for port 0; for a
    remote forward, the server's port). ``target``: where connections go. ``stats``:
    a :class:`TunnelStats`. ``error``: the exception that ended it (the session failed
    or was closed), or None. ``await close()`` stops it: the listening socket and
    every connection are closed (and the server stops listening, for a remote
    forward). ``await wait_closed()`` waits until it stops serving, for whatever
    reason. Cancelling its task (``.task``) closes every connection at once, as
    Ctrl-C does to the blocking ``Session.tunnel``.
    """

    def __init__(self, setup: Setup, drive: Drive) -> None:
        self._setup = setup
        self._c = setup.c
        self.kind = setup.kind
        self.port = setup.port
        self.target = setup.target
        self.listen = setup.listen
        self.error: Optional[BaseException] = None
        self._drive = drive
        self._closing: Optional[asyncio.Future[None]] = None
        self._final: Optional[TunnelStats] = None
        try:
            self._op = self._c.run(defer=True)
        except BaseException:  # (the session closed meanwhile)
            self._release()
            raise
        self.task: asyncio.Task[None] = asyncio.get_running_loop().create_task(
            self._serve(), name=f"pyssh-tunnel-{self.kind}-{self.port}"
        )

    async def _serve(self) -> None:
        try:
            self._final = TunnelStats(*await self._drive(self._op))
        except asyncio.CancelledError:
            raise  # (its connections are closed: Op.cancel())
        except BaseException as e:  # noqa: BLE001 - kept for the owner, and logged
            self.error = e
            log.error("tunnel %s -> %s ended: %s", self.listen, self.target, e)
        finally:
            self._release()

    def _release(self) -> None:
        """No more connections are taken: the listening socket goes (a local Unix
        socket's file too)."""
        setup = self._setup
        if setup.sock is not None:
            setup.sock.close()
        unix, setup.unix = setup.unix, None
        if unix is not None:
            unix_remove(*unix)

    @property
    def stats(self) -> TunnelStats:
        """The counters so far: connections served, bytes each way, failures, open."""
        if self._final is not None:
            return self._final
        return TunnelStats(*self._c.stats)

    @property
    def active(self) -> bool:
        """True while the tunnel serves connections."""
        return not self.task.done()

    async def close(self, timeout: float = 5.0) -> None:
        """Stop the tunnel: close the listening socket and every connection (and for
        a remote forward, ask the server to stop listening, waiting at most
        ``timeout`` seconds for its answer). Calling it again waits for the first
        call's end."""
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close(timeout))
        await asyncio.shield(self._closing)

    async def _close(self, timeout: float) -> None:
        self._c.stop()  # the serving task's next step ends its run
        try:
            await asyncio.wait([self.task])
        finally:
            self._op.cancel()  # (a task cancelled before its first step never ran it)
            self._release()
        op = self._c.close(timeout, defer=True)
        if op is not None:
            try:
                await self._drive(op)
            except _ssh.SSHError:
                pass  # the connection is gone or slow: the forward ends with the session

    async def wait_closed(self) -> None:
        """Until the tunnel stops serving: closed, its task cancelled, or its session
        failed or closed (then ``error`` says why)."""
        await asyncio.wait([self.task])

    async def __aenter__(self) -> AsyncTunnel:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    def __repr__(self) -> str:
        state = "running" if self.active else ("failed" if self.error else "closed")
        return f"<pyssh.aio.AsyncTunnel {self.kind} {self.listen} -> {self.target}, {state}>"
