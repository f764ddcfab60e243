"""SFTP: the Python half of pyssh.SFTP.

The C type ``_ssh.SFTP`` speaks SFTP version 3 over one channel: framing, request
ids, and the two loops that move file data with many requests in flight
(``download``, ``upload``), with the GIL released. This module builds and reads
the messages (attributes, names, statuses), maps statuses to exceptions, walks
trees, and keeps downloads all-or-nothing (a temporary file renamed into place).
"""

from __future__ import annotations

import errno
import io
import logging
import os
import posixpath
import stat as _stat
import struct
import sys
import time
from typing import Any, Callable, Dict, Iterator, List, NamedTuple, Optional, Tuple

from . import _conns, _local, _ssh
from ._names import printable
from ._progress import Progress, Reporter
from ._tcp import Steps, run_steps
from ._util import check_timeout, transfer_paths
from .errors import (
    SFTPError,
    SFTPFileExistsError,
    SFTPFileNotFoundError,
    SFTPIsADirectoryError,
    SFTPNotADirectoryError,
    SFTPPermissionError,
    SSHError,
)

# message types (draft-ietf-secsh-filexfer-02, version 3)
OPEN, CLOSE, READ, WRITE, LSTAT, FSTAT, SETSTAT, FSETSTAT = 3, 4, 5, 6, 7, 8, 9, 10
OPENDIR, READDIR, REMOVE, MKDIR, RMDIR, REALPATH, STAT, RENAME = 11, 12, 13, 14, 15, 16, 17, 18
READLINK, SYMLINK, EXTENDED = 19, 20, 200
STATUS, HANDLE, DATA, NAME, ATTRS, EXTENDED_REPLY = 101, 102, 103, 104, 105, 201
FX_OK, FX_EOF, FX_NO_SUCH_FILE, FX_PERMISSION_DENIED, FX_FAILURE = 0, 1, 2, 3, 4
FX_OP_UNSUPPORTED, FX_FILE_ALREADY_EXISTS = 8, 11
F_READ, F_WRITE, F_APPEND, F_CREAT, F_TRUNC, F_EXCL = 1, 2, 4, 8, 16, 32
A_SIZE, A_UIDGID, A_PERMISSIONS, A_ACMODTIME, A_EXTENDED = 1, 2, 4, 8, 0x80000000

BATCH_MAX = 64  # requests in one batch() (csrc/sftp.c)
INFLIGHT = 16  # READ/WRITE requests in flight per transfer at least (C grows downloads')
STREAMS_MAX = 8  # channels a striped transfer uses by default at most (sshd: MaxSessions 10)
STRIPE_MIN = 4 << 20  # a transfer takes one more channel per this many bytes at most
OFFSET_MAX = (1 << 63) - 1  # SFTP offsets are uint64; files end before 2**63 (off_t)
DEPTH_MAX = 64  # directories a download descends, as OpenSSH's sftp (MAX_DIR_DEPTH)

log = logging.getLogger("pyssh")


