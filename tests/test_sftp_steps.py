"""SFTP transfers written once as flows (Steps, pyssh/_tcp.py): the session's
_sftp_upload_steps / _sftp_download_steps driven by run_steps, or step by step by
hand (as a Group's worker does), give what the blocking API gives; each step a
flow yields is one C call that would wait (an _ssh.Op of an _ssh.SFTP method called
with defer=True). Against the real sshd, which runs on this machine."""

import os

import pytest

import pyssh
from pyssh import _sftp, _ssh
from pyssh._tcp import run_steps


@pytest.fixture
def session(server):
    with server.connect() as s:
        yield s


@pytest.fixture
def area(tmp_path):
    os.chmod(tmp_path, 0o755)
    for name in ("local", "remote", "back", "again"):
        (tmp_path / name).mkdir()
    return tmp_path


def make_tree(root):
    """Small files in nested directories, an empty one, and a file of 1 MiB + 1
    (it goes alone: put/get and the C upload/download loops)."""
    files = {}
    for d in ("a", "a/b", "c"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "empty").mkdir()
    for i in range(30):
        rel = ("a", "a/b", "c", ".")[i % 4] + f"/f{i:02d}"
        files[rel] = os.urandom(i * 113 % 3000)
    files["c/big"] = os.urandom((1 << 20) + 1)
    for rel, data in files.items():
        (root / rel).write_bytes(data)
    return files


def contents(root):
    out = {}
    for d, dirs, names in os.walk(root):
        for n in dirs + names:
            p = os.path.join(d, n)
            out[os.path.relpath(p, root)] = None if os.path.isdir(p) else open(p, "rb").read()
    return out


def by_hand(flow, seen):
    """run_steps, recording what the flow yields; each item waited for here."""
    value, error = None, None
    while True:
        try:
            item = flow.throw(error) if error is not None else flow.send(value)
        except StopIteration as stop:
            return stop.value
        seen.append(item)
        value, error = None, None
        try:
            value = item.wait() if isinstance(item, _ssh.Op) else item.blocking()
        except BaseException as e:
            error = e


def test_upload_and_download_flows(session, area):
    """A tree up and back down through the flows: the same bytes, the same paths
    returned as the blocking API returns; every item yielded is a deferred C call."""
    src = area / "local" / "tree"
    src.mkdir()
    files = make_tree(src)
    seen = []
    up = by_hand(session._sftp_upload_steps(str(src), str(area / "remote"), verbose=False), seen)
    assert up == [str(area / "remote" / "tree")]
    down = run_steps(
        session._sftp_download_steps(
            str(area / "remote" / "tree"), str(area / "back"), verbose=False
        )
    )
    assert down == [str(area / "back" / "tree")]
    want = contents(src)
    assert contents(area / "remote" / "tree") == want
    assert contents(area / "back" / "tree") == want
    assert {os.path.normpath(rel): data for rel, data in files.items()} == {
        rel: data for rel, data in want.items() if data is not None
    }
    assert seen and all(isinstance(i, _ssh.Op) for i in seen)
    # the blocking API, unaffected: the same again
    assert session.sftp_download(
        str(area / "remote" / "tree"), str(area / "again"), verbose=False
    ) == [str(area / "again" / "tree")]
    assert contents(area / "again" / "tree") == want
    with session.sftp() as f:
        assert f.upload(str(src / "a"), str(area / "remote"), verbose=False) == [
            str(area / "remote" / "a")
        ]
    assert contents(area / "remote" / "a") == contents(src / "a")


def test_two_flows_interleaved(session, area):
    """Two transfers on two channels of one session, moved a step at a time in
    turn (as one worker moves many): both complete, each with its own files."""
    for name in ("x", "y"):
        (area / "local" / name).mkdir()
        for i in range(20):
            (area / "local" / name / f"{name}{i}").write_bytes(os.urandom(100 + i))
    (area / "local" / "x" / "large").write_bytes(os.urandom(300_000))
    flows = {
        name: session._sftp_upload_steps(
            str(area / "local" / name), str(area / "remote"), verbose=False
        )
        for name in ("x", "y")
    }
    pending = {name: (None, None) for name in flows}
    results = {}
    while pending:
        for name in list(pending):
            value, error = pending[name]
            try:
                item = flows[name].throw(error) if error else flows[name].send(value)
            except StopIteration as stop:
                results[name] = stop.value
                del pending[name]
                continue
            try:
                pending[name] = (
                    item.wait() if isinstance(item, _ssh.Op) else item.blocking(),
                    None,
                )
            except BaseException as e:
                pending[name] = (None, e)
    assert results == {n: [str(area / "remote" / n)] for n in ("x", "y")}
    for name in ("x", "y"):
        assert contents(area / "remote" / name) == contents(area / "local" / name)


def test_flow_errors_and_open_steps(session, area):
    """A flow raises what the blocking call raises; open_steps gives a started SFTP
    channel, as session.sftp() does."""
    with pytest.raises(pyssh.SFTPFileNotFoundError):
        run_steps(
            session._sftp_download_steps(str(area / "remote" / "nothing"), str(area / "back"))
        )
    with pytest.raises(pyssh.SFTPNotADirectoryError):
        run_steps(session._sftp_upload_steps(str(area / "local"), str(area / "remote" / "no")))
    with pytest.raises(pyssh.SFTPNotADirectoryError):
        session.sftp_upload(str(area / "local"), str(area / "remote" / "no"))
    f = run_steps(_sftp.open_steps(session, 30))
    with f:
        assert not f.closed and f.version == 3
        assert f.max_read >= 1 and f.max_write >= 1
        (area / "remote" / "one").write_bytes(b"data")
        assert f.stat(str(area / "remote" / "one")).st_size == 4
    assert f.closed
    with session.sftp() as g:
        assert g.version == f.version and g.extensions == f.extensions


def test_a_flow_closed_while_it_waits(session, area):
    """A flow given up (closed) where it would wait for the data: it waits for
    nothing more (no cleanup request), and its local cleanup still runs: no file
    descriptor kept, no temporary file left."""
    (area / "remote" / "d").mkdir()
    (area / "remote" / "d" / "big").write_bytes(os.urandom((1 << 20) + 1))
    fds = len(os.listdir("/proc/self/fd"))
    flow = session._sftp_download_steps(str(area / "remote" / "d"), str(area / "back"))
    value = None
    while True:
        item = flow.send(value)
        if item.what == "SFTP download":
            break
        value = item.wait()
    # whoever gives up a flow gives up the Op it waits on first (a Group's worker:
    # Driver.abandon()): the Op's claim on the channel goes, then the flow closes
    del item
    flow.close()  # no RuntimeError: it yielded nothing more
    assert [n for _, _, names in os.walk(area / "back") for n in names] == []
    assert len(os.listdir("/proc/self/fd")) == fds
    assert session.sftp_download(str(area / "remote" / "d"), str(area / "back"), verbose=False)
    assert (area / "back" / "d" / "big").read_bytes() == (
        area / "remote" / "d" / "big"
    ).read_bytes()
