"""fsspec filesystems side by side (issue 22): pyssh's (`pyssh.fsspec`, protocol
"pyssh"), fsspec's own `sftp` (paramiko) and `sshfs` (asyncssh), against one throwaway
local sshd, in one run. aes128-gcm@openssh.com for all.

    pip install -e .[bench,test]      # fsspec, pandas, paramiko, sshfs
    python benchmarks/fs.py [-r 3] [--size 256M] [--csv-rows 1000000] [--rtt 0,10,30]
                            [--markdown]

--rtt MS,MS,... runs every scenario once per round-trip time, in turn (default 0:
loopback): at each MS > 0 every filesystem connects through benchmarks/relay.py,
which holds each chunk MS/2 milliseconds each way (see benchmarks/aio.py).

(This file is not named fsspec.py: run as a script, its directory comes first on
sys.path, and it would be imported as fsspec itself.)

Scenarios (each filesystem is made and connected before the clock starts):

- get: `fs.get(remote, local)` of SIZE random bytes to a new local file (removed
  off the clock); checked: its size;
- read_csv: `pandas.read_csv(fs.open(remote))` of a CSV of --csv-rows rows (about
  50 MB by default: an int, a float, a word per row), read through the filesystem's
  file object as pandas does for a URL; checked: the row count.

Medians of -r runs, round-robin, the order rotated (the machines are shared and
noisy); ratio = the filesystem's median time / pyssh's (above 1: pyssh faster);
client CPU = this process's user + system CPU during the run (not the relay's), also
per MB moved.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from aio import Relayed, rtts  # noqa: E402
from relay import spawned  # noqa: E402

from _common import (  # noqa: E402
    GCM,
    cpu_seconds,
    machine,
    paramiko_disabled,
    parse_size,
    render,
    round_robin,
)


def pyssh_fs(srv):
    from pyssh.fsspec import SSHFileSystem

    return SSHFileSystem(
        srv.host,
        port=srv.port,
        user=srv.user,
        keyfile=srv.client_key,
        known_hosts=srv.known_hosts,
        config=False,
        ciphers=[GCM],
        skip_instance_cache=True,
    )


def sftp_fs(srv):
    import paramiko
    from fsspec.implementations.sftp import SFTPFileSystem

    return SFTPFileSystem(
        srv.host,
        port=srv.port,
        username=srv.user,
        key_filename=srv.client_key,
        look_for_keys=False,
        allow_agent=False,
        disabled_algorithms=paramiko_disabled(paramiko, GCM),
        # (fsspec's default, auto_add: the throwaway sshd's key is new to paramiko)
        skip_instance_cache=True,
    )


def sshfs_fs(srv):
    from sshfs import SSHFileSystem

    return SSHFileSystem(
        srv.host,
        port=srv.port,
        username=srv.user,
        client_keys=[srv.client_key],
        known_hosts=srv.known_hosts,
        encryption_algs=[GCM],
        skip_instance_cache=True,
    )


FILESYSTEMS = {
    "pyssh (pyssh.fsspec)": pyssh_fs,
    "sftp (fsspec, paramiko)": sftp_fs,
    "sshfs (asyncssh)": sshfs_fs,
}


def write_csv(path: str, rows: int) -> int:
    import random

    rnd = random.Random(22)
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]
    with open(path, "w") as f:
        f.write("id,value,word\n")
        for i in range(rows):
            f.write(f"{i},{rnd.random() * 1000:.6f},{rnd.choice(words)}\n")
    return os.path.getsize(path)


def scenario(fs, what, args, d):
    if what == "get":
        local = os.path.join(d, "got")
        fs.get(os.path.join(d, "src"), local)
        if os.path.getsize(local) != args.size:
            raise RuntimeError("get: wrong size")
    else:
        import pandas as pd

        with fs.open(os.path.join(d, "data.csv"), "rb") as f:
            df = pd.read_csv(f)
        if len(df) != args.csv_rows:
            raise RuntimeError("read_csv: wrong row count")


def run_scenario(filesystems, what, args, d):
    def once(name, warmup):
        try:
            os.unlink(os.path.join(d, "got"))
        except FileNotFoundError:
            pass
        c, t = cpu_seconds(), time.perf_counter()
        scenario(filesystems[name], what, args, d)
        return GCM, time.perf_counter() - t, cpu_seconds() - c

    rows = {n: {"times": [], "cpu": [], "cipher": "", "error": ""} for n in filesystems}
    return round_robin(rows, once, args.reps)


def table(what, rows, args, nbytes, rtt):
    where = f"{rtt:g} ms round trip added (relay)" if rtt else "loopback, no delay"
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\n{what} -- {where}; load average {load}")
    first = next(iter(rows.values()))
    base = statistics.median(first["times"]) if first["times"] else None
    head = ["filesystem", "scenario", "time", "MB/s", "ratio", "client CPU", "CPU per MB"]
    body = []
    for name, row in rows.items():
        if not row["times"]:
            body.append([name, what, (row["error"] or "no runs")[:100]] + [""] * 4)
            continue
        med, cpu = statistics.median(row["times"]), statistics.median(row["cpu"])
        body.append(
            [
                name,
                what,
                f"{med:.2f} s",
                f"{nbytes / med / 1e6:.0f}",
                f"{med / base:.2f}" if base else "",
                f"{cpu:.2f} s",
                f"{cpu / (nbytes / 1e6) * 1000:.2f} ms",
            ]
        )
    print("\n".join(render(head, body, args.markdown)))
    sys.stdout.flush()


def run_rtt(target, rtt, args, d, csv_bytes) -> None:
    filesystems = {}
    for name, make in FILESYSTEMS.items():
        try:
            fs = make(target)
            fs.ls(d)  # connected before the clock starts
            filesystems[name] = fs
        except Exception as e:  # noqa: BLE001 - a missing filesystem is reported
            print(f"{name}: not run ({type(e).__name__}: {e})")
    for what in args.scenarios.split(","):
        rows = run_scenario(filesystems, what, args, d)
        table(what, rows, args, args.size if what == "get" else csv_bytes, rtt)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-r", "--reps", type=int, default=3)
    ap.add_argument("--size", type=parse_size, default="256M")
    ap.add_argument("--csv-rows", type=int, default=1_800_000)
    ap.add_argument("--scenarios", default="get,read_csv")
    ap.add_argument("--rtt", type=rtts, default="0", help="round trips added, ms (0: none)")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    print("\n".join(machine()))
    print(f"load average at the start: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    from pyssh.testing import SSHServer

    with SSHServer(extra_config=["SetEnv SHLVL=1"]) as srv:
        d = tempfile.mkdtemp(prefix="fs-", dir=srv.dir)
        with open(os.path.join(d, "src"), "wb") as f:
            f.write(os.urandom(args.size))
        csv_bytes = write_csv(os.path.join(d, "data.csv"), args.csv_rows)
        print(f"get: {args.size} random bytes; read_csv: {csv_bytes / 1e6:.1f} MB")
        for rtt in args.rtt:
            with contextlib.ExitStack() as stack:
                target = srv
                if rtt:
                    target = Relayed(srv, stack.enter_context(spawned(rtt, srv.port)))
                run_rtt(target, rtt, args, d, csv_bytes)


if __name__ == "__main__":
    main()
