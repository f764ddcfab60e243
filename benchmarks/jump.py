"""Through jump hosts (ProxyJump, ``ssh -J``): three throwaway local sshds, the target
reached through one and then two of them, for pyssh, OpenSSH's ssh, asyncssh and
paramiko side by side in one run, with aes128-gcm@openssh.com on every connection.

    pip install -e .[bench]       # paramiko and asyncssh; a missing one is skipped
    python benchmarks/jump.py [-r 5] [--size 64M] [--hops 1,2] [--markdown]

Three measurements for each number of hops:

- connect: make the chain, authenticate to every host, run `true` on the target,
  close everything (median of -r runs);
- download: `head -c SIZE /dev/zero` on the target, read to the end, through a chain
  made once before (connecting excluded);
- upload: SIZE bytes written to `cat > /dev/null` on the target, its exit awaited.

How each client makes the chain:

- pyssh: `connect(target, jump="u@j1:p1,u@j2:p2")` (its bridges are moved by the
  target's own waits: no thread per hop);
- ssh: `ssh -F cfg -J u@j1:p1,u@j2:p2 target` (a config file gives every hop the key,
  known_hosts and cipher); for the transfers a ControlMaster made once over the chain,
  and each run a `ssh -S socket target CMD` through it (a reference line: other
  processes do the work, their CPU read from /proc);
- asyncssh: `connect(..., tunnel=previous_connection)` hop by hop;
- paramiko: `open_channel("direct-tcpip")` on the previous hop's transport, given as
  `sock=` to the next `SSHClient.connect`.

The machines are shared and noisy: clients run round-robin, the order rotated each
repetition; compare the ratios. ratio = the client's median time / pyssh's (> 1: pyssh
is faster). client CPU = median user + system CPU per run of this process, plus for ssh
that of its processes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import tempfile
import time

import pyssh
from pyssh.testing import SSHServer

from _common import CHUNK, GCM, cpu_seconds, failed_row, machine, parse_size, render, round_robin

BASELINE = "pyssh"


def tree_cpu(pid: int) -> float:
    """User + system CPU seconds of a running process and its children (/proc)."""
    total, todo = 0.0, [pid]
    tick = os.sysconf("SC_CLK_TCK")
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo += [int(x) for x in f.read().split()]
        except (OSError, ValueError):
            pass
    return total


class Chain:
    """The servers and, per client, how to connect through `hops` of the jump hosts."""

    def __init__(self, target, jumps, tmp):
        self.t, self.jumps, self.tmp = target, jumps, tmp
        self.kh = os.path.join(tmp, "known_hosts")
        with open(self.kh, "w") as f:
            f.write("".join(s.host_key_line + "\n" for s in [target, *jumps]))
        self.cfg = os.path.join(tmp, "ssh_config")
        with open(self.cfg, "w") as f:
            f.write(
                f"Host *\n  IdentityFile {target.client_key}\n  IdentitiesOnly yes\n"
                f"  UserKnownHostsFile {self.kh}\n  StrictHostKeyChecking yes\n"
                f"  BatchMode yes\n  Ciphers {GCM}\n  ControlPath {tmp}/cm-%C\n"
            )
        self.loop = asyncio.new_event_loop()

    def spec(self, hops):
        return ",".join(f"{j.user}@127.0.0.1:{j.port}" for j in self.jumps[:hops])

    def pyssh(self, hops):
        return pyssh.connect(
            self.t.address,
            jump=self.spec(hops),
            keyfile=self.t.client_key,
            known_hosts=self.kh,
            config=False,
            ciphers=[GCM],
        )

    def ssh(self, hops, *opts, cmd=None):
        base = ["ssh", "-F", self.cfg, "-J", self.spec(hops), "-p", str(self.t.port), *opts]
        return base + [f"{self.t.user}@127.0.0.1"] + ([cmd] if cmd else [])

    async def asyncssh(self, hops):
        import asyncssh

        conn = None
        for srv in [*self.jumps[:hops], self.t]:
            conn = await asyncssh.connect(
                "127.0.0.1",
                port=srv.port,
                username=srv.user,
                client_keys=[self.t.client_key],
                known_hosts=self.kh,
                agent_path=None,
                config=None,
                encryption_algs=[GCM],
                tunnel=conn,
            )
        return conn

    def paramiko(self, hops):
        import paramiko

        clients, sock = [], None
        path = [*self.jumps[:hops], self.t]
        for i, srv in enumerate(path):
            c = paramiko.SSHClient()
            c.load_host_keys(self.kh)
            c.connect(
                "127.0.0.1",
                port=srv.port,
                username=srv.user,
                key_filename=self.t.client_key,
                allow_agent=False,
                look_for_keys=False,
                sock=sock,
                disabled_algorithms={
                    "ciphers": [x for x in paramiko.Transport._preferred_ciphers if x != GCM]
                },
            )
            c.get_transport().set_keepalive(0)
            clients.append(c)
            if srv is not self.t:  # the next hop, through this one
                nxt = ("127.0.0.1", path[i + 1].port)
                sock = c.get_transport().open_channel("direct-tcpip", nxt, ("127.0.0.1", 0))
        return clients


# ---- connect -----------------------------------------------------------------------------


def connect_once(ch, hops):
    def once(name, warmup):
        c, t = cpu_seconds(), time.perf_counter()
        if name == BASELINE:
            with ch.pyssh(hops) as s:
                s.exec_internal("true")
        elif name == "ssh -J":
            subprocess.run(ch.ssh(hops, cmd="true"), check=True, stdin=subprocess.DEVNULL)
        elif name == "asyncssh":

            async def go():
                conn = await ch.asyncssh(hops)
                await conn.run("true", check=True)
                conn.close()

            ch.loop.run_until_complete(go())
        else:
            clients = ch.paramiko(hops)
            _, out, _ = clients[-1].exec_command("true")
            out.channel.recv_exit_status()
            for client in reversed(clients):
                client.close()
        return GCM, time.perf_counter() - t, cpu_seconds() - c

    return once


# ---- transfers ---------------------------------------------------------------------------


class Open:
    """One chain per client, made on first use, for the transfers."""

    def __init__(self, ch, hops, size):
        self.ch, self.hops, self.size = ch, hops, size
        self.conns: dict = {}
        self.stack = contextlib.ExitStack()
        self.data = os.urandom(size)

    def get(self, name):
        if name in self.conns:
            return self.conns[name]
        ch = self.ch
        if name == BASELINE:
            c = self.stack.enter_context(ch.pyssh(self.hops))
        elif name == "ssh -J":
            m = subprocess.Popen(ch.ssh(self.hops, "-M", "-N"), stdin=subprocess.DEVNULL)
            self.stack.callback(lambda: (m.terminate(), m.wait()))
            for _ in range(100):  # the master's socket appears once it is connected
                if (
                    subprocess.run(ch.ssh(self.hops, "-O", "check"), capture_output=True).returncode
                    == 0
                ):
                    break
                time.sleep(0.05)
            c = m
        elif name == "asyncssh":
            c = ch.loop.run_until_complete(ch.asyncssh(self.hops))
            self.stack.callback(c.close)
        else:
            cl = ch.paramiko(self.hops)
            self.stack.callback(lambda: [x.close() for x in reversed(cl)])
            c = cl[-1]
        self.conns[name] = c
        return c

    def once(self, way):
        def run(name, warmup):
            c = self.get(name)
            extra = tree_cpu(c.pid) if name == "ssh -J" else 0.0
            cpu, t = cpu_seconds(), time.perf_counter()
            moved = getattr(self, f"{way}_{name.split()[0].replace('-', '_')}")(c)
            elapsed = time.perf_counter() - t
            cpu = cpu_seconds() - cpu + (tree_cpu(c.pid) - extra if name == "ssh -J" else 0.0)
            if moved != self.size:
                raise AssertionError(f"{name}: {moved} bytes of {self.size}")
            return GCM, elapsed, cpu

        return run

    def download_pyssh(self, s):
        return len(s.exec_internal(f"head -c {self.size} /dev/zero").stdout)

    def upload_pyssh(self, s):
        s.exec_internal("cat > /dev/null", stdin=self.data)
        return self.size

    def download_ssh(self, m):
        cmd = self.ch.ssh(self.hops, cmd=f"head -c {self.size} /dev/zero")
        return len(subprocess.run(cmd, capture_output=True, check=True).stdout)

    def upload_ssh(self, m):
        cmd = self.ch.ssh(self.hops, cmd="cat > /dev/null")
        subprocess.run(cmd, input=self.data, check=True)
        return self.size

    def download_asyncssh(self, conn):
        r = self.ch.loop.run_until_complete(
            conn.run(f"head -c {self.size} /dev/zero", encoding=None, check=True)
        )
        return len(r.stdout)

    def upload_asyncssh(self, conn):
        self.ch.loop.run_until_complete(
            conn.run("cat > /dev/null", input=self.data, encoding=None, check=True)
        )
        return self.size

    def download_paramiko(self, c):
        _, out, _ = c.exec_command(f"head -c {self.size} /dev/zero")
        n = 0
        while chunk := out.channel.recv(CHUNK):
            n += len(chunk)
        out.channel.recv_exit_status()
        return n

    def upload_paramiko(self, c):
        stdin, out, _ = c.exec_command("cat > /dev/null")
        view = memoryview(self.data)  # in chunks: sendall of 64 MiB at once is quadratic
        for i in range(0, len(view), CHUNK):
            stdin.channel.sendall(view[i : i + CHUNK])
        stdin.channel.shutdown_write()
        out.channel.recv_exit_status()
        return self.size


def clients() -> list:
    names = [BASELINE, "ssh -J"]
    for mod in ("asyncssh", "paramiko"):
        try:
            __import__(mod)
            names.append(mod)
        except ImportError:
            print(f"({mod} not installed: pip install {mod})")
    return names


def table(title, rows, size, markdown):
    base = statistics.median(rows[BASELINE]["times"]) if rows[BASELINE]["times"] else None
    head = ["client", "median", "MB/s" if size else "", "ratio", "client CPU"]
    body = []
    for name, row in rows.items():
        if not row["times"]:
            body.append(failed_row(name, "", row, len(head))[1:])
            continue
        med = statistics.median(row["times"])
        body.append(
            [
                name,
                f"{med * 1000:.0f} ms",
                f"{size / med / 1e6:.0f}" if size else "",
                f"{med / base:.2f}" if base else "",
                f"{statistics.median(row['cpu']) * 1000:.0f} ms",
            ]
        )
    print(f"\n{title}")
    print("\n".join(render(head, body, markdown)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-r", "--reps", type=int, default=5)
    ap.add_argument("--size", type=parse_size, default=parse_size("64M"))
    ap.add_argument("--hops", default="1,2")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    print("\n".join(machine()))
    names = clients()
    # SHLVL=1: Debian's bash skips ~/.bashrc for sshd's commands (here root's runs pyenv's
    # init, 160 ms, which would swamp the connect times); the same for every client
    quick = ["SetEnv SHLVL=1"]
    with SSHServer(extra_config=quick) as t, SSHServer() as j1, SSHServer() as j2:
        for j in (j1, j2):
            j.authorize(t.client_key + ".pub")
        with tempfile.TemporaryDirectory(prefix="pyssh-jump-") as tmp:
            ch = Chain(t, [j1, j2], tmp)
            for hops in (int(x) for x in args.hops.split(",")):

                def fresh():
                    return {n: {"times": [], "cpu": [], "cipher": "", "error": ""} for n in names}

                rows = round_robin(fresh(), connect_once(ch, hops), args.reps)
                table(f"connect + `true` + close, {hops} hop(s)", rows, 0, args.markdown)
                o = Open(ch, hops, args.size)
                try:
                    for way in ("download", "upload"):
                        rows = round_robin(fresh(), o.once(way), args.reps)
                        mib = args.size >> 20
                        table(f"{way} {mib} MiB, {hops} hop(s)", rows, args.size, args.markdown)
                finally:
                    o.stack.close()


if __name__ == "__main__":
    main()
