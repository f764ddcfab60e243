"""SFTP against a server that lies, stalls or floods (tests/hostile_sftp.py, run by
a real sshd as its SFTP subsystem): every field of every reply is checked where it
enters (csrc/sftpproto.c), and whatever the server does, the client raises a clear
error, writes no partial file under its final name and never hangs."""

import errno
import os
import threading

import pytest

import pyssh

KIB = 1024


def remote_file(area, size, name="f.bin"):
    data = os.urandom(size)
    path = area / "remote" / name
    path.write_bytes(data)
    return str(path), data


def protocol_error(excinfo, why):
    e = excinfo.value
    assert isinstance(e, pyssh.SFTPError) and e.errno == errno.EPROTO, e
    assert "broke the SFTP protocol" in str(e) and why in str(e), str(e)


# ---- statuses ---------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("code", [0x80000000, 0xFFFFFFFF, 99])
def test_unknown_status_codes_are_failures_never_success(hostile_sftp, area, code):
    """Before: a code of 2**31 or more became a negative int in C and counted as "no
    error": an upload reported success with nothing written, a read() returned
    bytes that never arrived."""
    rpath, _ = remote_file(area, 100 * KIB)
    src = area / "src.bin"
    src.write_bytes(b"x" * (100 * KIB))
    with pytest.raises(pyssh.SFTPError, match=f"SFTP status {code}"):
        hostile_sftp({"status": {6: code}}, lambda f: f.put(src, str(area / "remote" / "up")))
    with pytest.raises(pyssh.SFTPError, match=f"SFTP status {code}"):
        hostile_sftp({"status": {5: code}}, lambda f: f.get(rpath, area / "to" / "f.bin"))
    with pytest.raises(pyssh.SFTPError, match=f"SFTP status {code}"):
        hostile_sftp({"status": {5: code}}, lambda f: f.open(rpath, "rb").read())
    assert os.listdir(area / "to") == []


def test_ok_status_in_answer_to_read_is_a_protocol_error(hostile_sftp, area):
    rpath, _ = remote_file(area, 10 * KIB)

    def get(f):
        with pytest.raises(pyssh.SFTPError) as e:
            f.get(rpath, area / "to" / "f.bin")
        assert f.closed  # the stream cannot be trusted any more
        return e

    protocol_error(hostile_sftp({"read_ok": True}, get), "an OK status where")
    assert os.listdir(area / "to") == []


def test_an_ok_status_where_a_handle_was_asked_for(hostile_sftp, area):
    rpath, _ = remote_file(area, 10)
    with pytest.raises(pyssh.SFTPError) as e:
        hostile_sftp({"status": {3: 0}}, lambda f: f.open(rpath, "rb"))
    protocol_error(e, "an OK status where")


# ---- data ----------------------------------------------------------------------------


def test_data_longer_than_asked_for(hostile_sftp, area):
    rpath, _ = remote_file(area, 100 * KIB)
    with pytest.raises(pyssh.SFTPError) as e:
        hostile_sftp({"data_extra": 10}, lambda f: f.get(rpath, area / "to" / "f.bin"))
    protocol_error(e, "longer than asked for")
    assert os.listdir(area / "to") == []


@pytest.mark.slow
@pytest.mark.parametrize(
    "raw, why",
    [
        (b"\xff\xff\xff\xff\x65", "impossible length"),
        (b"\x00\x00\x00\x00", "impossible length"),
        (b"\x00\x00\x00\x03\x69\x00\x00", "without a request id"),
    ],
)
def test_a_frame_that_cannot_be(hostile_sftp, area, raw, why):
    with pytest.raises(pyssh.SFTPError) as e:
        hostile_sftp({"raw": raw}, lambda f: f.stat(str(area)))
    protocol_error(e, why)


def test_reply_to_a_request_not_in_flight(hostile_sftp, area):
    with pytest.raises(pyssh.SFTPError) as e:
        hostile_sftp({"wrong_id": True}, lambda f: f.stat(str(area)))
    protocol_error(e, "a request that was not made")


def test_read_returns_only_bytes_received(hostile_sftp, area):
    """The server says the file ends at 100 KiB (its size says 300 KiB): read() gives
    exactly the bytes that arrived, not a buffer's stale or uninitialised rest."""
    rpath, data = remote_file(area, 300 * KIB)

    def read_all(f):
        with f.open(rpath, "rb") as fh:
            return fh.read()

    got = hostile_sftp({"eof_at": 100 * KIB}, read_all)
    assert got == data[: 100 * KIB]


