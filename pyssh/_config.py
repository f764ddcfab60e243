"""Reads the few ssh_config options that pyssh needs in Python.

libssh parses the configuration files itself for everything it supports
(HostName, User, Port, ciphers, ProxyJump, ...). libssh has no public way to list
the IdentityFile entries it found, and pyssh needs them (its own authentication
order, and a report for each key), as well as whether a proxy is configured
(then libssh opens the connection itself), and how known_hosts is read and written
(``HashKnownHosts``, ``GlobalKnownHostsFile``: pyssh checks host keys itself), and
``ForwardAgent`` (pyssh forwards the agent itself). This reader answers only that.

Supported: ``Host`` patterns (``*``, ``?``, ``!negation``, several per line),
``Match all|host|originalhost|user|localuser`` (other criteria never match),
``Include`` (globs, relative paths under ~/.ssh or /etc/ssh), first value wins,
``IdentityFile`` accumulates, ``%d %u %l %h %r %p %%`` and ``~`` in IdentityFile.
``ServerAliveInterval`` (OpenSSH's time format: ``30``, ``1m30s``) and
``ServerAliveCountMax`` are read for the keepalive (:func:`keepalive`).
"""

from __future__ import annotations

import fnmatch
import getpass
import glob
import os
import re
import shlex
import socket
import time
from typing import Dict, List, Optional, Tuple, Union

__all__ = ["lookup", "keepalive", "SYSTEM_CONFIG"]

SYSTEM_CONFIG = "/etc/ssh/ssh_config"
_WANTED = {
    "identityfile",
    "certificatefile",
    "identitiesonly",
    "proxyjump",
    "proxycommand",
    "user",
    "hostname",
    "port",
    "hashknownhosts",
    "globalknownhostsfile",
    "forwardagent",
    "serveraliveinterval",
    "serveralivecountmax",
    "streamlocalbindunlink",
}


def _split(line: str) -> Tuple[Optional[str], List[str]]:
    line = line.strip()
    if not line or line.startswith("#"):
        return None, []
    if "=" in line.split(None, 1)[0]:
        key, _, rest = line.partition("=")
    else:
        parts = line.split(None, 1)
        key, rest = parts[0], parts[1] if len(parts) > 1 else ""
    rest = rest.strip()
    if rest.startswith("="):
        rest = rest[1:].strip()
    try:
        args = shlex.split(rest, comments=True)
    except ValueError:
        args = rest.split()
    return key.lower(), args


_PARSED: Dict[str, Tuple[Tuple[int, int, int], List[Tuple[str, List[str]]]]] = {}


def _parsed(path: str) -> Optional[List[Tuple[str, List[str]]]]:
    """The file's (keyword, arguments) lines, parsed once while it stays unchanged
    (a Group looks up one file for each of its hosts); None if it cannot be read."""
    try:
        st = os.stat(path)
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        hit = _PARSED.get(path)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    lines = [(k, a) for k, a in map(_split, text.splitlines()) if k is not None]
    if time.time() - st.st_mtime >= 2:  # (as git: a fresh change may not show yet)
        if len(_PARSED) > 64:
            _PARSED.clear()
        _PARSED[path] = (stamp, lines)
    return lines


_GLOBS: Dict[str, Tuple[Tuple[int, int], List[str]]] = {}


def _glob(pattern: str) -> List[str]:
    """An Include's files, sorted; kept while the directory is unchanged when only the
    last part of the pattern has wildcards (/etc/ssh/ssh_config.d/*.conf)."""
    folder = os.path.dirname(pattern)
    if glob.has_magic(folder):
        return sorted(glob.glob(pattern))
    try:
        st = os.stat(folder)
    except OSError:
        return []
    stamp = (st.st_ino, st.st_mtime_ns)
    hit = _GLOBS.get(pattern)
    if hit is not None and hit[0] == stamp:
        return hit[1]
    found = sorted(glob.glob(pattern))
    if time.time() - st.st_mtime >= 2:
        if len(_GLOBS) > 64:
            _GLOBS.clear()
        _GLOBS[pattern] = (stamp, found)
    return found


def _match_patterns(name: str, patterns: List[str]) -> bool:
    found = False
    for pat in ",".join(patterns).split(","):
        pat = pat.strip()
        if not pat:
            continue
        if pat.startswith("!"):
            if fnmatch.fnmatchcase(name, pat[1:]):
                return False
        elif fnmatch.fnmatchcase(name, pat):
            found = True
    return found


