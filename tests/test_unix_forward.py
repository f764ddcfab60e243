"""Unix-domain socket forwarding against the real sshd (it runs on this machine:
the server's sockets are local files too): forward_local from a local socket path
to a server socket path (direct-streamlocal@openssh.com) or host:port, and
forward_remote from a server socket path (streamlocal-forward@openssh.com) to a
local socket or host:port. The echo servers are threads of the test."""

import hashlib
import json
import logging
import os
import shutil
import socket
import stat
import tempfile
import threading

import pytest

from conftest import Echo, wait_until
from hostile_ssh import HostileServer

pytestmark = pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no AF_UNIX")


@pytest.fixture
def sockdir():
    """A short directory (a socket's path must fit sun_path), removed after."""
    d = tempfile.mkdtemp(prefix="pyssh-ux-", dir="/tmp")
    os.chmod(d, 0o755)  # the server's user (the same one here) reaches it
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def session(server):
    with server.connect() as s:
        yield s


def round_trip(address, data):
    """Send `data`, then EOF, through a Unix path or a TCP port; the sha256 of
    what came back, and its length."""
    if isinstance(address, int):
        c = socket.create_connection(("127.0.0.1", address), timeout=30)
    else:
        c = socket.socket(socket.AF_UNIX)
        c.settimeout(30)
        c.connect(address)
    back, count = hashlib.sha256(), [0]

    def reader():
        while True:
            chunk = c.recv(1 << 18)
            if not chunk:
                return
            back.update(chunk)
            count[0] += len(chunk)

    r = threading.Thread(target=reader)
    r.start()
    c.sendall(data)
    c.shutdown(socket.SHUT_WR)
    r.join()
    c.close()
    return back.hexdigest(), count[0]


def test_local_socket_to_server_socket_and_to_tcp(session, sockdir):
    remote = Echo(os.path.join(sockdir, "remote.sock"))
    tcp = Echo()
    local = os.path.join(sockdir, "local.sock")
    data = os.urandom(4 << 20)
    try:
        with session.forward_local(local, remote.address) as tun:
            assert stat.S_IMODE(os.lstat(local).st_mode) == 0o600
            assert tun.listen == local and tun.target == remote.address
            assert round_trip(local, data) == (hashlib.sha256(data).hexdigest(), len(data))
            st = tun.stats
            assert (st.connections, st.bytes_to_target, st.bytes_from_target) == (
                1,
                len(data),
                len(data),
            )
        assert not os.path.exists(local)  # removed at close
        with session.forward_local(local, tcp.address) as tun:
            assert round_trip(local, b"hello") == (hashlib.sha256(b"hello").hexdigest(), 5)
        assert not os.path.exists(local)
    finally:
        remote.close()
        tcp.close()


def test_server_socket_to_local_socket_and_to_tcp(session, sockdir):
    local = Echo(os.path.join(sockdir, "target.sock"))
    tcp = Echo()
    data = os.urandom(1 << 20)
    try:
        for i, target in enumerate((local.address, tcp.address)):
            rpath = os.path.join(sockdir, f"server{i}.sock")
            with session.forward_remote(rpath, target) as tun:
                assert tun.listen.startswith(rpath) and tun.target == target
                assert round_trip(rpath, data) == (hashlib.sha256(data).hexdigest(), len(data))
                assert tun.stats.bytes_from_target == len(data)
            # the server stopped listening (cancel-streamlocal-forward)
            with socket.socket(socket.AF_UNIX) as c:
                with pytest.raises(OSError):
                    c.connect(rpath)
    finally:
        local.close()
        tcp.close()


def test_stale_socket_needs_unlink_and_a_file_is_never_removed(session, sockdir):
    path = os.path.join(sockdir, "stale.sock")
    s = socket.socket(socket.AF_UNIX)
    s.bind(path)
    s.close()  # a stale socket file: nobody listens
    with pytest.raises(FileExistsError, match="unlink=True"):
        session.forward_local(path, "127.0.0.1:9")
    with session.forward_local(path, "127.0.0.1:9", unlink=True):
        assert stat.S_ISSOCK(os.lstat(path).st_mode)
    assert not os.path.exists(path)
    plain = os.path.join(sockdir, "plain")
    with open(plain, "w") as f:
        f.write("keep me")
    with pytest.raises(FileExistsError, match="not a socket"):
        session.forward_local(plain, "127.0.0.1:9", unlink=True)
    with open(plain) as f:
        assert f.read() == "keep me"


