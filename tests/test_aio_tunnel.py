"""pyssh.aio's tunnels: forward_local, forward_remote and forward_dynamic served by the
event loop itself (the C tunnel's run(defer=True) stepped by a task), against the test
sshd, with the targets started by the tests in the same loop (asyncio.start_server on
127.0.0.1). No thread: everything runs in the loop's."""

import asyncio
import os
import socket
import struct
import sys
import threading
import time

import pytest
from test_aio import SLOWER, Heartbeat, _connect  # (tests/ is on sys.path: pytest puts it there)

import pyssh
import pyssh.aio
from pyssh import _ssh


async def _echo(reader, writer):
    try:
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
        writer.write_eof()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def _echo_server():
    srv = await asyncio.start_server(_echo, "127.0.0.1", 0)
    return srv, srv.sockets[0].getsockname()[1]


async def _round_trip(port, payload):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    writer.write_eof()
    got = await reader.read()
    writer.close()
    return got


def _threads():
    return {t for t in threading.enumerate() if t.name.startswith("pyssh-tunnel")}


def test_forward_local_round_trip_stats_and_close(server):
    async def main():
        srv, eport = await _echo_server()
        async with await _connect(server) as s:
            t = await s.forward_local(0, f"127.0.0.1:{eport}")
            assert isinstance(t, pyssh.aio.AsyncTunnel) and t.active and t.port > 0
            assert not _threads()  # served by the loop, no thread
            assert await _round_trip(t.port, b"hello through the loop") == b"hello through the loop"
            assert await _round_trip(t.port, b"x" * 100_000) == b"x" * 100_000
            st = t.stats
            assert (st.connections, st.bytes_to_target, st.bytes_from_target) == (
                2,
                100_022,
                100_022,
            )
            await t.close()
            assert not t.active and t.error is None
            await t.close()  # again: nothing
            assert t.stats.connections == 2
            with pytest.raises(OSError):  # the listening socket is gone
                await asyncio.open_connection("127.0.0.1", t.port)
            assert (await s.run("echo still here")).stdout == b"still here\n"
        srv.close()

    asyncio.run(main())


@pytest.mark.slow
def test_many_concurrent_connections_on_two_tunnels_and_commands_meanwhile(server):
    async def main():
        srv, eport = await _echo_server()
        async with await _connect(server) as s:
            a = await s.forward_local(0, f"127.0.0.1:{eport}")
            b = await s.forward_local(0, f"127.0.0.1:{eport}")
            async with a, b:
                payloads = [os.urandom(1000 + 997 * i) for i in range(60)]
                runs = [s.run(f"echo {i}") for i in range(5)]
                ports = [a.port, b.port] * 30
                got = await asyncio.gather(
                    *(_round_trip(p, d) for p, d in zip(ports, payloads)), *runs
                )
                assert got[:60] == payloads
                assert [r.stdout for r in got[60:]] == [f"{i}\n".encode() for i in range(5)]
                for t in (a, b):
                    assert t.stats.connections == 30 and t.stats.failed == 0
                assert not _threads()
        srv.close()

    asyncio.run(main())


# the application at the other end of a big transfer, in its own process so that the
# heartbeat measures the tunnel's hold on the loop (and the echo server's), not the
# client's: sends argv[2] MiB of a pattern to the port argv[1] while it reads the echo,
# then prints the SHA-256 of what it sent and of what came back, and the count
_PEER = """
import hashlib, os, socket, sys, threading
port, n = int(sys.argv[1]), int(sys.argv[2])
block = os.urandom(1 << 20)
c = socket.create_connection(("127.0.0.1", port))
sent = hashlib.sha256()
def send():
    for _ in range(n):
        sent.update(block)
        c.sendall(block)
    c.shutdown(socket.SHUT_WR)
th = threading.Thread(target=send)
th.start()
got, count = hashlib.sha256(), 0
while data := c.recv(1 << 20):
    got.update(data)
    count += len(data)
th.join()
print(sent.hexdigest(), got.hexdigest(), count)
"""


