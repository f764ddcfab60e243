"""The primitives under pyssh.Group: an Op (a Session method called with defer=True)
and the Driver that moves many of them from one poll(). Against the test sshd."""

import os
import socket
import struct
import threading
import time

import pytest

import pyssh
from pyssh import _ssh
from pyssh._tcp import Deadline, run_steps
from pyssh.session import connect_steps


def _connected(server, n):
    return [server.connect() for _ in range(n)]


def _exec_op(s, command, **kw):
    ch = _ssh.Channel(s)
    return ch, ch.exec(command, defer=True, **kw)


def test_a_driver_runs_commands_of_many_sessions_at_once(server):
    sessions = _connected(server, 4)
    try:
        d = _ssh.Driver()
        chans = []
        for i, s in enumerate(sessions):
            ch, op = _exec_op(s, f"sleep 0.5; echo {i}")
            chans.append(ch)
            d.add(op)
        assert len(d) == 4
        t = time.monotonic()
        started = []
        while len(started) < 4:
            started += d.wait(timeout=10)
        for op in started:
            assert op.done and op.result() is None
        runs = {d_op: i for i, d_op in enumerate(ch.run(stdout=True, defer=True) for ch in chans)}
        for op in runs:
            d.add(op)
        results = {}
        while len(results) < 4:
            for op in d.wait(timeout=10):
                results[runs[op]] = op.result()
        elapsed = time.monotonic() - t
        assert {i: r.stdout for i, r in results.items()} == {i: f"{i}\n".encode() for i in range(4)}
        assert all(r.exit_status == 0 for r in results.values())
        assert elapsed < 1.5, f"four 0.5 s commands took {elapsed:.2f} s: not at once"
        assert len(d) == 0 and d.wait(timeout=0) == []
    finally:
        for s in sessions:
            s.close()


def test_op_wait_is_what_the_method_does_without_defer(server):
    with server.connect() as s:
        ch, op = _exec_op(s, "echo hello; exit 3")
        assert not op.done and op.session is s and op.what == "starting the command"
        with pytest.raises(RuntimeError, match="not finished"):
            op.result()
        assert op.wait() is None
        r = ch.run(stdout=True, stderr=True, defer=True).wait()
        assert (r.exit_status, r.stdout) == (3, b"hello\n")
        with pytest.raises(RuntimeError, match="under way or done"):
            _ssh.Driver().add(op)  # done already


def test_a_failed_op_raises_its_error_from_result(server):
    with server.connect() as s:
        ch = _ssh.Channel(s)
        ch.exec("true")
        with pytest.raises(pyssh.SSHError, match="used already"):
            ch.exec("true", defer=True)
        s2 = pyssh._ssh.Session()
        with pytest.raises(pyssh.SSHError):
            s2._auth_none(defer=True)  # not connected: refused before any Op is made


def test_an_op_abandoned_gives_its_channel_back(server):
    with server.connect() as s:
        ch, op = _exec_op(s, "true")
        op.wait()
        run = ch.run(stdout=True, defer=True)
        with pytest.raises(RuntimeError, match="in use"):
            ch.close()  # the run holds the channel
        d = _ssh.Driver()
        d.add(run)
        d.abandon()
        assert run.done and len(d) == 0
        with pytest.raises(pyssh.SSHError, match="abandoned"):
            run.result()
        ch.close()  # free again
        assert s.exec_internal("echo still").stdout == b"still\n"


def test_an_op_dropped_unfinished_releases_what_it_holds(server):
    with server.connect() as s:
        ch, op = _exec_op(s, "true")
        op.wait()
        run = ch.run(stdout=True, defer=True)
        del run  # never waited for
        ch.close()
        assert s.exec_internal("echo ok").stdout == b"ok\n"


