"""Races that exist even with the GIL: a method checks its object's state, then
runs Python code (an iterator, __index__, __float__) or releases the GIL before it
marks the object busy. Each test re-enters the object from inside that window,
from the same thread or from another one it waits for; the second call must get
a clear exception and the first must finish normally."""

import gc
import os
import subprocess
import sys
import sysconfig
import threading

import pytest

import pyssh
from pyssh import _ssh
from pyssh._sftp import REALPATH, _str

IN_USE = "in use by another call"


def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


@pytest.fixture
def session(server):
    with server.connect() as s:
        yield s


def raised(call):
    """What call() raised, or None."""
    try:
        call()
    except BaseException as e:  # noqa: BLE001 - the tests look at it
        return e
    return None


def from_thread(call):
    """What call() raised when run in another thread (waited for)."""
    out = []
    t = threading.Thread(target=lambda: out.append(raised(call)))
    t.start()
    t.join()
    return out[0]


def in_thread(call, seconds=30.0):
    """Run call() in a daemon thread and return what it raised, or None. A call
    that never returns (a deadlock on the session lock, a wait that nothing ends)
    fails the test, instead of blocking it before any report (its teardown may
    still hang on the session lock)."""
    out = []
    t = threading.Thread(target=lambda: out.append(raised(call)), daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), "the call did not return"
    return out[0]


def assert_in_use(e):
    assert isinstance(e, RuntimeError) and IN_USE in str(e), repr(e)


# ---- Channel ---------------------------------------------------------------------------------


def test_channel_reentered_while_exec_iterates_env(session):
    ch = _ssh.Channel(session)
    errors = []

    def env():
        for call in (
            lambda: ch.exec("true"),
            ch.run,
            ch.read,
            lambda: ch.write(b"x"),
            ch.send_eof,
            ch.close,
        ):
            errors.append(raised(call))
        errors.append(from_thread(lambda: ch.exec("true")))
        return
        yield

    ch.exec("echo ok", env=env())
    assert len(errors) == 7
    for e in errors:
        assert_in_use(e)
    r = ch.run(stdout=True)
    assert r[0] == 0 and r[4] == b"ok\n"


def test_channel_closed_from_iter_of_stdin_is_refused(session):
    ch = _ssh.Channel(session)
    errors = []

    class Source:
        def __iter__(self):
            errors.append(raised(ch.close))
            errors.append(from_thread(ch.close))
            errors.append(raised(lambda: ch.run(stdout=True)))
            return iter([b"hello ", b"world"])

    ch.exec("cat")
    r = ch.run(stdout=True, stdin=Source())
    assert len(errors) == 3
    for e in errors:
        assert_in_use(e)
    assert r[0] == 0 and r[4] == b"hello world"
    assert ch.closed


@pytest.mark.parametrize("method", ["read", "recv_to_fd", "run", "exec"])
def test_a_timeout_runs_no_python_code(session, method, tmp_path):
    """A timeout is converted where it enters (an O& converter), before the state
    check: it must run no Python code there, or a __float__ could close the
    channel between the conversion and the claim. Only None, int and float are
    taken; anything else is a TypeError before anything happens, and the
    channel stays usable."""
    ch = _ssh.Channel(session)
    if method != "exec":
        ch.exec("echo hi")
    calls = []

    class Timeout:
        def __float__(self):
            calls.append(ch.close())
            return 30.0

    with open(tmp_path / "out", "wb") as f:
        call = {
            "read": lambda: ch.read(timeout=Timeout()),
            "recv_to_fd": lambda: ch.recv_to_fd(f.fileno(), 3, timeout=Timeout()),
            "run": lambda: ch.run(stdout=True, timeout=Timeout()),
            "exec": lambda: ch.exec("echo hi", timeout=Timeout()),
        }[method]
        with pytest.raises(TypeError, match="timeout must be None or a number of seconds"):
            call()
    assert calls == []
    assert ch.closed == (method == "exec")  # a channel is open once exec() opened it
    if method == "exec":
        ch.exec("echo hi", timeout=30)
    assert ch.run(stdout=True, timeout=30.0)[4] == b"hi\n"
    ch.close()


def test_channel_usable_again_after_a_refused_call(session):
    ch = _ssh.Channel(session)
    ch.exec("echo again")
    assert_in_use(raised(lambda: ch.run(stdout=lambda b: ch.close())))
    # the run above stopped with that exception and closed the channel; the flag is free
    ch.close()
    ch2 = _ssh.Channel(session)
    ch2.exec("echo again")
    assert ch2.run(stdout=True)[4] == b"again\n"


# ---- SFTP ------------------------------------------------------------------------------------


def sftp_channel(session):
    c = _ssh.SFTP(session)
    c.start(timeout=30)
    return c


def realpath_ok(reply):
    rtype, _payload = reply
    assert rtype == 104  # SSH_FXP_NAME


