"""Remote wildcards: scp_download's (the remote shell expands them, as scp's do,
with everything but the wildcards quoted), sftp.glob() and SFTP downloads'
(pyssh matches the listings). The server runs on this machine: remote paths are
local paths the tests set up directly."""

import os

import pytest

import pyssh


@pytest.fixture(scope="module")
def session(server):
    with server.connect() as s:
        yield s


@pytest.fixture(scope="module")
def sftp(session):
    with session.sftp(timeout=60) as f:
        yield f


@pytest.fixture
def logs(area):
    r = area / "remote"
    for name in ("a.gz", "b c.gz", "it's $HOME.gz", "x;touch pwned.gz", ".hidden.gz", "a.txt"):
        (r / name).write_bytes(name.encode())
    (r / "sub").mkdir()
    (r / "sub" / "deep.gz").write_bytes(b"deep")
    return r


GZ = ["a.gz", "b c.gz", "it's $HOME.gz", "x;touch pwned.gz"]


def test_scp_wildcard_downloads_the_matches(session, area, logs):
    got = session.scp_download(f"{logs}/*.gz", to=area / "to", verbose=False)
    assert sorted(os.path.basename(p) for p in got) == GZ
    assert sorted(os.listdir(area / "to")) == GZ
    for name in GZ:
        assert (area / "to" / name).read_bytes() == name.encode()
    assert not os.path.exists(logs / "pwned.gz") and not os.path.exists("pwned.gz")


def test_scp_wildcards_in_a_spaced_directory(session, area):
    d = area / "remote" / "my logs; $(x)"
    d.mkdir()
    (d / "one two.log").write_bytes(b"1")
    (d / "[x].log").write_bytes(b"2")
    got = session.scp_download([f"{d}/?ne*", f"{d}/[[]x].log"], to=area / "to", verbose=False)
    assert sorted(os.listdir(area / "to")) == ["[x].log", "one two.log"]
    assert len(got) == 2


def test_scp_no_match_is_file_not_found(session, area, logs):
    with pytest.raises(pyssh.SCPFileNotFoundError) as e:
        session.scp_download(f"{logs}/*.nothing", to=area / "to", verbose=False)
    assert "*.nothing" in str(e.value)
    assert os.listdir(area / "to") == []


@pytest.mark.parametrize(
    "inject",
    ["*;touch {pwned};", "$(touch {pwned})*", "`touch {pwned}`*", "*' ; touch {pwned}; '", "*\n"],
)
def test_scp_pattern_cannot_inject(session, area, logs, inject):
    pwned = area / "pwned"
    pattern = f"{logs}/nothing" + inject.format(pwned=pwned)
    with pytest.raises((pyssh.SCPError, ValueError)):
        session.scp_download(pattern, to=area / "to", verbose=False)
    assert not os.path.exists(pwned)


def test_scp_literal_star_name(session, area):
    (area / "remote" / "a*b").write_bytes(b"star")
    session.scp_download(f"{area / 'remote'}/a*b", to=area / "to", verbose=False)
    assert (area / "to" / "a*b").read_bytes() == b"star"


def test_sftp_glob(sftp, logs):
    assert sftp.glob(f"{logs}/*.gz") == sorted(f"{logs}/{n}" for n in GZ)
    assert sftp.glob(f"{logs}/.*.gz") == [f"{logs}/.hidden.gz"]
    assert sftp.glob(f"{logs}/[ab]*") == [f"{logs}/a.gz", f"{logs}/a.txt", f"{logs}/b c.gz"]
    assert sftp.glob(f"{logs}/?.txt") == [f"{logs}/a.txt"]
    assert sftp.glob(f"{logs}/*/deep.gz") == [f"{logs}/sub/deep.gz"]
    assert sftp.glob(f"{logs}/**/*.gz") == sorted(
        [f"{logs}/{n}" for n in GZ] + [f"{logs}/sub/deep.gz"]
    )
    assert sftp.glob(f"{logs}/*.nothing") == []
    assert sftp.glob(f"{logs}/nothing/*") == []
    assert sftp.glob(f"{logs}/a.gz/*") == []  # a file is not listed


def test_sftp_download_pattern(session, sftp, area, logs):
    got = sftp.download(f"{logs}/*.gz", to=area / "to", verbose=False)
    assert sorted(os.listdir(area / "to")) == GZ
    assert len(got) == 4
    with pytest.raises(pyssh.SFTPFileNotFoundError, match=r"\*\.nothing"):
        sftp.download([f"{logs}/a.txt", f"{logs}/*.nothing"], to=area / "to", verbose=False)
    session.sftp_download(f"{logs}/s*", to=area / "to", verbose=False)
    assert (area / "to" / "sub" / "deep.gz").read_bytes() == b"deep"


def test_sftp_get_pattern(sftp, area, logs):
    sftp.get(f"{logs}/*.txt", area / "to" / "one")
    assert (area / "to" / "one").read_bytes() == b"a.txt"
    with pytest.raises(ValueError, match="matches 4 files"):
        sftp.get(f"{logs}/*.gz", area / "to" / "two")
    with pytest.raises(pyssh.SFTPFileNotFoundError):
        sftp.get(f"{logs}/*.nothing", area / "to" / "two")


def test_sftp_literal_star_name_wins(sftp, area):
    r = area / "remote"
    (r / "a*b").write_bytes(b"star")
    (r / "axxb").write_bytes(b"other")
    sftp.download(f"{r}/a*b", to=area / "to", verbose=False)
    assert os.listdir(area / "to") == ["a*b"]
    assert sftp.glob(f"{r}/a*b") == [f"{r}/a*b", f"{r}/axxb"]
