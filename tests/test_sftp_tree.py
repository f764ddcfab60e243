"""SFTP upload() and download() of trees of small files: many files in flight at
once (pyssh/_sftptree.py), with the results, errors, progress and safety of one
file at a time. Against the real sshd; the server runs on this machine, so remote
paths are local paths the tests can check and change directly."""

import os
import stat

import pytest

import pyssh


@pytest.fixture
def session(server):
    with server.connect() as s:
        yield s


@pytest.fixture
def sftp(session):
    with session.sftp(timeout=60) as f:
        yield f


@pytest.fixture
def area(tmp_path):
    os.chmod(tmp_path, 0o755)
    for name in ("local", "remote", "back"):
        (tmp_path / name).mkdir()
    return tmp_path


class Counting:
    """sftp._c, counting the calls that wait for the server (round trips)."""

    WAITING = {"batch", "request", "read", "write", "upload", "download"}

    def __init__(self, c):
        self._inner = c
        self.waits = 0

    def __getattr__(self, name):
        if name in self.WAITING:
            self.waits += 1
        return getattr(self._inner, name)


def counted(sftp, work):
    c = Counting(sftp._c)
    sftp._c = c
    try:
        work()
    finally:
        sftp._c = c._inner
    return c.waits


def make_tree(root, sftp):
    """A few hundred small files in nested directories, with the edge cases."""
    files = {}
    for d in ("a", "a/b", "a/b/c", "d", "e"):
        (root / d).mkdir(parents=True)
    (root / "empty-dir").mkdir()
    for i in range(240):
        rel = ("a", "a/b", "a/b/c", "d", "e", ".")[i % 6] + f"/f{i:03d}"
        files[rel] = os.urandom(i * 37 % 5000)
    files["a/empty"] = b""
    files["d/exact-write"] = os.urandom(sftp.max_write)
    files["d/exact-read"] = os.urandom(sftp.max_read)
    files["d/bigger"] = os.urandom(sftp.max_write + 1)
    for rel, data in files.items():
        (root / rel).write_bytes(data)
    os.chmod(root / "a/f000", 0o640)
    os.chmod(root / "a/b/f001", 0o755)
    os.chmod(root / "e", 0o750)
    for n, rel in enumerate(sorted(files)):
        os.utime(root / rel, (1_600_000_000 + n, 1_500_000_000 + n))
    return files


def walk(root):
    """{relative path: (kind, mode, mtime, bytes)} of a tree."""
    out = {}
    for d, dirs, names in os.walk(root):
        for n in dirs + names:
            p = os.path.join(d, n)
            st = os.lstat(p)
            data = open(p, "rb").read() if stat.S_ISREG(st.st_mode) else None
            out[os.path.relpath(p, root)] = (
                stat.S_IFMT(st.st_mode),
                stat.S_IMODE(st.st_mode),
                int(st.st_mtime) if data is not None else None,
                data,
            )
    return out


@pytest.mark.parametrize("preserve", [True, False])
def test_a_tree_round_trips(sftp, area, preserve):
    """Up and back down: the same names, bytes and modes (times with preserve); the
    progress callable told of each file once, in the order of the walk; no
    temporary file left anywhere."""
    src = area / "local" / "tree"
    src.mkdir()
    make_tree(src, sftp)
    seen = []
    up = sftp.upload(
        src,
        to=str(area / "remote"),
        verbose=False,
        preserve=preserve,
        progress=lambda p, m, t: seen.append((p, m, t)),
    )
    assert up == [str(area / "remote" / "tree")]
    down = sftp.download(
        str(area / "remote" / "tree"), to=area / "back", verbose=False, preserve=preserve
    )
    assert down == [str(area / "back" / "tree")]
    a, b, r = walk(src), walk(area / "back" / "tree"), walk(area / "remote" / "tree")
    assert sorted(a) == sorted(b) == sorted(r)
    for rel in a:
        kind, mode, mtime, data = a[rel]
        assert b[rel][0] == kind and b[rel][3] == data and r[rel][3] == data, rel
        assert r[rel][1] == mode, rel  # uploads keep modes
        if preserve:
            assert b[rel][1] == mode and (mtime is None or b[rel][2] == r[rel][2] == mtime), rel
    assert not [p for p in area.rglob("*") if ".pyssh-part" in p.name]
    order = [str(src / rel) for rel in sorted_walk(src)]
    assert [p for p, m, t in seen] == order
    assert all(m == t for p, m, t in seen)


