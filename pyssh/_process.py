"""Interactive remote processes: ``session.popen()`` and ``session.shell()``.

A :class:`Process` is one session channel (``pyssh._ssh.Channel``) shaped like
``subprocess.Popen``. Its one read, ``Channel.recv``, takes what arrives on
stdout and stderr together, with the GIL released, so that a stream nobody
reads cannot stop the other by filling the channel's one window; what was taken
for a stream waits in a buffer here, bounded by ``OTHER_MAX`` for the stream not
being read. stdin is written with ``Channel.send``, which may run in another
thread while one reads.
"""

from __future__ import annotations

import io
import re
import signal as _signal
import struct
import sys
import threading
import time
from typing import Any, Dict, List, Mapping, Optional, Pattern, Tuple, Union

from . import _ssh
from ._names import printable
from ._util import check_open, check_timeout
from .errors import SSHError, SSHTimeoutError

__all__ = ["Process", "TERMINAL_MODES", "encode_modes", "modes_from_termios"]

CHUNK = 256 * 1024
OTHER_MAX = 8 << 20  # what is kept of the stream not being read, while the other is
SHOWN = 300  # bytes of output a timeout's message shows
KILL_GRACE = 1.0  # seconds terminate()/kill() wait for the end before closing

# RFC 4254 section 8 (and RFC 8160's IUTF8): the terminal modes a pty request
# may set, by name; values are 0/1 for flags, a character code for V* keys.
TERMINAL_MODES = {
    "VINTR": 1, "VQUIT": 2, "VERASE": 3, "VKILL": 4, "VEOF": 5, "VEOL": 6, "VEOL2": 7,
    "VSTART": 8, "VSTOP": 9, "VSUSP": 10, "VDSUSP": 11, "VREPRINT": 12, "VWERASE": 13,
    "VLNEXT": 14, "VFLUSH": 15, "VSWTCH": 16, "VSTATUS": 17, "VDISCARD": 18,
    "IGNPAR": 30, "PARMRK": 31, "INPCK": 32, "ISTRIP": 33, "INLCR": 34, "IGNCR": 35,
    "ICRNL": 36, "IUCLC": 37, "IXON": 38, "IXANY": 39, "IXOFF": 40, "IMAXBEL": 41,
    "IUTF8": 42, "ISIG": 50, "ICANON": 51, "XCASE": 52, "ECHO": 53, "ECHOE": 54,
    "ECHOK": 55, "ECHONL": 56, "NOFLSH": 57, "TOSTOP": 58, "IEXTEN": 59, "ECHOCTL": 60,
    "ECHOKE": 61, "PENDIN": 62, "OPOST": 70, "OLCUC": 71, "ONLCR": 72, "OCRNL": 73,
    "ONOCR": 74, "ONLRET": 75, "CS7": 90, "CS8": 91, "PARENB": 92, "PARODD": 93,
    "TTY_OP_ISPEED": 128, "TTY_OP_OSPEED": 129,
}  # fmt: skip

Modes = Optional[Mapping[str, int]]


def encode_modes(modes: Modes) -> bytes:
    """``modes`` ({"ECHO": 0, ...}) in RFC 4254's encoding, TTY_OP_END included."""
    out = bytearray()
    for name, value in (modes or {}).items():
        op = TERMINAL_MODES.get(str(name).upper())
        if op is None:
            raise ValueError(f"unknown terminal mode {name!r}: see pyssh.TERMINAL_MODES")
        if isinstance(value, bool):
            value = int(value)
        if not isinstance(value, int) or not 0 <= value <= 0xFFFFFFFF:
            raise ValueError(f"terminal mode {name}: {value!r} is not a 32-bit unsigned int")
        out += struct.pack(">BI", op, value)
    return bytes(out) + b"\0"


# termios has IUTF8 from Python 3.13 only; its value on Linux and macOS
_IUTF8 = 0x4000 if sys.platform.startswith(("linux", "darwin")) else None


