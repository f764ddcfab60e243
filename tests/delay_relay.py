"""A TCP relay on 127.0.0.1 that holds what passes for a fixed time each way: a
long network path for the tests of pyssh's window growth and striping (this
machine has no netem). benchmarks/relay.py is the benchmarks' faster one."""

import socket
import threading
import time
from collections import deque


class DelayRelay:
    """``with DelayRelay(port, rtt=0.04) as r:`` connect to ``r.port``; each
    connection goes on to ``port`` with ``rtt / 2`` seconds added each way."""

    def __init__(self, target_port: int, rtt: float):
        self.target = target_port
        self.one_way = rtt / 2
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.socks = []

    def __enter__(self):
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.listener.close()
        for s in self.socks:
            s.close()

    def _accept(self):
        while True:
            try:
                c, _ = self.listener.accept()
            except OSError:
                return
            u = socket.create_connection(("127.0.0.1", self.target))
            for s in (c, u):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self.socks.append(s)
            self._pipe(c, u)
            self._pipe(u, c)

    def _pipe(self, a, b):
        queue, cond = deque(), threading.Condition()

        def reader():
            while True:
                try:
                    d = a.recv(1 << 20)
                except OSError:
                    d = b""
                with cond:
                    queue.append((time.monotonic() + self.one_way, d))
                    cond.notify()
                if not d:
                    return

        def writer():
            while True:
                with cond:
                    while not queue:
                        cond.wait()
                    due, d = queue.popleft()
                time.sleep(max(0.0, due - time.monotonic()))
                try:
                    if not d:
                        b.shutdown(socket.SHUT_WR)
                        return
                    b.sendall(d)
                except OSError:
                    return

        threading.Thread(target=reader, daemon=True).start()
        threading.Thread(target=writer, daemon=True).start()
