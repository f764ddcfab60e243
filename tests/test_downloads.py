"""Where downloads land, over SCP and SFTP alike (pyssh/_local.py), against the real
sshd: modes under the local umask, names up to 255 bytes, a failed rename that
leaves nothing behind, symbolic links in the way, and names printed safely."""

import errno
import logging
import os
import stat

import pytest

from conftest import both_apis

METHODS = ["scp", "sftp"]


@pytest.fixture
def session(server, api_connect):
    """A session through the API under test (both_apis: blocking and pyssh.aio)."""
    with api_connect(server) as s:
        yield s


def download(session, method, files, to, **kw):
    kw.setdefault("verbose", False)
    return getattr(session, f"{method}_download")(files, to=str(to), **kw)


@pytest.fixture
def umask077():
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


def mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


@both_apis
@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_downloads_honour_the_umask_like_scp(session, area, method, umask077):
    """Without preserve a remote 0777 file or directory lands as 0700 under umask
    077, as scp and sftp do; with preserve, as it is. (Before: the server's mode
    was applied as is.)"""
    tree = area / "remote" / "t"
    (tree / "d").mkdir(parents=True)
    (tree / "f").write_bytes(b"f")
    for p in (tree / "f", tree / "d", tree):
        os.chmod(p, 0o777)
    download(session, method, str(tree), area / "to")
    got = area / "to" / "t"
    assert (mode(got), mode(got / "d"), mode(got / "f")) == (0o700, 0o700, 0o700)
    (area / "kept").mkdir()
    download(session, method, str(tree), area / "kept", preserve=True)
    got = area / "kept" / "t"
    assert (mode(got), mode(got / "d"), mode(got / "f")) == (0o777, 0o777, 0o777)


@both_apis
@pytest.mark.parametrize("method", METHODS)
def test_setuid_bits_never_come_from_the_server(session, area, method):
    f = area / "remote" / "s"
    f.write_bytes(b"s")
    os.chmod(f, 0o4755)
    download(session, method, str(f), area / "to", preserve=True)
    assert mode(area / "to" / "s") == 0o755


@both_apis
@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", ["n" * 255, "é" * 127 + "x"])
def test_names_of_255_bytes(session, area, method, name):
    """The temporary name beside a 255-byte name must fit the file system's limit
    too (before: ENAMETOOLONG over SFTP)."""
    assert len(os.fsencode(name)) == 255
    (area / "remote" / name).write_bytes(b"long")
    d = area / "remote" / "dir"
    d.mkdir()
    (d / name).write_bytes(b"inside")
    assert download(session, method, [str(area / "remote" / name), str(d)], area / "to") == [
        str(area / "to" / name),
        str(area / "to" / "dir"),
    ]
    assert (area / "to" / name).read_bytes() == b"long"
    assert (area / "to" / "dir" / name).read_bytes() == b"inside"
    assert sorted(os.listdir(area / "to")) == sorted([name, "dir"])


@pytest.mark.slow
def test_a_failed_rename_removes_its_temporary_file_sftp(hostile_sftp, area):
    """A directory appears where the file was to land while it downloads (each of
    the server's replies comes 0.1 s late): the rename fails, and the temporary
    file goes with it."""
    src = area / "remote" / "f.bin"
    src.write_bytes(os.urandom(40 * 32768))
    dest = area / "to" / "f.bin"

    def in_the_way(moved, total):
        if not dest.exists():
            dest.mkdir()
            (dest / "keep").write_bytes(b"k")

    with pytest.raises(OSError) as e:
        hostile_sftp({"delay": 0.1}, lambda f: f.get(str(src), dest, progress=in_the_way))
    assert e.value.errno in (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST)
    assert os.listdir(area / "to") == ["f.bin"] and os.listdir(dest) == ["keep"]


