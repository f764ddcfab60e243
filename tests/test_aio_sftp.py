"""pyssh.aio's SFTP: the file objects (AsyncSFTPFile) and the os-like operations of
AsyncSFTP, against the test sshd. The operations run the blocking SFTP's own flows,
so the tests run the same calls both ways (`both`: a blocking SFTP behind awaitable
methods, or an AsyncSFTP) and expect the same results and the same typed errors."""

import asyncio
import errno
import io
import os

import pytest

import pyssh
import pyssh.aio

KIB, MIB = 1024, 1024 * 1024


def _kw(server, **kw):
    return {
        "keyfile": server.client_key,
        "known_hosts": server.known_hosts,
        "config": False,
        "timeout": 20,
        **kw,
    }


class Blocking:
    """A blocking pyssh.SFTP with AsyncSFTP's shape: each method a coroutine (run at
    once, in the loop's thread), scandir/iterdir/walk async iterators."""

    def __init__(self, sftp):
        self.sftp = sftp

    def __getattr__(self, name):
        fn = getattr(self.sftp, name)
        if name == "limits":  # nothing to wait for: a plain method both ways
            return fn
        if name in ("scandir", "iterdir", "walk"):

            async def each(*args, **kwargs):
                for x in fn(*args, **kwargs):
                    yield x

            return each

        async def call(*args, **kwargs):
            return fn(*args, **kwargs)

        return call


def both(server, api, body, timeout=20):
    """Run `body(sftp)` (a coroutine function) on a blocking SFTP or an AsyncSFTP."""

    async def aio():
        async with await pyssh.aio.connect(server.address, **_kw(server, timeout=timeout)) as s:
            async with await s.sftp() as f:
                return await body(f)

    if api == "aio":
        return asyncio.run(aio())
    with pyssh.connect(server.address, **_kw(server, timeout=timeout)) as s, s.sftp() as f:
        return asyncio.run(body(Blocking(f)))


def run(server, body, timeout=20):
    return both(server, "aio", body, timeout)


def remote_file(area, size, name="f.bin"):
    data = os.urandom(size)
    path = area / "remote" / name
    path.write_bytes(data)
    return str(path), data


# ---- file objects ----------------------------------------------------------------------


def test_read_seek_and_positioned_reads(server, area):
    rpath, data = remote_file(area, 300 * KIB + 7)

    async def body(sftp):
        async with await sftp.open(rpath, "rb") as f:
            assert isinstance(f, pyssh.aio.AsyncSFTPFile) and f.name == rpath
            assert await f.read(10) == data[:10] and f.tell() == 10
            # a positioned read: the position stays
            assert await f.read(1000, offset=200 * KIB) == data[200 * KIB : 200 * KIB + 1000]
            assert f.tell() == 10
            assert await f.read(5) == data[10:15]
            assert await f.read(-1, offset=100) == data[100:]
            assert await f.read(100, offset=len(data) - 10) == data[-10:]  # short at the end
            assert await f.read(100, offset=len(data) + 5) == b""
            assert await f.seek(-7, io.SEEK_END) == len(data) - 7
            assert await f.read(100) == data[-7:]
            assert await f.read(100) == b"" and await f.read() == b""
            assert await f.seek(3) == 3 and await f.seek(4, io.SEEK_CUR) == 7
            assert await f.read() == data[7:]
            assert (await f.stat()).st_size == len(data)
            with pytest.raises(OSError) as e:
                await f.seek(-1)
            assert e.value.errno == errno.EINVAL
            with pytest.raises(io.UnsupportedOperation):
                await f.write(b"x")
        assert f.closed
        with pytest.raises(ValueError, match="closed file"):
            await f.read()
        await f.close()  # again: nothing

    run(server, body)


@pytest.mark.slow
def test_big_reads_are_whole_and_pipelined(server, area):
    """A read of 20 MiB (more than the 8 MiB read-ahead) and one past the end."""
    rpath, data = remote_file(area, 20 * MIB + 123)

    async def body(sftp):
        async with await sftp.open(rpath, "rb") as f:
            assert await f.read(20 * MIB) == data[: 20 * MIB]
            assert await f.read(1 << 40) == data[20 * MIB :]  # memory is what arrives
            assert await f.read(30 * MIB, offset=5) == data[5:]

    run(server, body)


