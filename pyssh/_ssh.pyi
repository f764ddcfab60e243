# Stubs for the C extension pyssh._ssh (csrc/). Private primitives: use pyssh.connect().
import os
import sys
from typing import (
    Any,
    Callable,
    Dict,
    Iterator,
    List,
    Literal,
    Optional,
    Sequence,
    Tuple,
    Union,
    final,
    overload,
)

from _typeshed import structseq

_Path = Union[str, bytes, os.PathLike[str], os.PathLike[bytes]]

LIBSSH_VERSION: str
_C_API: object  # the C API capsule (pyssh/include/pyssh_capi.h)

# Named results (struct sequences, csrc/module.c): tuples whose fields have names.
@final
class RunResult(
    structseq[Any],
    Tuple[Optional[int], Optional[str], bool, str, Optional[bytes], Optional[bytes], bool],
):
    if sys.version_info >= (3, 10):
        __match_args__ = (
            "exit_status",
            "signal",
            "core_dumped",
            "error_message",
            "stdout",
            "stderr",
            "stdin_dropped",
        )
    @property
    def exit_status(self) -> Optional[int]: ...
    @property
    def signal(self) -> Optional[str]: ...
    @property
    def core_dumped(self) -> bool: ...
    @property
    def error_message(self) -> str: ...
    @property
    def stdout(self) -> Optional[bytes]: ...
    @property
    def stderr(self) -> Optional[bytes]: ...
    @property
    def stdin_dropped(self) -> bool: ...

@final
class ChannelRecv(structseq[Any], Tuple[bytes, bytes, bool, bool, bool, int]):
    if sys.version_info >= (3, 10):
        __match_args__ = ("stdout", "stderr", "eof", "ended", "fd_ready", "sent")
    @property
    def stdout(self) -> bytes: ...
    @property
    def stderr(self) -> bytes: ...
    @property
    def eof(self) -> bool: ...
    @property
    def ended(self) -> bool: ...
    @property
    def fd_ready(self) -> bool: ...
    @property
    def sent(self) -> int: ...

@final
class ExitInfo(structseq[Any], Tuple[bool, Optional[int], Optional[str], bool, str]):
    if sys.version_info >= (3, 10):
        __match_args__ = ("ended", "exit_status", "signal", "core_dumped", "error_message")
    @property
    def ended(self) -> bool: ...
    @property
    def exit_status(self) -> Optional[int]: ...
    @property
    def signal(self) -> Optional[str]: ...
    @property
    def core_dumped(self) -> bool: ...
    @property
    def error_message(self) -> str: ...

@final
class SFTPAttrs(
    structseq[Any],
    Tuple[
        Optional[int],
        Optional[int],
        Optional[int],
        Optional[int],
        Optional[int],
        Optional[int],
        Tuple[Tuple[bytes, bytes], ...],
    ],
):
    if sys.version_info >= (3, 10):
        __match_args__ = ("size", "uid", "gid", "mode", "atime", "mtime", "extended")
    @property
    def size(self) -> Optional[int]: ...
    @property
    def uid(self) -> Optional[int]: ...
    @property
    def gid(self) -> Optional[int]: ...
    @property
    def mode(self) -> Optional[int]: ...
    @property
    def atime(self) -> Optional[int]: ...
    @property
    def mtime(self) -> Optional[int]: ...
    @property
    def extended(self) -> Tuple[Tuple[bytes, bytes], ...]: ...

@final
class SFTPName(structseq[Any], Tuple[bytes, bytes, SFTPAttrs]):
    if sys.version_info >= (3, 10):
        __match_args__ = ("name", "longname", "attrs")
    @property
    def name(self) -> bytes: ...
    @property
    def longname(self) -> bytes: ...
    @property
    def attrs(self) -> SFTPAttrs: ...

@final
class SFTPTransfer(structseq[Any], Tuple[int, int, bytes, int]):
    if sys.version_info >= (3, 10):
        __match_args__ = ("moved", "status", "message", "local_errno")
    @property
    def moved(self) -> int: ...
    @property
    def status(self) -> int: ...
    @property
    def message(self) -> bytes: ...
    @property
    def local_errno(self) -> int: ...

