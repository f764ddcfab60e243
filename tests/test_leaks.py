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
@pytest.mark.skipif("libasan" in os.environ.get("LD_PRELOAD", ""),
                    reason="AddressSanitizer's quarantine keeps freed memory: RSS says nothing")
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
            del s   # closed by garbage collection
        if i % 5 == 0:   # and some failures: a key the server refuses
            with pytest.raises(pyssh.AuthenticationError):
                pyssh.connect(server.address, keyfile=stranger, known_hosts=server.known_hosts,
                              config=False)
    gc.collect()
    assert open_sockets() == sockets
    # 2 MB over 600 connections: a leak of 4 KB per session would show
    assert rss_mb() - before < 2.0
