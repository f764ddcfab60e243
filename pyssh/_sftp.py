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
import os
import posixpath
import secrets
import stat as _stat
import struct
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from . import _ssh
from ._exec import check_timeout
from ._scp import PART_SUFFIX, Progress, _paths, _Reporter
from .errors import (SFTPError, SFTPFileExistsError, SFTPFileNotFoundError,
                     SFTPIsADirectoryError, SFTPNotADirectoryError, SFTPPermissionError)

# message types (draft-ietf-secsh-filexfer-02, version 3)
OPEN, CLOSE, READ, WRITE, LSTAT, FSTAT, SETSTAT, FSETSTAT = 3, 4, 5, 6, 7, 8, 9, 10
OPENDIR, READDIR, REMOVE, MKDIR, RMDIR, REALPATH, STAT, RENAME = 11, 12, 13, 14, 15, 16, 17, 18
READLINK, SYMLINK, EXTENDED = 19, 20, 200
STATUS, HANDLE, DATA, NAME, ATTRS, EXTENDED_REPLY = 101, 102, 103, 104, 105, 201
FX_OK, FX_EOF, FX_NO_SUCH_FILE, FX_PERMISSION_DENIED, FX_FAILURE = 0, 1, 2, 3, 4
FX_OP_UNSUPPORTED, FX_FILE_ALREADY_EXISTS = 8, 11
F_READ, F_WRITE, F_APPEND, F_CREAT, F_TRUNC, F_EXCL = 1, 2, 4, 8, 16, 32
A_SIZE, A_UIDGID, A_PERMISSIONS, A_ACMODTIME, A_EXTENDED = 1, 2, 4, 8, 0x80000000

INFLIGHT = 16            # READ/WRITE requests in flight per transfer


def _str(b: bytes) -> bytes:
    return struct.pack(">I", len(b)) + b


def _path(p: Any) -> bytes:
    p = os.fspath(p)
    if isinstance(p, str):
        if "\0" in p:
            raise ValueError(f"invalid remote path {p!r}: it holds a NUL")
        return p.encode("utf-8", "surrogateescape")
    raise TypeError(f"a remote path must be str or os.PathLike[str], not {type(p).__name__}")


class _Buf:
    """Reads a reply's fields in order."""

    def __init__(self, data: bytes):
        self.d, self.i = data, 0

    def u32(self) -> int:
        if self.i + 4 > len(self.d):
            raise SFTPError(errno.EPROTO, "a malformed SFTP reply (too short)")
        v = struct.unpack_from(">I", self.d, self.i)[0]
        self.i += 4
        return v

    def u64(self) -> int:
        if self.i + 8 > len(self.d):
            raise SFTPError(errno.EPROTO, "a malformed SFTP reply (too short)")
        v = struct.unpack_from(">Q", self.d, self.i)[0]
        self.i += 8
        return v

    def string(self) -> bytes:
        n = self.u32()
        if self.i + n > len(self.d):
            raise SFTPError(errno.EPROTO, "a malformed SFTP reply (a string past its end)")
        v = self.d[self.i:self.i + n]
        self.i += n
        return v


class SFTPAttributes:
    """A remote file's attributes, with ``os.stat_result``'s names: ``st_size``,
    ``st_mode``, ``st_uid``, ``st_gid``, ``st_atime``, ``st_mtime`` (None where the
    server did not say). ``filename`` is set for entries of a directory listing."""

    __slots__ = ("st_size", "st_uid", "st_gid", "st_mode", "st_atime", "st_mtime", "filename",
                 "longname", "extended")

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
    def _read(cls, b: _Buf) -> "SFTPAttributes":
        a = cls()
        flags = b.u32()
        if flags & A_SIZE:
            a.st_size = b.u64()
        if flags & A_UIDGID:
            a.st_uid, a.st_gid = b.u32(), b.u32()
        if flags & A_PERMISSIONS:
            a.st_mode = b.u32()
        if flags & A_ACMODTIME:
            a.st_atime, a.st_mtime = b.u32(), b.u32()
        if flags & A_EXTENDED:
            for _ in range(b.u32()):
                k = b.string().decode("utf-8", "replace")
                a.extended[k] = b.string()
        return a

    def is_dir(self) -> bool:
        return self.st_mode is not None and _stat.S_ISDIR(self.st_mode)

    def is_file(self) -> bool:
        return self.st_mode is not None and _stat.S_ISREG(self.st_mode)

    def is_symlink(self) -> bool:
        return self.st_mode is not None and _stat.S_ISLNK(self.st_mode)

    def __repr__(self) -> str:
        mode = oct(self.st_mode) if self.st_mode is not None else None
        name = f"{self.filename!r}, " if self.filename is not None else ""
        return (f"SFTPAttributes({name}size={self.st_size}, mode={mode}, uid={self.st_uid}, "
                f"gid={self.st_gid}, mtime={self.st_mtime})")


