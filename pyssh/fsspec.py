"""An fsspec filesystem on pyssh.aio: ``fsspec.filesystem("pyssh", host=...)`` and
``pyssh://user@host:port/path`` URLs (pandas, dask, xarray, pyarrow...).

``SSHFileSystem`` is an ``fsspec.asyn.AsyncFileSystem``: its coroutines run
pyssh's own SFTP flows in the event loop (fsspec's IO thread for the blocking
methods, yours with ``asynchronous=True``). Each filesystem instance (fsspec caches
them per host, port, user and options) keeps one SSH session, connected at its first
operation, and a small pool of SFTP channels, one lent to each operation under way
(an SFTP channel does one operation at a time; ``max_channels`` of them at once).
Files written through ``open(..., "wb")`` or ``pipe_file`` go to a temporary name
beside the target and are renamed into place when complete: a reader never sees a
half-written file under its name. Needs the ``fsspec`` package.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime
import errno
import os
import posixpath
import re
import secrets
import stat as _stat
import weakref
from glob import has_magic
from typing import Any, AsyncIterator, Dict, List, Optional, Tuple, Union
from urllib.parse import unquote

from fsspec.asyn import AbstractAsyncStreamedFile, AsyncFileSystem, sync, sync_wrapper
from fsspec.callbacks import DEFAULT_CALLBACK
from fsspec.spec import AbstractBufferedFile

from . import _sftp, aio as _aio, session as _session
from ._names import printable
from ._sftp import SFTPAttributes
from ._tcp import Steps
from .errors import SFTPError, SFTPFileExistsError, SFTPIsADirectoryError, SSHError

__all__ = ["AsyncSSHFile", "SSHFile", "SSHFileSystem"]

_URL = re.compile(r"^pyssh://([^/]*)(/.*)?$", re.DOTALL)
# fsspec's own options, passed to AbstractFileSystem; the rest are pyssh.connect's
_FSSPEC_OPTIONS = {"use_listings_cache", "listings_expiry_time", "max_paths"}


def _split_netloc(netloc: str) -> Dict[str, Any]:
    """``user:password@host:port`` (each part optional, IPv6 in brackets) as
    connect's keywords; percent-escapes decoded."""
    out: Dict[str, Any] = {}
    if "@" in netloc:
        cred, netloc = netloc.rsplit("@", 1)
        user, _, password = cred.partition(":")
        if user:
            out["user"] = unquote(user)
        if password:
            out["password"] = unquote(password)
    host, port = netloc, ""
    if netloc.startswith("["):
        end = netloc.find("]")
        if end < 0:
            raise ValueError(f"invalid pyssh URL host {netloc!r}: an unclosed [")
        host, port = netloc[1:end], netloc[end + 1 :].lstrip(":")
    elif netloc.count(":") == 1:
        host, port = netloc.split(":")
    if port:
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"invalid port in a pyssh URL: {port!r}")
        out["port"] = int(port)
    if host:
        out["host"] = unquote(host)
    return out


def _times(st: SFTPAttributes) -> Dict[str, Any]:
    return {"mtime": st.st_mtime, "atime": st.st_atime}


def _info(name: str, st: SFTPAttributes, link: bool) -> Dict[str, Any]:
    """fsspec's info dict of `name` from its attributes (a link's: its target's,
    with ``islink``; a link that leads nowhere is of type "link")."""
    mode = st.st_mode or 0
    if _stat.S_ISDIR(mode):
        kind = "directory"
    elif _stat.S_ISREG(mode):
        kind = "file"
    elif _stat.S_ISLNK(mode):
        kind = "link"
    else:
        kind = "other"
    return {
        "name": name,
        "size": st.st_size if st.st_size is not None else 0,
        "type": kind,
        "mode": mode,
        "uid": st.st_uid,
        "gid": st.st_gid,
        **_times(st),
        "islink": link,
    }


def _limits(start: Optional[int], end: Optional[int], size: int) -> Tuple[int, int]:
    """fsspec's byte range (start, end; None: the file's start or end; negative:
    from the end) as offsets within a file of `size` bytes."""
    a = 0 if start is None else (max(0, size + start) if start < 0 else min(start, size))
    b = size if end is None else (max(0, size + end) if end < 0 else min(end, size))
    return a, max(a, b)


