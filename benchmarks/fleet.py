"""Many hosts from one process (issue 21): pyssh.Group against parallel-ssh, asyncssh,
fabric and a pyssh thread pool, on N simulated hosts at once, side by side in one run,
against one throwaway local sshd. Two scenarios:

    pip install -e .[bench]       # parallel-ssh and fabric too; a missing one is reported
    python benchmarks/fleet.py [-r 3] [--hosts 100,500] [--markdown]     # connect
    python benchmarks/fleet.py --scenario upload [-r 3] [--hosts 50] [--size 10M]
    ... [--clients pyssh.Group,asyncssh]   # a subset (pyssh.Group is always added)

- connect (the default): one run = make all N connections, run `echo ok` on each, check
  every exit status and every stdout, close them all.
- upload: one run = connect to all N hosts and upload one file (--size, 10 MiB) over
  SFTP to each, into one remote directory, then close. The N hosts are all this
  machine, so the N uploads write the SAME remote file (same directory, same name:
  pyssh.Group.upload takes one `to` for all hosts, and per-host settings are connect
  arguments only; every client gets the same layout). A fresh directory is made for
  each run; after the run (off the clock) the one file that results is checked (its
  size and its bytes against the source), besides each client's own errors. The N
  writers open the file with truncation and write it in place concurrently; since they
  all write the same bytes at the same offsets, the last one to open it leaves it whole.
  sshd thus writes N x size bytes, into one file in the page cache.

Every run is a fresh Python process (this file with --worker, with the parent's pyssh
first on PYTHONPATH): the client's module is imported and the host list made before the
clock starts, so that

- wall = the run's elapsed time (median of -r runs);
- client CPU = user + system CPU of that process during the run, plus that of any
  child it waited for (none of these clients forks; sshd's CPU is not counted);
- peak RSS growth = the process's peak resident set during the run (VmHWM, reset
  through /proc/self/clear_refs just before) minus its resident set just before
  (median of the runs): what the N connections cost in memory;
- sshd CPU / host = the CPU of the server's side of the run (the listener's reaped
  children: each connection's sshd processes and its command), per host: what the
  server spends on the same two cores, which bounds every client's wall time.

The clients (every one raises on any host's failure, so a row with numbers means all N
hosts succeeded):

- pyssh.Group, the BASELINE: `with pyssh.Group(hosts, known_hosts=...,
  host_key_policy="strict", ciphers=[aes128-gcm], keyfile=..., user=..., port=...) as
  g`, with its defaults (max_parallel=256, workers=None); connect: `r = g.run("echo ok")`,
  `r.raise_for_failures()` and every host's stdout checked; upload:
  `g.upload([file], to=dir)` and `raise_for_failures()`. Known_hosts checked;
- pyssh threads (64): a `concurrent.futures.ThreadPoolExecutor(max_workers=64)`
  calling `pyssh.connect(...)` + `exec_internal` (connect) or `sftp_upload` (upload) +
  close per host, the way one would do it without Group; same checks and cipher;
- parallel-ssh: `ParallelSSHClient(hosts, pkey=...)`; connect: `run_command` + `join`;
  upload: `copy_file(file, dir/name)` (SFTP, in 2 MiB writes) + `gevent.joinall(...,
  raise_error=True)`; on ssh2-python (libssh2) and gevent with its default
  pool_size=100 greenlets; num_retries=1 (a failure shows, not retried). It checks NO
  host keys (libssh2's client has no known_hosts check there), and has no cipher option
  (libssh2's method_pref is not reachable through it): libssh2 picks
  chacha20-poly1305@openssh.com (seen in sshd's debug log), which costs more CPU than
  AES-GCM with AES-NI;
- asyncssh: `asyncio.gather` over one `connect` + (`run` | `start_sftp_client` +
  `sftp.put(file, dir)`) + close per host, all N at once; known_hosts checked (the file
  below), encryption_algs=[aes128-gcm];
- fabric: connect: `ThreadingGroup(*hosts).run(...)`, paramiko underneath, one thread
  per host, all N at once; upload: fabric's groups have no put, so a
  `ThreadPoolExecutor` with one thread per host (as ThreadingGroup does) calling
  `Connection(host).put(file, dir/name)` (paramiko's SFTP) + close; aes128-gcm through
  paramiko's disabled_algorithms. Host keys: fabric sets paramiko's AutoAddPolicy and
  loads ~/.ssh/known_hosts, so an unknown key is accepted (kept in memory only): in
  effect nothing is checked here.

How hosts are simulated: one sshd listening on 16 loopback addresses, 127.0.0.1 to
127.0.0.16, on one port (Linux routes all of 127.0.0.0/8 to lo; 16 is sshd's limit of
listening sockets, MAX_LISTEN_SOCKS); host i of N is 127.0.0.(1 + i % 16). Each is a
separate TCP connection with its own key exchange and authentication; the 16 addresses
each have their own known_hosts line (`[127.0.0.K]:port key`, all the one host key).
fabric keys its result dict by (host, user, port), so its result holds at most 16
entries; a failure on any host still raises GroupException, so "no exception" means all
N succeeded. pyssh.Group keys its result by host name and refuses a name listed
twice, so its hosts are `("hI", {"hostname": "127.0.0.K"})` pairs (a name, and where
to connect, as ssh_config's HostName): the known_hosts lookup is under 127.0.0.K.

sshd: MaxStartups 1000:30:1000 (SSHServer's own 100:30:200 is taken out of its
config: sshd keeps the last MaxStartups it reads, and with 200 asyncssh's 500 connects at
once fail), PerSourceMaxStartups none (OpenSSH >= 8.5), MaxSessions 10, LogLevel ERROR,
and SetEnv SHLVL=1 (Debian's bash then skips root's ~/.bashrc, here 160 ms of pyenv per
command) so that the command is cheap. sshd runs on the same cores as the client and
does most of the work (a fork and a key exchange per connection, and in the upload the
writes): on a small machine the wall time measures sshd as much as the client; client
CPU and RSS are the client's own.

The machines are shared and noisy: clients run round-robin, the order rotated each
repetition; compare the ratios. ratio = the client's median wall / pyssh.Group's
(> 1: pyssh.Group is faster); were pyssh.Group to fail, the ratios are over the
thread pool's, and the table says so.
"""