def sorted_walk(root, rel=""):
    """The files of a tree in upload()'s order: names sorted, depth first."""
    for name in sorted(os.listdir(os.path.join(root, rel))):
        r = os.path.join(rel, name) if rel else name
        if os.path.isdir(os.path.join(root, r)):
            yield from sorted_walk(root, r)
        else:
            yield r


def data_of(root):
    return {rel: (kind, data) for rel, (kind, _mode, _mtime, data) in walk(root).items()}


@pytest.mark.slow
def test_a_tree_of_small_files_takes_few_round_trips(sftp, area):
    """300 files in three directories: a fraction of a round trip each, both ways."""
    src = area / "local" / "many"
    for d in ("x", "y", "z"):
        (src / d).mkdir(parents=True)
        for i in range(100):
            (src / d / f"{i:03d}").write_bytes(os.urandom(1000))
    up = counted(sftp, lambda: sftp.upload(src, to=str(area / "remote"), verbose=False))
    down = counted(
        sftp, lambda: sftp.download(str(area / "remote" / "many"), to=area / "back", verbose=False)
    )
    assert up < 300 / 5 and down < 300 / 5, (up, down)
    assert data_of(src) == data_of(area / "back" / "many")
    # again, into the tree that is there now: its MKDIRs fail, and that is no error
    again = counted(sftp, lambda: sftp.upload(src, to=str(area / "remote"), verbose=False))
    assert again < 300 / 5, again


def test_a_tree_of_many_directories_is_listed_a_level_at_a_time(sftp, area):
    """40 directories of 2 files, two levels deep: their listings go in batches, a
    few round trips per level, not three per directory (OPENDIR, READDIR, CLOSE)."""
    src = area / "remote" / "dirs"
    for i in range(8):
        for j in range(5):
            d = src / f"d{i}" / f"e{j}"
            d.mkdir(parents=True)
            (d / "a").write_bytes(os.urandom(100))
            (d / "b").write_bytes(b"")
    down = counted(sftp, lambda: sftp.download(str(src), to=area / "back", verbose=False))
    assert down < 30, down  # 3 per directory would be 144; 4 per level, and the files
    assert data_of(src) == data_of(area / "back" / "dirs")


def test_an_upload_that_fails_in_a_batch(sftp, area):
    """A directory where a file goes: the error is put()'s for that file; the files
    before it are up, those after it untouched (not even truncated)."""
    src = area / "local" / "t"
    src.mkdir()
    for i in range(40):
        (src / f"f{i:02d}").write_bytes(b"new %d" % i)
    dst = area / "remote" / "t"
    dst.mkdir()
    (dst / "f10").mkdir()  # in the first batch, with files after it
    for i in range(11, 40):
        (dst / f"f{i:02d}").write_bytes(b"old")
    with pytest.raises(pyssh.SFTPError) as alone:
        sftp.put(src / "f10", str(dst / "f10"))
    with pytest.raises(pyssh.SFTPError) as e:
        sftp.upload(src, to=str(area / "remote"), verbose=False)
    assert type(e.value) is type(alone.value) and str(e.value) == str(alone.value)
    assert e.value.filename == str(dst / "f10")
    assert all((dst / f"f{i:02d}").read_bytes() == b"new %d" % i for i in range(10))
    assert all((dst / f"f{i:02d}").read_bytes() == b"old" for i in range(11, 40))


def test_an_upload_with_a_file_where_a_directory_goes(sftp, area):
    """A MKDIR that fails where no directory is: mkdir()'s error, after the files
    before it."""
    src = area / "local" / "t"
    (src / "b").mkdir(parents=True)
    (src / "a").write_bytes(b"a")
    (src / "b" / "x").write_bytes(b"x")
    (area / "remote" / "t").mkdir()
    (area / "remote" / "t" / "b").write_bytes(b"in the way")
    with pytest.raises(pyssh.SFTPError) as alone:
        sftp.mkdir(str(area / "remote" / "t" / "b"), 0o700)
    with pytest.raises(pyssh.SFTPError) as e:
        sftp.upload(src, to=str(area / "remote"), verbose=False)
    assert type(e.value) is type(alone.value) and str(e.value) == str(alone.value)
    assert (area / "remote" / "t" / "a").read_bytes() == b"a"


