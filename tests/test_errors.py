"""How failures become exception classes: by codes and state, never by matching the
text a server can write (issue 17). The SCP classifier (csrc/scp.c), the one place
that reads the server's scp error lines, and libssh failures whose message quotes
the server."""

import os
import subprocess
import sys
import textwrap

import pytest
from hypothesis import example, given, settings, strategies as st

import pyssh
from pyssh import _ssh

NOT_FOUND, PERMISSION, OTHER = (
    _ssh.SCP_ERROR_NOT_FOUND,
    _ssh.SCP_ERROR_PERMISSION,
    _ssh.SCP_ERROR_OTHER,
)

# ---- the SCP classifier ----------------------------------------------------------------

# OpenSSH's scp writes "scp: PATH: strerror(errno)"; glibc, musl, the BSDs and macOS agree
# on these texts
STRERROR = {
    b"No such file or directory": NOT_FOUND,  # ENOENT
    b"Not a directory": NOT_FOUND,  # ENOTDIR
    b"Permission denied": PERMISSION,  # EACCES
    b"Operation not permitted": PERMISSION,  # EPERM
    b"Is a directory": OTHER,  # EISDIR
    b"No space left on device": OTHER,  # ENOSPC
    b"Read-only file system": OTHER,  # EROFS: OSError in Python too, not PermissionError
    b"File name too long": OTHER,
    b"not a regular file": OTHER,
}


@pytest.mark.parametrize("reason, kind", STRERROR.items())
def test_scp_error_kind_of_each_strerror(reason, kind):
    assert _ssh.scp_error_kind(b"scp: /srv/x.txt: " + reason) == kind


@pytest.mark.parametrize(
    "line, kind",
    [
        (b"scp: x: no such file or directory", NOT_FOUND),  # any ASCII case
        (b"scp: x: PERMISSION DENIED", PERMISSION),
        (b"scp: x: Permission denied\n", PERMISSION),  # the line's end
        (b"scp: x: Permission denied \r\n", PERMISSION),
        (b"x: No such file or directory", NOT_FOUND),  # no "scp: "
        (b"No such file or directory", NOT_FOUND),  # the reason alone
        (b"scp: a: b: c: Operation not permitted", PERMISSION),  # a path with ": "
        # the reason is what follows the last ": ", so a path cannot pick the class
        (b"scp: Permission denied: Is a directory", OTHER),
        (b"scp: /tmp/No such file or directory: Permission denied", PERMISSION),
        (b"scp: x: No such file or directory (and more)", OTHER),
        (b"scp: x: No such file", OTHER),  # not a strerror text
        (b"scp: x: not found", OTHER),
        (b"scp: ambiguous target", OTHER),
        (b"", OTHER),
        (b": ", OTHER),
        (b"scp: x: Permission\x00denied", OTHER),
        (b"scp: x: Permission denied\x00", OTHER),
    ],
)
def test_scp_error_kind_table(line, kind):
    assert _ssh.scp_error_kind(line) == kind


def test_scp_error_kind_takes_any_buffer():
    assert _ssh.scp_error_kind(bytearray(b"scp: x: Permission denied")) == PERMISSION
    assert _ssh.scp_error_kind(memoryview(b"scp: x: Not a directory")) == NOT_FOUND
    with pytest.raises(TypeError):
        _ssh.scp_error_kind("scp: x: Permission denied")  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(prefix=st.binary(max_size=60), reason=st.sampled_from(sorted(STRERROR)))
@example(prefix=b"scp: Permission denied", reason=b"Is a directory")
def test_scp_error_kind_is_decided_by_the_last_field(prefix, reason):
    assert _ssh.scp_error_kind(prefix + b": " + reason) == STRERROR[reason]


@pytest.mark.slow
@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_scp_error_kind_of_anything_is_a_kind(line):
    assert _ssh.scp_error_kind(line) in (NOT_FOUND, PERMISSION, OTHER)


