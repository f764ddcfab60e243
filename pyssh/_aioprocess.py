"""Remote processes for asyncio: ``await session.create_process(command)`` gives an
:class:`AsyncProcess`, shaped like asyncio's ``Process`` and asyncssh's
``SSHClientProcess``: ``stdin`` (a StreamWriter), ``stdout``/``stderr`` (StreamReaders),
``wait()``, ``communicate()``, signals and the terminal's size.

One task per process moves its data: the pump. It drives one ``Channel.recv`` Op at a
time, which takes what arrives on stdout and stderr together and sends the queued
stdin meanwhile, so readers of both streams and a writer can all wait at once without
a deadlock, and only one Op is ever in flight on the channel. Each stream's buffer is
bounded (``limit``, 64 KiB as asyncio's): the pump asks ``recv`` for no more than its
room, and what does not fit stays in libssh, whose window then shuts, so a slow reader
slows the command down instead of growing memory.

Readers and writers never cancel the pump's Op: when they change what it should ask
for (room made by a read, stdin queued, the end of stdin), they poke it. A poke rings
the session's wake-up pair; the pump's next step sees the poke, cancels its ``recv``
(an Op cancelled between its steps has taken nothing) and asks again. A reader takes
bytes out of a buffer only once its request is met (or puts back what it took when
cancelled), so cancelling a task that awaits a read loses nothing.
"""

from __future__ import annotations

import asyncio
import collections
import time
from asyncio.subprocess import DEVNULL, PIPE, STDOUT
from typing import Any, Deque, List, Optional, Set, Tuple, Union

from . import _exec, _process, _ssh
from ._names import printable
from ._util import check_timeout
from .aio import _Bell, _drive, _ready, _turn, _watch
from .errors import SSHError, SSHTimeoutError

__all__ = ["AsyncProcess", "AsyncProcessReader", "AsyncProcessWriter"]

LIMIT = 64 * 1024  # a stream's buffer (asyncio's StreamReader default)
HIGH_WATER = 64 * 1024  # stdin bytes queued before drain() waits
CHUNK = 256 * 1024  # stdin bytes offered to one recv
WAIT_ROOM = _process.OTHER_MAX  # what a stream may keep while wait() waits (8 MiB)
SLICE = 0.004  # the pump holds the loop this long at most (as Op.step's slice)
HUP_AGAIN_AFTER = 0.1  # (csrc/channel.c) a close sooner than this after the start waits


