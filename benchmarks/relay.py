"""A link emulator in user space: a TCP relay that holds every byte a fixed time in
each direction, optionally at a capped rate, for benchmarks over a network with latency
on a kernel without netem (this machine's: "Specified qdisc kind is unknown").

    python benchmarks/relay.py DELAY_MS TARGET_PORT [--rate MBIT] [--cap MIB]
    python benchmarks/relay.py DELAY_MS --ceiling [--rate MBIT] [--size MIB]

The first form listens on a free port of 127.0.0.1, prints it, and passes every
connection on to 127.0.0.1:TARGET_PORT until killed: DELAY_MS is the round trip added,
DELAY_MS/2 each way. The second measures the relay's ceiling: a plain TCP stream pushed
through a relay at that delay, each way, in MB/s (10**6 bytes per second).

How: each direction of each connection is a reader thread and a writer thread around a
queue. The reader recv()s up to 1 MiB at a time and stamps each chunk with the time it
may leave (its arrival + DELAY_MS/2); the writer sends each chunk when due. Python
threads release the GIL in recv and send, so the two directions and the connections
overlap. --rate caps what the reader takes from its socket (a token bucket holding 5 ms
of bytes, 64 KiB at least), so that the queue holds the bytes in flight of a link of
that rate, no more. Memory is bounded: once --cap MiB (default 256) wait in one
direction's queue, its reader stops reading until the writer has sent some: the kernel's
receive buffer fills, TCP's window closes and the sender blocks (back-pressure; a
router's full queue would drop instead). At most 256 MiB per direction holds 256 MiB /
50 ms = 5.4 GB/s at 100 ms of round trip, far above any SSH client here.

What it emulates: the relay splits each TCP connection in two, each over loopback, so
TCP's own congestion control and windows never see the delay; everything above TCP does
(SSH's channel windows, SFTP's requests and replies, SCP's acknowledgements, the
handshake's round trips), which is where SSH clients differ. No loss, no jitter, no
reordering.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections import deque

CHUNK = 1 << 20
CAP = 256 << 20
BIG_BUFFER = 64 << 20  # asked for the ceiling's sockets; Linux caps it (net.core.*mem_max)


class _Bucket:
    """A token bucket: rate bytes per second, at most `burst` saved up."""

    def __init__(self, rate: float):
        self.rate, self.burst = rate, max(64 << 10, rate * 0.005)
        self.tokens, self.last = self.burst, time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now

    def take(self) -> int:
        """Wait until a useful amount may pass; how many bytes may (the most to recv)."""
        self._refill()
        need = min(self.burst, 16 << 10)
        if self.tokens < need:
            time.sleep((need - self.tokens) / self.rate)
            self._refill()
        return int(min(self.tokens, CHUNK))

    def spend(self, n: int) -> None:
        self.tokens -= n


class _Direction:
    """src -> dst, each chunk held `delay` seconds; `done()` once both threads end."""

    def __init__(self, src, dst, delay: float, rate: float, cap: int, done):
        self.src, self.dst, self.delay, self.rate, self.cap = src, dst, delay, rate, cap
        self.queue: deque = deque()
        self.queued, self.dead, self.done = 0, False, done
        self.cond = threading.Condition()

    def start(self) -> None:
        for run in (self._read, self._write):
            threading.Thread(target=run, daemon=True).start()

    def _read(self) -> None:
        bucket = _Bucket(self.rate) if self.rate else None
        while True:
            want = bucket.take() if bucket else CHUNK
            try:
                data = self.src.recv(want)
            except OSError:
                data = b""
            if bucket:
                bucket.spend(len(data))
            with self.cond:
                while self.queued >= self.cap and not self.dead:
                    self.cond.wait()  # back-pressure: stop reading
                if self.dead:
                    break
                self.queue.append((time.monotonic() + self.delay, data))
                self.queued += len(data)
                self.cond.notify_all()
            if not data:
                break
        self.done()

    def _write(self) -> None:
        while True:
            with self.cond:
                while not self.queue:
                    self.cond.wait()
                due, data = self.queue.popleft()
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            if not data:
                _quiet(self.dst.shutdown, socket.SHUT_WR)
                break
            try:
                self.dst.sendall(data)
            except OSError:
                with self.cond:
                    self.dead = True  # the reader drops what it reads and ends
                    self.cond.notify_all()
                _quiet(self.src.shutdown, socket.SHUT_RD)
                break
            with self.cond:
                self.queued -= len(data)
                self.cond.notify_all()
        self.done()


def _quiet(fn, *args) -> None:
    with contextlib.suppress(OSError):
        fn(*args)


class Relay:
    """Listens on 127.0.0.1:port (a free one) and relays each connection to
    target_host:target_port, delay_ms/2 each way, at most rate_mbit per direction (0: no
    cap), at most cap bytes queued per direction."""

    def __init__(self, target_port: int, delay_ms: float, rate_mbit=0.0, cap=CAP, host="127.0.0.1"):
        self.target = (host, target_port)
        self.delay, self.rate, self.cap = delay_ms / 2000.0, rate_mbit * 1e6 / 8, cap
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(128)
        self.port = self.listener.getsockname()[1]

    def serve_forever(self) -> None:
        while True:
            c, _ = self.listener.accept()
            try:
                u = socket.create_connection(self.target)
            except OSError:
                c.close()
                continue
            self._pipe(c, u)

    def _pipe(self, c, u) -> None:
        for s in (c, u):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        ends, lock = [4], threading.Lock()  # 2 threads x 2 directions

        def done():
            with lock:
                ends[0] -= 1
                last = ends[0] == 0
            if last:
                c.close()
                u.close()

        for src, dst in ((c, u), (u, c)):
            _Direction(src, dst, self.delay, self.rate, self.cap, done).start()


@contextlib.contextmanager
def spawned(delay_ms: float, target_port: int, rate_mbit=0.0, cap_mib=CAP >> 20):
    """A relay in a process of its own (its threads off the caller's GIL): yields its port,
    and kills it (that process, by its pid) on the way out."""
    argv = [sys.executable, os.path.abspath(__file__), f"{delay_ms:g}", str(target_port)]
    argv += ["--rate", f"{rate_mbit:g}", "--cap", str(cap_mib)]
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()
        if not line.strip().isdigit():
            raise RuntimeError(f"relay did not start: {line!r}")
        yield int(line)
    finally:
        p.kill()
        p.wait()
        p.stdout.close()


def _buffers(s) -> None:
    for opt in (socket.SO_SNDBUF, socket.SO_RCVBUF):
        s.setsockopt(socket.SOL_SOCKET, opt, BIG_BUFFER)


def _push(s, size: int, limit: float) -> None:
    """Send zeros until `size` bytes or `limit` seconds, then half-close."""
    block, sent, end = memoryview(bytes(CHUNK)), 0, time.monotonic() + limit
    try:
        while sent < size and time.monotonic() < end:
            sent += s.send(block[: min(CHUNK, size - sent)])
    except OSError:
        pass
    _quiet(s.shutdown, socket.SHUT_WR)


def _drain(s) -> tuple:
    """Read to the end: (bytes after the first chunk, first chunk's time, last's)."""
    buf, n, first, last = bytearray(CHUNK), 0, None, None
    while k := s.recv_into(buf):
        last = time.perf_counter()
        if first is None:
            first = last
        else:
            n += k
    return n, first, last


def _stream(relay_port: int, listener, upload: bool, size: int, limit: float) -> dict:
    c = socket.socket()
    _buffers(c)
    c.connect(("127.0.0.1", relay_port))
    s, _ = listener.accept()
    sender, receiver = (c, s) if upload else (s, c)
    t = threading.Thread(target=_push, args=(sender, size, limit), daemon=True)
    t.start()
    n, first, last = _drain(receiver)
    t.join()
    got = {
        "bytes": n,
        "seconds": (last - first) if n else 0.0,
        "sndbuf": sender.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF),
        "rcvbuf": receiver.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
    }
    got["mb_s"] = n / got["seconds"] / 1e6 if n else 0.0
    c.close()
    s.close()
    return got


def ceiling(delay_ms: float, rate_mbit=0.0, size=512 << 20, limit=3.0, cap_mib=CAP >> 20) -> dict:
    """A plain TCP stream through a relay at this delay (and rate), each way: {"upload",
    "download"} -> {"bytes", "seconds", "mb_s", "sndbuf", "rcvbuf"}. The sender keeps
    sending (up to `size` bytes or `limit` seconds); the rate is the receiver's, from
    its first chunk to its last, so the one-way delay itself is not counted. Both ends
    ask for 64 MiB socket buffers; sndbuf and rcvbuf say what Linux gave (twice
    net.core.wmem_max and rmem_max at most)."""
    with socket.socket() as listener:
        _buffers(listener)  # the accepted socket inherits them
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        with spawned(delay_ms, listener.getsockname()[1], rate_mbit, cap_mib) as port:
            return {
                op: _stream(port, listener, op == "upload", size, limit)
                for op in ("upload", "download")
            }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("delay", type=float, help="round trip added, ms (half each way)")
    ap.add_argument("target", type=int, nargs="?", help="port on 127.0.0.1 to relay to")
    ap.add_argument("--rate", type=float, default=0, help="cap per direction, Mbit/s (0: none)")
    ap.add_argument("--cap", type=int, default=CAP >> 20, help="MiB queued per direction")
    ap.add_argument("--ceiling", action="store_true", help="measure a plain TCP stream")
    ap.add_argument("--size", type=int, default=512, help="ceiling: MiB at most (3 s at most)")
    args = ap.parse_args()
    if args.ceiling:
        for op, r in ceiling(args.delay, args.rate, args.size << 20, 3.0, args.cap).items():
            print(
                f"{op}: {r['mb_s']:.0f} MB/s ({r['bytes'] >> 20} MiB in {r['seconds']:.2f} s;"
                f" SO_SNDBUF {r['sndbuf'] >> 20} MiB, SO_RCVBUF {r['rcvbuf'] >> 20} MiB)"
            )
        return
    if args.target is None:
        ap.error("TARGET_PORT is needed (or --ceiling)")
    relay = Relay(args.target, args.delay, args.rate, args.cap << 20)
    print(relay.port, flush=True)
    relay.serve_forever()


if __name__ == "__main__":
    main()
