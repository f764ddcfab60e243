"""SFTP's extensions and extras against the real sshd (OpenSSH's internal-sftp):
fsync, hardlink, chown, rmtree, copy (copy-data), limits. The server runs on this
machine, so remote paths are local paths the tests check directly."""

import errno
import os

import pytest

import pyssh
from pyssh._sftp import SFTPLimits

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


@pytest.fixture(scope="module")
def session(server):
    with server.connect() as s:
        yield s


@pytest.fixture(scope="module")
def sftp(session):
    with session.sftp(timeout=60) as f:
        yield f


def test_extensions_offered(sftp):
    """OpenSSH 9.2's sftp-server offers all of them (9.0 added copy-data)."""
    for ext in ("fsync@openssh.com", "hardlink@openssh.com", "limits@openssh.com", "copy-data"):
        assert ext in sftp.extensions


def test_limits(sftp):
    lim = sftp.limits()
    assert isinstance(lim, SFTPLimits)
    assert lim.max_packet_length >= lim.max_read_length >= 32768
    assert lim.max_write_length >= 32768
    assert lim.max_open_handles >= 0
    assert sftp.max_read <= max(lim.max_read_length, 32768)


def test_fsync_path_and_file(sftp, area):
    path = area / "remote" / "f"
    with sftp.open(str(path), "wb") as f:
        f.write(b"x" * 100_000)
        sftp.fsync(f)  # flushed, then fsync@openssh.com on its handle
        assert path.stat().st_size == 100_000
        f.write(b"y")
        f.flush()
        f.raw.fsync()
    sftp.fsync(str(path))
    assert path.read_bytes() == b"x" * 100_000 + b"y"
    with pytest.raises(pyssh.SFTPFileNotFoundError):
        sftp.fsync(str(area / "remote" / "missing"))


def test_hardlink(sftp, area):
    src, dst = area / "remote" / "a b", area / "remote" / "c;d"
    src.write_bytes(b"data")
    sftp.link(str(src), str(dst))
    assert sftp.stat(str(dst)).st_size == 4
    assert os.stat(src).st_ino == os.stat(dst).st_ino
    assert os.stat(src).st_nlink == 2
    with pytest.raises(pyssh.SFTPError):
        sftp.hardlink(str(src), str(dst))  # exists
    with pytest.raises(pyssh.SFTPFileNotFoundError):
        sftp.link(str(area / "remote" / "missing"), str(area / "remote" / "x"))


def test_chown_to_own_ids(sftp, area):
    path = area / "remote" / "f"
    path.write_bytes(b"")
    st = os.stat(path)
    sftp.chown(str(path), st.st_uid, st.st_gid)
    sftp.chown(str(path), -1, -1)
    assert (os.stat(path).st_uid, os.stat(path).st_gid) == (st.st_uid, st.st_gid)
    with pytest.raises(ValueError):
        sftp.chown(str(path), -2, 0)


@pytest.mark.skipif(not IS_ROOT, reason="only root can give a file away")
def test_chown_as_root(sftp, area):
    path = area / "remote" / "f"
    path.write_bytes(b"")
    sftp.chown(str(path), 12345, 23456)
    assert (os.stat(path).st_uid, os.stat(path).st_gid) == (12345, 23456)
    sftp.chown(str(path), -1, 34567)
    assert (os.stat(path).st_uid, os.stat(path).st_gid) == (12345, 34567)


def test_chown_to_root_refused(plain_session):
    """An ordinary account (as root: the test account) cannot give a file away."""
    with plain_session.sftp() as sftp:
        name = f"pyssh-chown-{os.getpid()}"
        with sftp.open(name, "wb") as f:
            f.write(b"x")
        try:
            before = sftp.stat(name).st_uid
            with pytest.raises(pyssh.SFTPError):
                sftp.chown(name, 0, 0)
            assert sftp.stat(name).st_uid == before
        finally:
            sftp.remove(name)


