"""pyssh.aio's SFTP: :class:`AsyncSFTP` (a channel) and :class:`AsyncSFTPFile` (a
remote file), the blocking :class:`pyssh.SFTP`'s flows run in the event loop
(``pyssh.aio._run``). Import them from :mod:`pyssh.aio`."""

from __future__ import annotations

import asyncio
import codecs
import io
import os
import posixpath
from typing import Any, AsyncIterator, Callable, List, Optional, Tuple, Union

from . import _sftp
from ._tcp import Steps
from .aio import _Bell, _Later, _run

_NEWLINES = (None, "", "\n", "\r", "\r\n")


class _Text:
    """A text mode's encoding, errors and newline, as the builtin ``open()`` takes
    them: decoding (universal newlines when `newline` is None) and encoding (``\\n``
    written as ``os.linesep`` when None, as `newline` when that is one)."""

    def __init__(self, encoding: Optional[str], errors: Optional[str], newline: Optional[str]):
        if newline not in _NEWLINES:
            raise ValueError(f"illegal newline value: {newline!r}")
        self.encoding = codecs.lookup(encoding or "utf-8").name
        self.errors = errors or "strict"
        self.newline = newline
        # lines end at "\n" unless the newline asked is "\r" or "\r\n"
        enc = codecs.getincrementalencoder(self.encoding)()
        enc.encode("x")  # (a byte order mark, if the encoding writes one, goes first)
        self.sep = enc.encode(newline if newline in ("\r", "\r\n") else "\n")
        self.encoder: Any = None  # made at the first write
        self.decoder = self.new_decoder()

    def new_decoder(self) -> Any:
        d = codecs.getincrementaldecoder(self.encoding)(self.errors)
        if self.newline is None:
            return io.IncrementalNewlineDecoder(d, translate=True)
        return d

    def decode(self, data: bytes, final: bool) -> str:
        """Sequential data (a character split between two reads is whole in the
        second)."""
        text: str = self.decoder.decode(data, final)
        return text

    def decode_at(self, data: bytes) -> str:
        """Data read at an offset: on its own."""
        text: str = self.new_decoder().decode(data, True)
        return text

    def encode(self, text: Any, pos: int) -> bytes:
        """`text` to write at `pos`: a byte order mark (utf-16...) only at 0."""
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        if self.newline is None and os.linesep != "\n":
            text = text.replace("\n", os.linesep)
        elif self.newline in ("\r", "\r\n"):
            text = text.replace("\n", self.newline)
        if self.encoder is None:
            self.encoder = codecs.getincrementalencoder(self.encoding)(self.errors)
            if pos != 0:
                self.encoder.setstate(0)
        data: bytes = self.encoder.encode(text)
        return data


