"""The one rule for names from a server (csrc/names.c, through
pyssh._names) and the one sanitizer for what is printed, as properties: whatever
the name, an accepted one is a single component that stays inside the directory
it is joined to, on POSIX and on Windows' rules."""

import ntpath
import os
import posixpath

import pytest
from hypothesis import example, given, settings, strategies as st

from pyssh import _ssh
from pyssh._names import name_problem, printable

names = st.one_of(
    st.binary(max_size=40),
    st.text(max_size=20).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.sampled_from(
        [
            b".",
            b"..",
            b"...",
            b"a/b",
            b"a\\b",
            b"C:x",
            b"c:",
            b"CON",
            b"con.txt",
            b"Nul .x",
            b"COM1",
            b"lpt9.log",
            b"COM\xc2\xb9",
            b"CONIN$",
            b"a.",
            b"a ",
            b"a\x00b",
            b"a\x1bb",
            b"x:stream",
            b"a|b",
            b"a?b",
            b"com10",
            b"LPT",
            b"conx",
        ]
    ),
)


def stays_inside(join, normpath, base, name):
    path = normpath(join(base, name))
    return (
        path.startswith(base + ("/" if join is posixpath.join else "\\"))
        and normpath(join(path, "..")) == base
    )


@pytest.mark.slow
@settings(max_examples=3000)
@given(names)
@example(b"..")
@example(b"")
def test_posix_rule(name):
    why = name_problem(name, windows=False)
    text = name.decode("utf-8", "surrogateescape")
    safe = bool(name) and name not in (b".", b"..") and b"/" not in name and b"\0" not in name
    assert (why is None) == safe, (name, why)
    if why is None:
        assert stays_inside(posixpath.join, posixpath.normpath, "/base", text)


@pytest.mark.slow
@settings(max_examples=3000)
@given(names)
@example(b"C:x")
@example(b"nul.txt")
def test_windows_rule(name):
    why = name_problem(name, windows=True)
    if why is None:
        text = name.decode("utf-8", "surrogateescape")
        # one component, no drive, not a device, not renamed by Windows
        assert name_problem(name, windows=False) is None
        assert not any(c in text for c in '\\:<>"|?*') and all(ord(c) >= 32 for c in text)
        assert not text.endswith((".", " "))
        assert ntpath.splitdrive(text)[0] == "" and ntpath.basename(text) == text
        stem = text.split(".")[0].rstrip(" ").upper()
        assert stem not in {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"}
        assert not (len(stem) == 4 and stem[:3] in ("COM", "LPT") and stem[3].isdigit())
        assert stays_inside(ntpath.join, ntpath.normpath, "C:\\base", text)


def test_windows_devices_and_paths():
    for bad in (
        b"CON",
        b"con",
        b"Con.txt",
        b"NUL .log",
        b"aux",
        b"COM1",
        b"lpt9.x",
        b"COM\xc2\xb9",
        b"LPT\xc2\xb3.txt",
        b"CONOUT$",
        b"a\\b",
        b"C:x",
        b"x:y",
        b"a.",
        b"a ",
        b"q?",
        b"a\x01",
    ):
        assert name_problem(bad, windows=True) is not None, bad
    for good in (b"CONX", b"com10", b"COM", b"lpt", b"a.b", b".hidden", b"\xc3\xa9t\xc3\xa9"):
        assert name_problem(good, windows=True) is None, good
    # this system's rule is the default
    assert (_ssh.name_problem(b"a\\b") is not None) == (os.name == "nt")


@pytest.mark.slow
@settings(max_examples=2000)
@given(st.one_of(st.text(), st.binary()))
def test_printable_shows_no_control_character(text):
    shown = printable(text)
    assert shown.isprintable()
    if isinstance(text, str) and text.isprintable():
        assert shown == text


def test_printable_escapes():
    assert printable("a\x1b[31mb\x07") == "a\\x1b[31mb\\x07"
    assert printable(b"\xff\xfeok") == "\\xff\\xfeok"
    assert printable("rtl\u202eoverride") == "rtl\\u202eoverride"
    assert printable("été ✓") == "été ✓"