def test_lines_binary_and_text(server, area):
    text = "première ligne\nzweite Zeile\r\ndrittes\n" + "é" * 50000 + "\nlast, no end"
    path = area / "remote" / "lines.txt"
    path.write_bytes(text.encode("utf-8"))

    async def body(sftp):
        async with await sftp.open(str(path), "rb") as f:
            lines = [line async for line in f]
        assert lines == text.encode().splitlines(keepends=True)
        async with await sftp.open(str(path)) as f:  # text, universal newlines
            assert await f.readline() == "première ligne\n"
            assert f.tell() == len("première ligne\n".encode())
            rest = await f.readlines()
        assert rest == ["zweite Zeile\n", "drittes\n", "é" * 50000 + "\n", "last, no end"]
        async with await sftp.open(str(path), "r", newline="") as f:
            await f.readline()
            assert await f.readline() == "zweite Zeile\r\n"
        async with await sftp.open(str(path), encoding="utf-8") as f:
            # 3 bytes at a time: the "é" split between two reads is whole in the second
            await f.seek(len("première ligne\nzweite Zeile\r\ndrittes\n".encode()))
            got = "".join([await f.read(3) for _ in range(10)])
            assert got == "é" * 15
        async with await sftp.open(str(path), "rt", encoding="latin-1") as f:
            assert await f.read(5) == "premi"
        # a "\r\n" split between two fetches ahead (the first is 4 x max_read)
        edge = 4 * sftp.sftp.max_read
        async with await sftp.open(str(path) + "2", "wb") as f:
            await f.write(b"x" * (edge - 1) + b"\r\nnext\rline\r\n")
        async with await sftp.open(str(path) + "2", "r", newline="\r\n") as f:
            assert [len(line) async for line in f] == [edge + 1, 11]

    run(server, body)


# the same sequence of writes, seeks, truncates and reads, on a remote file opened
# through the loop and on a local file: the same results and contents
_SEQUENCES = {
    "wb": [("write", b"hello world"), ("seek", 6), ("write", b"W"), ("tell",),
           ("truncate", 8), ("seek", 0, 2), ("write", b"!"), ("pwrite", b"HE", 0), ("tell",)],
    "ab": [("write", b"more"), ("tell",), ("seek", 0), ("write", b"end"), ("tell",)],
    "r+b": [("read", 3), ("write", b"XY"), ("read", 2), ("seek", -2, 2), ("write", b"ZZZ"),
            ("seek", 0), ("read", -1), ("truncate", None), ("tell",), ("pread", 4, 1)],
    "w+b": [("write", b"abcdef"), ("seek", 2), ("read", 2), ("write", b"Q"), ("seek", 0),
            ("read", -1), ("pwrite", b"zz", 10), ("read", -1), ("tell",)],
    "xb": [("write", b"new"), ("tell",), ("pwrite", b"N", 0)],
    "w": [("write", "ligne é\n"), ("tell",), ("write", "two\n"), ("seek", 0, 2), ("tell",)],
}  # fmt: skip


async def _apply_remote(f, step):
    op, *args = step
    if op == "pread":
        return await f.read(args[0], offset=args[1])
    if op == "pwrite":
        return await f.write(args[0], offset=args[1])
    if op == "tell":
        return f.tell()
    return await getattr(f, op)(*args)


def _apply_local(f, step):
    op, *args = step
    if op == "pread":
        return os.pread(f.fileno(), args[0], args[1])
    if op == "pwrite":
        return os.pwrite(f.fileno(), args[0], args[1])
    if op == "truncate" and args == [None]:
        return f.truncate()
    return getattr(f, op)(*args)


def test_writes_as_a_local_file(server, area):
    """Every mode's sequence (one connection for all)."""
    start = b"0123456789abcdef"
    for mode in _SEQUENCES:
        if "x" not in mode:
            (area / "remote" / f"seq-{mode}").write_bytes(start)
            (area / f"seq-{mode}").write_bytes(start)

    async def body(sftp):
        got = {}
        for mode, steps in _SEQUENCES.items():
            async with await sftp.open(str(area / "remote" / f"seq-{mode}"), mode) as f:
                got[mode] = [await _apply_remote(f, step) for step in steps]
        return got

    remote = run(server, body)
    for mode, steps in _SEQUENCES.items():
        with open(area / f"seq-{mode}", mode, buffering=0 if "b" in mode else -1) as f:
            local = [_apply_local(f, step) for step in steps]
        assert remote[mode] == local, mode
        assert (area / "remote" / f"seq-{mode}").read_bytes() == (
            area / f"seq-{mode}"
        ).read_bytes(), mode