def test_wait_socket_and_its_timeout():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    a, b = socket.socketpair()
    try:
        d = _ssh.Driver()
        ready = _ssh.wait_socket(a.fileno(), 1, timeout=5)  # POLLIN
        late = _ssh.wait_socket(listener.fileno(), 1, timeout=0.2, what="waiting for nobody")
        d.add(ready)
        d.add(late)
        assert d.wait(timeout=0.05) == []
        b.send(b"x")
        assert d.wait(timeout=5) == [ready] and ready.result() is None
        t = time.monotonic()
        assert d.wait(timeout=5) == [late]
        assert 0.1 < time.monotonic() - t < 1.0
        with pytest.raises(pyssh.SSHTimeoutError, match="waiting for nobody"):
            late.result()
    finally:
        for x in (listener, a, b):
            x.close()


def test_wake_from_another_thread_ends_a_wait_at_once():
    a, b = socket.socketpair()
    try:
        d = _ssh.Driver()
        d.add(_ssh.wait_socket(a.fileno(), 1))
        threading.Timer(0.2, d.wake).start()
        t = time.monotonic()
        assert d.wait(timeout=10) == []
        assert time.monotonic() - t < 2
        assert len(d) == 1
    finally:
        a.close()
        b.close()


@pytest.mark.slow  # a timing bound: the full run has it
def test_an_empty_driver_waits_for_its_timeout_or_a_wake():
    """A worker whose hosts all wait on a pool thread (a transfer, a name to resolve)
    has nothing in its Driver: it must sleep there, not spin."""
    d = _ssh.Driver()
    t = time.monotonic()
    assert d.wait(timeout=0.3) == []
    assert 0.25 < time.monotonic() - t < 2
    threading.Timer(0.1, d.wake).start()
    t = time.monotonic()
    assert d.wait(timeout=10) == []
    assert time.monotonic() - t < 2


@pytest.mark.slow  # a timing bound: the full run has it
def test_one_thread_at_a_time_moves_a_driver():
    a, b = socket.socketpair()
    d = _ssh.Driver()
    d.add(_ssh.wait_socket(a.fileno(), 1))
    errors = []
    t = threading.Thread(target=lambda: d.wait(timeout=0.5))
    t.start()
    time.sleep(0.1)
    try:
        d.wait(timeout=0)
    except RuntimeError as e:
        errors.append(e)
    t.join()
    a.close()
    b.close()
    assert errors and "one thread" in str(errors[0])


def test_the_connect_flow_runs_in_a_driver_as_connect_does(server):
    """connect_steps in a hand-made loop over a Driver: what pyssh.Group's workers do."""
    from pyssh._tcp import TCPConnect, tcp_steps as _tcp_steps

    kw = {
        **pyssh._group._CONNECT_DEFAULTS,
        "keyfile": server.client_key,
        "known_hosts": server.known_hosts,
        "config": False,
    }
    flows = [connect_steps(server.address, dict(kw)) for _ in range(3)]
    d = _ssh.Driver()
    stacks = {id(f): [f] for f in flows}
    waiting = {}
    done = []

    def advance(key, value=None, error=None):
        stack = stacks[key]
        while True:
            try:
                item = stack[-1].throw(error) if error else stack[-1].send(value)
            except StopIteration as stop:
                stack.pop()
                value, error = stop.value, None
                if not stack:
                    done.append(value)
                    return
                continue
            value, error = None, None
            if isinstance(item, TCPConnect):
                stack.append(_tcp_steps(item))
                continue
            d.add(item)
            waiting[item] = key
            return

    for f in flows:
        advance(id(f))
    while len(done) < 3:
        for op in d.wait(timeout=10):
            advance(waiting.pop(op), op.result())
    try:
        assert all(s.connected for s in done)
        assert [s.exec_internal("echo hi").stdout for s in done] == [b"hi\n"] * 3
    finally:
        for s in done:
            s.close()


def test_run_steps_hands_a_failure_to_the_flow_where_it_waited(server):
    deadline = Deadline(5)

    def flow():
        s = _ssh.Session()
        try:
            yield s._connect(-1, timeout=deadline.left(), defer=True)  # not configured
        except pyssh.SSHError as e:
            return f"caught: {type(e).__name__}"
        finally:
            s.close()

    assert run_steps(flow()).startswith("caught: ")