def _attrs(size: Optional[int] = None, mode: Optional[int] = None,
           times: Optional[Tuple[int, int]] = None) -> bytes:
    flags, body = 0, b""
    if size is not None:
        flags |= A_SIZE
        body += struct.pack(">Q", size)
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


def _error(code: int, message: str, what: str, path: Optional[str],
           path2: Optional[str] = None) -> SFTPError:
    cls, num = _CLASSES.get(code, (SFTPError, errno.EIO))
    text = f"{what}: {message or 'failed'} (SFTP status {code})"
    if path2 is not None:
        return cls(num, text, path, None, path2)
    return cls(num, text, path)


READ_AHEAD_MAX = 8 << 20   # the file object's read-ahead grows to this on sequential reads


class _RemoteRaw(io.RawIOBase):
    """The raw file under ``SFTP.open()``: positioned reads and writes on an open
    remote handle. Sequential reads fetch ahead (a window that doubles up to 8 MiB,
    its READ requests in flight together); each write sends its data in WRITE
    requests in flight together."""

    def __init__(self, sftp: "SFTP", path: str, handle: bytes, mode: str, readable: bool,
                 writable: bool, position: int):
        super().__init__()
        self.name = path
        self.mode = mode
        self._sftp = sftp
        self._h = handle
        self._readable = readable
        self._writable = writable
        self._pos = position
        self._ahead = b""           # fetched data starting at self._ahead_at
        self._ahead_at = 0
        self._window = sftp.max_read * 4

    def readable(self) -> bool:
        return self._readable

    def writable(self) -> bool:
        return self._writable

    def seekable(self) -> bool:
        return True

    def _check(self) -> None:
        if self.closed:
            raise ValueError("I/O operation on closed file.")

    def readinto(self, b: Any) -> int:
        self._check()
        if not self._readable:
            raise io.UnsupportedOperation("read")
        view = memoryview(b).cast("B")
        n = len(view)
        if n == 0:
            return 0
        start = self._pos - self._ahead_at
        if not (0 <= start < len(self._ahead)):
            sequential = self._pos == self._ahead_at + len(self._ahead) and self._ahead
            self._window = min(self._window * 2, READ_AHEAD_MAX) if sequential else \
                self._sftp.max_read * 4
            want = max(n, self._window)
            data, code, msg = self._sftp._c.read(self._h, self._pos, want, self._sftp._timeout,
                                                 INFLIGHT, self._sftp.max_read)
            if code >= 0:
                raise _error(code, msg, "read", self.name)
            self._ahead, self._ahead_at, start = data, self._pos, 0
            if not data:
                return 0
        k = min(n, len(self._ahead) - start)
        view[:k] = self._ahead[start:start + k]
        self._pos += k
        return k

    def readall(self) -> bytes:
        chunks: List[bytes] = []
        while True:
            b = bytearray(max(self._window, 1 << 20))
            k = self.readinto(b)
            if not k:
                return b"".join(chunks)
            chunks.append(bytes(b[:k]))

    def write(self, b: Any) -> int:
        self._check()
        if not self._writable:
            raise io.UnsupportedOperation("write")
        data = bytes(b)
        if not data:
            return 0
        if self.mode.startswith("a"):
            self._pos = self._size()
        moved, code, msg = self._sftp._c.write(self._h, self._pos, data, self._sftp._timeout,
                                               INFLIGHT, self._sftp.max_write)
        if code >= 0:
            raise _error(code, msg, "write", self.name)
        self._ahead = b""
        self._pos += len(data)
        return len(data)

    def _attrs(self) -> SFTPAttributes:
        rtype, data = self._sftp._call(FSTAT, _str(self._h), "fstat", self.name)
        if rtype != ATTRS:
            raise SFTPError(errno.EPROTO, "fstat: an unexpected reply", self.name)
        return SFTPAttributes._read(_Buf(data))

    def _size(self) -> int:
        return self._attrs().st_size or 0

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._check()
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self._size() + offset
        else:
            raise ValueError(f"invalid whence ({whence}, should be 0, 1 or 2)")
        if pos < 0:
            raise OSError(errno.EINVAL, "Invalid argument", self.name)
        self._pos = pos
        return pos

    def tell(self) -> int:
        self._check()
        return self._pos

    def truncate(self, size: Optional[int] = None) -> int:
        self._check()
        if not self._writable:
            raise io.UnsupportedOperation("truncate")
        if size is None:
            size = self._pos
        self._sftp._status(FSETSTAT, _str(self._h) + _attrs(size=size), "truncate", self.name)
        self._ahead = b""
        return size

    def fileno(self) -> int:
        raise io.UnsupportedOperation("a remote file has no file descriptor")

    def isatty(self) -> bool:
        return False

    def close(self) -> None:
        if not self.closed:
            try:
                if not self._sftp._c.closed:
                    self._sftp._close_handle(self._h)
            finally:
                super().close()


