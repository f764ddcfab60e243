"""Bounded resources against a hostile server: a server can refuse, stall or lie,
but it cannot grow the client's memory without bound or hang it.

The server is tests/hostile_ssh.py (asyncssh's server in a child process, driven
at the packet level where asyncssh would behave); the client asks it to
misbehave by running a command, and reads back what the server saw. Remote
forwards are checked against the real sshd (the `server` fixture)."""

import json
import logging
import os
import socket
import time

import pytest

import pyssh
from pyssh import _ssh

from hostile_ssh import HostileServer

ASAN = "asan" in os.environ.get("LD_PRELOAD", "")
needs_rss = pytest.mark.skipif(
    ASAN, reason="AddressSanitizer's quarantine keeps freed memory: RSS says nothing"
)

OPEN_ADMINISTRATIVELY_PROHIBITED = 1
OPEN_UNKNOWN_CHANNEL_TYPE = 3
TUNNEL_BACKLOG = 64  # csrc/tunnel.c


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """One server for the module (it takes half a second to start); each test
    has a connection of its own."""
    srv = HostileServer(tmp_path_factory.mktemp("hostile"))
    yield srv
    srv.close()


@pytest.fixture
def hsession(hostile):
    with hostile.connect() as s:
        yield s


def ask(session, command, timeout=120):
    """Have the hostile server misbehave; its report of what came back."""
    r = session.exec_internal(command, timeout=timeout)
    return json.loads(r.stdout)


# ---- channel opens the client never asked for ----------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    "kind, reason",
    [
        ("x11", OPEN_ADMINISTRATIVELY_PROHIBITED),
        ("forwarded-tcpip", OPEN_ADMINISTRATIVELY_PROHIBITED),  # no forward asked for
        ("auth-agent@openssh.com", OPEN_ADMINISTRATIVELY_PROHIBITED),  # no agent forwarded
        ("session", OPEN_ADMINISTRATIVELY_PROHIBITED),
        ("direct-tcpip", OPEN_ADMINISTRATIVELY_PROHIBITED),
        ("no-such-type@example.com", OPEN_UNKNOWN_CHANNEL_TYPE),
    ],
)
def test_unsolicited_channel_opens_are_refused_at_once(hsession, kind, reason):
    # stock libssh kept each in its message list and never answered
    got = ask(hsession, f"open {kind} 300 22")
    assert got == {
        "sent": 300,
        "failure": {str(reason): 300},
        "confirmed": 0,
        "unimplemented": 0,
        "unanswered": 0,
    }
    assert ask(hsession, "echo still here") == {"echo": "still here"}


@needs_rss
@pytest.mark.slow
def test_a_flood_of_channel_opens_leaves_memory_flat(hsession):
    # measured before the guard: +29 to 31 MiB per 100,000 opens, kept for the session's life
    ask(hsession, "open x11 2000")  # warm up
    before = rss_bytes()
    for kind in ("x11", "session", "forwarded-tcpip"):
        got = ask(hsession, f"open {kind} 50000 5555")
        assert got["failure"] == {"1": 50000} and got["unanswered"] == 0
    grown = rss_bytes() - before
    assert grown < 6 << 20, f"RSS grew by {grown >> 20} MiB for 150,000 refused opens"


def test_forwarded_tcpip_for_another_sessions_forward_is_refused(server, hsession, tmp_path):
    # a remote forward on a real sshd, and a hostile server naming its port
    with server.connect() as other, other.forward_remote(0, "127.0.0.1:9") as tun:
        got = ask(hsession, f"open forwarded-tcpip 20 {tun.port}")
        assert got["failure"] == {"1": 20} and got["confirmed"] == 0


# ---- global requests -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["keepalive@openssh.com", "no-such-request@example.com", "tcpip-forward"]
)
def test_global_requests_that_want_a_reply_get_request_failure(hsession, name):
    # stock libssh answered SSH_MSG_UNIMPLEMENTED (RFC 4254 4 says REQUEST_FAILURE)
    got = ask(hsession, f"global {name} 200 1")
    assert got == {"sent": 200, "success": 0, "failure": 200, "unimplemented": 0, "unanswered": 0}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["hostkeys-00@openssh.com", "no-such-request@example.com"])
