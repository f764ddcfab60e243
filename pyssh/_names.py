"""Text and names that come from a server, before they are shown or used.

Two rules, each written once:

- ``printable()``: the one sanitizer for anything from the server that pyssh
  prints or puts in an exception message (file names in verbose and progress
  lines, the server's error messages): control characters, escape sequences and
  invisible formatting characters are shown escaped, as OpenSSH's ``fmprintf``
  does, so that a file name cannot move the cursor, recolour or retitle the
  user's terminal.
- ``local_name()``: a name from the server becomes part of a local path only if
  it is one safe component for this system (the rule itself is C's, in
  ``csrc/names.c``, shared with the SCP and SFTP parsers).
"""

from __future__ import annotations

import os
from typing import Union

from . import _ssh


def printable(text: Union[str, bytes]) -> str:
    """``text`` with everything that is not printable escaped (``\\x1b``,
    ``\\u202e``); bytes that are not UTF-8 come out as ``\\xNN``."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "surrogateescape")
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch.isprintable():
            out.append(ch)
            continue
        o = ord(ch)
        if 0xDC80 <= o <= 0xDCFF:  # a byte that was not UTF-8
            o -= 0xDC00
        out.append(f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}" if o < 0x10000 else f"\\U{o:08x}")
    return "".join(out)


def name_problem(name: bytes, windows: Union[bool, None] = None) -> Union[str, None]:
    """Why ``name`` is not safe as one component of a local path (this
    system's rules, or Windows' with ``windows=True``), or None."""
    return _ssh.name_problem(name, windows)


def local_name(name: Union[str, bytes], windows: Union[bool, None] = None) -> str:
    """``name`` as a local path component, or ValueError saying why it cannot be
    one. Callers turn the ValueError into their protocol's error."""
    raw = os.fsencode(name)
    why = _ssh.name_problem(raw, windows)
    if why is not None:
        raise ValueError(f"{why}: '{printable(raw)}'")
    return os.fsdecode(name)
