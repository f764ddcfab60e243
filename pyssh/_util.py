"""What several pyssh modules check the same way: a timeout argument, a session
still open, the paths a transfer was given. Each lives here once, so that no module
reaches into another's private helpers, and none of them needs session.py (which
imports them all)."""

from __future__ import annotations

import os
from typing import Any, List, Optional

from . import _ssh
from .errors import SessionClosedError


def check_timeout(timeout: Any) -> Optional[float]:
    """A timeout argument: None (no limit) or a positive number of seconds."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds or None, not {timeout!r}")
    try:
        return float(timeout)
    except OverflowError:  # an int beyond any float: no limit in practice
        return float("inf")


def check_open(session: _ssh.Session) -> None:
    """The state check before anything starts on a session: a closed one raises
    SessionClosedError, saying what to do."""
    if session.closed:
        raise SessionClosedError("the session is closed: connect again with pyssh.connect()")


def transfer_paths(files: Any, what: str) -> List[str]:
    """The files argument of a transfer (one path, or a sequence of them) as a
    non-empty list of str."""
    if isinstance(files, (str, os.PathLike)):
        files = [files]
    elif isinstance(files, (bytes, bytearray)):
        raise TypeError(f"{what}: give paths as str or os.PathLike, not bytes")
    try:
        out = [os.fspath(f) for f in files]
    except TypeError:
        raise TypeError(f"{what} must be a path or a sequence of paths") from None
    if not out:
        raise ValueError(f"{what}: no paths given")
    for p in out:
        if not isinstance(p, str):
            raise TypeError(f"{what}: give paths as str, not {type(p).__name__}")
        if not p or "\0" in p or "\n" in p:
            raise ValueError(f"{what}: invalid path {p!r} (empty, or with a NUL or newline)")
    return out