def test_global_requests_that_want_no_reply_get_none(tmp_path, name):
    srv = HostileServer(tmp_path, quiet=1.0)
    try:
        with srv.connect() as s:
            # stock libssh answered each with SSH_MSG_UNIMPLEMENTED all the same
            got = ask(s, f"global {name} 200 0")
            assert got["success"] == got["failure"] == got["unimplemented"] == 0
            assert ask(s, "echo ok") == {"echo": "ok"}
    finally:
        srv.close()


@needs_rss
@pytest.mark.slow
def test_a_flood_of_global_requests_leaves_memory_flat(hsession):
    ask(hsession, "global warm-up@example.com 2000 1")
    before = rss_bytes()
    got = ask(hsession, "global flood@example.com 100000 1")
    assert got["failure"] == 100000 and got["unanswered"] == 0
    grown = rss_bytes() - before
    assert grown < 4 << 20, f"RSS grew by {grown >> 20} MiB for 100,000 global requests"


# ---- channel requests on the client's own channel -----------------------------------------


@pytest.mark.parametrize("name", ["exec", "shell", "no-such-request@example.com"])
def test_channel_requests_from_the_server_get_channel_failure(hsession, name):
    # stock libssh dropped them unanswered: a server waiting for the reply waited forever
    assert ask(hsession, f"chanreq {name} 1") == {"reply": "failure"}


def test_channel_requests_that_want_no_reply_are_dropped(hsession):
    assert ask(hsession, "chanreq exec 0") == {"reply": "none"}
    assert ask(hsession, "echo ok") == {"echo": "ok"}


# ---- what was refused is logged ----------------------------------------------------------------


def test_refusals_are_logged_and_a_flood_is_not(hsession, caplog):
    caplog.set_level(logging.DEBUG, logger="pyssh")
    ask(hsession, "open x11 1")
    ask(hsession, "open session 1")
    ask(hsession, "open no-such-type@example.com 1")
    ask(hsession, "global keepalive@openssh.com 1 1")
    ask(hsession, "chanreq exec 1")
    lines = [r.getMessage() for r in caplog.records if r.name == "pyssh"]
    said = "\n".join(lines)
    assert "refused an x11 channel the server opened (from 10.9.8.7:6010)" in said
    assert "refused a channel of type session" in said
    assert "refused a channel of type unknown" in said
    assert "declined the server's global request keepalive@openssh.com" in said
    assert "declined the server's channel request exec" in said
    level = {m: r.levelno for r in caplog.records for m in [r.getMessage()]}
    assert {v for m, v in level.items() if "refused" in m} == {logging.INFO}  # opens
    assert {v for m, v in level.items() if "declined" in m} == {logging.DEBUG}
    caplog.clear()
    ask(hsession, "open x11 500")
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) < 50  # GUARD_LOG_MAX (csrc/guard.c) per session
    assert "further ones on this session are not logged" in refused[-1]


# ---- the legitimate queue: a remote forward nobody serves yet ---------------------------------


@pytest.mark.slow
def test_forwarded_connections_nobody_takes_are_capped(server):
    """listen_remote() without run(): the server's forwarded-tcpip opens for that
    port wait for the tunnel, TUNNEL_BACKLOG of them; the rest are refused and the
    server closes those connections at once. run() then serves the ones kept."""
    target = socket.socket()
    target.bind(("127.0.0.1", 0))
    target.listen(200)
    with server.connect() as s:
        t = _ssh.Tunnel(s)
        port = t.listen_remote("127.0.0.1", 0, "127.0.0.1", target.getsockname()[1], 30.0)
        conns = [socket.create_connection(("127.0.0.1", port)) for _ in range(100)]
        for c in conns:
            c.sendall(b"x")
        deadline = time.monotonic() + 30
        closed = set()
        while time.monotonic() < deadline and len(closed) < 100 - TUNNEL_BACKLOG:
            s.exec_internal("true")  # the client reads its socket: opens arrive
            for i, c in enumerate(conns):
                c.settimeout(0.01)
                try:
                    if c.recv(1) == b"":
                        closed.add(i)
                except socket.timeout:
                    pass
                except ConnectionResetError:
                    closed.add(i)
        assert len(closed) == 100 - TUNNEL_BACKLOG
        # the kept ones are served once the tunnel runs
        import threading

        th = threading.Thread(target=t.run, kwargs={"idle_timeout": 5.0})
        th.start()
        target.settimeout(30)
        served = [target.accept()[0] for _ in range(TUNNEL_BACKLOG)]
        for a in served:
            a.settimeout(30)
            assert a.recv(1) == b"x"  # sent before the tunnel ran: kept
            a.close()
        for c in conns:
            c.close()
        t.stop()
        th.join(30)
        t.close()
    target.close()