# The server's line, end to end through download (a fake `scp -f`: conftest's hostile_scp)
@pytest.mark.parametrize(
    "line, cls, base",
    [
        (
            b"\x01scp: wanted: No such file or directory\n",
            pyssh.SCPFileNotFoundError,
            FileNotFoundError,
        ),
        (b"\x01scp: wanted: Not a directory\n", pyssh.SCPFileNotFoundError, FileNotFoundError),
        (b"\x01scp: wanted: Permission denied\n", pyssh.SCPPermissionError, PermissionError),
        (b"\x02scp: wanted: operation not permitted\n", pyssh.SCPPermissionError, PermissionError),
        (b"\x01scp: Permission denied: Is a directory\n", pyssh.SCPError, None),
    ],
)
def test_scp_download_error_classes(hostile_scp, tmp_path, line, cls, base):
    to = tmp_path / "to"
    to.mkdir()
    with pytest.raises(pyssh.SCPError) as ei:
        hostile_scp([line], to=to)
    assert type(ei.value) is cls
    if base is not None:
        assert isinstance(ei.value, base)
    else:
        assert not isinstance(ei.value, (FileNotFoundError, PermissionError))
    assert ei.value.server_message == line[1:].decode().strip()
    assert os.listdir(to) == []


# ---- libssh failures: the server's words do not pick the class ---------------------------

# A server that logs anyone in, then answers a session channel's open with the texts pyssh
# used to match ("Timeout" made SSHTimeoutError, "Channel opening failure" added the
# MaxSessions hint, "Socket error" made the session lost): as the reason of a refusal
# (MODE "refuse"), or of SSH_MSG_DISCONNECT ("disconnect").
DISCONNECTING = textwrap.dedent(
    r"""
    import asyncio, sys
    import asyncssh

    MODE, REASON = sys.argv[1], sys.argv[2]

    class Server(asyncssh.SSHServer):
        def connection_made(self, conn):
            self.conn = conn
        def begin_auth(self, username):
            return False
        def session_requested(self):
            if MODE == "refuse":
                raise asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED, REASON)
            self.conn.disconnect(asyncssh.DISC_BY_APPLICATION, REASON)
            return False

    async def main():
        key = asyncssh.generate_private_key("ssh-ed25519")
        srv = await asyncssh.create_server(Server, "127.0.0.1", 0, server_host_keys=[key])
        print(srv.sockets[0].getsockname()[1], flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

    asyncio.run(main())
    """
)


@pytest.fixture
def disconnecting(tmp_path):
    pytest.importorskip("asyncssh")
    script = tmp_path / "disconnecting.py"
    script.write_text(DISCONNECTING)
    procs = []

    def start(mode, reason):
        p = subprocess.Popen(
            [sys.executable, str(script), mode, reason],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        procs.append(p)
        line = p.stdout.readline()
        assert line.strip().isdigit(), line
        return int(line)

    yield start
    for p in procs:
        p.stdin.close()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        p.stdout.close()


REASONS = [
    "Timeout, timed out",
    "Channel opening failure: channel 0 error (2) open failed",
    "Socket error: Connection refused; disconnected",
]


def connect(port, tmp_path):
    return pyssh.connect(
        f"anyone@127.0.0.1:{port}",
        known_hosts=tmp_path / "known_hosts",
        host_key_policy="ignore",
        config=False,
        timeout=30,
    )


@pytest.mark.slow
@pytest.mark.parametrize("reason", REASONS)
def test_a_disconnect_reason_does_not_pick_the_class(disconnecting, tmp_path, reason):
    with connect(disconnecting("disconnect", reason), tmp_path) as s:
        with pytest.raises(pyssh.SSHError) as ei:
            s.exec_internal("true", timeout=30)
    e = ei.value
    assert type(e) is pyssh.ConnectError, repr(e)
    assert not isinstance(e, TimeoutError)
    assert "the connection to the server was lost" in str(e)
    assert "MaxSessions" not in str(e)


@pytest.mark.slow
@pytest.mark.parametrize("reason", REASONS)
def test_a_refusal_reason_does_not_pick_the_class(disconnecting, tmp_path, reason):
    with connect(disconnecting("refuse", reason), tmp_path) as s:
        with pytest.raises(pyssh.SSHError) as ei:
            s.exec_internal("true", timeout=30)
        assert type(ei.value) is pyssh.SSHError, repr(ei.value)  # not a timeout, not lost
        assert reason in str(ei.value)  # the server's words are shown, not acted on
        assert s.connected  # a refusal leaves the session usable
