"""``session.interactive()``: the local terminal attached to a remote shell or
command, as ``ssh -t`` does.

One loop in the calling thread moves everything: ``Channel.recv`` waits (GIL
released) until the remote side writes, the local input is readable, or the
keystrokes in hand are sent, so an idle session uses no CPU. The local terminal
is in raw mode meanwhile (OpenSSH's ``enter_raw_mode``), so Ctrl-C is the byte
0x03 that the remote terminal turns into SIGINT; its attributes are restored on
every way out. SIGWINCH's handler only records that the size changed and wakes
the loop, which tells the server.
"""

from __future__ import annotations

import os
import select
import selectors
import signal
import sys
import threading
from types import FrameType
from typing import Any, List, Mapping, Optional, Tuple

from . import _exec, _process
from .errors import SSHError

__all__ = ["run", "DISCONNECTED"]

DISCONNECTED = 255  # what ssh returns when the connection ends without a status (`~.`)
READ_MAX = 64 * 1024  # one read of the local input
PENDING_MAX = 256 * 1024  # input held while the server's window is shut: then stop reading
STDIN, STDOUT, STDERR = 0, 1, 2


def run(
    session: Any,
    command: Optional[_exec.Command],
    *,
    pty: Optional[bool],
    term: Optional[str],
    env: Optional[Mapping[str, str]],
) -> int:
    """Session.interactive()'s work: see its docstring."""
    if os.name != "posix":
        raise SSHError(
            "interactive() needs a POSIX terminal (termios), which Windows lacks: use "
            "session.popen() or session.shell() and move the data yourself"
        )
    import termios

    text = None if command is None else _exec.command_text(command)
    # Python started without a descriptor 0 (sys.__stdin__ None): 0 may be any
    # file opened since, the connection's socket even, which must not be read
    has_stdin = sys.__stdin__ is not None
    tty = has_stdin and os.isatty(STDIN)
    use_pty = tty if pty is None else bool(pty)
    saved = termios.tcgetattr(STDIN) if tty else None
    modes = _process.modes_from_termios(saved) if saved is not None else None
    term = term or os.environ.get("TERM") or "xterm-256color"
    for f in (sys.stdout, sys.stderr):
        if f is not None:
            f.flush()  # what Python buffered comes before the remote output
    proc = _process.open_process(
        session, text, pty=use_pty, term=term, size=_terminal_size(), modes=modes,
        env=_exec.env_pairs(env), timeout=None,
    )  # fmt: skip
    with proc, _Watch(STDIN if has_stdin else -1) as watch:
        with _RawMode(STDIN, saved), _Winch(proc if use_pty else None, watch) as winch:
            _Loop(proc, watch, winch, escape=tty, has_stdin=has_stdin).run()
    return DISCONNECTED if proc.returncode is None else proc.returncode


def _terminal_size() -> Tuple[int, int]:
    """(columns, rows) of the terminal on stdout, else stdin, else 80x24."""
    for fd in (STDOUT, STDIN):
        try:
            cols, rows = os.get_terminal_size(fd)
        except OSError:
            continue
        if cols > 0 and rows > 0:
            return cols, rows
    return 80, 24


class _RawMode:
    """The local terminal in raw mode as OpenSSH's enter_raw_mode sets it (not
    tty.setraw, which also changes the character size and parity); the saved
    attributes back on exit, whatever the exit."""

    def __init__(self, fd: int, saved: Optional[List[Any]]):
        self.fd = fd
        self.saved = saved

    def __enter__(self) -> _RawMode:
        if self.saved is None:
            return self
        import termios as t

        iflag, oflag, cflag, lflag, ispeed, ospeed, cc = self.saved
        off_i = t.ISTRIP | t.INLCR | t.IGNCR | t.ICRNL | t.IXON | t.IXANY | t.IXOFF
        iflag = (iflag | t.IGNPAR) & ~(off_i | getattr(t, "IUCLC", 0))
        lflag &= ~(t.ISIG | t.ICANON | t.ECHO | t.ECHOE | t.ECHOK | t.ECHONL | t.IEXTEN)
        cc = list(cc)
        cc[t.VMIN] = 1
        cc[t.VTIME] = 0
        raw = [iflag, oflag & ~t.OPOST, cflag, lflag, ispeed, ospeed, cc]
        t.tcsetattr(self.fd, t.TCSADRAIN, raw)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.saved is not None:
            import termios

            termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)