from __future__ import annotations

import argparse
import asyncio
import filecmp
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from _common import GCM, cpu_seconds, failed_row, machine, parse_size, render, round_robin

ADDRESSES = 16
BASELINE = "pyssh.Group"
THREADS = "pyssh-threads"
LABELS = {
    BASELINE: "pyssh.Group (baseline)",
    THREADS: "pyssh threads (64)",
    "parallel-ssh": "parallel-ssh, ParallelSSHClient",
    "asyncssh": "asyncssh, asyncio.gather",
    "fabric": "fabric, ThreadingGroup / threads",
}
MODULES = {
    BASELINE: "pyssh",
    THREADS: "pyssh",
    "parallel-ssh": "pssh.clients",
    "asyncssh": "asyncssh",
    "fabric": "fabric",
}
COMMAND = "echo ok"
UPLOAD_NAME = "fleet-upload.bin"


def hosts(n: int) -> list:
    return [f"127.0.0.{1 + i % ADDRESSES}" for i in range(n)]


def failures(what: str, n: int, bad: list) -> RuntimeError:
    e = bad[0]
    if isinstance(e, BaseException):
        e = f"{type(e).__name__}: {e}"
    return RuntimeError(f"{what}: {len(bad)} of {n} failed; {e}")


# ---- the clients: each takes the server's description and the host list, runs the
# scenario on every host, raises on any failure, and returns the cipher it asked for.


def pyssh_kwargs(srv: dict) -> dict:
    return {
        "port": srv["port"],
        "user": srv["user"],
        "keyfile": srv["client_key"],
        "known_hosts": srv["known_hosts"],
        "host_key_policy": "strict",
        "config": False,
        "ciphers": [GCM],
        "timeout": 120,
    }