@final
class SFTPRead(structseq[Any], Tuple[bytes, int, bytes]):
    if sys.version_info >= (3, 10):
        __match_args__ = ("data", "status", "message")
    @property
    def data(self) -> bytes: ...
    @property
    def status(self) -> int: ...
    @property
    def message(self) -> bytes: ...

@final
class TunnelCounts(structseq[Any], Tuple[int, int, int, int, int]):
    if sys.version_info >= (3, 10):
        __match_args__ = ("served", "up", "down", "failed", "open")
    @property
    def served(self) -> int: ...
    @property
    def up(self) -> int: ...
    @property
    def down(self) -> int: ...
    @property
    def failed(self) -> int: ...
    @property
    def open(self) -> int: ...

@final
class Target(structseq[Any], Tuple[Optional[str], Optional[str], int]):
    if sys.version_info >= (3, 10):
        __match_args__ = ("host", "user", "port")
    @property
    def host(self) -> Optional[str]: ...
    @property
    def user(self) -> Optional[str]: ...
    @property
    def port(self) -> int: ...

@final
class ServerKey(structseq[Any], Tuple[str, str, str, str]):
    if sys.version_info >= (3, 10):
        __match_args__ = ("type", "sha256", "sha1", "base64")
    @property
    def type(self) -> str: ...
    @property
    def sha256(self) -> str: ...
    @property
    def sha1(self) -> str: ...
    @property
    def base64(self) -> str: ...

LIBSSH_HEADER_VERSION: str
SSH_AUTH_SUCCESS: int
SSH_AUTH_DENIED: int
SSH_AUTH_PARTIAL: int
SSH_AUTH_INFO: int
SSH_AUTH_METHOD_NONE: int
SSH_AUTH_METHOD_PASSWORD: int
SSH_AUTH_METHOD_PUBLICKEY: int
SSH_AUTH_METHOD_HOSTBASED: int
SSH_AUTH_METHOD_INTERACTIVE: int
SSH_AUTH_METHOD_GSSAPI_MIC: int
SSH_KNOWN_HOSTS_OK: int
SSH_KNOWN_HOSTS_CHANGED: int
SSH_KNOWN_HOSTS_OTHER: int
SSH_KNOWN_HOSTS_UNKNOWN: int
SSH_KNOWN_HOSTS_NOT_FOUND: int
KEY_ENCRYPTED: int
KEY_UNUSABLE: int
KEY_NO_PUBLIC: int
KEY_BAD_CERT: int
CPU_HAS_AES: int
SFTP_STRIPE_AHEAD: int
MAX_HOPS: int
POLLIN: int
POLLOUT: int
DEFAULT_CIPHERS: str
SCP_ERROR_OTHER: int
SCP_ERROR_NOT_FOUND: int
SCP_ERROR_PERMISSION: int

class SSHError(OSError): ...
class ConnectError(SSHError, ConnectionError): ...
class SSHTimeoutError(SSHError, TimeoutError): ...
class AuthenticationError(SSHError): ...
class HostKeyError(SSHError): ...
class UnknownHostKeyError(HostKeyError): ...
class HostKeyMismatchError(HostKeyError): ...
class HostKeyRevokedError(HostKeyError): ...
class SessionClosedError(SSHError): ...
class PrivateKeyError(SSHError, ValueError): ...

class SCPError(SSHError):
    server_message: Optional[str]

class SCPProtocolError(SCPError): ...
class SCPFileNotFoundError(SCPError, FileNotFoundError): ...
class SCPPermissionError(SCPError, PermissionError): ...
class SFTPError(SSHError): ...
class SFTPFileNotFoundError(SFTPError, FileNotFoundError): ...
class SFTPPermissionError(SFTPError, PermissionError): ...
class SFTPFileExistsError(SFTPError, FileExistsError): ...
class SFTPIsADirectoryError(SFTPError, IsADirectoryError): ...
class SFTPNotADirectoryError(SFTPError, NotADirectoryError): ...

class CommandError(SSHError):
    command: str
    status: int
    returncode: int
    stdout: bytes
    stderr: bytes
    signal: Optional[str]
    result: Any

