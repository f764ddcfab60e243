"""SFTP.glob(): remote wildcards, matched by pyssh on the server's listings.

Each path component is matched on its own, as Python's ``glob`` does: ``*``, ``?``
and ``[...]`` never match a ``/``, nor a leading dot unless the component's
pattern starts with one; ``**`` as a whole component matches any number of
directories (symlinked ones are not descended). Only the directories a pattern
needs are listed, a level's at once (the pipelined listing), each listing bounded
as ``listdir`` is; ``**`` stops at 64 levels as ``walk`` does.
"""

from __future__ import annotations

import errno
import fnmatch
import posixpath
import re
from typing import TYPE_CHECKING, Dict, List, Optional

from ._names import printable
from ._tcp import Steps, run_steps
from .errors import SFTPError, SFTPFileNotFoundError

if TYPE_CHECKING:
    from ._sftp import SFTP, SFTPAttributes

DEPTH_MAX = 64  # levels ** descends, as walk() and downloads
RESULTS_MAX = 1_000_000  # paths one glob returns, as sftp.max_listing

_MAGIC = re.compile(r"[*?[]")


def has_magic(pattern: str) -> bool:
    """Does `pattern` hold a wildcard (``*``, ``?`` or ``[``)?"""
    return _MAGIC.search(pattern) is not None


def _matches(name: str, part: str) -> bool:
    """fnmatch on one component: a leading dot is matched only by a leading dot."""
    if name.startswith(".") and not part.startswith("."):
        return False
    return fnmatch.fnmatchcase(name, part)


def glob(sftp: SFTP, pattern: str) -> List[str]:
    """The remote paths matching `pattern`, sorted (see the module's docstring)."""
    return run_steps(glob_steps(sftp, pattern))


def glob_steps(sftp: SFTP, pattern: str) -> Steps[List[str]]:
    """glob() as a flow."""
    absolute = pattern.startswith("/")
    parts = [p for p in pattern.split("/") if p]
    paths: List[str] = ["/" if absolute else ""]
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part == "**":
            paths = yield from _recursive(sftp, paths, pattern)
        elif has_magic(part):
            paths = yield from _matching(sftp, paths, part, dirs_only=not last)
        else:
            paths = [_join(p, part) for p in paths]
        if not paths:
            return []
    out = [p for p in dict.fromkeys(paths) if p]
    if not has_magic(parts[-1] if parts else ""):
        kept: List[str] = []
        for p in out:  # a literal end: it must exist
            if (yield from sftp._lexists_steps(p)):
                kept.append(p)
        out = kept
    return sorted(out)


def _join(base: str, name: str) -> str:
    return posixpath.join(base, name) if base else name


def _listings(sftp: SFTP, paths: List[str]) -> Steps[Dict[str, Optional[List[SFTPAttributes]]]]:
    """The listings of several directories at once; None where one is not a
    directory or cannot be listed (it matches nothing, as in Python's glob)."""
    got: Dict[str, Optional[List[SFTPAttributes]]] = yield from sftp._list_many_steps(
        [p or "." for p in paths]
    )
    return {p: got.get(p or ".") for p in paths}


def _matching(sftp: SFTP, paths: List[str], part: str, dirs_only: bool) -> Steps[List[str]]:
    out: List[str] = []
    for base, entries in (yield from _listings(sftp, paths)).items():
        for a in entries or ():
            name = a.filename or ""
            if not _matches(name, part):
                continue
            if dirs_only and not (a.is_dir() or a.is_symlink()):
                continue  # a symlink is kept: it may lead to a directory, listed next
            out.append(_join(base, name))
            if len(out) > RESULTS_MAX:
                raise SFTPError(errno.EFBIG, f"glob: more than {RESULTS_MAX} matches")
    return out


def _recursive(sftp: SFTP, paths: List[str], pattern: str) -> Steps[List[str]]:
    """``**``: the directories given and every directory below them (not through
    symlinks, nor hidden ones, as Python's glob), a level at a time."""
    out, level = list(paths), list(paths)
    for _ in range(DEPTH_MAX):
        below: List[str] = []
        for base, entries in (yield from _listings(sftp, level)).items():
            for a in entries or ():
                name = a.filename or ""
                if a.is_dir() and not a.is_symlink() and not name.startswith("."):
                    below.append(_join(base, name))
        if not below:
            return out
        out += below
        if len(out) > RESULTS_MAX:
            raise SFTPError(errno.EFBIG, f"glob: more than {RESULTS_MAX} matches")
        level = below
    raise SFTPError(
        errno.ELOOP, f"glob: {printable(pattern)} goes more than {DEPTH_MAX} levels deep"
    )


def expand_steps(sftp: SFTP, paths: List[str], what: str) -> Steps[List[str]]:
    """Transfer sources with their wildcards expanded: a path with a wildcard that
    does not exist as it is named stands for its matches (a file literally named
    ``a*b`` is itself); no match is an SFTPFileNotFoundError naming the pattern."""
    out: List[str] = []
    for p in paths:
        if not has_magic(p) or (yield from sftp._lexists_steps(p)):
            out.append(p)
            continue
        found = yield from glob_steps(sftp, p)
        if not found:
            raise SFTPFileNotFoundError(
                errno.ENOENT, f"{what}: no remote file matches {printable(p)}", p
            )
        out += found
    return out
