"""Dynamic forwarding (Session.forward_dynamic, ssh -D) against the real sshd: SOCKS 4,
4a and 5 clients, written here and curl's, reaching a local HTTP server through the
proxy; malformed handshakes, refused targets, stalled clients, statistics, closing."""

import hashlib
import http.server
import logging
import os
import shutil
import socket
import struct
import subprocess
import threading
import time

import pytest

import pyssh
from pyssh import _tunnel
from pyssh.testing import SSHServer

from conftest import wait_until

BIG = 16 << 20
BLOCK = hashlib.sha256(b"socks").digest() * (1 << 15)  # 1 MiB, repeatable


class _Handler(http.server.BaseHTTPRequestHandler):
    """GET /hello: "hello"; GET /big: BIG bytes of BLOCK; GET /echo/<word>: <word>."""

    protocol_version = "HTTP/1.0"

    def do_GET(self):
        if self.path == "/big":
            self._head(BIG)
            for _ in range(BIG // len(BLOCK)):
                self.wfile.write(BLOCK)
            return
        body = self.path.split("/echo/", 1)[1].encode() if "/echo/" in self.path else b"hello"
        self._head(len(body))
        self.wfile.write(body)

    def _head(self, n):
        self.send_response(200)
        self.send_header("Content-Length", str(n))
        self.end_headers()

    def log_message(self, *args):
        pass


class _Server(http.server.ThreadingHTTPServer):
    request_queue_size = 128  # the default 5 makes concurrent clients wait for SYN retries
    daemon_threads = True


class _V6Server(_Server):
    address_family = socket.AF_INET6


def _serve(cls, host):
    httpd = cls((host, 0), _Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


@pytest.fixture(scope="module")
def web():
    """The target: an HTTP server on 127.0.0.1; its port."""
    httpd = _serve(_Server, "127.0.0.1")
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def session(server):
    with server.connect() as s:
        yield s


@pytest.fixture
def proxy(session):
    with session.forward_dynamic(0) as tun:
        yield tun


def closed_port():
    """A port on 127.0.0.1 that nothing listens on (bound, never listened)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    return s, s.getsockname()[1]


# ---- a small SOCKS client ------------------------------------------------------------------


def recv_exact(c, n):
    """Up to n bytes: fewer only at EOF."""
    data = b""
    while len(data) < n:
        chunk = c.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def recv_all(c):
    data = bytearray()
    while True:
        chunk = c.recv(1 << 16)
        if not chunk:
            return bytes(data)
        data += chunk


def closed_by_peer(c):
    """The proxy closed the connection (EOF or reset), sending nothing more."""
    try:
        return c.recv(100) == b""
    except ConnectionResetError:
        return True


def connect(tun):
    return socket.create_connection(("127.0.0.1", tun.port), timeout=20)


def s5_request(host, port, cmd=1):
    """A SOCKS 5 request: host is a name, or an IPv4/IPv6 address literal."""
    for family, atyp in ((socket.AF_INET, 1), (socket.AF_INET6, 4)):
        try:
            addr = bytes([atyp]) + socket.inet_pton(family, host)
            break
        except OSError:
            pass
    else:
        name = host.encode()
        addr = bytes([3, len(name)]) + name
    return bytes([5, cmd, 0]) + addr + struct.pack(">H", port)


def socks5(tun, host, port, data=b"", pipelined=False):
    """Connect through the proxy with SOCKS 5: (socket, the 10-byte reply)."""
    c = connect(tun)
    greeting = b"\x05\x01\x00"
    if pipelined:  # greeting, request and data in one write
        c.sendall(greeting + s5_request(host, port) + data)
        assert recv_exact(c, 2) == b"\x05\x00"
    else:
        c.sendall(greeting)
        assert recv_exact(c, 2) == b"\x05\x00"
        c.sendall(s5_request(host, port) + data)
    return c, recv_exact(c, 10)


def socks4(tun, host, port, data=b"", user=b"me"):
    """SOCKS 4 for an IPv4 address, 4a for a name: (socket, the 8-byte reply)."""
    c = connect(tun)
    try:
        req = struct.pack(">BBH", 4, 1, port) + socket.inet_aton(host) + user + b"\0"
    except OSError:
        req = struct.pack(">BBH", 4, 1, port) + b"\0\0\0\x01" + user + b"\0" + host.encode() + b"\0"
    c.sendall(req + data)
    return c, recv_exact(c, 8)


def get(path, host="localhost"):
    return f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode()


def body(c):
    """The body of the HTTP response on c, read to EOF."""
    head, _, rest = recv_all(c).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200"), head
    return rest


OK5 = b"\x05\x00\x00\x01" + bytes(6)
OK4 = b"\x00\x5a" + bytes(6)


# ---- reaching the target -------------------------------------------------------------------


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
@pytest.mark.parametrize("pipelined", [False, True])
def test_socks5_reaches_the_target(proxy, web, host, pipelined):
    c, rep = socks5(proxy, host, web, pipelined=pipelined)
    with c:
        assert rep == OK5
        c.sendall(get("/hello"))
        assert body(c) == b"hello"


@pytest.mark.slow
def test_socks5_ipv6_target(proxy):
    try:
        httpd = _serve(_V6Server, "::1")
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    try:
        c, rep = socks5(proxy, "::1", httpd.server_address[1])
        with c:
            assert rep == OK5
            c.sendall(get("/hello", "[::1]"))
            assert body(c) == b"hello"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"], ids=["socks4", "socks4a"])
def test_socks4_and_4a_reach_the_target(proxy, web, host):
    c, rep = socks4(proxy, host, web)
    with c:
        assert rep == OK4
        c.sendall(get("/hello"))
        assert body(c) == b"hello"


@pytest.mark.skipif(shutil.which("curl") is None, reason="no curl (bash .ci/run installs it)")
@pytest.mark.parametrize("option", ["--socks5-hostname", "--socks5", "--socks4a", "--socks4"])
def test_curl(proxy, web, option):
    host = "127.0.0.1" if option == "--socks4" else "localhost"
    r = subprocess.run(
        ["curl", "-sS", "--max-time", "20", option, f"127.0.0.1:{proxy.port}"]
        + [f"http://{host}:{web}/echo/curl"],
        capture_output=True,
        timeout=30,
        # curl is not ours: without the sanitizer an ASan run preloads (it hangs under it)
        env={k: v for k, v in os.environ.items() if k != "LD_PRELOAD"},
    )
    assert (r.returncode, r.stdout, r.stderr) == (0, b"curl", b"")


def test_requests_with_pysocks(proxy, web):
    import requests  # requests[socks]: the test extras, so that this never skips

    url = f"socks5h://127.0.0.1:{proxy.port}"
    r = requests.get(f"http://localhost:{web}/echo/pysocks", proxies={"http": url}, timeout=20)
    assert r.text == "pysocks"


@pytest.mark.parametrize("version", [4, 5])
def test_data_sent_with_the_request_arrives(proxy, web, version):
    """Optimistic data: the HTTP request in the same write as the SOCKS request."""
    if version == 5:
        c, rep = socks5(proxy, "localhost", web, data=get("/echo/early"), pipelined=True)
    else:
        c, rep = socks4(proxy, "localhost", web, data=get("/echo/early"))
    with c:
        assert rep == (OK5 if version == 5 else OK4)
        assert body(c) == b"early"


def test_sixteen_mib_download_is_intact(proxy, web):
    c, rep = socks5(proxy, "localhost", web)
    with c:
        assert rep == OK5
        c.sendall(get("/big"))
        data = body(c)
    assert len(data) == BIG
    assert hashlib.sha256(data).digest() == hashlib.sha256(BLOCK * (BIG // len(BLOCK))).digest()


def test_concurrent_clients(proxy, web):
    results, errors = {}, []

    def one(i):
        try:
            c, rep = (socks5 if i % 2 else socks4)(proxy, "localhost", web)
            with c:
                c.sendall(get(f"/echo/n{i}"))
                results[i] = body(c)
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(40)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    assert results == {i: f"n{i}".encode() for i in range(40)}
    assert wait_until(lambda: proxy.stats.active == 0, 10)
    assert proxy.stats.connections == 40 and proxy.stats.failed == 0


def test_stats_count_bytes_connections_and_failures(proxy, web):
    request = get("/echo/counted")
    c, rep = socks5(proxy, "localhost", web)
    with c:
        assert rep == OK5
        c.sendall(request)
        response = recv_all(c)
    sock, port = closed_port()
    with sock:
        c, rep = socks5(proxy, "127.0.0.1", port)
        c.close()
    c = connect(proxy)
    c.sendall(b"\x07")  # not SOCKS
    assert closed_by_peer(c)
    c.close()
    assert wait_until(lambda: proxy.stats.active == 0, 10)
    s = proxy.stats
    assert (s.connections, s.failed, s.active) == (3, 2, 0)
    # payload only: the handshakes are not counted
    assert (s.bytes_to_target, s.bytes_from_target) == (len(request), len(response))


# ---- refusals --------------------------------------------------------------------------------


def test_refused_target(session, web, caplog):
    caplog.set_level(logging.WARNING, logger="pyssh")
    sock, port = closed_port()
    with sock, session.forward_dynamic(0) as proxy:
        c, rep = socks5(proxy, "127.0.0.1", port)
        with c:
            assert rep == b"\x05\x05\x00\x01" + bytes(6)  # connection refused
            assert closed_by_peer(c)
        c, rep = socks4(proxy, "127.0.0.1", port)
        with c:
            assert rep == b"\x00\x5b" + bytes(6)
            assert closed_by_peer(c)
        c, rep = socks5(proxy, "localhost", web)  # and the proxy serves on
        with c:
            assert rep == OK5
        assert wait_until(lambda: proxy.stats.failed == 2, 10)
    # logged once the tunnel's loop hands its messages over
    assert f"could not connect to 127.0.0.1:{port}" in caplog.text


def test_unresolvable_target_is_refused(proxy):
    """OpenSSH's sshd gives every failed connect the same reason code, and pyssh
    reads no meaning into its text: 0x05."""
    c, rep = socks5(proxy, "no-such-host.invalid", 80)
    with c:
        assert rep[:2] == b"\x05\x05"


def test_target_the_server_forbids_is_not_allowed(web):
    """sshd's PermitOpen refuses other targets as "administratively prohibited": SOCKS
    5's 0x02 (not allowed by ruleset)."""
    with SSHServer(extra_config=[f"PermitOpen 127.0.0.1:{web}"]) as srv, srv.connect() as s:
        with s.forward_dynamic(0) as proxy:
            c, rep = socks5(proxy, "127.0.0.1", web)
            with c:
                assert rep == OK5
            c, rep = socks5(proxy, "localhost", web)
            with c:
                assert rep == b"\x05\x02\x00\x01" + bytes(6)


G = b"\x05\x01\x00"  # the SOCKS 5 greeting: "no authentication"
S4A = b"\x04\x01\x00\x50\x00\x00\x00\x01"  # SOCKS 4a, port 80, then user id and host
IP = b"\x01\x7f\x00\x00\x01"  # SOCKS 5's IPv4 address 127.0.0.1


def rep5(code):
    """The method reply, then a request's reply with `code`."""
    return b"\x05\x00\x05" + bytes([code]) + b"\x00\x01" + bytes(6)


REP4 = b"\x00\x5b" + bytes(6)

MALFORMED = {
    # what the client sends: all that it gets back before the proxy closes
    "not-socks": (b"GET / HTTP/1.0\r\n\r\n", b""),
    "socks5-no-acceptable-method": (b"\x05\x01\x02", b"\x05\xff"),
    "socks5-no-methods": (b"\x05\x00", b"\x05\xff"),
    "socks5-bind": (G + b"\x05\x02\x00" + IP + b"\x00\x50", rep5(7)),
    "socks5-udp-associate": (G + b"\x05\x03\x00" + IP + b"\x00\x50", rep5(7)),
    "socks5-request-version": (G + b"\x04\x01\x00" + IP + b"\x00\x50", rep5(1)),
    "socks5-reserved-byte": (G + b"\x05\x01\x01" + IP + b"\x00\x50", rep5(1)),
    "socks5-address-type": (G + b"\x05\x01\x00\x02\x7f\x00\x00\x01\x00\x50", rep5(8)),
    "socks5-port-0": (G + b"\x05\x01\x00" + IP + b"\x00\x00", rep5(1)),
    "socks5-empty-name": (G + b"\x05\x01\x00\x03\x00\x00\x50", rep5(1)),
    "socks5-name-with-nul": (G + b"\x05\x01\x00\x03\x05lo\x00al\x00\x50", rep5(1)),
    "socks5-name-with-newline": (G + b"\x05\x01\x00\x03\x04a\nb.\x00\x50", rep5(1)),
    "socks4-bind": (b"\x04\x02\x00\x50\x7f\x00\x00\x01me\x00", REP4),
    "socks4-port-0": (b"\x04\x01\x00\x00\x7f\x00\x00\x01me\x00", REP4),
    "socks4-address-0": (b"\x04\x01\x00\x50\x00\x00\x00\x00me\x00", REP4),
    "socks4-long-user-id": (b"\x04\x01\x00\x50\x7f\x00\x00\x01" + b"u" * 300, REP4),
    "socks4a-long-name": (S4A + b"me\x00" + b"h" * 300 + b"\x00", REP4),
    "socks4a-empty-name": (S4A + b"me\x00\x00", REP4),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_handshake_gets_its_reply_and_the_proxy_serves_on(proxy, web, name):
    sent, reply = MALFORMED[name]
    c = connect(proxy)
    with c:
        c.sendall(sent)
        assert recv_all(c) == reply  # then closed
    c, rep = socks5(proxy, "localhost", web)
    with c:
        assert rep == OK5
        c.sendall(get("/hello"))
        assert body(c) == b"hello"
    assert wait_until(lambda: proxy.stats.failed == 1, 10)


def test_every_truncated_handshake_is_closed(proxy, web):
    """Each prefix of valid handshakes, then EOF: closed without a crash, counted."""
    whole = [G + s5_request("localhost", web), S4A + b"me\x00localhost\x00"]
    prefixes = [w[:n] for w in whole for n in range(1, len(w))]
    for p in prefixes:
        c = connect(proxy)
        with c:
            c.sendall(p)
            c.shutdown(socket.SHUT_WR)
            data = recv_all(c)
            assert data in (b"", b"\x05\x00")
    assert wait_until(lambda: proxy.stats.failed == len(prefixes), 10)


# ---- stalled clients, bounds -------------------------------------------------------------


@pytest.fixture
def short_handshake(monkeypatch):
    monkeypatch.setattr(_tunnel, "SOCKS_HANDSHAKE_TIMEOUT", 0.3)


@pytest.mark.slow
def test_stalled_handshake_is_closed(short_handshake, session, web, caplog):
    caplog.set_level(logging.WARNING, logger="pyssh")
    with session.forward_dynamic(0) as tun:
        stalled = connect(tun)
        stalled.sendall(b"\x05\x01")  # half a greeting
        c, rep = socks5(tun, "localhost", web)  # served meanwhile
        with c:
            assert rep == OK5
        assert closed_by_peer(stalled)
        stalled.close()
        assert wait_until(lambda: tun.stats.failed == 1, 10)
    assert "time limit" in caplog.text


@pytest.mark.slow
def test_handshakes_at_once_are_bounded(monkeypatch, session, web):
    """At most 64 clients in the handshake: the next one waits in the listening
    socket's backlog until the stalled ones are closed, then is served."""
    monkeypatch.setattr(_tunnel, "SOCKS_HANDSHAKE_TIMEOUT", 2.0)
    with session.forward_dynamic(0) as tun:
        stalled = [connect(tun) for _ in range(64)]
        assert wait_until(lambda: tun.stats.active == 64, 10)
        c = connect(tun)
        c.sendall(b"\x05\x01\x00")
        time.sleep(0.5)
        assert tun.stats.connections == 64  # not accepted yet
        assert recv_exact(c, 2) == b"\x05\x00"  # once the stalled ones are closed
        c.sendall(s5_request("localhost", web))
        assert recv_exact(c, 10) == OK5
        c.close()
        for s in stalled:
            assert closed_by_peer(s)
            s.close()
        assert tun.stats.failed == 64


# ---- closing ----------------------------------------------------------------------------------


def test_close_stops_the_proxy(session, web):
    tun = session.forward_dynamic(0)
    port = tun.port
    in_handshake = connect(tun)
    in_handshake.sendall(b"\x05")
    c, rep = socks5(tun, "localhost", web)
    assert rep == OK5
    tun.close()
    tun.close()  # again: nothing
    assert not tun.active
    assert closed_by_peer(in_handshake) and closed_by_peer(c)
    in_handshake.close()
    c.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5)


def test_session_close_closes_the_proxy(server, web):
    s = server.connect()
    tun = s.forward_dynamic(0)
    c, rep = socks5(tun, "localhost", web)
    assert rep == OK5
    s.close()
    assert not tun.active
    assert closed_by_peer(c)
    c.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", tun.port), timeout=5)


# ---- arguments ---------------------------------------------------------------------------------


def test_default_port_and_bind(session):
    try:
        tun = session.forward_dynamic()
    except OSError:
        pytest.skip("port 1080 is in use on this machine")
    with tun:
        assert tun.port == 1080 and tun.listen == "127.0.0.1:1080" and tun.kind == "dynamic"
        assert "dynamic" in repr(tun)


def test_a_proxy_on_every_interface_is_warned_about(session, caplog):
    caplog.set_level(logging.WARNING, logger="pyssh")
    with session.forward_dynamic(0, bind="::1"):
        pass
    assert "not on a loopback address" not in caplog.text
    with session.forward_dynamic(0, bind="0.0.0.0") as tun:
        assert tun.port > 0
    assert "not on a loopback address: anyone who can reach it" in caplog.text


def test_bad_arguments(session):
    with pytest.raises(TypeError):
        session.forward_dynamic("1080")
    with pytest.raises(ValueError):
        session.forward_dynamic(70000)
    with pytest.raises(ValueError):
        session.forward_dynamic(0, bind="")
    with pytest.raises(OSError):
        session.forward_dynamic(0, bind="192.0.2.1")  # not this machine's
    with session.forward_dynamic(0) as tun, pytest.raises(OSError, match="in use"):
        session.forward_dynamic(tun.port)


def test_closed_session(server):
    s = server.connect()
    s.close()
    with pytest.raises(pyssh.SSHError):
        s.forward_dynamic(0)