def test_a_download_that_fails_in_a_batch(sftp, area):
    """A remote file gone between the listing and its OPEN: its own error; the
    files before it are down, nothing after it, no temporary file."""
    src = area / "remote" / "t"
    src.mkdir()
    for i in range(40):
        (src / f"f{i:02d}").write_bytes(b"data %d" % i)

    def remove(path, moved, total):
        if path.endswith("f00"):  # listed already; not yet opened
            os.unlink(src / "f25")

    with pytest.raises(pyssh.SFTPFileNotFoundError) as e:
        sftp.download(str(src), to=area / "back", verbose=False, progress=remove)
    assert e.value.filename == str(src / "f25")
    got = sorted(os.listdir(area / "back" / "t"))
    assert got == [f"f{i:02d}" for i in range(25)]
    assert all((area / "back" / "t" / n).read_bytes() == (src / n).read_bytes() for n in got)


def test_a_download_with_a_directory_in_the_way(sftp, area):
    src = area / "remote" / "t"
    src.mkdir()
    for i in range(30):
        (src / f"f{i:02d}").write_bytes(b"data %d" % i)
    (area / "back" / "t" / "f12").mkdir(parents=True)
    with pytest.raises(IsADirectoryError):
        sftp.download(str(src), to=area / "back", verbose=False)
    got = sorted(os.listdir(area / "back" / "t"))
    assert got == [f"f{i:02d}" for i in range(13)]  # f12: the directory, left alone
    assert not [p for p in area.rglob("*") if ".pyssh-part" in p.name]


def test_files_that_change_between_listing_and_reading(sftp, area):
    """Files listed with one size and read with another (grown, shrunk, grown
    past one READ): each comes down as it is when read, as one by one."""
    src = area / "remote" / "t"
    src.mkdir()
    for i in range(60):
        (src / f"f{i:02d}").write_bytes(b"%d" % i * 100)
    changed = {
        "f40": os.urandom(5000),
        "f41": b"short",
        "f42": b"",
        "f43": os.urandom(sftp.max_read + 10),
    }

    def change(path, moved, total):
        if path.endswith("f00"):  # listed already; not yet read
            for name, data in changed.items():
                (src / name).write_bytes(data)

    sftp.download(str(src), to=area / "back", verbose=False, progress=change)
    for i in range(60):
        n = f"f{i:02d}"
        assert (area / "back" / "t" / n).read_bytes() == (src / n).read_bytes(), n
    assert (area / "back" / "t" / "f43").read_bytes() == changed["f43"]


def test_a_tree_from_a_server_that_reads_short(hostile_sftp, tmp_path):
    """A server that sends less than asked (allowed): batched reads fall back to
    reading file by file, and every byte comes down."""
    os.chmod(tmp_path, 0o755)
    src = tmp_path / "remote"
    src.mkdir()
    files = {f"f{i}": os.urandom(i * 300) for i in range(12)}
    for n, data in files.items():
        (src / n).write_bytes(data)
    (tmp_path / "to").mkdir()
    hostile_sftp({"short": 1000}, lambda f: f.download(str(src), to=tmp_path / "to", verbose=False))
    for n, data in files.items():
        assert (tmp_path / "to" / "remote" / n).read_bytes() == data


def test_a_tree_from_a_server_that_sends_too_much(hostile_sftp, tmp_path):
    os.chmod(tmp_path, 0o755)
    src = tmp_path / "remote"
    src.mkdir()
    for i in range(5):
        (src / f"f{i}").write_bytes(os.urandom(100))
    (tmp_path / "to").mkdir()
    with pytest.raises(pyssh.SFTPError, match="longer than asked for"):
        hostile_sftp(
            {"data_extra": 10}, lambda f: f.download(str(src), to=tmp_path / "to", verbose=False)
        )
    assert [p for p in (tmp_path / "to").rglob("*") if p.is_file()] == []


def test_many_files_named_at_once(sftp, area):
    """download([100 paths]): their STATs go in batches too; a missing one is its
    own error, after the files before it."""
    names = [f"f{i:03d}" for i in range(100)]
    for n in names:
        (area / "remote" / n).write_bytes(n.encode())
    paths = [str(area / "remote" / n) for n in names]
    waits = counted(sftp, lambda: sftp.download(paths, to=area / "back", verbose=False))
    assert waits < 100 / 5, waits
    assert sorted(os.listdir(area / "back")) == names
    for n in names:
        os.unlink(area / "back" / n)
    os.unlink(area / "remote" / "f050")
    with pytest.raises(pyssh.SFTPFileNotFoundError) as e:
        sftp.download(paths, to=area / "back", verbose=False)
    assert e.value.filename == paths[50]
    assert sorted(os.listdir(area / "back")) == names[:50]
