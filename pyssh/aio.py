"""pyssh for asyncio: ``await pyssh.aio.connect(...)``, then the session's commands and
SFTP transfers as coroutines, run by the event loop itself (no thread per operation).

Native, not threads: pyssh's blocking API is written once as flows (generators that
yield what they would wait for, pyssh/_tcp.py), and this module runs those same flows
in the loop. Each ``_ssh.Op`` a flow yields is stepped by ``Op.step()`` (libssh
non-blocking, the GIL released) when the loop says its socket is ready
(``add_reader``/``add_writer``), at its deadline, or when another operation's step
on the same session read packets that may be its own (the session's wake-up socket
pair, ``Op.attach``). A step that moves a channel's data returns after about 4 ms, so
a big transfer never holds the loop for long. Connecting, authentication, host key
checks and transfers are the blocking API's own code, with its checks and errors.

Cancelling a task (``task.cancel()``, ``asyncio.timeout``) gives up its operation at
once: the operation's claim goes (``Op.cancel()``), then the flow unwinds where it
waited, as it would for Ctrl-C in the blocking API: a command's channel is closed, a
download's temporary file removed (never a partial file under its final name), and
the session stays usable. Like pyssh.Group, pyssh.aio never asks on the terminal:
passwords and passphrases come from the arguments.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import inspect
import socket
import threading
import weakref
from typing import Any, Awaitable, Callable, Deque, Dict, List, Mapping, Optional, Set, Tuple

from . import _exec, _scp, _ssh, _tunnel, _util, session as _session
from ._aiotunnel import AsyncTunnel
from ._exec import ExecResult
from ._tcp import Call, Steps, TCPConnect, tcp_steps
from .errors import SessionClosedError

__all__ = [
    "AsyncSFTP",
    "AsyncSFTPFile",
    "AsyncSession",
    "AsyncTunnel",
    "UnsupportedLoopError",
    "connect",
]


class UnsupportedLoopError(NotImplementedError):
    """The running event loop cannot watch sockets (``add_reader``/``add_writer``
    raise NotImplementedError), which pyssh.aio needs: Windows' default
    ``ProactorEventLoop`` is such a loop. Run pyssh.aio in a selector loop instead:
    ``asyncio.set_event_loop_policy(asyncio.WindowsSelectorEventLoopPolicy())`` before
    ``asyncio.run()``, or ``asyncio.Runner(loop_factory=asyncio.SelectorEventLoop)``."""


def _watch_fd(add: Callable[..., Any], fd: int, *args: Any) -> None:
    """``loop.add_reader``/``add_writer``, refused clearly by a loop without them."""
    try:
        add(fd, *args)
    except NotImplementedError:
        loop = getattr(add, "__self__", None)
        raise UnsupportedLoopError(
            f"pyssh.aio needs an event loop that watches sockets (add_reader/add_writer),"
            f" and {type(loop).__name__} does not (Windows' proactor loop): use a selector"
            " loop, asyncio.set_event_loop_policy(asyncio.WindowsSelectorEventLoopPolicy())"
            " or asyncio.Runner(loop_factory=asyncio.SelectorEventLoop)"
        ) from None


class _Watch:
    """One loop's watches of file descriptors: the sessions' sockets are shared by
    their operations, and asyncio takes one reader (and one writer) per fd, so each
    fd's waiters are woken together by one callback."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.readers: Dict[int, Set[asyncio.Future[None]]] = {}
        self.writers: Dict[int, Set[asyncio.Future[None]]] = {}

    def add(self, fd: int, events: int, fut: asyncio.Future[None]) -> None:
        if events & _ssh.POLLIN:
            self._add(self.readers, fd, fut, self.loop.add_reader)
        if events & _ssh.POLLOUT:
            self._add(self.writers, fd, fut, self.loop.add_writer)

    def _add(
        self, table: Dict[int, Set[asyncio.Future[None]]], fd: int, fut: Any, add: Any
    ) -> None:
        waiters = table.get(fd)
        if waiters is None:
            _watch_fd(add, fd, self._fire, table, fd)
            waiters = table[fd] = set()
        waiters.add(fut)

    def _fire(self, table: Dict[int, Set[asyncio.Future[None]]], fd: int) -> None:
        for fut in table.pop(fd, ()):
            if not fut.done():
                fut.set_result(None)
        self._remove(table, fd)

    def _remove(self, table: Dict[int, Set[asyncio.Future[None]]], fd: int) -> None:
        if table is self.readers:
            self.loop.remove_reader(fd)
        else:
            self.loop.remove_writer(fd)

    def drop(self, fd: int, fut: asyncio.Future[None]) -> None:
        """`fut` waits no more (woken otherwise, or cancelled)."""
        for table in (self.readers, self.writers):
            waiters = table.get(fd)
            if waiters is not None and fut in waiters:
                waiters.discard(fut)
                if not waiters:
                    del table[fd]
                    self._remove(table, fd)

    def forget(self, fds: Set[int]) -> None:
        """A session closes: its sockets leave the loop before they are closed (an
        fd closed while the loop watches it may come back as another socket), and
        their waiters step once more (their session closed: SessionClosedError)."""
        for fd in fds:
            for table in (self.readers, self.writers):
                waiters = table.pop(fd, None)
                if waiters is not None:
                    self._remove(table, fd)
                    for fut in waiters:
                        _wake(fut)