@pytest.mark.slow  # a timing bound: the full run has it
def test_a_driven_command_is_not_stalled_by_a_tunnel_thread_on_its_session(server):
    """A background tunnel's thread waits on the same session and may read the
    command's packets first: it rings the Driver (the entry is in the session's
    waiters), which steps again at once instead of at the end of its slice (5 s)."""
    with server.connect() as s, s.forward_local(0, f"127.0.0.1:{server.port}") as tunnel:
        assert tunnel.port
        ch, op = _exec_op(s, "for i in 1 2 3 4 5 6; do echo $i; sleep 0.1; done")
        d = _ssh.Driver()
        d.add(op)
        t = time.monotonic()
        results = []

        def drive():  # a worker thread, as in pyssh.Group (slices of 5 s)
            while not d.wait(timeout=30):
                pass
            run = ch.run(stdout=True, defer=True)
            d.add(run)
            while not (got := d.wait(timeout=30)):
                pass
            results.append(got[0].result())

        worker = threading.Thread(target=drive)
        worker.start()
        worker.join(30)
        elapsed = time.monotonic() - t
        assert results and results[0].stdout == b"1\n2\n3\n4\n5\n6\n"
        assert elapsed < 3.0, f"took {elapsed:.2f} s: the Driver missed its packets"


def test_a_driver_refuses_what_is_not_an_op():
    """add() looked into its argument as an Op before checking its type (a crash)."""
    d = _ssh.Driver()
    for obj in (object(), 1, "x" * 100, [1, 2, 3], None, 3.5):
        with pytest.raises(TypeError, match="Op objects only"):
            d.add(obj)
    assert len(d) == 0


def test_an_op_refused_by_a_driver_as_done_still_gives_its_result(server):
    """add() of a finished Op kept it claimed: its wait() then said it was under way."""
    with server.connect() as s:
        ch, op = _exec_op(s, "true")
        assert op.wait() is None
        with pytest.raises(RuntimeError, match="under way or done"):
            _ssh.Driver().add(op)
        assert op.wait() is None and op.result() is None


class _Holder:
    pass


def _run_held_by_its_callback(ch):
    h = _Holder()
    h.run = ch.run(stdout=lambda chunk, h=h: None, defer=True)
    return id(h.run)


def test_an_op_in_a_cycle_through_its_callback_is_collected(server):
    """The garbage collector did not see the callbacks a run Op holds: an Op that its
    own callback reached (a cycle) was never freed, and kept its channel claimed."""
    import gc

    with server.connect() as s:
        ch, op = _exec_op(s, "true")
        op.wait()
        rid = _run_held_by_its_callback(ch)
        gc.collect()
        assert not [o for o in gc.get_objects() if id(o) == rid]
        ch.close()  # not "in use": the Op gave its claim back


@pytest.mark.slow  # a timing bound: the full run has it
def test_a_driver_with_no_operations_waits_for_wake_or_its_timeout():
    """wait() returned at once with no Op pending: a Group worker whose flows all
    waited for its thread pool (resolving a name, an SFTP transfer) spun on it."""
    d = _ssh.Driver()
    t = time.monotonic()
    assert d.wait(timeout=0.3) == []
    assert time.monotonic() - t >= 0.25
    threading.Timer(0.2, d.wake).start()
    t = time.monotonic()
    assert d.wait(timeout=10) == []
    assert 0.1 < time.monotonic() - t < 2