def test_offsets_cannot_wrap_round(hostile_sftp, area):
    """Before: read() at an offset near 2**64 wrapped round, issued no request and
    returned n bytes of uninitialised memory."""
    rpath, _ = remote_file(area, 10)

    def probe(f):
        h = f._open(rpath, 1)
        for offset, n in ((2**64 - 10, 100), (2**63 - 5, 100), (2**63, 1)):
            with pytest.raises(ValueError, match="2\\*\\*63-1"):
                f._c.read(h, offset, n)
        with pytest.raises(ValueError, match="2\\*\\*63-1"):
            f._c.write(h, 2**63 - 1, b"xx")
        return f._c.read(h, 0, 100)[0]

    assert hostile_sftp({}, probe) == open(rpath, "rb").read()


def test_seek_is_bounded(server, area):
    rpath, data = remote_file(area, 10)
    with server.connect() as s, s.sftp() as f, f.open(rpath, "rb", buffering=0) as fh:
        assert fh.seek(2**63 - 1) == 2**63 - 1
        assert fh.read(10) == b""
        for bad in (2**63, 2**64 + 5):
            with pytest.raises(OSError) as e:
                fh.seek(bad)
            assert e.value.errno == errno.EINVAL and "2**63-1" in str(e.value)
        with pytest.raises(OSError) as e:
            fh.seek(-1)
        assert e.value.errno == errno.EINVAL
        fh.seek(3)
        assert fh.read() == data[3:]


@pytest.mark.slow
def test_a_size_near_2_64_is_refused(hostile_sftp, area):
    rpath, _ = remote_file(area, 10)
    with pytest.raises(pyssh.SFTPError) as e:
        hostile_sftp({"size": 2**64 - 1}, lambda f: f.stat(rpath))
    protocol_error(e, "beyond 2**63-1")

    def seek_end(f):
        with f.open(rpath, "rb", buffering=0) as fh:
            fh.seek(0, 2)

    with pytest.raises(pyssh.SFTPError) as e:
        hostile_sftp({"size": 2**64 - 1}, seek_end)
    protocol_error(e, "beyond 2**63-1")


def test_a_download_short_of_the_size_fails(hostile_sftp, area):
    """The server ends the file early while its size still says more: the download
    fails and leaves the old file as it was."""
    rpath, _ = remote_file(area, 300 * KIB)
    dest = area / "to" / "f.bin"
    dest.write_bytes(b"old good")
    with pytest.raises(pyssh.SFTPError, match="incomplete") as e:
        hostile_sftp({"eof_at": 100 * KIB}, lambda f: f.get(rpath, dest))
    assert e.value.errno == errno.EIO
    assert dest.read_bytes() == b"old good" and os.listdir(area / "to") == ["f.bin"]


def test_data_beyond_the_reported_end(hostile_sftp, area):
    rpath, _ = remote_file(area, 1024 * KIB)
    with pytest.raises(pyssh.SFTPError) as e:
        hostile_sftp(
            {"eof_at": 64 * KIB, "data_after": 128 * KIB},
            lambda f: f.get(rpath, area / "to" / "f.bin"),
        )
    protocol_error(e, "beyond the end of the file")
    assert os.listdir(area / "to") == []


@pytest.mark.slow
def test_an_upload_needs_its_close_confirmed(hostile_sftp, area):
    src = area / "src.bin"
    src.write_bytes(os.urandom(50 * KIB))
    with pytest.raises(pyssh.SFTPError, match="scripted failure"):
        hostile_sftp({"status": {4: 4}}, lambda f: f.put(src, str(area / "remote" / "up")))

    def write(f):
        with f.open(str(area / "remote" / "w"), "wb") as fh:
            fh.write(b"data")

    with pytest.raises(pyssh.SFTPError, match="scripted failure"):
        hostile_sftp({"status": {4: 4}}, write)


# ---- handles, names, listings -------------------------------------------------------


@pytest.mark.slow
def test_a_handle_longer_than_256_bytes(hostile_sftp, area):
    rpath, _ = remote_file(area, 10)
    with pytest.raises(pyssh.SFTPError) as e:
        hostile_sftp({"handle_len": 300}, lambda f: f.open(rpath, "rb"))
    protocol_error(e, "longer than 256 bytes")
    assert (
        hostile_sftp({"handle_len": 256}, lambda f: f.open(rpath, "rb").read())
        == open(rpath, "rb").read()
    )


def test_a_name_count_the_message_cannot_hold(hostile_sftp, area):
    with pytest.raises(pyssh.SFTPError) as e:
        hostile_sftp({"names": ["a"], "count_extra": 10**6}, lambda f: f.listdir(str(area)))
    protocol_error(e, "count does not fit")


def test_a_name_listed_twice(hostile_sftp, area):
    (area / "remote" / "d").mkdir()
    with pytest.raises(pyssh.SFTPError, match="twice"):
        hostile_sftp(
            {"names": ["a", "b", "a"]},
            lambda f: f.download(str(area / "remote" / "d"), to=area / "to", verbose=False),
        )