@pytest.mark.slow
def test_open_errors_are_the_blocking_ones(server, area):
    (area / "remote" / "there").write_bytes(b"x")
    (area / "remote" / "dir").mkdir()

    async def body(sftp):
        out = []
        for path, mode, kw in [
            ("missing", "rb", {}),
            ("there", "xb", {}),
            ("dir", "rb", {}),
            ("dir", "wb", {}),
            ("there", "rq", {}),
            ("there", "rb", {"encoding": "utf-8"}),
            ("there", "r", {"newline": "x"}),
        ]:
            try:
                f = await sftp.open(str(area / "remote" / path), mode, **kw)
            except (pyssh.SFTPError, ValueError) as e:
                out.append((type(e), getattr(e, "errno", None)))
            else:
                await f.close() if asyncio.iscoroutinefunction(f.close) else f.close()
                out.append(None)
        return out

    aio = both(server, "aio", body)
    assert aio == both(server, "blocking", body)
    assert aio[:4] == [
        (pyssh.SFTPFileNotFoundError, errno.ENOENT),
        (pyssh.SFTPFileExistsError, errno.EEXIST),
        (pyssh.SFTPIsADirectoryError, errno.EISDIR),
        (pyssh.SFTPIsADirectoryError, errno.EISDIR),
    ]
    assert aio[4:] == [(ValueError, None)] * 3


def test_fsync_and_closed_channel(server, area):
    rpath = str(area / "remote" / "synced")

    async def body(sftp):
        f = await sftp.open(rpath, "wb")
        await f.write(b"data")
        await f.fsync()
        assert await f.truncate() == 4
        await f.close()
        g = await sftp.open(rpath, "rb")
        sftp.close()
        with pytest.raises(pyssh.SFTPError, match="closed"):
            await g.read()
        await g.close()  # the channel is gone: nothing to send

    run(server, body)
    assert open(rpath, "rb").read() == b"data"


@pytest.mark.slow
def test_a_cancelled_read_leaves_the_file_usable(server, area):
    """A read of 64 MiB cancelled midway: the position is where it was, the next
    read gets the right bytes, the channel and the session go on."""
    rpath, data = remote_file(area, 64 * MIB)

    async def body(sftp):
        async with await sftp.open(rpath, "rb") as f:
            assert await f.read(100) == data[:100]
            for size, offset in ((-1, None), (64 * MIB, 1000)):
                task = asyncio.ensure_future(f.read(size, offset=offset))
                await asyncio.sleep(0.05)
                assert not task.done()
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                assert f.tell() == 100
            assert await f.read(1000) == data[100:1100]
            assert await f.read(100, offset=50 * MIB) == data[50 * MIB : 50 * MIB + 100]
        assert await sftp.stat(rpath)

    run(server, body)


@pytest.mark.slow
def test_a_cancelled_write_leaves_what_the_server_got(server, area):
    """As with the blocking open() (and the builtin one): a write goes to the file
    itself, so a cancelled one leaves a prefix of it there; the file stays usable
    and closes, the position did not move."""
    rpath = area / "remote" / "cut"
    data = os.urandom(64 * MIB)

    async def body(sftp):
        async with await sftp.open(str(rpath), "wb") as f:
            task = asyncio.ensure_future(f.write(data))
            await asyncio.sleep(0.05)
            assert not task.done()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert f.tell() == 0
            assert await f.write(b"head") == 4
        return (await sftp.stat(str(rpath))).st_size

    size = run(server, body)
    got = rpath.read_bytes()
    assert len(got) == size and 4 <= size < len(data)
    assert got[:4] == b"head" and got[4:] == data[4:size]


@pytest.mark.slow
def test_a_cancelled_task_in_async_with_closes_the_file(server, area):
    rpath, data = remote_file(area, 32 * MIB)

    async def body(sftp):
        async def reader():
            async with await sftp.open(rpath, "rb") as f:
                await f.read()

        task = asyncio.ensure_future(reader())
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # the handle was closed: the channel takes the next operation at once
        async with await sftp.open(rpath, "rb") as f:
            return await f.read(10)

    assert run(server, body) == data[:10]


def _hostile(hostile_sftp, scenario, body):
    hostile_sftp(scenario, lambda f: None)  # the scenario for the next connection
    return run(hostile_sftp.server, body)


@pytest.mark.slow
def test_hostile_data_longer_than_asked_for(hostile_sftp, area):
    rpath, _ = remote_file(area, 100 * KIB)

    async def body(sftp):
        f = await sftp.open(rpath, "rb")
        with pytest.raises(pyssh.SFTPError) as e:
            await f.read(50 * KIB, offset=10)
        return e.value

    e = _hostile(hostile_sftp, {"data_extra": 10}, body)
    assert e.errno == errno.EPROTO and "longer than asked for" in str(e)