@pytest.mark.slow  # a timing bound: the full run has it
def test_a_group_worker_does_not_spin_while_a_name_resolves(server, monkeypatch):
    from pyssh import _group, _tcp

    real, waits = _tcp.getaddrinfo, [0]
    real_driver = _ssh.Driver

    def slow(host, port, target):
        time.sleep(1.0)
        return real("127.0.0.1", port, target)

    class Counting:
        def __init__(self):
            self.d = real_driver()

        def wait(self, timeout=None):
            waits[0] += 1
            return self.d.wait(timeout=timeout)

        def __getattr__(self, name):
            return getattr(self.d, name)

        def __len__(self):
            return len(self.d)

    monkeypatch.setattr(_tcp, "getaddrinfo", slow)
    monkeypatch.setattr(_group._ssh, "Driver", Counting)
    user = server.address.split("@")[0]
    host = ("h", {"hostname": "localhost", "port": server.port, "user": user})
    kw = {"keyfile": server.client_key, "known_hosts": server.known_hosts, "config": False}
    with pyssh.Group([host], workers=1, **kw) as g:
        assert not g.run("true").failed
    assert waits[0] < 100, f"{waits[0]} waits of a Driver in 1 s: it spun"


def _in_a_thread(fn):  # a worker's slices (5 s), as in pyssh.Group
    out = []
    t = threading.Thread(target=lambda: out.append(fn()))
    t.start()
    t.join(60)
    return out[0]


@pytest.mark.slow  # a timing bound: the full run has it
def test_a_ring_that_comes_with_a_finished_op_is_not_lost(server):
    """Another thread read a pending command's packets (ringing the Driver) while a
    socket Op became ready: the wait that returned the socket Op drained the ring but
    left the command unstepped, until the end of a 5 s slice."""
    with server.connect() as s:
        ch, op = _exec_op(s, "sleep 0.5; echo hi")
        op.wait()
        run = ch.run(stdout=True, defer=True)
        y1, y2 = socket.socketpair()
        x1, x2 = socket.socketpair()
        try:
            d = _ssh.Driver()
            first, second = _ssh.wait_socket(y1.fileno(), 1), _ssh.wait_socket(x1.fileno(), 1)
            for o in (run, first, second):
                d.add(o)
            y2.send(b"y")
            assert _in_a_thread(lambda: d.wait(timeout=10)) == [first]  # run: stepped once
            time.sleep(1.0)
            s.exec_internal("true")  # reads the run's output and end: rings the Driver
            x2.send(b"x")
            assert _in_a_thread(lambda: d.wait(timeout=10)) == [second]
            t = time.monotonic()
            assert _in_a_thread(lambda: d.wait(timeout=10)) == [run]
            assert time.monotonic() - t < 1.0
            assert run.result().stdout == b"hi\n"
        finally:
            for x in (y1, y2, x1, x2):
                x.close()


def test_wait_gives_the_outcome_of_an_op_a_driver_finished_or_abandoned(server):
    """An Op that a Driver had finished or abandoned stayed claimed by it: its wait()
    said it was under way in another call instead of giving its result or error."""
    with server.connect() as s:
        ch, op = _exec_op(s, "true")
        d = _ssh.Driver()
        d.add(op)
        while not d.wait(timeout=10):
            pass
        assert op.wait() is None
        run = ch.run(stdout=True, defer=True)
        d.add(run)
        d.abandon()
        with pytest.raises(pyssh.SSHError, match="abandoned"):
            run.wait()
        with pytest.raises(RuntimeError, match="under way or done"):
            d.add(run)