@pytest.mark.slow
def test_large_transfer_integrity_and_loop_responsiveness(server):
    """64 MiB each way through the tunnel, hashed; a heartbeat task's worst delay meanwhile."""
    mib = 64

    async def main():
        srv, eport = await _echo_server()
        async with await _connect(server) as s:
            async with await s.forward_local(0, f"127.0.0.1:{eport}") as t:
                peer = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-c",
                    _PEER,
                    str(t.port),
                    str(mib),
                    stdout=asyncio.subprocess.PIPE,
                )
                beat = Heartbeat()
                out, _ = await beat.around(peer.communicate())
                sent, got, n = out.split()
                assert int(n) == mib << 20 and got == sent
                assert t.stats.bytes_to_target == mib << 20 == t.stats.bytes_from_target
                # the loop's own holds (less the time its thread waited for a core on a
                # busy machine), and the CPU it spent while the heartbeat waited
                held, cpu = beat.worst_held * 1e3, beat.worst_cpu * 1e3
                assert held < 50 * SLOWER, f"the loop was held {held:.0f} ms"
                assert cpu < 20 * SLOWER, f"a step took {cpu:.0f} ms of CPU"
        srv.close()

    asyncio.run(main())


@pytest.mark.slow
def test_forward_remote_to_a_local_server(server):
    async def main():
        srv, eport = await _echo_server()
        async with await _connect(server) as s:
            t = await s.forward_remote(0, f"127.0.0.1:{eport}", bind_address="127.0.0.1")
            async with t:
                assert t.port > 0 and t.kind == "remote"
                # the test sshd is on this machine: its port is reached directly
                payloads = [os.urandom(50_000 + i) for i in range(4)]
                got = await asyncio.gather(*(_round_trip(t.port, p) for p in payloads))
                assert got == payloads
                assert t.stats.connections == 4
            with pytest.raises(OSError):  # closed: the server no longer listens there
                await asyncio.open_connection("127.0.0.1", t.port)
            with pytest.raises(pyssh.SSHError, match="refused to listen"):  # in use there
                await s.forward_remote(
                    srv.sockets[0].getsockname()[1], f"127.0.0.1:{eport}", bind_address="127.0.0.1"
                )
            assert (await s.run("echo ok")).stdout == b"ok\n"
        srv.close()

    asyncio.run(main())


async def _socks5(port, host, tport):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"\x05\x01\x00")
    assert await reader.readexactly(2) == b"\x05\x00"
    name = host.encode()
    writer.write(b"\x05\x01\x00\x03" + bytes([len(name)]) + name + struct.pack(">H", tport))
    rep = await reader.readexactly(10)
    return reader, writer, rep


@pytest.mark.slow
def test_forward_dynamic_socks5(server):
    async def main():
        srv, eport = await _echo_server()
        async with await _connect(server) as s:
            async with await s.forward_dynamic(0) as t:
                assert t.kind == "dynamic"
                reader, writer, rep = await _socks5(t.port, "localhost", eport)
                assert rep[:2] == b"\x05\x00"  # succeeded
                writer.write(b"socks in the loop")
                writer.write_eof()
                assert await reader.read() == b"socks in the loop"
                writer.close()
                closed = socket.socket()
                closed.bind(("127.0.0.1", 0))  # bound, never listening: refused
                _, w2, rep = await _socks5(t.port, "127.0.0.1", closed.getsockname()[1])
                closed.close()
                assert rep[:2] != b"\x05\x00"
                w2.close()
        srv.close()

    asyncio.run(main())


@pytest.mark.slow
def test_close_while_connections_are_open(server):
    async def main():
        srv, eport = await _echo_server()
        async with await _connect(server) as s:
            t = await s.forward_local(0, f"127.0.0.1:{eport}")
            conns = [await asyncio.open_connection("127.0.0.1", t.port) for _ in range(3)]
            for r, w in conns:
                w.write(b"ping")
                assert await r.readexactly(4) == b"ping"
            assert t.stats.active == 3
            await asyncio.wait_for(t.close(), 10)
            for r, w in conns:  # each was closed: EOF (or a reset)
                try:
                    assert await asyncio.wait_for(r.read(), 5) == b""
                except ConnectionResetError:
                    pass
                w.close()
            assert t.stats.active == 0 and not t.active
            assert (await s.run("echo ok")).stdout == b"ok\n"
        srv.close()

    asyncio.run(main())


