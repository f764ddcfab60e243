"""One big file over several connections (``SFTP.get``/``put`` with
``connections=N``): each connection moves one contiguous range of the file, over
its own striped channels, in a thread of its own (the waits release the GIL), into
or from the same local file descriptor. Used where one connection is not enough:
a server that allows few channels per connection (sshd's MaxSessions), or one
connection's encryption on one core being the limit.

A failure anywhere stops the other ranges within a progress period, and the
first error is raised. A download's file is then cut back to the end of the
ranges complete from its start (so that a resume goes on from there), an
upload's remote file likewise (SETSTAT size, while the main channel works),
since a later range may have been written past a gap."""

from __future__ import annotations

import logging
import os
import threading
from typing import Any, Callable, List, NamedTuple, Optional, Tuple

log = logging.getLogger("pyssh")

CONNECTIONS_MAX = 8


class _Stopped(Exception):
    """Another range failed: this one stops."""


class Part:
    """One connection's range [a, b) and how it went."""

    def __init__(self, sftp: Any, a: int, b: int):
        self.sftp, self.a, self.b = sftp, a, b
        self.moved = 0
        self.result: Any = None
        self.error: Optional[BaseException] = None
        self.complete = a


def split(start: int, end: int, n: int, chunk: int) -> List[Tuple[int, int]]:
    """[start, end) as n contiguous ranges, whole chunks except the last."""
    step = -(-(end - start) // n // chunk) * chunk or chunk
    bounds = [min(end, start + i * step) for i in range(n)] + [end]
    return [(bounds[i], bounds[i + 1]) for i in range(n) if bounds[i] < bounds[i + 1]]


def open_more(session: Any, n: int, timeout: Optional[float]) -> List[Any]:
    """n more connections like `session`, opened at once, each with an SFTP
    channel; fewer when some cannot be made (logged)."""
    made: List[Any] = []
    lock = threading.Lock()

    def one() -> None:
        try:
            s = session._again()
            f = s.sftp(timeout=timeout)
            f._owns_session = True
        except Exception as e:  # the ranges fall back on the connections made
            log.info("SFTP: another connection could not be made: %s", e)
            return
        with lock:
            made.append(f)

    threads = [threading.Thread(target=one, daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return made


def run_parts(
    parts: List[Part],
    work: Callable[[Part, Callable[[int], None]], Any],
    progress: Optional[Callable[[int], Any]],
) -> None:
    """work(part, callback) for each part, parts[0] in this thread and the others
    in threads of their own; `progress` sees the bytes of all of them. A failure
    (or Ctrl-C here) stops the others; every thread has ended when this returns."""
    stop = threading.Event()

    def callback_for(p: Part, main: bool) -> Callable[[int], None]:
        def cb(moved: int) -> None:
            p.moved = moved
            if stop.is_set():
                raise _Stopped()
            if main and progress is not None:
                progress(sum(q.moved for q in parts))

        return cb

    def go(p: Part, main: bool) -> None:
        try:
            p.result = work(p, callback_for(p, main))
        except BaseException as e:
            p.error = e
            stop.set()

    threads = [threading.Thread(target=go, args=(p, False), daemon=True) for p in parts[1:]]
    for t in threads:
        t.start()
    try:
        go(parts[0], True)
    finally:
        if parts[0].error is not None:
            stop.set()
        for t in threads:
            t.join()


def first_error(parts: List[Part]) -> Optional[BaseException]:
    """The error to raise: the first that is not another range's stop."""
    errors = [p.error for p in parts if p.error is not None]
    real = [e for e in errors if not isinstance(e, _Stopped)]
    chosen = real or errors
    return chosen[0] if chosen else None


def complete_prefix(parts: List[Part]) -> int:
    """Where the bytes complete from the first range's start end."""
    for p in parts:
        if p.complete < p.b:
            return p.complete
    return parts[-1].b


class Job(NamedTuple):
    """One file over several connections: the handle `h` open on `sftp`, its
    remote path (opened on the others too) and the local one (for errors), the
    local descriptor, the range [start, end), progress, streams per connection."""

    sftp: Any
    h: bytes
    rpath: str
    lpath: str
    fd: int
    start: int
    end: int
    cb: Optional[Callable[[int], Any]]
    streams: Optional[int]


def _parts(job: Job, n: int) -> List[Part]:
    sftp = job.sftp
    more = sftp._more_connections(n - 1)
    ranges = split(job.start, job.end, 1 + len(more), max(sftp.max_read, sftp.max_write))
    return [Part(f, a, b) for f, (a, b) in zip([sftp] + more, ranges)]


def download(job: Job, n: int, cut: bool) -> int:
    """get() over n connections: the bytes moved (end - start, or an error)."""
    from ._sftp import CLOSE, F_READ, _str

    parts = _parts(job, n)

    def work(p: Part, pcb: Callable[[int], None]) -> int:
        f = p.sftp
        ph = job.h if f is job.sftp else f._open(job.rpath, F_READ)
        try:
            return int(
                f._download_range(
                    ph, job.rpath, job.lpath, job.fd, p.a, p.b, pcb, job.streams, False, True
                )
            )
        finally:
            p.complete = f._complete_to
            if ph is not job.h and not f._c.closed:
                f._c.send(CLOSE, _str(ph), timeout=f._timeout, what="closing a remote file")

    run_parts(parts, work, job.cb)
    err = first_error(parts)
    if err is not None:
        if cut:  # resume: what is complete from the start stays, for the next one
            os.ftruncate(job.fd, complete_prefix(parts))
        raise err
    return sum(int(p.result) for p in parts)


def upload(job: Job, n: int) -> int:
    """put() over n connections: the bytes the server confirmed."""
    from ._sftp import CLOSE, F_WRITE, FSETSTAT, _attrs, _str

    parts = _parts(job, n)

    def work(p: Part, pcb: Callable[[int], None]) -> int:
        f = p.sftp
        ph = job.h if f is job.sftp else f._open(job.rpath, F_WRITE)
        closed = ph is job.h
        try:
            moved = int(
                f._upload_range(ph, job.rpath, job.lpath, job.fd, p.a, p.b, pcb, job.streams)
            )
            if not closed:
                f._close_handle(ph)  # its data is safe once the close is confirmed
                closed = True
            return moved
        finally:
            p.complete = f._complete_to
            if not closed and not f._c.closed:
                f._c.send(CLOSE, _str(ph), timeout=f._timeout, what="closing a remote file")

    run_parts(parts, work, job.cb)
    err = first_error(parts)
    if err is not None:
        # a later range may stand past a gap: cut the remote file back to what is
        # complete, so that a resume (which goes by its size) goes on from there
        prefix = complete_prefix(parts)
        try:
            job.sftp._call(FSETSTAT, _str(job.h) + _attrs(size=prefix), "upload", job.rpath)
        except Exception as e:
            log.warning(
                "upload: could not cut %s back to %d bytes after a failure: %s "
                "(upload it again rather than resume)",
                job.rpath,
                prefix,
                e,
            )
        raise err
    return sum(int(p.result) for p in parts)
