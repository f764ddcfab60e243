"""Interactive processes: a remote `cat` fed and read at the same time (write SIZE bytes
to its stdin, read them back from its stdout) against a throwaway local sshd, for
pyssh's popen (communicate, and a writer thread with read1 in the main thread),
asyncssh's create_process, paramiko's channel and OpenSSH's ssh, side by side in one
run. Each client runs with its default ciphers and again with aes128-gcm@openssh.com
forced. Also: the client's CPU while a process or a shell sits idle.

    pip install -e .[bench]       # paramiko and asyncssh; a missing one is skipped
    python benchmarks/process.py [-r 5] [--size 64M] [--idle 3] [--markdown]

Connecting is excluded: each client (and cipher setting) connects once, on its first,
untimed run, and every run after opens a new channel on that connection, starts
`cat`, moves the bytes and waits for the end of the command. For OpenSSH that
connection is a ControlMaster (`ssh -M -N`, started once) and each run is a
`ssh -S socket host cat`, whose stdin and stdout the master reads and writes itself.
The time covers opening the channel, starting `cat`, writing SIZE random bytes from
one thread or task while another reads, end-of-file, and the exit status. The bytes
read back are checked against the bytes written (length and SHA-256) after the clock
stops. Writers write 1 MiB chunks; readers ask for up to 1 MiB at a time.

- pyssh communicate: `proc.communicate(data)` (one call moves both directions);
- pyssh read1 + writer thread: a thread `stdin.write`s chunks then `stdin.close()`s,
  while the main thread calls `stdout.read1()` until b"" (the streaming idiom);
- asyncssh: `conn.create_process("cat", encoding=None)`, a writer task (write + drain,
  then write_eof) and the reader `stdout.read()` until b"";
- paramiko: `transport.open_session()` with paramiko's default window and packet sizes
  (2 MiB, 32 KiB) given explicitly, `exec_command("cat")`, a writer thread `sendall`
  + `shutdown_write`, the main thread `recv` until b"";
- ssh: `subprocess.Popen` with stdin and stdout pipes, a writer thread, the main
  thread reading stdout: a reference line (another process does the SSH work).

Clients are run round-robin within each repetition, the order rotated each time, since
the machines are shared and noisy: compare the ratios, not absolute numbers. MB/s is
10**6 bytes per second moved one way (SIZE / median). ratio = client's median time /
pyssh communicate's median time with the same cipher setting (> 1: pyssh is faster).
client CPU = the client's median user + system CPU per run: this process's, plus for
ssh the master's (read from /proc) and the waited-for mux client's.

Idle (aes128-gcm): the client's CPU over --idle seconds (default 3) while a thread
(asyncssh: a task) is blocked in waiting for a remote `sleep` to end (pyssh's
Process.wait, asyncssh's process.wait, paramiko's recv_exit_status), and while one is
blocked reading an idle login shell on a terminal (pyssh's shell() + stdout.read1,
asyncssh's create_process(term_type=...) + stdout.read, paramiko's invoke_shell +
recv); the main thread sleeps meanwhile. A first row gives this process's CPU with
no client at work, the floor. Measured from half a second after the start,
so the start and the end are not in it. Should be about zero: no polling loops.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import threading
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
    parse_size,
    render,
    round_robin,
)

SETTINGS = ("default", GCM)
BASELINE = "pyssh communicate"


def check(name: str, chunks, digest: bytes, size: int) -> None:
    """The bytes read back (bytes or a list of chunks) are the bytes written."""
    data = chunks if isinstance(chunks, bytes) else b"".join(chunks)
    if len(data) != size or hashlib.sha256(data).digest() != digest:
        raise AssertionError(f"{name}: read back {len(data)} bytes of {size}, or other bytes")


def writer_thread(write, close, data: bytes) -> tuple:
    """A started thread writing `data` in CHUNK pieces then closing; its error, if any,
    lands in the list returned with it."""
    errors: list = []

    def run():
        try:
            view = memoryview(data)
            for i in range(0, len(view), CHUNK):
                write(view[i : i + CHUNK])
            close()
        except Exception as e:  # noqa: BLE001 - re-raised by the caller after join
            errors.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, errors


def joined(t, errors) -> None:
    t.join()
    if errors:
        raise errors[0]


def ssh_base(srv) -> list:
    return ["ssh", *openssh_options(srv), f"{srv.user}@{srv.host}"]


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a running process (utime, stime in /proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Clients:
    """name -> fn(setting, data, digest) -> (cipher, seconds, cpu seconds). Each
    (client, setting) connects on its first call and keeps the connection; close()
    closes them all."""

    def __init__(self, srv):
        self.srv = srv
        self.conns: dict = {}
        self.closers: list = []
        self.tmp = tempfile.mkdtemp(prefix="pyssh-bench-")
        self.fns = {
            BASELINE: self.pyssh_communicate,
            "pyssh read1 + writer thread": self.pyssh_stream,
        }
        try:
            import asyncssh  # noqa: F401

            self.loop = asyncio.new_event_loop()
            self.fns["asyncssh create_process"] = self.asyncssh_run
        except ImportError:
            print("(asyncssh not installed: pip install asyncssh)")
        try:
            import paramiko  # noqa: F401

            self.fns["paramiko channel"] = self.paramiko_run
            print(
                "(paramiko: its own rekeying every 512 MiB switched off, see paramiko issue #822)"
            )
        except ImportError:
            print("(paramiko not installed: pip install paramiko)")
        self.fns["ssh (ControlMaster)"] = self.ssh_run

    def close(self) -> None:
        """Close every connection (the next call of a client opens a new one)."""
        for fn in reversed(self.closers):
            try:
                fn()
            except Exception:  # noqa: BLE001, S110 - best effort
                pass
        self.closers.clear()
        self.conns.clear()

    # ---- pyssh -----------------------------------------------------------------------------
    def pyssh_session(self, setting):
        key = ("pyssh", setting)
        if key not in self.conns:
            s = pyssh.connect(
                self.srv.address,
                keyfile=self.srv.client_key,
                known_hosts=self.srv.known_hosts,
                config=False,
                ciphers=None if setting == "default" else [setting],
            )
            self.conns[key] = s
            self.closers.append(s.close)
        s = self.conns[key]
        info = s.info()
        return s, pair(info["cipher_in"], info["cipher_out"])

    def pyssh_communicate(self, setting, data, digest):
        s, cipher = self.pyssh_session(setting)
        c, t = cpu_seconds(), time.perf_counter()
        with s.popen("cat") as p:
            out, err = p.communicate(data)
        elapsed, cpu = time.perf_counter() - t, cpu_seconds() - c
        assert p.returncode == 0 and not err, f"pyssh: status {p.returncode}, stderr {err!r}"
        check("pyssh communicate", out, digest, len(data))
        return cipher, elapsed, cpu

    def pyssh_stream(self, setting, data, digest):
        s, cipher = self.pyssh_session(setting)
        got = []
        c, t = cpu_seconds(), time.perf_counter()
        with s.popen("cat") as p:
            w = writer_thread(p.stdin.write, p.stdin.close, data)
            while chunk := p.stdout.read1(CHUNK):
                got.append(chunk)
            joined(*w)
            status = p.wait()
        elapsed, cpu = time.perf_counter() - t, cpu_seconds() - c
        assert status == 0, f"pyssh: status {status}"
        check("pyssh read1", got, digest, len(data))
        return cipher, elapsed, cpu

    # ---- asyncssh --------------------------------------------------------------------------
    async def asyncssh_conn(self, setting):
        import asyncssh

        key = ("asyncssh", setting)
        if key not in self.conns:
            algs = {} if setting == "default" else {"encryption_algs": [setting]}
            conn = await asyncssh.connect(
                self.srv.host,
                port=self.srv.port,
                username=self.srv.user,
                client_keys=[self.srv.client_key],
                known_hosts=self.srv.known_hosts,
                agent_path=None,
                config=None,
                **algs,
            )
            self.conns[key] = conn

            def close(conn=conn):
                conn.close()
                self.loop.run_until_complete(conn.wait_closed())

            self.closers.append(close)
        conn = self.conns[key]
        return conn, pair(conn.get_extra_info("recv_cipher"), conn.get_extra_info("send_cipher"))

    async def asyncssh_one(self, setting, data, digest):
        conn, cipher = await self.asyncssh_conn(setting)
        got = []

        async def write(proc):
            view = memoryview(data)
            for i in range(0, len(view), CHUNK):
                proc.stdin.write(view[i : i + CHUNK])
                await proc.stdin.drain()
            proc.stdin.write_eof()

        c, t = cpu_seconds(), time.perf_counter()
        proc = await conn.create_process("cat", encoding=None)
        writer = asyncio.ensure_future(write(proc))
        while chunk := await proc.stdout.read(CHUNK):
            got.append(chunk)
        await writer
        result = await proc.wait()
        elapsed, cpu = time.perf_counter() - t, cpu_seconds() - c
        assert result.exit_status == 0, f"asyncssh: status {result.exit_status}"
        check("asyncssh", got, digest, len(data))
        return cipher, elapsed, cpu

    def asyncssh_run(self, setting, data, digest):
        return self.loop.run_until_complete(self.asyncssh_one(setting, data, digest))

    # ---- paramiko --------------------------------------------------------------------------
    def paramiko_transport(self, setting):
        import paramiko

        key = ("paramiko", setting)
        if key not in self.conns:
            c = paramiko.SSHClient()
            c.load_host_keys(self.srv.known_hosts)
            c.set_missing_host_key_policy(paramiko.RejectPolicy())
            disabled = paramiko_disabled(paramiko, setting)
            c.connect(
                self.srv.host,
                port=self.srv.port,
                username=self.srv.user,
                key_filename=self.srv.client_key,
                look_for_keys=False,
                allow_agent=False,
                disabled_algorithms=disabled,
            )
            self.closers.append(c.close)
            t = c.get_transport()
            # see exec.py: paramiko's own rekeying (every 512 MiB) can deadlock (#822)
            t.packetizer.REKEY_BYTES = t.packetizer.REKEY_PACKETS = 1 << 62
            self.conns[key] = t
        t = self.conns[key]
        return t, pair(t.remote_cipher, t.local_cipher)

    def paramiko_run(self, setting, data, digest):
        from paramiko.common import DEFAULT_MAX_PACKET_SIZE, DEFAULT_WINDOW_SIZE

        t, cipher = self.paramiko_transport(setting)
        got = []
        c, start = cpu_seconds(), time.perf_counter()
        chan = t.open_session(
            window_size=DEFAULT_WINDOW_SIZE, max_packet_size=DEFAULT_MAX_PACKET_SIZE
        )
        try:
            chan.exec_command("cat")
            w = writer_thread(chan.sendall, chan.shutdown_write, data)
            while chunk := chan.recv(CHUNK):
                got.append(chunk)
            joined(*w)
            status = chan.recv_exit_status()
        finally:
            chan.close()
        elapsed, cpu = time.perf_counter() - start, cpu_seconds() - c
        assert status == 0, f"paramiko: status {status}"
        check("paramiko", got, digest, len(data))
        return cipher, elapsed, cpu

    # ---- OpenSSH ---------------------------------------------------------------------------
    def ssh_master(self, setting):
        key = ("ssh", setting)
        if key not in self.conns:
            opts = [] if setting == "default" else ["-c", setting]
            base = ssh_base(self.srv)
            err = subprocess.run(  # the cipher, once: ssh -v says it
                base[:1] + ["-v"] + opts + base[1:] + ["true"],
                check=True,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
            ).stderr
            found = re.findall(r"kex: (?:server->client|client->server) cipher: (\S+)", err)
            cipher = pair(*found) if len(found) == 2 else "?"
            sock = os.path.join(self.tmp, f"cm{len(self.conns)}")
            master = subprocess.Popen(
                base[:1] + ["-q", "-M", "-N", "-S", sock] + opts + base[1:],
                stdin=subprocess.DEVNULL,
            )

            def stop(master=master):
                master.terminate()
                master.wait()

            self.closers.append(stop)
            end = time.monotonic() + 20
            while not os.path.exists(sock):
                if master.poll() is not None or time.monotonic() > end:
                    raise RuntimeError(f"ssh -M: no control socket (exit {master.returncode})")
                time.sleep(0.02)
            self.conns[key] = (sock, master.pid, cipher)
        return self.conns[key]

    def ssh_run(self, setting, data, digest):
        sock, pid, cipher = self.ssh_master(setting)
        base = ssh_base(self.srv)
        got = []
        c, m, t = cpu_seconds(), proc_cpu(pid), time.perf_counter()
        p = subprocess.Popen(
            base[:1] + ["-q", "-S", sock] + base[1:] + ["cat"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,
        )
        w = writer_thread(p.stdin.write, p.stdin.close, data)
        while chunk := p.stdout.read(CHUNK):
            got.append(chunk)
        joined(*w)
        status = p.wait()
        elapsed = time.perf_counter() - t
        cpu = cpu_seconds() - c + proc_cpu(pid) - m
        assert status == 0, f"ssh: status {status}"
        check("ssh", got, digest, len(data))
        return cipher, elapsed, cpu


def measure(clients: Clients, size: int, reps: int) -> dict:
    """(client, setting) -> {"times", "cpu", "cipher", "error"}, run round-robin."""
    data = os.urandom(size)
    digest = hashlib.sha256(data).digest()
    rows = {
        (name, st): {"times": [], "cpu": [], "cipher": "", "error": None}
        for name in clients.fns
        for st in SETTINGS
    }

    def once(key, warmup):
        return clients.fns[key[0]](key[1], data, digest)

    return round_robin(rows, once, reps)


# ---- idle ------------------------------------------------------------------------------------


SETTLE = 0.5  # seconds for the process or shell to start and go quiet before measuring


def idle_window(secs: float) -> float:
    """This process's CPU over `secs` seconds of the main thread sleeping, after SETTLE."""
    time.sleep(SETTLE)
    c = cpu_seconds()
    time.sleep(secs)
    return cpu_seconds() - c