def test_cancelling_the_serving_task(server):
    async def main():
        srv, eport = await _echo_server()
        async with await _connect(server) as s:
            t = await s.forward_local(0, f"127.0.0.1:{eport}")
            r, w = await asyncio.open_connection("127.0.0.1", t.port)
            w.write(b"ping")
            assert await r.readexactly(4) == b"ping"
            t.task.cancel()
            await t.wait_closed()
            assert t.task.cancelled() and not t.active
            try:  # its connection was closed, as Ctrl-C does in the blocking run
                assert await asyncio.wait_for(r.read(), 5) == b""
            except ConnectionResetError:
                pass
            w.close()
            assert t.stats.active == 0
            await t.close()  # still fine
            # the session is usable, and a new tunnel serves
            async with await s.forward_local(0, f"127.0.0.1:{eport}") as t2:
                assert await _round_trip(t2.port, b"again") == b"again"
        srv.close()

    asyncio.run(main())


@pytest.mark.slow
def test_stop_from_another_thread_ends_the_deferred_run(server):
    async def main():
        srv, eport = await _echo_server()
        async with await _connect(server) as s:
            t = await s.forward_local(0, f"127.0.0.1:{eport}")
            assert await _round_trip(t.port, b"one") == b"one"
            threading.Timer(0.2, t._c.stop).start()
            await asyncio.wait_for(t.wait_closed(), 5)  # not cancelled: ended cleanly
            assert not t.task.cancelled() and t.error is None
            assert t.stats.connections == 1
            await t.close()
        srv.close()

    asyncio.run(main())


@pytest.mark.slow
def test_session_closed_under_a_serving_tunnel(server):
    async def main():
        srv, eport = await _echo_server()
        s = await _connect(server)
        t = await s.forward_local(0, f"127.0.0.1:{eport}")
        assert await _round_trip(t.port, b"one") == b"one"
        s.close()
        await asyncio.wait_for(t.wait_closed(), 5)
        assert isinstance(t.error, pyssh.SessionClosedError)
        await t.close()
        srv.close()

    asyncio.run(main())


def test_deferred_run_op_reports_the_tunnels_sockets(server):
    """Tunnel.run(defer=True) is an Op whose step() lists the listening socket (and
    the session's); the tunnel is claimed while it runs."""
    with pyssh.connect(
        server.address, keyfile=server.client_key, known_hosts=server.known_hosts, config=False
    ) as s:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        c = _ssh.Tunnel(s)
        c.listen_local(sock.fileno(), "127.0.0.1", 9, False)
        op = c.run(defer=True)
        fds, _ = op.step()
        assert (sock.fileno(), _ssh.POLLIN) in fds
        with pytest.raises(RuntimeError, match="running"):
            c.close()
        c.stop()
        while op.step() is not None:
            time.sleep(0.01)
        assert op.result()[0] == 0
        c.close()
        sock.close()


@pytest.mark.slow
def test_a_driver_moves_a_deferred_tunnel(server):
    """The same Op in pyssh.Group's engine (one poll() for many, in a worker thread,
    whose slices last 5 s): its tunnel's sockets are polled with the session's, and
    stop() from another thread ends it."""
    echo = socket.socket()
    echo.bind(("127.0.0.1", 0))
    echo.listen()

    def serve():
        c, _ = echo.accept()
        with c:
            while data := c.recv(65536):
                c.sendall(data)

    def drive(d, op, box):
        while not op.done and time.monotonic() < start + 20:
            d.wait(timeout=10)
        box.append(time.monotonic() - start)

    with pyssh.connect(
        server.address, keyfile=server.client_key, known_hosts=server.known_hosts, config=False
    ) as s:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        c = _ssh.Tunnel(s)
        c.listen_local(sock.fileno(), "127.0.0.1", echo.getsockname()[1], False)
        d = _ssh.Driver()
        op = c.run(defer=True)
        d.add(op)
        took = []
        start = time.monotonic()
        threading.Thread(target=serve, daemon=True).start()
        worker = threading.Thread(target=drive, args=(d, op, took), daemon=True)
        worker.start()
        time.sleep(0.2)  # the Driver waits: only the listening socket can wake it now
        with socket.create_connection(("127.0.0.1", sock.getsockname()[1]), timeout=10) as k:
            time.sleep(0.2)  # and then only the connection's socket
            k.sendall(b"through the driver")
            k.shutdown(socket.SHUT_WR)
            assert k.recv(100) == b"through the driver"
        c.stop()
        worker.join(20)
        assert op.done and took[0] < 2, f"{took}: the driver's poll missed the tunnel's sockets"
        assert op.result()[:3] == (1, 18, 18)
        c.close()
        sock.close()
    echo.close()
