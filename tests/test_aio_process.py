"""pyssh.aio's processes: AsyncSession.create_process against the test sshd. Each test
runs its own loop (test_aio's `aio_run`: asyncio's, and uvloop's in the slow tier) over
one module-wide session of an ordinary account (as root: sshd delivers no signals to
root sessions, as in test_process.py)."""

import asyncio
import os
import time

import pytest
from test_aio import LOOPS, SLOWER, uvloop

import pyssh
import pyssh.aio
from pyssh import _aioprocess

from conftest import IS_ROOT, wait_until


@pytest.fixture(params=LOOPS)
def aio_run(request):
    """test_aio's: a coroutine run to its end in a new loop of the parameter's kind."""
    factory = uvloop.new_event_loop if request.param == "uvloop" else None

    def run(coro):
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(coro)

    return run


@pytest.fixture(scope="module")
def asession(server, request):
    address = server.address
    if IS_ROOT:
        name, _password = request.getfixturevalue("account")
        address = f"{name}@{server.host}:{server.port}"
    with server.connect(address=address) as s:
        yield pyssh.aio.AsyncSession(s)


def gone(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_cat_echoes_each_line_as_it_is_written(aio_run, asession):
    async def main():
        async with await asession.create_process("cat") as p:
            assert isinstance(p, pyssh.aio.AsyncProcess) and p.returncode is None
            for i in range(20):
                p.stdin.write(b"line %d\n" % i)
                await p.stdin.drain()
                assert await asyncio.wait_for(p.stdout.readline(), 10) == b"line %d\n" % i
            p.stdin.write(b"no newline")
            p.stdin.write_eof()
            assert p.stdin.is_closing() and p.stdin.can_write_eof()
            await p.stdin.wait_closed()
            assert await p.stdout.readline() == b"no newline"
            assert await p.stdout.readline() == b"" and p.stdout.at_eof()
            assert await p.wait() == 0 and p.returncode == 0
            with pytest.raises(ValueError, match="closed stdin"):
                p.stdin.write(b"late")

    aio_run(main())


def test_readexactly_readuntil_and_their_errors_at_eof(aio_run, asession):
    async def main():
        async with await asession.create_process("printf 'abcdef--xyz'; printf E >&2") as p:
            assert await p.stdout.readexactly(3) == b"abc"
            assert await p.stdout.readuntil(b"--") == b"def--"
            with pytest.raises(asyncio.IncompleteReadError) as ei:
                await p.stdout.readexactly(10)
            assert ei.value.partial == b"xyz" and ei.value.expected == 10
            assert await p.stdout.read() == b"" and await p.stdout.readexactly(0) == b""
            with pytest.raises(asyncio.IncompleteReadError):
                await p.stdout.readuntil(b"\n")
            assert await p.stderr.read(100) == b"E"
            assert await p.wait() == 0

    aio_run(main())


@pytest.mark.slow
def test_a_line_longer_than_the_limit(aio_run, asession):
    """As asyncio's StreamReader: readuntil raises LimitOverrunError and keeps the data;
    readline raises ValueError and drops what the buffer held of it; reading goes on."""

    async def main():
        cmd = "head -c 1500 /dev/zero | tr '\\0' x; echo; echo next"
        async with await asession.create_process(cmd, limit=1024) as p:
            with pytest.raises(asyncio.LimitOverrunError):
                await p.stdout.readuntil(b"\n")
            assert len(p._buf[0]) == 1024  # kept, and no more taken than the limit
            with pytest.raises(ValueError, match="limit"):
                await p.stdout.readline()
            assert [line async for line in p.stdout] == [b"x" * 476 + b"\n", b"next\n"]

    aio_run(main())


@pytest.mark.slow  # 30 MB through a slow reader
def test_a_slow_reader_keeps_the_buffer_bounded_and_the_command_waits(aio_run, asession):
    """The reader stops for 0.5 s: the buffer holds the limit, no more, and the command
    (30 MB to write, far more than the window) has not ended: the channel waits.
    Then all 30 MB arrive, the buffer never above the limit."""
    size, limit = 30_000_000, 64 * 1024

    async def main():
        cmd = f"head -c {size} /dev/zero"
        async with await asession.create_process(cmd, limit=limit) as p:
            assert await p.stdout.readexactly(10) == b"\0" * 10
            await asyncio.sleep(0.5)
            held = len(p._buf[0])
            assert 0 < held <= limit and p.returncode is None
            got, most = 10, held
            while chunk := await p.stdout.read(4096):
                got += len(chunk)
                most = max(most, len(p._buf[0]))
            assert got == size and most <= limit
            assert await p.wait() == 0
            return most

    most = aio_run(main())
    print(f"the buffer held {most} bytes at most")


@pytest.mark.slow  # 8 MiB of stdin
def test_stdin_drain_keeps_the_queue_short_and_write_eof_ends_it(aio_run, asession):
    async def main():
        async with await asession.create_process("wc -c") as p:
            worst = 0
            for _ in range(128):
                p.stdin.write(b"y" * 65536)
                await p.stdin.drain()
                worst = max(worst, p._in_len)
            assert worst <= _aioprocess.HIGH_WATER
            p.stdin.close()
            await p.stdin.wait_closed()
            assert (await p.stdout.read()).strip() == str(128 * 65536).encode()
            assert await p.wait() == 0

    aio_run(main())


@pytest.mark.slow
def test_writing_to_a_command_that_ended_is_a_broken_pipe(aio_run, asession):
    async def main():
        async with await asession.create_process("exit 7") as p:
            assert await p.wait() == 7
            with pytest.raises(BrokenPipeError):
                p.stdin.write(b"x")
                await p.stdin.drain()

    aio_run(main())


@pytest.mark.slow
def test_exit_status_terminate_and_send_signal(aio_run, asession):
    async def main():
        async with await asession.create_process("echo $$; exec sleep 30") as p:
            pid = int(await p.stdout.readline())
            p.terminate()
            assert await p.wait(10) == -15 and p.exit_signal == "TERM"
            assert wait_until(lambda: gone(pid), 10)
            p.kill()  # ended: nothing to do
        cmd = "trap 'echo usr1' USR1; echo ready; while :; do sleep 0.05; done"
        async with await asession.create_process(cmd) as p:
            assert await p.stdout.readline() == b"ready\n"
            p.send_signal("SIGUSR1")
            assert await asyncio.wait_for(p.stdout.readline(), 10) == b"usr1\n"
            p.kill()
            assert await p.wait(10) == -9

    aio_run(main())


@pytest.mark.slow
def test_a_terminal_its_size_and_resize(aio_run, asession):
    async def main():
        p = await asession.create_process("stty size; read x; stty size", pty=True, size=(100, 30))
        async with p:
            assert p.stderr is None
            assert await p.stdout.readuntil(b"30 100\r\n")
            p.resize(120, 40)
            p.stdin.write(b"go\n")
            assert await asyncio.wait_for(p.stdout.readuntil(b"40 120\r\n"), 10)
            assert await p.wait(10) == 0
        async with await asession.create_process("true") as p:
            with pytest.raises(pyssh.SSHError, match="no terminal"):
                p.resize(10, 10)

    aio_run(main())


@pytest.mark.slow  # 4 MB each way
def test_communicate_moves_big_input_and_output_at_once(aio_run, asession):
    data = os.urandom(4_000_000)

    async def main():
        async with await asession.create_process("cat; echo done >&2; exit 2") as p:
            out, err = await p.communicate(data)
            assert out == data and err == b"done\n" and p.returncode == 2
        cmd = "echo out; echo err >&2"
        async with await asession.create_process(cmd, stderr=asyncio.subprocess.STDOUT) as p:
            out, err = await p.communicate()
            assert sorted(out.splitlines()) == [b"err", b"out"] and err is None
        async with await asession.create_process(cmd, stderr=asyncio.subprocess.DEVNULL) as p:
            assert await p.communicate() == (b"out\n", None) and p.stderr is None

    aio_run(main())


@pytest.mark.slow
def test_cancelled_reads_and_waits_lose_nothing(aio_run, asession):
    """A task awaiting readexactly, read() to EOF or wait() is cancelled: the bytes
    that had come stay in the buffer, and the process goes on."""

    async def main():
        async with await asession.create_process("cat") as p:
            p.stdin.write(b"12345")
            t = asyncio.ensure_future(p.stdout.readexactly(10))
            await asyncio.sleep(0.2)
            t.cancel()
            with pytest.raises(asyncio.CancelledError):
                await t
            t = asyncio.ensure_future(p.stdout.read())  # to EOF: takes what comes
            await asyncio.sleep(0.1)
            p.stdin.write(b"678")
            await asyncio.sleep(0.2)
            t.cancel()
            with pytest.raises(asyncio.CancelledError):
                await t
            with pytest.raises(pyssh.SSHTimeoutError):
                await p.wait(0.1)
            w = asyncio.ensure_future(p.wait())
            await asyncio.sleep(0.05)
            w.cancel()
            p.stdin.write(b"90")
            assert await asyncio.wait_for(p.stdout.readexactly(10), 10) == b"1234567890"
            p.stdin.write_eof()
            assert await p.wait(10) == 0

    aio_run(main())


@pytest.mark.slow
def test_one_reader_per_stream(aio_run, asession):
    async def main():
        async with await asession.create_process("sleep 5") as p:
            t = asyncio.ensure_future(p.stdout.read(1))
            await asyncio.sleep(0.05)
            with pytest.raises(RuntimeError, match="another task"):
                await p.stdout.readline()
            t.cancel()

    aio_run(main())


def test_closing_ends_the_command_and_the_readers_see_eof(aio_run, asession):
    async def main():
        p = await asession.create_process("echo $$; exec sleep 30")
        pid = int(await p.stdout.readline())
        reader = asyncio.ensure_future(p.stdout.read())
        await asyncio.sleep(0.05)
        p.close()
        p.close()
        await p.wait_closed()
        assert await asyncio.wait_for(reader, 5) == b""
        assert p._channel.closed
        return pid

    pid = aio_run(main())
    assert wait_until(lambda: gone(pid), 10)
    assert asession.session.exec_internal("echo on").stdout == b"on\n"


@pytest.mark.slow  # a heartbeat over 2000 lines each way
def test_both_streams_and_stdin_at_once_keep_the_loop_free(aio_run, asession):
    """Readers of stdout and stderr and a writer, concurrently, on one process; a 1 ms
    heartbeat measures how long the loop is ever held."""
    n = 2000
    cmd = 'while read l; do echo "$l"; echo "e$l" >&2; done'

    async def main():
        gaps = []
        stop = False

        async def beat():
            while not stop:
                t, c = time.perf_counter(), time.thread_time()
                await asyncio.sleep(0.001)
                gaps.append((time.perf_counter() - t - 0.001, time.thread_time() - c))

        async def write(p):
            for i in range(0, n, 20):
                p.stdin.writelines(b"%d\n" % j for j in range(i, i + 20))
                await p.stdin.drain()
            p.stdin.write_eof()

        async with await asession.create_process(cmd) as p:
            hb = asyncio.ensure_future(beat())
            _, out, err = await asyncio.gather(write(p), p.stdout.read(), p.stderr.read())
            stop = True
            await hb
            assert await p.wait() == 0
        assert out.split() == [b"%d" % i for i in range(n)]
        assert err.split() == [b"e%d" % i for i in range(n)]
        return max(g for g, _ in gaps), max(c for _, c in gaps)

    worst, worst_cpu = aio_run(main())
    print(f"heartbeat: {worst * 1000:.1f} ms late at worst, {worst_cpu * 1000:.1f} ms CPU")
    assert worst_cpu < 0.02 * SLOWER, f"the loop's thread was held {worst_cpu * 1000:.0f} ms"


@pytest.mark.slow
def test_a_closed_session_fails_the_readers(aio_run, server):
    async def main():
        s = pyssh.aio.AsyncSession(server.connect())
        p = await s.create_process("sleep 30")
        reader = asyncio.ensure_future(p.stdout.read())
        await asyncio.sleep(0.05)
        s.close()
        with pytest.raises(pyssh.SSHError):
            await asyncio.wait_for(reader, 5)
        p.close()
        await p.wait_closed()

    aio_run(main())


@pytest.mark.slow
def test_bad_arguments_are_refused_before_any_channel(aio_run, asession):
    async def main():
        with pytest.raises(ValueError, match="stderr"):
            await asession.create_process("true", stderr=5)
        with pytest.raises(ValueError, match="limit"):
            await asession.create_process("true", limit=0)
        with pytest.raises(ValueError, match="term"):
            await asession.create_process("true", pty=True, term="")
        with pytest.raises(pyssh.SSHError, match="AcceptEnv"):
            await asession.create_process("true", env={"X": "1"})

    aio_run(main())


@pytest.mark.slow
def test_wait_keeps_the_output_that_comes_meanwhile(aio_run, asession):
    """As Process.wait: a command that prints more than the limit ends while nobody
    reads (wait() lets each stream keep up to 8 MiB); the output is all there after."""

    async def main():
        cmd = "head -c 1000000 /dev/zero; echo err >&2; exit 5"
        async with await asession.create_process(cmd) as p:
            assert await p.wait(10) == 5
            assert len(await p.stdout.read()) == 1000000
            assert await p.stderr.read() == b"err\n"

    aio_run(main())