def run_group(srv: dict, hs: list, scenario: str) -> str:
    import pyssh

    # a name per host (Group refuses one listed twice), connecting to its address
    names = [(f"h{i}", {"hostname": h}) for i, h in enumerate(hs)]
    with pyssh.Group(names, **pyssh_kwargs(srv)) as g:
        if scenario == "connect":
            r = g.run(COMMAND)
        else:
            r = g.upload([srv["src"]], to=srv["to"])
        r.raise_for_failures()
        if len(r) != len(hs):
            raise RuntimeError(f"{len(r)} results for {len(hs)} hosts")
        if scenario == "connect":
            bad = [f"{h}: {x.stdout!r}" for h, x in r.items() if x.stdout != b"ok\n"]
            if bad:
                raise failures("stdout", len(hs), bad)
    return GCM


def run_threads(srv: dict, hs: list, scenario: str) -> str:
    from concurrent.futures import ThreadPoolExecutor

    import pyssh

    def one(host):
        with pyssh.connect(host, **pyssh_kwargs(srv)) as s:
            if scenario == "connect":
                r = s.exec_internal(COMMAND)
                if r.status != 0 or r.stdout != b"ok\n":
                    raise RuntimeError(f"{host}: exit {r.status}, stdout {r.stdout!r}")
            else:
                s.sftp_upload(srv["src"], to=srv["to"], verbose=False)

    with ThreadPoolExecutor(max_workers=64) as pool:
        futures = [pool.submit(one, h) for h in hs]
    bad = [f.exception() for f in futures if f.exception()]
    if bad:
        raise failures(scenario, len(hs), bad)
    return GCM


def run_parallel_ssh(srv: dict, hs: list, scenario: str) -> str:
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
    if scenario == "connect":
        output = client.run_command(COMMAND, stop_on_errors=True)
        client.join(output)
        bad = [o for o in output if o.exception or o.exit_code != 0]
        for o in output:
            if not bad and list(o.stdout) != ["ok"]:
                bad.append(o)
        if bad:
            o = bad[0]
            raise failures("connect", len(hs), [f"{o.host}: {o.exception or o.exit_code}"])
    else:
        from gevent import joinall

        remote = os.path.join(srv["to"], UPLOAD_NAME)
        greenlets = client.copy_file(srv["src"], remote)
        joinall(greenlets, raise_error=True)
        bad = [g.exception for g in greenlets if not g.successful()]
        if bad:
            raise failures("upload", len(hs), bad)
    if hasattr(client, "disconnect"):
        client.disconnect()
    return "chacha20-poly1305 (libssh2's pick)"


def run_asyncssh(srv: dict, hs: list, scenario: str) -> str:
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
            if scenario == "connect":
                r = await conn.run(COMMAND, check=True)
                if r.stdout != "ok\n":
                    raise RuntimeError(f"{host}: stdout {r.stdout!r}")
            else:
                async with conn.start_sftp_client() as sftp:
                    await sftp.put(srv["src"], srv["to"])

    async def go():
        results = await asyncio.gather(*(one(h) for h in hs), return_exceptions=True)
        bad = [r for r in results if isinstance(r, BaseException)]
        if bad:
            raise failures(scenario, len(hs), bad)

    asyncio.run(go())
    return GCM