def _rename_steps(sftp: _sftp.SFTP, src: str, dst: str, replace: bool) -> Steps[None]:
    """Rename `src` to `dst`: replacing it (posix-rename@openssh.com), or not (the
    protocol's own RENAME, which fails when `dst` exists)."""
    if replace:
        yield from sftp._rename_steps(src, dst)
        return
    body = _sftp._str(_sftp._path(src)) + _sftp._str(_sftp._path(dst))
    yield from sftp._status_steps(_sftp.RENAME, body, "rename", src, dst)


def _part_name(path: str) -> str:
    """A temporary name beside `path`, hidden, for a file written whole then renamed."""
    head, tail = posixpath.split(path)
    return posixpath.join(head, f".{tail}.{secrets.token_hex(6)}.pyssh-part")


class _Link:
    """A filesystem's connection: one AsyncSession (connected at the first
    operation, again after it was lost or closed) and a pool of SFTP channels, each
    lent to one operation at a time. Lives in one event loop's thread."""

    def __init__(self, host: str, kw: Dict[str, Any], channels: int):
        self.host = host
        self.kw = kw
        self.channels = channels
        self.session: Optional[_aio.AsyncSession] = None
        self.idle: List[_aio.AsyncSFTP] = []
        self.loop: Optional[asyncio.AbstractEventLoop] = None
        self.lock: Optional[asyncio.Lock] = None
        self.free: Optional[asyncio.Semaphore] = None

    def _here(self) -> None:
        """The lock and the pool's semaphore belong to the running loop (made again
        for another: asyncio's primitives are bound to the loop that first waits)."""
        loop = asyncio.get_running_loop()
        if loop is not self.loop or self.lock is None or self.free is None:
            self.loop = loop
            self.lock = asyncio.Lock()
            self.free = asyncio.Semaphore(self.channels)

    async def connected(self) -> _aio.AsyncSession:
        self._here()
        s = self.session
        if s is not None and not s.closed:
            return s
        assert self.lock is not None
        async with self.lock:
            if self.session is None or self.session.closed:
                self.close()
                self.session = await _aio.connect(self.host, **self.kw)
            return self.session

    @contextlib.asynccontextmanager
    async def channel(self) -> AsyncIterator[_aio.AsyncSFTP]:
        """An SFTP channel for one operation: an idle one, or a new one while fewer
        than `channels` are lent. A channel whose operation was cancelled, timed
        out or lost its connection is closed, not reused."""
        session = await self.connected()
        assert self.free is not None
        async with self.free:
            ch = None
            while self.idle and ch is None:
                c = self.idle.pop()
                ch = c if not c.closed else None
            if ch is None:
                ch = await session.sftp(timeout=self.kw.get("timeout"))
            reuse = False
            try:
                yield ch
                reuse = True
            except Exception as e:
                # the server's answer to the operation: the channel is fine; a lost
                # connection, a timeout, a broken protocol: it goes
                reuse = not isinstance(e, SSHError) or (
                    isinstance(e, SFTPError) and e.errno != errno.EPROTO
                )
                raise
            finally:
                if reuse and not ch.closed and self.session is session:
                    self.idle.append(ch)
                else:
                    ch.close()

    def close(self) -> None:
        """Close the channels and the session (in the loop's thread)."""
        idle, self.idle = self.idle, []
        for ch in idle:
            ch.close()
        s, self.session = self.session, None
        if s is not None:
            s.close()

    def close_soon(self, wait: bool = False) -> None:
        """close() from any thread: in the loop's own when it runs elsewhere (`wait`:
        until done there, 10 s at most)."""
        loop = self.loop
        if loop is not None and loop.is_running() and not loop.is_closed():
            try:
                here = asyncio.get_running_loop() is loop
            except RuntimeError:
                here = False
            if not here:

                async def shut() -> None:
                    self.close()

                coro = shut()
                try:
                    done = asyncio.run_coroutine_threadsafe(coro, loop)
                except RuntimeError:  # the loop closed meanwhile
                    coro.close()
                    self.close()
                    return
                if wait:
                    with contextlib.suppress(concurrent.futures.TimeoutError):
                        done.result(10)
                return
        self.close()