class SFTP:
    """One SFTP channel on a session (``session.sftp()``), reusable for many
    operations; a context manager. Not for two threads at once: give each thread
    its own (several can run on one session)."""

    def __init__(self, session: Any, timeout: Optional[float] = None):
        self._session = session
        self._timeout = check_timeout(timeout)
        self._c = _ssh.SFTP(session)
        reply = self._c.start(timeout=self._timeout if self._timeout else 30.0)
        b = _Buf(reply)
        self.version = b.u32()
        self.extensions: Dict[str, bytes] = {}
        while b.i < len(b.d):
            k = b.string().decode("utf-8", "replace")
            self.extensions[k] = b.string()
        self.max_read = self.max_write = 32768
        if "limits@openssh.com" in self.extensions:
            rtype, data = self._c.request(EXTENDED, _str(b"limits@openssh.com"),
                                          timeout=self._timeout)
            if rtype == EXTENDED_REPLY:
                lb = _Buf(data)
                _packet, rd, wr = lb.u64(), lb.u64(), lb.u64()
                self.max_read = max(1, min(rd or 32768, 1 << 20))
                self.max_write = max(1, min(wr or 32768, 1 << 20))

    # ---- lifetime
    def close(self) -> None:
        """Close the channel. Calling it again does nothing."""
        self._c.close()

    @property
    def closed(self) -> bool:
        return self._c.closed

    def __enter__(self) -> "SFTP":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        # tracebacks show objects whose __init__ failed: no channel, or not started
        c, version = getattr(self, "_c", None), getattr(self, "version", None)
        return f"<pyssh.SFTP version {version}, {'closed' if c is None or c.closed else 'open'}>"

    # ---- requests
    def _call(self, kind: int, payload: bytes, what: str, path: Optional[str],
              path2: Optional[str] = None) -> Tuple[int, bytes]:
        rtype, data = self._c.request(kind, payload, timeout=self._timeout)
        if rtype == STATUS:
            b = _Buf(data)
            code = b.u32()
            msg = b.string().decode("utf-8", "replace") if b.i < len(data) else ""
            if code != FX_OK:
                raise _error(code, msg, what, path, path2)
        return rtype, data

    def _status(self, kind: int, payload: bytes, what: str, path: str,
                path2: Optional[str] = None) -> None:
        rtype, _ = self._call(kind, payload, what, path, path2)
        if rtype != STATUS:
            raise SFTPError(errno.EPROTO, f"{what}: an unexpected SFTP reply ({rtype})", path)

    def _handle(self, kind: int, payload: bytes, what: str, path: str) -> bytes:
        rtype, data = self._call(kind, payload, what, path)
        if rtype != HANDLE:
            raise SFTPError(errno.EPROTO, f"{what}: an unexpected SFTP reply ({rtype})", path)
        return _Buf(data).string()

    def _close_handle(self, h: bytes) -> None:
        self._call(CLOSE, _str(h), "closing a remote file", None)

    def _names(self, kind: int, payload: bytes, what: str, path: str) -> List[SFTPAttributes]:
        rtype, data = self._call(kind, payload, what, path)
        if rtype != NAME:
            raise SFTPError(errno.EPROTO, f"{what}: an unexpected SFTP reply ({rtype})", path)
        b = _Buf(data)
        out = []
        for _ in range(b.u32()):
            name = b.string().decode("utf-8", "surrogateescape")
            longname = b.string().decode("utf-8", "replace")
            a = SFTPAttributes._read(b)
            a.filename, a.longname = name, longname
            out.append(a)
        return out

    # ---- file operations
    def stat(self, path: Any) -> SFTPAttributes:
        """The attributes of ``path``, following symlinks (``os.stat``)."""
        return self._attrs_of(STAT, path, "stat")

    def lstat(self, path: Any) -> SFTPAttributes:
        """The attributes of ``path`` itself, not following a symlink (``os.lstat``)."""
        return self._attrs_of(LSTAT, path, "lstat")

    def _attrs_of(self, kind: int, path: Any, what: str) -> SFTPAttributes:
        p = _path(path)
        rtype, data = self._call(kind, _str(p), what, os.fspath(path))
        if rtype != ATTRS:
            raise SFTPError(errno.EPROTO, f"{what}: an unexpected SFTP reply ({rtype})",
                            os.fspath(path))
        return SFTPAttributes._read(_Buf(data))

    def exists(self, path: Any) -> bool:
        """True if ``path`` exists (a broken symlink does not)."""
        try:
            self.stat(path)
            return True
        except SFTPFileNotFoundError:
            return False

    def is_dir(self, path: Any) -> bool:
        """True if ``path`` is a directory (or a symlink to one)."""
        try:
            return self.stat(path).is_dir()
        except SFTPFileNotFoundError:
            return False

    def is_file(self, path: Any) -> bool:
        """True if ``path`` is a regular file (or a symlink to one)."""
        try:
            return self.stat(path).is_file()
        except SFTPFileNotFoundError:
            return False

    def scandir(self, path: Any = ".") -> Iterator[SFTPAttributes]:
        """The entries of directory ``path`` with their attributes (``.`` and ``..``
        left out), as the server lists them: ``.filename``, ``.st_mode``..."""
        p = _path(path)
        spath = os.fspath(path)
        try:
            h = self._handle(OPENDIR, _str(p), "listing a directory", spath)
        except SFTPFileNotFoundError:
            # OpenSSH says "no such file" for a file that is not a directory
            try:
                st = self.stat(path)
            except SFTPError:
                raise
            if not st.is_dir():
                raise SFTPNotADirectoryError(errno.ENOTDIR, "listing a directory: not a "
                                             "directory", spath) from None
            raise
        try:
            while True:
                rtype, data = self._c.request(READDIR, _str(h), timeout=self._timeout)
                if rtype == STATUS:
                    b = _Buf(data)
                    code = b.u32()
                    if code == FX_EOF:
                        return
                    raise _error(code, b.string().decode("utf-8", "replace"),
                                 "listing a directory", spath)
                if rtype != NAME:
                    raise SFTPError(errno.EPROTO, "listing a directory: an unexpected reply",
                                    spath)
                b = _Buf(data)
                for _ in range(b.u32()):
                    name = b.string().decode("utf-8", "surrogateescape")
                    longname = b.string().decode("utf-8", "replace")
                    a = SFTPAttributes._read(b)
                    if name in (".", ".."):
                        continue
                    a.filename, a.longname = name, longname
                    yield a
        finally:
            if not self._c.closed:
                self._close_handle(h)

    def iterdir(self, path: Any = ".") -> Iterator[SFTPAttributes]:
        """Like :meth:`scandir` (pathlib's name): the entries with their attributes."""
        return self.scandir(path)

    def listdir(self, path: Any = ".") -> List[str]:
        """The names in directory ``path``, sorted (``.`` and ``..`` left out)."""
        return sorted(a.filename for a in self.scandir(path) if a.filename is not None)

    def listdir_attr(self, path: Any = ".") -> List[SFTPAttributes]:
        """The entries of ``path`` with their attributes, sorted by name."""
        return sorted(self.scandir(path), key=lambda a: a.filename or "")

    def mkdir(self, path: Any, mode: int = 0o777) -> None:
        """Make directory ``path`` (``os.mkdir``; the server applies its umask)."""
        spath = os.fspath(path)
        try:
            self._status(MKDIR, _str(_path(path)) + _attrs(mode=mode), "mkdir", spath)
        except SFTPError as e:
            if type(e) is SFTPError and self._lexists(path):
                raise SFTPFileExistsError(errno.EEXIST, f"mkdir: {spath} already exists",
                                          spath) from None
            raise

    def makedirs(self, path: Any, mode: int = 0o777, exist_ok: bool = False) -> None:
        """Make ``path`` and any missing parents (``os.makedirs``)."""
        spath = os.fspath(path)
        if self.is_dir(spath):
            if exist_ok:
                return
            raise SFTPFileExistsError(errno.EEXIST, f"makedirs: {spath} already exists", spath)
        parent = posixpath.dirname(spath.rstrip("/"))
        if parent and parent != spath and not self.is_dir(parent):
            self.makedirs(parent, mode, exist_ok=True)
        try:
            self.mkdir(spath, mode)
        except SFTPFileExistsError:
            if not (exist_ok and self.is_dir(spath)):
                raise

    def _lexists(self, path: Any) -> bool:
        try:
            self.lstat(path)
            return True
        except SFTPError:
            return False

    def remove(self, path: Any) -> None:
        """Remove file ``path`` (``os.remove``)."""
        spath = os.fspath(path)
        try:
            self._status(REMOVE, _str(_path(path)), "remove", spath)
        except SFTPError as e:
            if type(e) is SFTPError and self.is_dir(path):
                raise SFTPIsADirectoryError(errno.EISDIR, f"remove: {spath} is a directory "
                                            "(use rmdir)", spath) from None
            raise

    unlink = remove

    def rmdir(self, path: Any) -> None:
        """Remove the empty directory ``path`` (``os.rmdir``)."""
        spath = os.fspath(path)
        try:
            self._status(RMDIR, _str(_path(path)), "rmdir", spath)
        except SFTPError as e:
            # OpenSSH says "no such file" for ENOTDIR and "failure" for ENOTEMPTY
            if type(e) in (SFTPError, SFTPFileNotFoundError):
                try:
                    st = self.lstat(path)
                except SFTPError:
                    raise e from None
                if not st.is_dir():
                    raise SFTPNotADirectoryError(errno.ENOTDIR, f"rmdir: {spath} is not a "
                                                 "directory", spath) from None
                if self.listdir(path):
                    raise SFTPError(errno.ENOTEMPTY, f"rmdir: {spath} is not empty",
                                    spath) from None
            raise

    def rename(self, src: Any, dst: Any) -> None:
        """Rename ``src`` to ``dst``, replacing ``dst`` if it exists, as ``os.replace``
        does, where the server offers posix-rename@openssh.com; otherwise with
        SFTP's own rename, which refuses an existing ``dst``."""
        a, b = _path(src), _path(dst)
        if "posix-rename@openssh.com" in self.extensions:
            self._status(EXTENDED, _str(b"posix-rename@openssh.com") + _str(a) + _str(b),
                         "rename", os.fspath(src), os.fspath(dst))
        else:
            self._status(RENAME, _str(a) + _str(b), "rename", os.fspath(src), os.fspath(dst))

    replace = rename

    def chmod(self, path: Any, mode: int) -> None:
        """Set the permission bits of ``path`` (``os.chmod``)."""
        self._status(SETSTAT, _str(_path(path)) + _attrs(mode=mode & 0o7777), "chmod",
                     os.fspath(path))

    def utime(self, path: Any, times: Optional[Tuple[float, float]] = None) -> None:
        """Set the access and modification times of ``path`` (``os.utime``: a pair
        (atime, mtime) in seconds, or None for now)."""
        if times is None:
            import time
            now = time.time()
            times = (now, now)
        self._status(SETSTAT, _str(_path(path)) + _attrs(times=(int(times[0]), int(times[1]))),
                     "utime", os.fspath(path))

    def readlink(self, path: Any) -> str:
        """Where the symlink ``path`` points (``os.readlink``)."""
        try:
            names = self._names(READLINK, _str(_path(path)), "readlink", os.fspath(path))
        except SFTPError as e:
            if type(e) is SFTPError and self._lexists(path):
                raise SFTPError(errno.EINVAL, f"readlink: {os.fspath(path)} is not a symbolic "
                                "link", os.fspath(path)) from None
            raise
        if not names or names[0].filename is None:
            raise SFTPError(errno.EPROTO, "readlink: an empty reply", os.fspath(path))
        return names[0].filename

    def symlink(self, target: Any, link: Any) -> None:
        """Make ``link`` a symlink pointing to ``target`` (``os.symlink``'s order).
        OpenSSH's server takes the two the other way round from the SFTP draft;
        pyssh sends them in the order it expects."""
        t, k = _path(target), _path(link)
        self._status(SYMLINK, _str(t) + _str(k), "symlink", os.fspath(link), os.fspath(target))

    def realpath(self, path: Any = ".") -> str:
        """The absolute, canonical form of ``path`` on the server (``"."``: the
        directory SFTP starts in, normally the home)."""
        names = self._names(REALPATH, _str(_path(path)), "realpath", os.fspath(path))
        if not names or names[0].filename is None:
            raise SFTPError(errno.EPROTO, "realpath: an empty reply", os.fspath(path))
        return names[0].filename

    def statvfs(self, path: Any = ".") -> os.statvfs_result:
        """File system statistics for ``path``, where the server offers
        statvfs@openssh.com (OpenSSH does)."""
        spath = os.fspath(path)
        if "statvfs@openssh.com" not in self.extensions:
            raise SFTPError(errno.EOPNOTSUPP, "statvfs: the server does not offer "
                            "statvfs@openssh.com", spath)
        rtype, data = self._call(EXTENDED, _str(b"statvfs@openssh.com") + _str(_path(path)),
                                 "statvfs", spath)
        if rtype != EXTENDED_REPLY or len(data) < 88:
            raise SFTPError(errno.EPROTO, "statvfs: an unexpected reply", spath)
        v = struct.unpack(">11Q", data[:88])
        # bsize, frsize, blocks, bfree, bavail, files, ffree, favail, fsid, flag, namemax
        return os.statvfs_result((v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[9], v[10]))

    def walk(self, top: Any = ".") -> Iterator[Tuple[str, List[str], List[str]]]:
        """Like ``os.walk`` (top-down; symlinks to directories are not followed):
        yields (dirpath, dirnames, filenames)."""
        top = os.fspath(top)
        dirs: List[str] = []
        files: List[str] = []
        for a in self.listdir_attr(top):
            (dirs if a.is_dir() else files).append(a.filename or "")
        yield top, dirs, files
        for d in dirs:
            yield from self.walk(posixpath.join(top, d))

    # ---- file objects
    def open(self, path: Any, mode: str = "r", buffering: int = -1,
             encoding: Optional[str] = None, errors: Optional[str] = None,
             newline: Optional[str] = None) -> Any:
        """Open a remote file, as the builtin ``open()`` does: ``mode`` is "r", "w",
        "a", "x", with "+" and "b" or "t" (text by default); binary modes give
        ``io.BufferedReader``/``BufferedWriter``/``BufferedRandom``, text modes an
        ``io.TextIOWrapper``; ``buffering=0`` gives the raw file (binary only).
        Sequential reads fetch ahead and writes are pipelined, so
        ``shutil.copyfileobj`` runs near full transfer speed. New files get mode
        0o666 less the server's umask."""
        if not isinstance(mode, str):
            raise TypeError(f"mode must be a str, not {type(mode).__name__}")
        chars = set(mode)
        kinds = chars & set("rwax")
        if len(mode) != len(chars) or len(kinds) != 1 or chars - set("rwax+bt") or \
                {"b", "t"} <= chars:
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
        spath = os.fspath(path)
        try:
            h = self._open(spath, flags, 0o666 if flags & F_CREAT else None)
        except SFTPError as e:
            if type(e) is SFTPError and kind == "x" and self._lexists(spath):
                raise SFTPFileExistsError(errno.EEXIST, f"open: {spath} already exists",
                                          spath) from None
            if type(e) is SFTPError and self.is_dir(spath):
                raise SFTPIsADirectoryError(errno.EISDIR, f"open: {spath} is a directory",
                                            spath) from None
            raise
        raw = _RemoteRaw(self, spath, h, mode, readable, writable, 0)
        if not writable:
            # OpenSSH opens a directory for reading (its reads then fail): say so now
            try:
                is_dir = _stat.S_ISDIR(raw._attrs().st_mode or 0)
            except BaseException:
                raw.close()
                raise
            if is_dir:
                raw.close()
                raise SFTPIsADirectoryError(errno.EISDIR, f"open: {spath} is a directory",
                                            spath)
        if kind == "a":
            raw._pos = raw._size()
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
        text = io.TextIOWrapper(buffered, encoding or "utf-8", errors, newline,
                                line_buffering=line_buffering)
        text.mode = mode  # type: ignore[misc]
        return text

    # ---- transfers
    def _open(self, path: str, flags: int, mode: Optional[int] = None) -> bytes:
        return self._handle(OPEN, _str(_path(path)) + struct.pack(">I", flags) + _attrs(mode=mode),
                            "open", path)

    def get(self, remote: Any, local: Any, *, progress: Optional[Callable[[int, int], Any]] = None,
            preserve: bool = False, resume: bool = False) -> int:
        """Download one remote file to the local path ``local``. The data goes to a
        temporary file beside it, renamed into place once complete (with
        ``resume=True``: appended to ``local`` from where it ends). Returns the
        bytes transferred."""
        return self._get(os.fspath(remote), os.fspath(local), None, progress, preserve, resume)

    def _get(self, rpath: str, lpath: str, st: Optional[SFTPAttributes],
             progress: Optional[Callable[[int, int], Any]], preserve: bool, resume: bool) -> int:
        parent = os.path.dirname(os.path.abspath(lpath))
        if not os.path.isdir(parent):
            raise FileNotFoundError(errno.ENOENT, "get: the local directory does not exist",
                                    parent)
        if st is None:
            st = self.stat(rpath)
        if st.is_dir():
            raise SFTPIsADirectoryError(errno.EISDIR, f"get: {rpath} is a directory "
                                        "(download() copies trees)", rpath)
        h = self._open(rpath, F_READ)
        try:
            return self._get_open(h, rpath, lpath, st, progress, preserve, resume)
        finally:
            if not self._c.closed:
                # nothing to learn from the answer to a CLOSE after reading: no wait
                self._c.send(CLOSE, _str(h))

    def _get_open(self, h: bytes, rpath: str, lpath: str, st: SFTPAttributes,
                  progress: Optional[Callable[[int, int], Any]], preserve: bool,
                  resume: bool) -> int:
        total = st.st_size or 0
        start = 0
        if resume:
            # written in place, so that an interrupted download leaves what it got
            # for the next resume (no all-or-nothing rename)
            start = os.path.getsize(lpath) if os.path.exists(lpath) else 0
            if start > total:
                raise SFTPError(errno.EINVAL, f"resume: the local file {lpath} ({start} bytes) "
                                f"is longer than the remote one ({total} bytes)", rpath)
            tmp = lpath
            fd = os.open(lpath, os.O_WRONLY | os.O_CREAT | getattr(os, "O_BINARY", 0),
                         (st.st_mode or 0o644) & 0o777)
        else:
            d = os.path.dirname(os.path.abspath(lpath))
            tmp = os.path.join(d, f".{os.path.basename(lpath)}.{secrets.token_hex(4)}{PART_SUFFIX}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0),
                         0o600)
        ok = False
        try:
            cb = (lambda moved: progress(start + moved, total)) if progress else None
            moved, code, msg, err = self._c.download(h, fd, start, total, cb, self._timeout,
                                                     INFLIGHT, self.max_read)
            if code >= 0:
                raise _error(code, msg, "download", rpath)
            if err:
                raise OSError(err, f"download: writing {lpath}: {os.strerror(err)}", lpath)
            if tmp != lpath and hasattr(os, "fchmod"):
                os.fchmod(fd, (st.st_mode or 0o644) & 0o777)
            ok = True
        finally:
            os.close(fd)
            if not ok and tmp != lpath:
                os.unlink(tmp)
        if tmp != lpath:
            os.replace(tmp, lpath)
        if preserve and st.st_mtime is not None:
            os.utime(lpath, (st.st_atime or st.st_mtime, st.st_mtime))
        if progress:
            progress(start + moved, total)
        return moved

    def put(self, local: Any, remote: Any, *, progress: Optional[Callable[[int, int], Any]] = None,
            preserve: bool = False, resume: bool = False) -> int:
        """Upload the local file ``local`` to the remote path ``remote`` (its mode
        kept; ``preserve=True`` keeps its times too; ``resume=True`` continues a
        remote file from where it ends). Returns the bytes transferred."""
        lpath, rpath = os.fspath(local), os.fspath(remote)
        fd = os.open(lpath, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        try:
            lst = os.fstat(fd)
            if _stat.S_ISDIR(lst.st_mode):
                raise IsADirectoryError(errno.EISDIR, "put: a directory (upload() copies trees)",
                                        lpath)
            start = 0
            flags = F_WRITE | F_CREAT
            if resume:
                try:
                    start = self.stat(rpath).st_size or 0
                except SFTPFileNotFoundError:
                    start = 0
                if start > lst.st_size:
                    raise SFTPError(errno.EINVAL, f"resume: the remote file ({start} bytes) is "
                                    f"longer than {lpath} ({lst.st_size} bytes)", rpath)
            else:
                flags |= F_TRUNC
            h = self._open(rpath, flags, _stat.S_IMODE(lst.st_mode))
            closed = False
            try:
                cb = (lambda moved: progress(start + moved, lst.st_size)) if progress else None
                moved, code, msg, err = self._c.upload(h, fd, start, lst.st_size - start, cb,
                                                       self._timeout, INFLIGHT, self.max_write)
                if code >= 0:
                    raise _error(code, msg, "upload", rpath)
                if err == -1:
                    raise OSError(errno.EIO, f"upload: {lpath} became shorter while it was sent",
                                  lpath)
                if err:
                    raise OSError(err, f"upload: reading {lpath}: {os.strerror(err)}", lpath)
                # the mode exactly (the server's umask applied at creation), the times
                # if asked, and the close, in one round trip
                replies = self._c.batch([
                    (FSETSTAT, _str(h) + _attrs(
                        mode=_stat.S_IMODE(lst.st_mode),
                        times=(int(lst.st_atime), int(lst.st_mtime)) if preserve else None)),
                    (CLOSE, _str(h))], timeout=self._timeout)
                closed = True
                for rtype, data in replies:
                    b = _Buf(data)
                    code = b.u32() if rtype == STATUS else FX_FAILURE
                    if code != FX_OK:
                        msg = b.string().decode("utf-8", "replace") if rtype == STATUS else ""
                        raise _error(code, msg, "upload", rpath)
            finally:
                if not closed and not self._c.closed:
                    self._close_handle(h)
        finally:
            os.close(fd)
        if progress:
            progress(lst.st_size, lst.st_size)
        return moved

    def upload(self, files: Any, to: Any = ".", *, verbose: bool = True,
               progress: Optional[Progress] = None, preserve: bool = False,
               resume: bool = False) -> List[str]:
        """Copy local files and directories into the remote directory ``to``
        (recursively, hidden files included, modes kept; ``preserve`` keeps times).
        Returns the remote paths written (the top level)."""
        paths = _paths(files, "upload")
        to_s = os.fspath(to)
        if not self.is_dir(to_s):
            raise SFTPNotADirectoryError(errno.ENOTDIR, f"upload: the remote directory {to_s} "
                                         "does not exist", to_s)
        rep = _Reporter(verbose, progress, upload=True)
        out = []
        for p in paths:
            if not os.path.exists(p):
                raise FileNotFoundError(errno.ENOENT, "upload: no such local file", p)
            name = os.path.basename(os.path.normpath(p))
            dest = posixpath.join(to_s, name)
            self._upload_one(p, dest, rep, preserve, resume)
            out.append(dest)
        return out

    def _upload_one(self, local: str, dest: str, rep: _Reporter, preserve: bool,
                    resume: bool) -> None:
        st = os.stat(local)
        if _stat.S_ISDIR(st.st_mode):
            if not self.is_dir(dest):
                self.mkdir(dest, 0o700)
            for name in sorted(os.listdir(local)):
                self._upload_one(os.path.join(local, name), posixpath.join(dest, name), rep,
                                 preserve, resume)
            self._status(SETSTAT, _str(_path(dest)) + _attrs(
                mode=_stat.S_IMODE(st.st_mode),
                times=(int(st.st_atime), int(st.st_mtime)) if preserve else None),
                "upload", dest)
            return
        report = rep.callback(local, st.st_size)
        self.put(local, dest, preserve=preserve, resume=resume,
                 progress=(lambda moved, total: report(moved)) if report else None)
        rep.finished(local, st.st_size)

    def download(self, files: Any, to: Any = ".", *, verbose: bool = True,
                 progress: Optional[Progress] = None, preserve: bool = False,
                 resume: bool = False) -> List[str]:
        """Copy remote files and directories (recursively) into the existing local
        directory ``to``. Each file is written to a temporary file and renamed into
        place once complete. Names from the server that would escape ``to`` are
        refused. Returns the local paths written (the top level)."""
        paths = _paths(files, "download")
        to_s = os.fspath(to)
        if not os.path.isdir(to_s):
            if os.path.exists(to_s):
                raise NotADirectoryError(errno.ENOTDIR, "download: not a directory", to_s)
            raise FileNotFoundError(errno.ENOENT, "download: the local directory does not "
                                    "exist", to_s)
        rep = _Reporter(verbose, progress, upload=False)
        out = []
        for p in paths:
            name = posixpath.basename(p.rstrip("/")) or p
            if name in (".", "..", "~"):
                name = posixpath.basename(self.realpath(p))
            dest = os.path.join(to_s, name)
            self._download_one(p, dest, rep, preserve, resume)
            out.append(dest)
        return out

    def _download_one(self, remote: str, dest: str, rep: _Reporter, preserve: bool,
                      resume: bool, st: Optional[SFTPAttributes] = None) -> None:
        if st is None or st.st_mode is None:
            st = self.stat(remote)
        if st.is_dir():
            if not os.path.isdir(dest):
                os.mkdir(dest, 0o700)
            for a in self.listdir_attr(remote):
                name = a.filename or ""
                if not name or name in (".", "..") or "/" in name or "\0" in name:
                    raise SFTPError(errno.EPROTO, f"download: the server listed an unsafe name "
                                    f"{name!r} in {remote}", remote)
                # the listing's attributes serve, but a symlink's are its own
                self._download_one(posixpath.join(remote, name), os.path.join(dest, name), rep,
                                   preserve, resume, None if a.is_symlink() else a)
            os.chmod(dest, (st.st_mode or 0o755) & 0o777)
            if preserve and st.st_mtime is not None:
                os.utime(dest, (st.st_atime or st.st_mtime, st.st_mtime))
            return
        total = st.st_size or 0
        report = rep.callback(dest, total)
        self._get(remote, dest, st, (lambda moved, t: report(moved)) if report else None,
                  preserve, resume)
        rep.finished(dest, total)
