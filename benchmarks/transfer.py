"""Copying files: upload and download of one big file of random bytes (default 1 GiB)
and of many small files (default 1,000 of 4 KiB in one directory), against a
throwaway local sshd, for pyssh's SFTP and SCP, OpenSSH's sftp, scp (SFTP in
OpenSSH 9) and scp -O (the legacy SCP protocol), paramiko's SFTP and asyncssh's
SFTP and scp, side by side in one run, all with the cipher forced to
aes128-gcm@openssh.com.

    pip install -e .[bench]       # paramiko and asyncssh; a missing one is skipped
    python benchmarks/transfer.py [-r 3] [--size 1G] [--files 1000] [--only big|small]
                                  [--delay MS] [--markdown]

--delay MS adds MS milliseconds of round-trip time: every client connects through a
relay (this file run with --relay, in its own process) that holds each chunk for
MS/2 milliseconds each way before passing it on, at full bandwidth otherwise. It
stands in for tc netem, which needs the sch_netem kernel module and the right to
make network namespaces (this machine's kernel has no netem: "Specified qdisc kind
is unknown"). With delay, what counts is how many requests a client keeps in
flight.

The server runs on this machine, so remote paths are local: one temporary directory
(next to where tempfile puts things, normally /tmp) holds the source data and one
destination directory per client and direction, emptied after each run. Every run
connects, authenticates, copies and disconnects (scp cannot do otherwise) and is
preceded, outside the timing, by os.sync(), so that one run's writeback does not land
in the next. Each client's first run is a warm-up, not timed, whose result is checked
fully (sha256 of the big file, the bytes of every small file); the timed runs are
checked by size. paramiko copies the small files one by one over one SFTP session
(with its default confirm=True: one stat per file more); asyncssh copies directories
with recurse=True. paramiko's own rekeying every 512 MiB is switched off, as in
benchmarks/exec.py (paramiko issue #822).
Clients run round-robin, the order rotated each repetition, since the machines are
shared and noisy: compare the ratios, not absolute numbers. MB/s is 10**6 bytes per
second, from the median. ratio to SFTP (to SCP) = client's median time / pyssh SFTP's
(pyssh SCP's) median time in the same direction (> 1: pyssh is faster). client CPU =
the client's median user + system CPU per run (scp's, sftp's and their ssh's
included; the server's, sshd and its scp or sftp-server, never).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import re
import shutil
import stat
import statistics
import subprocess
import sys
import tempfile
import time

import pyssh
from pyssh.testing import SSHServer

from _common import (
    CHUNK,
    GCM,
    cpu_seconds,
    failed_row,
    machine,
    pair,
    parse_size,  # noqa: E402
    render,
    round_robin,
    seconds,
)

SMALL = 4096
OPS = ("upload", "download")


def make_clients(srv) -> dict:
    """name -> fn(op, src, dst) -> negotiated cipher. Each call connects, copies src
    (a file or a directory; remote for a download) into the existing directory dst
    (remote for an upload), and disconnects."""
    clients = {}

    def pyssh_run(op, src, dst):
        with pyssh.connect(
            srv.address,
            keyfile=srv.client_key,
            known_hosts=srv.known_hosts,
            config=False,
            ciphers=[GCM],
        ) as s:
            if op == "upload":
                s.scp_upload(src, to=dst, verbose=False)
            else:
                s.scp_download(src, to=dst, verbose=False)
            info = s.info()
        return pair(info["cipher_in"], info["cipher_out"])

    clients["pyssh scp"] = pyssh_run

    def pyssh_sftp(op, src, dst):
        with pyssh.connect(
            srv.address,
            keyfile=srv.client_key,
            known_hosts=srv.known_hosts,
            config=False,
            ciphers=[GCM],
        ) as s:
            if op == "upload":
                s.sftp_upload(src, to=dst, verbose=False)
            else:
                s.sftp_download(src, to=dst, verbose=False)
            info = s.info()
        return pair(info["cipher_in"], info["cipher_out"])

    clients["pyssh SFTP"] = pyssh_sftp

    def openssh_sftp(op, src, dst):
        # a batch: put -r / get -r, as the other clients copy trees
        cmd = f"put -r {src} {dst}\n" if op == "upload" else f"get -r {src} {dst}\n"
        argv = [
            "sftp",
            "-q",
            "-b",
            "-",
            "-F",
            "/dev/null",
            "-c",
            GCM,
            "-i",
            srv.client_key,
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            f"UserKnownHostsFile={srv.known_hosts}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-P",
            str(srv.port),
            f"{srv.user}@{srv.host}",
        ]
        r = subprocess.run(
            argv,
            input=cmd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
        )
        if r.returncode:
            raise RuntimeError(f"sftp exit status {r.returncode}: {r.stderr.strip()[-200:]}")
        return f"{GCM} (forced)"

    clients["sftp (OpenSSH)"] = openssh_sftp

    def scp(legacy):
        seen = []

        def run(op, src, dst):
            remote = lambda p: f"{srv.user}@{srv.host}:{p}"  # noqa: E731
            # the first (warm-up) run says -v instead of -q: ssh -v names the cipher
            argv = (
                ["scp"]
                + (["-O"] if legacy else [])
                + (["-q"] if seen else ["-v"])
                + [
                    "-r",
                    "-F",
                    "/dev/null",
                    "-c",
                    GCM,
                    "-i",
                    srv.client_key,
                    "-o",
                    "IdentitiesOnly=yes",
                    "-o",
                    f"UserKnownHostsFile={srv.known_hosts}",
                    "-o",
                    "StrictHostKeyChecking=yes",
                    "-o",
                    "BatchMode=yes",
                    "-P",
                    str(srv.port),
                ]
            )
            argv += [src, remote(dst)] if op == "upload" else [remote(src), dst]
            r = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
                errors="replace",
            )
            if r.returncode:
                raise RuntimeError(f"scp exit status {r.returncode}: {r.stderr.strip()[-200:]}")
            if not seen:
                found = re.findall(
                    r"kex: (?:server->client|client->server) cipher: (\S+)", r.stderr
                )
                seen.append(pair(*found) if len(found) == 2 else f"{GCM} (forced)")
            return seen[0]

        return run

    clients["scp -O (SCP)"] = scp(True)
    clients["scp (SFTP)"] = scp(False)

    try:
        import paramiko

        if GCM not in paramiko.Transport._preferred_ciphers:
            raise ImportError(f"paramiko {paramiko.__version__} lacks {GCM}")

        def paramiko_run(op, src, dst):
            c = paramiko.SSHClient()
            c.load_host_keys(srv.known_hosts)
            c.set_missing_host_key_policy(paramiko.RejectPolicy())
            others = [x for x in paramiko.Transport._preferred_ciphers if x != GCM]
            c.connect(
                srv.host,
                port=srv.port,
                username=srv.user,
                key_filename=srv.client_key,
                look_for_keys=False,
                allow_agent=False,
                disabled_algorithms={"ciphers": others},
            )
            try:
                t = c.get_transport()
                # rekeying that falls as the channel closes deadlocks (paramiko #822): off
                t.packetizer.REKEY_BYTES = t.packetizer.REKEY_PACKETS = 1 << 62
                sftp = c.open_sftp()
                name = os.path.basename(src)
                if op == "upload":
                    if os.path.isdir(src):
                        sftp.mkdir(f"{dst}/{name}")
                        for f in sorted(os.listdir(src)):
                            sftp.put(os.path.join(src, f), f"{dst}/{name}/{f}")
                    else:
                        sftp.put(src, f"{dst}/{name}")
                elif stat.S_ISDIR(sftp.stat(src).st_mode):
                    os.mkdir(os.path.join(dst, name))
                    for f in sorted(sftp.listdir(src)):
                        sftp.get(f"{src}/{f}", os.path.join(dst, name, f))
                else:
                    sftp.get(src, os.path.join(dst, name))
                sftp.close()
                return pair(t.remote_cipher, t.local_cipher)
            finally:
                c.close()

        clients["paramiko SFTP"] = paramiko_run
        print("(paramiko: its own rekeying every 512 MiB switched off, see paramiko issue #822)")
    except ImportError as e:
        print(f"(paramiko skipped: {e})")

    try:
        import asyncssh

        loop = asyncio.new_event_loop()  # one loop for all runs; never closed before exit

        async def one(kind, op, src, dst):
            async with asyncssh.connect(
                srv.host,
                port=srv.port,
                username=srv.user,
                client_keys=[srv.client_key],
                known_hosts=srv.known_hosts,
                agent_path=None,
                config=None,
                encryption_algs=[GCM],
            ) as conn:
                if kind == "scp":
                    if op == "upload":
                        await asyncssh.scp(src, (conn, dst), recurse=True)
                    else:
                        await asyncssh.scp((conn, src), dst, recurse=True)
                else:
                    async with conn.start_sftp_client() as sftp:
                        if op == "upload":
                            await sftp.put(src, dst, recurse=True)
                        else:
                            await sftp.get(src, dst, recurse=True)
                return pair(conn.get_extra_info("recv_cipher"), conn.get_extra_info("send_cipher"))

        for kind in ("scp", "SFTP"):
            clients[f"asyncssh {kind}"] = (
                lambda k: lambda op, src, dst: loop.run_until_complete(one(k, op, src, dst))
            )(kind)
    except ImportError:
        print("(asyncssh not installed: pip install asyncssh)")
    return clients


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def make_data(root: str, work: str, size: int, files: int) -> dict:
    """The source of one workload: {"src", "bytes", "count", "sha256" or "names"}."""
    if work == "big":
        path, h = os.path.join(root, "src", "big.bin"), hashlib.sha256()
        with open(path, "wb") as f:
            for done in range(0, size, CHUNK):
                block = os.urandom(min(CHUNK, size - done))
                h.update(block)
                f.write(block)
        return {"src": path, "bytes": size, "count": 1, "sha256": h.hexdigest()}
    path = os.path.join(root, "src", "small")
    os.mkdir(path, 0o755)
    names = [f"f{i:05d}" for i in range(files)]
    for name in names:
        with open(os.path.join(path, name), "wb") as f:
            f.write(os.urandom(SMALL))
    return {"src": path, "bytes": files * SMALL, "count": files, "names": names}


def check(data: dict, dst: str, full: bool) -> None:
    """What arrived in dst is what was sent: sizes, and with full also the bytes."""
    out = os.path.join(dst, os.path.basename(data["src"]))
    if "sha256" in data:
        got = os.path.getsize(out)
        assert got == data["bytes"], f"{got} bytes, not {data['bytes']}"
        assert not full or sha256(out) == data["sha256"], "sha256 differs"
        return
    names = sorted(os.listdir(out))
    assert names == data["names"], f"{len(names)} files, not the {len(data['names'])} expected"
    for name in names:
        p = os.path.join(out, name)
        assert os.path.getsize(p) == SMALL, f"{name}: {os.path.getsize(p)} bytes"
        if full:
            with open(p, "rb") as a, open(os.path.join(data["src"], name), "rb") as b:
                assert a.read() == b.read(), f"{name}: content differs"


def measure(clients: dict, data: dict, root: str, reps: int) -> dict:
    """(client, op) -> {"times": [...], "cpu": [...], "cipher": str, "error": str|None},
    run round-robin: one of each per repetition, the starting point rotated."""
    rows = {
        (name, op): {"times": [], "cpu": [], "cipher": "", "error": None}
        for name in clients
        for op in OPS
    }

    def once(key, full):
        dst = os.path.join(root, "dst", re.sub(r"\W+", "-", f"{key[0]}-{key[1]}"))
        os.makedirs(dst, 0o755)
        try:
            os.sync()
            c, t = cpu_seconds(), time.perf_counter()
            cipher = clients[key[0]](key[1], data["src"], dst)
            elapsed, cpu = time.perf_counter() - t, cpu_seconds() - c
            check(data, dst, full)
            return cipher, elapsed, cpu
        finally:
            shutil.rmtree(dst, ignore_errors=True)

    return round_robin(rows, once, reps)  # the warm-up checks everything (full)


def table(rows: dict, data: dict, markdown: bool) -> list:
    many = data["count"] > 1
    head = ["client", "direction", "negotiated", "median", "min", "MB/s"]
    head += (["files/s"] if many else []) + ["ratio to SFTP", "ratio to SCP", "client CPU"]
    unit = seconds
    body = []
    for (name, op), row in rows.items():
        if row["error"] or not row["times"]:
            body.append(failed_row(name, op, row, len(head)))
            continue
        med, low = statistics.median(row["times"]), min(row["times"])
        ratios = []
        for base_name in ("pyssh SFTP", "pyssh scp"):
            base = rows.get((base_name, op), {}).get("times")
            ratios.append(f"{med / statistics.median(base):.2f}" if base else "?")
        body.append(
            [name, op, row["cipher"], unit(med), unit(low), f"{data['bytes'] / med / 1e6:.1f}"]
            + ([f"{data['count'] / med:.0f}"] if many else [])
            + ratios
            + [unit(statistics.median(row["cpu"]))]
        )
    return render(head, body, markdown)


def relay_main(argv: list) -> None:
    """--relay DELAY_MS TARGET_PORT: listen on a free port of 127.0.0.1 (printed), and
    pass each connection on to TARGET_PORT, each chunk held DELAY_MS/2 ms each way."""
    import socket
    import threading
    from collections import deque

    one_way = float(argv[0]) / 2000.0
    target = int(argv[1])
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(64)
    print(ls.getsockname()[1], flush=True)

    def pipe(a, b):
        queue, cond = deque(), threading.Condition()

        def reader():
            while True:
                try:
                    d = a.recv(1 << 20)
                except OSError:
                    d = b""
                with cond:
                    queue.append((time.monotonic() + one_way, d))
                    cond.notify()
                if not d:
                    return

        def writer():
            while True:
                with cond:
                    while not queue:
                        cond.wait()
                    due, d = queue.popleft()
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                if not d:
                    try:
                        b.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                    return
                try:
                    b.sendall(d)
                except OSError:
                    return

        threading.Thread(target=reader, daemon=True).start()
        threading.Thread(target=writer, daemon=True).start()

    while True:
        c, _ = ls.accept()
        u = socket.create_connection(("127.0.0.1", target))
        for x in (c, u):
            x.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pipe(c, u)
        pipe(u, c)


class Relayed:
    """The server as seen through the relay: the attributes the clients use."""

    def __init__(self, srv, port: int, root: str):
        self.host, self.port, self.user = srv.host, port, srv.user
        self.address = f"{srv.user}@{srv.host}:{port}"
        self.client_key = srv.client_key
        self.known_hosts = os.path.join(root, "known_hosts_relay")
        key = " ".join(srv.host_key_line.split()[1:3])
        with open(self.known_hosts, "w") as f:
            f.write(f"[{srv.host}]:{port} {key}\n")


def main() -> None:
    if sys.argv[1:2] == ["--relay"]:
        relay_main(sys.argv[2:])
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-r", type=int, default=3, help="repetitions (default 3)")
    ap.add_argument("--size", type=parse_size, default="1G", help="big file's size (default 1G)")
    ap.add_argument("--files", type=int, default=1000, help="number of 4 KiB files (default 1000)")
    ap.add_argument("--only", choices=("big", "small"), help="only this workload")
    ap.add_argument("--delay", type=float, default=0, help="added round-trip time, ms")
    ap.add_argument("--markdown", action="store_true", help="also print markdown tables")
    args = ap.parse_args()
    print("\n".join(info := machine()))
    works = [args.only] if args.only else ["big", "small"]
    root = tempfile.mkdtemp(prefix="pyssh-bench-transfer-")
    results = []
    try:
        os.chmod(root, 0o755)
        os.mkdir(os.path.join(root, "src"), 0o755)
        os.mkdir(os.path.join(root, "dst"), 0o755)
        with SSHServer() as srv:
            relay = None
            target = srv
            if args.delay > 0:
                relay = subprocess.Popen(
                    [
                        sys.executable,
                        os.path.abspath(__file__),
                        "--relay",
                        str(args.delay),
                        str(srv.port),
                    ],
                    stdout=subprocess.PIPE,
                    text=True,
                )
                target = Relayed(srv, int(relay.stdout.readline()), root)
            try:
                clients = make_clients(target)
                run_works(args, works, clients, root, results)
            finally:
                if relay is not None:
                    relay.kill()  # the relay this run started
                    relay.wait()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    for title, rows, data in results:
        print(f"\n{title}")
        print("\n".join(table(rows, data, False)))
    if args.markdown:
        print(
            "\n"
            + "\n\n".join(
                ["  \n".join(info)]
                + [
                    f"{title}\n\n" + "\n".join(table(rows, data, True))
                    for title, rows, data in results
                ]
            )
        )


def run_works(args, works, clients, root, results) -> None:
    for work in works:
        data = make_data(root, work, args.size, args.files)
        what = (
            f"one file of {args.size / 2**20:.0f} MiB"
            if work == "big"
            else f"{args.files} files of {SMALL // 1024} KiB in one directory"
        )
        print(f"(measuring {what} ...)", file=sys.stderr, flush=True)
        title = (
            f"{what}, random bytes, cipher forced to {GCM}, connect included, "
            f"{args.r} runs each, MB/s = 10^6 B/s"
            + (f", {args.delay:g} ms round trip added" if args.delay else "")
        )
        results.append((title, measure(clients, data, root, args.r), data))


if __name__ == "__main__":
    main()