class AsyncSFTPFile(_sftp._FileSteps):
    """A remote file for asyncio, from ``await sftp.open(path, mode)``: the blocking
    file object's reads, writes, seeks and fetching ahead (the same flows), with
    asyncssh's ``SFTPClientFile`` shape. Binary modes read and write bytes, text
    modes str (decoded as it is read; positions are byte offsets). ``async with``
    closes it; ``async for line in f`` reads it line by line. Its operations take turns
    with the others of its :class:`AsyncSFTP` channel."""

    def __init__(self, sftp: AsyncSFTP, text: Optional[_Text]):
        self._owner = sftp
        self._text = text
        self._closed = False

    def _is_closed(self) -> bool:
        return self._closed

    @property
    def closed(self) -> bool:
        """True once closed (by :meth:`close`, or when the open failed)."""
        return self._closed

    def __repr__(self) -> str:
        name = getattr(self, "name", None)
        return f"<pyssh.aio.AsyncSFTPFile {name!r} mode={getattr(self, 'mode', None)!r}>"

    async def __aenter__(self) -> AsyncSFTPFile:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    def __aiter__(self) -> AsyncSFTPFile:
        return self

    async def __anext__(self) -> Union[bytes, str]:
        line = await self.readline()
        if not line:
            raise StopAsyncIteration
        return line

    async def _do(self, flow: Steps[Any]) -> Any:
        return await self._owner._do(flow)

    async def read(self, size: int = -1, offset: Optional[int] = None) -> Union[bytes, str]:
        """Up to ``size`` bytes (all to the end when negative) from the position,
        which moves past them, or from ``offset`` (the position left as it is):
        fewer only at the end of the file (b"" there). Large reads keep many
        requests in flight. A cancelled read leaves the position as it was. In a
        text mode: ``size`` bytes' worth, decoded (str)."""
        if isinstance(size, bool) or not isinstance(size, int):
            raise TypeError(f"size must be an int, not {type(size).__name__}")
        if offset is not None:
            data: bytes = await self._do(self._pread_steps(size, offset))
            return data if self._text is None else self._text.decode_at(data)
        data = await self._do(self._kept(self._read_steps(size)))
        if self._text is None:
            return data
        return self._text.decode(data, final=size < 0 or len(data) < size)

    async def readline(self) -> Union[bytes, str]:
        """One line, its end included ("" or b"" at the end of the file)."""
        sep = self._text.sep if self._text is not None else b"\n"
        data = self._buffered_line(sep)  # most lines: in the data fetched ahead
        if data is None:
            data = await self._do(self._kept(self._readline_steps(sep)))
        if self._text is None:
            return data
        return self._text.decode(data, final=not data.endswith(sep))

    async def readlines(self) -> List[Any]:
        """Every line to the end of the file."""
        return [line async for line in self]

    def _kept(self, flow: Steps[Any]) -> Steps[Any]:
        """`flow`, the position put back if it fails (or is cancelled)."""
        pos = self._pos
        try:
            return (yield from flow)
        except BaseException:
            self._pos = pos
            raise

    async def write(self, data: Any, offset: Optional[int] = None) -> int:
        """Write ``data`` (bytes; str in a text mode) at the position, which moves
        past it (an append writes at the end), or at ``offset`` (the position left as
        it is): the bytes written (in a text mode: the characters), once the
        server confirmed them all. Sent as requests in flight together."""
        raw = data
        if self._text is not None:
            raw = self._text.encode(data, self._pos if offset is None else offset)
        if isinstance(raw, str):
            raise TypeError("a bytes-like object is required, not 'str' (a binary mode)")
        n: int = await self._do(self._write_steps(raw, offset))
        return len(data) if self._text is not None else n

    async def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """Move the position (``whence`` 0: from the start, 1: from the position, 2:
        from the end, which asks the server the size); the new position."""
        pos: int = await self._do(self._seek_steps(offset, whence))
        if self._text is not None:
            self._text.decoder = self._text.new_decoder()
        return pos

    def tell(self) -> int:
        """The position (a byte offset)."""
        self._check()
        return self._pos

    async def stat(self) -> _sftp.SFTPAttributes:
        """The open file's attributes (FSTAT)."""
        self._check()
        st: _sftp.SFTPAttributes = await self._do(self._attrs_steps())
        return st

    async def truncate(self, size: Optional[int] = None) -> int:
        """Cut (or extend) the file to ``size`` bytes (None: the position); the size."""
        n: int = await self._do(self._truncate_steps(size))
        return n

    async def fsync(self) -> None:
        """Make the server write the file to its disk (fsync@openssh.com; SFTPError,
        EOPNOTSUPP, where the server does not offer it)."""
        await self._do(self._fsync_steps())

    async def close(self) -> None:
        """Close the remote handle (what was written stays). Calling it again does
        nothing."""
        if self._closed:
            return
        self._closed = True
        self._ahead = b""
        await self._do(self._close_handle_steps())


