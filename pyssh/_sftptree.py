"""SFTP.upload() and SFTP.download() of trees: small files many at a time.

One file at a time costs several round trips (open, data, close, and for a tree
the stat or mkdir around it), so over a network of 20 ms a tree of small files
moves at a dozen files a second. Here a tree is walked as before, in the same
order, but its small files (up to one READ or WRITE: ``max_read``/``max_write``),
its directories' MKDIRs and SETSTATs wait in a queue that is sent in two batches
of up to 64 requests: first what needs no handle (MKDIR, OPEN, SETSTAT of a
directory), then what needs the handles the OPENs gave (READ or WRITE, FSETSTAT,
CLOSE). An SFTP server answers one channel's requests in order (OpenSSH's does),
so a MKDIR is done before the OPEN of a file in it sent after it.

Whatever is not the plain case goes the way it always went, one file at a time
(``SFTP.put``/``SFTP._get``), so that its result or its error is exactly as
before: a big file, a resumed one, a file that is not regular; and a file whose
OPEN failed, whose data was not all there (it shrank or grew since the listing,
or the server reads short), or whose local copy changed since the walk. The
queue is always done in order: everything before a failed file is complete,
nothing after it is started (handles already opened for the files after it are
closed), and the failed file's own error is the one its one-by-one transfer
raises. Downloads write each file to a temporary file beside its destination,
renamed into place once complete, as before.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat as _stat
import struct
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple, TypeVar

from . import _local
from ._names import local_name, printable
from ._progress import Reporter
from ._sftp import (
    ATTRS,
    CLOSE,
    DATA,
    DEPTH_MAX,
    F_CREAT,
    F_READ,
    F_WRITE,
    FSETSTAT,
    FX_EOF,
    FX_NO_SUCH_FILE,
    FX_OK,
    HANDLE,
    LSTAT,
    MKDIR,
    OPEN,
    READ,
    REMOVE,
    SETSTAT,
    STAT,
    STATUS,
    WRITE,
    SFTPAttributes,
    _attrs,
    _error,
    _op,
    _path,
    _str,
    log,
)
from ._tcp import Steps, run_steps
from .errors import SFTPError

if TYPE_CHECKING:
    from ._sftp import SFTP

BATCH_MAX = 64  # requests in one batch() (csrc/sftp.c's BATCH_MAX)
DATA_MAX = 16 << 20  # file data one batch holds in memory, read or to write
T = TypeVar("T")
Reply = Tuple[int, Any]


def _times(st: SFTPAttributes, preserve: bool) -> Optional[Tuple[int, int]]:
    if preserve and st.st_mtime is not None:
        return (st.st_atime or st.st_mtime, st.st_mtime)
    return None


def _ok(reply: Reply) -> bool:
    return reply[0] == STATUS and reply[1][0] == FX_OK


class _Step:
    """One thing a tree transfer does, in the walk's order: its requests of the
    first batch (no handle needed) and of the second (the handle of its OPEN)."""

    dest = ""  # the path an error names
    most = (0, 0)  # at most this many requests in the first batch, and the second

    def first(self) -> List[Tuple[int, bytes]]:
        return []

    def second(self) -> List[Tuple[int, bytes]]:
        return []

    def data_size(self) -> int:
        return 0


class _Queue:
    """The steps waiting to be sent, in order, and what they add up to."""

    def __init__(self, sftp: SFTP, rep: Reporter, preserve: bool, resume: bool):
        self.sftp = sftp
        self.rep = rep
        self.preserve = preserve
        self.resume = resume
        self.listed: Dict[str, Any] = {}  # directories listed ahead (downloads)
        self.steps: List[_Step] = []
        self.n1 = self.n2 = self.size = 0

    def add(self, step: _Step) -> Steps[None]:
        """Queue `step`, sending what is queued first if it would not fit."""
        # each step that OPENs has a CLOSE in its second batch: the second batch
        # that closes the handles after a failed step is no longer than planned
        (n1, n2), size = step.most, step.data_size()
        if self.n1 + n1 > BATCH_MAX or self.n2 + n2 > BATCH_MAX or self.size + size > DATA_MAX:
            yield from self.flush()
        self.steps.append(step)
        self.n1, self.n2, self.size = self.n1 + n1, self.n2 + n2, self.size + size

    def flush(self) -> Steps[None]:
        """Do every queued step, in order. A failure drops the steps after it."""
        while self.steps:
            steps, self.steps = self.steps, []
            self.n1 = self.n2 = self.size = 0
            rest = yield from self.run(steps)
            for s in rest:
                yield from self.add(s)

    def run(self, steps: List[_Step]) -> Steps[List[_Step]]:
        """Do `steps` until one needs doing alone; do that one alone, and return
        the steps after it (still to do)."""
        raise NotImplementedError

    def batch(self, reqs: Sequence[Tuple[int, bytes]], what: str) -> Steps[List[Reply]]:
        if not reqs:
            return []
        c = self.sftp._c
        replies: List[Reply] = yield _op(c.batch, list(reqs), timeout=self.sftp._timeout, what=what)
        return replies

    def walking(self, walk: Steps[T]) -> Steps[T]:
        """Run the flow `walk`, which queues steps, then finish them. If the walk
        fails (a listing refused, a local file gone), the steps queued before the
        failure are done first, as they were when each was done on the spot."""
        try:
            out = yield from walk
        except Exception:
            yield from self.flush()
            raise
        yield from self.flush()
        return out


def _closes(steps: Sequence[Any]) -> List[Tuple[int, bytes]]:
    """CLOSE the handles of steps that will not go on now (after a failed one).
    Each step forgets its handle: the server may give the same to a file opened
    later, which a second CLOSE would close."""
    out = []
    for s in steps:
        if getattr(s, "handle", None) is not None:
            out.append((CLOSE, _str(s.handle)))
            s.handle = None
    return out


def _split(steps: List[_Step], failed: Optional[int]) -> Tuple[List[_Step], List[_Step]]:
    """(the steps before the failed one, those after it)."""
    if failed is None:
        return steps, []
    return steps[:failed], steps[failed + 1 :]


# ---- downloads ---------------------------------------------------------------------


class _Get(_Step):
    """A small remote file: OPEN; then READ of all of it, READ past its end (the
    server must answer EOF: nothing more), CLOSE."""

    def __init__(self, rpath: str, dest: str, st: SFTPAttributes):
        self.rpath, self.dest, self.st = rpath, dest, st
        self.size = st.st_size or 0
        self.most = (1, 3 if self.size else 2)
        self.handle: Optional[bytes] = None
        self.data: Optional[bytes] = None  # all of the file, its end seen

    def first(self) -> List[Tuple[int, bytes]]:
        return [(OPEN, _str(_path(self.rpath)) + struct.pack(">I", F_READ) + _attrs())]

    def second(self) -> List[Tuple[int, bytes]]:
        h = _str(self.handle or b"")
        reads = [(READ, h + struct.pack(">QI", 0, self.size))] if self.size else []
        return reads + [(READ, h + struct.pack(">QI", self.size, 1)), (CLOSE, h)]

    def data_size(self) -> int:
        return self.size

    def got(self, replies: List[Reply]) -> None:
        """The replies to second(): the data, if it is the whole file. The CLOSE's
        answer changes nothing (a download sends it without waiting)."""
        data = b""
        if self.size:
            rtype, value = replies.pop(0)
            if rtype != DATA or len(value) != self.size:
                return  # shorter or longer: the file changed, or short reads
            data = value
        (rtype, value), _close = replies
        if (rtype == STATUS and value[0] == FX_EOF) or (rtype == DATA and not value):
            self.data = data


class _Local(_Step):
    """A local step of a download (make a directory, give it its mode), done in
    order with the files."""

    def __init__(self, do: Callable[[], None]):
        self.do = do


class _Dir:
    """A downloaded directory: made before its entries, given its mode after."""

    def __init__(self, dest: str, st: SFTPAttributes, preserve: bool):
        self.dest, self.st, self.preserve = dest, st, preserve
        self.made = False

    def enter(self) -> None:
        self.made = _local.enter_dir(self.dest)

    def leave(self) -> None:
        mode = _local.mode_for(self.st.st_mode, self.preserve, 0o755)
        _local.leave_dir(self.dest, self.made, mode, self.preserve, _times(self.st, self.preserve))


LISTED_MAX = 50_000  # directory entries listed ahead of the walk, at most (memory)


def _subdirs(path: str, entries: List[SFTPAttributes]) -> List[str]:
    """The subdirectories (not links) among a listing's entries."""
    return [
        posixpath.join(path, a.filename)
        for a in entries
        if a.filename and a.is_dir() and not a.is_symlink()
    ]