def in_thread(fn) -> threading.Thread:
    t = threading.Thread(target=fn, daemon=True)
    t.start()
    return t


def idle_pyssh(clients: Clients, secs: float) -> tuple:
    s, _ = clients.pyssh_session(GCM)
    with s.popen(f"sleep {secs + 2 * SETTLE:g}") as p:
        t = in_thread(p.wait)
        proc = idle_window(secs)
        t.join()
    with s.shell() as sh:
        t = in_thread(lambda: [None for _ in iter(sh.stdout.read1, b"")])
        shell = idle_window(secs)
        sh.stdin.write(b"exit\n")
        t.join()
    return proc, shell


def idle_asyncssh(clients: Clients, secs: float) -> tuple:
    async def window():
        await asyncio.sleep(SETTLE)
        c = cpu_seconds()
        await asyncio.sleep(secs)
        return cpu_seconds() - c

    async def run():
        conn, _ = await clients.asyncssh_conn(GCM)
        proc = await conn.create_process(f"sleep {secs + 2 * SETTLE:g}", encoding=None)
        waiter = asyncio.ensure_future(proc.wait())
        p = await window()
        await waiter
        sh = await conn.create_process(term_type="xterm-256color", encoding=None)

        async def drain():
            while await sh.stdout.read(CHUNK):
                pass

        reader = asyncio.ensure_future(drain())
        shell = await window()
        sh.stdin.write(b"exit\n")
        await reader
        await sh.wait()
        return p, shell

    return clients.loop.run_until_complete(run())


