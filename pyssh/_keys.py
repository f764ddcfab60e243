"""Keys: make, read and save SSH keys (the R package's key helpers), list an agent's
keys, and read user certificates. The key work is libssh's (pyssh._ssh.Key); the
wire formats parsed here (an agent's answer, a certificate) are checked length by
length, as anything from outside is."""

from __future__ import annotations

import base64
import binascii
import datetime
import getpass
import hashlib
import os
import socket
import struct
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple, Union

from . import _ssh
from .errors import PrivateKeyError, SSHError

__all__ = ["Key", "generate_key", "read_key", "agent_keys", "Certificate", "read_certificate"]

PathType = Union[str, "os.PathLike[str]"]
Secret = Union[str, Callable[[str], str]]

_ECDSA_BITS = {"nistp256": 256, "nistp384": 384, "nistp521": 521}
_CERT_SUFFIX = "-cert-v01@openssh.com"
# the public key's fields after its type name, per type (PROTOCOL.certkeys)
_KEY_FIELDS = {
    "ssh-ed25519": 1,
    "ssh-rsa": 2,
    "ssh-dss": 4,
    "ecdsa-sha2-nistp256": 2,
    "ecdsa-sha2-nistp384": 2,
    "ecdsa-sha2-nistp521": 2,
    "sk-ssh-ed25519@openssh.com": 2,
    "sk-ecdsa-sha2-nistp256@openssh.com": 3,
}
_FOREVER = 0xFFFFFFFFFFFFFFFF


class _Reader:
    """SSH wire format (RFC 4251): every length checked against what is left."""

    def __init__(self, data: bytes, what: str):
        self.data, self.pos, self.what = data, 0, what

    def take(self, n: int) -> bytes:
        if n < 0 or n > len(self.data) - self.pos:
            raise ValueError(f"{self.what} is truncated or malformed")
        self.pos += n
        return self.data[self.pos - n : self.pos]

    def u32(self) -> int:
        value: int = struct.unpack(">I", self.take(4))[0]
        return value

    def u64(self) -> int:
        value: int = struct.unpack(">Q", self.take(8))[0]
        return value

    def string(self) -> bytes:
        return self.take(self.u32())

    def text(self) -> str:
        return self.string().decode("utf-8", "replace")

    def end(self) -> bool:
        return self.pos == len(self.data)


def _string(b: bytes) -> bytes:
    return struct.pack(">I", len(b)) + b


class Key(_ssh.Key):
    """An SSH key: made by :func:`generate_key`, read by :func:`read_key`, listed by
    :func:`agent_keys`. A private key can be saved and passed to ``connect(keyfile=)``;
    ``has_private`` is False for a public key only (a ``.pub`` file, an agent's key)."""

    comment: str = ""  # a plain attribute: the .pub line's comment

    @property
    def type(self) -> str:
        """The key's type as OpenSSH names it (``"ssh-ed25519"``, ``"ecdsa-sha2-nistp256"``)."""
        return self._public()[0]

    def blob(self) -> bytes:
        """The public key in SSH wire format (what fingerprints hash)."""
        return base64.b64decode(self._public()[1])

    @property
    def bits(self) -> int:
        """The key's size in bits, as ``ssh-keygen -l`` shows it."""
        name = self.type
        if name.startswith("ecdsa-"):
            return _ECDSA_BITS.get(name.rsplit("-", 1)[1], 0)
        if name == "ssh-rsa":
            r = _Reader(self.blob(), "the public key")
            r.string()
            r.string()  # e
            return int.from_bytes(r.string(), "big").bit_length()
        return 256

    def public_line(self) -> str:
        """The public key as a line of a ``.pub`` file or of ``authorized_keys``."""
        name, b64 = self._public()
        return f"{name} {b64} {self.comment}".rstrip()

    def fingerprint(self, hash: str = "sha256") -> str:
        """``"SHA256:..."`` (or ``"MD5:aa:bb:..."``), exactly as ``ssh-keygen -l`` prints it."""
        if hash.lower() == "sha256":
            digest = hashlib.sha256(self.blob()).digest()
            return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")
        if hash.lower() == "md5":
            digest = hashlib.md5(self.blob(), usedforsecurity=False).digest()
            return "MD5:" + ":".join(f"{b:02x}" for b in digest)
        raise ValueError(f'hash must be "sha256" or "md5", not {hash!r}')

    def save(
        self,
        path: PathType,
        passphrase: Optional[str] = None,
        *,
        overwrite: bool = False,
        public: bool = True,
    ) -> None:
        """Write the private key to ``path`` in OpenSSH format, mode 0600, encrypted
        with ``passphrase`` if given, and (``public=True``) its ``.pub`` beside it, as
        ssh-keygen does. An existing file is FileExistsError unless ``overwrite=True``."""
        path = os.path.expanduser(os.fspath(path))
        if passphrase is not None and not isinstance(passphrase, str):
            raise TypeError(f"passphrase must be a str, not {type(passphrase).__name__}")
        targets = [path] + ([path + ".pub"] if public else [])
        for p in targets if not overwrite else []:
            if os.path.lexists(p):
                raise FileExistsError(17, f"{p} exists: pass overwrite=True to replace it", p)
        text = self._private_text(passphrase or None)
        _write_atomically(path, text, 0o600)
        if public:
            _write_atomically(path + ".pub", (self.public_line() + "\n").encode(), 0o644)

    def __repr__(self) -> str:
        what = "private" if self.has_private else "public"
        return (
            f"<pyssh.Key {self.type} {self.bits} bits {self.fingerprint()} "
            f"{self.comment!r} ({what})>"
        )