@pytest.mark.slow  # a timing bound: the full run has it
def test_a_server_that_trickles_bytes_cannot_hold_off_the_connect_timeout(tmp_path):
    """Its socket is ready every 50 ms, so the entry is always due: the deadline is
    checked all the same, as pyssh_wait does (connecting has a total deadline)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    stop = threading.Event()

    def serve():
        conn, _ = listener.accept()
        with conn:
            conn.sendall(b"SSH-2.0-trickle\r\n\x00\x00\x10\x00")  # a 4 KiB packet, coming
            while not stop.wait(0.05):
                try:
                    conn.sendall(b"\x00")
                except OSError:
                    return

    threading.Thread(target=serve, daemon=True).start()
    host = ("slow", {"hostname": "127.0.0.1", "port": listener.getsockname()[1]})
    try:
        t = time.monotonic()
        with pyssh.Group([host], known_hosts=str(tmp_path / "kh"), config=False) as g:
            r = g.run("true", timeout=1)
        elapsed = time.monotonic() - t
    finally:
        stop.set()
        listener.close()
    assert isinstance(r["slow"], pyssh.SSHTimeoutError), r["slow"]
    assert elapsed < 3, elapsed


def test_wait_socket_refuses_what_cannot_be_a_socket():
    for fd in (-1, 2**40):
        with pytest.raises(ValueError, match="open socket"):
            _ssh.wait_socket(fd, 1)


# ---- an event loop that waits itself: Op.step() (the way to asyncio, issue 22) ---------------


async def _run_flow_in_loop(flow):
    """A flow (connect_steps, run_flow) in the running loop, as pyssh.aio runs it: its
    Ops by Op.step() with the loop's readers and writers, no thread."""
    from pyssh.aio import _run

    return await _run(flow)


def test_an_asyncio_loop_drives_connect_and_commands_through_op_step(server):
    """Five sessions connected and ten commands run by one asyncio loop, no thread:
    each Op stepped when the loop says its socket is ready; a heartbeat task shows the
    loop is never held for long."""
    import asyncio

    from pyssh._exec import run_flow

    kw = {
        **pyssh._group._CONNECT_DEFAULTS,
        "keyfile": server.client_key,
        "known_hosts": server.known_hosts,
        "config": False,
    }

    async def one(i):
        s = await _run_flow_in_loop(connect_steps(server.address, dict(kw)))
        try:
            out = []
            for j in range(2):
                flow = run_flow(s, f"sleep 0.2; echo {i}.{j}", None, None, None, 10, None, True)
                out.append((await _run_flow_in_loop(flow)).stdout)
            return out
        finally:
            s.close()

    async def main():
        gaps, stop = [], asyncio.Event()

        async def heartbeat():
            last = time.monotonic()
            while not stop.is_set():
                await asyncio.sleep(0.005)
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        beat = asyncio.ensure_future(heartbeat())
        t = time.monotonic()
        results = await asyncio.gather(*(one(i) for i in range(5)))
        elapsed = time.monotonic() - t
        stop.set()
        await beat
        return results, elapsed, max(gaps)

    before = threading.active_count()
    results, elapsed, worst = asyncio.run(main())
    assert results == [[f"{i}.0\n".encode(), f"{i}.1\n".encode()] for i in range(5)]
    assert elapsed < 3, f"five sessions' 0.4 s of commands took {elapsed:.2f} s: not at once"
    assert worst < 0.25, f"the loop was held {worst * 1000:.0f} ms"
    assert threading.active_count() <= before + 1  # (the loop's executor may have started one)


# ---- SFTP methods as Ops: the one loop of every SFTP method, deferred ----------------

from pyssh._sftp import (  # noqa: E402
    CLOSE,
    F_CREAT,
    F_READ,
    F_TRUNC,
    F_WRITE,
    HANDLE,
    OPEN,
    STAT,
    STATUS,
    _attrs,
    _str,
)


def _drive(d, ops, timeout=20):
    """Every op of `ops` through the Driver `d`: their results, in order."""
    for op in ops:
        d.add(op)
    left, end = set(ops), time.monotonic() + timeout
    while left:
        assert time.monotonic() < end, "the Driver did not finish its SFTP operations"
        for op in d.wait(timeout=1):
            left.discard(op)
    return [op.result() for op in ops]


def _open_req(path, flags):
    return [(OPEN, _str(path.encode()) + struct.pack(">I", flags) + _attrs(mode=0o600))]