def modes_from_termios(attrs: List[Any]) -> Dict[str, int]:
    """The modes of ``termios.tcgetattr(fd)`` by TERMINAL_MODES' names, as OpenSSH
    sends its terminal's (ttymodes.c): so that the remote terminal erases, echoes
    and interrupts with the local keys. POSIX only; names this system lacks are left
    out, a disabled key is 255, an unknown speed 9600."""
    import termios

    iflag, oflag, cflag, lflag, ispeed, ospeed, cc = attrs
    # RFC 4254 numbers the modes by the word they live in
    words = [(30, iflag), (50, lflag), (70, oflag), (90, cflag)]
    modes: Dict[str, int] = {}
    for name, op in TERMINAL_MODES.items():
        bit = getattr(termios, name, _IUTF8 if name == "IUTF8" else None)
        if not isinstance(bit, int) or op >= 128:
            continue
        if op < 30:
            c = cc[bit] if bit < len(cc) else b"\0"
            value = c[0] if isinstance(c, bytes) and c else c if isinstance(c, int) else 0
            modes[name] = 255 if value == 0 else value  # _POSIX_VDISABLE is 0 on Linux
        elif op >= 90 and name in ("CS7", "CS8"):
            modes[name] = int(cflag & termios.CSIZE == bit)
        else:
            word = [w for start, w in words if op >= start][-1]
            modes[name] = int(bool(word & bit))
    bauds = {getattr(termios, n): int(n[1:]) for n in dir(termios) if re.fullmatch(r"B\d+", n)}
    modes["TTY_OP_ISPEED"] = bauds.get(ispeed, 9600)
    modes["TTY_OP_OSPEED"] = bauds.get(ospeed, 9600)
    return modes


def _size(size: Any) -> Tuple[int, int]:
    try:
        cols, rows = size
    except (TypeError, ValueError):
        raise TypeError(f"size must be (columns, rows), not {size!r}") from None
    for v in (cols, rows):
        if isinstance(v, bool) or not isinstance(v, int) or not 0 < v <= 100000:
            raise ValueError(f"size must be two positive ints (columns, rows), not {size!r}")
    return cols, rows


def _signal_name(sig: Union[str, int]) -> str:
    """ "TERM", "SIGTERM", signal.SIGTERM or 15 as the name SSH sends ("TERM")."""
    if isinstance(sig, int) and not isinstance(sig, bool):
        try:
            return _signal.Signals(sig).name[3:]
        except ValueError:
            raise ValueError(f"{sig} is not a signal number of this system") from None
    if not isinstance(sig, str):
        raise TypeError(f"the signal must be a name or a number, not {type(sig).__name__}")
    name = sig.upper()
    return name[3:] if name.startswith("SIG") else name


def _signal_number(name: Optional[str]) -> int:
    try:
        return int(_signal.Signals["SIG" + (name or "")])
    except KeyError:
        return 0


class _Deadline:
    def __init__(self, timeout: Optional[float]):
        self.timeout = check_timeout(timeout)
        self.end = None if self.timeout is None else time.monotonic() + self.timeout

    def left(self) -> Optional[float]:
        return None if self.end is None else max(self.end - time.monotonic(), 0.001)

    def passed(self) -> bool:
        return self.end is not None and time.monotonic() >= self.end


class ProcessInput(io.BufferedIOBase):
    """A process's stdin: ``write()`` sends everything (blocking while the server's
    window is shut); ``close()`` sends end-of-file. Writing after the command
    ended raises ``BrokenPipeError``."""

    def __init__(self, proc: Process):
        super().__init__()
        self._proc = proc

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        if self.closed:
            raise ValueError("write to a closed stdin")
        view = memoryview(data).cast("B")
        ch = self._proc._channel
        sent = 0 if ch.closed else ch.send(view)
        if sent < len(view):
            raise BrokenPipeError(
                f"the remote command ended before reading its stdin "
                f"({len(view) - sent} of {len(view)} bytes not sent)"
            )
        return len(view)

    def close(self) -> None:
        if not self.closed:
            super().close()
            ch = self._proc._channel
            if not ch.closed and not ch.session.closed:
                ch.send_eof()


