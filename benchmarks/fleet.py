"""Many hosts from one process (groundwork for issue 21): connect, run `echo ok`, close,
on N simulated hosts at once, for parallel-ssh, asyncssh, fabric and pyssh side by side
in one run, against one throwaway local sshd.

    pip install -e .[bench]       # parallel-ssh and fabric too; a missing one is reported
    python benchmarks/fleet.py [-r 3] [--hosts 100,500] [--markdown]

What is measured, per client and N: one run = make all N connections, run `echo ok` on
each, check every exit status (and stdout where the client gives it), close them all.
Every run is a fresh Python process (this file with --worker): the client's module is
imported and the host list made before the clock starts, so that

- wall = the run's elapsed time (median of -r runs);
- client CPU = user + system CPU of that process during the run, plus that of any
  child it waited for (none of these clients forks; sshd's CPU is not counted);
- peak RSS growth = the process's peak resident set during the run (VmHWM, reset
  through /proc/self/clear_refs just before) minus its resident set just before
  (median of the runs): what the N connections cost in memory.

The clients:

- parallel-ssh: `ParallelSSHClient(hosts, pkey=...)`, `run_command` + `join`, on
  ssh2-python (libssh2) and gevent with its default pool_size=100 greenlets;
  num_retries=1 (a failure shows, not retried). It checks NO host keys (libssh2's
  client has no known_hosts check there), and has no cipher option (libssh2's
  method_pref is not reachable through it): libssh2 picks chacha20-poly1305@openssh.com
  (seen in sshd's debug log), which costs more CPU than AES-GCM with AES-NI;
- asyncssh: `asyncio.gather` over one `connect` + `run` + `close` per host, all N
  at once; known_hosts checked (the file below), encryption_algs=[aes128-gcm];
- fabric: `ThreadingGroup(*hosts).run(...)`, paramiko underneath, one thread per
  host, all N at once; aes128-gcm through paramiko's disabled_algorithms. Host keys:
  fabric sets paramiko's AutoAddPolicy and loads ~/.ssh/known_hosts, so an unknown
  key is accepted (kept in memory only): in effect nothing is checked here;
- pyssh, as a baseline only (pyssh.Group, the engine of issue 21, is not built yet):
  a `concurrent.futures.ThreadPoolExecutor(max_workers=64)` calling
  `pyssh.connect(...)` + `exec_internal` + close per host; known_hosts checked
  (host_key_policy="strict"), ciphers=[aes128-gcm].

How hosts are simulated: one sshd listening on 16 loopback addresses, 127.0.0.1 to
127.0.0.16, on one port (Linux routes all of 127.0.0.0/8 to lo; 16 is sshd's limit of
listening sockets, MAX_LISTEN_SOCKS); host i of N is 127.0.0.(1 + i % 16). Each is a
separate TCP connection with its own key exchange and authentication; the 16 addresses
each have their own known_hosts line (`[127.0.0.K]:port key`, all the one host key).
Distinct host NAMES (ssh_config HostName) do not work: asyncssh and pyssh look up the
known_hosts under the HostName, and pyssh has no HostKeyAlias. fabric keys its result
dict by (host, user, port), so its result holds at most 16 entries; a failure on any
host still raises GroupException, so "no exception" means all N succeeded.

sshd: MaxStartups 1000:30:1000 (SSHServer's own 100:30:200 is taken out of its
config: sshd keeps the last MaxStartups it reads, and with 200 asyncssh's 500 connects at
once fail), PerSourceMaxStartups none (OpenSSH >= 8.5), MaxSessions 10, LogLevel ERROR,
and SetEnv SHLVL=1 (Debian's bash then skips root's ~/.bashrc, here 160 ms of pyenv per
command) so that the command is cheap. sshd runs on the same cores as the client and
does most of the work (a fork and a key exchange per connection): on a small machine the
wall time measures sshd as much as the client; client CPU and RSS are the client's own.

The machines are shared and noisy: clients run round-robin, the order rotated each
repetition; compare the ratios. ratio = the client's median wall / the pyssh
baseline's (> 1: the baseline is faster).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import time

from _common import GCM, cpu_seconds, failed_row, machine, render, round_robin

ADDRESSES = 16
BASELINE = "pyssh"
LABELS = {
    "parallel-ssh": "parallel-ssh, ParallelSSHClient run_command + join",
    "asyncssh": "asyncssh, asyncio.gather",
    "fabric": "fabric, ThreadingGroup.run",
    BASELINE: "pyssh, thread pool (baseline; pyssh.Group not built yet)",
}
MODULES = {"parallel-ssh": "pssh", "asyncssh": "asyncssh", "fabric": "fabric", "pyssh": "pyssh"}
COMMAND = "echo ok"


def hosts(n: int) -> list:
    return [f"127.0.0.{1 + i % ADDRESSES}" for i in range(n)]


# ---- the clients: each takes the server's description and the host list, runs the
# command on every host, raises on any failure, and returns the cipher it asked for.


def run_parallel_ssh(srv: dict, hs: list) -> str:
    from pssh.clients import ParallelSSHClient

    client = ParallelSSHClient(
        hs,
        user=srv["user"],
        port=srv["port"],
        pkey=srv["client_key"],
        allow_agent=False,
        identity_auth=False,
        num_retries=1,
        timeout=120,
    )
    output = client.run_command(COMMAND, stop_on_errors=True)
    client.join(output)
    bad = [o for o in output if o.exception or o.exit_code != 0]
    for o in output:
        if not bad and list(o.stdout) != ["ok"]:
            bad.append(o)
    if bad:
        o = bad[0]
        raise RuntimeError(
            f"{len(bad)} of {len(hs)} failed; {o.host}: {o.exception or o.exit_code}"
        )
    if hasattr(client, "disconnect"):
        client.disconnect()
    return "chacha20-poly1305 (libssh2's pick)"


def run_asyncssh(srv: dict, hs: list) -> str:
    import asyncssh

    async def one(host):
        async with asyncssh.connect(
            host,
            port=srv["port"],
            username=srv["user"],
            client_keys=[srv["client_key"]],
            known_hosts=srv["known_hosts"],
            agent_path=None,
            config=None,
            encryption_algs=[GCM],
        ) as conn:
            r = await conn.run(COMMAND, check=True)
            if r.stdout != "ok\n":
                raise RuntimeError(f"{host}: stdout {r.stdout!r}")

    async def go():
        results = await asyncio.gather(*(one(h) for h in hs), return_exceptions=True)
        bad = [r for r in results if isinstance(r, BaseException)]
        if bad:
            raise RuntimeError(f"{len(bad)} of {len(hs)} failed; {type(bad[0]).__name__}: {bad[0]}")

    asyncio.run(go())
    return GCM


def run_fabric(srv: dict, hs: list) -> str:
    import fabric
    import paramiko

    preferred = paramiko.Transport._preferred_ciphers
    group = fabric.ThreadingGroup(
        *hs,
        user=srv["user"],
        port=srv["port"],
        config=fabric.Config(overrides={"load_ssh_configs": False}),
        connect_kwargs={
            "key_filename": srv["client_key"],
            "allow_agent": False,
            "look_for_keys": False,
            "disabled_algorithms": {"ciphers": [x for x in preferred if x != GCM]},
        },
    )
    try:
        results = group.run(COMMAND, hide=True)  # GroupException if any host fails
    finally:
        group.close()
    for r in results.values():
        if r.stdout != "ok\n":
            raise RuntimeError(f"stdout {r.stdout!r}")
    return GCM


def run_pyssh(srv: dict, hs: list) -> str:
    from concurrent.futures import ThreadPoolExecutor

    import pyssh

    def one(host):
        with pyssh.connect(
            host,
            port=srv["port"],
            user=srv["user"],
            keyfile=srv["client_key"],
            known_hosts=srv["known_hosts"],
            host_key_policy="strict",
            config=False,
            ciphers=[GCM],
            timeout=120,
        ) as s:
            r = s.exec_internal(COMMAND)
            if r.status != 0 or r.stdout != b"ok\n":
                raise RuntimeError(f"{host}: exit {r.status}, stdout {r.stdout!r}")

    with ThreadPoolExecutor(max_workers=64) as pool:
        futures = [pool.submit(one, h) for h in hs]
    bad = [f.exception() for f in futures if f.exception()]
    if bad:
        raise RuntimeError(f"{len(bad)} of {len(hs)} failed; {type(bad[0]).__name__}: {bad[0]}")
    return GCM


CLIENTS = {
    "parallel-ssh": run_parallel_ssh,
    "asyncssh": run_asyncssh,
    "fabric": run_fabric,
    BASELINE: run_pyssh,
}


# ---- one run, in a fresh process


def _status(field: str) -> int:
    """A field of /proc/self/status in bytes (VmRSS, VmHWM)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def worker(name: str, n: int, srv: dict) -> dict:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # N sockets at once
    __import__(MODULES[name])  # imported before the clock starts
    hs = hosts(n)
    before = _status("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM (the peak) to the current resident set
    c, t = cpu_seconds(), time.perf_counter()
    cipher = CLIENTS[name](srv, hs)
    elapsed, cpu = time.perf_counter() - t, cpu_seconds() - c
    return {"cipher": cipher, "wall": elapsed, "cpu": cpu, "rss": _status("VmHWM") - before}


def once_for(n: int, srv: dict, rss: dict):
    def once(name, warmup):
        cmd = [sys.executable, __file__, "--worker", name, str(n), json.dumps(srv)]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        lines = p.stdout.strip().splitlines()
        if p.returncode != 0 or not lines:
            err = (p.stderr.strip().splitlines() or [f"exit {p.returncode}"])[-1]
            raise RuntimeError(err)
        r = json.loads(lines[-1])
        if "error" in r:
            raise RuntimeError(r["error"])
        if not warmup:
            rss.setdefault(name, []).append(r["rss"])
        return r["cipher"], r["wall"], r["cpu"]

    return once


def table(n, rows, rss, markdown):
    base = statistics.median(rows[BASELINE]["times"]) if rows[BASELINE]["times"] else None
    head = ["client", "cipher", "wall", "ratio", "client CPU", "CPU / host", "peak RSS growth"]
    body = []
    for name, row in rows.items():
        if not row["times"]:
            body.append(failed_row(LABELS[name], row["cipher"], row, len(head), limit=160))
            continue
        med = statistics.median(row["times"])
        cpu = statistics.median(row["cpu"])
        body.append(
            [
                LABELS[name],
                row["cipher"],
                f"{med:.2f} s",
                f"{med / base:.2f}" if base else "",
                f"{cpu:.2f} s",
                f"{cpu / n * 1000:.1f} ms",
                f"{statistics.median(rss[name]) / 2**20:.0f} MiB",
            ]
        )
    print(f"\n{n} hosts: connect + `{COMMAND}` + close on each")
    print("\n".join(render(head, body, markdown)))
    sys.stdout.flush()


def versions() -> str:
    out = []
    for dist in ("parallel-ssh", "ssh2-python", "fabric", "gevent"):
        try:
            from importlib.metadata import version

            out.append(f"{dist} {version(dist)}")
        except Exception:  # noqa: BLE001 - PackageNotFoundError
            out.append(f"{dist} not installed")
    return "; ".join(out)


def fleet_server(extra: list):
    """An SSHServer with `extra` (its lines replace the defaults of their keywords)."""
    from pyssh.testing import SSHServer

    return SSHServer(extra_config=extra)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        name, n, srv = sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])
        try:
            print(json.dumps(worker(name, n, srv)))
        except Exception as e:  # noqa: BLE001 - reported in the client's row
            print(json.dumps({"error": f"{type(e).__name__}: {e}"[:300]}))
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("-r", "--reps", type=int, default=3)
    ap.add_argument("--hosts", default="100,500", help="numbers of hosts, e.g. 100,500")
    ap.add_argument("--clients", default=",".join(CLIENTS), help="a subset, comma-separated")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    print("\n".join(machine() + [versions()]))
    names = [c for c in args.clients.split(",") if c]
    if BASELINE not in names:
        names.append(BASELINE)
    extra = [f"ListenAddress 127.0.0.{k}" for k in range(2, ADDRESSES + 1)] + [
        "MaxStartups 1000:30:1000",
        "PerSourceMaxStartups none",
        "MaxSessions 10",
        "SetEnv SHLVL=1",
        "LogLevel ERROR",  # VERBOSE would log some lines per connection
    ]
    with fleet_server(extra) as server:
        kh = os.path.join(server.dir, "fleet_known_hosts")
        with open(kh, "w") as f:
            for k in range(1, ADDRESSES + 1):
                f.write(f"[127.0.0.{k}]:{server.port} {server.host_key_pub}\n")
        srv = {
            "user": server.user,
            "port": server.port,
            "client_key": server.client_key,
            "known_hosts": kh,
        }
        for n in (int(x) for x in args.hosts.split(",")):
            rows = {x: {"times": [], "cpu": [], "cipher": "", "error": ""} for x in names}
            rss: dict = {}
            round_robin(rows, once_for(n, srv, rss), args.reps)
            table(n, rows, rss, args.markdown)


if __name__ == "__main__":
    main()
