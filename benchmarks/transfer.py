"""Copying files: upload and download of one big file of random bytes (default 1 GiB)
and of many small files (default 1,000 of 4 KiB, as a tree of 20 directories), against a
throwaway local sshd, for pyssh's SFTP and SCP, OpenSSH's sftp, scp (SFTP in OpenSSH 9)
and scp -O (the legacy SCP protocol), paramiko's SFTP and asyncssh's SFTP and scp, side
by side in one run, all with the cipher forced to aes128-gcm@openssh.com.

    pip install -e .[bench]       # paramiko, asyncssh, matplotlib; a missing one is skipped
    python benchmarks/transfer.py [-r 3] [--size 1G] [--files 1000] [--only big|small]
                                  [--layout tree|flat] [--delays 20,50,100] [--rate MBIT]
                                  [--ceiling-size 512M] [--json FILE] [--plot PNG] [--markdown]
    python benchmarks/transfer.py --plot-from FILE --plot PNG    # re-plot saved results

--delays MS,MS,... runs everything once per round-trip time, in turn (0: loopback, no
relay): at each, every client connects through a relay (benchmarks/relay.py, in its own
process) that holds each chunk MS/2 milliseconds each way, optionally capped at --rate
Mbit/s each way; it stands in for tc netem, which this machine's kernel lacks. With
delay, what counts is how many bytes and requests a client keeps in flight. Before the
clients, a plain TCP stream is pushed through a relay at the same delay each way: the
relay's ceiling, printed with the big file's table (relay.py's docstring says how).
--delay MS is --delays MS.

The server runs on this machine, so remote paths are local: one temporary directory
(next to where tempfile puts things, normally /tmp) holds the source data and one
destination directory per client and direction, emptied after each run. Every run
connects, authenticates, copies and disconnects (scp cannot do otherwise) and is
preceded, outside the timing, by os.sync(), so that one run's writeback does not land
in the next. Each client's first run at each delay is a warm-up, not timed, whose result
is checked fully (sha256 of the big file, the bytes of every small file, the tree's
shape); the timed runs are checked by names and sizes. A client that fails is reported
as failed, and the others go on. OpenSSH's sftp copies with put -r / get -r, scp with
-r, asyncssh with recurse=True, paramiko with a walk of the tree (one put or get per
file over one SFTP session, with its default confirm=True: one stat per file more).
paramiko's own rekeying every 512 MiB is switched off, as in benchmarks/exec.py
(paramiko issue #822).
Clients run round-robin, the order rotated each repetition, since the machines are
shared and noisy: compare the ratios, not absolute numbers. MB/s is 10**6 bytes per
second, from the median. ratio to SFTP (to SCP) = client's median time / pyssh SFTP's
(pyssh SCP's) median time in the same direction (> 1: pyssh is faster). client CPU =
the client's median user + system CPU per run (scp's, sftp's and their ssh's
included; the server's, sshd and its scp or sftp-server, never).
--json FILE saves every result (per client, workload, direction and round trip: median
seconds, MB/s, files/s) and the ceilings; --plot PNG draws MB/s against round-trip time
(benchmarks/_plot.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import posixpath
import re
import shutil
import stat
import statistics
import subprocess
import sys
import tempfile
import time

import relay

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
    parse_size,
    render,
    round_robin,
    seconds,
)

SMALL = 4096
OPS = ("upload", "download")
TREE = (4, 4)  # the small files' tree: 4 directories, each with 4 more: 20 in all
CEILING = "plain TCP through the relay (ceiling)"


def _pyssh(srv, kind: str):
    def run(op, src, dst):
        with pyssh.connect(
            srv.address,
            keyfile=srv.client_key,
            known_hosts=srv.known_hosts,
            config=False,
            ciphers=[GCM],
        ) as s:
            copy = getattr(s, f"{kind}_{op}")  # scp_upload, sftp_download...
            copy(src, to=dst, verbose=False)
            info = s.info()
        return pair(info["cipher_in"], info["cipher_out"])

    return run


def _openssh_options(srv) -> list:
    return ["-c", GCM, *openssh_options(srv, "-P")]


def _openssh_sftp(srv):
    def run(op, src, dst):
        # a batch: put -r / get -r, as the other clients copy trees
        cmd = f"put -r {src} {dst}\n" if op == "upload" else f"get -r {src} {dst}\n"
        argv = ["sftp", "-q", "-b", "-"] + _openssh_options(srv) + [f"{srv.user}@{srv.host}"]
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

    return run


def _scp(srv, legacy: bool):
    seen = []

    def run(op, src, dst):
        remote = f"{srv.user}@{srv.host}:"
        # the first (warm-up) run says -v instead of -q: ssh -v names the cipher
        argv = ["scp"] + (["-O"] if legacy else []) + (["-q"] if seen else ["-v"]) + ["-r"]
        argv += _openssh_options(srv)
        argv += [src, remote + dst] if op == "upload" else [remote + src, dst]
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
            found = re.findall(r"kex: (?:server->client|client->server) cipher: (\S+)", r.stderr)
            seen.append(pair(*found) if len(found) == 2 else f"{GCM} (forced)")
        return seen[0]

    return run


def put_tree(sftp, src: str, dst: str) -> None:
    """paramiko: upload the file or directory src into the remote directory dst,
    directories recursively (parents first)."""
    top = posixpath.join(dst, os.path.basename(src))
    if not os.path.isdir(src):
        sftp.put(src, top)
        return
    for here, _dirs, files in os.walk(src):
        rel = os.path.relpath(here, src)
        remote = top if rel == "." else posixpath.join(top, *rel.split(os.sep))
        sftp.mkdir(remote)
        for name in sorted(files):
            sftp.put(os.path.join(here, name), posixpath.join(remote, name))


def get_tree(sftp, src: str, dst: str) -> None:
    """paramiko: download the remote file or directory src into the local directory
    dst, directories recursively."""
    local = os.path.join(dst, posixpath.basename(src))
    if not stat.S_ISDIR(sftp.stat(src).st_mode):
        sftp.get(src, local)
        return
    os.mkdir(local)
    for a in sorted(sftp.listdir_attr(src), key=lambda a: a.filename):
        if stat.S_ISDIR(a.st_mode):
            get_tree(sftp, posixpath.join(src, a.filename), local)
        else:
            sftp.get(posixpath.join(src, a.filename), os.path.join(local, a.filename))


def _paramiko(srv):
    import paramiko

    if GCM not in paramiko.Transport._preferred_ciphers:
        raise ImportError(f"paramiko {paramiko.__version__} lacks {GCM}")
    others = [x for x in paramiko.Transport._preferred_ciphers if x != GCM]

    def run(op, src, dst):
        c = paramiko.SSHClient()
        c.load_host_keys(srv.known_hosts)
        c.set_missing_host_key_policy(paramiko.RejectPolicy())
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
            with c.open_sftp() as sftp:
                (put_tree if op == "upload" else get_tree)(sftp, src, dst)
            return pair(t.remote_cipher, t.local_cipher)
        finally:
            c.close()

    return run


_LOOP = []  # asyncssh's one event loop for all runs; never closed before exit


def _asyncssh(srv, kind: str):
    import asyncssh

    async def one(op, src, dst):
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
                    copy = sftp.put if op == "upload" else sftp.get
                    await copy(src, dst, recurse=True)
            return pair(conn.get_extra_info("recv_cipher"), conn.get_extra_info("send_cipher"))

    if not _LOOP:
        _LOOP.append(asyncio.new_event_loop())
    return lambda op, src, dst: _LOOP[0].run_until_complete(one(op, src, dst))


def make_clients(srv, notes: list) -> dict:
    """name -> fn(op, src, dst) -> negotiated cipher. Each call connects, copies src
    (a file or a directory; remote for a download) into the existing directory dst
    (remote for an upload), and disconnects. Why a client is missing goes to notes."""
    clients = {
        "pyssh scp": _pyssh(srv, "scp"),
        "pyssh SFTP": _pyssh(srv, "sftp"),
        "sftp (OpenSSH)": _openssh_sftp(srv),
        "scp -O (SCP)": _scp(srv, True),
        "scp (SFTP)": _scp(srv, False),
    }
    try:
        clients["paramiko SFTP"] = _paramiko(srv)
        notes.append("paramiko: its own rekeying every 512 MiB switched off (paramiko #822)")
    except ImportError as e:
        notes.append(f"paramiko skipped: {e}")
    try:
        for kind in ("scp", "SFTP"):
            clients[f"asyncssh {kind}"] = _asyncssh(srv, kind)
    except ImportError:
        notes.append("asyncssh not installed: pip install asyncssh")
    return clients


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def small_names(files: int, layout: str) -> list:
    """The small files' paths, relative to their directory: flat, or spread evenly
    over a tree of TREE[0] directories of TREE[1] more each (20 directories)."""
    if layout == "flat":
        return [f"f{i:05d}" for i in range(files)]
    dirs = []
    for i in range(TREE[0]):
        dirs += [f"d{i}"] + [f"d{i}/e{j}" for j in range(TREE[1])]
    return sorted(f"{dirs[i % len(dirs)]}/f{i:05d}" for i in range(files))


def make_data(root: str, work: str, size: int, files: int, layout: str) -> dict:
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
    names = small_names(files, layout)
    for name in names:
        p = os.path.join(path, *name.split("/"))
        os.makedirs(os.path.dirname(p), 0o755, exist_ok=True)
        with open(p, "wb") as f:
            f.write(os.urandom(SMALL))
    return {"src": path, "bytes": files * SMALL, "count": files, "names": names}


def tree_files(top: str) -> list:
    """The files under top, as sorted relative paths with "/"."""
    found = []
    for here, _dirs, files in os.walk(top):
        rel = os.path.relpath(here, top)
        found += [name if rel == "." else f"{rel}/{name}".replace(os.sep, "/") for name in files]
    return sorted(found)


def check(data: dict, dst: str, full: bool) -> None:
    """What arrived in dst is what was sent: names and sizes, and with full the bytes."""
    out = os.path.join(dst, os.path.basename(data["src"]))
    if "sha256" in data:
        got = os.path.getsize(out)
        assert got == data["bytes"], f"{got} bytes, not {data['bytes']}"
        assert not full or sha256(out) == data["sha256"], "sha256 differs"
        return
    names = tree_files(out)
    assert names == data["names"], (
        f"{len(names)} files, not the {len(data['names'])} expected"
        f" (first difference: {sorted(set(names) ^ set(data['names']))[:1]})"
    )
    for name in names:
        p = os.path.join(out, *name.split("/"))
        assert os.path.getsize(p) == SMALL, f"{name}: {os.path.getsize(p)} bytes"
        if full:
            with open(p, "rb") as a, open(os.path.join(data["src"], *name.split("/")), "rb") as b:
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


def ceiling_rows(ceiling, width: int) -> list:
    """The relay's plain TCP stream as reference rows of the big file's table."""
    if not ceiling:
        return []
    if "error" in ceiling:
        return [[CEILING, "both", ceiling["error"][:100]] + [""] * (width - 3)]
    return [
        [CEILING, op, "none", seconds(c["seconds"]), "", f"{c['mb_s']:.0f}"] + [""] * (width - 6)
        for op, c in ceiling.items()
    ]


def table(rows: dict, data: dict, markdown: bool, ceiling=None) -> list:
    many = data["count"] > 1
    head = ["client", "direction", "negotiated", "median", "min", "MB/s"]
    head += (["files/s"] if many else []) + ["ratio to SFTP", "ratio to SCP", "client CPU"]
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
            [name, op, row["cipher"], seconds(med), seconds(low)]
            + [f"{data['bytes'] / med / 1e6:.1f}"]
            + ([f"{data['count'] / med:.0f}"] if many else [])
            + ratios
            + [seconds(statistics.median(row["cpu"]))]
        )
    return render(head, body + ceiling_rows(ceiling, len(head)), markdown)


class Relayed:
    """The server as seen through the relay: the attributes the clients use."""

    def __init__(self, srv, port: int, root: str):
        self.host, self.port, self.user = srv.host, port, srv.user
        self.address = f"{srv.user}@{srv.host}:{port}"
        self.client_key = srv.client_key
        self.known_hosts = os.path.join(root, f"known_hosts_relay_{port}")
        key = " ".join(srv.host_key_line.split()[1:3])
        with open(self.known_hosts, "w") as f:
            f.write(f"[{srv.host}]:{port} {key}\n")


def measure_ceiling(args, rtt: float):
    """The relay's ceiling at this delay, or {"error"}: never fatal."""
    print(f"(relay ceiling at {rtt:g} ms ...)", file=sys.stderr, flush=True)
    try:
        return relay.ceiling(rtt, args.rate, args.ceiling_size)
    except Exception as e:  # noqa: BLE001 - reported in the table, not fatal
        return {"error": f"{type(e).__name__}: {e}"}


