"""SCP: the Python half of scp_upload and scp_download.

pyssh speaks the SCP protocol itself, over an exec channel running the server's
``scp -t`` (receive) or ``scp -f`` (send). The C side moves file data between a
local file descriptor and the channel in a fixed buffer with the GIL released
(``Channel.send_from_fd`` / ``recv_to_fd``) and parses every message the server
sends (``_ssh.scp_parse``: names that could escape the target directory, bad
modes and sizes are refused there). This module walks the trees, keeps the
directory nesting honest, writes downloads to a temporary file renamed into place
only when complete, and reports progress.

Written once as flows (pyssh/_tcp.py): each wait on the channel is an ``_ssh.Op``
(the channel methods called with ``defer=True``) yielded by ``upload_steps`` and
``download_steps``; the blocking ``Session.scp_upload``/``scp_download`` run them
with ``run_steps``, ``pyssh.aio`` in the event loop. The checks are the same code.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import posixpath
import re
import shlex
import stat
import time
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from . import _local, _ssh
from ._names import printable
from ._progress import Progress, Reporter
from ._tcp import Steps, run_steps
from ._util import transfer_paths
from .errors import (
    SCPError,
    SCPFileNotFoundError,
    SCPPermissionError,
    SCPProtocolError,
    SessionClosedError,
    SSHError,
    SSHTimeoutError,
)

PathArg = Union[str, "os.PathLike[str]"]

LINE_MAX = 8192  # longest server message accepted
DEPTH_MAX = 64  # directories a download descends, as SFTP's (OpenSSH's sftp)
STDERR_KEPT = 4096  # the end of the server's stderr kept for an error message
ENTRIES_MAX = 1_000_000  # names in one directory of a download, as sftp.max_listing


def remote_quote(path: str) -> str:
    """Quote a remote path for the remote shell; a leading ``~/`` stays the home."""
    if path == "~":
        return "~"
    if path.startswith("~/"):
        rest = path[2:]
        return "~/" + shlex.quote(rest) if rest else "~/"
    return shlex.quote(path)


_BRACKET_SAFE = re.compile(r"!?\]?[A-Za-z0-9_.,+@%=:[\]-]*\Z")


def _glob_tokens(path: str) -> List[Tuple[bool, str]]:
    """`path` as runs of literal text (False, text) and wildcards (True, text):
    ``*``, ``?``, and ``[...]`` whose members need no quoting for the shell (a
    ``[`` with others is literal, on both sides)."""
    out: List[Tuple[bool, str]] = []
    lit, i = "", 0
    while i < len(path):
        c, end = path[i], i + 1
        if c == "[":
            k = i + 1 + (path[i + 1 : i + 2] == "!")
            k += path[k : k + 1] == "]"
            j = path.find("]", k)
            end = j + 1 if j >= 0 and _BRACKET_SAFE.match(path[i + 1 : j]) else i + 1
        if c in "*?" or end > i + 1:
            if lit:
                out.append((False, lit))
            out.append((True, path[i:end]))
            lit = ""
        else:
            lit += c
        i = end
    return out + ([(False, lit)] if lit else [])


def remote_pattern(path: str) -> str:
    """A remote path with wildcards for the remote shell to expand, as ``scp``
    lets it: only the wildcards are left unquoted, every run of other characters
    is quoted (spaces, quotes, ``$``, backticks, ``;`` are never interpreted); a
    leading ``~/`` stays the home."""
    head, rest = ("~/", path[2:]) if path.startswith("~/") else ("", path)
    return head + "".join(t if magic else shlex.quote(t) for magic, t in _glob_tokens(rest))


def has_wildcards(path: str) -> bool:
    return any(magic for magic, _ in _glob_tokens(path))


def _name_matches(name: str, pattern: str) -> bool:
    """Would the remote shell's expansion of `pattern` (a last path component)
    give `name`? A leading dot only for a pattern's leading dot."""
    if name.startswith(".") and not pattern.startswith("."):
        return False
    fn = "".join(
        t if magic else re.sub(r"([*?[])", r"[\1]", t) for magic, t in _glob_tokens(pattern)
    )
    return fnmatch.fnmatchcase(name, fn)


def _to_path(to: Any, where: str) -> str:
    """`to` as a str path; TypeError/ValueError that say what is wrong."""
    try:
        path = os.fspath(to)
    except TypeError:
        raise TypeError(
            f"to must be the {where} directory as str or os.PathLike, not {type(to).__name__}"
        ) from None
    if not isinstance(path, str):
        raise TypeError(f"to must be the {where} directory as str or os.PathLike, not bytes")
    if not path or "\0" in path or "\n" in path:
        raise ValueError(
            f"to must be a {where} directory path, not {path!r} (empty, or with a NUL or newline)"
        )
    return path


def _with_path(e: OSError, path: str) -> OSError:
    """A local OSError raised by the C transfer loop (which does not know the file's
    name), again with the path."""
    if isinstance(e, SSHError) or e.filename is not None:
        return e
    if e.errno is None:  # the file changed size while it was being sent
        return OSError(errno.EIO, str(e), path)
    return type(e)(e.errno, e.strerror, path)


NOT_SCP_HINT = (
    "; the server's first output is not SCP: a remote login script (~/.bashrc, "
    "~/.profile) that prints something breaks SCP, make it print only when the "
    "shell is interactive"
)


def _server_error(text: bytes, path: Optional[str]) -> SCPError:
    """The server's scp reported an error ("scp: PATH: REASON")."""
    msg = text.decode("utf-8", "replace").strip()
    if path is None:
        body = msg[5:] if msg.startswith("scp: ") else msg
        path = body.rsplit(": ", 1)[0] if ": " in body else "?"
    kind = _ssh.scp_error_kind(text)  # the one classifier, shared with the C API
    cls: type[SCPError]
    if kind == _ssh.SCP_ERROR_NOT_FOUND:
        cls, num = SCPFileNotFoundError, errno.ENOENT
    elif kind == _ssh.SCP_ERROR_PERMISSION:
        cls, num = SCPPermissionError, errno.EACCES
    else:
        cls, num = SCPError, errno.EIO
    err = cls(num, f"the server's scp said: {printable(msg)}", path)
    err.server_message = msg
    return err


class _Reader:
    """Buffered reading of the server's side of the protocol (flows)."""

    def __init__(self, ch: Any, what: str):
        self.ch = ch
        self.buf = b""
        self.what = what

    def _more(self) -> Steps[bool]:
        data = yield self.ch.read(65536)
        if not data:
            return False
        self.buf += data
        return True

    def byte(self) -> Steps[Optional[bytes]]:
        if not self.buf and not (yield from self._more()):
            return None
        b, self.buf = self.buf[:1], self.buf[1:]
        return b

    def line(self) -> Steps[Optional[bytes]]:
        """One message, without its newline; None at the end of the stream."""
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line, self.buf = self.buf[:i], self.buf[i + 1 :]
                return line
            if len(self.buf) > LINE_MAX:
                raise SCPProtocolError(
                    f"{self.what}: the server sent a message longer than {LINE_MAX} bytes"
                )
            if not (yield from self._more()):
                if self.buf:
                    raise SCPProtocolError(
                        f"{self.what}: the server's output ended inside a "
                        f"message: {self.buf[:200]!r}"
                    )
                return None

    def to_fd(self, fd: int, size: int, progress: Optional[Callable[[int], Any]]) -> Steps[None]:
        head = self.buf[:size]
        self.buf = self.buf[len(head) :]
        done = 0
        while done < len(head):
            done += os.write(fd, head[done:])
        if size > len(head):
            offset = len(head)
            cb = None if progress is None else (lambda n: progress(offset + n))
            yield self.ch.recv_to_fd(fd, size - len(head), progress=cb)
        elif progress is not None:
            progress(size)


class _Timed:
    """The SCP channel, with the transfer's timeout on every wait: each read, write
    or file transfer is an Op (to yield) that raises SSHTimeoutError when nothing
    moves for that long."""

    def __init__(self, ch: Any, timeout: Optional[float]):
        self.ch = ch
        self.timeout = timeout

    def __getattr__(self, name: str) -> Any:
        return getattr(self.ch, name)

    def read(self, n: int) -> _ssh.Op:
        op: _ssh.Op = self.ch.read(n, timeout=self.timeout, defer=True)
        return op

    def write(self, data: bytes) -> _ssh.Op:
        op: _ssh.Op = self.ch.write(data, timeout=self.timeout, defer=True)
        return op

    def recv_to_fd(self, fd: int, size: int, progress: Any = None) -> _ssh.Op:
        op: _ssh.Op = self.ch.recv_to_fd(
            fd, size, progress=progress, timeout=self.timeout, defer=True
        )
        return op

    def send_from_fd(self, fd: int, size: int, progress: Any = None) -> _ssh.Op:
        op: _ssh.Op = self.ch.send_from_fd(
            fd, size, progress=progress, timeout=self.timeout, defer=True
        )
        return op

    def send_eof(self) -> _ssh.Op:
        op: _ssh.Op = self.ch.send_eof(defer=True)
        return op


def _finish(ch: Any, what: str) -> Steps[None]:
    """The end of the protocol: let the remote scp exit, and check how it did. What
    it writes now is not progress: the wait is bounded in all (the transfer's
    timeout, or 30 s), and only the last STDERR_KEPT bytes of its stderr are kept."""
    limit = ch.timeout or 30
    deadline = time.monotonic() + limit
    kept = bytearray()

    def in_time() -> None:
        if time.monotonic() > deadline:
            raise SSHTimeoutError(
                f"{what}: the server's scp went on writing after the "
                f"transfer and did not exit within {limit:g} seconds "
                f"(timeout={limit:g})"
            )

    def on_stdout(chunk: bytes) -> None:
        in_time()

    def on_stderr(chunk: bytes) -> None:
        kept.extend(chunk[-STDERR_KEPT:])
        del kept[:-STDERR_KEPT]
        in_time()

    r = yield ch.run(stdout=on_stdout, stderr=on_stderr, timeout=limit, defer=True)
    status, signame = r.exit_status, r.signal
    if status not in (0, None) or signame:
        tail = (ch.stderr_tail + bytes(kept)).decode("utf-8", "replace").strip()
        raise SCPError(
            errno.EIO,
            f"{what}: the server's scp exited with status {status}"
            + (f": {printable(tail[-500:])}" if tail else ""),
        )


def _start(session: Any, command: str, what: str, timeout: Optional[float]) -> Steps[_Timed]:
    ch = _ssh.Channel(session)
    try:
        yield ch.exec(command, env=[], timeout=timeout, agent=False, defer=True)  # no ssh -A
    except BaseException:
        ch.close()
        raise
    return _Timed(ch, timeout)


def _no_scp(ch: Any, what: str, path: Optional[str]) -> SCPError:
    tail = ch.stderr_tail.decode("utf-8", "replace").strip()
    if "not found" in tail or "No such file" in tail and "scp" in tail:
        err = SCPError(
            errno.ENOENT,
            f"{what}: the server has no scp command "
            f"({printable(tail[-300:])}); "
            "install OpenSSH's scp there, or use sftp_upload()/sftp_download()",
            path,
        )
    else:
        err = SCPError(
            errno.EIO,
            f"{what}: the server's scp ended without answering"
            + (f": {printable(tail[-500:])}" if tail else ""),
            path,
        )
    err.server_message = tail or None
    return err


# ---- upload --------------------------------------------------------------------------------


def upload(
    session: Any,
    files: Any,
    to: PathArg,
    verbose: bool,
    progress: Optional[Progress],
    preserve: bool,
    timeout: Optional[float] = None,
) -> List[str]:
    return run_steps(upload_steps(session, files, to, verbose, progress, preserve, timeout))


def upload_steps(
    session: Any,
    files: Any,
    to: PathArg,
    verbose: bool,
    progress: Optional[Progress],
    preserve: bool,
    timeout: Optional[float] = None,
) -> Steps[List[str]]:
    """upload() as a flow."""
    sources = transfer_paths(files, "files")
    to = _to_path(to, "remote")
    stats = []
    for src in sources:
        st = os.stat(src)  # FileNotFoundError/PermissionError with the path, before any traffic
        if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
            raise OSError(errno.EINVAL, "not a regular file or a directory", src)
        stats.append(st)
    recursive = any(stat.S_ISDIR(st.st_mode) for st in stats)
    flags = "-t -d" + (" -r" if recursive else "") + (" -p" if preserve else "")
    what = f"scp_upload to {to}"
    rep = Reporter(verbose, progress, upload=True)
    ch = yield from _start(session, f"scp {flags} -- {remote_quote(to)}", what, timeout)
    sender = _Sender(ch, what, rep, preserve)
    written = []
    try:
        yield from sender.ack(to, first=True)  # the remote scp says it is ready
        for src, st in zip(sources, stats):
            name = os.path.basename(os.path.normpath(src))
            rpath = posixpath.join(to, name)
            yield from sender.send(src, name, st, rpath)
            written.append(rpath)
        yield ch.send_eof()
        yield from _finish(ch, what)
    except BaseException:
        rep.stopped()
        raise
    finally:
        ch.close()
    return written


class _Sender:
    """The sending side of ``scp -t``: each message, then the server's answer to it."""

    def __init__(self, ch: _Timed, what: str, rep: Reporter, preserve: bool):
        self.ch = ch
        self.reader = _Reader(ch, what)
        self.what = what
        self.rep = rep
        self.preserve = preserve

    def ack(self, rpath: str, first: bool = False) -> Steps[None]:
        """The server's answer about remote path `rpath`."""
        b = yield from self.reader.byte()
        if b == b"\0":
            return
        if b is None:
            raise _no_scp(self.ch, self.what, rpath)
        if b in (b"\1", b"\2"):
            raise _server_error((yield from self.reader.line()) or b"", rpath)
        raise SCPProtocolError(
            f"{self.what}: the server answered {b!r} instead of an acknowledgement"
            + (NOT_SCP_HINT if first else "")
        )

    def send_times(self, st: os.stat_result, rpath: str) -> Steps[None]:
        yield self.ch.write(b"T%d 0 %d 0\n" % (int(st.st_mtime), int(st.st_atime)))
        yield from self.ack(rpath)

    def send(self, path: str, name: str, st: os.stat_result, rpath: str) -> Steps[None]:
        """Local `path` as `name` into the remote directory being filled, `rpath` its
        remote path (for errors)."""
        bname = os.fsencode(name)
        if b"\n" in bname:
            raise ValueError(f"{path}: SCP cannot send a name with a newline in it")
        if stat.S_ISDIR(st.st_mode):
            yield from self.send_dir(path, bname, st, rpath)
        else:
            yield from self.send_file(path, bname, rpath)

    def send_dir(self, path: str, bname: bytes, st: os.stat_result, rpath: str) -> Steps[None]:
        if self.preserve:
            yield from self.send_times(st, rpath)
        yield self.ch.write(b"D%04o 0 %s\n" % (stat.S_IMODE(st.st_mode), bname))
        yield from self.ack(rpath)
        for entry in sorted(os.listdir(path)):  # hidden files too
            sub = os.path.join(path, entry)
            sst = os.stat(sub)  # follows symlinks, as scp does
            if stat.S_ISDIR(sst.st_mode) or stat.S_ISREG(sst.st_mode):
                yield from self.send(sub, entry, sst, posixpath.join(rpath, entry))
            else:
                raise OSError(errno.EINVAL, "not a regular file or a directory", sub)
        yield self.ch.write(b"E\n")
        yield from self.ack(rpath)

    def send_file(self, path: str, bname: bytes, rpath: str) -> Steps[None]:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        try:
            st = os.fstat(fd)
            if self.preserve:
                yield from self.send_times(st, rpath)
            size = st.st_size
            yield self.ch.write(b"C%04o %d %s\n" % (stat.S_IMODE(st.st_mode), size, bname))
            yield from self.ack(rpath)
            try:
                yield self.ch.send_from_fd(fd, size, progress=self.rep.callback(path, size))
            except OSError as e:
                raise _with_path(e, path) from None
            yield self.ch.write(b"\0")
            yield from self.ack(rpath)
        finally:
            os.close(fd)
        self.rep.finished(path, size)


# ---- download ------------------------------------------------------------------------------


def download(
    session: Any,
    files: Any,
    to: PathArg,
    verbose: bool,
    progress: Optional[Progress],
    preserve: bool,
    timeout: Optional[float] = None,
) -> List[str]:
    return run_steps(download_steps(session, files, to, verbose, progress, preserve, timeout))


def download_steps(
    session: Any,
    files: Any,
    to: PathArg,
    verbose: bool,
    progress: Optional[Progress],
    preserve: bool,
    timeout: Optional[float] = None,
) -> Steps[List[str]]:
    """download() as a flow."""
    sources = transfer_paths(files, "files")
    to = _to_path(to, "local")
    if not os.path.isdir(to):
        if os.path.exists(to):
            raise NotADirectoryError(errno.ENOTDIR, "the download target is not a directory", to)
        raise FileNotFoundError(errno.ENOENT, "the download target directory does not exist", to)
    expected = {}
    asked: Dict[bytes, int] = {}  # how many sources have each name (a/x and b/x: 2)
    patterns: List[Tuple[str, str]] = []  # wildcards in a last component, and their source
    for src in sources:
        base = posixpath.basename(src.rstrip("/"))
        if base in ("", ".", "..", "~"):
            raise ValueError(f"cannot download {src!r}: name the files or directory to fetch")
        if has_wildcards(base):
            patterns.append((base, src))
            continue
        expected[os.fsencode(base)] = src
        asked[os.fsencode(base)] = asked.get(os.fsencode(base), 0) + 1
    what = "scp_download"
    rep = Reporter(verbose, progress, upload=False)
    flags = "-f -r" + (" -p" if preserve else "")
    quoted = (remote_pattern(s) if has_wildcards(s) else remote_quote(s) for s in sources)
    ch = yield from _start(session, f"scp {flags} -- " + " ".join(quoted), what, timeout)
    receiver = _Receiver(ch, what, to, expected, asked, rep, preserve, timeout)
    receiver.patterns = patterns
    try:
        yield from receiver.run()
        yield from receiver.finish(sources)
    finally:
        ch.close()
    return receiver.written


class _Receiver:
    """The receiving side of ``scp -f``: the server's messages, each checked, made
    into the directories and files under the download's target."""

    def __init__(
        self,
        ch: _Timed,
        what: str,
        to: str,
        expected: Dict[bytes, str],
        asked: Dict[bytes, int],
        rep: Reporter,
        preserve: bool,
        timeout: Optional[float],
    ):
        self.ch = ch
        self.reader = _Reader(ch, what)
        self.what = what
        self.expected = expected  # the top-level names asked for, and their sources
        self.patterns: List[Tuple[str, str]] = []  # and wildcards: (last component, source)
        self.asked = asked
        self.rep = rep
        self.preserve = preserve
        self.timeout = timeout
        self.stack = [to]  # local directories being filled
        self.rstack = [""]  # and their remote paths (for errors)
        self.dir_modes: List[Any] = []
        self.times: Optional[Tuple[int, int]] = None
        self.first_error: Optional[BaseException] = None
        self.written: List[str] = []
        self.got_anything = False
        self.seen: List[Dict[bytes, int]] = [{}]  # the names sent in each directory of the stack
        self.after_t = False  # the last message was T: C or D must follow
        self.moved_at = time.monotonic()  # when the last message that was not a warning
        self.warned = False  # was handled; and whether one came since

    def run(self) -> Steps[None]:
        """Answer and handle the server's messages until its output ends or it sends
        an error."""
        try:
            yield self.ch.write(b"\0")
        except SessionClosedError:
            raise
        except SSHError:
            # the server's scp may have ended before reading a byte (no scp command,
            # a ForceCommand): its output and stderr, read next, say why
            if not self.ch.status().ended:
                raise
        while True:
            if not self.warned:
                self.moved_at = time.monotonic()
            line = yield from self.reader.line()
            if line is None:
                return
            msg = self.parse(line)
            kind = msg[0]
            if self.after_t and kind not in ("C", "D"):
                raise SCPProtocolError(
                    f"{self.what}: the server sent a time message (T) that no file or "
                    f"directory followed"
                )
            if kind in ("warning", "error"):
                if self.server_said(kind, msg[1]):
                    return
                continue
            self.warned = False
            self.after_t = kind == "T"
            if kind == "T":
                self.times = (msg[2], msg[1])
                yield self.ch.write(b"\0")
            elif kind == "E":
                yield from self.leave_dir()
            else:
                yield from self.entry(msg)

    def parse(self, line: bytes) -> Any:
        try:
            msg = _ssh.scp_parse(line)
        except SCPProtocolError as e:
            if self.got_anything or line[:1] in (b"C", b"D", b"E", b"T"):
                raise
            raise SCPProtocolError(f"{self.what}: {e}{NOT_SCP_HINT}") from None
        self.got_anything = True
        return msg

    def server_said(self, kind: str, text: bytes) -> bool:
        """A warning or an error from the server's scp: the first is raised at the end.
        True when it ends the transfer (an error)."""
        err = _server_error(text, None)
        self.first_error = self.first_error or err
        if kind == "error":
            return True
        # warnings are no progress: a server sending nothing else times out
        self.warned = True
        if self.timeout is not None and time.monotonic() - self.moved_at > self.timeout:
            raise SSHTimeoutError(
                f"{self.what}: the server sent nothing but warnings for "
                f"{self.timeout:g} seconds (timeout={self.timeout:g}); the "
                f"last: {printable(text)[:300]}"
            )
        return False

    def matched(self, name: bytes) -> List[str]:
        """The sources with wildcards whose last component matches `name`."""
        text = os.fsdecode(name)
        return [src for pat, src in self.patterns if _name_matches(text, pat)]

    def check_top(self, name: bytes) -> None:
        if len(self.stack) == 1 and name not in self.expected and not self.matched(name):
            asked = sorted(self.expected.values()) + [src for _, src in self.patterns]
            raise SCPProtocolError(
                f"{self.what}: the server sent {name!r}, which was not asked for "
                f"(asked for: {asked})"
            )

    def check_name(self, name: bytes) -> None:
        """Each name once per directory, as in an SFTP listing (at the top, once per
        source of that name), and at most ENTRIES_MAX names in one directory: a
        server that sends the same or new entries without end is refused."""
        names = self.seen[-1]
        n = names.get(name, 0) + 1
        top = self.asked.get(name, 0) + len(self.matched(name)) if len(self.stack) == 1 else 1
        if n > max(top, 1):
            where = "the target" if len(self.stack) == 1 else printable(self.rstack[-1])
            raise SCPProtocolError(
                f"{self.what}: the server sent the name '{printable(name)}' twice in {where}"
            )
        if n == 1 and len(names) >= ENTRIES_MAX:
            raise SCPProtocolError(
                f"{self.what}: the server sent more than {ENTRIES_MAX} entries in one directory"
            )
        names[name] = n

    def entry(self, msg: Any) -> Steps[None]:
        """A C (file) or D (directory) message."""
        kind, mode, size, bname = msg
        self.check_top(bname)
        self.check_name(bname)
        name = os.fsdecode(bname)
        dest = os.path.join(self.stack[-1], name)
        if len(self.stack) == 1 and bname in self.expected:
            rpath = self.expected[bname]
        elif len(self.stack) == 1:  # a wildcard's match: beside the pattern
            rpath = posixpath.join(posixpath.dirname(self.matched(bname)[0]), name)
        else:
            rpath = posixpath.join(self.rstack[-1], name)
        if kind == "D":
            yield from self.enter_dir(dest, rpath, mode)
        else:
            yield from self.receive_file(dest, rpath, mode, size)

    def enter_dir(self, dest: str, rpath: str, mode: int) -> Steps[None]:
        if len(self.stack) > DEPTH_MAX:
            raise SCPProtocolError(
                f"{self.what}: the server sent directories more than {DEPTH_MAX} deep"
            )
        if os.path.lexists(dest) and not os.path.isdir(dest):
            raise FileExistsError(errno.EEXIST, "exists and is not a directory", dest)
        made = _local.enter_dir(dest)
        self.stack.append(dest)
        self.rstack.append(rpath)
        self.seen.append({})
        self.dir_modes.append((mode, self.times, made))
        self.times = None
        if len(self.stack) == 2:
            self.written.append(dest)
        yield self.ch.write(b"\0")

    def leave_dir(self) -> Steps[None]:
        if len(self.stack) == 1:
            raise SCPProtocolError(f"{self.what}: the server left a directory it never entered")
        path = self.stack.pop()
        self.rstack.pop()
        self.seen.pop()
        mode, dtimes, made = self.dir_modes.pop()
        _local.leave_dir(
            path, made, _local.mode_for(mode, self.preserve, 0o755), self.preserve, dtimes
        )
        yield self.ch.write(b"\0")

    def receive_file(self, dest: str, rpath: str, mode: int, size: int) -> Steps[None]:
        fd, tmp = _local.open_part(dest)
        ok = False
        try:
            yield self.ch.write(b"\0")
            try:
                yield from self.reader.to_fd(fd, size, self.rep.callback(dest, size))
            except OSError as e:
                raise _with_path(e, dest) from None
            status = yield from self.reader.byte()
            if status != b"\0":
                if status in (b"\1", b"\2"):
                    raise _server_error((yield from self.reader.line()) or b"", rpath)
                raise SCPProtocolError(
                    f"{self.what}: the server sent {status!r} after the data "
                    f"of {printable(dest)} instead of its end mark"
                )
            ok = True
        finally:
            os.close(fd)
            if not ok:
                _local.discard(tmp)
        _local.finish_part(tmp, dest, _local.mode_for(mode, self.preserve), self.times)
        self.times = None
        yield self.ch.write(b"\0")
        self.rep.finished(dest, size)
        if len(self.stack) == 1:
            self.written.append(dest)

    def finish(self, sources: List[str]) -> Steps[None]:
        """The end of the server's output: every directory left, no error reported,
        and the remote scp's exit."""
        if len(self.stack) != 1:
            raise SCPProtocolError(f"{self.what}: the server's output ended inside a directory")
        if self.first_error is not None:
            raise self.first_error
        if not self.got_anything:
            err = _no_scp(self.ch, self.what, sources[0] if len(sources) == 1 else None)
            if self.patterns and err.errno != errno.ENOENT:
                # a shell that refuses a wildcard matching nothing (zsh, bash's failglob)
                pat = self.patterns[0][1]
                raise SCPFileNotFoundError(
                    errno.ENOENT,
                    f"{self.what}: no remote file matches {printable(pat)}"
                    + (f" ({printable(err.server_message[-300:])})" if err.server_message else ""),
                    pat,
                ) from None
            raise err
        yield from _finish(self.ch, self.what)