class ProcessOutput(io.BufferedIOBase):
    """A process's stdout or stderr: ``read``, ``read1``, ``readinto``,
    ``readline`` and iteration by line, each blocking (GIL released) until
    there is data or the output ended (``b''``)."""

    def __init__(self, proc: Process, stream: int):
        super().__init__()
        self._proc = proc
        self._stream = stream

    def readable(self) -> bool:
        return True

    def read1(self, size: Optional[int] = -1) -> bytes:
        return self._proc._read(self._stream, size, whole=False)

    def read(self, size: Optional[int] = -1) -> bytes:
        return self._proc._read(self._stream, size, whole=True)

    def readinto(self, b: Any) -> int:
        view = memoryview(b).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def readinto1(self, b: Any) -> int:
        view = memoryview(b).cast("B")
        data = self.read1(len(view))
        view[: len(data)] = data
        return len(data)

    def readline(self, size: Optional[int] = -1) -> bytes:
        return self._proc._readline(self._stream, -1 if size is None else size)

    def peek(self, size: int = 0) -> bytes:
        return bytes(self._proc._buf[self._stream])


class Process:
    """A remote command (or login shell) running on its own channel, shaped like
    :class:`subprocess.Popen`. Made by :meth:`Session.popen` and
    :meth:`Session.shell`; use it as a context manager so that closing ends the
    command and frees the channel.

    ``stdin``, ``stdout``, ``stderr``: binary file objects (``stderr`` is None on
    a terminal, where the command's stderr is part of stdout). ``returncode``:
    None while it runs, then its exit status, or ``-N`` when signal N ended it
    (``exit_signal`` names it: "TERM")."""

    def __init__(
        self,
        session: _ssh.Session,
        command: Optional[str],
        *,
        pty: Optional[Tuple[str, int, int, bytes]],
        env: List[Tuple[str, str]],
        timeout: Optional[float],
    ):
        check_open(session)
        self.args = command
        self.pty = pty is not None
        self._channel = _ssh.Channel(session)
        self._channel.exec(command, env=env, timeout=timeout, pty=pty)
        self._buf = [bytearray(), bytearray()]
        self._tail = b""  # the last of stdout received, for error messages
        self._eof = False
        self._ended = False
        self._lock = threading.Lock()  # one reader in recv() at a time
        self.returncode: Optional[int] = None
        self.exit_signal: Optional[str] = None
        self.core_dumped = False
        self.stdin = ProcessInput(self)
        self.stdout = ProcessOutput(self, 0)
        self.stderr: Optional[ProcessOutput] = None if self.pty else ProcessOutput(self, 1)

    def __repr__(self) -> str:
        what = "shell" if self.args is None else repr(self.args)
        state = "running" if self.returncode is None else f"returncode={self.returncode}"
        return f"<pyssh.Process {what} {state}>"

    # ---- taking output ------------------------------------------------------------
    def _take(
        self,
        want: Optional[int],
        *,
        timeout: Optional[float] = None,
        block: bool = True,
        end: bool = False,
    ) -> None:
        """One recv(): output into the buffers. `want`: the stream being read (it
        gets CHUNK; the other what OTHER_MAX leaves), or None (both as limited)."""
        limits = [CHUNK if want == i else OTHER_MAX - len(b) for i, b in enumerate(self._buf)]
        with self._lock:
            if self._channel.closed:  # run(), close(), or kill()'s fallback closed it
                self._eof = self._ended = True
                self._finish()
                return
            r = self._channel.recv(
                max(limits[0], 0), max(limits[1], 0), timeout=timeout, block=block, end=end
            )
            self._got(r)

    def _got(self, r: Any) -> None:
        self._buf[0] += r.stdout
        self._buf[1] += r.stderr
        if r.stdout:
            self._tail = (self._tail + r.stdout)[-SHOWN:]
        self._eof = r.eof
        if r.ended and not self._ended:
            self._ended = True
        if r.ended and r.eof:
            self._finish()

    def _finish(self) -> None:
        """The command ended and its output is all taken: its status, and the
        channel freed (the lock is held, or nobody else can read)."""
        if self.returncode is not None:
            return
        st = self._channel.status()
        self._set_returncode(st.exit_status, st.signal, st.core_dumped)
        self._channel.close()

    def _set_returncode(self, status: Optional[int], sig: Optional[str], core: bool) -> None:
        if status is not None:
            self.returncode = status
        elif sig is not None:
            self.exit_signal = printable(sig[:32])  # the server's: shown to people
            self.core_dumped = core
            self.returncode = -(_signal_number(sig) or 1)
        else:
            self.returncode = -1  # closed without a word, as ExecResult says

    def _timed_out(self, what: str, stream: int, timeout: Optional[float]) -> SSHTimeoutError:
        last = self._tail if stream == 0 else bytes(self._buf[1][-SHOWN:])
        tail = last.decode("utf-8", "replace")
        seen = f"; the last output was: {printable(tail)!r}" if tail else "; no output came"
        return SSHTimeoutError(f"{what}: timed out after {timeout:g} seconds{seen}")

    def _wait_output(self, stream: int, dl: _Deadline, what: str) -> bool:
        """More output for `stream`: False at its end."""
        if self._eof:
            return False
        if dl.passed():
            raise self._timed_out(what, stream, dl.timeout)
        try:
            self._take(stream, timeout=dl.left())
        except SSHTimeoutError:
            if dl.end is None:
                raise
            raise self._timed_out(what, stream, dl.timeout) from None
        return True

    def _pop(self, stream: int, n: int) -> bytes:
        buf = self._buf[stream]
        if n < 0 or n >= len(buf):
            data = bytes(buf)  # one copy (buf[:n] would be two): 64 MiB costs ~45 ms
            buf.clear()
            return data
        with memoryview(buf) as view:
            data = bytes(view[:n])
        del buf[:n]
        return data

    def _read(self, stream: int, size: Optional[int], *, whole: bool) -> bytes:
        size = -1 if size is None else size
        dl = _Deadline(None)
        buf = self._buf[stream]
        while (not buf or (whole and (size < 0 or len(buf) < size))) and size != 0:
            if not self._wait_output(stream, dl, "reading"):
                break
        return self._pop(stream, size)

    def _readline(self, stream: int, size: int) -> bytes:
        buf = self._buf[stream]
        dl = _Deadline(None)
        start = 0
        while True:
            i = buf.find(b"\n", start)
            if i >= 0 or (0 <= size <= len(buf)):
                n = i + 1 if i >= 0 else size
                return self._pop(stream, n if size < 0 else min(n, size))
            start = len(buf)
            if not self._wait_output(stream, dl, "reading a line"):
                return self._pop(stream, -1)

    # ---- scripting prompts ----------------------------------------------------------
    def expect(
        self, pattern: Union[str, bytes, Pattern[Any]], *, timeout: Optional[float] = None
    ) -> Any:
        """Read stdout until ``pattern`` (a regular expression: str, bytes or
        compiled; str is matched against UTF-8 bytes) matches; return the
        ``re.Match`` (over the bytes read, which are consumed up to its end).
        ``SSHTimeoutError`` after ``timeout`` seconds, and ``EOFError`` when the
        output ends first, both showing the last output received."""
        rx = _compile(pattern)
        dl = _Deadline(timeout)
        buf = self._buf[0]
        while True:
            m = rx.search(bytes(buf))
            if m is not None:
                del buf[: m.end()]
                return m
            if not self._wait_output(0, dl, f"waiting for {rx.pattern!r}"):
                raise self._ended_first(rx.pattern)

    def read_until(self, delimiter: Union[str, bytes], *, timeout: Optional[float] = None) -> bytes:
        """Read stdout up to and including ``delimiter`` (str is sent as UTF-8);
        errors as for :meth:`expect`."""
        if isinstance(delimiter, str):
            delimiter = delimiter.encode()
        if not delimiter:
            raise ValueError("the delimiter is empty")
        dl = _Deadline(timeout)
        buf = self._buf[0]
        start = 0
        while True:
            i = buf.find(delimiter, start)
            if i >= 0:
                return self._pop(0, i + len(delimiter))
            start = max(len(buf) - len(delimiter) + 1, 0)
            if not self._wait_output(0, dl, f"waiting for {delimiter!r}"):
                raise self._ended_first(delimiter)

    def _ended_first(self, wanted: Any) -> EOFError:
        tail = self._tail.decode("utf-8", "replace")
        return EOFError(
            f"the output ended before {wanted!r} came; the last output was: {printable(tail)!r}"
        )

    # ---- the end -----------------------------------------------------------------------
    def poll(self) -> Optional[int]:
        """The return code, or None while the command runs (never waits)."""
        if self.returncode is None and not self._channel.closed:
            self._take(None, block=False)
        return self.returncode

    def wait(self, timeout: Optional[float] = None) -> int:
        """Wait for the command to end and return its return code. Output that
        comes meanwhile is kept for ``stdout``/``stderr`` (up to 8 MiB each, then
        the command is made to wait, as a pipe would: use :meth:`communicate` for
        large output). ``SSHTimeoutError`` after ``timeout`` seconds."""
        dl = _Deadline(timeout)
        while self.returncode is None:
            if dl.passed():
                raise SSHTimeoutError(
                    f"waiting for the command: timed out after {dl.timeout:g} seconds"
                )
            try:
                self._take(None, timeout=dl.left(), end=True)
            except SSHTimeoutError:
                if dl.end is None:
                    raise
        return self.returncode

    def communicate(
        self, input: Optional[bytes] = None, timeout: Optional[float] = None
    ) -> Tuple[bytes, Optional[bytes]]:
        """Send ``input`` (then end-of-file), read all output until the command
        ends, and return ``(stdout, stderr)`` (stderr None on a terminal). Both
        directions move in one loop, so large input and output cannot deadlock.
        ``SSHTimeoutError`` after ``timeout`` seconds: the command runs on, and a
        later call gets all of its output. Without ``timeout``, Ctrl-C (any
        exception) ends the command, as for :meth:`Session.exec_internal`. On a
        terminal (``pty=True``) the end of input is Ctrl-D at the start of a line:
        end ``input`` with ``b"\\n\\x04"``."""
        if input is not None and self.stdin.closed:
            raise ValueError("communicate() with input, but stdin was closed")
        dl = _Deadline(timeout)
        data = memoryview(input or b"").cast("B")
        if dl.end is None and self.returncode is None and not self._channel.closed:
            out, err = self._run_to_end(data)
        else:
            self._send_and_read(data, dl)
            self.wait(dl.left())
            out, err = self._pop(0, -1), self._pop(1, -1)
        return out, (None if self.pty else err)

    def _run_to_end(self, data: memoryview) -> Tuple[bytes, bytes]:
        """communicate() without a timeout: Channel.run, the C loop of
        exec_internal, moves both ways and captures straight into the results
        (measured: 15% faster and a third less CPU than a loop of recv())."""
        with self._lock:
            r = self._channel.run(stdout=True, stderr=True, stdin=iter([data]) if data else None)
        io.BufferedIOBase.close(self.stdin)  # run() sent the end-of-file
        self._eof = self._ended = True
        self._set_returncode(r.exit_status, r.signal, r.core_dumped)
        got = []
        for i, more in enumerate((r.stdout or b"", r.stderr or b"")):
            got.append(self._pop(i, -1) + more if self._buf[i] else more)
        return got[0], got[1]

    def _send_and_read(self, data: memoryview, dl: _Deadline) -> None:
        pos = 0
        while not self._eof or not self._ended:
            if self._channel.closed:
                return
            if pos == len(data) and not self.stdin.closed:
                self.stdin.close()
            if dl.passed():
                raise SSHTimeoutError(f"communicate: timed out after {dl.timeout:g} seconds")
            chunk = data[pos:] if pos < len(data) else None
            with self._lock:
                if self._channel.closed:
                    return
                try:
                    r = self._channel.recv(CHUNK, CHUNK, timeout=dl.left(), end=True, data=chunk)
                except SSHTimeoutError:
                    if dl.end is None:
                        raise
                    continue  # the deadline is checked above
                pos += r.sent
                if chunk is not None and r.sent < len(chunk) and r.ended:
                    pos = len(data)  # the command is gone: the rest is dropped, as a pipe's
                self._got(r)

    # ---- signals and the terminal --------------------------------------------------------
    def send_signal(self, sig: Union[str, int]) -> None:
        """Ask the server to send ``sig`` ("TERM", "SIGTERM", signal.SIGTERM) to the
        command. The server does not answer: OpenSSH's sshd ignores signals for
        root logins, for instance (:meth:`terminate` and :meth:`kill` handle that)."""
        name = _signal_name(sig)
        if self.returncode is None and not self._channel.closed:
            self._channel.signal(name)

    def terminate(self, grace: float = KILL_GRACE) -> None:
        """SIGTERM; see :meth:`kill`."""
        self._stop("TERM", grace)

    def kill(self, grace: float = KILL_GRACE) -> None:
        """SIGKILL. When the command has not ended ``grace`` seconds later (the
        server ignored the signal: OpenSSH does for root logins), the channel is
        closed instead, a warning logged, and ``returncode`` set to ``-9``: a
        command on a terminal then gets SIGHUP; one without ends when it next
        reads its stdin or writes its output."""
        self._stop("KILL", grace)

    def _stop(self, name: str, grace: float) -> None:
        if self.returncode is not None or self._channel.closed:
            return
        self._channel.signal(name)
        try:
            self.wait(grace)
        except SSHTimeoutError:
            import logging

            logging.getLogger("pyssh").warning(
                "the server did not deliver SIG%s to %r within %g s (OpenSSH ignores "
                "signals for root logins): closing its channel instead",
                name, self.args or "the shell", grace,
            )  # fmt: skip
            self._channel.close()
            self.exit_signal = name
            self.returncode = -(_signal_number(name) or 1)

    def resize(self, cols: int, rows: int) -> None:
        """Tell the remote terminal its new size (what ``stty size`` shows)."""
        if not self.pty:
            raise SSHError("resize(): this process has no terminal (popen(..., pty=True))")
        _size((cols, rows))
        if not self._channel.closed:
            self._channel.resize(cols, rows)

    # ---- closing ------------------------------------------------------------------------
    def close(self) -> None:
        """End the command if it still runs (SIGKILL, or its channel closed) and
        free the channel. Safe to call more than once."""
        if not self._channel.closed and not self._channel.session.closed:
            if self.returncode is None:
                self._channel.signal("KILL")
        self._channel.close()
        for f in (self.stdout, self.stderr):
            if f is not None:
                io.BufferedIOBase.close(f)
        io.BufferedIOBase.close(self.stdin)

    def __enter__(self) -> Process:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _compile(pattern: Union[str, bytes, Pattern[Any]]) -> Pattern[bytes]:
    if isinstance(pattern, re.Pattern):
        if isinstance(pattern.pattern, str):
            return re.compile(pattern.pattern.encode(), pattern.flags & ~re.UNICODE)
        return pattern
    if isinstance(pattern, str):
        return re.compile(pattern.encode())
    if isinstance(pattern, (bytes, bytearray)):
        return re.compile(bytes(pattern))
    raise TypeError(
        f"pattern must be str, bytes or a compiled pattern, not {type(pattern).__name__}"
    )


def open_process(
    session: _ssh.Session,
    command: Optional[str],
    *,
    pty: bool,
    term: str,
    size: Any,
    modes: Modes,
    env: List[Tuple[str, str]],
    timeout: Optional[float],
) -> Process:
    if not isinstance(term, str) or not term or not term.isprintable() or len(term) > 64:
        raise ValueError(f"term must be a terminal name like 'xterm-256color', not {term!r}")
    spec = (term, *_size(size), encode_modes(modes)) if pty else None
    return Process(session, command, pty=spec, env=env, timeout=check_timeout(timeout))
