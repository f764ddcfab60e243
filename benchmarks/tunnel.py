"""Tunnels: throughput of one connection carrying 1 GiB (by default) through a local
forward (ssh -L) to a target on this machine, each way, for pyssh's forward_local
(a background thread), pyssh.aio's forward_local (served by an asyncio loop), OpenSSH's
ssh -N -L, paramiko with sshtunnel and asyncssh's forward_local_port,
side by side in one run, all with the cipher forced to aes128-gcm@openssh.com.

    pip install -e .[bench]       # paramiko, sshtunnel, asyncssh; a missing one is skipped
    python benchmarks/tunnel.py [-r 5] [--size 1G] [--markdown]

The target and the application using the tunnel live in a separate process (the
peer, this file run with --peer), so that nothing but the tunnel client runs in
the benchmark's process: the peer listens as the target (a source that sends
--size bytes, or a sink that reads to EOF and replies with the count), connects to
the tunnel's local port and moves the bytes; it times the transfer from connect to
the last byte. The tunnel is set up before and torn down after each run, outside
the timing, and one connection is opened and closed through it before the timed one
(ssh's start needs it, to know that the tunnel listens; every client gets it).
"download": target to application; "upload": application to target.

Clients run round-robin, the order rotated each repetition, since the machines are
shared and noisy: compare the ratios, not absolute numbers. MB/s is 10**6 bytes per
second, from the median. ratio = client's median time / pyssh's median time in the
same direction (> 1: pyssh is faster). client CPU = the tunnel client's median user +
system CPU per run (ssh's own process for OpenSSH; the peer's and the server's never).

Also measured: a tunnel at rest (one idle connection open) for 2 seconds: the
client's CPU in that time, which should be about zero (no busy-waiting).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import socket
import statistics
import subprocess
import sys
import threading
import time

BLOCK = 1 << 20


# ---- the peer: target and application, in its own process -----------------------------------


def peer_main(argv) -> None:
    """--peer: print the target's two ports, then for each line "download|upload PORT N"
    on stdin move N bytes through PORT and print the seconds it took."""
    data = os.urandom(BLOCK)

    def serve(sock, handler):
        while True:
            try:
                c, _ = sock.accept()
            except OSError:
                return
            threading.Thread(target=handler, args=(c,), daemon=True).start()

    def length(c):
        """The byte count the application sends first (nothing: a readiness probe)."""
        head = b""
        while len(head) < 32:
            d = c.recv(32 - len(head))
            if not d:
                return None
            head += d
        return int(head)

    def source(c):
        with c:
            n = length(c)
            while n:
                k = min(n, BLOCK)
                c.sendall(data[:k])
                n -= k
            c.shutdown(socket.SHUT_WR)

    def sink(c):
        # reads the announced count, not to EOF: sshtunnel cannot pass on a half-close
        with c:
            n = length(c)
            buf = bytearray(BLOCK)
            total = 0
            while n is not None and total < n:
                k = c.recv_into(buf, min(BLOCK, n - total))
                if k == 0:
                    break
                total += k
            c.sendall(str(total).encode())

    ports = []
    for handler in (source, sink):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        ports.append(s.getsockname()[1])
        threading.Thread(target=serve, args=(s, handler), daemon=True).start()
    print(*ports, flush=True)
    buf = bytearray(BLOCK)
    for line in sys.stdin:
        op, port, n = line.split()
        port, n = int(port), int(n)
        t0 = time.perf_counter()
        c = socket.create_connection(("127.0.0.1", port))
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        got = 0
        c.sendall(str(n).encode().ljust(32))
        if op == "download":
            while True:
                k = c.recv_into(buf)
                if k == 0:
                    break
                got += k
        else:
            left = n
            while left > 0:
                k = min(left, BLOCK)
                c.sendall(data[:k])
                left -= k
            reply = b""
            while len(reply) < len(str(n)):
                d = c.recv(64)
                if not d:
                    break
                reply += d
            got = int(reply or b"0")
        dt = time.perf_counter() - t0
        c.close()
        print(f"{dt:.6f} {got}", flush=True)


# ---- the clients --------------------------------------------------------------------------------


def self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def wait_listening(port: int, proc=None, timeout: float = 15.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the client exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listens on port {port}")


def make_clients(srv, GCM) -> dict:
    """name -> start(target_port) -> (local_port, cipher, stop() -> client CPU seconds
    since start, cpu_now() -> client CPU so far)."""
    import pyssh
    from pyssh.testing import free_port

    clients = {}

    def pyssh_start(tport):
        s = pyssh.connect(
            srv.address,
            keyfile=srv.client_key,
            known_hosts=srv.known_hosts,
            config=False,
            ciphers=[GCM],
        )
        t = s.forward_local(0, f"127.0.0.1:{tport}")
        cpu0 = self_cpu()

        def stop():
            t.close()
            s.close()
            return self_cpu() - cpu0

        return t.port, s.info()["cipher"], stop, lambda: self_cpu() - cpu0

    clients["pyssh forward_local"] = pyssh_start

    import pyssh.aio

    aio_loop = asyncio.new_event_loop()  # the loop serving the tunnel: one thread
    threading.Thread(target=aio_loop.run_forever, daemon=True).start()

    def aio_start(tport):
        async def up():
            s = await pyssh.aio.connect(
                srv.address,
                keyfile=srv.client_key,
                known_hosts=srv.known_hosts,
                config=False,
                ciphers=[GCM],
            )
            return s, await s.forward_local(0, f"127.0.0.1:{tport}")

        s, t = asyncio.run_coroutine_threadsafe(up(), aio_loop).result()
        cpu0 = self_cpu()

        def stop():
            async def down():
                await t.close()
                s.close()

            asyncio.run_coroutine_threadsafe(down(), aio_loop).result()
            return self_cpu() - cpu0

        return t.port, s.session.info()["cipher"], stop, lambda: self_cpu() - cpu0

    clients["pyssh.aio forward_local"] = aio_start

    def ssh_start(tport):
        port = free_port()
        kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        p = subprocess.Popen(
            [
                "ssh",
                "-N",
                "-F",
                "/dev/null",
                "-i",
                srv.client_key,
                "-o",
                f"UserKnownHostsFile={srv.known_hosts}",
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "BatchMode=yes",
                "-o",
                "ExitOnForwardFailure=yes",
                "-c",
                GCM,
                "-p",
                str(srv.port),
                "-L",
                f"127.0.0.1:{port}:127.0.0.1:{tport}",
                f"{srv.user}@{srv.host}",
            ],
            stdin=subprocess.DEVNULL,
        )
        wait_listening(port, p)

        def stop():
            p.terminate()
            p.wait()
            k = resource.getrusage(resource.RUSAGE_CHILDREN)
            return (k.ru_utime + k.ru_stime) - (kids0.ru_utime + kids0.ru_stime)

        def cpu_now():
            try:
                with open(f"/proc/{p.pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            except OSError:
                return float("nan")

        return port, GCM, stop, cpu_now

    clients["ssh -N -L"] = ssh_start

    try:
        import paramiko
        import sshtunnel

        if GCM not in paramiko.Transport._preferred_ciphers:
            raise ImportError(f"paramiko {paramiko.__version__} lacks {GCM}")

        def sshtunnel_start(tport):
            others = [x for x in paramiko.Transport._preferred_ciphers if x != GCM]
            fw = sshtunnel.SSHTunnelForwarder(
                (srv.host, srv.port),
                ssh_username=srv.user,
                ssh_pkey=srv.client_key,
                ssh_config_file=None,
                allow_agent=False,
                host_pkey_directories=[],
                remote_bind_address=("127.0.0.1", tport),
                local_bind_address=("127.0.0.1", 0),
                set_keepalive=0,
            )
            # sshtunnel has no cipher option: restrict the transport it will make
            real = paramiko.Transport.__init__

            def init(self, *a, **kw):
                kw["disabled_algorithms"] = {"ciphers": others}
                real(self, *a, **kw)

            paramiko.Transport.__init__ = init
            try:
                fw.start()
            finally:
                paramiko.Transport.__init__ = real
            t = fw._transport
            t.packetizer.REKEY_BYTES = t.packetizer.REKEY_PACKETS = 1 << 62
            cpu0 = self_cpu()

            def stop():
                fw.stop()
                return self_cpu() - cpu0

            return fw.local_bind_port, t.remote_cipher, stop, lambda: self_cpu() - cpu0

        clients["paramiko + sshtunnel"] = sshtunnel_start
        print("(paramiko: its own rekeying every 512 MiB switched off, see paramiko issue #822)")
    except ImportError as e:
        print(f"(paramiko + sshtunnel skipped: {e})")

    try:
        import asyncssh

        loop = asyncio.new_event_loop()
        threading.Thread(target=loop.run_forever, daemon=True).start()

        def asyncssh_start(tport):
            async def up():
                conn = await asyncssh.connect(
                    srv.host,
                    port=srv.port,
                    username=srv.user,
                    client_keys=[srv.client_key],
                    known_hosts=srv.known_hosts,
                    encryption_algs=[GCM],
                    config=None,
                )
                lis = await conn.forward_local_port("127.0.0.1", 0, "127.0.0.1", tport)
                return conn, lis

            conn, lis = asyncio.run_coroutine_threadsafe(up(), loop).result()
            cpu0 = self_cpu()

            def stop():
                async def down():
                    lis.close()
                    conn.close()
                    await conn.wait_closed()

                asyncio.run_coroutine_threadsafe(down(), loop).result()
                return self_cpu() - cpu0

            cipher = conn.get_extra_info("send_cipher")
            return lis.get_port(), cipher, stop, lambda: self_cpu() - cpu0

        clients["asyncssh forward_local_port"] = asyncssh_start
    except ImportError:
        print("(asyncssh not installed: pip install asyncssh)")
    return clients


# ---- measuring -----------------------------------------------------------------------------------


def measure(clients, peer, ports, size, reps) -> dict:
    from _common import round_robin

    rows = {
        (name, op): {"times": [], "cpu": [], "cipher": "", "error": None}
        for name in clients
        for op in ("download", "upload")
    }

    def once(key, warmup):
        name, op = key
        port, cipher, stop, _ = clients[name](ports[0] if op == "download" else ports[1])
        # every client gets the probe ssh's start needs: one connection opened and
        # closed through the tunnel before the timed one
        wait_listening(port)
        try:
            peer.stdin.write(f"{op} {port} {size}\n")
            peer.stdin.flush()
            dt, got = peer.stdout.readline().split()
        finally:
            cpu = stop()
        if int(got) != size:
            raise RuntimeError(f"moved {got} bytes of {size}")
        return cipher, float(dt), cpu

    return round_robin(rows, once, reps)


def idle_cpu(clients, ports) -> dict:
    """Client CPU over 2 s with one idle connection open through the tunnel."""
    out = {}
    for name, start in clients.items():
        try:
            port, _, stop, cpu_now = start(ports[1])
            c = socket.create_connection(("127.0.0.1", port))
            time.sleep(0.3)
            before = cpu_now()
            time.sleep(2.0)
            out[name] = cpu_now() - before
            c.close()
            stop()
        except Exception as e:  # noqa: BLE001
            out[name] = f"{type(e).__name__}: {e}"
    return out


def table(rows, size, markdown) -> list:
    from _common import failed_row, render, seconds

    head = ["client", "direction", "negotiated", "median", "min", "MB/s", "ratio", "client CPU"]
    unit = seconds
    body = []
    for (name, op), row in rows.items():
        if row["error"] or not row["times"]:
            body.append(failed_row(name, op, row, len(head)))
            continue
        med = statistics.median(row["times"])
        base = rows.get(("pyssh forward_local", op), {}).get("times")
        ratio = f"{med / statistics.median(base):.2f}" if base else "?"
        body.append(
            [
                name,
                op,
                row["cipher"],
                unit(med),
                unit(min(row["times"])),
                f"{size / med / 1e6:.0f}",
                ratio,
                unit(statistics.median(row["cpu"])),
            ]
        )
    return render(head, body, markdown)


def main() -> None:
    if sys.argv[1:2] == ["--peer"]:
        peer_main(sys.argv[2:])
        return
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from pyssh.testing import SSHServer

    from _common import GCM, machine, parse_size

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-r", type=int, default=5, help="repetitions (default 5)")
    ap.add_argument("--size", type=parse_size, default="1G", help="bytes per run (default 1G)")
    ap.add_argument("--markdown", action="store_true", help="also print markdown tables")
    ap.add_argument("--only", default="", help="only the clients whose name has this text")
    args = ap.parse_args()
    print("\n".join(info := machine()))
    peer = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--peer"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        ports = [int(p) for p in peer.stdout.readline().split()]
        with SSHServer() as srv:
            clients = make_clients(srv, GCM)
            if args.only:
                clients = {k: v for k, v in clients.items() if args.only in k}
            print(
                f"(measuring {args.size / 2**20:.0f} MiB x {args.r} runs per client and "
                "direction ...)",
                file=sys.stderr,
                flush=True,
            )
            rows = measure(clients, peer, ports, args.size, args.r)
            idle = idle_cpu(clients, ports)
    finally:
        peer.stdin.close()
        peer.wait()
    title = (
        f"one connection carrying {args.size / 2**20:.0f} MiB through a local forward, "
        f"cipher forced to {GCM}, {args.r} runs each, MB/s = 10^6 B/s"
    )
    print(f"\n{title}")
    print("\n".join(table(rows, args.size, False)))
    print("\nclient CPU with the tunnel at rest (one idle connection, 2 s):")
    for name, v in idle.items():
        print(f"  {name}: {v if isinstance(v, str) else f'{v * 1000:.0f} ms'}")
    if args.markdown:
        print(
            "\n" + "  \n".join(info) + f"\n\n{title}\n\n" + "\n".join(table(rows, args.size, True))
        )


if __name__ == "__main__":
    main()
