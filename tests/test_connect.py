"""Connecting, printing, info, lifetime, failures, interrupts and threads."""

import gc
import logging
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
import weakref

import pytest

import pyssh

from conftest import open_sockets


def fingerprint_of(pub_path):
    out = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", pub_path],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.split()[1]


def test_connect_print_and_info(server):
    s = server.connect()
    try:
        text = str(s)
        fp = fingerprint_of(server.host_key + ".pub")
        assert (
            text == f"<ssh session>\nconnected: {server.user}@127.0.0.1:{server.port}\nserver: {fp}"
        )
        assert repr(s) == text
        info = s.info()
        assert info["user"] == server.user
        assert info["host"] == "127.0.0.1"
        assert info["port"] == server.port
        assert info["identity"] == server.client_key
        assert info["connected"] is True
        assert info["fingerprint"] == info["sha256"] == fp
        md = subprocess.run(
            ["ssh-keygen", "-l", "-E", "sha1", "-f", server.host_key + ".pub"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()[1]
        import base64

        raw = base64.b64decode(md.split(":", 1)[1] + "=")
        assert info["sha1"] == ":".join(f"{b:02x}" for b in raw)
        assert info["key_type"] == "ssh-ed25519"
        assert info["server_banner"].startswith("SSH-2.0-OpenSSH")
        for k in ("cipher", "mac", "kex", "hostkey"):
            assert info[k], k
        assert pyssh.ssh_session_info(s) == info
    finally:
        pyssh.ssh_disconnect(s)
    assert str(s) == "<ssh session>\ndisconnected"
    assert not s.connected


def test_context_manager_and_close_twice(server):
    with server.connect() as s:
        assert s.connected and not s.closed
    assert s.closed and not s.connected
    s.close()
    s.disconnect()


def test_closed_session_raises(server):
    s = server.connect()
    s.disconnect()
    with pytest.raises(pyssh.SessionClosedError):
        s.info()
    for call in (s._auth_none, s._auth_list, s._server_key, s._known_host, s._algorithms):
        with pytest.raises(pyssh.SessionClosedError):
            call()
    with pytest.raises(pyssh.SessionClosedError):
        s._configure("x")


def test_garbage_collected_session_closes_its_socket(server):
    before = open_sockets()
    s = server.connect()
    assert open_sockets() == before + 1
    ref = weakref.ref(s)
    del s
    gc.collect()
    assert ref() is None
    assert open_sockets() == before


def test_closed_port():
    port = pyssh.testing.free_port()
    with pytest.raises(pyssh.ConnectError) as e:
        pyssh.connect(f"u@127.0.0.1:{port}", config=False, timeout=5)
    assert isinstance(e.value, ConnectionError)
    assert "refused" in str(e.value).lower()
    assert f"127.0.0.1:{port}" in str(e.value)


def test_unresolvable_name():
    with pytest.raises(pyssh.ConnectError) as e:
        pyssh.connect("u@no-such-host.invalid", config=False, timeout=20)
    assert "no-such-host.invalid" in str(e.value)
    assert "resolve" in str(e.value)


@pytest.mark.slow
def test_not_an_ssh_server():
    with socket.socket() as lst:
        lst.bind(("127.0.0.1", 0))
        lst.listen()
        port = lst.getsockname()[1]

        def talk():
            c, _ = lst.accept()
            c.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            # kept open until the client gives up on it: it must do so on what it read,
            # not on the connection closing
            c.settimeout(30)
            while c.recv(4096):
                pass
            c.close()

        t = threading.Thread(target=talk)
        t.start()
        with pytest.raises(pyssh.SSHError) as e:
            pyssh.connect(f"u@127.0.0.1:{port}", config=False, timeout=10, host_key_policy="ignore")
        t.join()
    assert "127.0.0.1" in str(e.value)


@pytest.fixture
def silent_listener():
    """A listening socket that never speaks (the kernel accepts the TCP connection;
    accept() on it says that a client has connected)."""
    with socket.socket() as lst:
        lst.bind(("127.0.0.1", 0))
        lst.listen(16)
        yield lst


@pytest.fixture
def silent_server(silent_listener):
    """The port of silent_listener."""
    return silent_listener.getsockname()[1]


@pytest.mark.slow
def test_timeout_against_a_silent_server_leaves_no_socket(silent_server):
    before = open_sockets()
    with pytest.raises(pyssh.SSHTimeoutError) as e:
        pyssh.connect(f"u@127.0.0.1:{silent_server}", config=False, timeout=0.5)
    assert isinstance(e.value, TimeoutError)
    assert "timed out" in str(e.value)
    assert open_sockets() == before


@pytest.mark.slow
def test_other_threads_run_while_connecting(silent_server):
    count = 0
    stop, running = threading.Event(), threading.Event()

    def spin():
        nonlocal count
        running.set()
        while not stop.is_set():
            count += 1

    t = threading.Thread(target=spin)
    t.start()
    try:
        assert running.wait(10)
        start = count
        with pytest.raises(pyssh.SSHTimeoutError):
            pyssh.connect(f"u@127.0.0.1:{silent_server}", config=False, timeout=1.0)
        during = count - start
    finally:
        stop.set()
        t.join()
    # with the GIL held for that second, the spinning thread would not have run at all
    assert during > 10000


@pytest.mark.slow
def test_ctrl_c_during_connect(silent_listener, silent_server, tmp_path):
    script = tmp_path / "child.py"
    script.write_text(
        textwrap.dedent(f"""
        import os, sys, time
        import pyssh
        def sockets():
            n = 0
            for fd in os.listdir("/proc/self/fd"):
                try:
                    n += os.readlink("/proc/self/fd/" + fd).startswith("socket:")
                except OSError:
                    pass
            return n
        before = sockets()
        print("ready", flush=True)
        t = time.monotonic()
        try:
            pyssh.connect("u@127.0.0.1:{silent_server}", config=False, timeout=60,
                          host_key_policy="ignore")
        except KeyboardInterrupt:
            print("interrupted", sockets() - before, flush=True)
            sys.exit(0)
        print("not interrupted", flush=True)
        sys.exit(1)
    """)
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    child = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert child.stdout.readline().strip() == "ready"
        silent_listener.settimeout(30)
        conn, _ = silent_listener.accept()  # the child has connected: it waits for a banner
        child.send_signal(2)
        out, _ = child.communicate(timeout=10)
        conn.close()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0, out
    assert out.strip() == "interrupted 0"


def test_verbose_logs_reach_the_logger_and_stderr(server, caplog, capfd):
    with caplog.at_level(1, logger="pyssh"):
        with server.connect(verbose=3):
            pass
    libssh_lines = [r for r in caplog.records if r.name == "pyssh" and r.levelno <= logging.DEBUG]
    assert libssh_lines, "libssh's log lines should reach the 'pyssh' logger"
    assert any(
        "ssh_connect" in r.getMessage() or "kex" in r.getMessage().lower() for r in libssh_lines
    )
    err = capfd.readouterr().err
    assert "pyssh:" in err


def test_quiet_by_default(server, caplog):
    with caplog.at_level(1, logger="pyssh"):
        with server.connect():
            pass
    assert not [r for r in caplog.records if r.levelno < logging.DEBUG]


@pytest.mark.slow
def test_many_sessions_from_many_threads(server):
    errors = []
    done = []
    lock = threading.Lock()

    def work(n):
        try:
            for _ in range(n):
                with server.connect() as s:
                    assert s.connected
                    with lock:
                        done.append(s.info()["fingerprint"])
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(7 if i < 2 else 6,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    assert len(done) == 50
    assert len(set(done)) == 1


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_forked_child_does_not_say_goodbye_for_the_parent(fresh_server):
    s = fresh_server.connect()
    pid = os.fork()
    if pid == 0:  # the child: closing its copy must not disconnect the parent's session
        try:
            s.close()
            del s
            gc.collect()
        finally:
            os._exit(0)
    assert os.waitpid(pid, 0)[1] == 0
    # a negative check: time for a goodbye the child sent to reach sshd's log (a round
    # trip on the session would be a signal, but a channel changes what sshd logs at
    # the parent's close, which is checked below)
    time.sleep(0.3)
    assert "Bye Bye" not in fresh_server.log()
    assert s.connected
    s._auth_list()  # still usable in the parent
    s.close()
    deadline = time.monotonic() + 5
    while "Bye Bye" not in fresh_server.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "Bye Bye" in fresh_server.log()  # the parent's own close does say it


@pytest.mark.slow
def test_close_while_other_threads_use_the_session(server):
    for _ in range(20):
        s = server.connect()
        results = {"ok": 0, "closed": 0, "other": []}
        start = threading.Event()

        def use(s, results, start):
            start.wait()
            for _ in range(200):
                try:
                    s.info()
                    s._auth_list()
                    results["ok"] += 1
                except pyssh.SessionClosedError:
                    results["closed"] += 1
                    return
                except BaseException as e:  # reported below
                    results["other"].append(e)
                    return

        threads = [threading.Thread(target=use, args=(s, results, start)) for _ in range(3)]
        for t in threads:
            t.start()
        start.set()
        time.sleep(0.002)  # the race under test: close() while the threads are at work
        s.close()
        for t in threads:
            t.join()
        assert not results["other"], results["other"]
        assert s.closed
        with pytest.raises(pyssh.SessionClosedError):
            s.info()


def test_server_at_its_channel_limit(tmp_path):
    # pyssh.testing.SSHServer writes extra_config first: sshd keeps the first value of a
    # keyword, so "MaxSessions 1" wins over the test server's own "MaxSessions 100"
    with pyssh.testing.SSHServer(extra_config=["MaxSessions 1"]) as srv, srv.connect() as s:
        with s.sftp() as sftp:
            for refused in (
                lambda: s.sftp(),
                lambda: s.exec_internal("true"),
                lambda: s.scp_download("f", tmp_path),
            ):
                with pytest.raises(
                    pyssh.SSHError,
                    match="^[^(]*Channel opening failure.*"
                    "limit of channels .*MaxSessions.*open another session",
                ) as e:
                    refused()
                # a traceback shows its locals: the half-made SFTP object among them
                tb = e.tb
                while tb is not None:
                    repr(tb.tb_frame.f_locals.get("self"))
                    tb = tb.tb_next
            assert sftp.exists(".")


@pytest.mark.parametrize(
    "alias, args",
    [
        ("ssh_disconnect", ()),
        ("ssh_info", ()),
        ("ssh_session_info", ()),
        ("ssh_exec_wait", ("true",)),
        ("ssh_exec_internal", ("true",)),
        ("scp_upload", ("f",)),
        ("scp_download", ("f",)),
        ("ssh_tunnel", (5555, "localhost:80")),
    ],
)
def test_r_aliases_say_when_their_first_argument_is_not_a_session(alias, args):
    # the R package's order puts the session first: a host string there is a likely slip
    name = "ssh_info" if alias == "ssh_session_info" else alias
    with pytest.raises(
        TypeError,
        match=f"^{name}: the first argument must be a session "
        r"from pyssh.connect\(\).* not str$",
    ):
        getattr(pyssh, alias)("user@host", *args)
