"""known_hosts, read and written the way OpenSSH does it.

libssh 0.11 reads known_hosts itself, but not well enough to decide on: it skips
``@revoked`` and ``@cert-authority`` lines, a malformed line for the host makes it
report the host as unknown (so a changed key would be taken as a new one), a line
longer than 8 KiB ends the reading, and a ``!negated`` pattern never vetoes the
line's other patterns. pyssh decides here instead, following OpenSSH 9
(hostfile.c, match.c, sshconnect.c):

- A line is ``[@marker] hosts keytype base64 [comment]``, fields separated by
  spaces or tabs; ``#`` comments and blank lines are skipped, and so is any line
  that does not parse (bad marker, bad key, bad hash), never an error.
- ``hosts`` is either one hashed name ``|1|base64(salt)|base64(HMAC-SHA1(salt,
  name))`` or comma-separated patterns with ``*``, ``?`` and ``!negation``; a
  negated pattern that matches rejects the whole line. Patterns are compared in
  lower case. A host on port 22 is looked up as ``host``, on another port as
  ``[host]:port``.
- A key in a matching ``@revoked`` line is refused, whatever else the files say.
- Otherwise a matching plain line with the same key makes the host known; a
  plain line with another key makes it changed; ``@cert-authority`` lines only
  matter to host certificates, which pyssh does not verify yet.
- A host not found as ``[host]:port`` is known too if a plain line for the bare
  ``host`` has its key, as OpenSSH 9 does (a key recorded by ``ssh-keyscan``
  without ``-p``), and refused if the bare name's ``@revoked`` line has it.

Writing appends one line under an exclusive lock (flock, or msvcrt.locking on
Windows) after checking again under the lock, starts it on a line of its own when
the file does not end with a newline, and hashes the name when asked to
(``HashKnownHosts yes``) or when every entry of the file is hashed already.
Everything read from the files is untrusted input: nothing here raises on it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import struct
import sys
import threading
import time
from dataclasses import dataclass
from typing import (
    TYPE_CHECKING,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Optional,
    Sequence,
    Tuple,
)

if TYPE_CHECKING:
    from . import _keys

__all__ = [
    "Entry",
    "Verdict",
    "lookup_name",
    "parse_line",
    "host_matches",
    "match_pattern",
    "match_pattern_list",
    "hash_name",
    "check",
    "append",
    "global_files",
    "OK",
    "NEW",
    "CHANGED",
    "REVOKED",
    "CA_ONLY",
]

# the outcomes of check()
OK = "ok"  # a plain line has this key
NEW = "new"  # nothing known about the host
CHANGED = "changed"  # plain lines for the host, none with this key
REVOKED = "revoked"  # an @revoked line for the host has this key
CA_ONLY = "ca-only"  # only @cert-authority lines name the host: needs a certificate

_MARKERS = {"@cert-authority": "cert-authority", "@revoked": "revoked"}
_HASH_MAGIC = "|1|"
_SHA1_LEN = 20
_MAX_SUBPATTERN = 1023  # OpenSSH's match_pattern_list gives up on longer ones
_MAX_LINE = 1 << 20  # a line this long is not a key: skipped unread


@dataclass(frozen=True)
class Entry:
    """One parsed line: ``marker`` is None, "revoked" or "cert-authority"."""

    marker: Optional[str]
    hosts: str
    key_type: str
    blob: bytes
    path: str = ""
    lineno: int = 0


@dataclass(frozen=True)
class Verdict:
    """What the files say about one key for one host. ``entry`` is the line that
    decided (the matching, revoking or conflicting one), if any."""

    status: str
    entry: Optional[Entry] = None
    other_types: Tuple[str, ...] = ()  # CHANGED: types of the keys on file


# ---- names and patterns -------------------------------------------------------


def lookup_name(host: str, port: int) -> str:
    """The name a host is filed under: ``host`` on port 22, else ``[host]:port``
    (lower case, as OpenSSH and libssh write and compare it)."""
    host = host.lower()
    return host if port == 22 else f"[{host}]:{port}"


def match_pattern(s: str, pattern: str) -> bool:
    """OpenSSH's match_pattern: ``*`` matches any run, ``?`` one character,
    everything else itself. Greedy with one backtrack point, so a hostile pattern
    costs O(len(s) * len(pattern)), not exponential time."""
    i = j = 0
    star_j, star_i = -1, 0
    while i < len(s):
        if j < len(pattern) and pattern[j] == "*":
            star_j, star_i = j, i
            j += 1
        elif j < len(pattern) and (pattern[j] == "?" or pattern[j] == s[i]):
            i += 1
            j += 1
        elif star_j >= 0:
            star_i += 1
            i, j = star_i, star_j + 1
        else:
            return False
    return all(c == "*" for c in pattern[j:])


def match_pattern_list(name: str, patterns: str) -> int:
    """OpenSSH's match_pattern_list with lower-casing: 1 if a pattern matches,
    -1 if a negated one does (which wins), 0 otherwise."""
    positive = 0
    for sub in patterns.split(","):
        negated = sub.startswith("!")
        if negated:
            sub = sub[1:]
        if len(sub) >= _MAX_SUBPATTERN:
            return 0
        if match_pattern(name, sub.lower()):
            if negated:
                return -1
            positive = 1
    return positive


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_name(name: str, salt: Optional[bytes] = None) -> str:
    """``|1|salt|hmac`` for `name`, as HashKnownHosts writes it (a new random
    salt unless one is given)."""
    if salt is None:
        salt = os.urandom(_SHA1_LEN)
    digest = hmac.new(salt, name.encode("utf-8"), hashlib.sha1).digest()
    return f"{_HASH_MAGIC}{_b64(salt)}|{_b64(digest)}"


def _hashed_salt(hosts: str) -> Optional[bytes]:
    """The salt of a hashed name, None if it is not a valid one (OpenSSH's
    extract_salt: magic, 1 to 1024 characters of base64 giving 20 bytes)."""
    if not hosts.startswith(_HASH_MAGIC):
        return None
    text, sep, _ = hosts[len(_HASH_MAGIC) :].partition("|")
    if not sep or not 0 < len(text) <= 1024:
        return None
    try:
        salt = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return salt if len(salt) == _SHA1_LEN else None


def host_matches(name: str, hosts: str) -> bool:
    """Whether a line's host field names `name` (already lower case, with
    ``[...]:port``). A hashed field is recomputed with its salt and compared
    whole, as OpenSSH does; an invalid hash matches nothing."""
    if hosts.startswith("|"):
        salt = _hashed_salt(hosts)
        return salt is not None and hash_name(name, salt) == hosts
    return match_pattern_list(name, hosts) == 1


# ---- lines ---------------------------------------------------------------------------

_RSA_SIG_NAMES = ("rsa-sha2-256", "rsa-sha2-512")  # OpenSSH reads them as ssh-rsa


def _ssh_strings(blob: bytes) -> Optional[List[bytes]]:
    """The blob as SSH wire strings (uint32 length, bytes), None unless it is
    exactly a sequence of them."""
    out, i = [], 0
    while i < len(blob):
        if i + 4 > len(blob):
            return None
        (n,) = struct.unpack(">I", blob[i : i + 4])
        if i + 4 + n > len(blob):
            return None
        out.append(blob[i + 4 : i + 4 + n])
        i += 4 + n
    return out


def blob_type(blob: bytes) -> Optional[str]:
    """The key type a public key blob names (its first string), None if the blob
    is not a well-formed key: at least a type and one more field."""
    parts = _ssh_strings(blob)
    if parts is None or len(parts) < 2 or not parts[0]:
        return None
    try:
        return parts[0].decode("ascii")
    except UnicodeDecodeError:
        return None


def _decode_key(key_type: str, text: str) -> Optional[bytes]:
    try:
        blob = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    if _b64(blob) != text:
        return None  # extra or missing padding, stray bits: OpenSSH's b64_pton refuses them
    inner = blob_type(blob)
    if inner is None:
        return None
    if inner != key_type and not (inner == "ssh-rsa" and key_type in _RSA_SIG_NAMES):
        return None  # OpenSSH: key type mismatch, the line is invalid
    return blob


def _split_fields(text: str) -> List[str]:
    return text.replace("\t", " ").split()


def parse_line(line: str, path: str = "", lineno: int = 0) -> Optional[Entry]:
    """One line of a known_hosts file, or None for a comment, a blank line or a
    line OpenSSH would skip (unknown or repeated marker, missing fields, a key
    that does not decode or whose type disagrees with its blob)."""
    fields = _split_fields(line.rstrip("\r\n"))
    if not fields or fields[0].startswith("#"):
        return None
    marker = None
    if fields[0].startswith("@"):
        # OpenSSH wants the marker followed by a space; a tab is taken here too,
        # so that a revocation is never silently dropped over whitespace
        marker = _MARKERS.get(fields.pop(0))
        if marker is None or not fields or fields[0].startswith("@"):
            return None
    if len(fields) < 3 or fields[1].startswith("#"):
        return None
    hosts, key_type, text = fields[0], fields[1], fields[2]
    blob = _decode_key(key_type, text)
    if blob is None:
        return None
    return Entry(marker, hosts, key_type, blob, path, lineno)


def _read_lines(path: str) -> Iterator[Tuple[int, str]]:
    """The file's lines (numbered from 1); nothing if it cannot be read, as for
    OpenSSH a missing or unreadable known_hosts file is just empty."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except (OSError, ValueError):
        return
    for n, raw in enumerate(data.split(b"\n"), 1):
        if len(raw) <= _MAX_LINE:
            yield n, raw.decode("utf-8", "replace")