# The longest wait in the loop between two steps of an operation with no deadline
# nearer. The blocking waits step again at least every slice (wait.c: 100 ms in the
# main thread, 5 s in others), so a wake-up that never came costs that slice; in the
# loop it would cost for ever (seen once, 1000 commands over 10 sessions under
# AddressSanitizer's slower steps: the ops waited on an idle socket, epoll with no
# timeout). One step a second per waiting operation is its price (tens of microseconds).
RESTEP_SECONDS = 1.0


def _in_loop(loop: asyncio.AbstractEventLoop, fn: Callable[[], None]) -> None:
    """Call fn in `loop`'s thread (now, when that is this thread or the loop is not
    running), waiting for it up to 5 s: a loop's watches are its own thread's."""
    if loop.is_closed():
        return
    try:
        here = asyncio.get_running_loop() is loop
    except RuntimeError:
        here = False
    if here or not loop.is_running():
        fn()
        return
    done = threading.Event()

    def call() -> None:
        try:
            fn()
        finally:
            done.set()

    loop.call_soon_threadsafe(call)
    done.wait(5)  # (a loop held that long: its watches are left to the closed fd)


def _forget(loop: asyncio.AbstractEventLoop, fds: Dict[int, int]) -> None:
    _watch(loop).forget(set(fds))  # (in the loop's thread: what its waits hold now)


_WATCHES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Watch] = weakref.WeakKeyDictionary()


def _watch(loop: asyncio.AbstractEventLoop) -> _Watch:
    w = _WATCHES.get(loop)
    if w is None:
        _probe(loop)
        w = _WATCHES[loop] = _Watch(loop)
    return w


def _probe(loop: asyncio.AbstractEventLoop) -> None:
    """A loop that cannot watch sockets is refused at its first operation, before
    any network work (UnsupportedLoopError)."""
    a, b = socket.socketpair()
    try:
        _watch_fd(loop.add_reader, a.fileno(), _nothing)
        loop.remove_reader(a.fileno())
    finally:
        a.close()
        b.close()


def _nothing() -> None:
    pass


class _Ring:
    """One loop's wake-up socket pair for a session's operations."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.rd, self.wr = socket.socketpair()
        self.rd.setblocking(False)
        self.wr.setblocking(False)
        self.waiting: Set[asyncio.Future[None]] = set()
        try:
            _watch_fd(loop.add_reader, self.rd.fileno(), self._rung)
        except BaseException:
            self.rd.close()
            self.wr.close()
            raise

    def _rung(self) -> None:
        try:
            while self.rd.recv(256):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        waiting, self.waiting = self.waiting, set()
        for fut in waiting:
            if not fut.done():
                fut.set_result(None)

    def close(self) -> None:
        """In its loop's thread: the waiting operations step once more (their session
        is closed: SessionClosedError), then the pair goes."""
        loop = self.loop
        if not loop.is_closed():
            try:
                here = asyncio.get_running_loop() is loop
            except RuntimeError:
                here = False
            if not here and loop.is_running():
                loop.call_soon_threadsafe(self.close)  # another thread's loop
                return
            loop.remove_reader(self.rd.fileno())
            self._rung()
        self.rd.close()
        self.wr.close()


class _Bell:
    """A session's wake-up socket pairs, one per event loop that runs its operations:
    an operation's step that read packets rings the session's other waiting
    operations (Op.attach), each through its own loop's pair; that loop wakes them."""

    def __init__(self) -> None:
        self.rings: Dict[asyncio.AbstractEventLoop, _Ring] = {}
        self.closed = False
        self.closing = False  # no new watches of its sockets
        self.fds: Dict[int, int] = {}  # the sockets its operations wait for now: how many

    def ring(self) -> _Ring:
        """The running loop's pair (made at its first operation)."""
        loop = asyncio.get_running_loop()
        r = self.rings.get(loop)
        if r is None:
            if self.closed:  # (a pair made now would never be closed)
                raise SessionClosedError("the session was closed")
            for old in [lp for lp in self.rings if lp.is_closed()]:
                self.rings.pop(old).close()
            r = self.rings[loop] = _Ring(loop)
        return r

    def attach(self, op: _ssh.Op) -> None:
        r = self.ring()
        op.attach(r.rd.fileno(), r.wr.fileno())

    def unwatch(self) -> None:
        """Before the session's socket closes: out of every loop that watches it."""
        self.closing = True
        for loop in list(self.rings):
            _in_loop(loop, functools.partial(_forget, loop, self.fds))

    def close(self) -> None:
        self.closed = True
        rings, self.rings = list(self.rings.values()), {}
        for r in rings:
            r.close()