def _write_atomically(path: str, data: bytes, mode: int) -> None:
    """Write a temporary file in the same directory with `mode` from the start (a
    private key is never readable by others, not even for a moment), then rename."""
    directory = os.path.dirname(path) or "."
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def generate_key(
    type: str = "ed25519", bits: Optional[int] = None, comment: Optional[str] = None
) -> Key:
    """A new private key: ``"ed25519"``, ``"ecdsa"`` (bits 256, 384 or 521; default 256)
    or ``"rsa"`` (bits >= 2048, default 3072). The comment defaults to user@host."""
    kind = type.lower()
    if kind == "ed25519":
        if bits not in (None, 256):
            raise ValueError("an ed25519 key has 256 bits: leave bits out")
        size = 256
    elif kind == "ecdsa":
        size = 256 if bits is None else bits
        if size not in (256, 384, 521):
            raise ValueError(f"an ecdsa key has 256, 384 or 521 bits, not {bits}")
    elif kind == "rsa":
        size = 3072 if bits is None else bits
        if not isinstance(size, int) or size < 2048 or size > 16384:
            raise ValueError(f"an rsa key has 2048 to 16384 bits, not {bits}")
    else:
        raise ValueError(f'type must be "ed25519", "ecdsa" or "rsa", not {type!r}')
    key = Key._generate(kind, size)
    assert isinstance(key, Key)
    key.comment = _default_comment() if comment is None else comment
    return key


def _default_comment() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "user"
    return f"{user}@{socket.gethostname()}"


def _public_from_line(line: str, what: str) -> Key:
    fields = line.split(None, 2)
    key = Key._from_public(fields[0], fields[1]) if len(fields) >= 2 else None
    if not isinstance(key, Key):
        raise PrivateKeyError(f"{what} is not a key pyssh can read")
    key.comment = fields[2].strip() if len(fields) > 2 else ""
    return key


def _private_from_text(text: bytes, passphrase: Optional[Secret], label: str) -> Key:
    key = Key._from_private(text)
    if key == _ssh.KEY_ENCRYPTED:
        if passphrase is None:
            raise PrivateKeyError(
                f"the key {label} is encrypted: pass passphrase= (a str or a callable)"
            )
        pp = (
            passphrase(f"Enter passphrase for key '{label}': ")
            if callable(passphrase)
            else passphrase
        )
        if isinstance(pp, bytes):
            pp = pp.decode()
        if not isinstance(pp, str):
            raise TypeError(f"the passphrase callable must return a str, not {type(pp).__name__}")
        key = Key._from_private(text, pp)
        if not isinstance(key, Key):
            raise PrivateKeyError(f"cannot use the key {label}: wrong passphrase")
    if not isinstance(key, Key):
        raise PrivateKeyError(
            f"cannot use the key {label}: not a private key pyssh can read (PEM or OpenSSH format)"
        )
    key.comment = ""
    return key


