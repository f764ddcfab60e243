"""pyssh's C API (pyssh/include/pyssh_capi.h), used by real extensions built here at
test time from tests/capi/ (example.c, the documented example; consumer.c, the rest)
on sessions of the test server."""

import hashlib
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import threading

import pytest
from test_exec import kill_all, remote_pids

import pyssh

from conftest import run_while_python_counts, wait_until

HERE = os.path.dirname(os.path.abspath(__file__))
CAPI = os.path.join(HERE, "capi")


@pytest.fixture(scope="module")
def ext(tmp_path_factory):
    """Build tests/capi/ with setuptools against pyssh.get_include(); import both."""
    cc = sysconfig.get_config_var("CC")
    assert shutil.which(cc.split()[0] if cc else "cc"), "no C compiler (bash .ci/run installs gcc)"
    out = tmp_path_factory.mktemp("capi")
    # (the environment as it is: under ASan, setup.py imports pyssh, which needs the
    # preloaded runtime)
    r = subprocess.run(
        [
            sys.executable,
            os.path.join(CAPI, "setup.py"),
            "-q",
            "build_ext",
            "--build-lib",
            str(out),
            "--build-temp",
            str(out / "tmp"),
        ],
        cwd=CAPI,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    sys.path.insert(0, str(out))
    try:
        import consumer
        import example
    finally:
        sys.path.remove(str(out))
    return example, consumer


@pytest.fixture
def session(server):
    """A session of the server's own user (root in CI: it can read the test's files)."""
    with server.connect() as s:
        yield s


def test_get_include_has_the_header():
    inc = pyssh.get_include()
    assert os.path.isabs(inc)
    with open(os.path.join(inc, "pyssh_capi.h")) as f:
        text = f.read()
    assert "#define PYSSH_CAPI_VERSION 1" in text
    from pyssh import _ssh

    assert type(_ssh._C_API).__name__ == "PyCapsule"
    assert "pyssh._ssh._C_API" in repr(_ssh._C_API)


@pytest.mark.slow
def test_table_describes_this_pyssh(ext):
    _, consumer = ext
    info = consumer.info()
    assert info["version"] == 1
    assert info["pyssh_version"] == pyssh.__version__
    assert info["libssh_version"] == pyssh.libssh_version(full=True)


@pytest.mark.slow
def test_command_output_into_c_buffers_with_the_gil_released(ext, plain_session):
    """The documented example: a command's stdout and stderr read from C, while a
    Python thread keeps counting."""
    example, _ = ext
    status, out, err = run_while_python_counts(
        lambda: example.run(
            plain_session, "head -c 200000000 /dev/zero; echo to-stderr >&2; exit 7", 120
        )
    )
    assert status == 7
    assert len(out) == 200_000_000 and out.count(b"\0") == len(out)
    assert err == b"to-stderr\n"


def test_exit_status_and_signal(ext, plain_session):
    example, _ = ext
    assert example.run(plain_session, "exit 0") == (0, b"", b"")
    assert example.run(plain_session, "printf 'a\\nb'; exit 255") == (255, b"a\nb", b"")
    status, _, _ = example.run(plain_session, "kill -TERM $$")
    assert status == -15


@pytest.mark.slow
def test_stdin_larger_than_the_window_through_cat(ext, plain_session):
    _, consumer = ext
    data = os.urandom(8 * 1024 * 1024 + 123)
    status, digest, n, err = consumer.pipe(plain_session, "cat", data)
    assert (status, n, err) == (0, len(data), b"")
    assert digest == hashlib.sha256(data).hexdigest()


@pytest.mark.slow
def test_scp_stream_into_c_sha256(ext, session, tmp_path):
    _, consumer = ext
    data = os.urandom(5 * 1024 * 1024 + 7)
    path = tmp_path / "remote file with spaces & 'quotes'.bin"
    path.write_bytes(data)
    digest, size = consumer.scp_sha256(session, str(path))
    assert size == len(data)
    assert digest == hashlib.sha256(data).hexdigest()
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert consumer.scp_sha256(session, str(empty)) == (hashlib.sha256(b"").hexdigest(), 0)


@pytest.mark.slow
def test_scp_errors(ext, session, tmp_path):
    _, consumer = ext
    with pytest.raises(pyssh.SCPFileNotFoundError) as e:
        consumer.scp_sha256(session, str(tmp_path / "missing"))
    assert "missing" in str(e.value)
    with pytest.raises(pyssh.SCPError) as e:
        consumer.scp_sha256(session, str(tmp_path))
    assert "not a regular file" in str(e.value)  # what OpenSSH's scp says
    # the sink stops the transfer: an error, and the session goes on working
    big = tmp_path / "big"
    big.write_bytes(os.urandom(4 * 1024 * 1024))
    with pytest.raises(pyssh.SSHError) as e:
        consumer.scp_sha256(session, str(big), 100_000)
    assert "stopped" in str(e.value)
    assert session.exec_internal("echo still here").stdout == b"still here\n"


@pytest.mark.slow
def test_read_timeout_then_the_session_goes_on(ext, plain_session):
    _, consumer = ext
    with pytest.raises(pyssh.SSHTimeoutError):
        consumer.read_once(plain_session, "sleep 5", 0.3)
    assert consumer.read_once(plain_session, "echo hi", 10) == b"hi\n"


def test_direct_tcpip_channel(ext, session):
    _, consumer = ext
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    received = []

    def echo():
        conn, _ = srv.accept()
        with conn:
            while True:
                b = conn.recv(65536)
                if not b:
                    break
                received.append(b)
                conn.sendall(b.upper())

    t = threading.Thread(target=echo)
    t.start()
    try:
        data = b"through the tunnel " * 5000
        assert consumer.tcp_roundtrip(session, "127.0.0.1", port, data) == data.upper()
        assert b"".join(received) == data
    finally:
        t.join(10)
        srv.close()
    with pytest.raises(pyssh.SSHError):
        consumer.tcp_roundtrip(session, "127.0.0.1", 1, b"x")  # nothing listens on port 1


def test_raw_libssh_access_under_the_lock(ext, session):
    _, consumer = ext
    connected, banner = consumer.raw_check(session)
    assert connected == 1
    assert banner.startswith("SSH-2.0-OpenSSH")


def test_version_mismatch_is_a_clear_import_error(ext):
    _, consumer = ext
    info = consumer.info()
    consumer.import_version(1, info["size"])  # what pyssh_import_capi() asks for
    with pytest.raises(ImportError) as e:
        consumer.import_version(99, info["size"])
    msg = str(e.value)
    assert "version 99" in msg and "provides version 1" in msg
    assert "rebuild" in msg and "pyssh.get_include()" in msg
    with pytest.raises(ImportError, match="rebuild"):
        consumer.import_version(1, info["size"] + 8)  # a newer header's longer table


def test_closed_session_raises_session_closed_error(ext, server):
    example, consumer = ext
    s = server.connect()
    assert example.run(s, "true")[0] == 0
    s.close()
    with pytest.raises(pyssh.SessionClosedError):
        example.run(s, "true")
    with pytest.raises(pyssh.SessionClosedError):
        consumer.scp_sha256(s, "/etc/hostname")
    with pytest.raises(pyssh.SessionClosedError):
        consumer.raw_check(s)
    with pytest.raises(pyssh.SessionClosedError):
        consumer.tcp_roundtrip(s, "127.0.0.1", 22, b"x")


@pytest.mark.slow
def test_session_closed_by_another_thread_while_c_waits(ext, server):
    example, _ = ext
    s = server.connect()
    errors = []
    command = f"sleep 30.{os.getpid()}{threading.get_ident()}"  # a marker to find it by

    def run():
        try:
            example.run(s, command, 60)
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=run)
    t.start()
    try:
        # C waits for the command's end once the server runs it
        assert wait_until(lambda: remote_pids(command), 10)
        s.close()
    finally:
        kill_all(command)
    t.join(10)
    assert not t.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], pyssh.SessionClosedError), errors


