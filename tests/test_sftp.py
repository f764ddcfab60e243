"""SFTP against the real sshd (its internal-sftp subsystem): what SFTP alone
offers (put and get, resume, remote file operations, file objects). The server
runs on this machine, so remote paths are local paths the tests can check
directly. What SCP and SFTP promise alike is in test_transfers.py."""

import errno
import hashlib
import os
import shutil
import stat
import tempfile
import threading

import pytest

import pyssh
from pyssh.testing import SSHServer


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
    out = {}
    for name in ("local", "remote", "back"):
        (tmp_path / name).mkdir()
        out[name] = tmp_path / name
    return out


def sha(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---- transfers -------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, (1 << 20) + 1])
def test_put_and_get_one_file(sftp, area, size):
    """put and get, file to file: the number of bytes moved, the mode, no temporary
    file left (sizes up to 100 MiB, both protocols, through upload and download:
    test_transfers.py)."""
    src = area["local"] / "f.bin"
    with open(src, "wb") as f:
        f.write(os.urandom(size))
    os.chmod(src, 0o640)
    remote = str(area["remote"] / "f.bin")
    assert sftp.put(src, remote) == size
    assert sha(remote) == sha(src) and stat.S_IMODE(os.stat(remote).st_mode) == 0o640
    assert sftp.get(remote, area["back"] / "f.bin") == size
    assert sha(area["back"] / "f.bin") == sha(src)
    assert stat.S_IMODE(os.stat(area["back"] / "f.bin").st_mode) == 0o640
    assert os.listdir(area["back"]) == ["f.bin"]  # no temporary file left


def test_resume_download_and_upload(sftp, area):
    data = os.urandom(3 << 20)
    remote = area["remote"] / "r.bin"
    remote.write_bytes(data)
    local = area["back"] / "r.bin"
    local.write_bytes(data[:1234567])  # an interrupted download
    assert sftp.get(str(remote), local, resume=True) == len(data) - 1234567
    assert local.read_bytes() == data
    src = area["local"] / "u.bin"
    src.write_bytes(data)
    (area["remote"] / "u.bin").write_bytes(data[:777])  # an interrupted upload
    # a resumed upload goes back SFTP_STRIPE_AHEAD bytes (a striped upload's gaps)
    assert sftp.put(src, str(area["remote"] / "u.bin"), resume=True) == len(data)
    assert (area["remote"] / "u.bin").read_bytes() == data
    local.write_bytes(data + b"longer")
    with pytest.raises(pyssh.SFTPError, match="longer than the remote"):
        sftp.get(str(remote), local, resume=True)


@pytest.mark.slow
def test_resume_after_an_interrupted_transfer(session, area):
    """A transfer cut short (here by a progress callback that raises once 64 MiB have
    moved) keeps what it moved when resume=True; the channel stays usable, and the
    next resume=True completes the file."""
    size = 1 << 30
    src = area["local"] / "i.bin"
    with open(src, "wb") as f:
        f.truncate(size)  # sparse: zeros, fast to read
    remote, local = str(area["remote"] / "i.bin"), area["back"] / "i.bin"

    class Enough(Exception):
        pass

    def stop_early(moved, total):
        if 64 << 20 <= moved < total:
            raise Enough

    with session.sftp() as f:
        with pytest.raises(Enough):
            f.put(src, remote, resume=True, progress=stop_early)
        assert 0 < os.path.getsize(remote) < size
        assert f.put(src, remote, resume=True) < size
        assert os.path.getsize(remote) == size
        with pytest.raises(Enough):
            f.get(remote, local, resume=True, progress=stop_early)
        assert 0 < local.stat().st_size < size
        assert f.get(remote, local, resume=True) < size
        assert f.listdir(str(area["back"])) == ["i.bin"]  # still usable
    assert local.stat().st_size == size and sha(local) == sha(src)


# ---- file operations ---------------------------------------------------------------------