class Key:
    """libssh's ssh_key (csrc/key.c): subclassed by pyssh.Key."""
    # only with vendor/patches/libssh-*-host-certificates.patch
    @staticmethod
    def _verify_signature(key_blob: bytes, signature: bytes, data: bytes, /) -> bool: ...
    @property
    def has_private(self) -> bool: ...
    @classmethod
    def _generate(cls, type: str, bits: int, /) -> Any: ...
    @classmethod
    def _from_private(cls, text: bytes, passphrase: Optional[str] = ..., /) -> Any: ...
    @classmethod
    def _from_public(cls, type: str, base64: str, /) -> Any: ...
    def _private_text(self, passphrase: Optional[str] = ..., /) -> bytes: ...
    def _public(self) -> Tuple[str, str]: ...

class Session:
    def __init__(self) -> None: ...
    @property
    def connected(self) -> bool: ...
    @property
    def closed(self) -> bool: ...
    def close(self) -> None: ...
    def _configure(
        self,
        host: str,
        *,
        user: Optional[str] = ...,
        port: int = ...,
        ssh_dir: Optional[_Path] = ...,
        known_hosts: Optional[_Path] = ...,
        config: Union[None, bool, _Path] = ...,
        verbose: int = ...,
        default_user: Optional[str] = ...,
        ciphers: Optional[str] = ...,
        kex: Optional[str] = ...,
        macs: Optional[str] = ...,
        host_key_algorithms: Optional[str] = ...,
        default_ciphers: Optional[str] = ...,
    ) -> Target: ...
    @overload
    def _connect(
        self,
        fd: int = ...,
        timeout: Optional[float] = ...,
        what: str = ...,
        defer: Literal[False] = ...,
    ) -> None: ...
    @overload
    def _connect(
        self,
        fd: int = ...,
        timeout: Optional[float] = ...,
        what: str = ...,
        *,
        defer: Literal[True],
    ) -> Op: ...
    def _carry(self, tunnel: Tunnel, /) -> None: ...
    def _server_key(self) -> ServerKey: ...
    def _set_host_key_algorithms(self, algorithms: str, /) -> None: ...
    def _known_host(self) -> int: ...
    def _update_known_hosts(self) -> None: ...
    # the authentications: an AUTH_*/KEY_* int, or with defer=True an Op whose result it is
    def _auth_none(self, timeout: Optional[float] = ..., defer: bool = ...) -> Any: ...
    def _auth_list(self) -> int: ...
    def _auth_agent(self, timeout: Optional[float] = ..., defer: bool = ...) -> Any: ...
    def _auth_password(
        self, password: str, /, timeout: Optional[float] = ..., defer: bool = ...
    ) -> Any: ...
    def _auth_try_pubkey(
        self,
        path: _Path,
        /,
        timeout: Optional[float] = ...,
        cert: Optional[_Path] = ...,
        defer: bool = ...,
    ) -> Any: ...
    def _auth_privkey(
        self,
        key: bytes,
        /,
        passphrase: Optional[str] = ...,
        timeout: Optional[float] = ...,
        cert: Optional[_Path] = ...,
        defer: bool = ...,
    ) -> Any: ...
    def _auth_kbdint(
        self,
        responder: Callable[[str, str, List[Tuple[str, bool]]], Sequence[str]],
        /,
        timeout: Optional[float] = ...,
        defer: bool = ...,
    ) -> Any: ...
    def _algorithms(self) -> Dict[str, Any]: ...
    def _keepalive(self, interval: float, count_max: int, /) -> None: ...

@final
class Op:
    @property
    def done(self) -> bool: ...
    @property
    def what(self) -> str: ...
    @property
    def session(self) -> Optional[Session]: ...
    def wait(self) -> Any: ...
    def result(self) -> Any: ...
    def step(self) -> Optional[Tuple[List[Tuple[int, int]], Optional[float]]]: ...
    def cancel(self) -> None: ...
    def attach(self, rd: int, wr: int, /) -> None: ...

@final
class Driver:
    def __init__(self) -> None: ...
    def add(self, op: Op, /) -> None: ...
    def wait(self, timeout: Optional[float] = ...) -> List[Op]: ...
    def wake(self) -> None: ...
    def pending(self) -> List[Op]: ...
    def abandon(self) -> None: ...
    def __len__(self) -> int: ...

def wait_socket(fd: int, events: int, /, timeout: Optional[float] = ..., what: str = ...) -> Op: ...