def idle_paramiko(clients: Clients, secs: float) -> tuple:
    t, _ = clients.paramiko_transport(GCM)
    chan = t.open_session()
    chan.exec_command(f"sleep {secs + 2 * SETTLE:g}")
    waiter = in_thread(chan.recv_exit_status)
    proc = idle_window(secs)
    waiter.join()
    chan.close()
    chan = t.open_session()
    chan.get_pty(term="xterm-256color")
    chan.invoke_shell()
    reader = in_thread(lambda: [None for _ in iter(lambda: chan.recv(CHUNK), b"")])
    shell = idle_window(secs)
    chan.sendall(b"exit\n")
    reader.join()
    chan.close()
    return proc, shell


def idle_cpu(clients: Clients, secs: float) -> dict:
    """name -> (CPU over a process waited for, CPU over an idle shell), or an error.
    Each client alone: its own connection only (paramiko's transport thread, for one,
    wakes up on its own), closed before the next."""
    clients.close()
    out = {"(none: this process alone)": (idle_window(secs), idle_window(secs))}
    for name, fn, needs in (
        ("pyssh", idle_pyssh, BASELINE),
        ("asyncssh", idle_asyncssh, "asyncssh create_process"),
        ("paramiko", idle_paramiko, "paramiko channel"),
    ):
        if needs not in clients.fns:
            continue
        try:
            out[name] = fn(clients, secs)
        except Exception as e:  # noqa: BLE001
            out[name] = f"{type(e).__name__}: {e}"
        clients.close()
    return out