def read_key(path_or_text: Union[PathType, bytes], passphrase: Optional[Secret] = None) -> Key:
    """A key from a file (a private key, or a ``.pub``) or from the key's text itself.
    An encrypted key is opened with ``passphrase`` (a str, or a callable(prompt) -> str).
    Raises PrivateKeyError (a ValueError) for what is not a key, or a wrong passphrase;
    a private key's comment is taken from its ``.pub`` beside it, if there is one."""
    path: Optional[str] = None
    if isinstance(path_or_text, bytes) and (b"-----BEGIN" in path_or_text or b"\n" in path_or_text):
        text = path_or_text
    elif isinstance(path_or_text, str) and ("-----BEGIN" in path_or_text or "\n" in path_or_text):
        text = path_or_text.encode()
    elif isinstance(path_or_text, str) and path_or_text.split(None, 1)[:1] in (
        [t] for t in _KEY_FIELDS
    ):
        return _public_from_line(path_or_text, "the text")
    else:
        path = os.path.expanduser(os.fsdecode(path_or_text))
        with open(path, "rb") as f:
            text = f.read(1 << 20)
    label = path or "<key given as text>"
    try:
        if b"-----BEGIN" not in text:
            return _public_from_line(text.decode("utf-8", "replace").strip(), label)
        key = _private_from_text(text.strip() + b"\n", passphrase, label)
    except PrivateKeyError as e:
        setattr(e, "path", path)  # noqa: B010 (the stub's class has no such attribute)
        raise
    if path is not None and os.path.exists(path + ".pub"):
        try:
            with open(path + ".pub") as f:
                pub = _public_from_line(f.read(), path + ".pub")
            if pub.blob() == key.blob():
                key.comment = pub.comment
        except (OSError, ValueError):
            pass  # the comment is a nicety: the key itself was read
    return key


def agent_keys(socket_path: Optional[PathType] = None, timeout: float = 10.0) -> List[Key]:
    """The keys of the running ssh-agent (at ``SSH_AUTH_SOCK``, or ``socket_path``), as
    ``ssh-add -l`` lists them: public keys with their comments. SSHError if there is
    no agent or it does not answer."""
    where = os.fspath(socket_path) if socket_path is not None else os.environ.get("SSH_AUTH_SOCK")
    if not where:
        raise SSHError("SSH_AUTH_SOCK is unset: there is no agent to ask")
    family = getattr(socket, "AF_UNIX", None)
    if family is None:  # Windows' OpenSSH agent is a named pipe
        raise SSHError("agent_keys() needs a Unix socket: not supported on this system")
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(os.path.expanduser(where))
            s.sendall(struct.pack(">IB", 1, 11))  # SSH2_AGENTC_REQUEST_IDENTITIES
            answer = _recv_message(s)
        except OSError as e:
            raise SSHError(f"cannot ask the agent at {where}: {e.strerror or e}") from e
    try:
        return _parse_identities(answer)
    except ValueError as e:  # _Reader: a length beyond the answer
        raise SSHError(f"the agent at {where} sent a malformed answer: {e}") from None


def _recv_exactly(s: socket.socket, n: int) -> bytes:
    chunks = []
    while n:
        chunk = s.recv(min(n, 65536))
        if not chunk:
            raise ConnectionError(0, "the agent closed the connection")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _recv_message(s: socket.socket) -> bytes:
    (n,) = struct.unpack(">I", _recv_exactly(s, 4))
    if n == 0 or n > 256 * 1024:  # OpenSSH's agent limit (AGENT_MAX_LEN)
        raise ConnectionError(0, f"the agent sent a message of {n} bytes")
    return _recv_exactly(s, n)


def _parse_identities(answer: bytes) -> List[Key]:
    r = _Reader(answer, "the agent's answer")
    if r.take(1) != b"\x0c":  # SSH2_AGENT_IDENTITIES_ANSWER
        raise SSHError("the agent refused to list its keys")
    count = r.u32()
    if count > 4096:
        raise SSHError(f"the agent claims {count} keys")
    keys = []
    for _ in range(count):
        blob, comment = r.string(), r.text()
        name = _Reader(blob, "a key of the agent").text()
        key = Key._from_public(name, base64.b64encode(blob).decode())
        if isinstance(key, Key):  # a type libssh does not know is left out
            key.comment = comment
            keys.append(key)
    if not r.end():
        raise SSHError("the agent's answer has bytes after its keys")
    return keys


# ---- user certificates (OpenSSH's PROTOCOL.certkeys) ----------------------------------------


