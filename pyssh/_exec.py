"""Remote commands: the Python half of exec_wait and exec_internal.

The C type ``pyssh._ssh.Channel`` runs the command and moves its output and input
with the GIL released (csrc/channel.c). This module checks the arguments, turns
the many kinds of stdout/stderr target and stdin source into the three the C loop
knows (discard, capture, a callable; an iterator of bytes), and builds the result.
"""

from __future__ import annotations

import codecs
import collections.abc
import io
import os
import signal as _signal
import sys
from typing import (
    IO,
    Any,
    BinaryIO,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Union,
)

from . import _ssh
from ._names import printable
from ._tcp import Steps, run_steps
from ._util import check_open, check_timeout
from .errors import CommandError

__all__ = ["ExecResult", "CommandError", "DEFAULT"]

Command = Union[str, Sequence[str]]
Sink = Union[None, Callable[[bytes], Any], BinaryIO, IO[str], str, "os.PathLike[str]"]
Source = Union[None, bytes, bytearray, memoryview, str, BinaryIO, Iterable[bytes]]

STDIN_CHUNK = 256 * 1024
MAX_COMMAND = 250_000  # bytes of UTF-8


class _Default:
    """The default stdout/stderr target: this process's sys.stdout / sys.stderr."""

    def __repr__(self) -> str:
        return "DEFAULT"


DEFAULT: Any = _Default()


class ExecResult:
    """What a command did: ``status`` (its exit status; ``-N`` when killed by signal
    N, with ``signal`` naming it; ``-1`` if the server reported neither),
    ``stdout`` and ``stderr`` (bytes), ``command`` (as sent)."""

    __slots__ = ("command", "status", "stdout", "stderr", "signal", "core_dumped")

    def __init__(
        self,
        command: str,
        status: int,
        stdout: bytes,
        stderr: bytes,
        signal: Optional[str] = None,
        core_dumped: bool = False,
    ):
        self.command = command
        self.status = status
        self.stdout = stdout
        self.stderr = stderr
        self.signal = signal
        self.core_dumped = core_dumped

    def text(self, encoding: str = "utf-8", errors: str = "replace") -> str:
        """stdout decoded (UTF-8 by default; undecodable bytes become U+FFFD)."""
        return self.stdout.decode(encoding, errors)

    @property
    def stdout_text(self) -> str:
        """stdout decoded as UTF-8 (bytes that are not become U+FFFD)."""
        return self.stdout.decode("utf-8", "replace")

    @property
    def stderr_text(self) -> str:
        """stderr decoded as UTF-8 (bytes that are not become U+FFFD)."""
        return self.stderr.decode("utf-8", "replace")

    @property
    def ok(self) -> bool:
        """True when the exit status is 0."""
        return self.status == 0

    def check(self) -> ExecResult:
        """Raise CommandError unless the status is 0; returns self."""
        if self.status != 0:
            raise command_error(self)
        return self

    # R's ssh_exec_internal returns a list(status, stdout, stderr)
    def __getitem__(self, key: str) -> Any:
        if key in ("status", "stdout", "stderr", "command", "signal"):
            return getattr(self, key)
        raise KeyError(key)

    def __repr__(self) -> str:
        sig = f", signal={self.signal!r}" if self.signal else ""
        return (
            f"ExecResult(command={self.command!r}, status={self.status}{sig}, "
            f"stdout=<{len(self.stdout)} bytes>, stderr=<{len(self.stderr)} bytes>)"
        )


def _tail(data: bytes, lines: int = 10, limit: int = 2000) -> str:
    text = data.decode("utf-8", "replace").rstrip("\n")
    if not text:
        return ""
    parts = text.split("\n")
    cut = "\n".join(parts[-lines:])
    if len(cut) > limit:
        cut = cut[-limit:]
    if len(parts) > lines or len(cut) < len(text):
        cut = "...\n" + cut
    # line by line through the one sanitizer: a remote command cannot drive the
    # terminal that shows the traceback
    return "\n".join(printable(line) for line in cut.split("\n"))


def command_error(r: ExecResult) -> CommandError:
    shown = r.command if len(r.command) <= 200 else r.command[:200] + "..."
    if r.signal:
        what = f"was killed by signal SIG{r.signal}" + (" (core dumped)" if r.core_dumped else "")
    elif r.status == -1:
        what = "ended with no exit status from the server"
    else:
        what = f"exited with status {r.status}"
    tail = _tail(r.stderr)
    msg = f"remote command {shown!r} {what}"
    msg += f"; its stderr ended with:\n{tail}" if tail else " (its stderr was empty)"
    err = CommandError(msg)
    err.command = r.command
    err.status = r.status
    err.returncode = r.status
    err.stdout = r.stdout
    err.stderr = r.stderr
    err.signal = r.signal
    err.result = r
    return err


# ---- arguments ---------------------------------------------------------------------------