class SSHFileSystem(AsyncFileSystem):  # type: ignore[misc]
    """Files on an SSH server over SFTP, for fsspec: ``pyssh://[user@]host[:port]/path``.

    ``host`` and the keywords are :func:`pyssh.connect`'s (``port``, ``user`` or
    ``username``, ``keyfile``, ``password``, ``known_hosts``, ``host_key_policy``,
    ``config``, ``timeout``...): the same host key checks and authentication.
    ``max_channels``: SFTP channels used at once (OpenSSH's sshd allows 10 channels
    per connection). Paths are remote paths: absolute, or relative to the login
    directory; a URL's path is absolute. ``asynchronous``, ``loop``, ``batch_size``
    and the listings cache options are fsspec's."""

    protocol = ("pyssh",)
    root_marker = ""

    def __init__(
        self,
        host: str = "",
        *,
        max_channels: int = 8,
        asynchronous: bool = False,
        loop: Optional[asyncio.AbstractEventLoop] = None,
        batch_size: Optional[int] = None,
        **kwargs: Any,
    ):
        fs_options = {k: kwargs.pop(k) for k in list(kwargs) if k in _FSSPEC_OPTIONS}
        super().__init__(asynchronous=asynchronous, loop=loop, batch_size=batch_size, **fs_options)
        if "username" in kwargs:
            name = kwargs.pop("username")
            if kwargs.get("user") not in (None, name):
                raise TypeError(f"user={kwargs['user']!r} and username={name!r} disagree")
            kwargs["user"] = name
        unknown = set(kwargs) - set(_session.CONNECT_DEFAULTS)
        if unknown:
            raise TypeError(f"SSHFileSystem() got unexpected keyword arguments {sorted(unknown)}")
        if not host:
            raise ValueError("SSHFileSystem needs a host (or a pyssh://host/... URL)")
        if isinstance(max_channels, bool) or not isinstance(max_channels, int) or max_channels < 1:
            raise ValueError(f"max_channels must be an int of 1 or more, not {max_channels!r}")
        self.host = host
        self._link = _Link(host, kwargs, max_channels)
        weakref.finalize(self, self._link.close_soon)

    # ---- paths and URLs
    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        """A pyssh:// URL's path (absolute), or a path as given; no trailing "/"
        (but "/" itself stays)."""
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        path = os.fspath(path)
        m = _URL.match(path)
        if m:
            path = m.group(2) or "/"
        stripped = path.rstrip("/")
        return stripped or ("/" if path.startswith("/") else "")

    @staticmethod
    def _get_kwargs_from_urls(path: str) -> Dict[str, Any]:
        m = _URL.match(path)
        return _split_netloc(m.group(1)) if m else {}

    @classmethod
    def _parent(cls, path: str) -> str:
        path = cls._strip_protocol(path)
        head = posixpath.dirname(path)
        return head or ("/" if path.startswith("/") else "")

    def unstrip_protocol(self, name: str) -> str:
        user = self._link.kw.get("user")
        port = self._link.kw.get("port")
        where = (f"{user}@" if user else "") + self.host + (f":{port}" if port else "")
        if not name.startswith("/"):
            name = "/" + name  # a URL's path is absolute
        return f"pyssh://{where}{name}"

    @staticmethod
    def _remote(path: str) -> str:
        """The path to send: "" (the login directory) as "."."""
        return path or "."

    # ---- life cycle
    def close(self) -> None:
        """Close the session and its SFTP channels (the next operation connects
        again). Also done when the filesystem is garbage collected."""
        self._link.close_soon(wait=True)

    async def _do(self, make: Any) -> Any:
        """Run ``make(sftp)``'s flow on a pooled channel."""
        async with self._link.channel() as ch:
            return await ch._do(make(ch.sftp))

    # ---- information
    async def _info(self, path: str, **kwargs: Any) -> Dict[str, Any]:
        path = self._strip_protocol(path)
        rpath = self._remote(path)
        async with self._link.channel() as ch:
            st = await ch.lstat(rpath)
            if not st.is_symlink():
                return _info(path, st, False)
            try:
                info = _info(path, await ch.stat(rpath), True)
            except FileNotFoundError:
                info = _info(path, st, True)  # a link that leads nowhere
            info["destination"] = await ch.readlink(rpath)
            return info

    async def _exists(self, path: str, **kwargs: Any) -> bool:
        try:
            await self._info(path)
        except FileNotFoundError:
            return False
        return True

    async def _ls(self, path: str, detail: bool = True, **kwargs: Any) -> List[Any]:
        path = self._strip_protocol(path)
        try:
            entries = await self._do(lambda s: s._listdir_attr_steps(self._remote(path)))
        except NotADirectoryError:
            info = await self._info(path)
            return [info] if detail else [info["name"]]
        out = []
        links = []
        for e in entries:
            if e.filename in (".", ".."):
                continue
            name = posixpath.join(path, e.filename) if path else e.filename
            out.append(_info(name, e, False))
            if e.is_symlink():
                links.append(len(out) - 1)
        if links:
            resolved = await asyncio.gather(*(self._info(out[i]["name"]) for i in links))
            for i, info in zip(links, resolved):
                out[i] = info
        out.sort(key=lambda i: i["name"])
        return out if detail else [i["name"] for i in out]

    async def _modified(self, path: str) -> datetime.datetime:
        """The last modification time (UTC)."""
        mtime = (await self._info(path))["mtime"]
        if mtime is None:
            raise OSError(errno.EPROTO, "the server did not say the modification time", path)
        return datetime.datetime.fromtimestamp(mtime, tz=datetime.timezone.utc)

    modified = sync_wrapper(_modified)

    # ---- reading and writing whole files
    async def _cat_file(
        self, path: str, start: Optional[int] = None, end: Optional[int] = None, **kwargs: Any
    ) -> bytes:
        """The file's bytes from `start` to `end` (None: its start, its end;
        negative: from its end), by positioned reads, many requests in flight."""
        rpath = self._remote(self._strip_protocol(path))
        async with self._link.channel() as ch:
            async with await ch.open(rpath, "rb") as f:
                if (start or 0) >= 0 and (end is None or end >= 0):
                    a = start or 0
                    n = -1 if end is None else max(0, end - a)
                else:  # from the end: the size first
                    a, b = _limits(start, end, (await f.stat()).st_size or 0)
                    n = b - a
                data = await f.read(n, offset=a) if n else b""
        assert isinstance(data, bytes)
        return data

    async def _pipe_file(
        self, path: str, value: bytes, mode: str = "overwrite", **kwargs: Any
    ) -> None:
        """Write `value` as the file `path`, whole: to a temporary name beside it,
        renamed into place (``mode="create"``: FileExistsError if it exists)."""
        path = self._strip_protocol(path)
        if mode not in ("overwrite", "create"):
            raise ValueError(f"mode must be 'overwrite' or 'create', not {mode!r}")
        if mode == "create" and await self._exists(path):
            raise FileExistsError(errno.EEXIST, f"{printable(path)} already exists", path)
        await self._whole(path, bytes(value), replace=mode == "overwrite")

    async def _whole(self, path: str, data: bytes, replace: bool) -> None:
        tmp = _part_name(path)
        await self._write(tmp, data, 0, "xb")
        await self._commit(tmp, path, replace)

    async def _write(self, path: str, data: bytes, offset: int, mode: str) -> None:
        """`data` at `offset` of `path` opened with `mode` ("xb", "r+b"; "ab": at its
        end), confirmed by the close; a file created where its directory is missing:
        the directory made first, as pipe_file and put do."""
        rpath = self._remote(path)
        for again in (True, False):
            try:
                async with self._link.channel() as ch:
                    async with await ch.open(rpath, mode) as f:
                        if data:
                            await f.write(data, None if mode == "ab" else offset)
                return
            except FileNotFoundError:
                if not again or mode == "r+b":
                    raise
                await self._makedirs(self._parent(path), exist_ok=True)

    async def _commit(self, tmp: str, path: str, replace: bool) -> None:
        """The temporary file `tmp` renamed to `path` (removed if that fails)."""
        try:
            await self._do(lambda s: _rename_steps(s, tmp, path, replace))
        except BaseException as e:
            with contextlib.suppress(Exception):
                await self._do(lambda s: s._remove_steps(tmp))
            if not replace and isinstance(e, SFTPError) and await self._exists(path):
                raise SFTPFileExistsError(
                    errno.EEXIST, f"{printable(path)} already exists", path
                ) from None
            raise

    # ---- transfers
    async def _get_file(self, rpath: str, lpath: Any, callback: Any = None, **kwargs: Any) -> None:
        """Download `rpath` to the local `lpath` (a temporary file beside it, renamed
        into place once complete); a remote directory makes the local directory."""
        rpath = self._remote(self._strip_protocol(rpath))
        if not isinstance(lpath, (str, os.PathLike)):  # a file object
            lpath.write(await self._cat_file(rpath))
            return
        progress = _progress(callback)
        try:
            async with self._link.channel() as ch:
                await ch.get(rpath, lpath, progress=progress)
        except IsADirectoryError:
            os.makedirs(lpath, exist_ok=True)

    async def _put_file(
        self, lpath: Any, rpath: str, callback: Any = None, mode: str = "overwrite", **kwargs: Any
    ) -> None:
        """Upload the local `lpath` to `rpath` (its parent made if missing); a local
        directory makes the remote directory."""
        rpath = self._strip_protocol(rpath)
        if os.path.isdir(lpath):
            await self._makedirs(rpath, exist_ok=True)
            return
        if mode == "create" and await self._exists(rpath):
            raise FileExistsError(errno.EEXIST, f"{printable(rpath)} already exists", rpath)
        progress = _progress(callback)
        for again in (True, False):
            try:
                async with self._link.channel() as ch:
                    await ch.put(lpath, self._remote(rpath), progress=progress)
                return
            except FileNotFoundError:
                parent = self._parent(rpath)
                if not again or not os.path.exists(lpath):
                    raise
                await self._makedirs(parent, exist_ok=True)

    async def _get(
        self,
        rpath: Any,
        lpath: Any,
        recursive: bool = False,
        callback: Any = DEFAULT_CALLBACK,
        maxdepth: Optional[int] = None,
        **kwargs: Any,
    ) -> Any:
        """fsspec's get; a whole remote tree (one directory, recursive, no pattern,
        no callback) by pyssh's download, which pipelines its small files (fsspec's
        way: one file after the other on each channel)."""
        if await self._one_tree(rpath, lpath, recursive, maxdepth, callback, kwargs, remote=True):
            src = self._strip_protocol(rpath)
            # as fsspec: into an existing directory (or "dir/") unless the source
            # ends in "/"; else the directory's contents become the target
            contents = rpath.endswith("/") or not (lpath.endswith("/") or os.path.isdir(lpath))
            os.makedirs(lpath, exist_ok=True)
            async with self._link.channel() as ch:
                await ch.download([src.rstrip("/") + "/." if contents else src], lpath)
            return None
        return await super()._get(
            rpath, lpath, recursive=recursive, callback=callback, maxdepth=maxdepth, **kwargs
        )

    async def _put(
        self,
        lpath: Any,
        rpath: Any,
        recursive: bool = False,
        callback: Any = DEFAULT_CALLBACK,
        maxdepth: Optional[int] = None,
        **kwargs: Any,
    ) -> Any:
        """fsspec's put; a whole local tree (as for get) by pyssh's upload."""
        if await self._one_tree(lpath, rpath, recursive, maxdepth, callback, kwargs, remote=False):
            dst = self._strip_protocol(rpath)
            contents = lpath.endswith(("/", os.sep)) or not (
                rpath.endswith("/") or await self._isdir(dst)
            )
            await self._makedirs(dst, exist_ok=True)
            if contents:
                files = [os.path.join(lpath, n) for n in sorted(os.listdir(lpath))]
            else:
                files = [lpath]
            if files:
                async with self._link.channel() as ch:
                    await ch.upload(files, self._remote(dst))
            return None
        return await super()._put(
            lpath, rpath, recursive=recursive, callback=callback, maxdepth=maxdepth, **kwargs
        )

    async def _one_tree(
        self,
        src: Any,
        dst: Any,
        recursive: bool,
        maxdepth: Optional[int],
        callback: Any,
        kwargs: Dict[str, Any],
        remote: bool,
    ) -> bool:
        """Is this get/put one directory tree, copied whole (pyssh's download or
        upload), with nothing asked that only fsspec's file-by-file way does?"""
        plain = (
            recursive
            and maxdepth is None
            and callback in (None, DEFAULT_CALLBACK)
            and not set(kwargs) - {"batch_size"}
            and isinstance(src, str)
            and isinstance(dst, str)
            and not has_magic(src)
        )
        if not plain:
            return False
        if remote:
            return bool(await self._isdir(src))
        return os.path.isdir(src) and not os.path.islink(src)

    # ---- directories and names
    async def _mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        path = self._strip_protocol(path)
        if create_parents:
            if await self._exists(path):
                raise FileExistsError(errno.EEXIST, f"{printable(path)} already exists", path)
            await self._makedirs(path, exist_ok=True)
            return
        async with self._link.channel() as ch:
            await ch.mkdir(self._remote(path))

    async def _makedirs(self, path: str, exist_ok: bool = False) -> None:
        path = self._strip_protocol(path)
        if path in ("", "/"):
            return
        async with self._link.channel() as ch:
            try:
                await ch.mkdir(path)
                return
            except FileExistsError:
                if not exist_ok or not await ch.is_dir(path):
                    raise
                return
            except FileNotFoundError:
                pass
        await self._makedirs(self._parent(path), exist_ok=True)
        with contextlib.suppress(FileExistsError):  # another made it meanwhile
            await self._do(lambda s: s._mkdir_steps(path, 0o777))

    async def _rmdir(self, path: str) -> None:
        path = self._strip_protocol(path)
        await self._do(lambda s: s._rmdir_steps(self._remote(path)))

    async def _rm_file(self, path: str, **kwargs: Any) -> None:
        path = self._strip_protocol(path)
        await self._do(lambda s: s._remove_steps(self._remote(path)))

    async def _rm(
        self,
        path: Union[str, List[str]],
        recursive: bool = False,
        maxdepth: Optional[int] = None,
        **kwargs: Any,
    ) -> None:
        """Remove files (and with `recursive`, directories with all in them). A
        symbolic link is removed, never followed."""
        if maxdepth is not None:
            raise NotImplementedError("rm: maxdepth is not supported (rm removes whole trees)")
        paths = sorted(await self._expand_path(path, recursive=False))
        gone: List[str] = []
        for p in paths:
            if any(p.startswith(g.rstrip("/") + "/") for g in gone):
                continue  # in a tree removed already
            async with self._link.channel() as ch:
                st = await ch.lstat(self._remote(p))
            if st.is_dir():
                if not recursive:
                    raise SFTPIsADirectoryError(
                        errno.EISDIR, f"rm: {printable(p)} is a directory (recursive=True)", p
                    )
                async with self._link.channel() as ch:
                    await ch.rmtree(self._remote(p))  # links removed, not followed
                gone.append(p)
            else:
                await self._rm_file(p)
        self.invalidate_cache()

    async def _cp_file(self, path1: str, path2: str, **kwargs: Any) -> None:
        """Copy on the server (copy-data, OpenSSH 9.0 and later; else the data
        comes to the client and goes back); a directory: made at `path2`. The
        directory `path2` goes in is made if missing."""
        p1, p2 = self._strip_protocol(path1), self._strip_protocol(path2)
        for again in (True, False):
            try:
                async with self._link.channel() as ch:
                    await ch.copy(self._remote(p1), self._remote(p2))
                return
            except IsADirectoryError:
                await self._makedirs(p2, exist_ok=True)
                return
            except FileNotFoundError:
                if not again or not await self._exists(p1):
                    raise
                await self._makedirs(self._parent(p2), exist_ok=True)
            except SFTPError as e:
                if e.errno != errno.EOPNOTSUPP:
                    raise
                await self._whole(p2, await self._cat_file(p1), replace=True)
                return

    async def _mv(
        self, path1: Union[str, List[str]], path2: str, recursive: bool = False, **kwargs: Any
    ) -> None:
        """Rename on the server, replacing a file at `path2`; into `path2` when it
        is a directory. A list of sources goes into the directory `path2`."""
        sources = path1 if isinstance(path1, list) else [path1]
        dst = self._strip_protocol(path2)
        into = len(sources) > 1 or isinstance(path1, list) or await self._isdir(dst)
        for src in sources:
            s = self._strip_protocol(src)
            d = posixpath.join(dst, posixpath.basename(s)) if into else dst
            await self._do(lambda f, s=s, d=d: f._rename_steps(self._remote(s), self._remote(d)))
        self.invalidate_cache()

    mv = sync_wrapper(_mv)

    # ---- file objects
    def _open(
        self,
        path: str,
        mode: str = "rb",
        block_size: Any = None,
        autocommit: bool = True,
        cache_options: Optional[Dict[str, Any]] = None,
        **kwargs: Any,
    ) -> SSHFile:
        path = self._strip_protocol(path)
        if not autocommit:
            raise NotImplementedError("pyssh: transactions (autocommit=False) are not supported")
        if mode == "xb" and self.exists(path):
            raise FileExistsError(errno.EEXIST, f"{printable(path)} already exists", path)
        return SSHFile(
            self, path, mode, block_size=block_size, cache_options=cache_options, **kwargs
        )

    async def open_async(self, path: str, mode: str = "rb", **kwargs: Any) -> AsyncSSHFile:
        """The file for coroutines (``async with await fs.open_async(path) as f``):
        ``await f.read(n)`` reads the range asked for; "wb" writes as ``open()``
        does (a temporary file renamed into place on ``await f.close()``), "ab"
        appends. Binary modes only."""
        if mode not in ("rb", "wb", "ab") or kwargs.get("compression"):
            raise ValueError(f"open_async: mode must be 'rb', 'wb' or 'ab', not {mode!r}")
        path = self._strip_protocol(path)
        size = (await self._info(path))["size"] if mode == "rb" else None
        return AsyncSSHFile(self, path, mode, size=size, cache_type="none", **kwargs)


