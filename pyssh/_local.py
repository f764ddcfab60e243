"""Where downloads land, for SCP and SFTP alike.

A download writes each file under a temporary name beside its destination and
renames it into place once complete, so that no partial file ever carries the
final name; whatever goes wrong, the temporary file is removed. Modes follow
scp and sftp: without ``preserve`` the server's mode is masked by the local
umask (a remote 0777 file under umask 077 lands as 0700), with it the mode is
kept; setuid, setgid and sticky bits from a server are never applied.
Directories are made 0700 while they fill, then given their mode. A symbolic
link in the way of a directory, or of a file a resumed download continues, is
refused: a download never follows one out of the directory the user named.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
import threading
from typing import Optional, Tuple

PART_SUFFIX = ".pyssh-part"
NAME_MAX = 255  # bytes in one name: Linux, macOS and Windows (UTF-16 units)
MODE_MASK = 0o777

_umask_lock = threading.Lock()


def umask() -> int:
    """The process umask. Read from /proc where Linux offers it; elsewhere set and
    restored at once, to a stricter value, so that a file another thread creates
    meanwhile is never more open than it should be."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _umask_lock:
        mask = os.umask(0o077)
        os.umask(mask)
    return mask


def mode_for(remote_mode: Optional[int], preserve: bool, default: int = 0o644) -> int:
    """The local mode of a downloaded file or directory."""
    mode = (remote_mode if remote_mode is not None else default) & MODE_MASK
    return mode if preserve else mode & ~umask()


def part_path(dest: str) -> str:
    """A fresh temporary name beside ``dest`` that fits in NAME_MAX bytes: long
    names are shortened in the temporary name, never in the final one."""
    folder, base = os.path.split(dest)
    suffix = f".{secrets.token_hex(4)}{PART_SUFFIX}"
    room = NAME_MAX - 1 - len(suffix)
    while len(os.fsencode(base)) > room:
        base = base[:-1]
    return os.path.join(folder, f".{base}{suffix}")


def open_part(dest: str) -> Tuple[int, str]:
    """Create the temporary file for ``dest`` (0600 while it fills): (fd, path)."""
    if os.path.isdir(dest) and not os.path.islink(dest):
        raise IsADirectoryError(errno.EISDIR, "a directory is in the way", dest)
    tmp = part_path(dest)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    return os.open(tmp, flags, 0o600), tmp


def open_resume(dest: str, mode: int) -> Tuple[int, int]:
    """Open ``dest`` to continue a download from where it ends (made with ``mode``
    if missing): (fd, its size). Only a regular file: a symbolic link in the way is
    refused, as for a directory (the name may be the server's, the link may lead out
    of the target), and so is anything else that is not a file (a FIFO would block)."""
    try:
        st = os.lstat(dest)
    except FileNotFoundError:
        st = None
    if st is not None and stat.S_ISLNK(st.st_mode):
        raise FileExistsError(
            errno.EEXIST,
            "a symbolic link is in the way of a resumed "
            "download (a download does not follow links out of its "
            "target): remove it, or download elsewhere",
            dest,
        )
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise FileExistsError(
            errno.EEXIST, "something that is not a file is in the way of a resumed download", dest
        )
    flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_BINARY", 0) | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(dest, flags, mode)
    except OSError as e:
        if e.errno == errno.ELOOP:  # a link made since the look
            raise FileExistsError(
                errno.EEXIST, "a symbolic link is in the way of a resumed download", dest
            ) from None
        raise
    return fd, os.fstat(fd).st_size


def discard(tmp: str) -> None:
    """Remove a temporary file that will not be renamed into place."""
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass


def finish_part(
    tmp: str, dest: str, mode: int, times: Optional[Tuple[float, float]] = None
) -> None:
    """Give the complete temporary file its mode (and times), then its final
    name. If any of it fails, the temporary file is removed."""
    try:
        os.chmod(tmp, mode)
        if times is not None:
            os.utime(tmp, times)
        os.replace(tmp, dest)
    except BaseException:
        discard(tmp)
        raise


def enter_dir(dest: str) -> bool:
    """Make directory ``dest`` for a download (0700 while it fills), or use the one
    there. Returns True when it was made (then it gets its mode at the end)."""
    if os.path.islink(dest):
        raise FileExistsError(
            errno.EEXIST,
            "a symbolic link is in the way of a downloaded "
            "directory (a download does not follow links out of its "
            "target): remove it, or download elsewhere",
            dest,
        )
    if os.path.isdir(dest):
        return False
    os.mkdir(dest, 0o700)
    return True


def leave_dir(
    dest: str, made: bool, mode: int, preserve: bool, times: Optional[Tuple[float, float]]
) -> None:
    """A downloaded directory is complete: a directory the download made gets its
    mode; one that was there already keeps its own unless ``preserve``."""
    if made or preserve:
        os.chmod(dest, mode)
    if times is not None:
        os.utime(dest, times)