def run_rtt(args, rtt: float, srv, datas: dict, root: str, notes: list) -> list:
    """Every workload at one round-trip time (0: straight to the server)."""
    results = []
    with contextlib.ExitStack() as stack:
        target, ceiling = srv, None
        if rtt > 0:
            ceiling = measure_ceiling(args, rtt)
            port = stack.enter_context(relay.spawned(rtt, srv.port, args.rate))
            target = Relayed(srv, port, root)
        clients = make_clients(target, notes)
        if args.clients:
            clients = {k: v for k, v in clients.items() if k in args.clients}
        for work, data in datas.items():
            print(f"(measuring {data['what']} at {rtt:g} ms ...)", file=sys.stderr, flush=True)
            rows = measure(clients, data, root, args.r)
            results.append({"rtt": rtt, "work": work, "rows": rows, "data": data})
            results[-1]["ceiling"] = ceiling if work == "big" else None
    return results


def describe(args, work: str) -> str:
    if work == "big":
        return f"one file of {args.size / 2**20:.0f} MiB"
    where = "in one directory" if args.layout == "flat" else "in a tree of 20 directories"
    return f"{args.files} files of {SMALL // 1024} KiB {where}"


def run_all(args, delays: list) -> list:
    works = [args.only] if args.only else ["big", "small"]
    root = tempfile.mkdtemp(prefix="pyssh-bench-transfer-")
    results, notes = [], []
    try:
        os.chmod(root, 0o755)
        for d in ("src", "dst"):
            os.mkdir(os.path.join(root, d), 0o755)
        datas = {w: make_data(root, w, args.size, args.files, args.layout) for w in works}
        for w, data in datas.items():
            data["what"] = describe(args, w)
        with SSHServer() as srv:
            for rtt in delays:
                results += run_rtt(args, rtt, srv, datas, root, notes)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    for note in dict.fromkeys(notes):
        print(f"({note})")
    return results