def command_text(command: Any) -> str:
    """A str, or a sequence of str joined with newlines into one script."""
    if isinstance(command, str):
        text = command
    elif isinstance(command, (bytes, bytearray)):
        raise TypeError("command must be a str (or a list of str), not bytes: decode it first")
    elif isinstance(command, (collections.abc.Set, collections.abc.Mapping)):
        raise TypeError(
            f"command must be a str or a sequence of str (a list or tuple), not "
            f"{type(command).__name__}, whose lines would have no order"
        )
    else:
        try:
            lines = list(command)
        except TypeError:
            raise TypeError(
                f"command must be a str or a sequence of str, not {type(command).__name__}"
            ) from None
        if not all(isinstance(x, str) for x in lines):
            raise TypeError("every line of a command given as a sequence must be a str")
        text = "\n".join(lines)
    if not text.strip():
        raise ValueError("the command is empty")
    if "\0" in text:
        raise ValueError("the command contains a NUL character")
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_COMMAND:
        # sshd drops the connection on a packet over 256 KiB
        raise ValueError(
            f"the command is {size} bytes: an SSH server takes at most about 256 KiB "
            f"in one request (and Linux at most 128 KiB in one argument). Send a "
            f"long script on stdin instead: exec_wait('sh', stdin=script)"
        )
    return text


def env_pairs(env: Optional[Mapping[str, str]]) -> List[Tuple[str, str]]:
    if env is None:
        return []
    if not isinstance(env, Mapping):
        raise TypeError(f"env must be a mapping of str to str, not {type(env).__name__}")
    pairs = []
    for name, value in env.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise TypeError(f"env names and values must be str: {name!r}={value!r}")
        if not name or "=" in name or "\0" in name or "\0" in value:
            raise ValueError(f"invalid environment variable name or value: {name!r}")
        pairs.append((name, value))
    return pairs


# ---- output targets --------------------------------------------------------------------------


class _TextWriter:
    """Write chunks to a text stream: raw bytes to its .buffer when it has one (after
    flushing the text layer, so that order is kept), else decoded text; flush each."""

    def __init__(self, stream: Any):
        self.stream = stream
        self.buffer = getattr(stream, "buffer", None)
        self.decoder = None
        if self.buffer is None or not hasattr(self.buffer, "write"):
            self.buffer = None
            enc = getattr(stream, "encoding", None) or "utf-8"
            try:
                self.decoder = codecs.getincrementaldecoder(enc)(errors="replace")
            except LookupError:
                self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def __call__(self, chunk: bytes) -> None:
        if self.buffer is not None:
            self.stream.flush()
            _write_all(self.buffer, chunk)
            self.buffer.flush()
        elif self.decoder is not None:
            text = self.decoder.decode(chunk)
            if text:
                self.stream.write(text)
                self.stream.flush()

    def close(self) -> None:
        if self.decoder is not None:
            text = self.decoder.decode(b"", final=True)
            if text:
                self.stream.write(text)
                self.stream.flush()


def _write_all(f: Any, chunk: bytes) -> None:
    n = f.write(chunk)
    if n is None or n >= len(chunk):  # buffered files write it all
        return
    view = memoryview(chunk)[n:]
    while view:  # raw files may write part of it
        n = f.write(view)
        if n is None:
            raise BlockingIOError("the output file is non-blocking and is full")
        view = view[n:]


def _check_file(f: Any, name: str, can: str, how: str) -> None:
    """Refuse, before the command starts, a file object that is closed or not open
    for the needed direction (`can`: "writable" or "readable"); objects that do not
    say are taken as they are."""
    if getattr(f, "closed", False) is True:
        raise ValueError(f"{name}: the file object {f!r} is closed: give an open one (or a path)")
    check = getattr(f, can, None)
    if callable(check):
        try:
            ok = check()
        except Exception:  # cannot tell: its own read/write will say
            return
        if ok is False:
            raise ValueError(f"{name}: the file object {f!r} is not open {how}")


def _open_output(path: str, name: str) -> Any:
    try:
        return open(path, "wb")
    except OSError as e:
        # the same class and errno, with a message that says which argument and what to do
        if isinstance(e, FileNotFoundError):
            why = f"its directory {os.path.dirname(path)!r} does not exist (create it first)"
        elif isinstance(e, IsADirectoryError):
            why = "it is a directory (give the path of a file)"
        else:
            why = e.strerror or str(e)
        raise type(e)(e.errno, f"{name}: cannot write to {path!r}: {why}") from None