@pytest.mark.slow
def test_hostile_early_eof_and_wrong_ids(hostile_sftp, area):
    rpath, data = remote_file(area, 300 * KIB)

    async def read_all(sftp):
        async with await sftp.open(rpath, "rb") as f:
            return await f.read()

    assert _hostile(hostile_sftp, {"eof_at": 100 * KIB}, read_all) == data[: 100 * KIB]

    async def wrong(sftp):
        with pytest.raises(pyssh.SFTPError) as e:
            await sftp.open(rpath, "rb")
        return e.value

    e = _hostile(hostile_sftp, {"wrong_id": True}, wrong)
    assert e.errno == errno.EPROTO and "a request that was not made" in str(e)


# ---- os-like operations, blocking and aio --------------------------------------------


async def _errors(calls):
    """(exception type, errno) of each awaited call (None: it succeeded)."""
    out = []
    for call in calls:
        try:
            await call()
        except (pyssh.SFTPError, OSError, ValueError) as e:
            out.append((type(e), getattr(e, "errno", None)))
        else:
            out.append(None)
    return out


@pytest.mark.parametrize("api", [pytest.param("blocking", marks=pytest.mark.slow), "aio"])
def test_os_operations(server, area, api):
    base = area / "remote" / api
    base.mkdir()
    (base / "f").write_bytes(b"0123456789")
    b = str(base)

    async def body(sftp):
        await sftp.makedirs(f"{b}/x/y/z")
        await sftp.makedirs(f"{b}/x/y", exist_ok=True)
        await sftp.symlink("f", f"{b}/ln")
        await sftp.link(f"{b}/f", f"{b}/hard")
        await sftp.utime(f"{b}/f", (1_000_000, 2_000_000))
        st = await sftp.stat(f"{b}/f")
        await sftp.chown(f"{b}/f", -1, st.st_gid)
        await sftp.fsync(f"{b}/f")
        await sftp.copy(f"{b}/f", f"{b}/copied")
        names = sorted([a.filename async for a in sftp.scandir(b)])
        return {
            "names": names,
            "iter": sorted([a.filename async for a in sftp.iterdir(b)]),
            "is": [
                await sftp.is_file(f"{b}/f"),
                await sftp.is_file(f"{b}/x"),
                await sftp.is_file(f"{b}/nope"),
                await sftp.is_symlink(f"{b}/ln"),
                await sftp.is_symlink(f"{b}/f"),
                await sftp.is_symlink(f"{b}/nope"),
                await sftp.exists(f"{b}/x/y/z"),
                await sftp.is_dir(f"{b}/x/y/z"),
            ],
            "readlink": await sftp.readlink(f"{b}/ln"),
            "times": (st.st_atime, st.st_mtime),
            "bsize": (await sftp.statvfs(b)).f_bsize > 0,
            "limits": sftp.limits().max_read_length > 0,
            "errors": await _errors(
                [
                    lambda: sftp.makedirs(f"{b}/x/y"),
                    lambda: sftp.readlink(f"{b}/f"),
                    lambda: sftp.readlink(f"{b}/nope"),
                    lambda: sftp.symlink("f", f"{b}/ln"),
                    lambda: sftp.utime(f"{b}/nope", None),
                    lambda: sftp.chown(f"{b}/f", -2, 0),
                    lambda: sftp.statvfs(f"{b}/nope"),
                    lambda: sftp.copy(f"{b}/x", f"{b}/x2"),
                    lambda: sftp.fsync(f"{b}/nope"),
                    lambda: sftp.link(f"{b}/nope", f"{b}/l2"),
                    lambda: sftp.rmtree(f"{b}/ln"),
                    lambda: sftp.rmtree(f"{b}/f"),
                ]
            ),
        }

    got = both(server, api, body)
    assert got["names"] == got["iter"] == ["copied", "f", "hard", "ln", "x"]
    assert got["is"] == [True, False, False, True, False, False, True, True]
    assert got["readlink"] == "f" and got["times"] == (1_000_000, 2_000_000)
    assert got["bsize"] and got["limits"]
    assert (base / "copied").read_bytes() == b"0123456789"
    assert os.stat(base / "hard").st_ino == os.stat(base / "f").st_ino
    assert got["errors"] == [
        (pyssh.SFTPFileExistsError, errno.EEXIST),
        (pyssh.SFTPError, errno.EINVAL),
        (pyssh.SFTPFileNotFoundError, errno.ENOENT),
        (pyssh.SFTPError, errno.EIO),  # OpenSSH says "failure" for an existing link
        (pyssh.SFTPFileNotFoundError, errno.ENOENT),
        (ValueError, None),
        (pyssh.SFTPFileNotFoundError, errno.ENOENT),
        (pyssh.SFTPIsADirectoryError, errno.EISDIR),
        (pyssh.SFTPFileNotFoundError, errno.ENOENT),
        (pyssh.SFTPFileNotFoundError, errno.ENOENT),
        (pyssh.SFTPError, errno.ENOTDIR),
        (pyssh.SFTPError, errno.ENOTDIR),
    ]


