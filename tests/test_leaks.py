"""Leak checks: many sessions, successful and failed, leave memory and sockets flat."""

import gc
import os

import pytest

import pyssh

from conftest import open_sockets


def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 1e6


@pytest.mark.slow
@pytest.mark.skipif(
    "libasan" in os.environ.get("LD_PRELOAD", ""),
    reason="AddressSanitizer's quarantine keeps freed memory: RSS says nothing",
)
def test_sessions_do_not_leak(server, make_key):
    stranger = make_key("stranger")
    kw = dict(keyfile=server.client_key, known_hosts=server.known_hosts, config=False)
    for _ in range(30):
        pyssh.connect(server.address, **kw).close()
    gc.collect()
    before, sockets = rss_mb(), open_sockets()
    for i in range(500):
        s = pyssh.connect(server.address, **kw)
        s.info()
        if i % 2:
            s.close()
        else:
            del s  # closed by garbage collection
        if i % 5 == 0:  # and some failures: a key the server refuses
            with pytest.raises(pyssh.AuthenticationError):
                pyssh.connect(
                    server.address, keyfile=stranger, known_hosts=server.known_hosts, config=False
                )
    gc.collect()
    assert open_sockets() == sockets
    # 2 MB over 600 connections: a leak of 4 KB per session would show
    assert rss_mb() - before < 2.0


def open_fds():
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.slow
@pytest.mark.skipif(
    "libasan" in os.environ.get("LD_PRELOAD", ""),
    reason="AddressSanitizer's quarantine keeps freed memory: RSS says nothing",
)
def test_tunnels_do_not_leak(server):
    """Local and remote forwards opened and closed, connections served, blocking
    tunnels that time out: file descriptors and memory come back."""
    import socket
    import threading

    target = socket.socket()
    target.bind(("127.0.0.1", 0))
    target.listen(64)

    def serve():
        while True:
            try:
                c, _ = target.accept()
            except OSError:
                return
            with c:
                c.sendall(b"hi")

    threading.Thread(target=serve, daemon=True).start()
    address = f"127.0.0.1:{target.getsockname()[1]}"

    def cycle(s):
        # the server binds 127.0.0.1 only: with "localhost" it may get a port whose
        # 127.0.0.1 side is taken (by the test sshd itself) and listen on ::1 alone
        for make in (
            lambda: s.forward_local(0, address),
            lambda: s.forward_remote(0, address, bind_address="127.0.0.1"),
        ):
            with make() as t:
                for _ in range(3):
                    c = socket.create_connection(("127.0.0.1", t.port))
                    c.settimeout(10)
                    assert c.recv(2) == b"hi"
                    c.close()
        s.tunnel(0, address, timeout=0.01)

    with server.connect() as s:
        for _ in range(5):
            cycle(s)
        gc.collect()
        before, fds = rss_mb(), open_fds()
        for _ in range(60):
            cycle(s)
        gc.collect()
        assert open_fds() == fds
        assert rss_mb() - before < 2.0
    target.close()
