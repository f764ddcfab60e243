"""asyncio clients side by side (issue 22): pyssh.aio, asyncssh, and pyssh's blocking API
run in the loop's thread pool (`run_in_executor`), against one throwaway local sshd, in
one run; pyssh.aio and asyncssh again in uvloop's loop. aes128-gcm@openssh.com for all.

    pip install -e .[bench]       # asyncssh
    python benchmarks/aio.py [-r 3] [--size 256M] [--commands 1000] [--rtt 0,10,30]
                             [--scenarios get,put,exec,commands] [--markdown]

--rtt MS,MS,... runs every scenario once per round-trip time, in turn (default 0:
loopback, no relay): at each MS > 0, every client connects through a relay
(benchmarks/relay.py, in its own process) that holds each chunk MS/2 milliseconds
each way, as benchmarks/transfer.py --delays does (this machine's kernel has no netem).
The relay's plain-TCP ceiling at that delay is printed first.

Scenarios (each client connects before the clock starts and keeps its connections):

- get / put: one SFTP transfer of SIZE random bytes (from a file of the sshd's
  machine to a local file, and back; each run to a new file, the last one removed
  off the clock), on one connection; pyssh.aio `sftp.get/put`,
  asyncssh `start_sftp_client` + `get/put`, the blocking `SFTP.get/put` in the
  executor. Checked: the size of the file written (the bytes, for get, after the
  clock);
- exec: `head -c SIZE /dev/zero` with its stdout captured (pyssh.aio `run`, asyncssh
  `run(encoding=None)`, blocking `exec_internal` in the executor); checked: its length;
- commands: N (--commands) `echo i` over 10 connections, 4 at a time on each (sshd's
  MaxSessions is 10; 8 at a time was no faster for any client here, sshd's forks
  being the bound); every stdout checked.

Each client has its own loop (asyncio's default one, or uvloop's), in this one thread.
While each run goes, a heartbeat task sleeps 1 ms at a time: "loop held" is its worst
lateness (how long the loop was kept from it, including the time the loop's thread
waited for a core while sshd and the other processes ran), "loop CPU" the most CPU the
loop's thread used while the heartbeat waited (the loop's own work: a step, a
callback, a client's Python code), the medians over the runs. client CPU
= this process's user + system CPU during the run (all clients run here; the relay's
is its own process's, not counted), also per byte moved (per command). Medians of
-r runs, round-robin, the order rotated (the machines are shared and noisy). "vs
asyncssh" = asyncssh's median time (in the same kind of loop) / the client's, "vs
executor" = the executor's / the client's: above 1, the client is that much faster.
Each table's title gives the load average when it was printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import relay  # noqa: E402

from _common import cpu_seconds, machine, parse_size, render, round_robin  # noqa: E402

GCM = "aes128-gcm@openssh.com"
CONNS = 10


class Heartbeat:
    def __init__(self) -> None:
        self.worst = 0.0
        self.worst_cpu = 0.0
        self.stop = False

    async def run(self) -> None:
        while not self.stop:
            t, c = time.perf_counter(), time.thread_time()
            await asyncio.sleep(0.001)
            self.worst = max(self.worst, time.perf_counter() - t - 0.001)
            self.worst_cpu = max(self.worst_cpu, time.thread_time() - c)


def uvloop_factory():
    import uvloop

    return uvloop.new_event_loop()


class PysshAio:
    name = "pyssh.aio"
    new_loop = staticmethod(asyncio.new_event_loop)

    async def open(self, srv):
        import pyssh.aio

        kw = dict(keyfile=srv.client_key, known_hosts=srv.known_hosts, config=False)
        self.conns = [
            await pyssh.aio.connect(srv.address, ciphers=[GCM], **kw) for _ in range(CONNS)
        ]
        self.sftp = await self.conns[0].sftp()

    async def get(self, remote, local):
        await self.sftp.get(remote, local)

    async def put(self, local, remote):
        await self.sftp.put(local, remote)

    async def exec(self, command):
        return (await self.conns[0].run(command)).stdout

    async def command(self, i, command):
        return (await self.conns[i].run(command)).stdout

    async def close(self):
        self.sftp.close()
        for c in self.conns:
            c.close()


class PysshAioUvloop(PysshAio):
    name = "pyssh.aio, uvloop"
    new_loop = staticmethod(uvloop_factory)


class AsyncSSH:
    name = "asyncssh"
    new_loop = staticmethod(asyncio.new_event_loop)

    async def open(self, srv):
        import asyncssh

        kw = dict(
            port=srv.port,
            username=srv.user,
            client_keys=[srv.client_key],
            known_hosts=srv.known_hosts,
            encryption_algs=[GCM],
        )
        self.conns = [await asyncssh.connect(srv.host, **kw) for _ in range(CONNS)]
        self.sftp = await self.conns[0].start_sftp_client()

    async def get(self, remote, local):
        await self.sftp.get(remote, local)

    async def put(self, local, remote):
        await self.sftp.put(local, remote)

    async def exec(self, command):
        return (await self.conns[0].run(command, encoding=None)).stdout

    async def command(self, i, command):
        return (await self.conns[i].run(command, encoding=None)).stdout

    async def close(self):
        self.sftp.exit()
        await self.sftp.wait_closed()
        for c in self.conns:
            c.close()
            await c.wait_closed()


class AsyncSSHUvloop(AsyncSSH):
    name = "asyncssh, uvloop"
    new_loop = staticmethod(uvloop_factory)


class Executor:
    name = "pyssh blocking, run_in_executor"
    new_loop = staticmethod(asyncio.new_event_loop)

    async def open(self, srv):
        self.loop = asyncio.get_running_loop()
        self.conns = [srv.connect(ciphers=[GCM]) for _ in range(CONNS)]
        self.sftp = self.conns[0].sftp()

    async def get(self, remote, local):
        await self.loop.run_in_executor(None, self.sftp.get, remote, local)

    async def put(self, local, remote):
        await self.loop.run_in_executor(None, self.sftp.put, local, remote)

    async def exec(self, command):
        r = await self.loop.run_in_executor(None, self.conns[0].exec_internal, command)
        return r.stdout

    async def command(self, i, command):
        r = await self.loop.run_in_executor(None, self.conns[i].exec_internal, command)
        return r.stdout

    async def close(self):
        self.sftp.close()
        for c in self.conns:
            c.close()


CLIENTS = [PysshAio, PysshAioUvloop, AsyncSSH, AsyncSSHUvloop, Executor]


async def scenario(client, what, args, d):
    """Runs one; what it returns (a command's output) is freed after the heartbeat
    stops: freeing 256 MiB takes the kernel 15 to 25 ms of the loop's thread."""
    if what == "get":
        await client.get(os.path.join(d, "src"), os.path.join(d, "got"))
        if os.path.getsize(os.path.join(d, "got")) != args.size:
            raise RuntimeError("get: wrong size")
    elif what == "put":
        await client.put(os.path.join(d, "src"), os.path.join(d, "put"))
        if os.path.getsize(os.path.join(d, "put")) != args.size:
            raise RuntimeError("put: wrong size")
    elif what == "exec":
        out = await client.exec(f"head -c {args.size} /dev/zero")
        if len(out) != args.size:
            raise RuntimeError("exec: wrong length")
        return out
    else:
        sems = [asyncio.Semaphore(4) for _ in range(CONNS)]

        async def one(i):
            async with sems[i % CONNS]:
                return await client.command(i % CONNS, f"echo {i}")

        outs = await asyncio.gather(*(one(i) for i in range(args.commands)))
        if outs != [f"{i}\n".encode() for i in range(args.commands)]:
            raise RuntimeError("commands: wrong output")
    return None


def run_scenario(clients, what, args, d, beats):
    def once(name, warmup):
        client, loop = clients[name]
        beat = Heartbeat()
        for old in ("got", "put"):  # each run writes a new file (off the clock): the
            try:  # truncation of a 256 MiB file would be timed too, in the loop's thread
                os.unlink(os.path.join(d, old))
            except FileNotFoundError:
                pass

        async def go():
            task = asyncio.ensure_future(beat.run())
            c, t = cpu_seconds(), time.perf_counter()
            out = None
            try:
                out = await scenario(client, what, args, d)
            finally:
                elapsed, cpu = time.perf_counter() - t, cpu_seconds() - c
                beat.stop = True
                await task
            del out  # (after the heartbeat: see scenario())
            return elapsed, cpu

        elapsed, cpu = loop.run_until_complete(go())
        if not warmup:
            beats.setdefault(name, []).append((beat.worst, beat.worst_cpu))
        return GCM, elapsed, cpu

    rows = {n: {"times": [], "cpu": [], "cipher": "", "error": ""} for n in clients}
    return round_robin(rows, once, args.reps)


def baseline(rows, name):
    """The client's median time, or None if it did not run."""
    times = rows.get(name, {}).get("times")
    return statistics.median(times) if times else None


def table(what, rows, beats, args, rtt):
    where = f"{rtt:g} ms round trip added (relay)" if rtt else "loopback, no delay"
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\n{what} -- {where}; load average {load}")
    commands = what == "commands"
    head = ["client", "scenario", "time", "commands/s" if commands else "MB/s"]
    head += ["vs asyncssh", "vs executor", "client CPU"]
    head += ["CPU per command" if commands else "CPU per MB", "loop held", "loop CPU"]
    body = []
    for name, row in rows.items():
        if not row["times"]:
            body.append([name, what, (row["error"] or "no runs")[:100]] + [""] * 7)
            continue
        med, cpu = statistics.median(row["times"]), statistics.median(row["cpu"])
        rate = args.commands / med if commands else args.size / med / 1e6
        peer = AsyncSSHUvloop.name if "uvloop" in name else AsyncSSH.name
        ratios = [baseline(rows, peer), baseline(rows, Executor.name)]
        body.append(
            [name, what, f"{med:.2f} s", f"{rate:.0f}"]
            + [f"{b / med:.2f}" if b else "" for b in ratios]
            + [f"{cpu:.2f} s"]
            + [
                f"{cpu / args.commands * 1000:.2f} ms"
                if commands
                else f"{cpu / (args.size / 1e6) * 1000:.2f} ms"
            ]
            + [
                f"{statistics.median(b[0] for b in beats[name]) * 1000:.1f} ms",
                f"{statistics.median(b[1] for b in beats[name]) * 1000:.1f} ms",
            ]
        )
    print("\n".join(render(head, body, args.markdown)))
    sys.stdout.flush()


class Relayed:
    """The server as seen through the relay on `port`: what the clients use of it."""

    def __init__(self, srv, port: int):
        self.host, self.port, self.user = srv.host, port, srv.user
        self.address = f"{srv.user}@{srv.host}:{port}"
        self.client_key, self._srv = srv.client_key, srv
        self.known_hosts = os.path.join(srv.dir, f"known_hosts_relay_{port}")
        key = " ".join(srv.host_key_line.split()[1:3])
        with open(self.known_hosts, "w") as f:
            f.write(f"[{srv.host}]:{port} {key}\n")

    def connect(self, **kwargs):
        import pyssh

        kwargs.setdefault("keyfile", self.client_key)
        kwargs.setdefault("known_hosts", self.known_hosts)
        kwargs.setdefault("config", False)
        return pyssh.connect(self.address, **kwargs)


@contextlib.contextmanager
def through(srv, rtt: float):
    """The server itself (rtt 0), or through a relay at rtt ms, its ceiling printed."""
    if not rtt:
        yield srv
        return
    try:
        c = relay.ceiling(rtt, size=256 << 20)
        print(
            f"relay at {rtt:g} ms, plain TCP: "
            + ", ".join(f"{op} {r['mb_s']:.0f} MB/s" for op, r in c.items())
        )
    except Exception as e:  # noqa: BLE001 - reported, not fatal
        print(f"relay ceiling at {rtt:g} ms: {type(e).__name__}: {e}")
    with relay.spawned(rtt, srv.port) as port:
        yield Relayed(srv, port)


def open_clients(target):
    clients = {}
    for cls in CLIENTS:
        c, loop = cls(), None
        try:
            loop = cls.new_loop()
            loop.run_until_complete(c.open(target))
            clients[cls.name] = (c, loop)
        except Exception as e:  # noqa: BLE001 - a missing client is reported
            print(f"{cls.name}: not run ({type(e).__name__}: {e})")
            if loop is not None:
                loop.close()
    return clients


def run_rtt(srv, rtt, args, d) -> None:
    with through(srv, rtt) as target:
        clients = open_clients(target)
        try:
            for what in args.scenarios.split(","):
                beats: dict = {}
                rows = run_scenario(clients, what, args, d, beats)
                table(what, rows, beats, args, rtt)
        finally:
            for c, loop in clients.values():
                loop.run_until_complete(c.close())
                loop.close()


def rtts(text: str) -> list:
    return [float(x) for x in text.split(",")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-r", "--reps", type=int, default=3)
    ap.add_argument("--size", type=parse_size, default="256M")
    ap.add_argument("--commands", type=int, default=1000)
    ap.add_argument("--scenarios", default="get,put,exec,commands")
    ap.add_argument("--rtt", type=rtts, default="0", help="round trips added, ms (0: none)")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    print("\n".join(machine()))
    print(f"load average at the start: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    from pyssh.testing import SSHServer

    # SetEnv SHLVL=1: a login shell of this machine's root runs pyenv init, slow (every
    # command of the commands scenario starts one)
    with SSHServer(extra_config=["MaxSessions 10", "SetEnv SHLVL=1"]) as srv:
        d = tempfile.mkdtemp(prefix="aio-", dir=srv.dir)
        with open(os.path.join(d, "src"), "wb") as f:
            f.write(os.urandom(args.size))
        for rtt in args.rtt:
            run_rtt(srv, rtt, args, d)


if __name__ == "__main__":
    main()