class AsyncSFTP:
    """An SFTP channel for asyncio: :class:`pyssh.SFTP`'s transfers and file
    operations as coroutines. The channel runs one operation at a time: operations
    started together (``asyncio.gather``, its files' reads and writes) take turns
    (open several channels for transfers at once)."""

    def __init__(self, sftp: Any, bell: _Bell):
        self.sftp = sftp
        self._bell = bell
        # the channel runs one operation at a time: the others (its files' too) wait
        # their turn here, rather than find it in use
        self._turn = asyncio.Lock()

    async def __aenter__(self) -> AsyncSFTP:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self.sftp.close()

    @property
    def closed(self) -> bool:
        return bool(self.sftp.closed)

    async def _do(self, flow: Steps[Any], later: Optional[_Later] = None) -> Any:
        async with self._turn:
            return await _run(flow, self._bell, later)

    async def put(
        self,
        local: Any,
        remote: Any,
        *,
        progress: Optional[Callable[[int, int], Any]] = None,
        preserve: bool = False,
        resume: bool = False,
    ) -> int:
        """:meth:`pyssh.SFTP.put`: the bytes transferred."""
        later = _Later()
        n: int = await self._do(
            self.sftp._put_steps(local, remote, later.wrap(progress), preserve, resume, None, None),
            later,
        )
        return n

    async def get(
        self,
        remote: Any,
        local: Any,
        *,
        progress: Optional[Callable[[int, int], Any]] = None,
        preserve: bool = False,
        resume: bool = False,
    ) -> int:
        """:meth:`pyssh.SFTP.get`: written to a temporary file beside ``local``,
        renamed into place once complete; the bytes transferred."""
        later = _Later()
        n: int = await self._do(
            self.sftp._get_path_steps(
                remote, local, later.wrap(progress), preserve, resume, None, None
            ),
            later,
        )
        return n

    async def upload(
        self, files: Any, to: Any = ".", *, preserve: bool = False, resume: bool = False
    ) -> List[str]:
        """:meth:`pyssh.SFTP.upload` (trees recursively): the remote paths written."""
        paths: List[str] = await self._do(
            self.sftp._upload_steps(files, to, False, None, preserve, resume)
        )
        return paths

    async def download(
        self, files: Any, to: Any = ".", *, preserve: bool = False, resume: bool = False
    ) -> List[str]:
        """:meth:`pyssh.SFTP.download` (trees recursively): the local paths written."""
        paths: List[str] = await self._do(
            self.sftp._download_steps(files, to, False, None, preserve, resume)
        )
        return paths

    async def stat(self, path: Any) -> Any:
        """:meth:`pyssh.SFTP.stat`: an SFTPAttributes."""
        return await self._do(self.sftp._stat_steps(path))

    async def is_dir(self, path: Any) -> bool:
        """:meth:`pyssh.SFTP.is_dir`."""
        r: bool = await self._do(self.sftp._is_dir_steps(path))
        return r

    async def lstat(self, path: Any) -> Any:
        """:meth:`pyssh.SFTP.lstat`: the attributes of a symlink itself."""
        return await self._do(self.sftp._attrs_of_steps(_sftp.LSTAT, path, "lstat"))

    async def exists(self, path: Any) -> bool:
        """:meth:`pyssh.SFTP.exists`."""
        r: bool = await self._do(self.sftp._exists_steps(path))
        return r

    async def is_file(self, path: Any) -> bool:
        """:meth:`pyssh.SFTP.is_file`."""
        r: bool = await self._do(self.sftp._is_file_steps(path))
        return r

    async def is_symlink(self, path: Any) -> bool:
        """:meth:`pyssh.SFTP.is_symlink`."""
        r: bool = await self._do(self.sftp._is_symlink_steps(path))
        return r

    async def scandir(self, path: Any = ".") -> AsyncIterator[_sftp.SFTPAttributes]:
        """:meth:`pyssh.SFTP.scandir`: an async iterator of the entries with their
        attributes, as the server lists them (a READDIR at a time)."""
        sftp = self.sftp
        h = await self._do(sftp._opendir_steps(path))
        spath = os.fspath(path)
        try:
            counts = [0, 0]
            while True:
                got = await self._do(sftp._readdir_steps(h, spath, counts))
                if got is None:
                    return
                for a in got:
                    yield a
        finally:
            if not sftp.closed:  # (not waited for: an iterator given up closes too)
                await self._do(sftp._send_close_steps(sftp._c, h))

    def iterdir(self, path: Any = ".") -> AsyncIterator[_sftp.SFTPAttributes]:
        """:meth:`pyssh.SFTP.iterdir`: as :meth:`scandir`."""
        return self.scandir(path)

    async def walk(self, top: Any = ".") -> AsyncIterator[Tuple[str, List[str], List[str]]]:
        """:meth:`pyssh.SFTP.walk`: ``async for dirpath, dirnames, filenames in
        sftp.walk(top)``, top-down (``dirnames`` may be pruned in place), symlinks
        to directories not followed, SFTPError (ELOOP) below 64 levels."""
        async for x in self._walk(os.fspath(top), 0):
            yield x

    async def _walk(self, top: str, depth: int) -> AsyncIterator[Tuple[str, List[str], List[str]]]:
        _sftp._walk_depth(top, depth)
        dirs, files = _sftp._walk_split(await self.listdir_attr(top))
        yield top, dirs, files
        for d in dirs:
            async for x in self._walk(posixpath.join(top, d), depth + 1):
                yield x

    async def glob(self, pattern: Any) -> List[str]:
        """:meth:`pyssh.SFTP.glob`: the matching paths, sorted."""
        paths: List[str] = await self._do(self.sftp._glob_steps(pattern))
        return paths

    async def makedirs(self, path: Any, mode: int = 0o777, exist_ok: bool = False) -> None:
        """:meth:`pyssh.SFTP.makedirs`."""
        await self._do(self.sftp._makedirs_steps(path, mode, exist_ok))

    async def rmtree(self, path: Any) -> None:
        """:meth:`pyssh.SFTP.rmtree`: links removed, never followed."""
        await self._do(self.sftp._rmtree_steps(path))

    async def utime(self, path: Any, times: Optional[Tuple[float, float]] = None) -> None:
        """:meth:`pyssh.SFTP.utime`."""
        await self._do(self.sftp._utime_steps(path, times))

    async def readlink(self, path: Any) -> str:
        """:meth:`pyssh.SFTP.readlink`."""
        r: str = await self._do(self.sftp._readlink_steps(path))
        return r

    async def symlink(self, target: Any, link: Any) -> None:
        """:meth:`pyssh.SFTP.symlink` (``os.symlink``'s order)."""
        await self._do(self.sftp._symlink_steps(target, link))

    async def link(self, src: Any, dst: Any) -> None:
        """:meth:`pyssh.SFTP.link` (hardlink@openssh.com)."""
        await self._do(self.sftp._link_steps(src, dst))

    hardlink = link

    async def chown(self, path: Any, uid: int, gid: int) -> None:
        """:meth:`pyssh.SFTP.chown`."""
        await self._do(self.sftp._chown_steps(path, uid, gid))

    async def statvfs(self, path: Any = ".") -> os.statvfs_result:
        """:meth:`pyssh.SFTP.statvfs` (statvfs@openssh.com)."""
        r: os.statvfs_result = await self._do(self.sftp._statvfs_steps(path))
        return r

    def limits(self) -> _sftp.SFTPLimits:
        """:meth:`pyssh.SFTP.limits`: asked when the channel started, so nothing to
        await."""
        limits: _sftp.SFTPLimits = self.sftp.limits()
        return limits

    async def copy(self, src: Any, dst: Any) -> None:
        """:meth:`pyssh.SFTP.copy` (copy-data: the bytes never leave the server)."""
        await self._do(self.sftp._copy_steps(src, dst))

    async def fsync(self, file: Any) -> None:
        """:meth:`pyssh.SFTP.fsync`: ``file`` an :class:`AsyncSFTPFile` or a path."""
        if isinstance(file, AsyncSFTPFile):
            await file.fsync()
            return
        await self._do(self.sftp._fsync_path_steps(file))

    async def listdir_attr(self, path: Any = ".") -> List[Any]:
        """:meth:`pyssh.SFTP.listdir_attr`: the entries with their attributes, by name."""
        entries: List[Any] = await self._do(self.sftp._listdir_attr_steps(path))
        return entries

    async def listdir(self, path: Any = ".") -> List[str]:
        """:meth:`pyssh.SFTP.listdir`: the names, sorted."""
        return sorted(a.filename for a in await self.listdir_attr(path) if a.filename is not None)

    async def mkdir(self, path: Any, mode: int = 0o777) -> None:
        """:meth:`pyssh.SFTP.mkdir`."""
        await self._do(self.sftp._mkdir_steps(path, mode))

    async def rmdir(self, path: Any) -> None:
        """:meth:`pyssh.SFTP.rmdir`."""
        await self._do(self.sftp._rmdir_steps(path))

    async def remove(self, path: Any) -> None:
        """:meth:`pyssh.SFTP.remove`."""
        await self._do(self.sftp._remove_steps(path))

    unlink = remove

    async def rename(self, src: Any, dst: Any) -> None:
        """:meth:`pyssh.SFTP.rename` (replacing ``dst`` where the server offers
        posix-rename@openssh.com)."""
        await self._do(self.sftp._rename_steps(src, dst))

    replace = rename

    async def chmod(self, path: Any, mode: int) -> None:
        """:meth:`pyssh.SFTP.chmod`."""
        await self._do(self.sftp._chmod_steps(path, mode))

    async def open(
        self,
        path: Any,
        mode: str = "r",
        buffering: int = -1,
        encoding: Optional[str] = None,
        errors: Optional[str] = None,
        newline: Optional[str] = None,
    ) -> AsyncSFTPFile:
        """:meth:`pyssh.SFTP.open`'s modes and arguments ("r", "w", "a", "x", with "+"
        and "b" or "t"; text by default): an :class:`AsyncSFTPFile`. ``buffering``
        is checked, not used (reads fetch ahead, each write is sent at once). New
        files get mode 0o666 less the server's umask. A write goes to the file
        itself, as with the blocking ``open()``: a cancelled or failed write leaves
        what the server got (``put`` writes whole files)."""
        kind, binary, readable, writable, flags = _sftp._open_mode(
            mode, buffering, encoding, errors, newline
        )
        f = AsyncSFTPFile(self, None if binary else _Text(encoding, errors, newline))
        f._closed = True  # until it is open
        await self._do(
            self.sftp._open_file_steps(f, os.fspath(path), mode, kind, flags, readable, writable)
        )
        f._closed = False
        return f

    async def realpath(self, path: Any = ".") -> str:
        """:meth:`pyssh.SFTP.realpath`."""
        r: str = await self._do(self.sftp._realpath_steps(path))
        return r