def test_file_operations(sftp, area):
    r = area["remote"]
    sftp.mkdir(str(r / "d"), 0o755)
    assert sftp.realpath(f"{r}/./d/..") == str(r)
    assert sftp.is_dir(str(r / "d")) and not sftp.is_file(str(r / "d"))
    sftp.makedirs(str(r / "a" / "b" / "c"))
    sftp.makedirs(str(r / "a" / "b"), exist_ok=True)
    assert os.path.isdir(r / "a" / "b" / "c")
    (r / "f.txt").write_bytes(b"12345")
    st = sftp.stat(str(r / "f.txt"))
    assert st.st_size == 5 and st.is_file() and st.st_mtime == int(os.stat(r / "f.txt").st_mtime)
    sftp.chmod(str(r / "f.txt"), 0o604)
    assert stat.S_IMODE(os.stat(r / "f.txt").st_mode) == 0o604
    sftp.utime(str(r / "f.txt"), (100, 200))
    assert os.stat(r / "f.txt").st_mtime == 200 and os.stat(r / "f.txt").st_atime == 100
    sftp.symlink("f.txt", str(r / "link"))
    assert os.readlink(r / "link") == "f.txt" and sftp.readlink(str(r / "link")) == "f.txt"
    assert sftp.lstat(str(r / "link")).is_symlink() and sftp.stat(str(r / "link")).is_file()
    assert sftp.listdir(str(r)) == sorted(os.listdir(r))
    names = {a.filename: a for a in sftp.scandir(str(r))}
    assert sorted(a.filename for a in sftp.iterdir(str(r))) == sorted(names)
    assert names["d"].is_dir() and names["f.txt"].st_size == 5 and names["link"].is_symlink()
    (r / "g.txt").write_bytes(b"other")
    sftp.rename(str(r / "f.txt"), str(r / "g.txt"))  # replaces, like os.replace
    assert (r / "g.txt").read_bytes() == b"12345" and not (r / "f.txt").exists()
    sftp.remove(str(r / "g.txt"))
    sftp.rmdir(str(r / "d"))
    assert not (r / "g.txt").exists() and not (r / "d").exists()
    assert sftp.exists(str(r / "a")) and not sftp.exists(str(r / "nope"))
    assert list(sftp.walk(str(r / "a"))) == [
        (str(r / "a"), ["b"], []),
        (str(r / "a" / "b"), ["c"], []),
        (str(r / "a" / "b" / "c"), [], []),
    ]
    v = sftp.statvfs(str(r))
    assert v.f_bsize == os.statvfs(r).f_bsize and v.f_blocks == os.statvfs(r).f_blocks


def test_error_mapping(sftp, area):
    r = area["remote"]
    (r / "file").write_bytes(b"x")
    (r / "full").mkdir()
    (r / "full" / "x").write_bytes(b"x")
    cases = [
        (lambda: sftp.stat(str(r / "nope")), pyssh.SFTPFileNotFoundError, FileNotFoundError),
        (lambda: sftp.listdir(str(r / "nope")), pyssh.SFTPFileNotFoundError, FileNotFoundError),
        (lambda: sftp.remove(str(r / "nope")), pyssh.SFTPFileNotFoundError, FileNotFoundError),
        (lambda: sftp.mkdir(str(r / "file")), pyssh.SFTPFileExistsError, FileExistsError),
        (lambda: sftp.makedirs(str(r / "full")), pyssh.SFTPFileExistsError, FileExistsError),
        (lambda: sftp.listdir(str(r / "file")), pyssh.SFTPNotADirectoryError, NotADirectoryError),
        (lambda: sftp.rmdir(str(r / "file")), pyssh.SFTPNotADirectoryError, NotADirectoryError),
        (lambda: sftp.remove(str(r / "full")), pyssh.SFTPIsADirectoryError, IsADirectoryError),
        (
            lambda: sftp.get(str(r / "full"), area["back"] / "x"),
            pyssh.SFTPIsADirectoryError,
            IsADirectoryError,
        ),
        (lambda: sftp.rmdir(str(r / "full")), pyssh.SFTPError, OSError),
    ]
    if os.geteuid() != 0:
        (r / "locked").mkdir(mode=0o000)
        cases.append(
            (lambda: sftp.listdir(str(r / "locked")), pyssh.SFTPPermissionError, PermissionError)
        )
    for call, cls, builtin in cases:
        with pytest.raises(cls) as e:
            call()
        assert isinstance(e.value, builtin) and isinstance(e.value, pyssh.SSHError)
        assert e.value.filename and str(r) in e.value.filename
    with pytest.raises(pyssh.SFTPError) as e:
        sftp.rmdir(str(r / "full"))
    assert e.value.errno == errno.ENOTEMPTY
    assert sftp.listdir(str(r / "full")) == ["x"]  # the channel is still fine