class Outputs:
    """The stdout and stderr targets of one command: what to hand to C, and what to
    close afterwards."""

    def __init__(self, stdout: Any, stderr: Any):
        self._opened: List[Any] = []
        self._writers: List[Any] = []
        by_path: Dict[str, Any] = {}
        try:
            self.stdout = self._target(stdout, "stdout", by_path)
            self.stderr = self._target(stderr, "stderr", by_path)
        except BaseException:
            self.close()  # a file opened for stdout, when stderr's fails
            raise

    def _target(self, t: Any, name: str, by_path: Dict[str, Any]) -> Any:
        if t is DEFAULT:
            t = sys.stdout if name == "stdout" else sys.stderr
            if t is None:  # pythonw: no console
                return None
            w = _TextWriter(t)
            self._writers.append(w)
            return w
        if t is None:
            return None
        if isinstance(t, (str, os.PathLike)):
            path = os.path.abspath(os.fspath(t))
            if path not in by_path:
                f = _open_output(path, name)  # overwritten, as a shell's > does
                self._opened.append(f)
                by_path[path] = f.write
            return by_path[path]
        if isinstance(t, (bytes, bytearray)):
            raise TypeError(f"{name}: give a path as str or os.PathLike, not bytes")
        if hasattr(t, "write"):
            _check_file(t, name, "writable", "for writing: open it with 'wb' (or give its path)")
        if isinstance(t, io.TextIOBase) or (
            hasattr(t, "write")
            and hasattr(t, "encoding")
            and not isinstance(t, (io.RawIOBase, io.BufferedIOBase))
        ):
            w = _TextWriter(t)
            self._writers.append(w)
            return w
        if hasattr(t, "write") and callable(t.write):
            f = t
            return lambda chunk: _write_all(f, chunk)
        if callable(t):
            return t
        raise TypeError(
            f"{name} must be a callable taking bytes, a binary file object, a path, "
            f"a text stream or None, not {type(t).__name__}"
        )

    def close(self) -> None:
        for w in self._writers:
            try:
                w.close()
            except Exception:
                pass
        for f in self._opened:
            f.close()


# ---- stdin ----------------------------------------------------------------------------------


def _file_chunks(f: Any) -> Iterator[bytes]:
    read = getattr(f, "read1", None) or f.read
    while True:
        chunk = read(STDIN_CHUNK)
        if not chunk:
            return
        if isinstance(chunk, str):
            chunk = chunk.encode("utf-8")
        yield chunk


def _iter_chunks(items: Iterable[Any]) -> Iterator[Any]:
    for item in items:
        if isinstance(item, str):
            yield item.encode("utf-8")
        elif isinstance(item, (bytes, bytearray, memoryview)):
            yield item
        else:
            raise TypeError(f"stdin items must be bytes (or str), not {type(item).__name__}")


def stdin_source(stdin: Any) -> Optional[Iterator[Any]]:
    if stdin is None:
        return None
    if isinstance(stdin, str):
        return iter([stdin.encode("utf-8")])
    if isinstance(stdin, (bytes, bytearray, memoryview)):
        return iter([stdin])
    if hasattr(stdin, "read") and callable(stdin.read):
        _check_file(stdin, "stdin", "readable", "for reading: open it with 'rb'")
        return _file_chunks(stdin)
    if isinstance(stdin, (collections.abc.Set, collections.abc.Mapping)):
        raise TypeError(
            f"stdin must be bytes, str, a file object or an iterable of bytes, not "
            f"{type(stdin).__name__}, which has no order of its own"
        )
    if isinstance(stdin, (int, float)):
        raise TypeError(
            f"stdin must be bytes, str, a file object or an iterable of bytes, "
            f"not {type(stdin).__name__}"
        )
    try:
        return _iter_chunks(iter(stdin))
    except TypeError:
        raise TypeError(
            f"stdin must be bytes, str, a file object or an iterable of bytes, "
            f"not {type(stdin).__name__}"
        ) from None


# ---- running -----------------------------------------------------------------------------------


def _status(status: Optional[int], signame: Optional[str]) -> int:
    if status is not None:
        return status
    if signame:
        num = getattr(_signal, "SIG" + signame, None)
        if num is not None:
            return -int(num)
    return -1


def run(
    session: _ssh.Session,
    command: Any,
    stdout: Any,
    stderr: Any,
    stdin: Any,
    timeout: Any,
    env: Any,
    capture: bool,
) -> ExecResult:
    return run_steps(run_flow(session, command, stdout, stderr, stdin, timeout, env, capture))


def run_flow(
    session: _ssh.Session,
    command: Any,
    stdout: Any,
    stderr: Any,
    stdin: Any,
    timeout: Any,
    env: Any,
    capture: bool,
) -> Steps[ExecResult]:
    """run(), as steps (pyssh/_tcp.py): pyssh.Group runs many at once."""
    text = command_text(command)
    timeout = check_timeout(timeout)
    pairs = env_pairs(env)
    source = stdin_source(stdin)
    check_open(session)  # before a path given as a target is truncated
    if capture:
        outputs = None
        out_t: Any = True
        err_t: Any = True
    else:
        outputs = Outputs(stdout, stderr)
        out_t, err_t = outputs.stdout, outputs.stderr
    try:
        ch = _ssh.Channel(session)
        try:
            # the timeout is inactivity: nothing received or sent for that long,
            # while starting the command, then while it runs
            yield ch.exec(text, env=pairs, timeout=timeout, defer=True)
            r = yield ch.run(stdout=out_t, stderr=err_t, stdin=source, timeout=timeout, defer=True)
        finally:
            ch.close()
    finally:
        if outputs is not None:
            outputs.close()
    return ExecResult(
        text,
        _status(r.exit_status, r.signal),
        r.stdout if r.stdout is not None else b"",
        r.stderr if r.stderr is not None else b"",
        r.signal,
        bool(r.core_dumped),
    )