async def _drive(op: _ssh.Op, bell: Optional[_Bell] = None, later: Optional[_Later] = None) -> Any:
    """Move `op` to its end from the running loop; its result (or exception). A
    cancelled task cancels the Op first (its claim goes), then raises. The async
    callbacks' awaitables queued by a step are awaited before the next step."""
    loop = asyncio.get_running_loop()
    watch = _watch(loop)
    try:
        if bell is not None:
            bell.attach(op)
        while (wants := op.step()) is not None:
            if later is not None and later.queue:
                await later.flush()
            fds, seconds = wants
            if seconds == 0:
                await _turn(loop)  # a slice ran out: the loop's other work first
                continue
            await _ready(loop, watch, fds, seconds, bell)
        if later is not None:
            await later.flush()
    except BaseException:
        op.cancel()
        raise
    return op.result()


async def _turn(loop: asyncio.AbstractEventLoop) -> None:
    """Step again after what else the loop has to do now. A timer due now, not
    ``asyncio.sleep(0)``: that one's task runs first in the next pass, before the
    callbacks of the timers that fell due during the step (their tasks wake one pass
    later still), so a task sleeping a millisecond waited two more slices; a timer
    comes after those that were due before it (asyncio's and uvloop's order)."""
    fut = loop.create_future()
    loop.call_at(loop.time(), _wake, fut)
    await fut


async def _ready(
    loop: asyncio.AbstractEventLoop,
    watch: _Watch,
    fds: List[Any],
    seconds: Optional[float],
    bell: Optional[_Bell],
) -> None:
    """Until one of the sockets is ready for its events, `seconds` pass (at most
    RESTEP_SECONDS), or the session's bell rings."""
    fut: asyncio.Future[None] = loop.create_future()
    waiting = bell.ring().waiting if bell is not None else None  # (closed: raises)
    watched = fds if bell is None or not bell.closing else []
    for fd, events in watched:
        watch.add(fd, events, fut)
        if bell is not None:
            bell.fds[fd] = bell.fds.get(fd, 0) + 1
    if waiting is not None:
        waiting.add(fut)
    if seconds is None or seconds > RESTEP_SECONDS:
        seconds = RESTEP_SECONDS
    timer = loop.call_later(seconds, _wake, fut)
    try:
        await fut
    finally:
        for fd, _ in watched:
            watch.drop(fd, fut)
            if bell is not None:
                n = bell.fds.pop(fd, 1) - 1
                if n > 0:
                    bell.fds[fd] = n
        if waiting is not None:
            waiting.discard(fut)
        timer.cancel()


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


async def _run(
    flow: Steps[Any], bell: Optional[_Bell] = None, later: Optional[_Later] = None
) -> Any:
    """Run a flow in the loop: its Ops through _drive, a TCP connection by the same
    non-blocking steps as pyssh.Group's, a host name resolved in the loop's default
    executor (getaddrinfo cannot be made non-blocking). The flow never asks on the
    terminal. `later`: the queue of the flow's async callbacks."""
    try:
        _watch(asyncio.get_running_loop())  # (a loop that cannot watch sockets: refused)
        return await _run_stack([flow], bell, later)
    finally:
        if later is not None:
            later.drop()


