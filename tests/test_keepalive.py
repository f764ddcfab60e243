"""Keepalive: keepalive@openssh.com probes while anything waits, and a server that
stops answering (frozen with SIGSTOP: its kernel still takes what is sent, so only
the probes can tell) found lost in every kind of wait: a command, an SFTP transfer,
a background tunnel. The sshd is each test's own (fresh_server): its processes are
stopped and continued by their pids, found as its descendants."""

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time

import pytest

import pyssh
from pyssh import _config

from conftest import Echo, wait_until

# probes after 0.5 s of silence, the connection lost 0.5 s after the third: a frozen
# server is found lost 2 s after it last sent anything
INTERVAL, COUNT = 0.5, 3
# longer than that, with room for a loaded machine, and far shorter than never
BOUND = 8


def descendants(pid):
    """The pids of every process below `pid` (pgrep -P, recursively)."""
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    found = []
    for child in subprocess.run(
        ["pgrep", "-P", str(pid)], capture_output=True, text=True, env=env
    ).stdout.split():
        found.append(int(child))
        found += descendants(int(child))
    return found


def signal_all(pids, sig):
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


@contextlib.contextmanager
def frozen(server):
    """Stop the processes of `server`'s connections (not the listening sshd) until the
    block ends; yields a function that freezes them (again, catching new ones)."""
    stopped = []

    def freeze():
        pids = descendants(server.pid)
        signal_all(pids, signal.SIGSTOP)
        stopped.extend(pids)

    try:
        yield freeze
    finally:
        signal_all(stopped, signal.SIGCONT)


def freeze_later(freeze, delay=0.3):
    t = threading.Timer(delay, freeze)
    t.start()
    return t


def closes_promptly(s):
    """Session.close() returns (in a thread, given BOUND seconds): closing must not wait
    for a frozen server."""
    errors = []

    def close():
        try:
            s.close()
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    th = threading.Thread(target=close, daemon=True)
    th.start()
    th.join(BOUND)
    assert not errors, errors
    return not th.is_alive() and s.closed


def check_lost(e, interval=INTERVAL, count=COUNT):
    text = str(e)
    assert "has not answered for" in text, text
    assert f"keepalive_interval={interval:g}, keepalive_count_max={count}" in text, text
    assert "ServerAliveInterval" in text


@pytest.fixture
def echo():
    e = Echo()
    yield e
    e.close()


# ---- a frozen server ----------------------------------------------------------------------------


@pytest.mark.slow
def test_frozen_server_ends_a_running_command(fresh_server):
    s = fresh_server.connect(keepalive_interval=INTERVAL, keepalive_count_max=COUNT)
    with frozen(fresh_server) as freeze:
        timer = freeze_later(freeze)
        # without the keepalive this would end in SSHTimeoutError after BOUND seconds
        with pytest.raises(pyssh.ConnectError) as e:
            s.exec_internal("sleep 60", timeout=BOUND)
        timer.join()
        check_lost(e.value)
        assert not s.connected
        with pytest.raises(pyssh.ConnectError, match="has not answered"):
            s.exec_internal("true", timeout=BOUND)  # the session is dead for good
        assert closes_promptly(s)
    with pytest.raises(pyssh.SessionClosedError):
        s.exec_internal("true")


@pytest.mark.slow
def test_frozen_server_ends_an_sftp_download(fresh_server, tmp_path):
    remote = tmp_path / "big"
    with open(remote, "wb") as f:
        f.truncate(1 << 30)  # sparse: longer to download than the freeze takes to come
    s = fresh_server.connect(keepalive_interval=INTERVAL, keepalive_count_max=COUNT)
    with frozen(fresh_server) as freeze:
        calls = []

        def progress(moved, total):
            if not calls:
                freeze()  # data flows: stop the server in the middle of it
            calls.append(moved)

        sftp = s.sftp(timeout=BOUND)
        with pytest.raises(pyssh.ConnectError) as e:
            sftp.get(str(remote), str(tmp_path / "copy"), progress=progress, streams=1)
        check_lost(e.value)
        assert calls and calls[-1] < 1 << 30
        assert closes_promptly(s)
    assert not (tmp_path / "copy").exists()


@pytest.mark.slow
def test_frozen_server_ends_background_tunnels(fresh_server, echo):
    s = fresh_server.connect(keepalive_interval=INTERVAL, keepalive_count_max=COUNT)
    local = s.forward_local(0, echo.address)
    remote = s.forward_remote(0, echo.address, bind_address="127.0.0.1")
    c = socket.create_connection(("127.0.0.1", local.port))
    c.sendall(b"x")
    assert c.recv(1) == b"x"
    with frozen(fresh_server) as freeze:
        freeze()
        # nothing else waits on the session: the tunnels' own loop finds it lost
        assert wait_until(lambda: not local.active and not remote.active, BOUND)
        for tun in (local, remote):
            assert isinstance(tun.error, pyssh.ConnectError), tun.error
            check_lost(tun.error)
        c.settimeout(BOUND)
        assert c.recv(1) == b""  # the tunnel's connection was closed
        c.close()
        assert closes_promptly(s)