@dataclass(frozen=True)
class Certificate:
    """What pyssh reads of a user certificate: enough to pair it with its key and to
    explain a refusal. Not verified: the server checks the signature."""

    path: str
    type: str
    key_blob: bytes  # the certified public key, as a plain key's blob
    key_id: str
    principals: Tuple[str, ...]
    valid_after: int
    valid_before: int
    cert_type: int = 1  # 1 user, 2 host
    critical_options: bytes = b""  # their wire encoding: empty when there are none
    ca_blob: bytes = b""  # the signing CA's public key blob
    signed: bytes = b""  # what the CA signed: the blob up to its signature
    signature: bytes = b""  # the CA's signature blob (string algorithm, string sig)

    def validity_problem(self, now: Optional[float] = None) -> Optional[str]:
        """Why the certificate is not valid now (expired, not yet valid), or None."""
        t = int(datetime.datetime.now().timestamp() if now is None else now)
        if t < self.valid_after:
            return f"it is not valid before {_when(self.valid_after)}"
        if self.valid_before != _FOREVER and t >= self.valid_before:
            return f"it expired on {_when(self.valid_before)}"
        return None

    def refusal(self, user: str) -> str:
        """What to say when the server refused it."""
        why = ["the server refused the certificate"]  # the report names the file
        problem = self.validity_problem()
        if problem:
            why.append(problem)
        if self.principals and user not in self.principals:
            why.append(f"its principals ({', '.join(self.principals)}) do not include {user!r}")
        if len(why) == 1:
            why.append(
                f"check its principals (ssh-keygen -L -f {self.path}) and validity, and that "
                "the server trusts its CA (TrustedUserCAKeys)"
            )
        return ": ".join(why[:1]) + ": " + "; ".join(why[1:])


def _when(t: int) -> str:
    try:
        return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime(
            "%Y-%m-%d %H:%M:%S UTC"
        )
    except (OverflowError, OSError, ValueError):
        return str(t)


def read_certificate(path: PathType) -> Certificate:
    """Read a user certificate file (``id_ed25519-cert.pub``). ValueError if it is not one."""
    p = os.path.expanduser(os.fspath(path))
    with open(p, "rb") as f:
        fields = f.read(1 << 20).split()
    try:
        name = fields[0].decode()
        blob = base64.b64decode(fields[1], validate=True)
    except (IndexError, UnicodeDecodeError, binascii.Error):
        raise ValueError(f"{p} is not an OpenSSH certificate") from None
    return _parse_certificate(p, name, blob)


def _parse_certificate(path: str, name: str, blob: bytes) -> Certificate:
    cert = parse_certificate_blob(blob, f"the certificate {path}", path)
    if cert.type != name:
        raise ValueError(f"{path} is not an OpenSSH user certificate ({name[:60]!r})")
    if cert.cert_type != 1:  # SSH_CERT_TYPE_USER
        raise ValueError(f"{path} is a host certificate, not a user certificate")
    return cert


def parse_certificate_blob(blob: bytes, what: str, path: str = "") -> Certificate:
    """An OpenSSH certificate (user or host) from its wire blob, every length checked:
    ValueError if it is not one, or has bytes after its signature. Nothing verified."""
    r = _Reader(blob, what)
    name = r.text()
    base = name[: -len(_CERT_SUFFIX)] if name.endswith(_CERT_SUFFIX) else ""
    if base.startswith("sk-"):
        base += "@openssh.com"
    if base not in _KEY_FIELDS:
        raise ValueError(f"{what} is not an OpenSSH certificate ({name[:60]!r})")
    r.string()  # nonce
    start = r.pos
    for _ in range(_KEY_FIELDS[base]):
        r.string()
    key_blob = _string(base.encode()) + r.data[start : r.pos]
    r.u64()  # serial
    cert_type, key_id = r.u32(), r.text()
    pr = _Reader(r.string(), f"the principals of {what}")
    principals = []
    while not pr.end():
        principals.append(pr.text())
    valid_after, valid_before = r.u64(), r.u64()
    critical = r.string()
    r.string()  # extensions
    r.string()  # reserved
    ca_blob = r.string()
    signed = r.data[: r.pos]
    signature = r.string()
    if not r.end():
        raise ValueError(f"{what} has bytes after its signature")
    return Certificate(
        path, name, key_blob, key_id, tuple(principals), valid_after, valid_before,
        cert_type, critical, ca_blob, signed, signature,
    )  # fmt: skip
