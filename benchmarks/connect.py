"""Connect latency: TCP + key exchange + public key authentication + disconnect,
against a throwaway local sshd, for pyssh, paramiko, asyncssh and OpenSSH's ssh,
run side by side in one process tree. Prints medians and ratios to pyssh.

    python benchmarks/connect.py [-n 40]

OpenSSH's ssh also opens a session channel and runs `true` (it cannot stop after
authenticating), so its number includes one round trip more than the others.
The machines are shared and noisy: compare the ratios, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import time

import pyssh
from pyssh.testing import SSHServer


def bench(fn, n):
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=40)
    args = ap.parse_args()
    results = {}
    with SSHServer() as srv:

        def with_pyssh():
            s = pyssh.connect(
                srv.address, keyfile=srv.client_key, known_hosts=srv.known_hosts, config=False
            )
            s.close()

        with_pyssh()
        with pyssh.connect(
            srv.address, keyfile=srv.client_key, known_hosts=srv.known_hosts, config=False
        ) as s:
            info = s.info()
        results["pyssh"] = bench(with_pyssh, args.n)

        try:
            import paramiko

            def with_paramiko():
                c = paramiko.SSHClient()
                c.set_missing_host_key_policy(paramiko.AutoAddPolicy())
                c.connect(
                    srv.host,
                    port=srv.port,
                    username=srv.user,
                    key_filename=srv.client_key,
                    look_for_keys=False,
                    allow_agent=False,
                )
                c.close()

            with_paramiko()
            results[f"paramiko {paramiko.__version__}"] = bench(with_paramiko, args.n)
        except ImportError:
            print("(paramiko not installed: pip install paramiko)")

        try:
            import asyncssh

            async def one():
                conn = await asyncssh.connect(
                    srv.host,
                    port=srv.port,
                    username=srv.user,
                    client_keys=[srv.client_key],
                    known_hosts=None,
                    agent_path=None,
                )
                conn.close()
                await conn.wait_closed()

            def with_asyncssh():
                asyncio.run(one())

            with_asyncssh()
            results[f"asyncssh {asyncssh.__version__}"] = bench(with_asyncssh, args.n)
        except ImportError:
            print("(asyncssh not installed: pip install asyncssh)")

        cmd = [
            "ssh",
            "-q",
            "-F",
            "/dev/null",
            "-i",
            srv.client_key,
            "-p",
            str(srv.port),
            "-o",
            f"UserKnownHostsFile={srv.known_hosts}",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            f"{srv.user}@{srv.host}",
            "true",
        ]

        def with_openssh():
            subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL)

        with_openssh()
        version = subprocess.run(["ssh", "-V"], capture_output=True, text=True).stderr.split(",")[0]
        results[f"{version} (runs `true`)"] = bench(with_openssh, args.n)

    base = results["pyssh"][0]
    print(
        f"connect + auth + disconnect, {args.n} runs each; pyssh negotiated "
        f"{info['kex']}, {info['cipher']}, {info['hostkey']}"
    )
    print(f"{'client':40} {'median ms':>10} {'min ms':>8} {'median / pyssh':>15}")
    for name, (med, low) in results.items():
        print(f"{name:40} {med * 1000:10.1f} {low * 1000:8.1f} {med / base:15.2f}")


if __name__ == "__main__":
    main()
