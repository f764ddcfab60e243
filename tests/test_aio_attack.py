"""Attacks on pyssh.aio: cancellation, closing, stalls, misuse."""

import asyncio
import os
import socket
import threading
import time

import pytest
from test_aio import _connect, _kw  # (tests/ is on sys.path: pytest puts it there)

import pyssh
import pyssh.aio


def test_close_while_a_command_waits_ends_it(server):
    async def main():
        s = await _connect(server)
        task = asyncio.ensure_future(s.run("sleep 30"))
        await asyncio.sleep(0.3)
        s.close()
        with pytest.raises(pyssh.SessionClosedError):
            await asyncio.wait_for(task, 5)

    asyncio.run(main())


def test_after_close_run_raises_session_closed(server):
    async def main():
        s = await _connect(server)
        s.close()
        with pytest.raises(pyssh.SessionClosedError):
            await s.run("true")
        with pytest.raises(pyssh.SessionClosedError):
            await s.sftp()

    asyncio.run(main())


def test_session_used_from_a_second_loop(server):
    s = asyncio.run(_connect(server))
    try:

        async def first():
            return (await s.run("echo 1")).stdout

        async def second():
            outs = await asyncio.wait_for(
                asyncio.gather(*(s.run(f"sleep 0.2; echo {i}") for i in range(5))), 10
            )
            return outs

        assert asyncio.run(first()) == b"1\n"
        outs = asyncio.run(second())
        assert [o.stdout for o in outs] == [f"{i}\n".encode() for i in range(5)]
    finally:
        s.close()


@pytest.mark.slow  # a 1 s timeout
def test_stalled_server_connect_times_out(server):
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(5)
    port = lst.getsockname()[1]

    async def main():
        t = time.monotonic()
        with pytest.raises(pyssh.SSHTimeoutError):
            await asyncio.wait_for(
                pyssh.aio.connect("127.0.0.1", port=port, **_kw(server, timeout=1)), 10
            )
        return time.monotonic() - t

    try:
        assert asyncio.run(main()) < 3
    finally:
        lst.close()


@pytest.mark.slow
def test_a_session_used_again_from_a_later_loop_still_wakes_its_waiters(server):
    """asyncio.run() after asyncio.run() with one session: the bell (another call's
    step read this one's packets) must ring in the loop now running. A blocking call
    from a thread reads the packets of the loop's command about half the time."""

    s = asyncio.run(_connect(server))

    async def one():
        th = threading.Thread(target=lambda: s.session.exec_internal("sleep 1.5"))
        th.start()
        try:
            await asyncio.sleep(0.1)
            t = time.monotonic()
            assert (await s.run("sleep 0.3; echo b")).stdout == b"b\n"
            return time.monotonic() - t
        finally:
            await asyncio.get_running_loop().run_in_executor(None, th.join)

    try:
        took = [asyncio.run(one()) for _ in range(5)]
    finally:
        s.close()
    assert max(took) < 1.0, took


def test_connect_by_host_name_without_a_timeout(server, tmp_path):
    """A name (resolved in the executor) and timeout=None: the resolve timeout's
    message was made from None (TypeError) before anything was tried."""
    kh = tmp_path / "known_hosts"
    kh.write_text(f"[localhost]:{server.port} {server.host_key_pub}\n")

    async def main():
        s = await pyssh.aio.connect(
            "localhost", port=server.port, **_kw(server, known_hosts=str(kh), timeout=None)
        )
        async with s:
            return (await s.run("echo ok")).stdout

    assert asyncio.run(main()) == b"ok\n"


@pytest.mark.slow
def test_one_session_used_from_two_loops_at_once(server):
    """Two threads, each its own loop, one AsyncSession: each loop's waiters must be
    woken through a wake-up pair that loop watches."""

    s = asyncio.run(_connect(server))
    results = {}

    def thread(name):
        async def main():
            outs = await asyncio.wait_for(
                asyncio.gather(*(s.run(f"sleep 0.{i}; echo {name}{i}") for i in range(4))), 10
            )
            return [o.stdout for o in outs]

        try:
            results[name] = asyncio.run(main())
        except BaseException as e:  # (reported below)
            results[name] = e

    try:
        threads = [threading.Thread(target=thread, args=(n,)) for n in "ab"]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    finally:
        s.close()
    assert results == {n: [f"{n}{i}\n".encode() for i in range(4)] for n in "ab"}


def test_closing_from_another_thread_ends_the_loops_waiting_operations(server):

    async def main():
        s = await _connect(server)
        task = asyncio.ensure_future(s.run("sleep 30"))
        await asyncio.sleep(0.2)
        threading.Thread(target=s.close).start()
        with pytest.raises(pyssh.SessionClosedError):
            await asyncio.wait_for(task, 5)
        # its socket left the loop's watches (before it closed: in the loop's thread)
        watch = pyssh.aio._watch(asyncio.get_running_loop())
        assert not s._bell.fds and not watch.readers and not watch.writers

    asyncio.run(main())


@pytest.mark.slow
def test_async_def_callbacks_are_awaited_in_order_none_lost(server, tmp_path):
    """Callbacks are called between steps, where nothing can be awaited: an ``async
    def`` one's coroutine is queued and awaited before the next step (in order, the
    transfer held back while it runs), never dropped (output silently lost)."""
    got = []

    async def collect(chunk):
        await asyncio.sleep(0.001)  # a real suspension: the order must still hold
        got.append(chunk)

    moved = []

    async def progress(done, total):
        await asyncio.sleep(0)
        moved.append((done, total))

    data = os.urandom(3 << 20)
    (tmp_path / "f").write_bytes(data)
    n = 20000

    async def main():
        async with await _connect(server) as s:
            status = await s.exec_wait(f"seq {n}", stdout=collect, stderr=collect)
            assert status == 0
            assert b"".join(got) == b"".join(b"%d\n" % i for i in range(1, n + 1))
            async with await s.sftp() as f:
                await f.put(str(tmp_path / "f"), str(tmp_path / "g"), progress=progress)
                assert moved and moved[-1] == (len(data), len(data))
                assert [m for m, _ in moved] == sorted(m for m, _ in moved)
                moved.clear()
                await f.get(str(tmp_path / "g"), str(tmp_path / "h"), progress=progress)
                assert moved and moved[-1] == (len(data), len(data))

            async def broken(chunk):
                raise ValueError("the callback failed")

            with pytest.raises(ValueError, match="the callback failed"):
                await s.exec_wait("echo hi; sleep 30", stdout=broken)
            assert (await s.run("echo still usable")).stdout == b"still usable\n"

    asyncio.run(main())
    assert (tmp_path / "h").read_bytes() == data


def test_a_wait_with_no_deadline_is_bounded_by_the_restep(monkeypatch):
    """An operation with no deadline waits for its socket or its session's bell; should
    a wake-up never come, it steps again after RESTEP_SECONDS (the blocking waits'
    slices do the same), never waits for ever."""
    monkeypatch.setattr(pyssh.aio, "RESTEP_SECONDS", 0.05)

    async def main():
        loop = asyncio.get_running_loop()
        a, b = socket.socketpair()  # a socket nothing is ever written to
        try:
            t = time.monotonic()
            wait = pyssh.aio._ready(
                loop, pyssh.aio._watch(loop), [(a.fileno(), pyssh._ssh.POLLIN)], None, None
            )
            await asyncio.wait_for(wait, 2)
            return time.monotonic() - t
        finally:
            a.close()
            b.close()

    assert asyncio.run(main()) < 0.5