# ---- stderr nobody reads ------------------------------------------------------------------------

GIB = 1 << 30


@needs_rss
@pytest.mark.slow
def test_a_gib_of_stderr_on_the_sftp_channel_leaves_memory_flat(tmp_path):
    srv = HostileServer(tmp_path, sftp_stderr=GIB)
    try:
        with srv.connect() as s, s.sftp() as sftp:
            before = rss_bytes()
            with pytest.raises(pyssh.SFTPFileNotFoundError):
                sftp.stat("/anything")  # 1 GiB of stderr first, then the answer
            grown = rss_bytes() - before
            assert grown < 16 << 20, f"RSS grew by {grown >> 20} MiB"
    finally:
        srv.close()


@needs_rss
@pytest.mark.slow
def test_a_gib_of_stderr_on_the_scp_channel_leaves_memory_flat(tmp_path):
    srv = HostileServer(tmp_path, scp_stderr=GIB)
    try:
        with srv.connect() as s:
            before = rss_bytes()
            s.scp_download("x", to=str(tmp_path), verbose=False)
            grown = rss_bytes() - before
            assert (tmp_path / "x").read_bytes() == b"hello"
            assert grown < 16 << 20, f"RSS grew by {grown >> 20} MiB"
    finally:
        srv.close()


# ---- a packet over libssh's limit --------------------------------------------------------------


@pytest.mark.slow
def test_an_oversized_packet_ends_the_session_with_a_clear_error(tmp_path):
    srv = HostileServer(tmp_path, quiet=1.0)
    try:
        s = srv.connect()
        with pytest.raises(
            pyssh.ConnectError,
            match=r"the server sent a packet of 1048\d+ "
            r"bytes, more than the 262144 that libssh accepts",
        ):
            s.exec_internal("bigpacket 1048576", timeout=30)
        # the session is dead, and says so at once (not after a timeout)
        with pytest.raises(pyssh.ConnectError, match="connect again"):
            s.exec_internal("echo again", timeout=30)
        s.close()
    finally:
        srv.close()


# ---- an interactive process (session.popen) --------------------------------------


@pytest.mark.parametrize(
    "name",
    [b"TERM", b"\x1b]0;owned\x07TERM", b"X" * 200, b"../../etc/passwd"],
    ids=["plain", "escapes", "long", "path"],
)
def test_an_exit_signal_is_reported_safely(hsession, name):
    with hsession.popen(f"exitsignal {name.hex()}") as p:
        code = p.wait(timeout=30)
        assert p.exit_signal is not None and p.exit_signal.isprintable()
        assert len(p.exit_signal) <= 40
        assert code == (-15 if name == b"TERM" else -1)
        assert p.core_dumped


@needs_rss
@pytest.mark.slow
def test_a_gib_of_unread_stderr_leaves_a_process_bounded(hsession):
    """Waiting on a process keeps at most 8 MiB of a stream nobody reads: then the
    server is made to wait (the window stays shut) and the wait times out."""
    with hsession.popen(f"stderr {GIB}") as p:
        before = rss_bytes()
        with pytest.raises(pyssh.SSHTimeoutError):
            p.wait(timeout=3)
        grown = rss_bytes() - before
        assert grown < 32 << 20, f"RSS grew by {grown >> 20} MiB"
        assert p.stderr.read(10) == b"E" * 10
