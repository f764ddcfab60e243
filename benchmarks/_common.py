"""What the benchmarks share: sizes, the machine's description, CPU accounting."""

from __future__ import annotations

import argparse
import os
import platform
import re
import resource
import subprocess

import pyssh

GCM = "aes128-gcm@openssh.com"
CHUNK = 1 << 20


def parse_size(text: str) -> int:
    m = re.fullmatch(r"(\d+)([KMG]?)", text.strip().upper())
    if not m:
        raise argparse.ArgumentTypeError(f"bad size {text!r}: use e.g. 1G, 256M, 4096")
    return int(m.group(1)) << {"": 0, "K": 10, "M": 20, "G": 30}[m.group(2)]


def pair(cipher_in, cipher_out) -> str:
    """The negotiated cipher(s): one name, or "in / out" when they differ."""
    return cipher_in if cipher_in == cipher_out else f"{cipher_in} / {cipher_out}"


def machine() -> list:
    cpu, aes = "?", "?"
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
        cpu = re.search(r"^model name\s*:\s*(.*)$", text, re.M).group(1)
        aes = "yes" if re.search(r"^flags\s*:.*\baes\b", text, re.M) else "no"
    except (OSError, AttributeError):
        pass
    ssh_v = subprocess.run(["ssh", "-V"], capture_output=True, text=True).stderr.strip()
    lines = [
        f"machine: {platform.platform()}",
        f"cpu: {cpu}; aes flag: {aes}; nproc: {len(os.sched_getaffinity(0))}",
        f"python {platform.python_version()}; "
        f"pyssh {pyssh.__version__} on libssh {pyssh.libssh_version(full=True)}; {ssh_v}",
    ]
    peers = []
    for mod in ("paramiko", "asyncssh"):
        try:
            peers.append(f"{mod} {__import__(mod).__version__}")
        except ImportError:
            peers.append(f"{mod} not installed")
    return lines + ["; ".join(peers)]


def cpu_seconds() -> float:
    """User + system CPU of this process (the in-process clients) and of its waited-for
    children (ssh, scp; sshd is never waited for while it runs)."""
    me, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def render(head: list, body: list, markdown: bool) -> list:
    """A table's lines: markdown, or text columns (the first three left-aligned)."""
    if markdown:
        return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + [
            "| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in body
        ]
    widths = [max(len(r[i]) for r in [head] + body) for i in range(len(head))]
    return [
        "  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
        for r in [head] + body
    ]


def round_robin(rows: dict, once, reps: int) -> dict:
    """Fill rows ({key: {"times", "cpu", "cipher", "error"}}): once(key, warmup) ->
    (cipher, seconds, cpu seconds). Each key runs once untimed first (its cipher
    kept; an exception marks the row failed, reported, not fatal), then `reps`
    rounds, one run of each per round, the starting point rotated, since the
    machines are shared and noisy."""
    for key, row in rows.items():
        try:
            row["cipher"] = once(key, True)[0]
        except Exception as e:  # noqa: BLE001 - a failing client is reported, not fatal
            row["error"] = f"{type(e).__name__}: {e}"
    order = list(rows)
    for i in range(reps):
        k = i % len(order)
        for key in order[k:] + order[:k]:
            row = rows[key]
            if row["error"]:
                continue
            try:
                _, elapsed, cpu = once(key, False)
            except Exception as e:  # noqa: BLE001
                row["error"] = f"{type(e).__name__}: {e}"
                continue
            row["times"].append(elapsed)
            row["cpu"].append(cpu)
    return rows


def seconds(s: float) -> str:
    return f"{s:.2f} s" if s >= 1 else f"{s * 1000:.0f} ms"


def failed_row(name: str, setting: str, row: dict, width: int, limit: int = 100) -> list:
    """A table row for a client that failed or never ran."""
    return [name, setting, (row["error"] or "no runs")[:limit]] + [""] * (width - 3)


def openssh_options(srv, port_flag: str = "-p") -> list:
    """OpenSSH's options for the throwaway sshd `srv`: its key and known_hosts
    only, no config, no questions; `port_flag` is "-p" (ssh) or "-P" (scp, sftp)."""
    return [
        "-F",
        "/dev/null",
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
        port_flag,
        str(srv.port),
    ]


def paramiko_disabled(paramiko, setting: str) -> dict:
    """paramiko's disabled_algorithms that leave only cipher `setting` (none for
    "default"); RuntimeError when this paramiko lacks it."""
    if setting == "default":
        return {}
    preferred = paramiko.Transport._preferred_ciphers
    if setting not in preferred:
        raise RuntimeError(f"paramiko {paramiko.__version__} lacks {setting}")
    return {"ciphers": [x for x in preferred if x != setting]}