def test_sftp_reentered_while_batch_iterates_requests(session):
    c = sftp_channel(session)
    errors = []

    class Requests:
        def __iter__(self):
            errors.append(raised(c.close))
            errors.append(from_thread(c.close))
            errors.append(raised(lambda: c.request(REALPATH, _str(b"."))))
            errors.append(raised(lambda: c.send(REALPATH, _str(b"."))))
            errors.append(raised(lambda: c.start(timeout=5)))
            return iter([(REALPATH, _str(b"."))])

    replies = c.batch(Requests(), timeout=30)
    assert len(errors) == 5
    for e in errors:
        assert_in_use(e)
    assert len(replies) == 1
    realpath_ok(replies[0])
    realpath_ok(c.request(REALPATH, _str(b"."), timeout=30))
    c.close()


def test_sftp_request_type_index_runs_outside_the_session_lock(session):
    """The (type, payload) pairs are parsed before the session lock is taken:
    __index__ used to run under it, where closing the SFTP channel deadlocked."""
    c = sftp_channel(session)
    errors = []

    class Type:
        def __index__(self):
            errors.append(raised(c.close))
            return REALPATH

    replies = in_thread(lambda: errors.append(c.batch([(Type(), _str(b"."))], timeout=30)))
    assert replies is None
    assert_in_use(errors[0])
    realpath_ok(errors[1][0])
    assert not c.closed
    c.close()


def test_sftp_session_closed_from_index_fails_cleanly(session):
    c = sftp_channel(session)

    class Type:
        def __index__(self):
            session.close()
            return REALPATH

    e = in_thread(lambda: c.batch([(Type(), _str(b"."))], timeout=30))
    assert isinstance(e, pyssh.SessionClosedError), repr(e)
    assert c.closed


def test_sftp_batch_private_copy_of_the_requests(session):
    """The list is copied before __index__ runs: emptying it from there changes nothing."""
    c = sftp_channel(session)
    reqs = []

    class Type:
        def __index__(self):
            reqs.clear()
            return REALPATH

    reqs.extend([(Type(), _str(b".")), (REALPATH, _str(b"/"))])
    replies = in_thread(lambda: reqs.append(c.batch(reqs, timeout=30)))
    assert replies is None
    assert len(reqs[0]) == 2
    for r in reqs[0]:
        realpath_ok(r)
    c.close()


def test_sftp_bad_request_leaves_the_channel_open(session):
    """A request that cannot be parsed fails before anything is queued."""
    c = sftp_channel(session)
    with pytest.raises(TypeError):
        c.batch([(REALPATH, _str(b".")), (REALPATH, 42)], timeout=30)
    with pytest.raises(TypeError):
        c.send(REALPATH, 42)
    with pytest.raises(TypeError, match="sequence of"):
        c.batch(42)
    assert not c.closed
    realpath_ok(c.request(REALPATH, _str(b"."), timeout=30))
    c.close()


# ---- Session ---------------------------------------------------------------------------------


def bare_session(server, user):
    """A _ssh.Session connected to `server` as `user`, not authenticated yet."""
    import socket

    s = _ssh.Session()
    s._configure("127.0.0.1", user=user, port=server.port, known_hosts=server.known_hosts)
    s._connect(socket.create_connection(("127.0.0.1", server.port)).detach(), timeout=20)
    s._auth_none(timeout=20)
    return s


@pytest.mark.slow
def test_kbdint_answers_are_copied_from_any_sequence(server, account):
    """The answers are kept in a private tuple while the session lock is waited for."""
    name, password = account
    s = bare_session(server, name)
    try:
        with pytest.raises(ValueError, match="returned 0 answers for 1 prompts"):
            s._auth_kbdint(lambda n, i, prompts: (x for x in ()), timeout=20)
    finally:
        s.close()
    for make in (list, tuple, iter):
        s = bare_session(server, name)
        try:
            rc = s._auth_kbdint(
                lambda n, i, prompts, make=make: make([password] * len(prompts)), timeout=20
            )
            assert rc == _ssh.SSH_AUTH_SUCCESS
        finally:
            s.close()


@pytest.mark.skipif(
    "libasan" in os.environ.get("LD_PRELOAD", ""),
    reason="AddressSanitizer's quarantine keeps freed memory: RSS says nothing",
)
@pytest.mark.slow
def test_configure_on_a_session_closed_by_fspath_keeps_nothing():
    """_configure looks again at the session after converting its paths: __fspath__
    may have closed it (once, the ProxyJump data set then was kept, and never
    freed, by a session already closed)."""
    session = []

    class Dir:
        def __fspath__(self):
            session[0].close()
            return "/nonexistent/" + "d" * 200

    def once():
        session[:] = [_ssh.Session()]
        with pytest.raises(pyssh.SessionClosedError):
            session[0]._configure(
                "127.0.0.1", ssh_dir=Dir(), known_hosts="/nonexistent/" + "k" * 200
            )

    for _ in range(1000):
        once()
    gc.collect()
    before = rss_mb()
    for _ in range(20000):
        once()
    gc.collect()
    # ~500 bytes a session were kept: 10 MB
    assert rss_mb() - before < 3.0


