"""Running commands: latency of connect + public key auth + `true` + close, and the
stdout throughput of `head -c SIZE /dev/zero`, against a throwaway local sshd, for
pyssh, OpenSSH's ssh, paramiko and asyncssh, side by side in one run. Each client
runs with its default ciphers and again with aes128-gcm@openssh.com forced.

    pip install -e .[bench]       # paramiko and asyncssh; a missing one is skipped
    python benchmarks/exec.py [-n 20] [-r 3] [--size 1G] [--markdown]

Throughput times include connecting (ssh cannot do otherwise): at 1G a few per cent,
about the client's time in the latency table.
Every client reads all the output and drops it; the byte count is checked wherever
the client hands over the bytes (not for ssh > /dev/null and pyssh's stdout=None:
there the exit status 0 is checked). MB/s is 10**6 bytes per second, from the median.
Clients are run round-robin within each repetition, the order rotated each time,
since the machines are shared and noisy: compare the ratios, not absolute numbers.
ratio = client's median time / pyssh's median time with the same cipher setting
(> 1: pyssh is faster). client CPU = the client's median user + system CPU time per
run: on a small machine the server (sshd encrypting, on one core) is often what
limits the rate, and the client's CPU is what it takes from everything else.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import subprocess
import time

import pyssh
from pyssh.testing import SSHServer

from _common import (
    CHUNK,
    GCM,
    cpu_seconds,
    failed_row,
    machine,
    openssh_options,
    pair,
    paramiko_disabled,
    parse_size,  # noqa: E402
    render,
    round_robin,
)

SETTINGS = ("default", GCM)


def make_clients(srv) -> dict:
    """name -> fn(cipher_setting, command, size or None) -> negotiated cipher.
    Each call connects, runs the command, reads all its output, checks it, closes."""
    clients = {}

    def pyssh_run(setting, cmd, size, callback=False):
        ciphers = None if setting == "default" else [setting]
        with pyssh.connect(
            srv.address,
            keyfile=srv.client_key,
            known_hosts=srv.known_hosts,
            config=False,
            ciphers=ciphers,
        ) as s:
            if callback:
                got = [0]
                status = s.exec_wait(
                    cmd, stdout=lambda b: got.__setitem__(0, got[0] + len(b)), stderr=None
                )
                assert got[0] == (size or 0), f"pyssh got {got[0]} bytes, not {size}"
            else:
                status = s.exec_wait(cmd, stdout=None, stderr=None)
            assert status == 0, f"pyssh: exit status {status}"
            info = s.info()
        return pair(info["cipher_in"], info["cipher_out"])

    clients["pyssh"] = pyssh_run
    clients["pyssh (callback)"] = lambda st, cmd, size: pyssh_run(st, cmd, size, callback=True)

    base = ["ssh", *openssh_options(srv), f"{srv.user}@{srv.host}"]
    ssh_cipher = {}

    def ssh_run(setting, cmd, size):
        opts = [] if setting == "default" else ["-c", setting]
        if setting not in ssh_cipher:  # once, outside the timed runs: ssh -v says it
            err = subprocess.run(
                base[:1] + ["-v"] + opts + base[1:] + ["true"],
                check=True,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
            ).stderr
            found = re.findall(r"kex: (?:server->client|client->server) cipher: (\S+)", err)
            ssh_cipher[setting] = pair(*found) if len(found) == 2 else "?"
        subprocess.run(
            base[:1] + ["-q"] + opts + base[1:] + [cmd],
            check=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )
        return ssh_cipher[setting]

    clients["ssh"] = ssh_run

    try:
        import paramiko

        def paramiko_run(setting, cmd, size):
            c = paramiko.SSHClient()
            c.load_host_keys(srv.known_hosts)
            c.set_missing_host_key_policy(paramiko.RejectPolicy())
            disabled = paramiko_disabled(paramiko, setting)
            c.connect(
                srv.host,
                port=srv.port,
                username=srv.user,
                key_filename=srv.client_key,
                look_for_keys=False,
                allow_agent=False,
                disabled_algorithms=disabled,
            )
            try:
                t = c.get_transport()
                # paramiko rekeys every 512 MiB by itself, and when that falls as the channel
                # closes (at 1G it does, one run in two) it deadlocks for 30 s and fails with
                # "Key-exchange timed out" (paramiko issue #822). So it is switched off.
                t.packetizer.REKEY_BYTES = t.packetizer.REKEY_PACKETS = 1 << 62
                chan = t.open_session()
                chan.exec_command(cmd)
                got = 0
                while data := chan.recv(CHUNK):
                    got += len(data)
                while chan.recv_stderr(CHUNK):
                    pass
                status = chan.recv_exit_status()
                assert status == 0 and got == (size or 0), f"paramiko: status {status}, {got} bytes"
                return pair(t.remote_cipher, t.local_cipher)
            finally:
                c.close()

        clients["paramiko"] = paramiko_run
        print("(paramiko: its own rekeying every 512 MiB switched off, see paramiko issue #822)")
    except ImportError:
        print("(paramiko not installed: pip install paramiko)")

    try:
        import asyncssh

        loop = asyncio.new_event_loop()  # one loop for all runs; never closed before exit

        async def one(setting, cmd, size):
            algs = {} if setting == "default" else {"encryption_algs": [setting]}
            async with asyncssh.connect(
                srv.host,
                port=srv.port,
                username=srv.user,
                client_keys=[srv.client_key],
                known_hosts=srv.known_hosts,
                agent_path=None,
                config=None,
                **algs,
            ) as conn:
                # create_process + read(1 MiB) until b"": as fast as create_session with a
                # data_received counter or run(stdout=DEVNULL) here, and the usual way.
                proc = await conn.create_process(cmd, encoding=None)
                got = 0
                while data := await proc.stdout.read(CHUNK):
                    got += len(data)
                await proc.stderr.read()
                result = await proc.wait()
                assert result.exit_status == 0 and got == (size or 0), (
                    f"asyncssh: status {result.exit_status}, {got} bytes"
                )
                return pair(conn.get_extra_info("recv_cipher"), conn.get_extra_info("send_cipher"))

        clients["asyncssh"] = lambda st, cmd, size: loop.run_until_complete(one(st, cmd, size))
    except ImportError:
        print("(asyncssh not installed: pip install asyncssh)")
    return clients


def measure(clients: dict, cmd: str, size, reps: int) -> dict:
    """(client, setting) -> {"times": [...], "cipher": str, "error": str|None}, run
    round-robin: one of each per repetition, the starting point rotated."""
    rows = {
        (name, st): {"times": [], "cpu": [], "cipher": "", "error": None}
        for name in clients
        for st in SETTINGS
    }

    def once(key, warmup):
        c, t = cpu_seconds(), time.perf_counter()
        cipher = clients[key[0]](key[1], cmd, size)
        return cipher, time.perf_counter() - t, cpu_seconds() - c

    return round_robin(rows, once, reps)


def table(rows: dict, size, markdown: bool) -> list:
    head = ["client", "ciphers", "negotiated", "median", "min"]
    head += (["MB/s"] if size else []) + ["ratio", "client CPU"]
    body = []
    for (name, st), row in rows.items():
        if row["error"] or not row["times"]:
            body.append(failed_row(name, st, row, len(head), 80))
            continue
        med, low = statistics.median(row["times"]), min(row["times"])
        base = rows.get(("pyssh", st), {}).get("times")
        ratio = f"{med / statistics.median(base):.2f}" if base else "?"
        unit = (lambda s: f"{s:.2f} s") if size else (lambda s: f"{s * 1000:.1f} ms")
        body.append(
            [name, st, row["cipher"], unit(med), unit(low)]
            + ([f"{size / med / 1e6:.0f}"] if size else [])
            + [ratio]
            + [unit(statistics.median(row["cpu"]))]
        )
    return render(head, body, markdown)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=20, help="latency repetitions (default 20)")
    ap.add_argument("-r", type=int, default=3, help="throughput repetitions (default 3)")
    ap.add_argument("--size", type=parse_size, default="1G", help="bytes of output (default 1G)")
    ap.add_argument("--markdown", action="store_true", help="also print markdown tables")
    args = ap.parse_args()
    info = machine()
    print("\n".join(info))
    with SSHServer() as srv:
        clients = make_clients(srv)
        latency_clients = {k: v for k, v in clients.items() if k != "pyssh (callback)"}
        lat = measure(latency_clients, "true", None, args.n)
        cmd = f"head -c {args.size} /dev/zero"
        thr = measure(clients, cmd, args.size, args.r)
    title1 = f"connect + auth + `true` + close, {args.n} runs each"
    title2 = (
        f"`{cmd}`, output read and dropped ({args.size / 2**20:.0f} MiB), "
        f"{args.r} runs each, MB/s = 10^6 B/s"
    )
    for title, rows, size in ((title1, lat, None), (title2, thr, args.size)):
        print(f"\n{title}")
        print("\n".join(table(rows, size, False)))
    if args.markdown:
        print(
            "\n"
            + "\n\n".join(
                ["  \n".join(info)]
                + [
                    f"{title}\n\n" + "\n".join(table(rows, size, True))
                    for title, rows, size in ((title1, lat, None), (title2, thr, args.size))
                ]
            )
        )


if __name__ == "__main__":
    main()
