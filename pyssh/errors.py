"""pyssh's exceptions: one hierarchy rooted at SSHError (an OSError).

The classes are created in C (csrc/errors.c, from one table) so that C code can
raise them; their documentation lives here."""

from __future__ import annotations

from . import _ssh

SSHError = _ssh.SSHError
ConnectError = _ssh.ConnectError
SSHTimeoutError = _ssh.SSHTimeoutError
AuthenticationError = _ssh.AuthenticationError
HostKeyError = _ssh.HostKeyError
UnknownHostKeyError = _ssh.UnknownHostKeyError
HostKeyMismatchError = _ssh.HostKeyMismatchError
HostKeyRevokedError = _ssh.HostKeyRevokedError
SessionClosedError = _ssh.SessionClosedError
PrivateKeyError = _ssh.PrivateKeyError
CommandError = _ssh.CommandError
SCPError = _ssh.SCPError
SCPProtocolError = _ssh.SCPProtocolError
SCPFileNotFoundError = _ssh.SCPFileNotFoundError
SCPPermissionError = _ssh.SCPPermissionError
SFTPError = _ssh.SFTPError
SFTPFileNotFoundError = _ssh.SFTPFileNotFoundError
SFTPPermissionError = _ssh.SFTPPermissionError
SFTPFileExistsError = _ssh.SFTPFileExistsError
SFTPIsADirectoryError = _ssh.SFTPIsADirectoryError
SFTPNotADirectoryError = _ssh.SFTPNotADirectoryError


SSHError.__doc__ = """Base class of every pyssh error; an OSError, so ``except OSError`` catches
network failures of pyssh as it does those of the socket module."""
ConnectError.__doc__ = """The connection could not be made or was lost: unresolvable name, refused
or reset connection, a server that is not an SSH server. Also a ConnectionError."""
SSHTimeoutError.__doc__ = """An operation took longer than its timeout. Also a TimeoutError."""
AuthenticationError.__doc__ = """No authentication method succeeded. ``.methods_tried``,
``.methods_allowed`` and ``.keys`` (a list of (path, reason) for each key tried) say what
happened."""
HostKeyError.__doc__ = """The server's host key could not be verified. Carries ``.host``, ``.port``,
``.key_type``, ``.fingerprint`` (SHA256:...), ``.known_hosts`` and ``.hop`` (None for the
server connected to, 1 for the first ProxyJump host, 2 for the next...)."""
UnknownHostKeyError.__doc__ = """The server's host key is not in known_hosts and the host key policy
refused to trust it ("strict", or a callable that returned False); or only a
``@cert-authority`` line names the host, and pyssh does not verify host certificates yet."""
HostKeyMismatchError.__doc__ = """known_hosts holds a different key for this host: the key has
changed. This is what a man-in-the-middle attack looks like; pyssh never connects anyway."""
HostKeyRevokedError.__doc__ = """The server's key is marked ``@revoked`` in known_hosts for this
host: it is known to be compromised, so whoever holds it may be impersonating the server.
pyssh refuses it under every host key policy, ``"ignore"`` included."""
PrivateKeyError.__doc__ = """A private key given to pyssh cannot be used: not a key libssh can read,
an encrypted key with no passphrase to open it, or a wrong passphrase. Also a ValueError.
``.path`` is the key file (None for a key given as text)."""
CommandError.__doc__ = """A remote command run by ``exec_internal(..., error=True)`` (or
``ExecResult.check()``) did not exit with status 0. Carries ``.status`` (also
``.returncode``), ``.command``, ``.stdout``, ``.stderr`` (bytes), ``.signal`` (the
signal's name if one killed it) and ``.result`` (the ExecResult); the message ends
with the tail of stderr."""
SessionClosedError.__doc__ = """The session was closed (disconnect(), the with-block ended, or it
was garbage-collected) and cannot be used any more."""

__all__ = [
    "SSHError",
    "ConnectError",
    "SSHTimeoutError",
    "AuthenticationError",
    "HostKeyError",
    "UnknownHostKeyError",
    "HostKeyMismatchError",
    "HostKeyRevokedError",
    "SessionClosedError",
    "PrivateKeyError",
    "CommandError",
    "SCPError",
    "SCPProtocolError",
    "SCPFileNotFoundError",
    "SCPPermissionError",
    "SFTPError",
    "SFTPFileNotFoundError",
    "SFTPPermissionError",
    "SFTPFileExistsError",
    "SFTPIsADirectoryError",
    "SFTPNotADirectoryError",
]
SCPError.__doc__ = """An SCP transfer failed on the server's side (a missing file, a permission
error, no scp on the server). ``.filename`` is the path; ``.server_message`` what the server's
scp said, where it said something."""
SCPError.server_message = None  # set where the server's scp said something
SCPProtocolError.__doc__ = """The server broke the SCP protocol or sent something unsafe: a name
that would write outside the target directory, a file that was not asked for, a bad size or mode,
unbalanced directories. Nothing is written outside the target."""
SCPFileNotFoundError.__doc__ = """SCPError where the server says the file does not exist; also a
FileNotFoundError."""
SCPPermissionError.__doc__ = """SCPError where the server says permission is denied; also a
PermissionError."""
SFTPError.__doc__ = """An SFTP operation failed: the server's status (``.errno`` is the closest
errno, ``.filename`` the path, ``.filename2`` the second path of a rename or symlink), or
a broken SFTP stream (the channel is then closed)."""
SFTPFileNotFoundError.__doc__ = (
    """SFTPError for a path that does not exist; also a FileNotFoundError."""
)
SFTPPermissionError.__doc__ = """SFTPError for a refused operation; also a PermissionError."""
SFTPFileExistsError.__doc__ = (
    """SFTPError for a path that already exists; also a FileExistsError."""
)
SFTPIsADirectoryError.__doc__ = """SFTPError for a directory where a file was needed; also an
IsADirectoryError."""
SFTPNotADirectoryError.__doc__ = """SFTPError for a file where a directory was needed; also a
NotADirectoryError."""