def run_fabric(srv: dict, hs: list, scenario: str) -> str:
    import fabric
    import paramiko

    preferred = paramiko.Transport._preferred_ciphers
    config = fabric.Config(overrides={"load_ssh_configs": False})
    connect_kwargs = {
        "key_filename": srv["client_key"],
        "allow_agent": False,
        "look_for_keys": False,
        "disabled_algorithms": {"ciphers": [x for x in preferred if x != GCM]},
    }
    if scenario == "connect":
        group = fabric.ThreadingGroup(
            *hs,
            user=srv["user"],
            port=srv["port"],
            config=config,
            connect_kwargs=connect_kwargs,
        )
        try:
            results = group.run(COMMAND, hide=True)  # GroupException if any host fails
        finally:
            group.close()
        for r in results.values():
            if r.stdout != "ok\n":
                raise RuntimeError(f"stdout {r.stdout!r}")
        return GCM

    from concurrent.futures import ThreadPoolExecutor

    remote = os.path.join(srv["to"], UPLOAD_NAME)

    def one(host):
        c = fabric.Connection(
            host, user=srv["user"], port=srv["port"], config=config, connect_kwargs=connect_kwargs
        )
        with c:
            c.put(srv["src"], remote)

    with ThreadPoolExecutor(max_workers=len(hs)) as pool:
        futures = [pool.submit(one, h) for h in hs]
    bad = [f.exception() for f in futures if f.exception()]
    if bad:
        raise failures("upload", len(hs), bad)
    return GCM


CLIENTS = {
    BASELINE: run_group,
    THREADS: run_threads,
    "parallel-ssh": run_parallel_ssh,
    "asyncssh": run_asyncssh,
    "fabric": run_fabric,
}


# ---- one run, in a fresh process