@pytest.mark.slow
@pytest.mark.parametrize(
    "names, why",
    [
        (["../evil"], "'/'"),
        (["a/../../evil"], "'/'"),
        (["", "x"], "an empty name"),
        (["ok", "/tmp/evil"], "'/'"),
        (["x\0y"], "NUL"),
    ],
)
def test_a_listing_cannot_name_a_path(hostile_sftp, area, names, why):
    (area / "remote" / "d").mkdir()
    with pytest.raises(pyssh.SFTPError) as e:
        hostile_sftp(
            {"names": names},
            lambda f: f.download(str(area / "remote" / "d"), to=area / "to", verbose=False),
        )
    protocol_error(e, why)
    assert not (area / "evil").exists() and not os.path.exists("/tmp/evil")
    assert [p for p in (area / "to").rglob("*") if p.is_file()] == []


def test_where_the_server_says_a_path_leads_is_never_a_local_name(hostile_sftp, area):
    """download("dir/."), ("dir/sub/..") copy the directory's contents into the
    target; the names come from the user's arguments and the listing, never from
    REALPATH (here answering "../../evil")."""
    d = area / "remote" / "d"
    (d / "sub").mkdir(parents=True)
    (d / "a.txt").write_bytes(b"a")

    def fetch(f):
        return (
            f.download(f"{d}/.", to=area / "to", verbose=False),
            f.download(f"{d}/sub/..", to=area / "to", verbose=False),
        )

    out = hostile_sftp({"realpath": "../../evil"}, fetch)
    assert out == ([str(area / "to")], [str(area / "to")])
    assert sorted(os.listdir(area / "to")) == ["a.txt", "sub"]
    assert not (area / "evil").exists() and not (area.parent / "evil").exists()


@pytest.mark.slow
def test_a_tree_that_never_ends(hostile_sftp, area):
    """Every directory lists a subdirectory: walk() and download() stop at 64 levels
    (before: walk recursed until RecursionError)."""

    def walk(f):
        with pytest.raises(pyssh.SFTPError, match="more than 64 directories deep") as e:
            for _ in f.walk(str(area)):
                pass
        assert e.value.errno == errno.ELOOP
        with pytest.raises(pyssh.SFTPError, match="more than 64 directories deep"):
            f.download(str(area / "remote"), to=area / "to", verbose=False)

    hostile_sftp({"names": ["d"], "names_mode": 0o40755}, walk)


def test_a_listing_that_never_ends(hostile_sftp, area):
    def listing(f):
        f.max_listing = 5000
        with pytest.raises(pyssh.SFTPError, match="more than 5000 entries") as e:
            f.listdir(str(area))
        return e.value.errno

    assert hostile_sftp({"list_forever": True}, listing) == errno.EFBIG


# ---- time --------------------------------------------------------------------------


def finishes(work, within=60):
    """Run work() in a thread: True if it ended within `within` seconds (a hang
    bound, not a speed check)."""
    box = []
    t = threading.Thread(target=lambda: box.append(work()), daemon=True)
    t.start()
    t.join(within)
    return not t.is_alive()


@pytest.mark.slow
def test_a_stalled_server_times_out(hostile_sftp, area):
    rpath, _ = remote_file(area, 4096 * KIB)
    dest = area / "to" / "f.bin"
    errors = []

    def get():
        try:
            hostile_sftp({"stall_after": 8}, lambda f: f.get(rpath, dest), timeout=1)
        except pyssh.SSHTimeoutError as e:
            errors.append(e)

    assert finishes(get)
    assert len(errors) == 1, errors
    assert "SFTP download" in str(errors[0]) and "timeout=1" in str(errors[0])
    assert os.listdir(area / "to") == []


@pytest.mark.slow
def test_a_slow_server_that_keeps_moving_is_not_cut_off(hostile_sftp, area):
    """Each reply comes 0.1 s late, 40 replies in all: four times the timeout of 1 s
    in total, but never a second without progress."""
    rpath, data = remote_file(area, 40 * 32 * KIB)
    hostile_sftp({"delay": 0.1}, lambda f: f.get(rpath, area / "to" / "f.bin"), timeout=1)
    assert (area / "to" / "f.bin").read_bytes() == data


# ---- what is shown -------------------------------------------------------------------


def test_the_servers_message_is_shown_escaped(hostile_sftp, area):
    with pytest.raises(pyssh.SFTPFileNotFoundError) as e:
        hostile_sftp(
            {"status": {17: 2}, "message": "no\x1b]0;pwned\x07 such\x1b[2J file"},
            lambda f: f.stat(str(area)),
        )
    text = str(e.value)
    assert "\x1b" not in text and "\x07" not in text
    assert "no\\x1b]0;pwned\\x07 such\\x1b[2J file" in text