class AsyncProcess:
    """A remote command running on its own channel, for asyncio. Made by
    :meth:`AsyncSession.create_process`; ``async with`` closes it (the command is
    ended if it still runs).

    ``stdin``: an :class:`AsyncProcessWriter`; ``stdout``, ``stderr``:
    :class:`AsyncProcessReader` (``stderr`` is None on a terminal, where the
    command's stderr is part of stdout, and with ``stderr=STDOUT`` or ``DEVNULL``).
    ``returncode``: None while it runs (or while output it wrote before its end is
    still to be taken), then its exit status, or ``-N`` when signal N ended it
    (``exit_signal`` names it)."""

    def __init__(
        self, channel: _ssh.Channel, bell: _Bell, command: Optional[str], pty: bool,
        stderr: int, limit: int,
    ) -> None:  # fmt: skip
        self.args = command
        self.pty = pty
        self._channel = channel
        self._bell = bell
        self._limit = limit
        self._err_mode = STDOUT if pty else stderr
        self._buf = [bytearray(), bytearray()]
        self._need = [0, 0]  # a reader waits for this many bytes (readexactly)
        self._reading = [False, False]
        self._waiting = 0  # wait() callers: the streams may keep WAIT_ROOM meanwhile
        self._in: Deque[memoryview] = collections.deque()
        self._in_len = 0
        self._in_eof = self._eof_sent = self._in_broken = False
        self._eof = self._ended = self._closed = False
        self._error: Optional[BaseException] = None
        self._waiters: Set[asyncio.Future[None]] = set()
        self._op: Optional[_ssh.Op] = None
        self._inflight: Optional[Tuple[List[int], bool]] = None  # recv's rooms, data
        self._poked = False
        self._started = time.monotonic()
        self._slice_end = self._started + SLICE  # the pump's turn ends (then _turn)
        self._shut: Optional[asyncio.Future[None]] = None
        self.returncode: Optional[int] = None
        self.exit_signal: Optional[str] = None
        self.core_dumped = False
        self.stdin = AsyncProcessWriter(self)
        self.stdout = AsyncProcessReader(self, 0)
        self.stderr = AsyncProcessReader(self, 1) if self._err_mode == PIPE else None
        self._task = asyncio.get_running_loop().create_task(self._pump())

    def __repr__(self) -> str:
        what = "shell" if self.args is None else repr(self.args)
        state = "running" if self.returncode is None else f"returncode={self.returncode}"
        return f"<pyssh.aio.AsyncProcess {what} {state}>"

    async def __aenter__(self) -> AsyncProcess:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.close()
        await self.wait_closed()

    # ---- the pump: one recv Op at a time -------------------------------------------
    async def _pump(self) -> None:
        try:
            while not (self._eof and self._ended):
                if self._in_eof and not self._in_len and not self._eof_sent:
                    await self._drive(self._channel.send_eof(defer=True))
                    self._eof_sent = True
                    self._changed()
                    continue
                if time.monotonic() >= self._slice_end:
                    await self._turn()  # recvs done in one step each: a turn for the others
                rooms = [self._room(0), self._room(1)]
                head = self._head()
                self._inflight = (rooms, head is not None)
                op = self._channel.recv(rooms[0], rooms[1], data=head, end=self._eof, defer=True)
                r = await self._drive(op)
                self._inflight = None
                if r is not None:
                    self._got(r, head)
            self._finish()
        except asyncio.CancelledError:
            raise
        except BaseException as e:  # the session closed, the connection lost
            self._error = e
        finally:
            self._inflight = None
            self._in_broken = self._in_broken or self._in_len > 0
            self._changed()

    async def _turn(self) -> None:
        await _turn(asyncio.get_running_loop())
        self._slice_end = time.monotonic() + SLICE

    def _head(self) -> Optional[memoryview]:
        """The stdin to offer the next recv: small writes joined, up to CHUNK."""
        q = self._in
        if len(q) > 1 and len(q[0]) < CHUNK:
            parts: List[memoryview] = []
            size = 0
            while q and size < CHUNK:
                parts.append(q.popleft())
                size += len(parts[-1])
            q.appendleft(memoryview(b"".join(parts)))
        return q[0] if q else None

    async def _drive(self, op: _ssh.Op) -> Any:
        """aio's _drive, but a poke between steps cancels the Op (it has taken nothing
        then) and gives None: the pump asks again with what it wants now."""
        loop = asyncio.get_running_loop()
        watch = _watch(loop)
        self._op, self._poked = op, False  # (a poke made before this recv is moot)
        try:
            self._bell.attach(op)
            while (wants := op.step()) is not None:
                if self._poked:
                    self._poked = False
                    op.cancel()
                    return None
                fds, seconds = wants
                if seconds == 0:
                    await self._turn()
                    continue
                await _ready(loop, watch, fds, seconds, self._bell)
                self._slice_end = time.monotonic() + SLICE
        except BaseException:
            op.cancel()
            raise
        finally:
            self._op = None
        return op.result()

    def _room(self, stream: int) -> int:
        """How much the next recv may take for `stream` (stderr merged or dropped:
        stdout's room, or a full buffer's worth)."""
        if stream == 1 and self._err_mode != PIPE:
            return self._room(0) if self._err_mode == STDOUT else self._limit
        cap = max(self._limit, self._need[stream], WAIT_ROOM if self._waiting else 0)
        return max(cap - len(self._buf[stream]), 0)

    def _got(self, r: Any, head: Optional[memoryview]) -> None:
        self._buf[0] += r.stdout
        if r.stderr and self._err_mode != DEVNULL:
            self._buf[1 if self._err_mode == PIPE else 0] += r.stderr
        if r.sent:
            self._in_len -= r.sent
            rest = self._in[0][r.sent :]
            if rest:
                self._in[0] = rest
            else:
                self._in.popleft()
        if head is not None and r.sent < len(head) and r.ended:
            self._drop_stdin()  # the command is gone: the rest is dropped, as a pipe's
        self._eof, self._ended = bool(r.eof), bool(r.ended)
        self._changed()

    def _drop_stdin(self) -> None:
        self._in.clear()
        self._in_len = 0
        self._in_broken = True

    def _finish(self) -> None:
        """The command ended and its output is all in the buffers: its status, and
        the channel freed."""
        st = self._channel.status()
        if st.exit_status is not None:
            self.returncode = st.exit_status
        elif st.signal is not None:
            self.exit_signal = printable(st.signal[:32])  # the server's: shown to people
            self.core_dumped = st.core_dumped
            self.returncode = -(_process._signal_number(st.signal) or 1)
        else:
            self.returncode = -1  # closed without a word, as ExecResult says
        if self._in_len:
            self._drop_stdin()
        self._channel.close()

    # ---- waking: the pump by a poke, the readers and writers by _changed -------------
    def _poke(self) -> None:
        """Make the pump ask again: its next step cancels its recv. The step comes at
        once: the session's wake-up pair is rung (its other operations step once)."""
        if self._poked:
            return  # rung already: this recv is cancelled at its next step
        self._poked = True
        ring = self._bell.rings.get(asyncio.get_running_loop())
        if ring is not None:
            try:
                ring.wr.send(b"\0")
            except (BlockingIOError, InterruptedError):
                pass  # full: a wake-up is on its way already

    def _maybe_poke(self) -> None:
        """Poke the pump when its recv asks for much less than it should now."""
        if self._inflight is None or self._poked:
            return
        rooms, has_data = self._inflight
        more_room = any(self._room(i) >= rooms[i] + self._limit // 2 for i in (0, 1))
        eof_due = self._in_eof and not self._in_len and not self._eof_sent
        if more_room or (self._in_len and not has_data) or (eof_due and not has_data):
            self._poke()

    def _changed(self) -> None:
        for fut in self._waiters:
            if not fut.done():
                fut.set_result(None)

    async def _wait_change(self) -> None:
        fut = asyncio.get_running_loop().create_future()
        self._waiters.add(fut)
        try:
            await fut
        finally:
            self._waiters.discard(fut)

    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    async def _more(self) -> bool:
        """Wait for the buffers to change; False when nothing more will come."""
        self._check()
        if self._eof or self._closed:
            return False
        self._maybe_poke()
        await self._wait_change()
        self._check()
        return True

    def _pop(self, stream: int, n: int) -> bytes:
        """The first `n` bytes of a buffer (all: n < 0), taken out of it."""
        buf = self._buf[stream]
        if n < 0 or n >= len(buf):
            data = bytes(buf)
            buf.clear()
        else:
            with memoryview(buf) as view:
                data = bytes(view[:n])
            del buf[:n]
        self._maybe_poke()
        return data

    # ---- the end ---------------------------------------------------------------------
    async def wait(self, timeout: Optional[float] = None) -> int:
        """Wait for the command to end; its return code. Output that comes meanwhile is
        kept for ``stdout``/``stderr``, up to 8 MiB each; beyond that the command is
        made to wait, as a pipe would: read it, or use :meth:`communicate`.
        ``SSHTimeoutError`` after ``timeout`` seconds; a cancelled or timed-out wait
        leaves the process as it was."""
        timeout = check_timeout(timeout)
        self._waiting += 1
        try:
            return await asyncio.wait_for(self._wait_end(), timeout)
        except asyncio.TimeoutError:
            raise SSHTimeoutError(
                f"waiting for the command: timed out after {timeout:g} seconds"
            ) from None
        finally:
            self._waiting -= 1

    async def _wait_end(self) -> int:
        self._maybe_poke()
        while self.returncode is None:
            self._check()
            if self._closed:
                raise SSHError("waiting for the command: the process was closed")
            await self._wait_change()
        return self.returncode

    async def communicate(self, input: Optional[bytes] = None) -> Tuple[bytes, Optional[bytes]]:
        """Send ``input`` (then end-of-file), read all output until the command ends,
        and return ``(stdout, stderr)`` (stderr None when it is not a separate
        stream). Input and output move together: no deadlock whatever their sizes.
        Cancelled, it gives back the output read so far to the streams."""
        if input and self.stdin.is_closing():
            raise ValueError("communicate() with input, but stdin was closed")
        if input:
            self.stdin._queue(input)
        if not self.stdin.is_closing():
            self.stdin.write_eof()
        reads = [self.stdout.read()]
        if self.stderr is not None:
            reads.append(self.stderr.read())
        got = await asyncio.gather(*reads)
        await self.wait()
        return got[0], (got[1] if self.stderr is not None else None)

    # ---- signals and the terminal ----------------------------------------------------
    def send_signal(self, sig: Union[str, int]) -> None:
        """Ask the server to send ``sig`` ("TERM", "SIGTERM", signal.SIGTERM) to the
        command. The server does not answer, and OpenSSH's sshd ignores signals for
        root logins: :meth:`close` ends such a command (SIGHUP on a terminal)."""
        name = _process._signal_name(sig)
        if self.returncode is None and not self._channel.closed:
            self._channel.signal(name)

    def terminate(self) -> None:
        """SIGTERM (see :meth:`send_signal`)."""
        self.send_signal("TERM")

    def kill(self) -> None:
        """SIGKILL (see :meth:`send_signal`)."""
        self.send_signal("KILL")

    def resize(self, cols: int, rows: int) -> None:
        """Tell the remote terminal its new size (what ``stty size`` shows)."""
        if not self.pty:
            raise SSHError("resize(): this process has no terminal (create_process(..., pty=True))")
        _process._size((cols, rows))
        if not self._channel.closed:
            self._channel.resize(cols, rows)

    # ---- closing ---------------------------------------------------------------------
    def close(self) -> None:
        """End the command if it still runs (SIGKILL, and its channel closed: SIGHUP)
        and free the channel; the streams then read what they hold, then EOF. Never
        waits: :meth:`wait_closed` does. Safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        if self._op is not None:
            self._op.cancel()  # its claim goes now: the channel can be closed
        self._task.cancel()
        self._drop_stdin()
        ch = self._channel
        if self.returncode is None and not ch.closed and not ch.session.closed:
            try:
                ch.signal("KILL")
            except SSHError:
                pass  # the connection went: closing is all there is to do
        loop = asyncio.get_running_loop()
        self._shut = loop.create_future()
        # a close within 0.1 s of the start would wait for the end (channel.c): later
        left = self._started + HUP_AGAIN_AFTER - time.monotonic()
        loop.call_later(max(left, 0), self._close_channel)
        self._changed()

    def _close_channel(self) -> None:
        try:
            self._channel.close()
        finally:
            if self._shut is not None and not self._shut.done():
                self._shut.set_result(None)

    async def wait_closed(self) -> None:
        """After :meth:`close`: until the channel is closed."""
        await asyncio.wait([self._task])  # (not gather: a cancelled caller would cancel it)
        if self._shut is not None:
            await asyncio.shield(self._shut)


class AsyncProcessReader:
    """A process's stdout or stderr, as asyncio's StreamReader: ``read``,
    ``readline``, ``readexactly``, ``readuntil``, ``at_eof`` and ``async for line``.
    Its buffer holds at most ``limit`` bytes (``readexactly(n)`` lets it hold ``n``);
    one task reads a stream at a time."""

    def __init__(self, proc: AsyncProcess, stream: int):
        self._proc = proc
        self._stream = stream

    def at_eof(self) -> bool:
        """The output ended and its buffer is empty."""
        p = self._proc
        return not p._buf[self._stream] and (p._eof or p._closed)

    def _enter(self) -> bytearray:
        if self._proc._reading[self._stream]:
            raise RuntimeError("another task is reading this stream already")
        self._proc._reading[self._stream] = True
        return self._proc._buf[self._stream]

    def _leave(self) -> None:
        self._proc._reading[self._stream] = False

    async def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (waiting until there is at least one), or with ``n < 0``
        all until EOF; ``b''`` at EOF."""
        buf = self._enter()
        try:
            if n < 0:
                return await self._read_all(buf)
            while not buf and n != 0:
                if not await self._proc._more():
                    break
            return self._proc._pop(self._stream, n) if n else b""
        finally:
            self._leave()

    async def _read_all(self, buf: bytearray) -> bytes:
        blocks: List[bytes] = []
        try:
            while True:
                if buf:
                    blocks.append(self._proc._pop(self._stream, -1))
                elif not await self._proc._more():
                    return b"".join(blocks)
        except BaseException:
            buf[0:0] = b"".join(blocks)  # put back: a cancelled read loses nothing
            raise

    async def readexactly(self, n: int) -> bytes:
        """Exactly ``n`` bytes; ``asyncio.IncompleteReadError`` (with what there was)
        when the output ends first."""
        if n < 0:
            raise ValueError("readexactly size can not be less than zero")
        buf = self._enter()
        p = self._proc
        try:
            p._need[self._stream] = n
            while len(buf) < n:
                if not await p._more():
                    raise asyncio.IncompleteReadError(p._pop(self._stream, -1), n)
            return p._pop(self._stream, n)
        finally:
            p._need[self._stream] = 0
            self._leave()

    async def readuntil(self, separator: bytes = b"\n") -> bytes:
        """Up to and including ``separator``; ``asyncio.IncompleteReadError`` at EOF,
        ``asyncio.LimitOverrunError`` when the buffer fills first (its data stays)."""
        if not separator:
            raise ValueError("Separator should be at least one-byte string")
        buf = self._enter()
        try:
            return await self._until(buf, bytes(separator))
        finally:
            self._leave()

    async def _until(self, buf: bytearray, sep: bytes) -> bytes:
        start, limit = 0, self._proc._limit
        while True:
            i = buf.find(sep, start)
            if i >= 0:
                if i + len(sep) > limit:
                    raise asyncio.LimitOverrunError(
                        "Separator is found, but chunk is longer than limit", i
                    )
                return self._proc._pop(self._stream, i + len(sep))
            if len(buf) >= limit:
                raise asyncio.LimitOverrunError(
                    "Separator is not found, and chunk exceed the limit", len(buf)
                )
            start = max(len(buf) - len(sep) + 1, 0)
            if not await self._proc._more():
                raise asyncio.IncompleteReadError(self._proc._pop(self._stream, -1), None)

    async def readline(self) -> bytes:
        """One line, ``\\n`` included; at EOF what is left (``b''`` at the end).
        ``ValueError`` for a line longer than the limit (what the buffer held of it
        is dropped, as asyncio's StreamReader does)."""
        try:
            return await self.readuntil(b"\n")
        except asyncio.IncompleteReadError as e:
            return e.partial
        except asyncio.LimitOverrunError as e:
            buf = self._proc._buf[self._stream]
            del buf[: e.consumed + 1 if buf.startswith(b"\n", e.consumed) else len(buf)]
            self._proc._maybe_poke()
            raise ValueError(e.args[0]) from None

    def __aiter__(self) -> AsyncProcessReader:
        return self

    async def __anext__(self) -> bytes:
        line = await self.readline()
        if not line:
            raise StopAsyncIteration
        return line


class AsyncProcessWriter:
    """A process's stdin, as asyncio's StreamWriter: ``write`` queues, ``await
    drain()`` waits until the queue is short (64 KiB), ``write_eof()``/``close()`` end
    it once the queue is sent, ``await wait_closed()``. Once the command ended
    without reading it all, ``write`` and ``drain`` raise ``BrokenPipeError``."""

    def __init__(self, proc: AsyncProcess):
        self._proc = proc
        self._closing = False

    def _queue(self, data: Any) -> None:
        # a copy unless bytes: theirs may change
        view = memoryview(data if type(data) is bytes else bytes(data))
        p = self._proc
        if view:
            p._in.append(view)
            p._in_len += len(view)
            p._maybe_poke()

    def write(self, data: Any) -> None:
        """Queue ``data`` (bytes-like) for the command's stdin."""
        if self._closing:
            raise ValueError("write to a closed stdin")
        self._broken()
        self._queue(data)

    def writelines(self, data: Any) -> None:
        for chunk in data:
            self.write(chunk)

    def _broken(self) -> None:
        p = self._proc
        p._check()
        if p._in_broken or p._closed or p._task.done():  # (the pump ends with the command)
            raise BrokenPipeError("the remote command ended before reading all of its stdin")

    async def drain(self) -> None:
        """Wait until the queue is below 64 KiB. Always lets the loop's other tasks
        (the pump that sends it) run first: a loop of write() and drain() never holds
        the loop."""
        await asyncio.sleep(0)
        while self._proc._in_len > HIGH_WATER:
            self._broken()
            await self._proc._wait_change()
        self._broken()

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        """End stdin once the queue is sent."""
        if not self._closing:
            self._closing = True
            self._proc._in_eof = True
            self._proc._maybe_poke()

    def close(self) -> None:
        """As :meth:`write_eof` (the process goes on: its output is still to read)."""
        self.write_eof()

    def is_closing(self) -> bool:
        return self._closing

    async def wait_closed(self) -> None:
        """Until the end of stdin was sent (or the command ended)."""
        p = self._proc
        while not (p._eof_sent or p._in_broken or p._closed or p._task.done()):
            p._check()
            await p._wait_change()


async def create_process(
    s: Any, command: Optional[_exec.Command], *, pty: bool, term: str, size: Any,
    modes: _process.Modes, env: Any, stderr: int, limit: int, timeout: Optional[float],
) -> AsyncProcess:  # fmt: skip
    """The command started on a new channel of the AsyncSession `s` (its exec an Op
    in the loop), as an AsyncProcess."""
    if stderr not in (PIPE, STDOUT, DEVNULL):
        raise ValueError("stderr must be asyncio.subprocess.PIPE, STDOUT or DEVNULL")
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be a positive int, not {limit!r}")
    text = None if command is None else _exec.command_text(command)
    if not isinstance(term, str) or not term or not term.isprintable() or len(term) > 64:
        raise ValueError(f"term must be a terminal name like 'xterm-256color', not {term!r}")
    spec = (term, *_process._size(size), _process.encode_modes(modes)) if pty else None
    pairs = _exec.env_pairs(env)
    ch = _ssh.Channel(s.session)
    try:
        op = ch.exec(text, env=pairs, timeout=check_timeout(timeout), pty=spec, defer=True)
        await _drive(op, s._bell)
    except BaseException:
        ch.close()
        raise
    return AsyncProcess(ch, s._bell, text, pty, stderr, limit)