def test_permission_denied_as_a_plain_user(server, plain_address):
    """As an ordinary user: a root-only directory gives PermissionError (in a
    directory the user can list: pytest's temporary tree is root's alone, and its
    refusal would pass this test for the wrong reason)."""
    if plain_address == server.address and os.geteuid() != 0:
        pytest.skip("needs an ordinary account besides the test runner")
    top = tempfile.mkdtemp(prefix="pyssh-sftp-")
    try:
        os.chmod(top, 0o755)
        os.mkdir(os.path.join(top, "secret"), mode=0o700)
        with server.connect(address=plain_address) as s, s.sftp() as f:
            assert f.listdir(top) == ["secret"]
            with pytest.raises(pyssh.SFTPPermissionError) as e:
                f.listdir(os.path.join(top, "secret"))
            assert isinstance(e.value, PermissionError)
    finally:
        shutil.rmtree(top, ignore_errors=True)


@pytest.mark.slow
def test_no_sftp_subsystem():
    with SSHServer(sftp=False) as srv, srv.connect() as s:
        with pytest.raises(pyssh.SFTPError, match="no SFTP subsystem"):
            s.sftp()
        assert s.exec_internal("echo still usable").stdout == b"still usable\n"


@pytest.mark.slow
def test_two_sftp_channels_in_two_threads(session, area):
    data = {n: os.urandom(20 << 20) for n in ("t0", "t1")}
    for n, blob in data.items():
        (area["local"] / n).write_bytes(blob)
    errors = []

    def work(n):
        try:
            with session.sftp() as f:
                f.put(area["local"] / n, str(area["remote"] / n))
                f.get(str(area["remote"] / n), area["back"] / n)
                assert (area["back"] / n).read_bytes() == data[n]
        except BaseException as e:  # reported by the test
            errors.append(e)

    threads = [threading.Thread(target=work, args=(n,)) for n in data]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []


def test_bad_inputs(sftp, area):
    with pytest.raises(ValueError, match="NUL"):
        sftp.stat("a\0b")
    with pytest.raises(TypeError):
        sftp.stat(b"/tmp")
    with pytest.raises(FileNotFoundError, match="local directory does not exist") as e:
        sftp.get("/etc/hostname", area["back"] / "missing" / "x")
    assert e.value.filename == str(area["back"] / "missing")
    (area["remote"] / "plain").write_bytes(b"")
    with pytest.raises(pyssh.SFTPError, match="not a symbolic link") as e:
        sftp.readlink(str(area["remote"] / "plain"))
    assert e.value.errno == errno.EINVAL
    sftp.close()
    sftp.close()
    with pytest.raises(pyssh.SFTPError, match="closed"):
        sftp.listdir(".")


# ---- the file object, against io's semantics -----------------------------------------------

INITIAL = b"line one\nline two\nthird line, longer than the others\n" + bytes(range(256)) * 40