@pytest.mark.slow
def test_lost_from_the_configuration(fresh_server, tmp_path):
    cfg = tmp_path / "config"
    cfg.write_text("ServerAliveInterval 60\nServerAliveCountMax 1\n")
    # the argument wins over ServerAliveInterval; ServerAliveCountMax is taken
    s = fresh_server.connect(config=str(cfg), keepalive_interval=0.3)
    with frozen(fresh_server) as freeze:
        freeze()
        with pytest.raises(pyssh.ConnectError) as e:
            s.exec_internal("true", timeout=BOUND)
        check_lost(e.value, 0.3, 1)
        assert closes_promptly(s)


# ---- a healthy server ---------------------------------------------------------------------------


@pytest.mark.slow
def test_answered_probes_keep_an_idle_wait_going_without_cpu(fresh_server):
    # a probe after 0.1 s of silence, lost after two unanswered: a 2 s silent command
    # outlives that only because the server answers the probes
    s = fresh_server.connect(keepalive_interval=0.1, keepalive_count_max=2)
    cpu = time.process_time()
    assert s.exec_internal("sleep 2").status == 0
    used = time.process_time() - cpu
    assert used < 0.15, used  # the wait sleeps in poll(): no spinning between probes
    assert s.connected
    s.close()


@pytest.mark.slow
def test_a_remote_forward_asked_for_behind_unanswered_probes(fresh_server, echo):
    # Probes go out to a frozen server, then a tcpip-forward request; once the server
    # runs again it answers them in order: the probes' replies first (REQUEST_FAILURE
    # from OpenSSH), which must not be taken for the forward's.
    s = fresh_server.connect(keepalive_interval=0.2, keepalive_count_max=50)
    with frozen(fresh_server) as freeze:
        freeze()
        busy = threading.Thread(target=s.exec_internal, args=("true",))
        busy.start()  # a wait: it sends the probes
        time.sleep(0.7)  # three probes or so go out
        for pid in descendants(fresh_server.pid):
            threading.Timer(0.3, os.kill, (pid, signal.SIGCONT)).start()
        with s.forward_remote(0, echo.address, bind_address="127.0.0.1") as tun:
            c = socket.create_connection(("127.0.0.1", tun.port), timeout=BOUND)
            c.sendall(b"y")
            assert c.recv(1) == b"y"
            c.close()
        busy.join()
    assert s.connected
    s.close()


@pytest.mark.slow
def test_keepalive_off_by_default_and_with_zero(server):
    # nothing to see from outside but that the session works; the arguments are taken
    for kwargs in ({}, {"keepalive_interval": 0}, {"keepalive_interval": None}):
        with server.connect(**kwargs) as s:
            assert s.exec_internal("echo ok").stdout == b"ok\n"


# ---- arguments and configuration ---------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, exc",
    [
        ({"keepalive_interval": -1}, ValueError),
        ({"keepalive_interval": float("nan")}, ValueError),
        ({"keepalive_interval": float("inf")}, ValueError),
        ({"keepalive_interval": "30"}, TypeError),
        ({"keepalive_interval": True}, TypeError),
        ({"keepalive_count_max": 0}, ValueError),
        ({"keepalive_count_max": 1.5}, TypeError),
        ({"keepalive_count_max": True}, TypeError),
    ],
)
def test_bad_arguments_fail_before_connecting(kwargs, exc):
    with pytest.raises(exc, match="keepalive_"):
        pyssh.connect("nobody@127.0.0.1:1", config=False, **kwargs)


@pytest.mark.parametrize(
    "text, seconds",
    [("30", 30), ("0", 0), ("90s", 90), ("1m30s", 90), ("1H", 3600), ("2w", 1209600), ("0.5", 0.5)],
)
def test_openssh_time_format(text, seconds):
    assert _config.seconds(text) == seconds


@pytest.mark.parametrize("text", ["", "x", "1x", "-1", "1 m", "m"])
def test_not_a_time(text):
    with pytest.raises(ValueError):
        _config.seconds(text)


def test_config_options(tmp_path):
    cfg = tmp_path / "config"
    cfg.write_text(
        "Host other\n  ServerAliveInterval 5\nHost *\n  ServerAliveInterval 1m\n"
        "  ServerAliveCountMax 4\n"
    )
    opts = _config.lookup("example.org", config=str(cfg), home=str(tmp_path))
    assert _config.keepalive(opts) == (60, 4)
    assert _config.keepalive({}) == (None, None)
    with pytest.raises(ValueError, match="ServerAliveCountMax"):
        _config.keepalive({"serveralivecountmax": ["three"]})
    with pytest.raises(ValueError, match="ServerAliveInterval"):
        _config.keepalive({"serveraliveinterval": ["soon"]})


def test_bad_config_value_fails_the_connect(server, tmp_path):
    cfg = tmp_path / "config"
    cfg.write_text("ServerAliveInterval 1\nServerAliveCountMax 0\n")
    with pytest.raises(ValueError, match="keepalive_count_max must be at least 1"):
        server.connect(config=str(cfg))
