"""pyssh.fsspec: the fsspec filesystem against the test sshd: fsspec's own abstract
test suite (copy, get, put, open, pipe), pandas through a pyssh:// URL, ranged reads,
writes that appear whole or not at all, URL parsing."""

import asyncio
import os
import posixpath
import subprocess
import sys

import fsspec  # the test extra's: a missing one fails, never skips
import pandas
import pytest
from fsspec.tests.abstract import (
    AbstractCopyTests,
    AbstractFixtures,
    AbstractGetTests,
    AbstractOpenTests,
    AbstractPipeTests,
    AbstractPutTests,
)

from pyssh.fsspec import SSHFile, SSHFileSystem  # noqa: E402

fsspec.register_implementation("pyssh", SSHFileSystem, clobber=True)


def _options(server):
    return {
        "keyfile": server.client_key,
        "known_hosts": server.known_hosts,
        "config": False,
        "timeout": 20,
    }


@pytest.fixture(scope="module")
def sshfs(server):
    """One filesystem for the module (its session and channels reused)."""
    fs = SSHFileSystem(server.host, port=server.port, username=server.user, **_options(server))
    yield fs
    fs.close()


@pytest.fixture
def remote(tmp_path):
    """A directory for the test (the sshd is on this machine: the same files)."""
    d = tmp_path / "remote"
    d.mkdir()
    return str(d)


def _url(server, path):
    return f"pyssh://{server.user}@{server.host}:{server.port}{path}"


class _Fixtures(AbstractFixtures):
    @pytest.fixture
    def fs(self, sshfs):
        return sshfs

    @pytest.fixture
    def fs_join(self):
        return posixpath.join

    @pytest.fixture
    def fs_path(self, tmp_path):
        d = tmp_path / "fs"
        d.mkdir()
        return str(d)


@pytest.mark.slow
class TestCopy(AbstractCopyTests, _Fixtures):
    pass


@pytest.mark.slow
class TestGet(AbstractGetTests, _Fixtures):
    pass


@pytest.mark.slow
class TestPut(AbstractPutTests, _Fixtures):
    pass


@pytest.mark.slow
class TestOpen(AbstractOpenTests, _Fixtures):
    pass


@pytest.mark.slow
class TestPipe(AbstractPipeTests, _Fixtures):
    pass


def test_urls_are_parsed():
    strip = SSHFileSystem._strip_protocol
    assert strip("pyssh://alice@example.org:2222/data/x.csv") == "/data/x.csv"
    assert strip("pyssh://example.org/") == "/"
    assert strip("pyssh://example.org") == "/"
    assert strip("/a/b/") == "/a/b"
    assert strip("rel/dir/") == "rel/dir"
    assert strip("pyssh://h/a b?c#d") == "/a b?c#d"  # no query or fragment in a path
    kw = SSHFileSystem._get_kwargs_from_urls
    assert kw("pyssh://alice@example.org:2222/x") == {
        "user": "alice",
        "host": "example.org",
        "port": 2222,
    }
    assert kw("pyssh://a%40b:p%3Aw@[::1]:22/x") == {
        "user": "a@b",
        "password": "p:w",
        "host": "::1",
        "port": 22,
    }
    assert kw("pyssh://example.org/x") == {"host": "example.org"}
    with pytest.raises(ValueError, match="port"):
        kw("pyssh://h:99999/x")
    assert SSHFileSystem._parent("/a/b") == "/a"
    assert SSHFileSystem._parent("/a") == "/"
    assert SSHFileSystem._parent("a/b") == "a"
    fs = SSHFileSystem("example.org", user="alice", port=2222, skip_instance_cache=True)
    assert fs.unstrip_protocol("/data/x.csv") == "pyssh://alice@example.org:2222/data/x.csv"
    assert fs._link.session is None  # made without connecting