# stdout/stderr sink for Channel.run: None discards, True captures, a callable gets each chunk
_Sink = Union[None, Literal[True], Callable[[bytes], Any]]
_Buffer = Union[bytes, bytearray, memoryview]

def scp_parse(line: _Buffer, /) -> Tuple[Any, ...]: ...
def scp_error_kind(text: _Buffer, /) -> int: ...
def name_problem(name: _Buffer, /, windows: Optional[bool] = ...) -> Optional[str]: ...

# only with pyssh's libssh patch (vendor/patches/libssh-*-agent-certificate.patch)
def _auth_agent_certificate(
    session: Session, cert: _Path, /, timeout: Optional[float] = ...
) -> int: ...

@final
class Channel:
    def __new__(cls, session: Session) -> Channel: ...
    @property
    def closed(self) -> bool: ...
    @property
    def session(self) -> Session: ...
    @overload
    def exec(
        self,
        command: Optional[str],
        /,
        env: Sequence[Tuple[str, str]] = ...,
        timeout: Optional[float] = ...,
        pty: Optional[Tuple[str, int, int, bytes]] = ...,
        agent: bool = ...,
        defer: Literal[False] = ...,
    ) -> None: ...
    @overload
    def exec(
        self,
        command: Optional[str],
        /,
        env: Sequence[Tuple[str, str]] = ...,
        timeout: Optional[float] = ...,
        pty: Optional[Tuple[str, int, int, bytes]] = ...,
        agent: bool = ...,
        *,
        defer: Literal[True],
    ) -> Op: ...
    @overload
    def run(
        self,
        stdout: _Sink = ...,
        stderr: _Sink = ...,
        stdin: Optional[Iterator[_Buffer]] = ...,
        timeout: Optional[float] = ...,
        defer: Literal[False] = ...,
    ) -> RunResult: ...
    @overload
    def run(
        self,
        stdout: _Sink = ...,
        stderr: _Sink = ...,
        stdin: Optional[Iterator[_Buffer]] = ...,
        timeout: Optional[float] = ...,
        *,
        defer: Literal[True],
    ) -> Op: ...
    @overload
    def read(
        self, n: int = ..., timeout: Optional[float] = ..., defer: Literal[False] = ...
    ) -> bytes: ...
    @overload
    def read(self, n: int = ..., timeout: Optional[float] = ..., *, defer: Literal[True]) -> Op: ...
    @overload
    def write(
        self, data: _Buffer, /, timeout: Optional[float] = ..., defer: Literal[False] = ...
    ) -> None: ...
    @overload
    def write(
        self, data: _Buffer, /, timeout: Optional[float] = ..., *, defer: Literal[True]
    ) -> Op: ...
    @overload
    def recv_to_fd(
        self,
        fd: int,
        size: int,
        /,
        progress: Optional[Callable[[int], Any]] = ...,
        timeout: Optional[float] = ...,
        defer: Literal[False] = ...,
    ) -> int: ...
    @overload
    def recv_to_fd(
        self,
        fd: int,
        size: int,
        /,
        progress: Optional[Callable[[int], Any]] = ...,
        timeout: Optional[float] = ...,
        *,
        defer: Literal[True],
    ) -> Op: ...
    @overload
    def send_from_fd(
        self,
        fd: int,
        size: int,
        /,
        progress: Optional[Callable[[int], Any]] = ...,
        timeout: Optional[float] = ...,
        defer: Literal[False] = ...,
    ) -> int: ...
    @overload
    def send_from_fd(
        self,
        fd: int,
        size: int,
        /,
        progress: Optional[Callable[[int], Any]] = ...,
        timeout: Optional[float] = ...,
        *,
        defer: Literal[True],
    ) -> Op: ...
    @overload
    def send_eof(self, defer: Literal[False] = ...) -> None: ...
    @overload
    def send_eof(self, *, defer: Literal[True]) -> Op: ...
    @overload
    def send(
        self, data: _Buffer, /, timeout: Optional[float] = ..., defer: Literal[False] = ...
    ) -> int: ...
    @overload
    def send(
        self, data: _Buffer, /, timeout: Optional[float] = ..., *, defer: Literal[True]
    ) -> Op: ...
    @overload
    def recv(
        self,
        n: int = ...,
        err_n: int = ...,
        timeout: Optional[float] = ...,
        fd: int = ...,
        block: bool = ...,
        end: bool = ...,
        data: Optional[_Buffer] = ...,
        defer: Literal[False] = ...,
    ) -> ChannelRecv: ...
    @overload
    def recv(
        self,
        n: int = ...,
        err_n: int = ...,
        timeout: Optional[float] = ...,
        fd: int = ...,
        block: bool = ...,
        end: bool = ...,
        data: Optional[_Buffer] = ...,
        *,
        defer: Literal[True],
    ) -> Op: ...
    def resize(self, cols: int, rows: int, /) -> None: ...
    def signal(self, name: str, /) -> bool: ...
    def status(self) -> ExitInfo: ...
    @property
    def stderr_tail(self) -> bytes: ...
    def close(self) -> None: ...

