"""Transfers over long paths (issue: high-throughput transfers over real networks):
receive windows that grow with the path, and big files striped over several SFTP
channels of one session, against the real sshd (directly, or through
tests/delay_relay.py, which adds a round trip). What every transfer promises is in
test_transfers.py; here, what striping and window growth add to it."""

import errno
import hashlib
import logging
import os
import signal
import subprocess

import pytest
from delay_relay import DelayRelay

import pyssh

MiB = 1 << 20


def sha(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@pytest.fixture
def area(tmp_path):
    os.chmod(tmp_path, 0o755)
    for d in ("local", "remote", "back"):
        (tmp_path / d).mkdir()
    return tmp_path


def random_file(path, size):
    with open(path, "wb") as f:
        while size > 0:
            n = min(size, 8 * MiB)
            f.write(os.urandom(n))
            size -= n
    return path


def relayed(server, relay, tmp_path, **kw):
    """A session to `server` through `relay` (its own known_hosts line)."""
    kh = tmp_path / "known_hosts_relay"
    key = " ".join(server.host_key_line.split()[1:3])
    kh.write_text(f"[127.0.0.1]:{relay.port} {key}\n")
    return server.connect(
        address=f"{server.user}@127.0.0.1:{relay.port}", known_hosts=str(kh), **kw
    )


def descendants(pid):
    """The processes below `pid` (ours: the test sshd's)."""
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}  # pgrep under ASan
    out, todo = [], [pid]
    while todo:
        kids = subprocess.run(
            ["pgrep", "-P", str(todo.pop())], capture_output=True, text=True, env=env
        ).stdout.split()
        out += [int(k) for k in kids]
        todo += [int(k) for k in kids]
    return out


# ---- striping ----------------------------------------------------------------------------


@pytest.mark.parametrize("streams", [2, 5])
def test_a_striped_file_round_trips(server, area, streams):
    """put and get over `streams` channels: the same bytes (an odd size: the stripes'
    last requests are short), the mode, no temporary file; the extra channels are
    kept for the next transfer."""
    size = 24 * MiB + 12345
    src = random_file(area / "local" / "f.bin", size)
    os.chmod(src, 0o640)
    remote = area / "remote" / "f.bin"
    with server.connect() as s, s.sftp(timeout=30) as f:
        assert f.put(src, str(remote), streams=streams) == size
        assert sha(remote) == sha(src) and (os.stat(remote).st_mode & 0o777) == 0o640
        assert len(f._pool) == streams - 1
        assert f.get(str(remote), area / "back" / "f.bin", streams=streams) == size
        assert len(f._pool) == streams - 1  # the same channels again
    assert sha(area / "back" / "f.bin") == sha(src)
    assert os.listdir(area / "back") == ["f.bin"]


def test_streams_must_be_sensible(server, area):
    src = random_file(area / "local" / "f.bin", 100)
    with server.connect() as s, s.sftp() as f:
        for bad in (0, 17, -1, 2.0, True, "4"):
            with pytest.raises(ValueError, match="streams must be an int from 1 to 16"):
                f.put(src, str(area / "remote" / "f.bin"), streams=bad)
        assert f._pool == []


@pytest.mark.slow
def test_a_small_file_is_not_striped(server, area):
    """Under 2 x 4 MiB a file goes over one channel whatever streams says: no
    channels are opened for it."""
    src = random_file(area / "local" / "f.bin", 7 * MiB)
    with server.connect() as s, s.sftp() as f:
        f.put(src, str(area / "remote" / "f.bin"), streams=8)
        f.get(str(area / "remote" / "f.bin"), area / "back" / "f.bin", streams=8)
        assert f._pool == []
    assert sha(area / "back" / "f.bin") == sha(src)


@pytest.mark.slow
@pytest.mark.parametrize("op", ["get", "put"])
def test_a_stream_that_dies_is_a_clean_error(fresh_server, area, op):
    """One stripe's server process is killed mid-transfer: an SFTPError that says
    the server closed a channel, no file under its final name (a download's
    temporary file is gone), and the session and its SFTP channel go on working,
    striping again over fresh channels."""
    size = 1 << 30  # sparse: long enough for a progress call
    src = area / ("remote" if op == "get" else "local") / "f.bin"
    with open(src, "wb") as fh:
        fh.truncate(size)
    dst = area / ("back" if op == "get" else "remote") / "g.bin"
    with fresh_server.connect() as s, s.sftp(timeout=30) as f:
        before = set(descendants(fresh_server.pid))
        killed = []

        def kill_a_stripe(moved, total):
            if not killed:
                stripes = sorted(set(descendants(fresh_server.pid)) - before)
                killed.append(stripes[-1])
                os.kill(stripes[-1], signal.SIGKILL)

        with pytest.raises(pyssh.SFTPError) as e:
            getattr(f, op)(str(src), dst, streams=4, progress=kill_a_stripe)
        assert killed and e.value.errno == errno.EPROTO
        assert "closed the SFTP channel" in str(e.value)
        if op == "get":
            assert os.listdir(area / "back") == []
        assert f.stat(str(src)).st_size == size  # the main channel still works
        getattr(f, op)(str(src), dst, streams=4)
        assert sha(dst) == sha(src)