def stale_socket(path):
    s = socket.socket(socket.AF_UNIX)
    s.bind(path)
    s.close()  # nobody listens
    return path


def test_stream_local_bind_unlink_from_the_config(server, sockdir, tmp_path):
    path = stale_socket(os.path.join(sockdir, "stale.sock"))
    config = tmp_path / "config"
    config.write_text("Host *\n  StreamLocalBindUnlink yes\n")
    with server.connect(config=str(config)) as s:
        with pytest.raises(FileExistsError):
            s.forward_local(path, "127.0.0.1:9", unlink=False)  # the argument wins
        with s.forward_local(path, "127.0.0.1:9"):
            assert stat.S_ISSOCK(os.lstat(path).st_mode)
        assert not os.path.exists(path)
    config.write_text("Host *\n  StreamLocalBindUnlink maybe\n")
    with pytest.raises(ValueError, match="StreamLocalBindUnlink"):
        server.connect(config=str(config))


def test_bad_paths_are_clear_errors(session, sockdir):
    with pytest.raises(ValueError, match="under"):
        session.forward_local("/" + "x" * 200, "127.0.0.1:9")
    with pytest.raises(ValueError, match="NUL"):
        session.forward_local(os.path.join(sockdir, "a\0b"), "127.0.0.1:9")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        session.forward_local(os.path.join(sockdir, "no", "x.sock"), "127.0.0.1:9")


def test_refused_server_path_fails_that_connection_only(session, sockdir, caplog):
    caplog.set_level(logging.WARNING, logger="pyssh")
    local = os.path.join(sockdir, "l.sock")
    missing = os.path.join(sockdir, "missing.sock")
    with session.forward_local(local, missing) as tun:
        c = socket.socket(socket.AF_UNIX)
        c.settimeout(30)
        c.connect(local)
        assert c.recv(10) == b""
        c.close()
        assert wait_until(lambda: tun.stats.failed, 10)
        assert tun.active and tun.stats.failed == 1
    assert any(
        f"could not connect to the socket {missing}" in r.getMessage() for r in caplog.records
    )


@pytest.mark.slow
def test_server_socket_opens_nobody_asked_for_are_refused(tmp_path):
    # a forwarded-streamlocal@openssh.com open with no socket forward of this
    # session's for its path: refused at once (guard.c), the session unharmed
    srv = HostileServer(tmp_path)
    try:
        with srv.connect() as s:
            got = json.loads(s.exec_internal("open forwarded-streamlocal@openssh.com 20 7").stdout)
            assert got["failure"] == {"1": 20} and got["confirmed"] == 0
            assert got["unanswered"] == 0
            assert json.loads(s.exec_internal("echo still here").stdout) == {"echo": "still here"}
    finally:
        srv.close()


def test_blocking_tunnel_on_a_local_socket(session, sockdir):
    """session.tunnel(): the same local socket as forward_local's, removed at the
    end; its target a server socket."""
    remote = Echo(os.path.join(sockdir, "remote.sock"))
    local = os.path.join(sockdir, "local.sock")
    got = []

    def connectable():
        # the path appears at bind(), and connect() is refused until listen()
        # (chmod comes between): a client tries again, as this one does
        c = socket.socket(socket.AF_UNIX)
        try:
            c.connect(local)
            return True
        except (FileNotFoundError, ConnectionRefusedError):
            return False
        finally:
            c.close()

    def client():
        wait_until(connectable, 30, interval=0.02)
        got.append(stat.S_IMODE(os.lstat(local).st_mode))
        got.append(round_trip(local, b"blocking"))

    th = threading.Thread(target=client)
    th.start()
    try:
        # the idle timeout ends the test should the client fail (never a hang)
        stats = session.tunnel(local, remote.address, max_connections=2, timeout=30)
    finally:
        th.join(30)
        remote.close()
    assert got == [0o600, (hashlib.sha256(b"blocking").hexdigest(), 8)]
    assert (stats.connections, stats.bytes_to_target) == (2, 8)  # the probe, the round trip
    assert not os.path.exists(local)