_TunnelStats = TunnelCounts

@final
class Tunnel:
    def __new__(cls, session: Session) -> Tunnel: ...
    @property
    def stats(self) -> _TunnelStats: ...
    @property
    def port(self) -> int: ...
    def listen_local(self, fd: int, host: str, port: int, remote_unix: bool = False, /) -> None: ...
    def adopt_local(self, fd: int, host: str, port: int, /) -> None: ...
    @overload
    def listen_remote_unix(
        self,
        path: str,
        target_host: str,
        target_port: int,
        timeout: Optional[float],
        /,
        *,
        defer: Literal[False] = ...,
    ) -> int: ...
    @overload
    def listen_remote_unix(
        self,
        path: str,
        target_host: str,
        target_port: int,
        timeout: Optional[float],
        /,
        *,
        defer: Literal[True],
    ) -> Op: ...
    @overload
    def listen_remote(
        self,
        bind_address: str,
        port: int,
        target_host: str,
        target_port: int,
        timeout: Optional[float],
        /,
        *,
        defer: Literal[False] = ...,
    ) -> int: ...
    @overload
    def listen_remote(
        self,
        bind_address: str,
        port: int,
        target_host: str,
        target_port: int,
        timeout: Optional[float],
        /,
        *,
        defer: Literal[True],
    ) -> Op: ...
    def listen_dynamic(self, fd: int, handshake_timeout: float = ..., /) -> None: ...
    def listen_agent(self, path: _Path, /) -> None: ...
    @overload
    def run(
        self,
        max_connections: Optional[int] = ...,
        idle_timeout: Optional[float] = ...,
        *,
        defer: Literal[False] = ...,
    ) -> _TunnelStats: ...
    @overload
    def run(
        self,
        max_connections: Optional[int] = ...,
        idle_timeout: Optional[float] = ...,
        *,
        defer: Literal[True],
    ) -> Op: ...
    def stop(self) -> None: ...
    @overload
    def close(self, timeout: Optional[float] = ..., *, defer: Literal[False] = ...) -> None: ...
    @overload
    def close(self, timeout: Optional[float] = ..., *, defer: Literal[True]) -> Optional[Op]: ...