class Downloads(_Queue):
    """SFTP.download(): a tree walked in the order of old, small files queued."""

    def run_all(self, paths: List[str], to: str) -> Steps[List[str]]:
        stats = yield from self.stats(paths)
        return (yield from self.walking(self.tops(paths, to, stats)))

    def tops(
        self, paths: List[str], to: str, stats: List[Optional[SFTPAttributes]]
    ) -> Steps[List[str]]:
        out = []
        for p, st in zip(paths, stats):
            out.append((yield from self.top(p, to, st)))
        return out

    def stats(self, paths: List[str]) -> Steps[List[Optional[SFTPAttributes]]]:
        """The attributes of the files named, when there are several: STATs in
        batches. None where a STAT failed: it is made again where its file comes,
        after the files before it, for its own error."""
        out: List[Optional[SFTPAttributes]] = [None] * len(paths)
        asks: List[Tuple[int, bytes]] = []
        for i, p in enumerate(paths if len(paths) > 1 else []):
            if posixpath.basename(p.rstrip("/")) in ("", ".", ".."):
                continue  # listed, not copied
            try:
                asks.append((i, _str(_path(p))))
            except (TypeError, ValueError):
                break  # raised where it comes, as before
        for j in range(0, len(asks), BATCH_MAX):
            chunk = asks[j : j + BATCH_MAX]
            replies = yield from self.batch([(STAT, b) for _, b in chunk], "download")
            for (i, _), (rtype, value) in zip(chunk, replies):
                if rtype == ATTRS:
                    out[i] = SFTPAttributes._from(value)
        return out

    def top(self, p: str, to: str, st: Optional[SFTPAttributes]) -> Steps[str]:
        base = posixpath.basename(p.rstrip("/"))
        if base in ("", ".", ".."):
            yield from self.entries(p, to, 1)
            return to
        dest = os.path.join(to, local_name(base))
        yield from self.one(p, dest, st, 0)
        return dest

    def one(self, remote: str, dest: str, st: Optional[SFTPAttributes], depth: int) -> Steps[None]:
        if st is None or st.st_mode is None:
            st = yield from self.sftp._stat_steps(remote)
        if not st.is_dir():
            if self.resume or not st.is_file() or (st.st_size or 0) > self.sftp.max_read:
                yield from self.flush()
                yield from self.alone(remote, dest, st)
            else:
                yield from self.add(_Get(remote, dest, st))
            return
        if depth >= DEPTH_MAX:
            raise SFTPError(
                errno.ELOOP,
                f"download: {printable(remote)} is more than {DEPTH_MAX} directories deep",
                remote,
            )
        d = _Dir(dest, st, self.preserve)
        yield from self.add(_Local(d.enter))
        yield from self.entries(remote, dest, depth + 1)
        yield from self.add(_Local(d.leave))

    def listing(self, remote: str) -> Steps[List[SFTPAttributes]]:
        """listdir_attr(remote), from the listings fetched ahead when there; the
        directories below are fetched ahead a level at a time, each level's
        listings at once, in batches: a tree costs a few round trips per level,
        not three per directory."""
        got = self.listed.pop(remote, None)
        if got is None:
            got = yield from self.sftp._listdir_attr_steps(remote)
        yield from self.ahead(_subdirs(remote, got))
        return list(got)

    def ahead(self, level: List[str]) -> Steps[None]:
        """List the directories of `level`, then those below them, a level at a
        time, while fewer than LISTED_MAX entries are held ahead."""
        level = [d for d in level if d not in self.listed]
        while len(level) > 1 and sum(len(v or ()) for v in self.listed.values()) < LISTED_MAX:
            got = yield from self.sftp._list_many_steps(level)
            self.listed.update(got)
            level = [d for p, v in got.items() if v for d in _subdirs(p, v)]

    def entries(self, remote: str, dest: str, depth: int) -> Steps[None]:
        """The entries of remote directory `remote` into local directory `dest`."""
        seen = set()
        for a in (yield from self.listing(remote)):
            name = a.filename or ""
            where = f"download: the server listed in {printable(remote)}"
            if name in seen:
                raise SFTPError(errno.EPROTO, f"{where} the name '{printable(name)}' twice", remote)
            seen.add(name)
            try:
                local = local_name(name)
            except ValueError as e:
                raise SFTPError(errno.EPROTO, f"{where} an unsafe name: {e}", remote) from None
            path = posixpath.join(remote, name)
            st: Optional[SFTPAttributes] = a
            if a.is_symlink():
                st = yield from self.sftp._stat_steps(path)  # a link's own are the link's
                if st.is_dir():
                    log.warning(
                        "download: not following %s, a symbolic link to a directory",
                        printable(path),
                    )
                    continue
            yield from self.one(path, os.path.join(dest, local), st, depth)

    def alone(self, remote: str, dest: str, st: SFTPAttributes) -> Steps[None]:
        """One file the way it always went: SFTP._get."""
        total = st.st_size or 0
        report = self.rep.callback(dest, total)
        yield from self.sftp._get_steps(
            remote,
            dest,
            st,
            (lambda moved, t: report(moved)) if report else None,
            self.preserve,
            self.resume,
        )
        self.rep.finished(dest, total)

    def run(self, steps: List[_Step]) -> Steps[List[_Step]]:
        gets = [s for s in steps if isinstance(s, _Get)]
        reqs = [r for g in gets for r in g.first()]
        for g, (rtype, value) in zip(gets, (yield from self.batch(reqs, "download"))):
            g.handle = value if rtype == HANDLE else None
        failed = next(
            (i for i, s in enumerate(steps) if isinstance(s, _Get) and not s.handle), None
        )
        done, after = _split(steps, failed)
        ready = [s for s in done if isinstance(s, _Get)]
        replies = yield from self.batch(
            [r for g in ready for r in g.second()] + _closes(after), "download"
        )
        for g in ready:
            n = len(g.second())
            g.got(replies[:n])
            del replies[:n]
        for s in done:
            yield from self.finish(s)
        if failed is not None:
            bad = steps[failed]
            assert isinstance(bad, _Get)
            yield from self.alone(bad.rpath, bad.dest, bad.st)  # its OPEN failed: its own error
        return after

    def finish(self, s: _Step) -> Steps[None]:
        if isinstance(s, _Local):
            s.do()
        elif isinstance(s, _Get):
            if s.data is None:
                yield from self.alone(s.rpath, s.dest, s.st)  # not all there: as ever
            else:
                self.land(s, s.data)

    def land(self, g: _Get, data: bytes) -> None:
        """Write a file's data to a temporary file, renamed into place."""
        fd, tmp = _local.open_part(g.dest)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            except OSError as e:
                raise OSError(
                    e.errno,
                    f"download: writing {printable(g.dest)}: {os.strerror(e.errno or errno.EIO)}",
                    g.dest,
                ) from None
            finally:
                os.close(fd)
        except BaseException:
            _local.discard(tmp)
            raise
        mode = _local.mode_for(g.st.st_mode, self.preserve)
        _local.finish_part(tmp, g.dest, mode, _times(g.st, self.preserve))
        self.rep.finished(g.dest, g.size)