@both_apis
def test_a_failed_rename_removes_its_temporary_file_scp(session, area, monkeypatch):
    """The same over SCP, with the rename made to fail as it does across devices."""
    (area / "remote" / "f").write_bytes(b"data")
    from pyssh import _local

    def cross_device(src, dst):
        raise OSError(errno.EXDEV, "Invalid cross-device link", src, None, dst)

    monkeypatch.setattr(_local.os, "replace", cross_device)
    with pytest.raises(OSError) as e:
        download(session, "scp", str(area / "remote" / "f"), area / "to")
    assert e.value.errno == errno.EXDEV
    assert os.listdir(area / "to") == []


@both_apis
@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_a_symlink_in_the_way_is_not_followed(session, area, method):
    """A link named like a downloaded directory would take the download (and its
    chmod) out of the target: it is refused, and its target left alone."""
    (area / "remote" / "d").mkdir()
    (area / "remote" / "d" / "f").write_bytes(b"f")
    elsewhere = area / "elsewhere"
    elsewhere.mkdir()
    os.chmod(elsewhere, 0o751)
    os.symlink(elsewhere, area / "to" / "d")
    with pytest.raises(FileExistsError, match="symbolic link"):
        download(session, method, str(area / "remote" / "d"), area / "to")
    assert os.listdir(elsewhere) == [] and mode(elsewhere) == 0o751


@both_apis
def test_sftp_does_not_follow_a_link_to_a_directory_inside_a_tree(session, area, caplog):
    """As OpenSSH's sftp: a link to a file comes down as a file, a link to a
    directory is left out (with a warning), so a link to an ancestor cannot make a
    download endless."""
    tree = area / "remote" / "t"
    tree.mkdir()
    (tree / "f").write_bytes(b"f")
    os.symlink("f", tree / "to-file")
    os.symlink("..", tree / "up")
    with caplog.at_level(logging.WARNING, logger="pyssh"):
        download(session, "sftp", str(tree), area / "to")
    assert sorted(os.listdir(area / "to" / "t")) == ["f", "to-file"]
    assert (area / "to" / "t" / "to-file").read_bytes() == b"f"
    assert not os.path.islink(area / "to" / "t" / "to-file")
    assert any("not following" in r.getMessage() and "up" in r.getMessage() for r in caplog.records)


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_names_are_printed_escaped(session, area, method, capsys):
    """A file name cannot drive the terminal: verbose lines show control characters
    and escape sequences escaped, as OpenSSH's fmprintf does."""
    name = "a\x1b]0;owned\x07b\x1b[2J\u202ec"
    (area / "remote" / name).write_bytes(b"x")
    download(session, method, str(area / "remote" / name), area / "to", verbose=True)
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\x07" not in err and "\u202e" not in err
    assert "a\\x1b]0;owned\\x07b\\x1b[2J\\u202ec" in err
    assert (area / "to" / name).read_bytes() == b"x"  # the file keeps its real name


@both_apis
def test_sftp_contents_of_dot_land_in_the_target(session, area):
    d = area / "remote" / "d"
    (d / "sub").mkdir(parents=True)
    (d / "x").write_bytes(b"x")
    assert download(session, "sftp", f"{d}/.", area / "to") == [str(area / "to")]
    assert sorted(os.listdir(area / "to")) == ["sub", "x"]


@both_apis
def test_scp_refuses_a_source_without_a_name(session, area):
    for src in (".", "/", "~", f"{area}/remote/.."):
        with pytest.raises(ValueError, match="name the files or directory"):
            download(session, "scp", src, area / "to")
    assert os.listdir(area / "to") == []


def test_a_top_level_name_that_cannot_be_a_local_name(session, area):
    """A name the user gives is checked with the same rule before anything is
    created (on Windows, say, "con" or "a:b" would not be a file)."""
    from pyssh._names import local_name

    with pytest.raises(ValueError, match="reserved device name"):
        local_name("con.txt", windows=True)
    with pytest.raises(ValueError, match="':'"):
        local_name("a:b", windows=True)
    assert local_name("a:b", windows=False) == "a:b"