class _FileIndex:
    """One file's valid lines, with the names its plain lines give (a dict: a big
    known_hosts is not scanned for each host) and the lines to match one by one
    (wildcards, negations, hashed names); each name's lines are remembered once
    found (a connection looks its host up several times)."""

    def __init__(self, entries: List[Entry]):
        self.entries = entries
        self.exact: Dict[str, List[int]] = {}
        self.scan: List[int] = []
        self.found: Dict[str, List[Entry]] = {}
        self.hashed: List[Tuple[int, bytes, bytes]] = []  # (line, salt, HMAC-SHA1)
        for i, e in enumerate(entries):
            subs = e.hosts.split(",")
            if e.hosts.startswith("|"):
                self._add_hashed(i, e.hosts)
            elif any(
                "*" in x or "?" in x or x.startswith("!") or len(x) >= _MAX_SUBPATTERN for x in subs
            ):
                self.scan.append(i)
                continue
            for x in dict.fromkeys(x.lower() for x in subs):
                self.exact.setdefault(x, []).append(i)

    def _add_hashed(self, i: int, hosts: str) -> None:
        """A hashed name, as its salt and digest, matched by one HMAC each (as
        host_matches would: only a field exactly as hash_name writes it matches)."""
        salt = _hashed_salt(hosts)
        if salt is None:
            return  # an invalid hash matches nothing
        try:
            digest = base64.b64decode(hosts.rsplit("|", 1)[1], validate=True)
        except (binascii.Error, ValueError):
            return
        if f"{_HASH_MAGIC}{_b64(salt)}|{_b64(digest)}" == hosts:
            self.hashed.append((i, salt, digest))

    def named(self, name: str) -> List[Entry]:
        """The lines that name `name` (lower case, ``[host]:port``), in file order."""
        hit = self.found.get(name)
        if hit is None:
            rows = set(self.exact.get(name, ()))
            rows.update(i for i in self.scan if host_matches(name, self.entries[i].hosts))
            raw = name.encode("utf-8")
            rows.update(i for i, salt, d in self.hashed if hmac.digest(salt, raw, "sha1") == d)
            hit = [self.entries[i] for i in sorted(rows)]
            if len(self.found) < 4096:
                self.found[name] = hit
        return hit