class Stop(Exception):
    pass


def stop_after(limit):
    def progress(moved, total):
        if moved > limit:
            raise Stop()

    return progress


@pytest.mark.slow
def test_a_striped_download_resumes(server, area):
    """A striped download with resume=True writes into the file itself; stopped
    midway (an exception from progress), the file is cut back to what all arrived
    (the stripes leave gaps after it), so a second resume completes it exactly."""
    size = 512 * MiB + 777  # long enough for a progress call: random, then sparse
    src = random_file(area / "remote" / "f.bin", 16 * MiB)
    with open(src, "r+b") as fh:
        fh.truncate(size)
    dst = area / "back" / "f.bin"
    with server.connect() as s, s.sftp(timeout=30) as f:
        with pytest.raises(Stop):
            f.get(str(src), dst, resume=True, streams=4, progress=stop_after(1))
        kept = os.path.getsize(dst)
        assert 0 < kept < size
        with open(src, "rb") as a, open(dst, "rb") as b:
            while block := b.read(8 * MiB):
                assert a.read(len(block)) == block  # no gap, no stray byte
        assert f.get(str(src), dst, resume=True, streams=4) == size - kept
    assert sha(dst) == sha(src)


@pytest.mark.slow
def test_a_striped_upload_resumes(server, area):
    """A striped upload stopped midway may leave gaps in the remote file, but none
    further than SFTP_STRIPE_AHEAD before its end: a resume goes back that far and
    the file comes out whole."""
    size = 100 * MiB + 4321
    src = random_file(area / "local" / "f.bin", size)
    remote = area / "remote" / "f.bin"
    with server.connect() as s, s.sftp(timeout=30) as f:
        with pytest.raises(Stop):
            f.put(src, str(remote), streams=6, progress=stop_after(80 * MiB))
        partial = os.path.getsize(remote)
        assert partial > pyssh._ssh.SFTP_STRIPE_AHEAD
        # WRITEs in flight when it stopped may still land: the size can grow a little
        moved = f.put(src, str(remote), resume=True, streams=6)
        assert 0 < moved <= size - partial + pyssh._ssh.SFTP_STRIPE_AHEAD
    assert sha(remote) == sha(src)


@pytest.mark.slow
def test_a_server_that_allows_few_channels(area, caplog):
    """sshd's MaxSessions 3: the main channel and two more; a transfer asking for 8
    streams uses what the server allows and says so in the log."""
    from pyssh.testing import SSHServer

    src = random_file(area / "local" / "f.bin", 40 * MiB)
    with SSHServer(extra_config=["MaxSessions 3"]) as srv, srv.connect() as s, s.sftp() as f:
        f.put(src, str(area / "remote" / "f.bin"), streams=8)
        assert 1 <= len(f._pool) <= 2
        assert "the server refused" in caplog.text
        f.get(str(area / "remote" / "f.bin"), area / "back" / "f.bin", streams=8)
    assert sha(area / "back" / "f.bin") == sha(src)


# ---- long paths --------------------------------------------------------------------------


@pytest.mark.slow
def test_streams_follow_the_round_trip(server, tmp_path):
    """By default, one channel on loopback, and more the longer the round trip."""
    with server.connect() as s, s.sftp() as f:
        assert f._streams(None, 1 << 30) == 1
    with DelayRelay(server.port, rtt=0.04) as relay:
        with relayed(server, relay, tmp_path) as s, s.sftp() as f:
            assert 0.035 < f._rtt < 0.2
            assert f._streams(None, 1 << 30) == 8
            assert f._streams(None, 12 * MiB) == 3  # one per 4 MiB at most
            assert f._streams(None, 1 * MiB) == 1