async def _run_stack(
    stack: List[Steps[Any]], bell: Optional[_Bell], later: Optional[_Later]
) -> Any:
    value: Any = None
    error: Optional[BaseException] = None
    while True:
        try:
            with _no_prompts():
                item = stack[-1].throw(error) if error is not None else stack[-1].send(value)
        except StopIteration as stop:
            stack.pop()
            value, error = stop.value, None
            if not stack:
                if later is not None:
                    await later.flush()  # what the flow's last Python lines called
                return value
            continue
        except BaseException as e:
            stack.pop()
            if not stack:
                raise
            value, error = None, e
            continue
        value, error = None, None
        try:
            value = await _one(item, stack, bell, later)
        except BaseException as e:  # thrown into the flow where it waited
            error = e


async def _one(
    item: Any, stack: List[Steps[Any]], bell: Optional[_Bell], later: Optional[_Later]
) -> Any:
    if later is not None:
        await later.flush()  # what the flow's Python lines called since the last wait
    if isinstance(item, _ssh.Op):
        return await _drive(item, bell, later)
    if isinstance(item, TCPConnect):
        stack.append(tcp_steps(item))
        return None
    if isinstance(item, Call):
        fut = asyncio.get_running_loop().run_in_executor(None, item.fn)
        timeout = item.deadline.left() if item.deadline is not None else None
        try:
            return await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            raise item.late or asyncio.TimeoutError() from None
    raise TypeError(f"a flow yielded {item!r}")


class _no_prompts:
    """While a flow's step runs: never ask on the terminal (the loop's thread)."""

    def __enter__(self) -> None:
        self.was = getattr(_session.no_prompts, "on", False)
        _session.no_prompts.on = True

    def __exit__(self, *exc: Any) -> None:
        _session.no_prompts.on = self.was


class _Later:
    """Async callbacks: the C step calls them between chunks in the loop's thread, where
    nothing can be awaited, so a callback's awaitable (``async def`` callbacks, or a
    plain one returning an awaitable) is queued, and awaited in order after the step,
    before the next one: a slow callback holds the transfer back (its window), as a
    slow plain one does, and the loop stays free while it runs."""

    def __init__(self) -> None:
        self.queue: Deque[Awaitable[Any]] = collections.deque()

    def wrap(self, fn: Any) -> Any:
        """`fn` when it is no callable (a path, a file, None, True), else a callable
        that calls it and queues what it returns when that is awaitable."""
        if fn is None or not callable(fn):
            return fn
        queue = self.queue

        def call(*args: Any) -> None:
            r = fn(*args)
            if inspect.isawaitable(r):
                queue.append(r)

        return call

    async def flush(self) -> None:
        while self.queue:
            await self.queue.popleft()

    def drop(self) -> None:
        """The operation failed: the queued coroutines will never run (closed, without
        the "never awaited" warning)."""
        while self.queue:
            c = self.queue.popleft()
            close = getattr(c, "close", None)
            if close is not None:
                close()


async def connect(host: str, **kwargs: Any) -> AsyncSession:
    """:func:`pyssh.connect` in the event loop: the same keywords, host key checks
    and authentication order; an :class:`AsyncSession` (``async with`` closes it)."""
    kw = dict(_session.CONNECT_DEFAULTS)
    unknown = set(kwargs) - set(kw)
    if unknown:
        raise TypeError(f"connect() got unexpected keyword arguments {sorted(unknown)}")
    kw.update(kwargs)
    s = await _run(_session.connect_steps(host, kw))
    return AsyncSession(s)