IO_CASES = [
    (
        "rb",
        [
            ("read", 5),
            ("tell",),
            ("read", 0),
            ("seek", 3),
            ("read", 4),
            ("seek", -10, 2),
            ("read",),
            ("tell",),
            ("read", 10),
            ("seek", 100000),
            ("read", 5),
            ("tell",),
        ],
    ),
    ("rb", [("readline",), ("readline",), ("readlines",)]),
    ("rb", [("seek", 5, 1), ("seek", 2, 1), ("read", 3), ("seek", 0, 2), ("tell",)]),
    (
        "r+b",
        [
            ("read", 4),
            ("write", b"XXXX"),
            ("tell",),
            ("seek", 0),
            ("read", 12),
            ("seek", 0, 2),
            ("write", b"tail"),
            ("truncate", 20),
            ("tell",),
            ("seek", 0),
            ("read",),
        ],
    ),
    ("wb", [("write", b"abc"), ("tell",), ("seek", 10), ("write", b"z"), ("tell",), ("truncate",)]),
    ("w+b", [("write", b"hello world"), ("seek", 6), ("read", 3), ("seek", 0), ("read",)]),
    ("ab", [("write", b"appended"), ("tell",), ("seek", 0), ("write", b"more"), ("tell",)]),
    ("a+b", [("write", b"x"), ("seek", 0), ("read", 8), ("tell",)]),
    ("xb", [("write", b"new"), ("tell",)]),
    ("r", [("readline",), ("read", 4), ("tell",), ("read",)]),
    ("w", [("write", "ünïcödé\n"), ("write", "2nd\n"), ("tell",)]),
    ("a", [("write", "text\n"), ("tell",)]),
]


def run_ops(f, ops):
    out = []
    for op in ops:
        try:
            r = getattr(f, op[0])(*op[1:])
        except Exception as e:  # compared by type
            r = type(e).__name__
        out.append(r)
    return out


@pytest.mark.slow
@pytest.mark.parametrize(
    "mode, ops", IO_CASES, ids=[f"{m}-{i}" for i, (m, _) in enumerate(IO_CASES)]
)
def test_file_object_matches_local_files(sftp, area, mode, ops):
    local, remote = area["local"] / "f", area["remote"] / "f"
    if "x" not in mode:
        local.write_bytes(INITIAL)
        remote.write_bytes(INITIAL)
    kw = {} if "b" in mode else {"encoding": "utf-8", "newline": ""}
    with open(local, mode, **kw) as f:
        want = run_ops(f, ops)
    with sftp.open(str(remote), mode, **kw) as f:
        got = run_ops(f, ops)
        assert (
            f.mode == mode
            and f.name == str(remote)
            and (f.readable(), f.writable())
            == (("r" in mode or "+" in mode), (mode[0] != "r" or "+" in mode))
        )
    assert got == want
    assert remote.read_bytes() == local.read_bytes()


def test_file_object_errors_and_iteration(sftp, area):
    r = area["remote"]
    (r / "lines.txt").write_text("a\nb\nc\n")
    with sftp.open(str(r / "lines.txt")) as f:
        assert list(f) == ["a\n", "b\n", "c\n"]
    with sftp.open(str(r / "lines.txt"), "rb", buffering=0) as f:
        assert isinstance(f, __import__("io").RawIOBase) and f.read(2) == b"a\n"
    with pytest.raises(FileNotFoundError):
        sftp.open(str(r / "missing"))
    with pytest.raises(FileExistsError):
        sftp.open(str(r / "lines.txt"), "x")
    with pytest.raises(IsADirectoryError):
        sftp.open(str(r))
    for bad in ("rw", "rr", "q", "bt", ""):
        with pytest.raises(ValueError):
            sftp.open(str(r / "lines.txt"), bad)
    with pytest.raises(ValueError):
        sftp.open(str(r / "lines.txt"), "r", buffering=0)
    f = sftp.open(str(r / "lines.txt"), "rb")
    f.close()
    with pytest.raises(ValueError):
        f.read()
    with sftp.open(str(r / "lines.txt"), "rb") as f:
        with pytest.raises(__import__("io").UnsupportedOperation):
            f.write(b"x")


@pytest.mark.slow
def test_copyfileobj_through_file_objects(sftp, area):
    import shutil

    src = area["local"] / "big"
    with open(src, "wb") as f:
        for _ in range(64):
            f.write(os.urandom(1 << 20))
    with open(src, "rb") as a, sftp.open(str(area["remote"] / "big"), "wb") as b:
        shutil.copyfileobj(a, b)
    with sftp.open(str(area["remote"] / "big"), "rb") as a, open(area["back"] / "big", "wb") as b:
        shutil.copyfileobj(a, b)
    assert sha(area["back"] / "big") == sha(src) == sha(area["remote"] / "big")


# A hostile or broken server: tests/test_hostile_sftp.py.