def test_not_a_session(ext):
    example, consumer = ext
    with pytest.raises(TypeError, match="pyssh.Session"):
        example.run(object(), "true")
    with pytest.raises(TypeError):
        consumer.raw_check("user@host")


@pytest.mark.parametrize(
    "code, cls",
    [
        (1, pyssh.SSHError),
        (2, pyssh.SessionClosedError),
        (3, pyssh.SSHTimeoutError),
        (4, pyssh.SCPError),
        (5, pyssh.SCPFileNotFoundError),
        (6, pyssh.SCPPermissionError),
        (7, pyssh.SCPProtocolError),
        (8, ValueError),
        (9, MemoryError),
        (10, pyssh.SSHError),
        (11, OSError),
    ],
)
def test_raise_error_classes(ext, code, cls):
    _, consumer = ext
    with pytest.raises(cls, match="the message"):
        consumer.raise_code(code, "the message")


def test_raise_error_with_an_unknown_code(ext):
    _, consumer = ext
    with pytest.raises(SystemError, match="unknown"):
        consumer.raise_code(12345, "x")


def test_docs_show_the_example_that_is_compiled():
    """docs/capi.md shows tests/capi/example.c verbatim. Skipped only where the tests
    run without the source tree's docs/ (an installed wheel's tests, copied alone);
    in a source checkout a missing or changed page fails."""
    docs = os.path.join(os.path.dirname(HERE), "docs")
    if not os.path.isdir(docs):
        pytest.skip("docs/ is not beside tests/")
    with open(os.path.join(docs, "capi.md"), encoding="utf-8") as f:
        text = f.read()
    with open(os.path.join(CAPI, "example.c"), encoding="utf-8") as f:
        example = f.read()
    assert "```c\n" + example + "```" in text, (
        "docs/capi.md's C API example differs from tests/capi/example.c"
    )