def test_a_driver_moves_sftp_start_requests_and_transfers_of_many_sessions(server, tmp_path):
    sessions = _connected(server, 3)
    data = [os.urandom(300_000 + i) for i in range(3)]
    srcs, fds = [], []
    try:
        for i, blob in enumerate(data):
            p = tmp_path / f"src{i}"
            p.write_bytes(blob)
            srcs.append(p)
        chans = [_ssh.SFTP(s) for s in sessions]
        d = _ssh.Driver()
        versions = _drive(d, [c.start(timeout=10, defer=True) for c in chans])
        assert all(v[0] == 3 for v in versions)
        dest = [str(tmp_path / f"dst{i}") for i in range(3)]
        flags = F_WRITE | F_CREAT | F_TRUNC
        opened = _drive(d, [c.batch(_open_req(p, flags), defer=True) for c, p in zip(chans, dest)])
        handles = [r[0][1] for r in opened]
        assert all(r[0][0] == HANDLE for r in opened)
        fds = [os.open(p, os.O_RDONLY) for p in srcs]
        ups = [
            c.upload(h, fd, 0, len(b), None, 10, defer=True)
            for c, h, fd, b in zip(chans, handles, fds, data)
        ]
        results = _drive(d, ups)
        assert [r.moved for r in results] == [len(b) for b in data]
        assert all(r.status == -1 and r.local_errno == 0 for r in results)
        closes = _drive(d, [c.request(CLOSE, _str(h), defer=True) for c, h in zip(chans, handles)])
        assert all(r[0] == STATUS and r[1][0] == 0 for r in closes)
        assert [open(p, "rb").read() for p in dest] == data
    finally:
        for fd in fds:
            os.close(fd)
        for s in sessions:
            s.close()