def test_rmtree_leaves_a_linked_directory_alone(sftp, area):
    outside = area / "outside"
    outside.mkdir()
    (outside / "keep").write_bytes(b"k")
    top = area / "remote" / "tree"
    (top / "a" / "b c").mkdir(parents=True)
    (top / "a" / "b c" / "f;x").write_bytes(b"1")
    (top / ".hidden").write_bytes(b"2")
    (top / "empty").mkdir()
    os.symlink(outside, top / "a" / "link")
    os.symlink("nowhere", top / "broken")
    sftp.rmtree(str(top))
    assert not os.path.lexists(top)
    assert (outside / "keep").read_bytes() == b"k"


def test_rmtree_refuses_links_and_files(sftp, area):
    d = area / "remote" / "d"
    d.mkdir()
    os.symlink(d, area / "remote" / "l")
    with pytest.raises(pyssh.SFTPError, match="symbolic link"):
        sftp.rmtree(str(area / "remote" / "l"))
    (area / "remote" / "f").write_bytes(b"")
    with pytest.raises(pyssh.SFTPError, match="not a directory"):
        sftp.rmtree(str(area / "remote" / "f"))
    with pytest.raises(pyssh.SFTPFileNotFoundError):
        sftp.rmtree(str(area / "remote" / "missing"))
    assert d.is_dir()


def test_copy_data(sftp, area):
    src, dst = area / "remote" / "src", area / "remote" / "dst file"
    data = os.urandom(300_000)
    src.write_bytes(data)
    os.chmod(src, 0o640)
    dst.write_bytes(b"old and longer" * 100_000)
    sftp.copy(str(src), str(dst))
    assert dst.read_bytes() == data
    assert os.stat(src).st_ino != os.stat(dst).st_ino
    with pytest.raises(pyssh.SFTPFileNotFoundError):
        sftp.copy(str(area / "remote" / "missing"), str(dst))
    with pytest.raises(pyssh.SFTPIsADirectoryError):
        sftp.copy(str(area / "remote"), str(dst))


def test_extension_not_offered(sftp, area):
    """What the server did not offer is a clear SFTPError naming it."""
    saved = dict(sftp.extensions)
    try:
        sftp.extensions.clear()
        for call, ext in [
            (lambda: sftp.copy("a", "b"), "copy-data"),
            (lambda: sftp.link("a", "b"), "hardlink@openssh.com"),
            (lambda: sftp.fsync("a"), "fsync@openssh.com"),
            (sftp.limits, "limits@openssh.com"),
        ]:
            with pytest.raises(pyssh.SFTPError, match=f"does not offer {ext}") as e:
                call()
            assert e.value.errno == errno.EOPNOTSUPP
    finally:
        sftp.extensions.update(saved)


def protocol_error(excinfo, why):
    e = excinfo.value
    assert isinstance(e, pyssh.SFTPError) and e.errno == errno.EPROTO, e
    assert why in str(e), str(e)


@pytest.mark.parametrize("data", [b"\0" * 24, b"\0" * 40], ids=["short", "long"])
def test_hostile_limits_of_the_wrong_length(hostile_sftp, data):
    """limits@openssh.com's reply is four uint64, checked in C as it arrives (the
    SFTP channel asks for it when it starts)."""
    with pytest.raises(pyssh.SFTPError) as e:
        hostile_sftp({"ext_reply": {b"limits@openssh.com": data}}, lambda f: f.limits())
    protocol_error(e, "an extension reply of the wrong length")


@pytest.mark.parametrize("ext", [b"hardlink@openssh.com", b"fsync@openssh.com", b"copy-data"])
def test_hostile_extended_reply_to_a_status_only_extension(hostile_sftp, area, ext):
    (area / "remote" / "f").write_bytes(b"x")
    src, dst = str(area / "remote" / "f"), str(area / "remote" / "g")
    calls = {
        b"hardlink@openssh.com": lambda f: f.link(src, dst),
        b"fsync@openssh.com": lambda f: f.fsync(src),
        b"copy-data": lambda f: f.copy(src, dst),
    }
    with pytest.raises(pyssh.SFTPError) as e:
        hostile_sftp({"ext_reply": {ext: b"junk"}}, calls[ext])
    protocol_error(e, "an SFTP extended reply to an extension answered by a status")