def title(args, r: dict) -> str:
    rtt = f"{r['rtt']:g} ms round trip added" if r["rtt"] else "loopback, no delay"
    rate = f", {args.rate:g} Mbit/s each way" if args.rate and r["rtt"] else ""
    return (
        f"{rtt}{rate}: {r['data']['what']}, random bytes, cipher forced to {GCM}, "
        f"connect included, {args.r} runs each, MB/s = 10^6 B/s"
    )


def report(args, info: list, results: list) -> None:
    for r in results:
        print(f"\n{title(args, r)}")
        print("\n".join(table(r["rows"], r["data"], False, r["ceiling"])))
    if args.markdown:
        parts = ["  \n".join(info)] + [
            f"{title(args, r)}\n\n" + "\n".join(table(r["rows"], r["data"], True, r["ceiling"]))
            for r in results
        ]
        print("\n" + "\n\n".join(parts))


def result_entry(r: dict, name: str, op: str, row: dict) -> dict:
    data, times = r["data"], row["times"]
    entry = {"client": name, "op": op, "work": r["work"], "rtt_ms": r["rtt"]}
    entry.update(bytes=data["bytes"], files=data["count"], runs=len(times))
    entry.update(cipher=row["cipher"], error=row["error"] or (None if times else "no runs"))
    if times:
        med = statistics.median(times)
        entry.update(median_s=med, min_s=min(times), cpu_s=statistics.median(row["cpu"]))
        entry.update(mb_s=data["bytes"] / med / 1e6, files_s=data["count"] / med)
    return entry