def table(rows: dict, size: int, markdown: bool) -> list:
    head = ["client", "ciphers", "negotiated", "median", "min", "MB/s", "ratio", "client CPU"]
    body = []
    for (name, st), row in rows.items():
        if row["error"] or not row["times"]:
            body.append(failed_row(name, st, row, len(head), 80))
            continue
        med, low = statistics.median(row["times"]), min(row["times"])
        base = rows.get((BASELINE, st), {}).get("times")
        ratio = f"{med / statistics.median(base):.2f}" if base else "?"
        body.append(
            [
                name,
                st,
                row["cipher"],
                f"{med * 1000:.0f} ms",
                f"{low * 1000:.0f} ms",
                f"{size / med / 1e6:.0f}",
                ratio,
                f"{statistics.median(row['cpu']) * 1000:.0f} ms",
            ]
        )
    return render(head, body, markdown)


def idle_table(idle: dict, secs: float, markdown: bool) -> list:
    head = ["client", "process blocked in wait()", "shell, blocked reading"]
    body = []
    for name, v in idle.items():
        if isinstance(v, str):
            body.append([name, v[:100], ""])
        else:
            body.append([name, f"{v[0] * 1000:.1f} ms", f"{v[1] * 1000:.1f} ms"])
    return render(head, body, markdown)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-r", type=int, default=5, help="repetitions (default 5)")
    ap.add_argument("--size", type=parse_size, default="64M", help="bytes each way (default 64M)")
    ap.add_argument("--idle", type=float, default=3.0, help="idle seconds (default 3)")
    ap.add_argument("--markdown", action="store_true", help="also print markdown tables")
    args = ap.parse_args()
    info = machine()
    print("\n".join(info))
    with SSHServer() as srv:
        clients = Clients(srv)
        try:
            rows = measure(clients, args.size, args.r)
            idle = idle_cpu(clients, args.idle)
        finally:
            clients.close()
            shutil.rmtree(clients.tmp, ignore_errors=True)
    title1 = (
        f"`cat` round trip, {args.size / 2**20:.0f} MiB written and read back at once, "
        f"connecting excluded, {args.r} runs each, MB/s = 10^6 B/s one way"
    )
    title2 = f"client CPU while idle ({args.idle:g} s), aes128-gcm"
    print(f"\n{title1}")
    print("\n".join(table(rows, args.size, False)))
    print(f"\n{title2}")
    print("\n".join(idle_table(idle, args.idle, False)))
    if args.markdown:
        print(
            "\n"
            + "\n\n".join(
                [
                    "  \n".join(info),
                    f"{title1}\n\n" + "\n".join(table(rows, args.size, True)),
                    f"{title2}\n\n" + "\n".join(idle_table(idle, args.idle, True)),
                ]
            )
        )


if __name__ == "__main__":
    main()