_PARSED: Dict[str, Tuple[Tuple[int, int, int], _FileIndex]] = {}


def _file_index(path: str) -> _FileIndex:
    """The valid lines of one file, parsed once while it stays the same file with the
    same size and time (a Group checks one file for each of its hosts). As git does, a
    file changed in the last 2 seconds is always read again: a same-size rewrite within
    the file system's timestamp granularity would not show."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return _FileIndex([])
    stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
    hit = _PARSED.get(path)
    if hit is not None and hit[0] == stamp:
        return hit[1]
    entries = []
    for n, line in _read_lines(path):
        entry = parse_line(line, path, n)
        if entry is not None:
            entries.append(entry)
    index = _FileIndex(entries)
    if time.time() - st.st_mtime >= 2:
        if len(_PARSED) > 64:
            _PARSED.clear()
        _PARSED[path] = (stamp, index)
    return index


def read_entries(paths: Iterable[str]) -> List[Entry]:
    """Every valid line of the files, in order."""
    out: List[Entry] = []
    for path in paths:
        out.extend(_file_index(path).entries)
    return out


def named(paths: Iterable[str], name: str) -> List[Entry]:
    """The lines of the files that name `name` (lower case, ``[host]:port``), in order."""
    out: List[Entry] = []
    for path in paths:
        out.extend(_file_index(path).named(name))
    return out


# ---- deciding -------------------------------------------------------------------------


def _judge(entries: Sequence[Entry], blob: bytes) -> Verdict:
    """OpenSSH's check_hostkeys_by_key_or_type for a plain key, over the lines
    that name the host: a revocation wins, then a plain line with this key, then
    any other plain line (changed); a host named only by @cert-authority lines
    is CA_ONLY (it would need a certificate)."""
    for e in entries:
        if e.marker == "revoked" and e.blob == blob:
            return Verdict(REVOKED, e)
    plain = [e for e in entries if e.marker is None]
    for e in plain:
        if e.blob == blob:
            return Verdict(OK, e)
    if plain:
        return Verdict(CHANGED, plain[0], tuple(dict.fromkeys(e.key_type for e in plain)))
    ca = [e for e in entries if e.marker == "cert-authority"]
    return Verdict(CA_ONLY, ca[0]) if ca else Verdict(NEW)


def check(paths: Sequence[str], host: str, port: int, blob: bytes) -> Verdict:
    """What the known_hosts files `paths` say about the key `blob` (the server's
    public key, as sent) of `host` on `port`."""
    verdict = _judge(named(paths, lookup_name(host, port)), blob)
    if verdict.status == NEW and port != 22:
        # OpenSSH 9 also accepts (or refuses) the key as filed under the bare
        # host name; a different key there does not make the host "changed"
        fallback = _judge(named(paths, host.lower()), blob)
        if fallback.status in (OK, REVOKED):
            return fallback
    return verdict


# ---- host certificates -----------------------------------------------------------------

HOST_CERT_ALGORITHMS = (  # OpenSSH's order; offered first when a CA is known for the host
    "ssh-ed25519-cert-v01@openssh.com",
    "ecdsa-sha2-nistp256-cert-v01@openssh.com",
    "ecdsa-sha2-nistp384-cert-v01@openssh.com",
    "ecdsa-sha2-nistp521-cert-v01@openssh.com",
    "rsa-sha2-512-cert-v01@openssh.com",
    "rsa-sha2-256-cert-v01@openssh.com",
)
# libssh 0.11's default host key algorithms (kex.c DEFAULT_HOSTKEYS), after the above
DEFAULT_HOST_KEY_ALGORITHMS = (
    "ssh-ed25519",
    "ecdsa-sha2-nistp521",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp256",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
    "rsa-sha2-512",
    "rsa-sha2-256",
)
# OpenSSH's default CASignatureAlgorithms: not ssh-rsa (SHA-1)
_CA_SIGNATURE_ALGORITHMS = (
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "rsa-sha2-512",
    "rsa-sha2-256",
)


def host_entries(paths: Sequence[str], host: str, port: int) -> List[Entry]:
    """The lines that name the host: as ``[host]:port`` (or ``host`` on port 22),
    then, on another port, those for the bare host name (as check() falls back)."""
    found = list(named(paths, lookup_name(host, port)))
    if port != 22:
        found += [e for e in named(paths, host.lower()) if e not in found]
    return found


def trusted_cas(paths: Sequence[str], host: str, port: int) -> List[Entry]:
    """The @cert-authority lines for the host."""
    return [e for e in host_entries(paths, host, port) if e.marker == "cert-authority"]


def certificate_revoked(
    paths: Sequence[str], host: str, port: int, key_blob: bytes, ca_blob: bytes
) -> Optional[Entry]:
    """The @revoked line for the host that names the certified key or its CA."""
    for e in host_entries(paths, host, port):
        if e.marker == "revoked" and e.blob in (key_blob, ca_blob):
            return e
    return None


def certificate_problem(
    cert: _keys.Certificate, host: str, now: float, signature_ok: Callable[[], bool]
) -> Optional[str]:
    """Why a host certificate whose CA is trusted is not valid for `host` now (None
    if it is), checked as OpenSSH's check_host_cert does: a host certificate, a
    CA signature algorithm it accepts, a valid signature, the validity window
    (no clock skew allowed), a principal matching the host name (patterns
    allowed; no principals means any host), no critical options."""
    if cert.cert_type != 2:
        return "it is a user certificate, not a host certificate (ssh-keygen -s without -h)"
    alg = blob_type(cert.signature) or ""
    if alg not in _CA_SIGNATURE_ALGORITHMS:
        return f"its CA signed it with {alg[:40]!r}, which OpenSSH no longer accepts"
    if not signature_ok():
        return "the CA's signature over it is not valid (forged or corrupted)"
    problem = cert.validity_problem(now)
    if problem:
        return problem
    name = host.lower()
    if cert.principals and not any(match_pattern(name, p) for p in cert.principals):
        return f"its principals ({', '.join(cert.principals)[:200]}) do not include {name!r}"
    if cert.critical_options:
        return "it has critical options, which no host certificate may have"
    return None


def global_files() -> List[str]:
    """OpenSSH's default GlobalKnownHostsFile."""
    if sys.platform == "win32":
        base = os.path.join(os.environ.get("PROGRAMDATA", r"C:\ProgramData"), "ssh")
    else:
        base = "/etc/ssh"
    return [os.path.join(base, "ssh_known_hosts"), os.path.join(base, "ssh_known_hosts2")]