def _op(method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """The one place an SFTP flow makes a C call that would wait (``start``,
    ``batch``, ``request``, ``send``, ``upload``, ``download`` of an ``_ssh.SFTP``):
    the call with defer=True, its ``_ssh.Op`` for the flow to yield (``send``: None
    when it needs no waiting; its Op's result, when there is one, is ignored).
    ``run_steps`` waits for it (``Op.wait()``); a Group's worker moves it in its
    Driver with its other hosts'."""
    return method(*args, defer=True, **kwargs)


def _closing() -> bool:
    """In a flow's ``finally``: is the flow being closed (GeneratorExit: whoever ran
    it gave it up)? Then it must not wait for anything: its cleanup requests (the
    CLOSE of a handle) are left out (its session is closed after it), and the
    local cleanup of the flows it is in still runs."""
    return isinstance(sys.exc_info()[1], GeneratorExit)


def _str(b: bytes) -> bytes:
    return struct.pack(">I", len(b)) + b


def _path(p: Any) -> bytes:
    p = os.fspath(p)
    if isinstance(p, str):
        if "\0" in p:
            raise ValueError(f"invalid remote path {p!r}: it holds a NUL")
        return p.encode("utf-8", "surrogateescape")
    raise TypeError(f"a remote path must be str or os.PathLike[str], not {type(p).__name__}")


class SFTPAttributes:
    """A remote file's attributes, with ``os.stat_result``'s names: ``st_size``,
    ``st_mode``, ``st_uid``, ``st_gid``, ``st_atime``, ``st_mtime`` (None where the
    server did not say). ``filename`` is set for entries of a directory listing."""

    __slots__ = (
        "st_size",
        "st_uid",
        "st_gid",
        "st_mode",
        "st_atime",
        "st_mtime",
        "filename",
        "longname",
        "extended",
    )

    def __init__(self) -> None:
        self.st_size: Optional[int] = None
        self.st_uid: Optional[int] = None
        self.st_gid: Optional[int] = None
        self.st_mode: Optional[int] = None
        self.st_atime: Optional[int] = None
        self.st_mtime: Optional[int] = None
        self.filename: Optional[str] = None
        self.longname: Optional[str] = None
        self.extended: Dict[str, bytes] = {}

    @classmethod
    def _from(cls, t: Tuple[Any, ...]) -> SFTPAttributes:
        """From the tuple the C side built of checked attributes."""
        a = cls()
        a.st_size, a.st_uid, a.st_gid, a.st_mode, a.st_atime, a.st_mtime, ext = t
        a.extended = {k.decode("utf-8", "replace"): v for k, v in ext}
        return a

    def is_dir(self) -> bool:
        """The mode says directory (False when the server sent no mode)."""
        return self.st_mode is not None and _stat.S_ISDIR(self.st_mode)

    def is_file(self) -> bool:
        """The mode says regular file (False when the server sent no mode)."""
        return self.st_mode is not None and _stat.S_ISREG(self.st_mode)

    def is_symlink(self) -> bool:
        """The mode says symbolic link (False when the server sent no mode)."""
        return self.st_mode is not None and _stat.S_ISLNK(self.st_mode)

    def __repr__(self) -> str:
        mode = oct(self.st_mode) if self.st_mode is not None else None
        name = f"{self.filename!r}, " if self.filename is not None else ""
        return (
            f"SFTPAttributes({name}size={self.st_size}, mode={mode}, uid={self.st_uid}, "
            f"gid={self.st_gid}, mtime={self.st_mtime})"
        )


def _entry(e: Tuple[bytes, bytes, Tuple[Any, ...]]) -> SFTPAttributes:
    """A NAME reply's entry (name, longname, attributes) as SFTPAttributes."""
    a = SFTPAttributes._from(e[2])
    a.filename = e[0].decode("utf-8", "surrogateescape")
    a.longname = e[1].decode("utf-8", "replace")
    return a


def _attrs(
    size: Optional[int] = None,
    mode: Optional[int] = None,
    times: Optional[Tuple[int, int]] = None,
    owner: Optional[Tuple[int, int]] = None,
) -> bytes:
    flags, body = 0, b""
    if size is not None:
        flags |= A_SIZE
        body += struct.pack(">Q", size)
    if owner is not None:  # the draft's order: size, uid/gid, permissions, times
        flags |= A_UIDGID
        body += struct.pack(">II", owner[0], owner[1])
    if mode is not None:
        flags |= A_PERMISSIONS
        body += struct.pack(">I", mode)
    if times is not None:
        flags |= A_ACMODTIME
        body += struct.pack(">II", int(times[0]) & 0xFFFFFFFF, int(times[1]) & 0xFFFFFFFF)
    return struct.pack(">I", flags) + body


_CLASSES = {
    FX_NO_SUCH_FILE: (SFTPFileNotFoundError, errno.ENOENT),
    FX_PERMISSION_DENIED: (SFTPPermissionError, errno.EACCES),
    FX_FILE_ALREADY_EXISTS: (SFTPFileExistsError, errno.EEXIST),
    FX_OP_UNSUPPORTED: (SFTPError, errno.EOPNOTSUPP),
}


def _error(
    code: int, message: bytes, what: str, path: Optional[str], path2: Optional[str] = None
) -> SFTPError:
    """A failed status (any code but FX_OK, unknown ones included) as an exception;
    the server's own message is shown, made printable."""
    cls, num = _CLASSES.get(code, (SFTPError, errno.EIO))
    text = f"{what}: {printable(message) or 'failed'} (SFTP status {code})"
    if path2 is not None:
        return cls(num, text, path, None, path2)
    return cls(num, text, path)


class SFTPLimits(NamedTuple):
    """The server's limits (limits@openssh.com), in bytes; 0 means no limit (for
    the handles) or unknown."""

    max_packet_length: int
    max_read_length: int
    max_write_length: int
    max_open_handles: int


READ_AHEAD_MAX = 8 << 20  # the file object's read-ahead grows to this on sequential reads


class _FileSteps:
    """What a remote file object does, written once as flows: the blocking
    ``_RemoteRaw`` (under ``SFTP.open()``) runs them with ``run_steps``, pyssh.aio's
    ``AsyncSFTPFile`` in the event loop. Positioned reads and writes on an open
    remote handle; sequential reads fetch ahead (a window that doubles up to 8 MiB,
    its READ requests in flight together); each write sends its data in WRITE
    requests in flight together."""

    name: str
    mode: str
    _sftp: SFTP
    _h: bytes

    def _setup_file(
        self,
        sftp: SFTP,
        path: str,
        handle: bytes,
        mode: str,
        readable: bool,
        writable: bool,
        position: int,
    ) -> None:
        self.name = path
        self.mode = mode
        self._sftp = sftp
        self._h = handle
        self._readable = readable
        self._writable = writable
        self._pos = position
        self._ahead = b""  # fetched data starting at self._ahead_at
        self._ahead_at = 0
        self._window = sftp.max_read * 4

    def _is_closed(self) -> bool:
        raise NotImplementedError

    def _check(self) -> None:
        if self._is_closed():
            raise ValueError("I/O operation on closed file.")

    def _check_read(self) -> None:
        self._check()
        if not self._readable:
            raise io.UnsupportedOperation("read")

    def _check_write(self, what: str = "write") -> None:
        self._check()
        if not self._writable:
            raise io.UnsupportedOperation(what)

    def _fetch_steps(self, offset: int, want: int) -> Steps[bytes]:
        """Up to `want` bytes from `offset` (READ requests in flight together);
        fewer only where the server said the file ends."""
        s = self._sftp
        got = yield _op(s._c.read, self._h, offset, want, s._timeout, INFLIGHT, s.max_read)
        if got.status >= 0:
            raise _error(got.status, got.message, "read", self.name)
        data: bytes = got.data
        return data

    def _fill_steps(self, n: int) -> Steps[int]:
        """Make the fetched data hold the position, fetching ahead when it does not
        (at least `n` bytes; a bigger window while the reads are sequential): where
        the position is in it, or -1 at the end of the file."""
        start = self._pos - self._ahead_at
        if 0 <= start < len(self._ahead):
            return start
        sequential = self._pos == self._ahead_at + len(self._ahead) and self._ahead
        self._window = (
            min(self._window * 2, READ_AHEAD_MAX) if sequential else self._sftp.max_read * 4
        )
        want = min(max(n, self._window), OFFSET_MAX - self._pos)
        if want == 0:
            return -1  # nothing can lie beyond the largest offset
        data = yield from self._fetch_steps(self._pos, want)
        self._ahead, self._ahead_at = data, self._pos
        return 0 if data else -1

    def _readinto_steps(self, b: Any) -> Steps[int]:
        """The raw readinto(): from the fetched data (fetched first if need be)."""
        self._check_read()
        view = memoryview(b).cast("B")
        n = len(view)
        if n == 0:
            return 0
        start = yield from self._fill_steps(n)
        if start < 0:
            return 0
        k = min(n, len(self._ahead) - start)
        view[:k] = self._ahead[start : start + k]
        self._pos += k
        return k

    def _read_steps(self, size: int = -1) -> Steps[bytes]:
        """Up to `size` bytes from the position (all to the end if negative), fewer
        only at the end of the file; in pieces of at most 8 MiB (the memory a
        large `size` takes is what arrives)."""
        chunks: List[bytes] = []
        left = size if size >= 0 else OFFSET_MAX
        while left > 0:
            b = bytearray(min(left, max(self._window, 1 << 20), READ_AHEAD_MAX))
            k = yield from self._readinto_steps(b)
            if not k:
                break
            chunks.append(bytes(b[:k]))
            left -= k
        return b"".join(chunks)

    def _pread_steps(self, size: int, offset: int) -> Steps[bytes]:
        """`size` bytes from `offset` (all to the end if negative), the position
        left as it is: pieces of up to 8 MiB, each READ requests in flight."""
        self._check_read()
        _offset_ok(offset, self.name)
        chunks: List[bytes] = []
        left = size if size >= 0 else OFFSET_MAX
        while left > 0:
            want = min(left, READ_AHEAD_MAX, OFFSET_MAX - offset)
            if want <= 0:
                break
            data = yield from self._fetch_steps(offset, want)
            chunks.append(data)
            offset += len(data)
            left -= len(data)
            if len(data) < want:
                break  # the end of the file
        return b"".join(chunks)

    def _readline_steps(self, sep: bytes = b"\n") -> Steps[bytes]:
        """One line from the position, `sep` included (b"" at the end); what was
        fetched past it stays for the next read."""
        self._check_read()
        line = bytearray()
        while True:
            start = yield from self._fill_steps(1)
            if start < 0:
                return bytes(line)
            end = self._line_end(bytes(line[-(len(sep) - 1) :]) if line else b"", start, sep)
            if end >= 0:
                line += self._ahead[start:end]
                self._pos += end - start
                return bytes(line)
            line += self._ahead[start:]
            self._pos += len(self._ahead) - start

    def _line_end(self, tail: bytes, start: int, sep: bytes) -> int:
        """Where in the fetched data from `start` a line ends (past `sep`), -1 if
        not there; `tail`: the end of the line so far (a `sep` of more than one byte
        may begin there)."""
        ahead = self._ahead
        if tail and len(sep) > 1:
            joint = (tail + ahead[start : start + len(sep) - 1]).find(sep)
            if joint >= 0:
                return start + joint + len(sep) - len(tail)
        i = ahead.find(sep, start)
        return i + len(sep) if i >= 0 else -1

    def _buffered_line(self, sep: bytes) -> Optional[bytes]:
        """The next line if the fetched data holds all of it (no waiting), else None."""
        self._check_read()
        start = self._pos - self._ahead_at
        if not (0 <= start < len(self._ahead)):
            return None
        end = self._line_end(b"", start, sep)
        if end < 0:
            return None
        self._pos += end - start
        return self._ahead[start:end]

    def _write_steps(self, b: Any, offset: Optional[int] = None) -> Steps[int]:
        """Write `b` at the position (moved past it; the end first in append mode),
        or at `offset` (the position left as it is): the bytes written, all of
        which the server confirmed."""
        self._check_write()
        data = bytes(b)
        if offset is not None:
            _offset_ok(offset, self.name)
        if not data:
            return 0
        at = offset
        if at is None:
            if self.mode.startswith("a"):
                self._pos = yield from self._size_steps()
            at = self._pos
        s = self._sftp
        self._ahead = b""  # what was fetched may be stale now
        done = yield _op(s._c.write, self._h, at, data, s._timeout, INFLIGHT, s.max_write)
        if done.status >= 0:
            raise _error(done.status, done.message, "write", self.name)
        if done.moved != len(data):
            raise SFTPError(
                errno.EIO,
                f"write: the server confirmed {done.moved} of {len(data)} bytes",
                self.name,
            )
        if offset is None:
            self._pos = at + len(data)
        return len(data)

    def _attrs_steps(self) -> Steps[SFTPAttributes]:
        _, value = yield from self._sftp._call_steps(FSTAT, _str(self._h), "fstat", self.name)
        return SFTPAttributes._from(value)

    def _size_steps(self) -> Steps[int]:
        return (yield from self._attrs_steps()).st_size or 0

    def _seek_steps(self, offset: int, whence: int = io.SEEK_SET) -> Steps[int]:
        self._check()
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = (yield from self._size_steps()) + offset
        else:
            raise ValueError(f"invalid whence ({whence}, should be 0, 1 or 2)")
        _offset_ok(pos, self.name)
        self._pos = pos
        return pos

    def _truncate_steps(self, size: Optional[int] = None) -> Steps[int]:
        self._check_write("truncate")
        if size is None:
            size = self._pos
        _offset_ok(size, self.name)
        payload = _str(self._h) + _attrs(size=size)
        yield from self._sftp._status_steps(FSETSTAT, payload, "truncate", self.name)
        self._ahead = b""
        return size

    def _fsync_steps(self) -> Steps[None]:
        self._check()
        s = self._sftp
        s._need("fsync@openssh.com", "fsync", self.name)
        payload = _str(b"fsync@openssh.com") + _str(self._h)
        yield from s._status_steps(EXTENDED, payload, "fsync", self.name)

    def _close_handle_steps(self) -> Steps[None]:
        """CLOSE the handle (nothing if the channel is closed; never when the flow
        is given up)."""
        if not self._sftp._c.closed:
            yield from self._sftp._close_handle_steps(self._h)


def _offset_ok(pos: int, name: str) -> None:
    """An SFTP file position: an int from 0 to 2**63-1 (an OSError, EINVAL)."""
    if isinstance(pos, bool) or not isinstance(pos, int):
        raise TypeError(f"a file position must be an int, not {type(pos).__name__}")
    if pos < 0:
        raise OSError(errno.EINVAL, "Invalid argument: a negative position", name)
    if pos > OFFSET_MAX:
        raise OSError(
            errno.EINVAL,
            "Invalid argument: a position beyond 2**63-1, the largest SFTP offset",
            name,
        )


class _RemoteRaw(_FileSteps, io.RawIOBase):
    """The raw file under ``SFTP.open()``: the flows of :class:`_FileSteps`, run
    here."""

    def __init__(
        self,
        sftp: SFTP,
        path: str,
        handle: bytes,
        mode: str,
        readable: bool,
        writable: bool,
        position: int,
    ):
        io.RawIOBase.__init__(self)
        self._setup_file(sftp, path, handle, mode, readable, writable, position)

    def _is_closed(self) -> bool:
        return self.closed

    def readable(self) -> bool:
        return self._readable

    def writable(self) -> bool:
        return self._writable

    def seekable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        return run_steps(self._readinto_steps(b))

    def readall(self) -> bytes:
        return run_steps(self._read_steps(-1))

    def write(self, b: Any) -> int:
        return run_steps(self._write_steps(b))

    def _attrs(self) -> SFTPAttributes:
        return run_steps(self._attrs_steps())

    def _size(self) -> int:
        return run_steps(self._size_steps())

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return run_steps(self._seek_steps(offset, whence))

    def tell(self) -> int:
        self._check()
        return self._pos

    def truncate(self, size: Optional[int] = None) -> int:
        return run_steps(self._truncate_steps(size))

    def fileno(self) -> int:
        raise io.UnsupportedOperation("a remote file has no file descriptor")

    def isatty(self) -> bool:
        return False

    def fsync(self) -> None:
        """Ask the server to write the file to its disk (fsync@openssh.com): on a
        buffered file, ``f.flush()`` first, or ``sftp.fsync(f)`` which does both."""
        run_steps(self._fsync_steps())

    def close(self) -> None:
        if not self.closed:
            try:
                run_steps(self._close_handle_steps())
            finally:
                io.RawIOBase.close(self)


def _walk_depth(top: str, depth: int) -> None:
    """walk() stops below 64 levels, as downloads do: a server cannot make it
    recurse for ever."""
    if depth > DEPTH_MAX:
        raise SFTPError(
            errno.ELOOP, f"walk: {printable(top)} is more than {DEPTH_MAX} directories deep", top
        )


def _walk_split(entries: List[SFTPAttributes]) -> Tuple[List[str], List[str]]:
    """A directory's entries as walk() gives them: (dirnames, filenames); a symlink
    to a directory is a file name (never descended)."""
    dirs: List[str] = []
    files: List[str] = []
    for a in entries:
        (dirs if a.is_dir() else files).append(a.filename or "")
    return dirs, files


def _open_mode(
    mode: Any,
    buffering: int,
    encoding: Optional[str],
    errors: Optional[str],
    newline: Optional[str],
) -> Tuple[str, bool, bool, bool, int]:
    """SFTP.open()'s mode checked as the builtin open() checks it: (kind "r", "w",
    "a" or "x", binary, readable, writable, the SFTP open flags)."""
    if not isinstance(mode, str):
        raise TypeError(f"mode must be a str, not {type(mode).__name__}")
    chars = set(mode)
    kinds = chars & set("rwax")
    if len(mode) != len(chars) or len(kinds) != 1 or chars - set("rwax+bt") or {"b", "t"} <= chars:
        raise ValueError(f"invalid mode: {mode!r}")
    binary = "b" in chars
    if binary and (encoding is not None or errors is not None or newline is not None):
        raise ValueError("binary mode doesn't take an encoding, errors or newline argument")
    if buffering == 0 and not binary:
        raise ValueError("can't have unbuffered text I/O")
    kind = kinds.pop()
    plus = "+" in chars
    readable = kind == "r" or plus
    writable = kind != "r" or plus
    flags = (F_READ if readable else 0) | (F_WRITE if writable else 0)
    if kind == "w":
        flags |= F_CREAT | F_TRUNC
    elif kind == "a":
        flags |= F_CREAT | F_APPEND
    elif kind == "x":
        flags |= F_CREAT | F_EXCL
    return kind, binary, readable, writable, flags


class SFTP:
    """One SFTP channel on a session (``session.sftp()``), reusable for many
    operations; a context manager. Not for two threads at once: give each thread
    its own (several can run on one session).

    ``max_listing``, ``max_listing_bytes``: a directory listing of more entries, or
    more bytes of names, long names and extended attributes, is an SFTPError (a
    server cannot make the client list forever, nor fill its memory)."""

    max_listing = 1_000_000
    max_listing_bytes = 256 << 20

    def __init__(self, session: Any, timeout: Optional[float] = None):
        self._setup(session, timeout)
        run_steps(self._start_steps())

    def _setup(self, session: Any, timeout: Optional[float]) -> None:
        """The channel made, not started (``_start_steps`` starts it)."""
        self._session = session
        self._timeout = check_timeout(timeout)
        self._c = _ssh.SFTP(session)
        self._pool: List[Any] = []  # more channels, started, for striped transfers
        self._pool_max = 16  # lowered when the server refuses more
        self._conns: List[SFTP] = []  # on more connections, for connections=
        self._owns_session = False  # one of those: its session closes with it
        self._complete_to = 0  # the last range: every byte below this was moved
        self._rtt = 0.0
        self.extensions: Dict[str, bytes] = {}
        self.max_read = self.max_write = 32768
        self._limits: Optional[SFTPLimits] = None

    def _start_steps(self) -> Steps[None]:
        """Start the channel (open, subsystem, INIT) and ask the server's limits."""
        t0 = time.monotonic()
        self.version, extensions = yield _op(self._c.start, timeout=self._start_timeout())
        # the path's round trip (start: open, subsystem, INIT), for how many streams
        self._rtt = (time.monotonic() - t0) / 3
        self.extensions = {k.decode("utf-8", "replace"): v for k, v in extensions}
        if "limits@openssh.com" in self.extensions:
            t0 = time.monotonic()
            rtype, value = yield _op(
                self._c.request, EXTENDED, _str(b"limits@openssh.com"), timeout=self._timeout
            )
            self._rtt = min(self._rtt, time.monotonic() - t0)
            if rtype == EXTENDED_REPLY:
                self._limits = SFTPLimits(*value)
                _packet, rd, wr, _handles = value
                self.max_read = max(1, min(rd or 32768, 1 << 20))
                self.max_write = max(1, min(wr or 32768, 1 << 20))

    def _start_timeout(self) -> float:
        return self._timeout if self._timeout else 30.0

    # ---- lifetime
    def close(self) -> None:
        """Close the channel (and those of striped transfers). Calling it again does
        nothing."""
        for c in self._pool:
            c.close()
        self._pool = []
        for f in self._conns:
            f.close()
        self._conns = []
        self._c.close()
        if self._owns_session:
            self._session.close()

    # ---- striped transfers
    def _streams(self, streams: Optional[int], size: int) -> int:
        """How many channels a transfer of `size` bytes uses: `streams`, or by
        default one per 5 ms of round trip (the server's fixed 2 MiB window per
        channel then still allows ~400 MB/s), up to STREAMS_MAX and one per
        STRIPE_MIN bytes; one on a path under 2 ms."""
        if streams is not None:
            if isinstance(streams, bool) or not isinstance(streams, int) or not 1 <= streams <= 16:
                raise ValueError(f"streams must be an int from 1 to 16, not {streams!r}")
            return streams if size >= 2 * STRIPE_MIN else 1
        if self._rtt < 0.002:
            return 1
        return max(1, min(STREAMS_MAX, int(self._rtt * 200) + 1, size // STRIPE_MIN))

    def _connections(self, connections: Optional[int], streams: Optional[int], size: int) -> int:
        """How many connections a transfer of `size` bytes uses: `connections`, or
        by default one, and more only when this one's server refused the channels
        that `streams` wants (MaxSessions), up to 4; one per 2 x STRIPE_MIN bytes."""
        if connections is not None:
            c = connections
            if (
                isinstance(c, bool)
                or not isinstance(c, int)
                or not 1 <= c <= _conns.CONNECTIONS_MAX
            ):
                raise ValueError(f"connections must be an int from 1 to 8, not {c!r}")
        else:
            per = 1 + self._pool_max  # the channels one connection can have
            c = min(4, -(-self._streams(streams, size) // per))
        return max(1, min(c, size // (2 * STRIPE_MIN)))

    def _more_connections(self, n: int) -> List[SFTP]:
        """n more connections like this one's session, each with an SFTP channel
        (fewer when some cannot be made): kept for the next transfers."""
        self._conns = [f for f in self._conns if not f.closed]
        if len(self._conns) < n and getattr(self._session, "_again", None) is not None:
            self._conns += _conns.open_more(self._session, n - len(self._conns), self._timeout)
        return self._conns[:n]

    def _stripes_steps(self, n: int) -> Steps[List[Any]]:
        """n - 1 more started channels (fewer when the server allows fewer): kept
        for the next transfers, started together when missing."""
        self._pool = [c for c in self._pool if not c.closed]  # a stream that died
        want = min(n - 1, self._pool_max)
        if len(self._pool) < want:
            new = [_ssh.SFTP(self._session) for _ in range(want - len(self._pool))]
            try:
                yield _op(new[0].start, timeout=self._start_timeout(), also=new[1:])
            except (SFTPError, SSHError) as e:
                if self._c.closed:
                    raise
                log.info("SFTP: no more channels for striping (%s)", e)
            started = [c for c in new if not c.closed]
            if len(started) < len(new):
                # sshd's MaxSessions (10 by default): settle for what there is
                log.info(
                    "SFTP: the server refused %d of %d more channels: striping over %d",
                    len(new) - len(started),
                    len(new),
                    1 + len(self._pool) + len(started),
                )
                self._pool_max = len(self._pool) + len(started)
            self._pool += started
        return self._pool[:want]

    def _open_stripes_steps(
        self, stripes: List[Any], rpath: str, flags: int
    ) -> Steps[List[Tuple[Any, bytes]]]:
        """Open `rpath` on each stripe at once: [(channel, handle)]. On a failure,
        the handles opened are closed and the error raised."""
        if not stripes:
            return []
        req = [(OPEN, _str(_path(rpath)) + struct.pack(">I", flags) + _attrs())]
        replies = yield _op(
            stripes[0].batch,
            req,
            timeout=self._timeout,
            what=f"open {printable(rpath)}",
            also=[(c, req) for c in stripes[1:]],
        )
        opened = [(c, r[0][1]) for c, r in zip(stripes, replies) if r[0][0] == HANDLE]
        if len(opened) < len(stripes):
            yield from self._close_stripes_steps(opened, wait=False)
            code, msg = next(r[0][1] for r in replies if r[0][0] != HANDLE)
            raise _error(code, msg, "open", rpath)
        return opened

    def _close_stripes_steps(self, opened: List[Tuple[Any, bytes]], wait: bool) -> Steps[List[Any]]:
        """CLOSE each stripe's handle; `wait`: for the answers (after an upload:
        its data is safe only once closed), returned."""
        live = [(c, h) for c, h in opened if not c.closed]
        if not wait:
            for c, h in live:
                yield from self._send_close_steps(c, h)
            return []
        if not live:
            return []
        replies: List[Any] = yield _op(
            live[0][0].batch,
            [(CLOSE, _str(live[0][1]))],
            timeout=self._timeout,
            what="closing a remote file",
            also=[(c, [(CLOSE, _str(h))]) for c, h in live[1:]],
        )
        return [r[0] for r in replies]

    @property
    def closed(self) -> bool:
        """True once the SFTP channel is closed (by close(), an error, or its session)."""
        return self._c.closed

    def __enter__(self) -> SFTP:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        # tracebacks show objects whose __init__ failed: no channel, or not started
        c, version = getattr(self, "_c", None), getattr(self, "version", None)
        return f"<pyssh.SFTP version {version}, {'closed' if c is None or c.closed else 'open'}>"

    # ---- requests
    def _call_steps(
        self, kind: int, payload: bytes, what: str, path: Optional[str], path2: Optional[str] = None
    ) -> Steps[Tuple[int, Any]]:
        """One request and its reply, which the C side checked against the request
        (an OK status comes only where the request expects no other answer)."""
        rtype, value = yield _op(
            self._c.request,
            kind,
            payload,
            timeout=self._timeout,
            what=f"{what} {printable(path)}" if path else what,
        )
        if rtype == STATUS and value[0] != FX_OK:
            raise _error(value[0], value[1], what, path, path2)
        return rtype, value

    def _call(
        self, kind: int, payload: bytes, what: str, path: Optional[str], path2: Optional[str] = None
    ) -> Tuple[int, Any]:
        return run_steps(self._call_steps(kind, payload, what, path, path2))

    def _vague(self, e: SFTPError, *also: type) -> bool:
        """Is `e` a status that OpenSSH uses for several errors ("failure"), worth a
        look at the path to say which? Not a broken protocol: the channel is closed."""
        return (
            (type(e) is SFTPError or type(e) in also)
            and e.errno != errno.EPROTO
            and not self._c.closed
        )

    def _status_steps(
        self, kind: int, payload: bytes, what: str, path: str, path2: Optional[str] = None
    ) -> Steps[None]:
        yield from self._call_steps(kind, payload, what, path, path2)

    def _status(
        self, kind: int, payload: bytes, what: str, path: str, path2: Optional[str] = None
    ) -> None:
        run_steps(self._status_steps(kind, payload, what, path, path2))

    def _handle_steps(self, kind: int, payload: bytes, what: str, path: str) -> Steps[bytes]:
        handle: bytes = (yield from self._call_steps(kind, payload, what, path))[1]
        return handle

    def _handle(self, kind: int, payload: bytes, what: str, path: str) -> bytes:
        return run_steps(self._handle_steps(kind, payload, what, path))

    def _close_handle_steps(self, h: bytes) -> Steps[None]:
        yield from self._call_steps(CLOSE, _str(h), "closing a remote file", None)

    def _close_handle(self, h: bytes) -> None:
        run_steps(self._close_handle_steps(h))

    def _send_close_steps(self, c: Any, h: bytes) -> Steps[None]:
        """CLOSE the handle `h` of channel `c` without waiting for the answer (unless
        64 answers are due already: then this one's, within the timeout)."""
        op = _op(c.send, CLOSE, _str(h), timeout=self._timeout, what="closing a remote file")
        if op is not None:
            yield op

    def _names(self, kind: int, payload: bytes, what: str, path: str) -> List[SFTPAttributes]:
        return [_entry(e) for e in self._call(kind, payload, what, path)[1]]

    # ---- file operations
    def stat(self, path: Any) -> SFTPAttributes:
        """The attributes of ``path``, following symlinks (``os.stat``)."""
        return run_steps(self._stat_steps(path))

    def _stat_steps(self, path: Any) -> Steps[SFTPAttributes]:
        return (yield from self._attrs_of_steps(STAT, path, "stat"))

    def lstat(self, path: Any) -> SFTPAttributes:
        """The attributes of ``path`` itself, not following a symlink (``os.lstat``)."""
        return run_steps(self._attrs_of_steps(LSTAT, path, "lstat"))

    def _attrs_of_steps(self, kind: int, path: Any, what: str) -> Steps[SFTPAttributes]:
        p = _path(path)
        reply = yield from self._call_steps(kind, _str(p), what, os.fspath(path))
        return SFTPAttributes._from(reply[1])

    def exists(self, path: Any) -> bool:
        """True if ``path`` exists (a broken symlink does not)."""
        return run_steps(self._exists_steps(path))

    def _exists_steps(self, path: Any) -> Steps[bool]:
        try:
            yield from self._stat_steps(path)
            return True
        except SFTPFileNotFoundError:
            return False

    def is_dir(self, path: Any) -> bool:
        """True if ``path`` is a directory (or a symlink to one)."""
        return run_steps(self._is_dir_steps(path))

    def _is_dir_steps(self, path: Any) -> Steps[bool]:
        try:
            return (yield from self._stat_steps(path)).is_dir()
        except SFTPFileNotFoundError:
            return False

    def is_file(self, path: Any) -> bool:
        """True if ``path`` is a regular file (or a symlink to one)."""
        return run_steps(self._is_file_steps(path))

    def _is_file_steps(self, path: Any) -> Steps[bool]:
        try:
            return (yield from self._stat_steps(path)).is_file()
        except SFTPFileNotFoundError:
            return False

    def is_symlink(self, path: Any) -> bool:
        """True if ``path`` is a symbolic link (``os.path.islink``: False if missing)."""
        return run_steps(self._is_symlink_steps(path))

    def _is_symlink_steps(self, path: Any) -> Steps[bool]:
        try:
            return (yield from self._attrs_of_steps(LSTAT, path, "lstat")).is_symlink()
        except SFTPFileNotFoundError:
            return False

    def scandir(self, path: Any = ".") -> Iterator[SFTPAttributes]:
        """The entries of directory ``path`` with their attributes (``.`` and ``..``
        left out), as the server lists them: ``.filename``, ``.st_mode``..."""
        h = run_steps(self._opendir_steps(path))
        spath = os.fspath(path)
        try:
            counts = [0, 0]
            while True:
                got = run_steps(self._readdir_steps(h, spath, counts))
                if got is None:
                    return
                yield from got
        finally:
            if not self._c.closed:
                self._close_handle(h)

    def _closedir_steps(self, h: bytes) -> Steps[None]:
        """After a listing (stopped early too): its handle closed, not waited for."""
        if not self._c.closed and not _closing():
            yield from self._send_close_steps(self._c, h)

    def _opendir_steps(self, path: Any) -> Steps[bytes]:
        """OPENDIR `path`: its handle."""
        p = _path(path)
        spath = os.fspath(path)
        try:
            h = yield from self._handle_steps(OPENDIR, _str(p), "listing a directory", spath)
        except SFTPFileNotFoundError:
            # OpenSSH says "no such file" for a file that is not a directory
            st = yield from self._stat_steps(path)
            if not st.is_dir():
                raise SFTPNotADirectoryError(
                    errno.ENOTDIR, "listing a directory: not a directory", spath
                ) from None
            raise
        return h

    def _readdir_steps(
        self, h: bytes, spath: str, counts: List[int]
    ) -> Steps[Optional[List[SFTPAttributes]]]:
        """One READDIR: its entries, None at EOF. Each NAME reply holds at least one
        entry whose name is one safe component (checked in C), so counting entries
        (`counts`: so far, and their bytes) bounds both the memory and the round
        trips a server that never ends its listing can take."""
        rtype, value = yield _op(
            self._c.request,
            READDIR,
            _str(h),
            timeout=self._timeout,
            what=f"listing the directory {printable(spath)}",
        )
        if rtype == STATUS:
            if value[0] == FX_EOF:
                return None
            raise _error(value[0], value[1], "listing a directory", spath)
        counts[0], counts[1] = self._listing_bounded(counts[0], counts[1], value, spath)
        return [_entry(e) for e in value if e[0] not in (b".", b"..")]

    def _listdir_attr_steps(self, path: Any) -> Steps[List[SFTPAttributes]]:
        """listdir_attr(path)."""
        h = yield from self._opendir_steps(path)
        spath = os.fspath(path)
        out: List[SFTPAttributes] = []
        try:
            counts = [0, 0]
            while True:
                got = yield from self._readdir_steps(h, spath, counts)
                if got is None:
                    break
                out += got
        finally:
            if not self._c.closed and not _closing():
                yield from self._close_handle_steps(h)
        return sorted(out, key=lambda a: a.filename or "")

    def _listing_bounded(self, seen: int, size: int, value: Any, spath: str) -> Tuple[int, int]:
        """Count one NAME reply into a listing's entries and bytes; an SFTPError past
        max_listing or max_listing_bytes."""
        seen += len(value)
        size += sum(len(n) + len(ln) + sum(len(k) + len(v) for k, v in a[6]) for n, ln, a in value)
        if seen > self.max_listing or size > self.max_listing_bytes:
            raise SFTPError(
                errno.EFBIG,
                f"listing a directory: the server listed more "
                f"than {self.max_listing} entries or {self.max_listing_bytes} "
                f"bytes of names; if the directory really is that large, raise "
                f"sftp.max_listing or sftp.max_listing_bytes",
                spath,
            )
        return seen, size

    def _list_many(self, paths: List[str]) -> Dict[str, Any]:
        return run_steps(self._list_many_steps(paths))

    def _list_many_steps(self, paths: List[str]) -> Steps[Dict[str, Any]]:
        """The listings of several directories at once (OPENDIRs, READDIRs and
        CLOSEs in batches), as listdir_attr gives them: path -> sorted entries, or
        None where something went wrong (listdir_attr then says what, as before)."""
        out: Dict[str, Any] = {}
        for j in range(0, len(paths), BATCH_MAX):
            group = paths[j : j + BATCH_MAX]
            replies = yield _op(
                self._c.batch,
                [(OPENDIR, _str(_path(p))) for p in group],
                timeout=self._timeout,
                what="listing directories",
            )
            handles = {p: v for p, (rtype, v) in zip(group, replies) if rtype == HANDLE}
            out.update({p: None for p in group if p not in handles})
            try:
                out.update((yield from self._read_many_steps(handles)))
            finally:
                if not self._c.closed and handles and not _closing():
                    yield _op(
                        self._c.batch,
                        [(CLOSE, _str(h)) for h in handles.values()],
                        timeout=self._timeout,
                        what="closing directories",
                    )
        return out

    def _read_many_steps(self, handles: Dict[str, bytes]) -> Steps[Dict[str, Any]]:
        """READDIR on every handle at once until each says EOF."""
        got: Dict[str, Any] = {p: [] for p in handles}
        counts = {p: (0, 0) for p in handles}
        todo = list(handles)
        while todo:
            replies = yield _op(
                self._c.batch,
                [(READDIR, _str(handles[p])) for p in todo],
                timeout=self._timeout,
                what="listing directories",
            )
            left = []
            for p, (rtype, value) in zip(todo, replies):
                if rtype == STATUS:
                    if value[0] != FX_EOF:
                        got[p] = None  # listdir_attr says what
                    continue
                try:
                    counts[p] = self._listing_bounded(*counts[p], value, p)
                except SFTPError:
                    got[p] = None  # too long: listdir_attr says so where it comes
                    continue
                got[p] += [_entry(e) for e in value if e[0] not in (b".", b"..")]
                left.append(p)
            todo = left
        return {
            p: sorted(v, key=lambda a: a.filename or "") if v is not None else None
            for p, v in got.items()
        }

    def iterdir(self, path: Any = ".") -> Iterator[SFTPAttributes]:
        """Like :meth:`scandir` (pathlib's name): the entries with their attributes."""
        return self.scandir(path)

    def listdir(self, path: Any = ".") -> List[str]:
        """The names in directory ``path``, sorted (``.`` and ``..`` left out)."""
        return sorted(a.filename for a in self.scandir(path) if a.filename is not None)

    def listdir_attr(self, path: Any = ".") -> List[SFTPAttributes]:
        """The entries of ``path`` with their attributes, sorted by name."""
        return run_steps(self._listdir_attr_steps(path))

    def mkdir(self, path: Any, mode: int = 0o777) -> None:
        """Make directory ``path`` (``os.mkdir``; the server applies its umask)."""
        run_steps(self._mkdir_steps(path, mode))

    def _mkdir_steps(self, path: Any, mode: int) -> Steps[None]:
        spath = os.fspath(path)
        try:
            yield from self._status_steps(
                MKDIR, _str(_path(path)) + _attrs(mode=mode), "mkdir", spath
            )
        except SFTPError as e:
            if self._vague(e) and (yield from self._lexists_steps(path)):
                raise SFTPFileExistsError(
                    errno.EEXIST, f"mkdir: {printable(spath)} already exists", spath
                ) from None
            raise

    def makedirs(self, path: Any, mode: int = 0o777, exist_ok: bool = False) -> None:
        """Make ``path`` and any missing parents (``os.makedirs``)."""
        run_steps(self._makedirs_steps(path, mode, exist_ok))

    def _makedirs_steps(self, path: Any, mode: int, exist_ok: bool) -> Steps[None]:
        spath = os.fspath(path)
        if (yield from self._is_dir_steps(spath)):
            if exist_ok:
                return
            raise SFTPFileExistsError(
                errno.EEXIST, f"makedirs: {printable(spath)} already exists", spath
            )
        parent = posixpath.dirname(spath.rstrip("/"))
        if parent and parent != spath and not (yield from self._is_dir_steps(parent)):
            yield from self._makedirs_steps(parent, mode, True)
        try:
            yield from self._mkdir_steps(spath, mode)
        except SFTPFileExistsError:
            if not (exist_ok and (yield from self._is_dir_steps(spath))):
                raise

    def _lexists(self, path: Any) -> bool:
        return run_steps(self._lexists_steps(path))

    def _lexists_steps(self, path: Any) -> Steps[bool]:
        try:
            yield from self._attrs_of_steps(LSTAT, path, "lstat")
            return True
        except SFTPError:
            return False

    def remove(self, path: Any) -> None:
        """Remove file ``path`` (``os.remove``)."""
        run_steps(self._remove_steps(path))

    def _remove_steps(self, path: Any) -> Steps[None]:
        spath = os.fspath(path)
        try:
            yield from self._status_steps(REMOVE, _str(_path(path)), "remove", spath)
        except SFTPError as e:
            if self._vague(e) and (yield from self._is_dir_steps(path)):
                raise SFTPIsADirectoryError(
                    errno.EISDIR, f"remove: {printable(spath)} is a directory (use rmdir)", spath
                ) from None
            raise

    unlink = remove

    def rmdir(self, path: Any) -> None:
        """Remove the empty directory ``path`` (``os.rmdir``)."""
        run_steps(self._rmdir_steps(path))

    def _rmdir_steps(self, path: Any) -> Steps[None]:
        spath = os.fspath(path)
        try:
            yield from self._status_steps(RMDIR, _str(_path(path)), "rmdir", spath)
        except SFTPError as e:
            # OpenSSH says "no such file" for ENOTDIR and "failure" for ENOTEMPTY
            if self._vague(e, SFTPFileNotFoundError):
                try:
                    st = yield from self._attrs_of_steps(LSTAT, path, "lstat")
                except SFTPError:
                    raise e from None
                if not st.is_dir():
                    raise SFTPNotADirectoryError(
                        errno.ENOTDIR, f"rmdir: {printable(spath)} is not a directory", spath
                    ) from None
                if (yield from self._listdir_attr_steps(path)):
                    raise SFTPError(
                        errno.ENOTEMPTY, f"rmdir: {printable(spath)} is not empty", spath
                    ) from None
            raise

    def rename(self, src: Any, dst: Any) -> None:
        """Rename ``src`` to ``dst``, replacing ``dst`` if it exists, as ``os.replace``
        does, where the server offers posix-rename@openssh.com; otherwise with
        SFTP's own rename, which refuses an existing ``dst``."""
        run_steps(self._rename_steps(src, dst))

    def _rename_steps(self, src: Any, dst: Any) -> Steps[None]:
        a, b = _path(src), _path(dst)
        if "posix-rename@openssh.com" in self.extensions:
            kind, payload = EXTENDED, _str(b"posix-rename@openssh.com") + _str(a) + _str(b)
        else:
            kind, payload = RENAME, _str(a) + _str(b)
        yield from self._status_steps(kind, payload, "rename", os.fspath(src), os.fspath(dst))

    replace = rename

    def chmod(self, path: Any, mode: int) -> None:
        """Set the permission bits of ``path`` (``os.chmod``)."""
        run_steps(self._chmod_steps(path, mode))

    def _chmod_steps(self, path: Any, mode: int) -> Steps[None]:
        payload = _str(_path(path)) + _attrs(mode=mode & 0o7777)
        yield from self._status_steps(SETSTAT, payload, "chmod", os.fspath(path))

    def utime(self, path: Any, times: Optional[Tuple[float, float]] = None) -> None:
        """Set the access and modification times of ``path`` (``os.utime``: a pair
        (atime, mtime) in seconds, or None for now)."""
        run_steps(self._utime_steps(path, times))

    def _utime_steps(self, path: Any, times: Optional[Tuple[float, float]]) -> Steps[None]:
        if times is None:
            now = time.time()
            times = (now, now)
        yield from self._status_steps(
            SETSTAT,
            _str(_path(path)) + _attrs(times=(int(times[0]), int(times[1]))),
            "utime",
            os.fspath(path),
        )

    def readlink(self, path: Any) -> str:
        """Where the symlink ``path`` points (``os.readlink``)."""
        return run_steps(self._readlink_steps(path))

    def _readlink_steps(self, path: Any) -> Steps[str]:
        try:
            reply = yield from self._call_steps(
                READLINK, _str(_path(path)), "readlink", os.fspath(path)
            )
            names = [_entry(e) for e in reply[1]]
        except SFTPError as e:
            if self._vague(e) and (yield from self._lexists_steps(path)):
                raise SFTPError(
                    errno.EINVAL,
                    f"readlink: {printable(os.fspath(path))} is not a symbolic link",
                    os.fspath(path),
                ) from None
            raise
        if not names or names[0].filename is None:
            raise SFTPError(errno.EPROTO, "readlink: an empty reply", os.fspath(path))
        return names[0].filename

    def symlink(self, target: Any, link: Any) -> None:
        """Make ``link`` a symlink pointing to ``target`` (``os.symlink``'s order).
        OpenSSH's server takes the two the other way round from the SFTP draft;
        pyssh sends them in the order it expects."""
        run_steps(self._symlink_steps(target, link))

    def _symlink_steps(self, target: Any, link: Any) -> Steps[None]:
        t, k = _path(target), _path(link)
        yield from self._status_steps(
            SYMLINK, _str(t) + _str(k), "symlink", os.fspath(link), os.fspath(target)
        )

    def realpath(self, path: Any = ".") -> str:
        """The absolute, canonical form of ``path`` on the server (``"."``: the
        directory SFTP starts in, normally the home)."""
        return run_steps(self._realpath_steps(path))

    def _realpath_steps(self, path: Any) -> Steps[str]:
        reply = yield from self._call_steps(
            REALPATH, _str(_path(path)), "realpath", os.fspath(path)
        )
        names = [_entry(e) for e in reply[1]]
        if not names or names[0].filename is None:
            raise SFTPError(errno.EPROTO, "realpath: an empty reply", os.fspath(path))
        return names[0].filename

    def statvfs(self, path: Any = ".") -> os.statvfs_result:
        """File system statistics for ``path``, where the server offers
        statvfs@openssh.com (OpenSSH does)."""
        return run_steps(self._statvfs_steps(path))

    def _statvfs_steps(self, path: Any) -> Steps[os.statvfs_result]:
        spath = os.fspath(path)
        if "statvfs@openssh.com" not in self.extensions:
            raise SFTPError(
                errno.EOPNOTSUPP, "statvfs: the server does not offer statvfs@openssh.com", spath
            )
        rtype, v = yield from self._call_steps(
            EXTENDED, _str(b"statvfs@openssh.com") + _str(_path(path)), "statvfs", spath
        )
        if rtype != EXTENDED_REPLY:
            raise SFTPError(errno.EPROTO, "statvfs: an OK status instead of the statistics", spath)
        # bsize, frsize, blocks, bfree, bavail, files, ffree, favail, fsid, flag, namemax
        return os.statvfs_result((v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[9], v[10]))

    # ---- OpenSSH's and the draft's extensions
    def _need(self, ext: str, what: str, path: Optional[str]) -> None:
        """SFTPError (EOPNOTSUPP) unless the server offered `ext` in its VERSION."""
        if ext not in self.extensions:
            raise SFTPError(errno.EOPNOTSUPP, f"{what}: the server does not offer {ext}", path)

    def limits(self) -> SFTPLimits:
        """The server's limits (limits@openssh.com, OpenSSH 8.6 and later):
        ``max_packet_length``, ``max_read_length``, ``max_write_length``,
        ``max_open_handles``. pyssh reads and writes in pieces of the server's
        lengths, up to 1 MiB (``sftp.max_read``, ``sftp.max_write``)."""
        self._need("limits@openssh.com", "limits", None)
        if self._limits is None:
            raise SFTPError(errno.EPROTO, "limits: the server answered with a status")
        return self._limits

    def fsync(self, file: Any) -> None:
        """Make the server write a file to its disk (fsync@openssh.com): ``file`` is
        a file from :meth:`open` (flushed first) or a path (opened for this)."""
        if isinstance(file, io.IOBase) and not isinstance(file, _RemoteRaw):
            file.flush()  # a buffered or text file: what it holds goes first
            raw = getattr(file, "buffer", file)
            raw = getattr(raw, "raw", raw)
            if not isinstance(raw, _RemoteRaw):
                raise TypeError("fsync: not a file opened by this SFTP's open()")
            file = raw
        if isinstance(file, _RemoteRaw):
            file.fsync()
            return
        run_steps(self._fsync_path_steps(file))

    def _fsync_path_steps(self, path: Any) -> Steps[None]:
        """fsync() of a path: opened for it, then closed."""
        spath = os.fspath(path)
        self._need("fsync@openssh.com", "fsync", spath)
        h = yield from self._open_steps(spath, F_READ)
        try:
            yield from self._status_steps(
                EXTENDED, _str(b"fsync@openssh.com") + _str(h), "fsync", spath
            )
        finally:
            if not self._c.closed and not _closing():
                yield from self._close_handle_steps(h)

    def link(self, src: Any, dst: Any) -> None:
        """Make ``dst`` a hard link to the file ``src`` (``os.link``), with
        hardlink@openssh.com."""
        run_steps(self._link_steps(src, dst))

    def _link_steps(self, src: Any, dst: Any) -> Steps[None]:
        a, b = _path(src), _path(dst)
        self._need("hardlink@openssh.com", "link", os.fspath(src))
        yield from self._status_steps(
            EXTENDED,
            _str(b"hardlink@openssh.com") + _str(a) + _str(b),
            "link",
            os.fspath(src),
            os.fspath(dst),
        )

    hardlink = link

    def chown(self, path: Any, uid: int, gid: int) -> None:
        """Set the owner and group of ``path`` by number (``os.chown``; -1 leaves
        one as it is). Only root on the server may give a file away."""
        run_steps(self._chown_steps(path, uid, gid))

    def _chown_steps(self, path: Any, uid: int, gid: int) -> Steps[None]:
        spath = os.fspath(path)
        for v in (uid, gid):
            if isinstance(v, bool) or not isinstance(v, int) or not -1 <= v <= 0xFFFFFFFF:
                raise ValueError(f"chown: uid and gid must be ints from -1 to 2**32-1, not {v!r}")
        if uid == -1 or gid == -1:
            st = yield from self._stat_steps(path)
            uid = st.st_uid if uid == -1 and st.st_uid is not None else uid
            gid = st.st_gid if gid == -1 and st.st_gid is not None else gid
            if uid == -1 or gid == -1:
                raise SFTPError(errno.EPROTO, "chown: the server did not say the owner", spath)
        yield from self._status_steps(
            SETSTAT, _str(_path(path)) + _attrs(owner=(uid, gid)), "chown", spath
        )

    def copy(self, src: Any, dst: Any) -> None:
        """Copy the file ``src`` to ``dst`` on the server, the data never leaving it
        (the copy-data extension, OpenSSH 9.0 and later): ``dst`` is created or
        replaced, with ``src``'s permission bits. A server without copy-data: an
        SFTPError (EOPNOTSUPP); copy through the client with :meth:`open` and
        ``shutil.copyfileobj`` then."""
        run_steps(self._copy_steps(src, dst))

    def _copy_steps(self, src: Any, dst: Any) -> Steps[None]:
        s, d = os.fspath(src), os.fspath(dst)
        self._need("copy-data", "copy", s)
        st = yield from self._stat_steps(s)
        if st.is_dir():
            raise SFTPIsADirectoryError(errno.EISDIR, f"copy: {printable(s)} is a directory", s)
        hs = yield from self._open_steps(s, F_READ)
        try:
            mode = (st.st_mode or 0o644) & 0o777
            hd = yield from self._open_steps(d, F_WRITE | F_CREAT | F_TRUNC, mode)
            try:
                # read from 0 to the end (length 0), write at 0
                body = _str(hs) + struct.pack(">QQ", 0, 0) + _str(hd) + struct.pack(">Q", 0)
                yield from self._status_steps(EXTENDED, _str(b"copy-data") + body, "copy", s, d)
            finally:
                if not self._c.closed and not _closing():
                    yield from self._close_handle_steps(hd)
        finally:
            if not self._c.closed and not _closing():
                yield from self._close_handle_steps(hs)

    def rmtree(self, path: Any) -> None:
        """Remove the directory ``path`` and everything in it (``shutil.rmtree``).
        Symbolic links are removed, never followed: a link to a directory outside
        goes, the directory stays. A link as ``path`` itself is refused, as
        shutil does. Iterative, a level's listings fetched at once; at most 64
        levels deep."""
        run_steps(self._rmtree_steps(path))

    def _rmtree_steps(self, path: Any) -> Steps[None]:
        from ._sftptree import rmtree_steps  # it builds on this module

        yield from rmtree_steps(self, os.fspath(path))

    def glob(self, pattern: Any) -> List[str]:
        """The remote paths matching ``pattern``, sorted, as Python's ``glob.glob``
        gives them: ``*``, ``?`` and ``[...]`` match within one path component and
        not a leading dot unless the pattern has one; ``**`` as a component matches
        any number of directories (symlinked ones not descended). Relative patterns
        are from the directory SFTP starts in (normally the home). No match: []."""
        return run_steps(self._glob_steps(pattern))

    def _glob_steps(self, pattern: Any) -> Steps[List[str]]:
        from . import _sftpglob

        return (
            yield from _sftpglob.glob_steps(self, _path(pattern).decode("utf-8", "surrogateescape"))
        )

    def _one_match_steps(self, remote: str) -> Steps[str]:
        """get()'s source: itself, or the one file its wildcards match."""
        from . import _sftpglob

        found = yield from _sftpglob.expand_steps(self, [remote], "get")
        if len(found) > 1:
            raise ValueError(
                f"get: {printable(remote)} matches {len(found)} files; "
                f"download(pattern, to=directory) copies several"
            )
        return found[0]

    def walk(self, top: Any = ".") -> Iterator[Tuple[str, List[str], List[str]]]:
        """Like ``os.walk`` (top-down; symlinks to directories are not followed):
        yields (dirpath, dirnames, filenames). Stops with SFTPError (ELOOP) below
        64 levels, as downloads do: a server cannot make it recurse for ever."""
        return self._walk(os.fspath(top), 0)

    def _walk(self, top: str, depth: int) -> Iterator[Tuple[str, List[str], List[str]]]:
        _walk_depth(top, depth)
        dirs, files = _walk_split(self.listdir_attr(top))
        yield top, dirs, files
        for d in dirs:
            yield from self._walk(posixpath.join(top, d), depth + 1)

    # ---- file objects
    def open(
        self,
        path: Any,
        mode: str = "r",
        buffering: int = -1,
        encoding: Optional[str] = None,
        errors: Optional[str] = None,
        newline: Optional[str] = None,
    ) -> Any:
        """Open a remote file, as the builtin ``open()`` does: ``mode`` is "r", "w",
        "a", "x", with "+" and "b" or "t" (text by default); binary modes give
        ``io.BufferedReader``/``BufferedWriter``/``BufferedRandom``, text modes an
        ``io.TextIOWrapper``; ``buffering=0`` gives the raw file (binary only).
        Sequential reads fetch ahead and writes are pipelined, so
        ``shutil.copyfileobj`` runs near full transfer speed. New files get mode
        0o666 less the server's umask."""
        kind, binary, readable, writable, flags = _open_mode(
            mode, buffering, encoding, errors, newline
        )
        raw = self._open_raw(os.fspath(path), mode, kind, flags, readable, writable)
        if buffering == 0:
            return raw
        line_buffering = buffering == 1 and not binary
        size = buffering if buffering > 1 else 8 * self.max_read
        buffered: Any
        if readable and writable:
            buffered = io.BufferedRandom(raw, size)
        elif readable:
            buffered = io.BufferedReader(raw, size)
        else:
            buffered = io.BufferedWriter(raw, size)
        if binary:
            return buffered
        text = io.TextIOWrapper(
            buffered, encoding or "utf-8", errors, newline, line_buffering=line_buffering
        )
        text.mode = mode  # type: ignore[misc]
        return text

    def _open_raw(
        self, spath: str, mode: str, kind: str, flags: int, readable: bool, writable: bool
    ) -> _RemoteRaw:
        """open()'s unbuffered file."""
        raw = _RemoteRaw.__new__(_RemoteRaw)
        io.RawIOBase.__init__(raw)
        try:
            run_steps(self._open_file_steps(raw, spath, mode, kind, flags, readable, writable))
        except BaseException:
            io.RawIOBase.close(raw)  # never opened: nothing to CLOSE
            raise
        return raw

    def _open_file_steps(
        self,
        f: _FileSteps,
        spath: str,
        mode: str,
        kind: str,
        flags: int,
        readable: bool,
        writable: bool,
    ) -> Steps[None]:
        """Open `spath` into the file object `f` (its state set up): refused if it
        is a directory, at its end for an append. On a failure after the OPEN, the
        handle is closed."""
        try:
            h = yield from self._open_steps(spath, flags, 0o666 if flags & F_CREAT else None)
        except SFTPError as e:
            if self._vague(e) and kind == "x" and (yield from self._lexists_steps(spath)):
                raise SFTPFileExistsError(
                    errno.EEXIST, f"open: {printable(spath)} already exists", spath
                ) from None
            if self._vague(e) and (yield from self._is_dir_steps(spath)):
                raise SFTPIsADirectoryError(
                    errno.EISDIR, f"open: {printable(spath)} is a directory", spath
                ) from None
            raise
        f._setup_file(self, spath, h, mode, readable, writable, 0)
        try:
            # OpenSSH opens a directory for reading (its reads then fail): say so now
            if not writable and _stat.S_ISDIR((yield from f._attrs_steps()).st_mode or 0):
                raise SFTPIsADirectoryError(
                    errno.EISDIR, f"open: {printable(spath)} is a directory", spath
                )
            if kind == "a":
                f._pos = yield from f._size_steps()
        except BaseException:
            if not self._c.closed and not _closing():
                yield from self._send_close_steps(self._c, h)
            raise

    # ---- transfers
    def _open(self, path: str, flags: int, mode: Optional[int] = None) -> bytes:
        return run_steps(self._open_steps(path, flags, mode))

    def _open_steps(self, path: str, flags: int, mode: Optional[int] = None) -> Steps[bytes]:
        return (
            yield from self._handle_steps(
                OPEN, _str(_path(path)) + struct.pack(">I", flags) + _attrs(mode=mode), "open", path
            )
        )

    def get(
        self,
        remote: Any,
        local: Any,
        *,
        progress: Optional[Callable[[int, int], Any]] = None,
        preserve: bool = False,
        resume: bool = False,
        streams: Optional[int] = None,
        connections: Optional[int] = None,
    ) -> int:
        """Download one remote file to the local path ``local``. The data goes to a
        temporary file beside it, renamed into place once complete (with
        ``resume=True``: appended to ``local`` from where it ends). ``streams``: how
        many SFTP channels share a big file (default: more the longer the round
        trip); ``connections``: how many connections (default 1, more only when the
        server refuses the channels wanted); see docs/performance.md. Returns the
        bytes transferred."""
        return run_steps(
            self._get_path_steps(remote, local, progress, preserve, resume, streams, connections)
        )

    def _get_path_steps(
        self,
        remote: Any,
        local: Any,
        progress: Optional[Callable[[int, int], Any]],
        preserve: bool,
        resume: bool,
        streams: Optional[int],
        connections: Optional[int],
    ) -> Steps[int]:
        """get()."""
        rpath = yield from self._one_match_steps(os.fspath(remote))
        return (
            yield from self._get_steps(
                rpath, os.fspath(local), None, progress, preserve, resume, streams, connections
            )
        )

    def _get_steps(
        self,
        rpath: str,
        lpath: str,
        st: Optional[SFTPAttributes],
        progress: Optional[Callable[[int, int], Any]],
        preserve: bool,
        resume: bool,
        streams: Optional[int] = None,
        connections: Optional[int] = None,
    ) -> Steps[int]:
        self._streams(streams, 0)  # bad values fail here, before anything is done
        self._connections(connections, None, 0)
        parent = os.path.dirname(os.path.abspath(lpath))
        if not os.path.isdir(parent):
            raise FileNotFoundError(errno.ENOENT, "get: the local directory does not exist", parent)
        if st is None:
            st = yield from self._stat_steps(rpath)
        if st.is_dir():
            raise SFTPIsADirectoryError(
                errno.EISDIR,
                f"get: {printable(rpath)} is a directory (download() copies trees)",
                rpath,
            )
        h = yield from self._open_steps(rpath, F_READ)
        try:
            return (
                yield from self._get_open_steps(
                    h, rpath, lpath, st, progress, preserve, resume, streams, connections
                )
            )
        finally:
            if not self._c.closed and not _closing():
                # nothing to learn from the answer to a CLOSE after reading: no wait
                yield from self._send_close_steps(self._c, h)

    def _get_open_steps(
        self,
        h: bytes,
        rpath: str,
        lpath: str,
        st: SFTPAttributes,
        progress: Optional[Callable[[int, int], Any]],
        preserve: bool,
        resume: bool,
        streams: Optional[int] = None,
        connections: Optional[int] = None,
    ) -> Steps[int]:
        total = st.st_size or 0
        start, fd, tmp = self._local_file(lpath, st, total, resume, rpath)
        ok = False
        try:
            cb = (lambda moved: progress(start + moved, total)) if progress else None
            # resume writes into the file itself: a failure cuts it back to what
            # all arrived (stripes leave gaps), which the next resume goes on from
            cut = tmp is None
            conns = self._connections(connections, streams, total - start)
            if conns > 1:
                # more connections: threads (_conns), blocking here, not a flow (a
                # known limit: a Group's worker waits for it)
                job = _conns.Job(self, h, rpath, lpath, fd, start, total, cb, streams)
                moved = _conns.download(job, conns, cut)
            else:
                moved = yield from self._download_range_steps(
                    h, rpath, lpath, fd, start, total, cb, streams, cut
                )
            yield from self._check_complete_steps(h, rpath, lpath, start + moved, total)
            ok = True
        finally:
            os.close(fd)
            if not ok and tmp is not None:
                _local.discard(tmp)
        times = None
        if preserve and st.st_mtime is not None:
            times = (st.st_atime or st.st_mtime, st.st_mtime)
        if tmp is not None:
            _local.finish_part(tmp, lpath, _local.mode_for(st.st_mode, preserve), times)
        elif times is not None:
            os.utime(lpath, times)
        if progress:
            progress(start + moved, total)
        return moved

    def _download_range(
        self,
        h: bytes,
        rpath: str,
        lpath: str,
        fd: int,
        a: int,
        b: int,
        cb: Optional[Callable[[int], Any]],
        streams: Optional[int],
        cut: bool,
        bounded: bool = False,
    ) -> int:
        return run_steps(
            self._download_range_steps(h, rpath, lpath, fd, a, b, cb, streams, cut, bounded)
        )

    def _download_range_steps(
        self,
        h: bytes,
        rpath: str,
        lpath: str,
        fd: int,
        a: int,
        b: int,
        cb: Optional[Callable[[int], Any]],
        streams: Optional[int],
        cut: bool,
        bounded: bool = False,
    ) -> Steps[int]:
        """The open remote file `h` from `a` to `b` (`bounded`; else to its end,
        b being its size) into `fd`, over `streams` channels (None: as the path
        says): the bytes moved."""
        opened: List[Tuple[Any, bytes]] = []
        n = self._streams(streams, b - a)
        self._complete_to = a
        try:
            if n > 1:
                stripes = yield from self._stripes_steps(n)
                opened = yield from self._open_stripes_steps(stripes, rpath, F_READ)
            self._complete_to = -1  # from the C side's, once it ran
            r = yield _op(
                self._c.download,
                h,
                fd,
                a,
                0,
                cb,
                self._timeout,
                INFLIGHT,
                self.max_read,
                stripes=opened or None,
                cut=cut,
                until=b if bounded else (1 << 64) - 1,
            )
        finally:
            if not _closing():
                yield from self._close_stripes_steps(opened, wait=False)
            if self._complete_to < 0:
                self._complete_to = self._c.complete_to
        if r.status >= 0:
            raise _error(r.status, r.message, "download", rpath)
        if r.local_errno:
            e = r.local_errno
            raise OSError(e, f"download: writing {printable(lpath)}: {os.strerror(e)}", lpath)
        moved: int = r.moved
        return moved

    def _local_file(
        self, lpath: str, st: SFTPAttributes, total: int, resume: bool, rpath: str
    ) -> Tuple[int, int, Optional[str]]:
        """Where a download writes: (offset to start at, fd, temporary path). With
        ``resume`` the file itself, from where it ends, so that an interrupted
        download keeps what it got for the next resume (no temporary file)."""
        if not resume:
            fd, tmp = _local.open_part(lpath)
            return 0, fd, tmp
        fd, start = _local.open_resume(lpath, _local.mode_for(st.st_mode, False))
        if start > total:
            os.close(fd)
            raise SFTPError(
                errno.EINVAL,
                f"resume: the local file {printable(lpath)} ({start} "
                f"bytes) is longer than the remote one ({total} bytes)",
                rpath,
            )
        return start, fd, None

    def _check_complete_steps(
        self, h: bytes, rpath: str, lpath: str, got: int, total: int
    ) -> Steps[None]:
        """A download succeeds only with every byte of the file: the server said EOF
        at `got`; if that is short of the size it gave, its size now must agree
        (the file shrank meanwhile), or the download failed. A file that grew is
        copied up to the EOF seen."""
        if got >= total:
            return
        _, value = yield from self._call_steps(FSTAT, _str(h), "download", rpath)
        now = SFTPAttributes._from(value).st_size
        if now is not None and now != got:
            raise SFTPError(
                errno.EIO,
                f"download: the server ended {printable(rpath)} after "
                f"{got} bytes but says it holds {now}: the download is incomplete, and "
                f"{printable(lpath)} was left as it was",
                rpath,
            )

    def put(
        self,
        local: Any,
        remote: Any,
        *,
        progress: Optional[Callable[[int, int], Any]] = None,
        preserve: bool = False,
        resume: bool = False,
        streams: Optional[int] = None,
        connections: Optional[int] = None,
    ) -> int:
        """Upload the local file ``local`` to the remote path ``remote`` (its mode
        kept; ``preserve=True`` keeps its times too; ``resume=True`` continues a
        remote file from where it ends, less the last 64 MiB, which a striped upload
        that stopped may have left with gaps). ``streams`` and ``connections`` as
        for :meth:`get`.
        Returns the bytes transferred."""
        return run_steps(
            self._put_steps(local, remote, progress, preserve, resume, streams, connections)
        )

    def _put_steps(
        self,
        local: Any,
        remote: Any,
        progress: Optional[Callable[[int, int], Any]],
        preserve: bool,
        resume: bool,
        streams: Optional[int] = None,
        connections: Optional[int] = None,
    ) -> Steps[int]:
        """put()."""
        lpath, rpath = os.fspath(local), os.fspath(remote)
        self._streams(streams, 0)  # bad values fail here, before anything is done
        self._connections(connections, None, 0)
        fd = os.open(lpath, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        try:
            lst = os.fstat(fd)
            if _stat.S_ISDIR(lst.st_mode):
                raise IsADirectoryError(
                    errno.EISDIR, "put: a directory (upload() copies trees)", lpath
                )
            start = (yield from self._resume_at_steps(rpath, lpath, lst.st_size)) if resume else 0
            flags = F_WRITE | F_CREAT | (0 if resume else F_TRUNC)
            h = yield from self._open_steps(rpath, flags, _stat.S_IMODE(lst.st_mode))
            closed = False
            try:
                moved = yield from self._put_open_steps(
                    h, fd, lpath, rpath, lst.st_size, start, progress, streams, connections
                )
                replies = yield from self._put_close_steps(h, lst, preserve)
                closed = True
                for _rtype, (code, msg) in replies:  # STATUS only: checked in C
                    if code != FX_OK:
                        raise _error(code, msg, "upload", rpath)
            finally:
                if not closed and not self._c.closed and not _closing():
                    yield from self._close_handle_steps(h)
        finally:
            os.close(fd)
        if progress:
            progress(lst.st_size, lst.st_size)
        return moved

    def _resume_at_steps(self, rpath: str, lpath: str, size: int) -> Steps[int]:
        """put(resume=True): where the remote file ends (0 if there is none)."""
        try:
            start = (yield from self._stat_steps(rpath)).st_size or 0
        except SFTPFileNotFoundError:
            start = 0
        if start > size:
            raise SFTPError(
                errno.EINVAL,
                f"resume: the remote file ({start} bytes) is longer than {lpath} ({size} bytes)",
                rpath,
            )
        # a striped upload that stopped wrote nothing further than this past a gap
        back: int = _ssh.SFTP_STRIPE_AHEAD
        return max(0, start - back)

    def _put_open_steps(
        self,
        h: bytes,
        fd: int,
        lpath: str,
        rpath: str,
        size: int,
        start: int,
        progress: Optional[Callable[[int, int], Any]],
        streams: Optional[int] = None,
        connections: Optional[int] = None,
    ) -> Steps[int]:
        """Send the local file from `start` to its `size` to the open handle `h`
        (over `streams` channels of `connections` connections); returns the bytes
        sent, all of which the server confirmed."""
        cb = (lambda moved: progress(start + moved, size)) if progress else None
        conns = self._connections(connections, streams, size - start)
        if conns > 1:
            # more connections: threads (_conns), blocking here, not a flow (a known
            # limit: a Group's worker waits for it)
            job = _conns.Job(self, h, rpath, lpath, fd, start, size, cb, streams)
            moved = _conns.upload(job, conns)
        else:
            moved = yield from self._upload_range_steps(
                h, rpath, lpath, fd, start, size, cb, streams
            )
        if moved != size - start:
            raise SFTPError(
                errno.EIO, f"upload: the server confirmed {moved} of {size - start} bytes", rpath
            )
        return moved

    def _upload_range(
        self,
        h: bytes,
        rpath: str,
        lpath: str,
        fd: int,
        a: int,
        b: int,
        cb: Optional[Callable[[int], Any]],
        streams: Optional[int],
    ) -> int:
        return run_steps(self._upload_range_steps(h, rpath, lpath, fd, a, b, cb, streams))

    def _upload_range_steps(
        self,
        h: bytes,
        rpath: str,
        lpath: str,
        fd: int,
        a: int,
        b: int,
        cb: Optional[Callable[[int], Any]],
        streams: Optional[int],
    ) -> Steps[int]:
        """Bytes a to b of `fd` to the open handle `h`, over `streams` channels (None:
        as the path says); the bytes the server confirmed."""
        n = self._streams(streams, b - a)
        self._complete_to = a
        opened: List[Tuple[Any, bytes]] = []
        if n > 1:
            stripes = yield from self._stripes_steps(n)
            opened = yield from self._open_stripes_steps(stripes, rpath, F_WRITE)
        ok = False
        try:
            self._complete_to = -1  # from the C side's, once it ran
            r = yield _op(
                self._c.upload,
                h,
                fd,
                a,
                b - a,
                cb,
                self._timeout,
                INFLIGHT,
                self.max_write,
                stripes=opened or None,
            )
            ok = True
        finally:
            if self._complete_to < 0:
                self._complete_to = self._c.complete_to
            closes = [] if _closing() else (yield from self._close_stripes_steps(opened, wait=ok))
        for _rtype, (code, msg) in closes:  # STATUS only: checked in C
            if code != FX_OK and r.status < 0:
                raise _error(code, msg, "upload", rpath)
        return self._uploaded(r, rpath, lpath)

    def _uploaded(self, r: Any, rpath: str, lpath: str) -> int:
        """The C side's upload result: the bytes confirmed, or its error."""
        if r.status >= 0:
            raise _error(r.status, r.message, "upload", rpath)
        if r.local_errno == -1:
            raise OSError(
                errno.EIO, f"upload: {printable(lpath)} became shorter while it was sent", lpath
            )
        if r.local_errno:
            e = r.local_errno
            raise OSError(e, f"upload: reading {printable(lpath)}: {os.strerror(e)}", lpath)
        moved: int = r.moved
        return moved

    def _put_close_steps(self, h: bytes, lst: os.stat_result, preserve: bool) -> Steps[List[Any]]:
        """After the data: the mode exactly (the server's umask applied at creation),
        the times if asked, and the close, in one round trip; their answers."""
        replies: List[Any] = yield _op(
            self._c.batch,
            [
                (
                    FSETSTAT,
                    _str(h)
                    + _attrs(
                        mode=_stat.S_IMODE(lst.st_mode),
                        times=(int(lst.st_atime), int(lst.st_mtime)) if preserve else None,
                    ),
                ),
                (CLOSE, _str(h)),
            ],
            timeout=self._timeout,
        )
        return replies

    def upload(
        self,
        files: Any,
        to: Any = ".",
        *,
        verbose: bool = True,
        progress: Optional[Progress] = None,
        preserve: bool = False,
        resume: bool = False,
    ) -> List[str]:
        """Copy local files and directories into the remote directory ``to``
        (recursively, hidden files included, modes kept; ``preserve`` keeps times).
        Returns the remote paths written (the top level)."""
        return run_steps(self._upload_steps(files, to, verbose, progress, preserve, resume))

    def _upload_steps(
        self,
        files: Any,
        to: Any,
        verbose: bool,
        progress: Optional[Progress],
        preserve: bool,
        resume: bool,
    ) -> Steps[List[str]]:
        """upload()."""
        paths = transfer_paths(files, "upload")
        to_s = os.fspath(to)
        if not (yield from self._is_dir_steps(to_s)):
            raise SFTPNotADirectoryError(
                errno.ENOTDIR,
                f"upload: the remote directory {printable(to_s)} does not exist",
                to_s,
            )
        rep = Reporter(verbose, progress, upload=True)
        from ._sftptree import Uploads  # it builds on this module

        try:
            return (yield from Uploads(self, rep, preserve, resume).run_all(paths, to_s))
        except BaseException:
            rep.stopped()  # end a [NN%] line left drawn, as SCP does
            raise

    def download(
        self,
        files: Any,
        to: Any = ".",
        *,
        verbose: bool = True,
        progress: Optional[Progress] = None,
        preserve: bool = False,
        resume: bool = False,
    ) -> List[str]:
        """Copy remote files and directories (recursively) into the existing local
        directory ``to``. Each file is written to a temporary file and renamed into
        place once complete. A source ending in ``.``, ``..`` or ``/`` (``"dir/."``,
        ``"/"``) copies that directory's contents into ``to`` itself, as
        ``cp -r dir/. to`` does. Local names come from your arguments and from the
        server's listings, never from where the server says a path leads; a listed
        name that is not one safe path component is refused. Inside a tree, a
        symbolic link to a file comes down as a file, and one to a directory is not
        followed (as OpenSSH's sftp). Returns the local paths written (the top
        level)."""
        return run_steps(self._download_steps(files, to, verbose, progress, preserve, resume))

    def _download_steps(
        self,
        files: Any,
        to: Any,
        verbose: bool,
        progress: Optional[Progress],
        preserve: bool,
        resume: bool,
    ) -> Steps[List[str]]:
        """download()."""
        paths = transfer_paths(files, "download")
        to_s = os.fspath(to)
        from . import _sftpglob

        paths = yield from _sftpglob.expand_steps(self, paths, "download")
        if not os.path.isdir(to_s):
            if os.path.exists(to_s):
                raise NotADirectoryError(errno.ENOTDIR, "download: not a directory", to_s)
            raise FileNotFoundError(
                errno.ENOENT, "download: the local directory does not exist", to_s
            )
        rep = Reporter(verbose, progress, upload=False)
        from ._sftptree import Downloads  # it builds on this module

        return (yield from Downloads(self, rep, preserve, resume).run_all(paths, to_s))


def open_steps(session: Any, timeout: Optional[float] = None) -> Steps[SFTP]:
    """SFTP(session, timeout) as a flow: the channel made, then started."""
    f = SFTP.__new__(SFTP)
    f._setup(session, timeout)
    yield from f._start_steps()
    return f