def test_a_deferred_sftp_op_waited_is_what_the_method_gives(server, tmp_path):
    (tmp_path / "f").write_bytes(b"x" * 5000)
    with server.connect() as s:
        c = _ssh.SFTP(s)
        assert c.start(timeout=10, defer=True).wait()[0] == 3
        rtype, attrs = c.request(STAT, _str(str(tmp_path / "f").encode()), defer=True).wait()
        assert attrs[0] == 5000
        h = c.request(*_open_req(str(tmp_path / "f"), F_READ)[0], defer=True).wait()[1]
        fd = os.open(tmp_path / "copy", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            r = c.download(h, fd, 0, 0, None, 10, defer=True).wait()
        finally:
            os.close(fd)
        assert r.moved == 5000 and (tmp_path / "copy").read_bytes() == b"x" * 5000
        assert c.send(CLOSE, _str(h), defer=True) is None  # nothing to wait for
        c.close()


def test_an_sftp_op_dropped_or_abandoned_leaves_the_channel_usable(server, tmp_path):
    with open(tmp_path / "f", "wb") as f:
        f.truncate(256 << 20)  # sparse: far more than moves in 10 ms
    with server.connect() as s:
        c = _ssh.SFTP(s)
        c.start(timeout=10)
        path = _str(str(tmp_path / "f").encode())
        op = c.request(STAT, path, defer=True)
        with pytest.raises(RuntimeError, match="in use"):
            c.close()  # the Op holds the channel
        del op  # never run: its reply, when it comes, is dropped
        h = c.request(*_open_req(str(tmp_path / "f"), F_READ)[0])[1]
        fd = os.open(tmp_path / "part", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            down = c.download(h, fd, 0, 0, None, 10, defer=True)
            d = _ssh.Driver()
            d.add(down)
            assert d.wait(timeout=0.01) == []
            d.abandon()  # replies still due are dropped as they come
            with pytest.raises(pyssh.SSHError, match="abandoned"):
                down.result()
        finally:
            os.close(fd)
        assert c.request(STAT, path, timeout=10)[1][0] == 256 << 20
        c.close()


# ---- a channel's byte I/O as Ops: read, write, send, recv, the fd transfers, EOF -----


def _loop_drive(op):
    """`op` moved by pyssh.aio's loop driver (Op.step when its socket is ready)."""
    import asyncio

    from pyssh.aio import _Bell, _drive

    async def main():
        bell = _Bell()
        try:
            return await _drive(op, bell)
        finally:
            bell.close()

    return asyncio.run(main())


_WAYS = {"blocking": None, "Op.wait": lambda op: op.wait(), "loop": _loop_drive}
# the blocking and Op.wait ways in the quick tier, the loop's in the full run
_HOW = ["blocking", "Op.wait", pytest.param("loop", marks=pytest.mark.slow)]


def _io(how, method, *args, **kw):
    """Call a Channel method the way `how` says: blocking, or deferred and then
    waited for by Op.wait() or by the asyncio driver."""
    if _WAYS[how] is None:
        return method(*args, **kw)
    op = method(*args, defer=True, **kw)
    assert isinstance(op, _ssh.Op) and not op.done
    return _WAYS[how](op)


def _read_all(how, ch, **kw):
    out = b""
    while chunk := _io(how, ch.read, 65536, **kw):
        out += chunk
    return out


def _recv_all(how, ch):
    out, err = b"", b""
    while True:
        r = _io(how, ch.recv, end=True, timeout=10)
        out, err = out + r.stdout, err + r.stderr
        if r.eof and r.ended:
            return out, err


@pytest.mark.parametrize("how", _HOW)
def test_deferred_write_send_eof_and_read_give_what_blocking_gives(server, how):
    with server.connect() as s:
        ch, op = _exec_op(s, "cat; echo gone >&2")
        op.wait()
        assert _io(how, ch.write, b"abc", timeout=10) is None
        assert _io(how, ch.send, memoryview(b"defg"), timeout=10) == 4
        assert _io(how, ch.read, 0) == b""  # n 0: b'' at once, nothing waited for
        assert _io(how, ch.send_eof) is None
        assert _read_all(how, ch, timeout=10) == b"abcdefg"
        assert ch.stderr_tail == b"gone\n"
        ch.close()


@pytest.mark.parametrize("how", _HOW)
def test_deferred_recv_gives_what_blocking_gives(server, how):
    with server.connect() as s:
        ch, op = _exec_op(s, "seq 1 20000; seq 5 >&2; exit 4")
        op.wait()
        out, err = _recv_all(how, ch)
        assert out == "".join(f"{i}\n" for i in range(1, 20001)).encode()
        assert err == b"1\n2\n3\n4\n5\n" and ch.status().exit_status == 4
        ch.close()
        ch, op = _exec_op(s, "cat")
        op.wait()
        r = _io(how, ch.recv, 0, 0, data=b"xyz" * 1000, timeout=10)
        assert r.sent == 3000 and r.stdout == b""
        ch.close()


@pytest.mark.parametrize("how", _HOW)
def test_deferred_fd_transfers_give_what_blocking_gives(server, how, tmp_path):
    data = os.urandom(700_000)
    src = tmp_path / "src"
    src.write_bytes(data)
    with server.connect() as s:
        ch, op = _exec_op(s, "wc -c")
        op.wait()
        with open(src, "rb") as f:
            assert _io(how, ch.send_from_fd, f.fileno(), len(data), timeout=10) == len(data)
        _io(how, ch.send_eof)
        assert _read_all(how, ch, timeout=10).strip() == str(len(data)).encode()
        ch.close()
        ch, op = _exec_op(s, f"cat {src}")
        op.wait()
        seen = []
        with open(tmp_path / "dst", "wb") as f:
            n = _io(how, ch.recv_to_fd, f.fileno(), len(data), progress=seen.append, timeout=10)
        assert n == len(data) and (tmp_path / "dst").read_bytes() == data
        assert seen and seen[-1] == len(data)  # the progress callback, last at the end
        ch.close()


def test_a_deferred_channel_method_refused_before_any_op_is_made(server):
    with server.connect() as s:
        ch = _ssh.Channel(s)
        for call in (lambda: ch.read(defer=True), lambda: ch.send_eof(defer=True)):
            with pytest.raises(pyssh.SSHError, match="call exec"):
                call()
        ch.exec("cat")
        with pytest.raises(ValueError, match="defer=True cannot watch"):
            ch.recv(fd=0, defer=True)
        op = ch.read(defer=True)
        with pytest.raises(RuntimeError, match="in use"):
            ch.read()  # the Op holds the reading side
        assert ch.send(b"x") == 1  # not the writing side: stdin is free
        assert op.wait() == b"x"
        ch.close()


@pytest.mark.slow  # 7 MB of output, stepped and cancelled
def test_deferred_reads_cancelled_between_steps_take_nothing(server):
    """recv/read Ops stepped once and cancelled when unfinished, over and over: the
    output gathered from the ones that finished is all of it, in order. A step cut
    short by its slice returns what it took, so a cancel between steps drops nothing."""
    want = "".join(f"{i}\n" for i in range(1, 1000001)).encode()
    with server.connect() as s:
        for make in (lambda ch: ch.recv(8 << 20, 0, defer=True), lambda ch: ch.read(defer=True)):
            ch, op = _exec_op(s, "sleep 0.1; seq 1 1000000")  # (the first steps find nothing)
            op.wait()
            got, cancelled, end = b"", 0, time.monotonic() + 30
            while time.monotonic() < end:
                op = make(ch)
                op.step()
                if not op.done:
                    op.cancel()
                    cancelled += 1
                    time.sleep(0.0005)
                    continue
                r = op.result()
                chunk = r if isinstance(r, bytes) else r.stdout
                got += chunk
                if (isinstance(r, bytes) and not r) or (not isinstance(r, bytes) and r.eof):
                    break
            assert got == want and cancelled > 0
            ch.close()


@pytest.mark.slow  # a command's 0.3 s
def test_a_deferred_read_cancelled_in_the_loop_leaves_the_channel_usable(server, tmp_path):
    import asyncio

    from pyssh.aio import _drive

    async def main(ch, op):
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(_drive(op), 0.1)
        assert op.done
        with pytest.raises(pyssh.SSHError, match="abandoned"):
            op.result()

    with server.connect() as s:
        ch, op = _exec_op(s, "sleep 0.3; echo late")
        op.wait()
        asyncio.run(main(ch, ch.read(defer=True)))
        assert ch.read(timeout=10) == b"late\n"  # the claim went with the Op; nothing lost
        ch.close()
        # a file transfer cancelled midway: its stream position is lost, so the
        # caller closes the channel; the session goes on
        ch, op = _exec_op(s, "head -c 1000; sleep 5")
        op.wait()
        with open(tmp_path / "part", "wb") as f:
            asyncio.run(main(ch, ch.recv_to_fd(f.fileno(), 5000, defer=True)))
        ch.close()
        assert ch.closed and s.exec_internal("echo on").stdout == b"on\n"


@pytest.mark.slow  # two timeouts of 0.3 s each way
@pytest.mark.parametrize("how", ["Op.wait", "loop"])
def test_a_stalled_command_still_times_out_deferred(server, how):
    """A command that neither writes nor reads its stdin: a deferred read and a
    deferred write of more than the window end in SSHTimeoutError, not a hang."""
    with server.connect() as s:
        ch, op = _exec_op(s, "sleep 30")
        op.wait()
        for call in (lambda: _io(how, ch.read, timeout=0.3),
                     lambda: _io(how, ch.write, b"x" * (8 << 20), timeout=0.3)):  # fmt: skip
            t = time.monotonic()
            with pytest.raises(pyssh.SSHTimeoutError):
                call()
            assert time.monotonic() - t < 3
        ch.close()
        assert s.exec_internal("echo alive").stdout == b"alive\n"


def test_a_transfer_op_held_by_its_progress_callback_is_collected(server, tmp_path):
    import gc

    with server.connect() as s:
        ch, op = _exec_op(s, "cat")
        op.wait()
        h = _Holder()
        with open(tmp_path / "f", "wb") as f:
            h.op = ch.recv_to_fd(f.fileno(), 10, progress=lambda n, h=h: None, defer=True)
            oid = id(h.op)
            del h
            gc.collect()
        assert not [o for o in gc.get_objects() if id(o) == oid]
        ch.close()  # not "in use": the Op gave its claim back
