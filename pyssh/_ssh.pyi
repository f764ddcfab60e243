# Stubs for the C extension pyssh._ssh (csrc/). Private primitives: use pyssh.connect().
import os
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
)

_Path = Union[str, bytes, os.PathLike[str], os.PathLike[bytes]]

LIBSSH_VERSION: str
_C_API: object  # the C API capsule (pyssh/include/pyssh_capi.h)
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
CPU_HAS_AES: int
DEFAULT_CIPHERS: str

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
        proxy_jumps: int = ...,
        ciphers: Optional[str] = ...,
        kex: Optional[str] = ...,
        macs: Optional[str] = ...,
        host_key_algorithms: Optional[str] = ...,
        default_ciphers: Optional[str] = ...,
    ) -> Tuple[Optional[str], Optional[str], int]: ...
    def _connect(
        self, fd: int = ..., timeout: Optional[float] = ..., what: str = ...
    ) -> Optional[Tuple[int, str, int, str, str, str, int]]: ...
    def _hop_verdict(self, accept: bool, /) -> None: ...
    def _server_key(self) -> Tuple[str, str, str, str]: ...
    def _known_host(self) -> int: ...
    def _update_known_hosts(self) -> None: ...
    def _auth_none(self, timeout: Optional[float] = ...) -> int: ...
    def _auth_list(self) -> int: ...
    def _auth_agent(self, timeout: Optional[float] = ...) -> int: ...
    def _auth_password(self, password: str, /, timeout: Optional[float] = ...) -> int: ...
    def _auth_try_pubkey(self, path: _Path, /, timeout: Optional[float] = ...) -> int: ...
    def _auth_privkey(
        self, key: bytes, /, passphrase: Optional[str] = ..., timeout: Optional[float] = ...
    ) -> int: ...
    def _auth_kbdint(
        self,
        responder: Callable[[str, str, List[Tuple[str, bool]]], Sequence[str]],
        /,
        timeout: Optional[float] = ...,
    ) -> int: ...
    def _algorithms(self) -> Dict[str, Any]: ...

# stdout/stderr sink for Channel.run: None discards, True captures, a callable gets each chunk
_Sink = Union[None, Literal[True], Callable[[bytes], Any]]
_Buffer = Union[bytes, bytearray, memoryview]

def scp_parse(line: _Buffer, /) -> Tuple[Any, ...]: ...
def name_problem(name: _Buffer, /, windows: Optional[bool] = ...) -> Optional[str]: ...

@final
class Channel:
    def __new__(cls, session: Session) -> Channel: ...
    @property
    def closed(self) -> bool: ...
    @property
    def session(self) -> Session: ...
    def exec(
        self, command: str, /, env: Sequence[Tuple[str, str]] = ..., timeout: Optional[float] = ...
    ) -> None: ...
    def run(
        self,
        stdout: _Sink = ...,
        stderr: _Sink = ...,
        stdin: Optional[Iterator[_Buffer]] = ...,
        timeout: Optional[float] = ...,
    ) -> Tuple[Optional[int], Optional[str], bool, str, Optional[bytes], Optional[bytes], bool]: ...
    def read(self, n: int = ..., timeout: Optional[float] = ...) -> bytes: ...
    def write(self, data: _Buffer, /, timeout: Optional[float] = ...) -> None: ...
    def recv_to_fd(
        self,
        fd: int,
        size: int,
        /,
        progress: Optional[Callable[[int], Any]] = ...,
        timeout: Optional[float] = ...,
    ) -> int: ...
    def send_from_fd(
        self,
        fd: int,
        size: int,
        /,
        progress: Optional[Callable[[int], Any]] = ...,
        timeout: Optional[float] = ...,
    ) -> int: ...
    def send_eof(self) -> None: ...
    @property
    def stderr_tail(self) -> bytes: ...
    def close(self) -> None: ...

# (connections, bytes_to_target, bytes_from_target, failed, active)
_TunnelStats = Tuple[int, int, int, int, int]

@final
class Tunnel:
    def __new__(cls, session: Session) -> Tunnel: ...
    @property
    def stats(self) -> _TunnelStats: ...
    @property
    def port(self) -> int: ...
    def listen_local(self, fd: int, host: str, port: int, /) -> None: ...
    def listen_remote(
        self, bind_address: str, port: int, target_host: str, target_port: int, timeout: float, /
    ) -> int: ...
    def run(
        self, max_connections: Optional[int] = ..., idle_timeout: Optional[float] = ...
    ) -> _TunnelStats: ...
    def stop(self) -> None: ...
    def close(self, timeout: float = ...) -> None: ...

@final
class SFTP:
    def __new__(cls, session: Session) -> SFTP: ...
    @property
    def closed(self) -> bool: ...
    def start(self, timeout: Optional[float] = ...) -> Tuple[int, List[Tuple[bytes, bytes]]]: ...
    def request(
        self,
        type: int,
        payload: _Buffer,
        /,
        timeout: Optional[float] = ...,
        what: Optional[str] = ...,
    ) -> Tuple[int, Any]: ...
    def batch(
        self,
        requests: Sequence[Tuple[int, _Buffer]],
        /,
        timeout: Optional[float] = ...,
        what: Optional[str] = ...,
    ) -> List[Tuple[int, Any]]: ...
    def send(
        self,
        type: int,
        payload: _Buffer,
        /,
        timeout: Optional[float] = ...,
        what: Optional[str] = ...,
    ) -> None: ...
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
    ) -> Tuple[int, int, bytes, int]: ...
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
    ) -> Tuple[int, int, bytes, int]: ...
    def read(
        self,
        handle: _Buffer,
        offset: int,
        n: int,
        timeout: Optional[float] = ...,
        inflight: int = ...,
        chunk: int = ...,
    ) -> Tuple[bytes, int, bytes]: ...
    def write(
        self,
        handle: _Buffer,
        offset: int,
        data: _Buffer,
        timeout: Optional[float] = ...,
        inflight: int = ...,
        chunk: int = ...,
    ) -> Tuple[int, int, bytes]: ...
    def close(self) -> None: ...