# ---- uploads -----------------------------------------------------------------------


class _Mkdir(_Step):
    """A directory of an upload: MKDIR, and if that fails, is it there already?"""

    most = (1, 0)

    def __init__(self, dest: str):
        self.dest = dest
        self.payload = _str(_path(dest)) + _attrs(mode=0o700)

    def first(self) -> List[Tuple[int, bytes]]:
        return [(MKDIR, self.payload)]


class _Setstat(_Step):
    """A directory of an upload, complete: its mode (and times)."""

    most = (0, 1)

    def __init__(self, dest: str, st: os.stat_result, preserve: bool):
        self.dest = dest
        times = (int(st.st_atime), int(st.st_mtime)) if preserve else None
        self.payload = _str(_path(dest)) + _attrs(mode=_stat.S_IMODE(st.st_mode), times=times)

    def second(self) -> List[Tuple[int, bytes]]:
        return [(SETSTAT, self.payload)]


class _Put(_Step):
    """A small local file: OPEN (without truncating: a file after a failed one is
    closed untouched); then WRITE, FSETSTAT of its size (cutting what was longer),
    mode and times, CLOSE."""

    most = (1, 3)

    def __init__(self, local: str, dest: str, st: os.stat_result, preserve: bool):
        self.local, self.dest, self.st, self.preserve = local, dest, st, preserve
        self.handle: Optional[bytes] = None
        self.data: Optional[bytes] = None
        self.lst: Optional[os.stat_result] = None  # the open file's, as put() takes

    def data_size(self) -> int:
        return self.st.st_size

    def read(self, most: int) -> bool:
        """Read the local file; False if it cannot be, or is no longer small."""
        try:
            fd = os.open(self.local, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        except OSError:
            return False
        try:
            lst = os.fstat(fd)
            if not _stat.S_ISREG(lst.st_mode) or lst.st_size > most:
                return False
            data = os.pread(fd, lst.st_size, 0) if lst.st_size else b""
        except OSError:
            return False
        finally:
            os.close(fd)
        if len(data) != lst.st_size:
            return False
        self.data, self.lst = data, lst
        return True

    def first(self) -> List[Tuple[int, bytes]]:
        mode = _stat.S_IMODE((self.lst or self.st).st_mode)
        flags = struct.pack(">I", F_WRITE | F_CREAT)
        return [(OPEN, _str(_path(self.dest)) + flags + _attrs(mode=mode))]

    def second(self) -> List[Tuple[int, bytes]]:
        h, lst, data = _str(self.handle or b""), self.lst or self.st, self.data or b""
        times = (int(lst.st_atime), int(lst.st_mtime)) if self.preserve else None
        attrs = _attrs(size=len(data), mode=_stat.S_IMODE(lst.st_mode), times=times)
        write = [(WRITE, h + struct.pack(">Q", 0) + _str(data))] if data else []
        return write + [(FSETSTAT, h + attrs), (CLOSE, h)]


class Uploads(_Queue):
    """SFTP.upload(): a tree walked in the order of old, small files queued."""

    def run_all(self, paths: List[str], to: str) -> Steps[List[str]]:
        return (yield from self.walking(self.tops(paths, to)))

    def tops(self, paths: List[str], to: str) -> Steps[List[str]]:
        out = []
        for p in paths:
            out.append((yield from self.top(p, to)))
        return out

    def top(self, p: str, to: str) -> Steps[str]:
        if not os.path.exists(p):
            raise FileNotFoundError(errno.ENOENT, "upload: no such local file", p)
        dest = posixpath.join(to, os.path.basename(os.path.normpath(p)))
        yield from self.one(p, dest)
        return dest

    def one(self, local: str, dest: str) -> Steps[None]:
        st = os.stat(local)
        if _stat.S_ISDIR(st.st_mode):
            yield from self.add(_Mkdir(dest))
            for name in sorted(os.listdir(local)):
                yield from self.one(os.path.join(local, name), posixpath.join(dest, name))
            yield from self.add(_Setstat(dest, st, self.preserve))
        elif self.resume or not _stat.S_ISREG(st.st_mode) or st.st_size > self.sftp.max_write:
            yield from self.flush()
            yield from self.alone(local, dest, st)
        else:
            yield from self.add(_Put(local, dest, st, self.preserve))

    def alone(self, local: str, dest: str, st: os.stat_result) -> Steps[None]:
        """One file the way it always went: SFTP.put."""
        report = self.rep.callback(local, st.st_size)
        yield from self.sftp._put_steps(
            local,
            dest,
            (lambda moved, total: report(moved)) if report else None,
            self.preserve,
            self.resume,
        )
        self.rep.finished(local, st.st_size)

    def run(self, steps: List[_Step]) -> Steps[List[_Step]]:
        # a local file that cannot be read (or is no longer small) ends the first
        # batch before it: it goes alone, after those before it are complete
        unread = next(
            (
                i
                for i, s in enumerate(steps)
                if isinstance(s, _Put) and not s.read(self.sftp.max_write)
            ),
            None,
        )
        sent = steps if unread is None else steps[:unread]
        replies = yield from self.batch([r for s in sent for r in s.first()], "upload")
        failed = yield from self.opened(sent, replies)
        if failed is None:
            failed = unread
        done, after = _split(steps, failed)
        yield from self.second(done, after)
        if failed is not None:
            yield from self.redo(steps[failed])
        return after

    def opened(self, sent: List[_Step], replies: List[Reply]) -> Steps[Optional[int]]:
        """Take the handles the OPENs gave; the first step whose request failed. A
        MKDIR that failed where a directory is already there has not (as an
        upload into a tree that is there: one batch of STATs for them)."""
        bad: List[int] = []
        for i, s in enumerate(sent):
            if not s.first():
                continue
            rtype, value = replies.pop(0)
            if isinstance(s, _Put):
                s.handle = value if rtype == HANDLE else None
            if not (rtype == HANDLE or _ok((rtype, value))):
                bad.append(i)
        other = next((i for i in bad if not isinstance(sent[i], _Mkdir)), len(sent))
        mkdirs = [i for i in bad if i < other]
        stats = yield from self.batch([(STAT, _str(_path(sent[i].dest))) for i in mkdirs], "upload")
        for i, (rtype, value) in zip(mkdirs, stats):
            if rtype != ATTRS or not SFTPAttributes._from(value).is_dir():
                return i
        return other if other < len(sent) else None

    def second(self, done: List[_Step], after: List[_Step]) -> Steps[None]:
        """The second batch: the steps before a failure complete, the handles
        after it closed; then each step's answers checked, in order."""
        ready = [s for s in done if s.second()]
        replies = yield from self.batch(
            [r for s in ready for r in s.second()] + _closes(after), "upload"
        )
        for s in ready:
            mine = replies[: len(s.second())]
            del replies[: len(mine)]
            for rtype, value in mine:
                if rtype == STATUS and value[0] != FX_OK:
                    raise _error(value[0], value[1], "upload", s.dest)
            if isinstance(s, _Put):
                self.rep.finished(s.local, s.st.st_size)

    def redo(self, s: _Step) -> Steps[None]:
        """A step that failed in the first batch, done alone: its own error."""
        if isinstance(s, _Mkdir):
            if not (yield from self.sftp._is_dir_steps(s.dest)):
                yield from self.sftp._mkdir_steps(s.dest, 0o700)
        elif isinstance(s, _Put):
            yield from self.alone(s.local, s.dest, s.st)


# ---- rmtree --------------------------------------------------------------------------------


def rmtree(sftp: SFTP, top: str) -> None:
    run_steps(rmtree_steps(sftp, top))


def rmtree_steps(sftp: SFTP, top: str) -> Steps[None]:
    """SFTP.rmtree(): list a level of directories at once, remove their files and
    links in batches, then the directories deepest first. Never follows a link."""
    st = yield from sftp._attrs_of_steps(LSTAT, top, "lstat")
    if st.is_symlink():
        raise SFTPError(
            errno.ENOTDIR,
            f"rmtree: {printable(top)} is a symbolic link (remove() removes the link)",
            top,
        )
    if not st.is_dir():
        raise SFTPError(errno.ENOTDIR, f"rmtree: {printable(top)} is not a directory", top)
    dirs, level = [top], [top]
    for _ in range(DEPTH_MAX + 1):
        if not level:
            break
        listed = yield from sftp._list_many_steps(level)
        files: List[str] = []
        below: List[str] = []
        for p in level:
            entries = listed.get(p)
            if entries is None:
                entries = yield from sftp._listdir_attr_steps(p)  # says what went wrong
            for a in entries:
                sub = posixpath.join(p, a.filename or "")
                (below if a.is_dir() and not a.is_symlink() else files).append(sub)
        yield from _statuses(sftp, [(REMOVE, _str(_path(f))) for f in files], files, "rmtree")
        dirs += below
        level = below
    if level:
        raise SFTPError(
            errno.ELOOP, f"rmtree: {printable(top)} is more than {DEPTH_MAX} levels deep", top
        )
    for d in reversed(dirs):  # the deepest first: each is empty by then
        yield from sftp._rmdir_steps(d)


def _statuses(
    sftp: SFTP, reqs: List[Tuple[int, bytes]], paths: List[str], what: str
) -> Steps[None]:
    """Requests answered by a status, in batches; the first failure raised once its
    batch is done (a file already gone counts as removed)."""
    for j in range(0, len(reqs), BATCH_MAX):
        replies = yield _op(
            sftp._c.batch, reqs[j : j + BATCH_MAX], timeout=sftp._timeout, what=what
        )
        for path, (rtype, value) in zip(paths[j : j + BATCH_MAX], replies):
            if rtype == STATUS and value[0] not in (FX_OK, FX_NO_SUCH_FILE):
                raise _error(value[0], value[1], what, path)