def _tree(root):
    """a/ (b/ (c.txt, .hidden), d.txt), e.txt, ln -> a (a link to a directory)."""
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "c.txt").write_text("c")
    (root / "a" / "b" / ".hidden").write_text("h")
    (root / "a" / "d.txt").write_text("d")
    (root / "e.txt").write_text("e")
    os.symlink("a", root / "ln")


@pytest.mark.slow
@pytest.mark.parametrize("api", ["blocking", "aio"])
def test_walk_glob_rmtree(server, area, api):
    root = area / "remote" / api
    _tree(root)
    outside = area / "remote" / f"{api}-outside"
    outside.mkdir()
    (outside / "keep").write_text("k")
    os.symlink(outside, root / "a" / "out")
    r = str(root)

    async def body(sftp):
        walked = [w async for w in sftp.walk(r)]
        pruned = []
        async for top, dirs, _files in sftp.walk(r):
            pruned.append(top)
            dirs[:] = [d for d in dirs if d != "b"]  # pruned in place, as os.walk
        globs = {
            p: await sftp.glob(f"{r}/{p}")
            for p in ("*.txt", "*/*.txt", "**/*.txt", "a/b/*", "a/b/.*", "nope*", "a")
        }
        errors = await _errors(
            [
                lambda: sftp.walk(f"{r}/nope").__anext__(),
                lambda: sftp.scandir(f"{r}/e.txt").__anext__(),
            ]
        )
        await sftp.rmtree(f"{r}/a")
        return walked, pruned, globs, errors, await sftp.listdir(r)

    walked, pruned, globs, errors, left = both(server, api, body)
    assert walked == [
        (r, ["a"], ["e.txt", "ln"]),
        (f"{r}/a", ["b"], ["d.txt", "out"]),
        (f"{r}/a/b", [], [".hidden", "c.txt"]),
    ]
    assert pruned == [r, f"{r}/a"]
    assert globs == {
        "*.txt": [f"{r}/e.txt"],
        "*/*.txt": [f"{r}/a/d.txt", f"{r}/ln/d.txt"],
        "**/*.txt": [f"{r}/a/b/c.txt", f"{r}/a/d.txt", f"{r}/e.txt"],
        "a/b/*": [f"{r}/a/b/c.txt"],
        "a/b/.*": [f"{r}/a/b/.hidden"],
        "nope*": [],
        "a": [f"{r}/a"],
    }
    assert errors == [
        (pyssh.SFTPFileNotFoundError, errno.ENOENT),
        (pyssh.SFTPNotADirectoryError, errno.ENOTDIR),
    ]
    assert left == ["e.txt", "ln"] and (outside / "keep").exists()


def _open_in_sshd(path):
    """How many file descriptors of this user's processes (the test sshd's
    sftp-server among them) are open on `path`."""
    n = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                n += os.readlink(f"/proc/{pid}/fd/{fd}") == path
            except OSError:
                pass
    return n


@pytest.mark.slow
def test_scandir_given_up_closes_its_handle(server, area):
    """An async for over scandir left early: the listing's handle is closed when the
    iterator is (aclose), and the channel goes on."""
    root = area / "remote" / "many"
    root.mkdir()
    for i in range(300):
        (root / f"f{i:03}").write_bytes(b"")

    async def body(sftp):
        it = sftp.scandir(str(root))
        first = await it.__anext__()
        held = _open_in_sshd(str(root))
        await it.aclose()
        n = len(await sftp.listdir(area / "remote"))  # a round trip: the CLOSE was done
        return first.filename, held, _open_in_sshd(str(root)), n

    name, held, after, n = run(server, body)
    assert name.startswith("f") and (held, after) == (1, 0) and n == 1


def test_operations_started_together_take_turns(server, area):
    """One channel, many operations at once (asyncio.gather, files' reads among
    them): each waits its turn rather than finding the channel in use."""
    rpath, data = remote_file(area, 100 * KIB)

    async def body(sftp):
        f = await sftp.open(rpath, "rb")
        got = await asyncio.gather(
            *[f.read(1000, offset=i * 1000) for i in range(20)],
            *[sftp.stat(rpath) for _ in range(5)],
        )
        await f.close()
        return got

    got = run(server, body)
    assert got[:20] == [data[i * 1000 : (i + 1) * 1000] for i in range(20)]
    assert all(st.st_size == len(data) for st in got[20:])