@pytest.mark.slow
def test_second_connect_while_libssh_connects(server):
    """_connect(-1) (libssh makes the socket) marks the session as connecting
    under the lock: a second _connect meanwhile is refused, not run beside it."""
    import socket

    silent = socket.socket()  # accepts, never says a word
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)
    s = _ssh.Session()
    s._configure("127.0.0.1", port=silent.getsockname()[1], known_hosts=server.known_hosts)
    first = []
    t = threading.Thread(target=lambda: first.append(raised(lambda: s._connect(-1, timeout=3))))
    t.start()
    silent.settimeout(30)
    conn, _ = silent.accept()  # the first has connected: it waits for the banner
    # run beside the first it would time out after 2 s instead, with another message
    e = raised(lambda: s._connect(-1, timeout=2))
    assert isinstance(e, pyssh.SSHError) and "being connected by another call" in str(e), repr(e)
    t.join()
    assert isinstance(first[0], pyssh.SSHTimeoutError), repr(first[0])
    s.close()
    conn.close()
    silent.close()


# ---- Tunnel ----------------------------------------------------------------------------------


def listening_socket():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    return s


@pytest.mark.slow
def test_tunnel_reentered_while_run_converts_its_arguments(session):
    sock = listening_socket()
    c = _ssh.Tunnel(session)
    c.listen_local(sock.fileno(), "127.0.0.1", 9)
    errors = []

    class Max:
        def __index__(self):
            errors.append(raised(lambda: c.run(idle_timeout=0.1)))
            errors.append(from_thread(lambda: c.run(idle_timeout=0.1)))
            errors.append(raised(c.close))
            errors.append(raised(lambda: c.listen_local(sock.fileno(), "127.0.0.1", 9)))
            return 5

    stats = c.run(max_connections=Max(), idle_timeout=0.3)  # returns: the idle timeout ended it
    assert len(errors) == 4
    for e in errors:
        assert isinstance(e, RuntimeError) and "stop() it first" in str(e), repr(e)
    assert stats[0] == 0
    c.close()
    sock.close()


@pytest.mark.slow
def test_tunnel_stop_before_run_is_not_lost(session):
    """Tunnel.close() may call stop() before its thread has entered run(): run()
    used to clear the request and serve until the process ended."""
    sock = listening_socket()
    c = _ssh.Tunnel(session)
    c.listen_local(sock.fileno(), "127.0.0.1", 9)
    c.stop()
    # with the stop lost, run() (no idle timeout) would serve for ever: a hang bound only
    t = threading.Thread(target=c.run, kwargs={"idle_timeout": None}, daemon=True)
    t.start()
    t.join(30)
    assert not t.is_alive()
    # the stop was taken by that run: the next run() serves until it is stopped
    t = threading.Thread(target=c.run, kwargs={"idle_timeout": None}, daemon=True)
    t.start()
    t.join(0.5)
    assert t.is_alive()
    c.stop()
    t.join(30)
    assert not t.is_alive()
    c.close()
    sock.close()


@pytest.mark.slow
def test_forward_local_closed_before_its_thread_runs(session, monkeypatch):
    from pyssh import _tunnel

    serve = _tunnel.Tunnel._serve
    real_tunnel = _ssh.Tunnel
    stopped = threading.Event()

    class Watched:
        """The C tunnel, with its stop() seen."""

        def __init__(self, session):
            self._c = real_tunnel(session)

        def stop(self):
            self._c.stop()
            stopped.set()

        def __getattr__(self, name):
            return getattr(self._c, name)

    waited = []

    def late_serve(self):
        waited.append(stopped.wait(30))  # close() below has called stop(): only now run()
        serve(self)

    monkeypatch.setattr(_tunnel._ssh, "Tunnel", Watched)
    monkeypatch.setattr(_tunnel.Tunnel, "_serve", late_serve)

    def open_and_close():
        with session.forward_local(0, "127.0.0.1:9"):
            pass

    assert in_thread(open_and_close) is None
    assert waited == [True]


def test_importing_pyssh_leaves_the_gil_off():
    """pyssh._ssh declares Py_mod_gil: on a free-threaded CPython, importing it
    keeps the GIL off, without PYTHON_GIL=0 (which would force it off anyway).
    The import runs in a fresh interpreter, with the warning CPython gives when an
    extension turns the GIL back on made an error. On a CPython with a GIL there is
    nothing to see: .ci/run ft, which runs this on a free-threaded one, says so
    with PYSSH_FREE_THREADED=1, and there a build with the GIL fails."""
    if not sysconfig.get_config_var("Py_GIL_DISABLED"):
        assert not os.environ.get("PYSSH_FREE_THREADED"), (
            "PYSSH_FREE_THREADED=1 (.ci/run ft) but this CPython is built with the GIL"
        )
        pytest.skip("a CPython built with the GIL (.ci/run ft runs this on a free-threaded one)")
    env = {k: v for k, v in os.environ.items() if k != "PYTHON_GIL"}
    code = "import sys, pyssh; print(sys._is_gil_enabled())"
    out = subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False", "importing pyssh turned the GIL on"