def to_doc(args, info: list, results: list) -> dict:
    """All the results, as --json saves them and --plot-from reads them."""
    doc = {
        "machine": info,
        "date": time.strftime("%Y-%m-%d"),
        "settings": {
            "cipher": GCM,
            "size": args.size,
            "files": args.files,
            "file_size": SMALL,
            "layout": args.layout,
            "reps": args.r,
            "rate_mbit": args.rate,
        },
        "ceiling": [],
        "results": [],
    }
    for r in results:
        for op, c in (r["ceiling"] or {}).items():
            if op != "error":
                doc["ceiling"].append({"rtt_ms": r["rtt"], "op": op, **c})
        for (name, op), row in r["rows"].items():
            doc["results"].append(result_entry(r, name, op, row))
    return doc


def delay_list(text: str) -> list:
    try:
        delays = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad delays {text!r}: use e.g. 20,50,100") from None
    if not delays or min(delays) < 0:
        raise argparse.ArgumentTypeError(f"bad delays {text!r}: use e.g. 20,50,100")
    return delays


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-r", type=int, default=3, help="repetitions (default 3)")
    ap.add_argument("--size", type=parse_size, default="1G", help="big file's size (default 1G)")
    ap.add_argument("--files", type=int, default=1000, help="number of 4 KiB files (default 1000)")
    ap.add_argument(
        "--layout",
        choices=("tree", "flat"),
        default="tree",
        help="small files: tree (default) or flat",
    )
    ap.add_argument("--only", choices=("big", "small"), help="only this workload")
    ap.add_argument(
        "--delays",
        type=delay_list,
        default=[0.0],
        help="round trips added, ms, e.g. 20,50,100 (0: none)",
    )
    ap.add_argument("--delay", type=delay_list, dest="delays", help="the same")
    ap.add_argument(
        "--rate", type=float, default=0, help="relay's rate cap each way, Mbit/s (0: none)"
    )
    ap.add_argument(
        "--ceiling-size",
        type=parse_size,
        default="512M",
        help="relay ceiling's stream, at most (512M; 3 s at most)",
    )
    ap.add_argument(
        "--clients",
        type=lambda t: [c.strip() for c in t.split(",") if c.strip()],
        help='only these clients, by their names in the tables ("pyssh SFTP,sftp (OpenSSH)")',
    )
    ap.add_argument("--json", metavar="FILE", help="save all results as JSON")
    ap.add_argument("--plot", metavar="PNG", help="draw MB/s against round-trip time")
    ap.add_argument("--plot-from", metavar="FILE", help="only plot the results of FILE")
    ap.add_argument("--markdown", action="store_true", help="also print markdown tables")
    return ap.parse_args()


def main() -> None:
    args = parse_args()
    if args.plot_from:
        import _plot

        with open(args.plot_from) as f:
            _plot.plot(json.load(f), args.plot or os.path.splitext(args.plot_from)[0] + ".png")
        return
    print("\n".join(info := machine()))
    results = run_all(args, args.delays)
    report(args, info, results)
    doc = to_doc(args, info, results)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1)
    if args.plot:
        import _plot

        _plot.plot(doc, args.plot)


if __name__ == "__main__":
    main()
