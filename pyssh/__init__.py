"""pyssh: a native SSH client for Python.

A hand-written C extension on a statically linked libssh, which releases the GIL
whenever it waits on the network. Start with :func:`connect`.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from . import _ssh, _tunnel
from ._exec import DEFAULT as _DEFAULT, ExecResult
from ._group import Group, GroupError, GroupResult
from ._keys import Key, agent_keys, generate_key, read_key
from ._process import TERMINAL_MODES, Process
from ._sftp import SFTP, SFTPAttributes, SFTPLimits
from ._tunnel import Tunnel, TunnelStats
from ._version import __version__
from .errors import (
    AuthenticationError,
    CommandError,
    ConnectError,
    HostKeyError,
    HostKeyMismatchError,
    HostKeyRevokedError,
    PrivateKeyError,
    SCPError,
    SCPFileNotFoundError,
    SCPPermissionError,
    SCPProtocolError,
    SessionClosedError,
    SFTPError,
    SFTPFileExistsError,
    SFTPFileNotFoundError,
    SFTPIsADirectoryError,
    SFTPNotADirectoryError,
    SFTPPermissionError,
    SSHError,
    SSHTimeoutError,
    UnknownHostKeyError,
)
from .session import Session, connect, parse_host

__all__ = [
    "__version__",
    "connect",
    "Session",
    "parse_host",
    "Group",
    "GroupResult",
    "GroupError",
    "Key",
    "generate_key",
    "read_key",
    "agent_keys",
    "libssh_version",
    "get_include",
    "ssh_connect",
    "ssh_disconnect",
    "ssh_info",
    "ssh_session_info",
    "ExecResult",
    "Process",
    "TERMINAL_MODES",
    "ssh_exec_wait",
    "ssh_exec_internal",
    "scp_upload",
    "scp_download",
    "Tunnel",
    "TunnelStats",
    "ssh_tunnel",
    "SFTP",
    "SFTPAttributes",
    "SFTPLimits",
    "SFTPError",
    "SFTPFileNotFoundError",
    "SFTPPermissionError",
    "SFTPFileExistsError",
    "SFTPIsADirectoryError",
    "SFTPNotADirectoryError",
    "SSHError",
    "CommandError",
    "ConnectError",
    "SSHTimeoutError",
    "AuthenticationError",
    "HostKeyError",
    "UnknownHostKeyError",
    "HostKeyMismatchError",
    "HostKeyRevokedError",
    "SessionClosedError",
    "PrivateKeyError",
    "SCPError",
    "SCPProtocolError",
    "SCPFileNotFoundError",
    "SCPPermissionError",
]


def libssh_version(full: bool = False) -> str:
    """The version of the libssh inside pyssh ("0.11.5"); with full=True as libssh
    reports it, with its crypto backend ("0.11.5/openssl")."""
    return _ssh.LIBSSH_VERSION if full else _ssh.LIBSSH_VERSION.split("/")[0]


def get_include() -> str:
    """The directory of ``pyssh_capi.h``, pyssh's C API for other extensions: pass it
    to ``Extension(include_dirs=[pyssh.get_include()])`` (docs/capi.md, "the C API")."""
    import os

    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "include")


# The R package's names, as thin aliases, so translated code reads the same.
def _session_arg(session: object, alias: str) -> Session:
    if not isinstance(session, Session):
        raise TypeError(
            f"{alias}: the first argument must be a session from pyssh.connect() "
            f"(or ssh_connect()), not {type(session).__name__}"
        )
    return session


def ssh_connect(
    host: str, keyfile: Any = None, passwd: Any = None, verbose: int = 0, **kwargs: Any
) -> Session:
    """Alias of :func:`connect` with the R package's argument names."""
    return connect(host, keyfile=keyfile, password=passwd, verbose=verbose, **kwargs)


def ssh_disconnect(session: Session) -> None:
    """Alias of ``session.disconnect()``."""
    _session_arg(session, "ssh_disconnect").disconnect()


def ssh_info(session: Session) -> Dict[str, Any]:
    """Alias of ``session.info()``."""
    return _session_arg(session, "ssh_info").info()


ssh_session_info = ssh_info


def ssh_exec_wait(
    session: Session,
    command: Any = "whoami",
    std_out: Any = _DEFAULT,
    std_err: Any = _DEFAULT,
    std_in: Any = None,
    timeout: Optional[float] = None,
) -> int:
    """Alias of ``session.exec_wait`` with the R package's argument names."""
    return _session_arg(session, "ssh_exec_wait").exec_wait(
        command, stdout=std_out, stderr=std_err, stdin=std_in, timeout=timeout
    )


def ssh_exec_internal(
    session: Session,
    command: Any = "whoami",
    error: bool = True,
    std_in: Any = None,
    timeout: Optional[float] = None,
) -> ExecResult:
    """Alias of ``session.exec_internal`` with the R package's argument names."""
    return _session_arg(session, "ssh_exec_internal").exec_internal(
        command, error=error, stdin=std_in, timeout=timeout
    )


def scp_upload(
    session: Session, files: Any, to: Any = ".", verbose: bool = True, **kwargs: Any
) -> List[str]:
    """Alias of ``session.scp_upload``, as in the R package."""
    return _session_arg(session, "scp_upload").scp_upload(files, to=to, verbose=verbose, **kwargs)


def scp_download(
    session: Session, files: Any, to: Any = ".", verbose: bool = True, **kwargs: Any
) -> List[str]:
    """Alias of ``session.scp_download``, as in the R package."""
    return _session_arg(session, "scp_download").scp_download(
        files, to=to, verbose=verbose, **kwargs
    )


def ssh_tunnel(
    session: Session,
    port: _tunnel.Listen = 5555,
    target: Optional[_tunnel.Target] = None,
    **kwargs: Any,
) -> TunnelStats:
    """Alias of ``session.tunnel``, as in the R package. ``port`` is a local port or
    a Unix socket's path, as for ``session.tunnel``. The target has no default
    (the R package's is a public web site). Blocks until Ctrl-C, or
    ``max_connections``/``timeout`` (keywords)."""
    return _session_arg(session, "ssh_tunnel").tunnel(port, target, **kwargs)


def __getattr__(name: str) -> Any:
    # pyssh.aio on first use: `import pyssh` does not import asyncio
    if name == "aio":
        import importlib

        return importlib.import_module("pyssh.aio")
    raise AttributeError(f"module 'pyssh' has no attribute {name!r}")