class AsyncSession:
    """A connected session for asyncio: the blocking :class:`pyssh.Session`'s
    operations as coroutines. Many may run at once on one session (each command its
    own channel; sshd allows 10 per connection by default, ``MaxSessions``).
    ``.session`` is the blocking Session itself (its properties, or a blocking call
    from a thread)."""

    def __init__(self, session: _session.Session):
        self.session = session
        self._bell = _Bell()

    async def __aenter__(self) -> AsyncSession:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<pyssh.aio.AsyncSession {self.session!r}>"

    @property
    def closed(self) -> bool:
        return bool(self.session.closed)

    def close(self) -> None:
        """Close the session (its operations under way end with SessionClosedError),
        from any thread."""
        self._bell.unwatch()
        self.session.close()
        self._bell.close()

    async def run(
        self,
        command: _exec.Command,
        *,
        check: bool = False,
        input: _exec.Source = None,
        timeout: Optional[float] = None,
        env: Optional[Mapping[str, str]] = None,
    ) -> ExecResult:
        """Run ``command`` and capture its output (asyncssh's ``run``): an
        :class:`ExecResult`; ``check=True`` raises :class:`CommandError` on a
        non-zero exit status. ``input``: stdin (bytes, str, a file, an iterable of
        bytes). ``timeout``: seconds without progress, as for ``exec_wait``."""
        if not isinstance(check, bool):
            raise TypeError(f"check must be True or False, not {check!r}")
        flow = _exec.run_flow(self.session, command, None, None, input, timeout, env, True)
        result: ExecResult = await _run(flow, self._bell)
        if check and result.status != 0:
            raise _exec.command_error(result)
        return result

    async def exec_internal(
        self,
        command: _exec.Command,
        *,
        error: bool = True,
        stdin: _exec.Source = None,
        timeout: Optional[float] = None,
        env: Optional[Mapping[str, str]] = None,
    ) -> ExecResult:
        """:meth:`pyssh.Session.exec_internal`: as :meth:`run` with ``check=error``."""
        if not isinstance(error, bool):
            raise TypeError(f"error must be True or False, not {error!r}")
        return await self.run(command, check=error, input=stdin, timeout=timeout, env=env)

    async def exec_wait(
        self,
        command: _exec.Command,
        *,
        stdout: _exec.Sink = _exec.DEFAULT,
        stderr: _exec.Sink = _exec.DEFAULT,
        stdin: _exec.Source = None,
        timeout: Optional[float] = None,
        env: Optional[Mapping[str, str]] = None,
    ) -> int:
        """:meth:`pyssh.Session.exec_wait`: the output streamed as it comes (to
        callables, files or paths, called between chunks in the loop's thread); the
        exit status."""
        later = _Later()
        out, err = later.wrap(stdout), later.wrap(stderr)
        flow = _exec.run_flow(self.session, command, out, err, stdin, timeout, env, False)
        result: ExecResult = await _run(flow, self._bell, later)
        return result.status

    async def scp_upload(
        self,
        files: Any,
        to: Any = ".",
        *,
        progress: Optional[Callable[[str, int, int], Any]] = None,
        preserve: bool = False,
        timeout: Optional[float] = None,
    ) -> List[str]:
        """:meth:`pyssh.Session.scp_upload` (no ``verbose``: nothing is printed): the
        remote paths written (the top level). ``progress(path, transferred, total)``:
        plain or ``async def``, as ``exec_wait``'s callbacks."""
        later = _Later()
        flow = _scp.upload_steps(
            self.session, files, to, False, later.wrap(progress), preserve,
            _util.check_timeout(timeout),
        )  # fmt: skip
        paths: List[str] = await _run(flow, self._bell, later)
        return paths

    async def scp_download(
        self,
        files: Any,
        to: Any = ".",
        *,
        progress: Optional[Callable[[str, int, int], Any]] = None,
        preserve: bool = False,
        timeout: Optional[float] = None,
    ) -> List[str]:
        """:meth:`pyssh.Session.scp_download`: what the server sends checked as in the
        blocking API, each file written to a temporary file and renamed into place
        once complete (a cancelled download leaves none); the local paths written."""
        later = _Later()
        flow = _scp.download_steps(
            self.session, files, to, False, later.wrap(progress), preserve,
            _util.check_timeout(timeout),
        )  # fmt: skip
        paths: List[str] = await _run(flow, self._bell, later)
        return paths

    async def sftp_upload(
        self,
        files: Any,
        to: Any = ".",
        *,
        progress: Optional[Callable[[str, int, int], Any]] = None,
        preserve: bool = False,
        resume: bool = False,
        timeout: Optional[float] = None,
    ) -> List[str]:
        """:meth:`pyssh.Session.sftp_upload` (one SFTP channel, opened and closed):
        the remote paths written (the top level). ``progress(path, transferred,
        total)``: plain or ``async def``, as ``exec_wait``'s callbacks."""
        later = _Later()
        flow = self.session._sftp_upload_steps(
            files,
            to,
            verbose=False,
            progress=later.wrap(progress),
            preserve=preserve,
            resume=resume,
            timeout=timeout,
        )
        paths: List[str] = await _run(flow, self._bell, later)
        return paths

    async def sftp_download(
        self,
        files: Any,
        to: Any = ".",
        *,
        progress: Optional[Callable[[str, int, int], Any]] = None,
        preserve: bool = False,
        resume: bool = False,
        timeout: Optional[float] = None,
    ) -> List[str]:
        """:meth:`pyssh.Session.sftp_download`: each file written to a temporary
        file and renamed into place once complete; the local paths written.
        ``progress`` as for :meth:`sftp_upload`."""
        later = _Later()
        flow = self.session._sftp_download_steps(
            files,
            to,
            verbose=False,
            progress=later.wrap(progress),
            preserve=preserve,
            resume=resume,
            timeout=timeout,
        )
        paths: List[str] = await _run(flow, self._bell, later)
        return paths

    async def sftp(self, *, timeout: Optional[float] = None) -> AsyncSFTP:
        """An SFTP channel: an :class:`AsyncSFTP` (``async with`` closes it)."""
        sftp = await _run(self.session._sftp_steps(timeout=timeout), self._bell)
        return AsyncSFTP(sftp, self._bell)

    # ---- tunnels (pyssh/_aiotunnel.py): served by the loop, one task each
    def _drive_tunnel(self, op: _ssh.Op) -> Awaitable[Any]:
        return _drive(op, self._bell)

    async def forward_local(
        self,
        port: _tunnel.Listen,
        target: _tunnel.Target,
        *,
        bind: str = "127.0.0.1",
        unlink: Optional[bool] = None,
    ) -> AsyncTunnel:
        """:meth:`pyssh.Session.forward_local` (``ssh -L``) in the loop: listen on
        ``bind:port`` (0: a free port, ``.port`` says which; or a Unix socket's path)
        and carry each connection to ``target`` (``"host:port"`` as the server sees
        it, or a socket's path on the server). A running :class:`AsyncTunnel`,
        served by a task of the loop."""
        if unlink is None:
            unlink = self.session._unlink
        setup = _tunnel.local_setup(self.session, port, target, bind, unlink)
        return AsyncTunnel(setup, self._drive_tunnel)

    async def forward_remote(
        self,
        remote_port: _tunnel.Listen,
        target: _tunnel.Target,
        *,
        bind_address: str = "localhost",
        timeout: Optional[float] = None,
    ) -> AsyncTunnel:
        """:meth:`pyssh.Session.forward_remote` (``ssh -R``) in the loop: the server
        listens on ``bind_address:remote_port`` (0: it picks one, ``.port`` says
        which) and each connection is carried to ``target`` from here. ``timeout``:
        seconds to wait for the server's answer (default 30)."""
        flow = _tunnel.remote_steps(self.session, remote_port, target, bind_address, timeout)
        setup: _tunnel.Setup = await _run(flow, self._bell)
        return AsyncTunnel(setup, self._drive_tunnel)

    async def forward_dynamic(self, port: int = 1080, *, bind: str = "127.0.0.1") -> AsyncTunnel:
        """:meth:`pyssh.Session.forward_dynamic` (``ssh -D``) in the loop: a SOCKS 4,
        4a and 5 proxy on ``bind:port`` whose connections go out through the server.
        Keep ``bind`` a loopback address."""
        setup = _tunnel.dynamic_setup(self.session, port, bind)
        return AsyncTunnel(setup, self._drive_tunnel)

    async def create_process(
        self,
        command: Optional[_exec.Command],
        *,
        pty: bool = False,
        term: str = "xterm-256color",
        size: Tuple[int, int] = (80, 24),
        modes: Optional[Mapping[str, int]] = None,
        env: Optional[Mapping[str, str]] = None,
        stderr: int = asyncio.subprocess.PIPE,
        limit: int = 64 * 1024,
        timeout: Optional[float] = None,
    ) -> AsyncProcess:
        """:meth:`pyssh.Session.popen` for asyncio: start ``command`` (None: the login
        shell) and return an :class:`AsyncProcess` (asyncio's ``Process`` shape:
        ``stdin``, ``stdout``, ``stderr`` streams, ``wait()``, ``communicate()``,
        signals). ``pty``, ``term``, ``size``, ``modes``, ``env`` as for ``popen``;
        ``stderr``: ``asyncio.subprocess.PIPE``, ``STDOUT`` (into stdout) or
        ``DEVNULL``; ``limit``: each stream's buffer (the channel waits beyond it);
        ``timeout``: for starting it. ``async with`` ends and closes it."""
        return await _create_process(
            self, command, pty=pty, term=term, size=size, modes=modes, env=env,
            stderr=stderr, limit=limit, timeout=timeout,
        )  # fmt: skip


from ._aioprocess import AsyncProcess, create_process as _create_process  # noqa: E402
from ._aiosftp import AsyncSFTP, AsyncSFTPFile  # noqa: E402  (it builds on this module)