# ---- writing ---------------------------------------------------------------------------

_LOCK_TIMEOUT = 10.0
# flock() excludes other open files, fcntl()'s POSIX locks only other processes
# (and NFS may turn flock into those): threads of this process also take this
_process_lock = threading.Lock()


def _lock_file(fd: int) -> None:
    """An exclusive lock on the open file, waited for at most _LOCK_TIMEOUT
    seconds (in short sleeps, so that Ctrl-C still works); OSError after that."""
    import time

    end = time.monotonic() + _LOCK_TIMEOUT
    while True:
        try:
            if sys.platform == "win32":
                import msvcrt

                # a byte far past the end: appends never touch it, so writers
                # that do not lock (other programs) are not blocked by it
                os.lseek(fd, 0x7FFFFFFE, os.SEEK_SET)
                msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            else:
                import fcntl

                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError:
            if time.monotonic() >= end:
                raise
            time.sleep(0.02)


def _ends_without_newline(fd: int) -> bool:
    size = os.fstat(fd).st_size
    if size == 0:
        return False
    os.lseek(fd, size - 1, os.SEEK_SET)
    return os.read(fd, 1) != b"\n"


def all_hashed(path: str) -> bool:
    """Whether the file's host entries (marker lines aside) are all hashed, and
    there is at least one: then a new entry is hashed too, so as not to put
    plain names back into a file someone hashed with ``ssh-keygen -H``."""
    entries = [e for e in read_entries([path]) if e.marker is None]
    return bool(entries) and all(e.hosts.startswith("|") for e in entries)