class _Reader:
    def __init__(self, host: str, user: Optional[str], home: str):
        self.host = host
        self.user = user
        self.home = home
        self.options: Dict[str, List[str]] = {}
        self.depth = 0

    def read(self, path: str, base: str) -> None:
        if self.depth > 16:
            return
        lines = _parsed(path)
        if lines is None:
            return
        self.depth += 1
        active = True
        for key, args in lines:
            if key == "host":
                active = _match_patterns(self.host, args)
            elif key == "match":
                active = self._match(args)
            elif key == "include":
                if active:
                    for pattern in args:
                        pattern = os.path.expanduser(pattern)
                        if not os.path.isabs(pattern):
                            pattern = os.path.join(base, pattern)
                        for inc in _glob(pattern):
                            self.read(inc, base)
            elif active and key in _WANTED and args:
                if key in ("identityfile", "certificatefile"):  # each one counts
                    self.options.setdefault(key, []).append(args[0])
                elif key not in self.options:
                    self.options[key] = [" ".join(args)]
        self.depth -= 1

    def _match(self, args: List[str]) -> bool:
        i = 0
        while i < len(args):
            crit = args[i].lower()
            if crit == "all":
                i += 1
                continue
            if crit in ("canonical", "final"):
                i += 1
                continue
            if i + 1 >= len(args):
                return False
            value = args[i + 1].split(",")
            negate = crit.startswith("!")
            crit = crit.lstrip("!")
            if crit in ("host", "originalhost"):
                ok = _match_patterns(self.host, value)
            elif crit == "user":
                ok = self.user is not None and _match_patterns(self.user, value)
            elif crit == "localuser":
                ok = _match_patterns(getpass.getuser(), value)
            else:
                ok = False  # exec, address, localnetwork, tagged...: not evaluated here
            if ok == negate:
                return False
            i += 2
        return True


def lookup(
    host: str,
    *,
    user: Optional[str] = None,
    config: Union[bool, str, os.PathLike[str]] = True,
    home: Optional[str] = None,
) -> Dict[str, List[str]]:
    """The options of interest for `host`, from ~/.ssh/config then /etc/ssh/ssh_config
    (``config=True``) or from one file (``config=path``)."""
    home = home or os.path.expanduser("~")
    r = _Reader(host, user, home)
    if config is True:
        r.read(os.path.join(home, ".ssh", "config"), os.path.join(home, ".ssh"))
        r.read(SYSTEM_CONFIG, os.path.dirname(SYSTEM_CONFIG))
    elif config:
        path = os.fspath(config)
        r.read(path, os.path.join(home, ".ssh"))
    return r.options


def expand_identity(path: str, *, host: str, user: str, port: int, home: str) -> str:
    """Expand ~ and the %-tokens OpenSSH allows in IdentityFile."""
    if path.startswith("~"):
        path = home + path[1:]
    tokens = {
        "%": "%",
        "d": home,
        "u": getpass.getuser(),
        "l": socket.gethostname().split(".")[0],
        "h": host,
        "r": user,
        "p": str(port),
    }
    out, i = [], 0
    while i < len(path):
        c = path[i]
        if c == "%" and i + 1 < len(path) and path[i + 1] in tokens:
            out.append(tokens[path[i + 1]])
            i += 2
        else:
            out.append(c)
            i += 1
    path = "".join(out)
    if not os.path.isabs(path):
        path = os.path.join(home, ".ssh", path)
    return path


_TIME_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_TIME_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw]?)", re.IGNORECASE)


def seconds(value: str) -> float:
    """A time in OpenSSH's format (``30``, ``90s``, ``1m30s``; a fraction too) in
    seconds; ValueError if it is not one."""
    text = value.strip()
    parts = _TIME_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts).lower() != text.lower():
        raise ValueError(f"not a time: {value!r}")
    return sum(float(n) * _TIME_UNITS[u.lower()] for n, u in parts)


def yes_no(options: Dict[str, List[str]], key: str, name: str) -> bool:
    """A yes/no option from what :func:`lookup` found (absent: no); ValueError naming
    the option for another value, which OpenSSH refuses too."""
    raw = options.get(key)
    if not raw:
        return False
    value = raw[0].lower()
    if value not in ("yes", "no"):
        raise ValueError(f"{name} in the ssh configuration is not yes or no: {raw[0]!r}")
    return value == "yes"


def keepalive(options: Dict[str, List[str]]) -> Tuple[Optional[float], Optional[int]]:
    """``ServerAliveInterval`` in seconds and ``ServerAliveCountMax`` from what
    :func:`lookup` found (None where absent); ValueError naming the option for a
    value OpenSSH would refuse too."""
    interval = count = None
    raw = options.get("serveraliveinterval")
    if raw:
        try:
            interval = seconds(raw[0])
        except ValueError:
            raise ValueError(
                f"ServerAliveInterval in the ssh configuration is not a time: {raw[0]!r}"
            ) from None
    raw = options.get("serveralivecountmax")
    if raw:
        if not raw[0].isdigit():
            raise ValueError(
                f"ServerAliveCountMax in the ssh configuration is not a number: {raw[0]!r}"
            )
        count = int(raw[0])
    return interval, count