def _progress(callback: Any) -> Any:
    """An fsspec Callback as a transfer's progress(moved, total)."""
    if callback is None:
        return None

    def progress(moved: int, total: int) -> None:
        callback.set_size(total)
        callback.absolute_update(moved)

    return progress


async def _send_block(f: Any, final: bool) -> None:
    """A written file's buffer sent at its offset: to the temporary file ("wb",
    "xb"; renamed into place after the `final` block), or appended ("ab")."""
    data = f.buffer.getvalue()
    if f._part is None:
        await f.fs._write(f.path, data, f.offset, "ab")
    else:
        await f.fs._write(f._part, data, f.offset, "xb" if f.offset == 0 else "r+b")
    if final and f._part is not None:
        await f.fs._commit(f._part, f.path, replace=f.mode != "xb")
        f._part = None


class SSHFile(AbstractBufferedFile):  # type: ignore[misc]
    """A remote file opened by ``SSHFileSystem.open``: reads fetch the ranges asked
    for (random access, fsspec's read-ahead cache on top); writes ("wb", "xb")
    go to a temporary file beside the target, block by block, renamed into place
    on close; a ``with`` block left by an exception removes it instead, leaving
    the target as it was. "ab" appends to the file itself."""

    DEFAULT_BLOCK_SIZE = 8 << 20
    fs: SSHFileSystem

    def __init__(self, fs: SSHFileSystem, path: str, mode: str = "rb", **kwargs: Any):
        super().__init__(fs, path, mode, **kwargs)
        self._part = _part_name(path) if mode in ("wb", "xb") else None

    def _run(self, coro: Any) -> Any:
        return sync(self.fs.loop, lambda: coro)

    def _fetch_range(self, start: int, end: int) -> bytes:
        data: bytes = self._run(self.fs._cat_file(self.path, start, end))
        return data

    def _initiate_upload(self) -> None:
        pass

    def _upload_chunk(self, final: bool = False) -> bool:
        self._run(_send_block(self, final))
        return True

    def discard(self) -> None:
        """Throw away what was written (the temporary file)."""
        part, self._part = self._part, None
        if part is not None and self.offset is not None:
            with contextlib.suppress(Exception):
                self._run(self.fs._rm_file(part))

    def __exit__(self, exc_type: Any, *rest: Any) -> None:
        if exc_type is not None and self.writable() and self._part is not None:
            self.discard()
            self.closed = True
            return
        self.close()


class AsyncSSHFile(AbstractAsyncStreamedFile):  # type: ignore[misc]
    """A remote file from ``SSHFileSystem.open_async``: ``await f.read(n)`` is a
    ranged read at the position; writes as :class:`SSHFile`'s; ``async with``
    closes it, or throws away what was written when its block raised."""

    DEFAULT_BLOCK_SIZE = 8 << 20
    fs: SSHFileSystem

    def __init__(self, fs: SSHFileSystem, path: str, mode: str = "rb", **kwargs: Any):
        super().__init__(fs, path, mode, **kwargs)
        self._part = _part_name(path) if mode == "wb" else None

    async def _fetch_range(self, start: int, end: int) -> bytes:
        return await self.fs._cat_file(self.path, start, end)

    async def _upload_chunk(self, final: bool = False) -> bool:
        await _send_block(self, final)
        return True

    async def discard(self) -> None:
        """Throw away what was written (the temporary file)."""
        part, self._part = self._part, None
        if part is not None and self.offset is not None:
            with contextlib.suppress(Exception):
                await self.fs._rm_file(part)

    async def __aexit__(self, exc_type: Any, *rest: Any) -> None:
        if exc_type is not None and self._part is not None:
            await self.discard()
            self.closed = True
            return
        await self.close()