class _Watch:
    """What recv() waits for besides the connection. recv() watches one local
    descriptor: where the system has epoll or kqueue, that one descriptor stands
    for both the local input and a pipe the SIGWINCH handler writes to, so that a
    resize wakes the loop at once; elsewhere (or when the input cannot be
    registered, a regular file) it is the input itself, and a resize waits for the
    next wake-up."""

    def __init__(self, fd: int):
        self.fd = fd
        self.sel: Optional[selectors.BaseSelector] = None
        self.pipe: Tuple[int, int] = (-1, -1)
        self.reading = fd >= 0
        sel = selectors.DefaultSelector()
        try:
            sel.register(fd, selectors.EVENT_READ)
        except (OSError, ValueError):
            sel.close()
            return
        if not hasattr(sel, "fileno"):  # select() or poll(): not one descriptor
            sel.close()
            return
        self.sel = sel
        self.pipe = os.pipe()
        for p in self.pipe:
            os.set_blocking(p, False)
        sel.register(self.pipe[0], selectors.EVENT_READ)

    def __enter__(self) -> _Watch:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.sel is not None:
            self.sel.close()
            for p in self.pipe:
                os.close(p)
            self.sel = None

    def target(self, reading: bool) -> int:
        """The descriptor for recv(fd=): with the input watched or not."""
        if self.sel is None:
            return self.fd if reading else -1
        if reading != self.reading:
            if reading:
                self.sel.register(self.fd, selectors.EVENT_READ)
            else:
                self.sel.unregister(self.fd)
            self.reading = reading
        fileno: int = self.sel.fileno()  # type: ignore[attr-defined]
        return fileno

    def input_ready(self) -> bool:
        """After recv() said fd_ready: whether the input is readable (a wake-up
        from the pipe is drained)."""
        if self.sel is None:
            return True
        ready = False
        for key, _ in self.sel.select(0):
            if key.fd == self.pipe[0]:
                try:
                    while os.read(self.pipe[0], 512):
                        pass
                except BlockingIOError:
                    pass
            else:
                ready = True
        return ready

    def wake(self) -> None:
        if self.sel is not None:
            try:
                os.write(self.pipe[1], b"\0")
            except OSError:  # full: a wake-up is already waiting
                pass


class _Winch:
    """SIGWINCH followed while the loop runs (in the main thread only, where
    Python runs signal handlers): the handler records that the size changed and
    wakes the loop; the loop tells the server. The old handler is restored on exit."""

    def __init__(self, proc: Optional[_process.Process], watch: _Watch):
        self.proc = proc
        self.watch = watch
        self.changed = False
        self.installed = False
        self.old: Any = None  # None too when the handler was not set from Python
        self.size = _terminal_size()

    def __enter__(self) -> _Winch:
        if (
            self.proc is not None
            and hasattr(signal, "SIGWINCH")
            and threading.current_thread() is threading.main_thread()
        ):
            self.old = signal.signal(signal.SIGWINCH, self._handler)
            self.installed = True
        return self

    def _handler(self, signum: int, frame: Optional[FrameType]) -> None:
        self.changed = True
        self.watch.wake()

    def apply(self) -> None:
        if not self.changed or self.proc is None:
            return
        self.changed = False
        size = _terminal_size()
        if size != self.size:
            self.size = size
            try:
                self.proc.resize(*size)
            except SSHError:  # the command ended meanwhile: the loop finds out
                pass

    def __exit__(self, *exc: Any) -> None:
        if self.installed:
            self.installed = False
            signal.signal(signal.SIGWINCH, signal.SIG_DFL if self.old is None else self.old)


class _Escape:
    """ssh's escape: ``~.`` at the start of a line disconnects; ``~~`` sends one
    ``~``; ``~`` and any other key sends both."""

    def __init__(self) -> None:
        self.line_start = True
        self.tilde = False

    def feed(self, data: bytes) -> Tuple[bytes, bool]:
        """(what to send, whether ``~.`` came)."""
        out = bytearray()
        for b in data:
            if self.tilde:
                self.tilde = False
                if b == ord("."):
                    return bytes(out), True
                if b != ord("~"):
                    out.append(ord("~"))
                out.append(b)
            elif self.line_start and b == ord("~"):
                self.tilde = True
                continue
            else:
                out.append(b)
            self.line_start = b in (10, 13)
        return bytes(out), False


class _Loop:
    """The one loop: remote output to stdout/stderr, local input to the remote
    stdin, through the Process's own lock and bookkeeping (``_got``) so that its
    state (return code, exit signal) ends right."""

    def __init__(
        self, proc: _process.Process, watch: _Watch, winch: _Winch, *, escape: bool, has_stdin: bool
    ):
        self.proc = proc
        self.watch = watch
        self.winch = winch
        self.escape = _Escape() if escape else None
        self.pending = b""  # input read and not yet sent
        self.input_open = has_stdin  # the local input has not ended
        self.quit = False  # `~.`

    def run(self) -> None:
        proc = self.proc
        while proc.returncode is None and not self.quit:
            if not self.input_open and not self.pending and not proc.stdin.closed:
                proc.stdin.close()  # the local end of file, passed on
            self.winch.apply()
            r = self._step()
            _write_all(STDOUT, proc._pop(0, -1))
            _write_all(STDERR, proc._pop(1, -1))
            if r is None:
                return
            if r.fd_ready and self.watch.input_ready():
                self._read_input()
        if self.quit:
            proc.close()

    def _step(self) -> Any:
        """One recv() under the Process's lock; None when the channel is closed."""
        proc = self.proc
        data = self.pending or None
        fd = self.watch.target(self.input_open and len(self.pending) < PENDING_MAX)
        with proc._lock:
            if proc._channel.closed:
                return None
            r = proc._channel.recv(_process.CHUNK, _process.CHUNK, fd=fd, data=data, end=True)
            proc._got(r)
        self.pending = self.pending[r.sent :]
        if self.pending and r.ended:
            self.pending = b""  # the command is gone: the rest is dropped, as a pipe's
        return r

    def _read_input(self) -> None:
        try:
            data = os.read(STDIN, READ_MAX)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # EIO: the terminal hung up
            data = b""
        if not data:
            self.input_open = False
            return
        if self.escape is not None:
            data, self.quit = self.escape.feed(data)
        self.pending += data


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:  # a non-blocking stdout: wait until it takes more
            select.select([], [fd], [])
            continue
        view = view[n:]