def _status(field: str) -> int:
    """A field of /proc/self/status in bytes (VmRSS, VmHWM)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def worker(name: str, scenario: str, n: int, srv: dict) -> dict:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # N sockets at once
    __import__(MODULES[name])  # imported before the clock starts
    hs = hosts(n)
    before = _status("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM (the peak) to the current resident set
    c, t = cpu_seconds(), time.perf_counter()
    cipher = CLIENTS[name](srv, hs, scenario)
    elapsed, cpu = time.perf_counter() - t, cpu_seconds() - c
    return {"cipher": cipher, "wall": elapsed, "cpu": cpu, "rss": _status("VmHWM") - before}


def worker_env() -> dict:
    """The environment of the workers: this process's pyssh first on PYTHONPATH."""
    import pyssh

    root = os.path.dirname(os.path.dirname(os.path.abspath(pyssh.__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in [env.get("PYTHONPATH")] if p])
    return env


def check_upload(srv: dict) -> None:
    """The one file the run left in srv["to"]: the source's size and bytes."""
    path = os.path.join(srv["to"], UPLOAD_NAME)
    names = os.listdir(srv["to"])
    if names != [UPLOAD_NAME]:
        raise RuntimeError(f"the remote directory holds {sorted(names)[:5]}")
    size = os.path.getsize(path)
    if size != srv["size"]:
        raise RuntimeError(f"the uploaded file has {size} bytes, not {srv['size']}")
    if not filecmp.cmp(srv["src"], path, shallow=False):
        raise RuntimeError("the uploaded file differs from the source")


def children_cpu(pid: int) -> float:
    """CPU seconds of the reaped children of `pid` (cutime + cstime): for sshd's
    listener, what every connection's sshd processes and their commands used."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")


def server_cpu(pid: int, before: float) -> float:
    """sshd's CPU since `before`, once its connections' processes are reaped."""
    time.sleep(0.5)  # the last sessions end just after the client closed them
    return children_cpu(pid) - before


def once_for(scenario: str, n: int, srv: dict, rss: dict):
    env = worker_env()

    def once(name, warmup):
        run_srv = dict(srv)
        if scenario == "upload":
            run_srv["to"] = tempfile.mkdtemp(prefix="up-", dir=srv["dir"])
        cmd = [sys.executable, __file__, "--worker", name, scenario, str(n), json.dumps(run_srv)]
        sshd_before = children_cpu(srv["sshd_pid"])
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
            lines = p.stdout.strip().splitlines()
            if p.returncode != 0 or not lines:
                err = (p.stderr.strip().splitlines() or [f"exit {p.returncode}"])[-1]
                raise RuntimeError(err)
            r = json.loads(lines[-1])
            if "error" in r:
                raise RuntimeError(r["error"])
            if scenario == "upload":
                check_upload(run_srv)
        finally:
            if scenario == "upload":
                shutil.rmtree(run_srv["to"], ignore_errors=True)
        if not warmup:
            rss.setdefault(name, []).append(r["rss"])
            rss.setdefault((name, "sshd"), []).append(server_cpu(srv["sshd_pid"], sshd_before))
        return r["cipher"], r["wall"], r["cpu"]

    return once


def table(scenario, n, size, rows, rss, markdown):
    base_name = next((x for x in (BASELINE, THREADS) if x in rows and rows[x]["times"]), None)
    base = statistics.median(rows[base_name]["times"]) if base_name else None
    head = ["client", "cipher", "wall", "ratio", "client CPU", "CPU / host", "peak RSS growth"]
    head.append("sshd CPU / host")
    if scenario == "upload":
        head.insert(3, "MB/s, all hosts")
    body = []
    for name, row in rows.items():
        if not row["times"]:
            body.append(failed_row(LABELS[name], row["cipher"], row, len(head), limit=160))
            continue
        med = statistics.median(row["times"])
        cpu = statistics.median(row["cpu"])
        cells = [
            LABELS[name],
            row["cipher"],
            f"{med:.2f} s",
            f"{med / base:.2f}" if base else "",
            f"{cpu:.2f} s",
            f"{cpu / n * 1000:.1f} ms",
            f"{statistics.median(rss[name]) / 2**20:.0f} MiB",
            f"{statistics.median(rss[name, 'sshd']) / n * 1000:.1f} ms",
        ]
        if scenario == "upload":
            cells.insert(3, f"{n * size / med / 1e6:.0f}")
        body.append(cells)
    if scenario == "connect":
        title = f"{n} hosts: connect + `{COMMAND}` + close on each"
    else:
        title = f"{n} hosts: connect + SFTP upload of {size / 2**20:g} MiB + close on each"
    if base_name and base_name != BASELINE:
        title += f" (ratios over {LABELS[base_name]}: {BASELINE} failed)"
    print(f"\n{title}")
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
        name, scenario, n = sys.argv[2], sys.argv[3], int(sys.argv[4])
        srv = json.loads(sys.argv[5])
        try:
            print(json.dumps(worker(name, scenario, n, srv)))
        except Exception as e:  # noqa: BLE001 - reported in the client's row
            print(json.dumps({"error": f"{type(e).__name__}: {e}"[:300]}))
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenario", choices=("connect", "upload"), default="connect")
    ap.add_argument("-r", "--reps", type=int, default=3)
    ap.add_argument("--hosts", help="numbers of hosts, e.g. 100,500 (upload: 50)")
    ap.add_argument("--size", type=parse_size, default="10M", help="upload: file size")
    ap.add_argument("--clients", default=",".join(CLIENTS), help="a subset, comma-separated")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    numbers = args.hosts or ("100,500" if args.scenario == "connect" else "50")
    import pyssh

    print("\n".join(machine() + [versions(), f"pyssh from {os.path.dirname(pyssh.__file__)}"]))
    names = [c for c in args.clients.split(",") if c]
    unknown = [c for c in names if c not in CLIENTS]
    if unknown:
        ap.error(f"unknown clients {unknown}: choose from {', '.join(CLIENTS)}")
    if BASELINE not in names:
        names.insert(0, BASELINE)
    names.sort(key=list(CLIENTS).index)
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
            "dir": server.dir,
            "sshd_pid": server.pid,
        }
        if args.scenario == "upload":
            srv["src"] = os.path.join(server.dir, UPLOAD_NAME)
            srv["size"] = args.size
            with open(srv["src"], "wb") as f:
                f.write(os.urandom(args.size))
        for n in (int(x) for x in numbers.split(",")):
            rows = {x: {"times": [], "cpu": [], "cipher": "", "error": ""} for x in names}
            rss: dict = {}
            round_robin(rows, once_for(args.scenario, n, srv, rss), args.reps)
            table(args.scenario, n, args.size, rows, rss, args.markdown)


if __name__ == "__main__":
    main()