@pytest.mark.slow
def test_the_receive_window_grows_with_the_path_and_stays_bounded(server, area, caplog):
    """Through a 40 ms round trip a download's window grows past libssh's 2 MiB (the
    server sent a whole window per round trip), never past 64 MiB; striped, the
    channels share 128 MiB. On loopback it stays at 2 MiB."""
    size = 48 * MiB
    src = random_file(area / "remote" / "f.bin", size)
    with server.connect() as s, s.sftp() as f:
        f.get(str(src), area / "back" / "a.bin", streams=1)
        assert f._c.window == 2 * MiB
    with DelayRelay(server.port, rtt=0.04) as relay:
        with relayed(server, relay, area) as s, s.sftp(timeout=30) as f:
            f.get(str(src), area / "back" / "b.bin", streams=1)
            assert 2 * MiB < f._c.window <= 64 * MiB
            f.get(str(src), area / "back" / "c.bin", streams=4)
            assert all(c.window <= 32 * MiB for c in f._pool)
            assert f._c.window <= 32 * MiB
    for name in "abc":
        assert sha(area / "back" / f"{name}.bin") == sha(src)


@pytest.mark.slow
def test_scp_downloads_grow_their_window_too(server, area, tmp_path):
    """SCP's channel is a session channel like SFTP's: over a long path its window
    grows as well, and the copy is whole."""
    size = 40 * MiB
    src = random_file(area / "remote" / "f.bin", size)
    with DelayRelay(server.port, rtt=0.04) as relay:
        with relayed(server, relay, tmp_path) as s:
            s.scp_download(str(src), to=area / "back", verbose=False)
    assert sha(area / "back" / "f.bin") == sha(src)


@pytest.fixture(autouse=True)
def _quiet(caplog):
    caplog.set_level(logging.INFO, logger="pyssh")


# ---- several connections -----------------------------------------------------------------


@pytest.mark.slow
def test_a_file_over_several_connections_round_trips(server, area):
    """connections=3: three connections each move one range of the file over their
    own channels, into and from the same file; the extra connections are kept for
    the next transfer and closed with the SFTP object."""
    size = 40 * MiB + 999
    src = random_file(area / "local" / "f.bin", size)
    remote = area / "remote" / "f.bin"
    with server.connect() as s:
        with s.sftp(timeout=30) as f:
            assert f.put(src, str(remote), streams=2, connections=3) == size
            assert sha(remote) == sha(src)
            assert len(f._conns) == 2
            more = [c._session for c in f._conns]
            assert f.get(str(remote), area / "back" / "f.bin", connections=3) == size
            assert len(f._conns) == 2
        assert all(m.closed for m in more)
    assert sha(area / "back" / "f.bin") == sha(src)
    assert os.listdir(area / "back") == ["f.bin"]


def test_connections_must_be_sensible(server, area):
    src = random_file(area / "local" / "f.bin", 100)
    with server.connect() as s, s.sftp() as f:
        for bad in (0, 9, 2.5, True):
            with pytest.raises(ValueError, match="connections must be an int from 1 to 8"):
                f.get(str(src), area / "back" / "f.bin", connections=bad)
        assert f._conns == []


@pytest.mark.slow
def test_more_connections_where_the_server_allows_few_channels(area, caplog):
    """MaxSessions 2: one more channel per connection; asked for 8 streams, a transfer
    goes over more connections instead (the default connections=None)."""
    from pyssh.testing import SSHServer

    src = random_file(area / "local" / "f.bin", 40 * MiB)
    with SSHServer(extra_config=["MaxSessions 2"]) as srv, srv.connect() as s, s.sftp() as f:
        f.put(src, str(area / "remote" / "f.bin"), streams=8)  # learns the limit
        f.get(str(area / "remote" / "f.bin"), area / "back" / "f.bin", streams=8)
        assert len(f._conns) >= 1
    assert sha(area / "back" / "f.bin") == sha(src)


@pytest.mark.slow
def test_a_download_over_connections_that_fails_then_resumes(fresh_server, area):
    """One connection's server process killed mid-download (resume=True): the
    error, the file cut back to the ranges complete from its start, and a resume
    completes it exactly."""
    size = 1 << 30  # sparse: long enough for a progress call
    src = area / "remote" / "f.bin"
    with open(src, "wb") as fh:
        fh.write(os.urandom(MiB))
        fh.truncate(size)
    dst = area / "back" / "f.bin"
    with fresh_server.connect() as s, s.sftp(timeout=30) as f:
        before = set(descendants(fresh_server.pid))
        killed = []

        def kill_a_connection(moved, total):
            if not killed:
                new = sorted(set(descendants(fresh_server.pid)) - before)
                killed.append(new[-1])
                os.kill(new[-1], signal.SIGKILL)

        with pytest.raises(pyssh.SSHError):
            f.get(str(src), dst, resume=True, streams=1, connections=2, progress=kill_a_connection)
        assert killed
        kept = os.path.getsize(dst)
        assert kept < size
        with open(src, "rb") as a, open(dst, "rb") as b:
            assert a.read(MiB) == b.read(MiB)
        f.get(str(src), dst, resume=True, streams=1, connections=1)
    assert sha(dst) == sha(src)