@final
class SFTP:
    def __new__(cls, session: Session) -> SFTP: ...
    @property
    def closed(self) -> bool: ...
    @property
    def window(self) -> int: ...
    @property
    def complete_to(self) -> int: ...
    @overload
    def start(
        self,
        timeout: Optional[float] = ...,
        also: Optional[Sequence[SFTP]] = ...,
        defer: Literal[False] = ...,
    ) -> Tuple[int, List[Tuple[bytes, bytes]]]: ...
    @overload
    def start(
        self,
        timeout: Optional[float] = ...,
        also: Optional[Sequence[SFTP]] = ...,
        *,
        defer: Literal[True],
    ) -> Op: ...
    @overload
    def request(
        self,
        type: int,
        payload: _Buffer,
        /,
        timeout: Optional[float] = ...,
        what: Optional[str] = ...,
        defer: Literal[False] = ...,
    ) -> Tuple[int, Any]: ...
    @overload
    def request(
        self,
        type: int,
        payload: _Buffer,
        /,
        timeout: Optional[float] = ...,
        what: Optional[str] = ...,
        *,
        defer: Literal[True],
    ) -> Op: ...
    @overload
    def batch(
        self,
        requests: Sequence[Tuple[int, _Buffer]],
        /,
        timeout: Optional[float] = ...,
        what: Optional[str] = ...,
        also: Optional[Sequence[Tuple[SFTP, Sequence[Tuple[int, _Buffer]]]]] = ...,
        defer: Literal[False] = ...,
    ) -> List[Any]: ...
    @overload
    def batch(
        self,
        requests: Sequence[Tuple[int, _Buffer]],
        /,
        timeout: Optional[float] = ...,
        what: Optional[str] = ...,
        also: Optional[Sequence[Tuple[SFTP, Sequence[Tuple[int, _Buffer]]]]] = ...,
        *,
        defer: Literal[True],
    ) -> Op: ...
    @overload
    def send(
        self,
        type: int,
        payload: _Buffer,
        /,
        timeout: Optional[float] = ...,
        what: Optional[str] = ...,
        defer: Literal[False] = ...,
    ) -> None: ...
    @overload
    def send(
        self,
        type: int,
        payload: _Buffer,
        /,
        timeout: Optional[float] = ...,
        what: Optional[str] = ...,
        *,
        defer: Literal[True],
    ) -> Optional[Op]: ...
    @overload
    def download(
        self,
        handle: _Buffer,
        fd: int,
        offset: int,
        size: int,
        progress: Optional[Callable[[int], Any]] = ...,
        timeout: Optional[float] = ...,
        inflight: int = ...,
        chunk: int = ...,
        stripes: Optional[Sequence[Tuple[SFTP, _Buffer]]] = ...,
        cut: bool = ...,
        until: int = ...,
        defer: Literal[False] = ...,
    ) -> SFTPTransfer: ...
    @overload
    def download(
        self,
        handle: _Buffer,
        fd: int,
        offset: int,
        size: int,
        progress: Optional[Callable[[int], Any]] = ...,
        timeout: Optional[float] = ...,
        inflight: int = ...,
        chunk: int = ...,
        stripes: Optional[Sequence[Tuple[SFTP, _Buffer]]] = ...,
        cut: bool = ...,
        until: int = ...,
        *,
        defer: Literal[True],
    ) -> Op: ...
    @overload
    def upload(
        self,
        handle: _Buffer,
        fd: int,
        offset: int,
        size: int,
        progress: Optional[Callable[[int], Any]] = ...,
        timeout: Optional[float] = ...,
        inflight: int = ...,
        chunk: int = ...,
        stripes: Optional[Sequence[Tuple[SFTP, _Buffer]]] = ...,
        cut: bool = ...,
        defer: Literal[False] = ...,
    ) -> SFTPTransfer: ...
    @overload
    def upload(
        self,
        handle: _Buffer,
        fd: int,
        offset: int,
        size: int,
        progress: Optional[Callable[[int], Any]] = ...,
        timeout: Optional[float] = ...,
        inflight: int = ...,
        chunk: int = ...,
        stripes: Optional[Sequence[Tuple[SFTP, _Buffer]]] = ...,
        cut: bool = ...,
        *,
        defer: Literal[True],
    ) -> Op: ...
    @overload
    def read(
        self,
        handle: _Buffer,
        offset: int,
        n: int,
        timeout: Optional[float] = ...,
        inflight: int = ...,
        chunk: int = ...,
        defer: Literal[False] = ...,
    ) -> SFTPRead: ...
    @overload
    def read(
        self,
        handle: _Buffer,
        offset: int,
        n: int,
        timeout: Optional[float] = ...,
        inflight: int = ...,
        chunk: int = ...,
        *,
        defer: Literal[True],
    ) -> Op: ...
    @overload
    def write(
        self,
        handle: _Buffer,
        offset: int,
        data: _Buffer,
        timeout: Optional[float] = ...,
        inflight: int = ...,
        chunk: int = ...,
        defer: Literal[False] = ...,
    ) -> SFTPTransfer: ...
    @overload
    def write(
        self,
        handle: _Buffer,
        offset: int,
        data: _Buffer,
        timeout: Optional[float] = ...,
        inflight: int = ...,
        chunk: int = ...,
        *,
        defer: Literal[True],
    ) -> Op: ...
    def close(self) -> None: ...