def _write_all(fd: int, data: bytes) -> None:
    while data:
        n = os.write(fd, data)
        data = data[n:]


def append(
    path: str, host: str, port: int, blob: bytes, *, hash_names: bool, check_paths: Sequence[str]
) -> Verdict:
    """Record `blob` for the host in `path`, under the file's lock, unless the
    files `check_paths`, read again under the lock, now know the host (another
    writer was first) or revoke the key: that verdict is returned, and only a NEW
    one leads to writing. OSError if the file cannot be written."""
    key_type = blob_type(blob)
    if key_type is None:
        raise ValueError("not a public key blob")
    os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
    flags = (
        os.O_RDWR
        | os.O_CREAT
        | os.O_APPEND
        | getattr(os, "O_BINARY", 0)
        | getattr(os, "O_CLOEXEC", 0)
    )
    with _process_lock:
        fd = os.open(path, flags, 0o666)
        try:
            _lock_file(fd)
            verdict = check(check_paths, host, port, blob)
            if verdict.status != NEW:
                return verdict
            name = lookup_name(host, port)
            if hash_names or all_hashed(path):
                name = hash_name(name)
            line = f"{name} {key_type} {_b64(blob)}\n".encode()
            _write_all(fd, (b"\n" if _ends_without_newline(fd) else b"") + line)
            return verdict
        finally:
            os.close(fd)  # also releases the lock