def test_fsspec_finds_the_filesystem_by_its_installed_entry_point():
    """In a fresh process (nothing registered by hand, as this module does), fsspec
    finds the class through the installed package's fsspec.specs entry point, and a
    pyssh:// URL resolves to it."""
    code = (
        "import fsspec, fsspec.core\n"
        "cls = fsspec.get_filesystem_class('pyssh')\n"
        "print(cls.__module__ + '.' + cls.__name__)\n"
        "print(fsspec.core.split_protocol('pyssh://u@h:22/x')[0])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout.split()
    assert out == ["pyssh.fsspec.SSHFileSystem", "pyssh"]


def test_bad_arguments_are_refused():
    with pytest.raises(TypeError, match="keyfle"):
        SSHFileSystem("example.org", keyfle="x", skip_instance_cache=True)
    with pytest.raises(TypeError, match="disagree"):
        SSHFileSystem("example.org", user="a", username="b", skip_instance_cache=True)
    with pytest.raises(ValueError, match="max_channels"):
        SSHFileSystem("example.org", max_channels=0, skip_instance_cache=True)


def test_fsspec_filesystem_and_open_by_url(server, remote):
    fs = fsspec.filesystem(
        "pyssh", host=server.host, port=server.port, username=server.user, **_options(server)
    )
    assert isinstance(fs, SSHFileSystem)
    with fsspec.open(_url(server, remote + "/u.txt"), "wt", **_options(server)) as f:
        f.write("through a URL\n")
    with open(os.path.join(remote, "u.txt")) as f:
        assert f.read() == "through a URL\n"
    with fsspec.open(_url(server, remote + "/u.txt"), "rb", **_options(server)) as f:
        assert isinstance(f, SSHFile)
        assert f.read() == b"through a URL\n"
    # the same host, port, user and options: the same instance, one session
    assert (
        fsspec.filesystem(
            "pyssh", host=server.host, port=server.port, username=server.user, **_options(server)
        )
        is fs
    )


def test_info_ls_and_errors(sshfs, remote):
    with open(os.path.join(remote, "f.txt"), "wb") as f:
        f.write(b"12345")
    os.mkdir(os.path.join(remote, "d"))
    os.symlink("f.txt", os.path.join(remote, "link"))
    os.symlink("nowhere", os.path.join(remote, "dangling"))
    info = sshfs.info(remote + "/f.txt")
    assert (info["name"], info["size"], info["type"], info["islink"]) == (
        remote + "/f.txt",
        5,
        "file",
        False,
    )
    assert info["mode"] & 0o777 == os.stat(os.path.join(remote, "f.txt")).st_mode & 0o777
    assert info["mtime"] == int(os.stat(os.path.join(remote, "f.txt")).st_mtime)
    link = sshfs.info(remote + "/link")
    assert (link["type"], link["size"], link["islink"]) == ("file", 5, True)
    assert link["destination"] == "f.txt"
    dangling = sshfs.info(remote + "/dangling")
    assert (dangling["type"], dangling["destination"]) == ("link", "nowhere")
    listing = {i["name"]: i for i in sshfs.ls(remote, detail=True)}
    assert sorted(listing) == [remote + "/" + n for n in ("d", "dangling", "f.txt", "link")]
    assert listing[remote + "/d"]["type"] == "directory"
    assert listing[remote + "/link"]["type"] == "file"
    assert sshfs.ls(remote + "/f.txt", detail=False) == [remote + "/f.txt"]
    assert sshfs.exists(remote + "/f.txt") and not sshfs.exists(remote + "/none")
    assert sshfs.modified(remote + "/f.txt").timestamp() == info["mtime"]
    with pytest.raises(FileNotFoundError):
        sshfs.info(remote + "/none")
    with pytest.raises(FileNotFoundError):
        sshfs.ls(remote + "/none")
    with pytest.raises(FileNotFoundError):
        sshfs.cat_file(remote + "/none")
    with pytest.raises(IsADirectoryError):
        sshfs.cat_file(remote + "/d")
    with pytest.raises(FileExistsError):
        sshfs.mkdir(remote + "/d", create_parents=False)
    assert sshfs.checksum(remote + "/f.txt") == sshfs.checksum(remote + "/f.txt")
    assert sshfs.ukey(remote + "/f.txt") != sshfs.ukey(remote + "/link")


def test_ranged_reads(sshfs, remote):
    data = os.urandom(3 << 20)
    with open(os.path.join(remote, "r.bin"), "wb") as f:
        f.write(data)
    path = remote + "/r.bin"
    assert sshfs.cat_file(path) == data
    for start, end in [
        (0, 10),
        (5, 1 << 20),
        (-100, None),
        (-100, -10),
        (10, -10),
        (None, 7),
        ((3 << 20) - 3, (3 << 20) + 100),
        (1 << 22, None),
        (50, 40),
    ]:
        assert sshfs.cat_file(path, start, end) == data[start:end], (start, end)
    with sshfs.open(path, "rb", block_size=1 << 16) as f:
        f.seek(2 << 20)
        assert f.read(1000) == data[2 << 20 : (2 << 20) + 1000]
        f.seek(-10, 2)
        assert f.read() == data[-10:]
        f.seek(12345)
        assert f.read(5) == data[12345:12350]


def test_writes_appear_whole_or_not_at_all(sshfs, remote):
    path = remote + "/w.bin"
    sshfs.pipe_file(path, b"old")
    with sshfs.open(path, "wb", block_size=1 << 16) as f:
        f.write(os.urandom(1 << 18))  # several blocks sent already
        assert sshfs.cat_file(path) == b"old"  # the target unchanged meanwhile
        f.write(b"end")
    assert sshfs.size(path) == (1 << 18) + 3
    with pytest.raises(RuntimeError, match="stop"):
        with sshfs.open(path, "wb", block_size=1 << 16) as f:
            f.write(os.urandom(1 << 18))
            raise RuntimeError("stop")
    assert sshfs.size(path) == (1 << 18) + 3  # the interrupted write left it alone
    assert os.listdir(remote) == ["w.bin"]  # and no temporary file
    with sshfs.open(path, "ab") as f:
        f.write(b"+more")
    assert sshfs.cat_file(path, -7) == b"end+more"[-7:]
    sshfs.pipe_file(remote + "/new/deep/p.txt", b"made with its parents")
    assert sshfs.cat_file(remote + "/new/deep/p.txt") == b"made with its parents"
    mode = os.stat(os.path.join(remote, "new/deep/p.txt")).st_mode & 0o777
    assert mode == 0o666 & ~_umask()


def _umask():
    old = os.umask(0)
    os.umask(old)
    return old


def test_mv_cp_rm(sshfs, remote):
    sshfs.pipe({remote + "/a": b"A", remote + "/b": b"B"})
    sshfs.mv(remote + "/a", remote + "/b")  # replaces
    assert sshfs.cat_file(remote + "/b") == b"A" and not sshfs.exists(remote + "/a")
    sshfs.cp(remote + "/b", remote + "/c")
    assert sshfs.cat_file(remote + "/c") == b"A"
    with pytest.raises(FileNotFoundError):
        sshfs.cp_file(remote + "/none", remote + "/nd/x")
    assert not os.path.exists(os.path.join(remote, "nd"))  # nothing made for it
    sshfs.makedirs(remote + "/t/u")
    sshfs.mv(remote + "/c", remote + "/t")  # into a directory
    assert sshfs.cat_file(remote + "/t/c") == b"A"
    outside = os.path.join(remote, "outside")
    os.mkdir(outside)
    open(os.path.join(outside, "keep"), "w").close()
    os.symlink(outside, os.path.join(remote, "t", "u", "to-outside"))
    with pytest.raises(IsADirectoryError):
        sshfs.rm(remote + "/t")
    sshfs.rm(remote + "/t", recursive=True)
    assert not os.path.exists(os.path.join(remote, "t"))
    assert os.listdir(outside) == ["keep"]  # a link is removed, never followed


@pytest.mark.parametrize("loop_kind", ["asyncio", pytest.param("uvloop", marks=pytest.mark.slow)])
def test_async_use_in_your_own_loop(server, remote, loop_kind):
    async def main():
        fs = SSHFileSystem(
            server.host,
            port=server.port,
            username=server.user,
            asynchronous=True,
            skip_instance_cache=True,
            max_channels=2,
            **_options(server),
        )
        try:
            await asyncio.gather(*(fs._pipe_file(f"{remote}/{i}", b"%d" % i) for i in range(8)))
            got = await asyncio.gather(*(fs._cat_file(f"{remote}/{i}") for i in range(8)))
            assert got == [b"%d" % i for i in range(8)]
            assert len(fs._link.idle) <= 2
        finally:
            fs.close()
        assert fs._link.session is None

    if loop_kind == "uvloop":
        import uvloop  # the test extra's (not on Windows, where only tests/smoke.py runs)

        loop = uvloop.new_event_loop()
        try:
            loop.run_until_complete(main())
        finally:
            loop.close()
    else:
        asyncio.run(main())


@pytest.mark.slow
def test_pandas_reads_a_pyssh_url(server, remote):
    pd = pandas
    csv = os.path.join(remote, "t.csv")
    df = pd.DataFrame({"a": range(1000), "b": [f"row {i}" for i in range(1000)]})
    df.to_csv(csv, index=False)
    got = pd.read_csv(_url(server, csv), storage_options=_options(server))
    assert got.equals(df)
    df.to_csv(_url(server, remote + "/w.csv"), index=False, storage_options=_options(server))
    assert pd.read_csv(os.path.join(remote, "w.csv")).equals(df)


@pytest.mark.slow
def test_close_gc_and_pickle(server, remote):
    import gc
    import pickle

    from conftest import wait_until

    fs = SSHFileSystem(
        server.host,
        port=server.port,
        user=server.user,
        skip_instance_cache=True,
        **_options(server),
    )
    fs.pipe_file(remote + "/p", b"pickled")
    link = fs._link
    session = link.session.session
    assert not session.closed and link.idle
    fs.close()  # in fsspec's IO thread, waited for
    assert session.closed and link.session is None and not link.idle
    assert fs.cat_file(remote + "/p") == b"pickled"  # connected again
    again = pickle.loads(pickle.dumps(fs))  # as dask sends it to its workers
    assert again.cat_file(remote + "/p") == b"pickled"
    with fs.open(remote + "/p", "rb") as f:
        assert pickle.loads(pickle.dumps(f)).read() == b"pickled"
    session = link.session.session
    del fs, again, f
    gc.collect()
    assert wait_until(lambda: session.closed, 5)  # closed in the loop's thread


@pytest.mark.slow
def test_a_cancelled_read_leaves_a_working_pool(server, remote):
    with open(os.path.join(remote, "big"), "wb") as f:
        f.write(os.urandom(64 << 20))

    async def main():
        fs = SSHFileSystem(
            server.host,
            port=server.port,
            user=server.user,
            asynchronous=True,
            skip_instance_cache=True,
            max_channels=1,
            **_options(server),
        )
        try:
            await fs._cat_file(remote + "/big", 0, 10)
            task = asyncio.ensure_future(fs._cat_file(remote + "/big"))
            await asyncio.sleep(0.02)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert not fs._link.idle  # its channel was not put back
            assert (
                await fs._cat_file(remote + "/big", -5)
                == open(os.path.join(remote, "big"), "rb").read()[-5:]
            )
        finally:
            fs.close()

    asyncio.run(main())


def test_open_async(server, remote):
    async def main():
        fs = SSHFileSystem(
            server.host,
            port=server.port,
            user=server.user,
            asynchronous=True,
            skip_instance_cache=True,
            **_options(server),
        )
        try:
            async with await fs.open_async(remote + "/a.bin", "wb") as f:
                await f.write(b"0123456789")
                assert not os.path.exists(os.path.join(remote, "a.bin"))  # not yet
            async with await fs.open_async(remote + "/a.bin", "rb") as f:
                assert f.size == 10
                f.seek(3)
                assert await f.read(4) == b"3456"
                assert await f.read() == b"789"
            with pytest.raises(RuntimeError):
                async with await fs.open_async(remote + "/a.bin", "wb", block_size=4) as f:
                    await f.write(b"lost data")  # sent to the temporary file...
                    assert f.offset == 9
                    raise RuntimeError("stop")
            assert await fs._cat_file(remote + "/a.bin") == b"0123456789"  # ...not kept
            assert os.listdir(remote) == ["a.bin"]
            async with await fs.open_async(remote + "/a.bin", "ab") as f:
                await f.write(b"+")
            assert await fs._cat_file(remote + "/a.bin", -2) == b"9+"
            with pytest.raises(ValueError, match="mode"):
                await fs.open_async(remote + "/a.bin", "xb")
        finally:
            fs.close()

    asyncio.run(main())
