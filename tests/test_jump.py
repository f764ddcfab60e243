"""ProxyJump chains built by pyssh: a session per jump host, each checked and
authenticated as a target, the next hop reached through its direct-tcpip channel."""

import os
import signal
import socket
import threading

import pytest

import pyssh
from pyssh.testing import SSHServer

from conftest import open_sockets


@pytest.fixture(scope="module")
def hops():
    """Two jump sshds that accept the test server's client key."""
    with SSHServer() as j1, SSHServer() as j2:
        yield j1, j2


def trust(server, j1, j2, tmp_path, j2_line=None):
    kh = tmp_path / "known_hosts"
    lines = [server.host_key_line, j1.host_key_line, j2_line or j2.host_key_line]
    kh.write_text("\n".join(lines) + "\n")
    return kh


def authorize(server, *jumps):
    for j in jumps:
        j.authorize(server.client_key + ".pub")


def chain(*jumps):
    return ",".join(f"{j.user}@127.0.0.1:{j.port}" for j in jumps)


def test_a_two_hop_chain_runs_a_command(server, hops, tmp_path):
    j1, j2 = hops
    authorize(server, j1, j2)
    kh = trust(server, j1, j2, tmp_path)
    before = open_sockets()
    with server.connect(known_hosts=str(kh), jump=chain(j1, j2), host_key_policy="strict") as s:
        assert s.exec_internal("echo through").stdout == b"through\n"
        info = s.info()
        assert info["jump"] == [f"{j.user}@127.0.0.1:{j.port}" for j in hops]
        assert info["port"] == server.port
    assert open_sockets() <= before  # the hops and their bridges closed with the session


def test_a_list_works_too_and_none_disables(server, hops, tmp_path):
    j1, _ = hops
    authorize(server, j1)
    kh = trust(server, j1, j1, tmp_path)
    with server.connect(known_hosts=str(kh), jump=[f"{j1.user}@127.0.0.1:{j1.port}"]) as s:
        assert s.info()["jump"] == [f"{j1.user}@127.0.0.1:{j1.port}"]
    with server.connect(known_hosts=str(kh), jump="none") as s:
        assert s.info()["jump"] == []


@pytest.mark.parametrize("bad", ["", "a,,b", "host:notaport", 3, ["a", 1]])
def test_the_jump_argument_is_checked(server, bad):
    with pytest.raises((TypeError, ValueError)):
        server.connect(jump=bad)


def test_a_mismatching_middle_hop_is_refused_naming_it(server, hops, tmp_path):
    j1, j2 = hops
    authorize(server, j1, j2)
    wrong = f"[127.0.0.1]:{j2.port} {j1.host_key_pub}"  # another server's key
    kh = trust(server, j1, j2, tmp_path, j2_line=wrong)
    with pytest.raises(pyssh.HostKeyMismatchError) as e:
        server.connect(known_hosts=str(kh), jump=chain(j1, j2))
    assert (e.value.hop, e.value.port) == (2, j2.port)
    assert f"jump host [127.0.0.1]:{j2.port} (ProxyJump hop 2)" in str(e.value)


def test_an_unknown_first_hop_is_recorded_by_accept_new(server, hops, tmp_path):
    j1, _ = hops
    authorize(server, j1)
    kh = tmp_path / "known_hosts"
    kh.write_text(server.host_key_line + "\n")
    with server.connect(known_hosts=str(kh), jump=chain(j1), host_key_policy="accept-new") as s:
        assert s.connected
    assert kh.read_text().splitlines() == [server.host_key_line, j1.host_key_line]


def test_an_authentication_failure_names_the_hop(server, tmp_path, home):
    with SSHServer() as j1:  # the test server's key is not authorized there
        kh = tmp_path / "known_hosts"
        kh.write_text(f"{server.host_key_line}\n{j1.host_key_line}\n")
        with pytest.raises(pyssh.AuthenticationError) as e:
            server.connect(known_hosts=str(kh), jump=chain(j1))
        assert e.value.hop == 1
        assert f"jump host [127.0.0.1]:{j1.port} (ProxyJump hop 1)" in str(e.value)


@pytest.mark.slow
def test_the_timeout_covers_the_whole_chain(server, hops, tmp_path):
    j1, _ = hops
    authorize(server, j1)
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)  # accepts TCP (the backlog), never speaks
    port = silent.getsockname()[1]
    kh = trust(server, j1, j1, tmp_path)
    try:
        with pytest.raises(pyssh.SSHTimeoutError) as e:
            server.connect(
                known_hosts=str(kh), jump=f"{chain(j1)},root@127.0.0.1:{port}", timeout=1.5
            )
        assert e.value.hop == 2
        assert "(ProxyJump hop 2)" in str(e.value)
    finally:
        silent.close()


def test_proxyjump_from_the_config(server, hops, home):
    j1, _ = hops
    authorize(server, j1)
    (home / ".ssh" / "config").write_text(
        f"Host target\n    HostName 127.0.0.1\n    Port {server.port}\n    ProxyJump j1\n"
        f"Host j1\n    HostName 127.0.0.1\n    Port {j1.port}\n    User {j1.user}\n"
    )
    (home / ".ssh" / "known_hosts").write_text(f"{server.host_key_line}\n{j1.host_key_line}\n")
    with pyssh.connect(
        "target", user=server.user, keyfile=server.client_key, host_key_policy="strict"
    ) as s:
        assert s.exec_internal("echo cfg").stdout == b"cfg\n"
        assert s.info()["jump"] == [f"{j1.user}@127.0.0.1:{j1.port}"]


def test_a_hop_that_cannot_reach_the_next_is_an_error(server, hops, tmp_path):
    j1, _ = hops
    authorize(server, j1)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there
    kh = trust(server, j1, j1, tmp_path)
    with pytest.raises(pyssh.SSHError) as e:
        pyssh.connect(
            f"root@127.0.0.1:{port}",
            keyfile=server.client_key,
            known_hosts=str(kh),
            jump=chain(j1),
            timeout=20,
        )
    assert getattr(e.value, "hop", None) is None  # the target was not reached; the hops were
    assert f"the jump host could not reach 127.0.0.1:{port}" in str(e.value)


@pytest.mark.slow
def test_no_thread_per_hop_and_two_threads_share_the_chain(server, hops, tmp_path):
    """The bridges are moved by the target's own waits: no thread per hop. Two
    threads waiting on the target at once (a background tunnel's connection and a
    command) both move the chain, and no byte is lost or reordered."""
    j1, j2 = hops
    authorize(server, j1, j2)
    kh = trust(server, j1, j2, tmp_path)
    threads = threading.active_count()
    with server.connect(known_hosts=str(kh), jump=chain(j1, j2)) as s:
        assert threading.active_count() == threads
        assert not [t.name for t in threading.enumerate() if t.name.startswith("pyssh-")]
        with s.forward_local(0, f"127.0.0.1:{server.port}") as t:  # sshd's banner, through it
            with socket.create_connection(("127.0.0.1", t.port), timeout=10) as c:
                data = os.urandom(4 << 20)
                r = s.exec_internal("cat", stdin=data, timeout=30)
                assert r.stdout == data
                assert c.recv(64).startswith(b"SSH-2.0-")


@pytest.mark.slow
def test_a_jump_host_lost_mid_session_is_named(server, tmp_path, home):
    """The first jump host's connection dies under an open session: the next
    command fails with ConnectError saying the jump host's connection went, in time."""
    with SSHServer() as j1:
        authorize(server, j1)
        kh = trust(server, j1, j1, tmp_path)
        s = server.connect(known_hosts=str(kh), jump=chain(j1), timeout=10)
        try:
            assert s.exec_internal("echo up").stdout == b"up\n"
            served = _descendants(j1.pid)
            assert served  # the sshd processes serving this connection
            j1.stop()
            for pid in served:  # forked by the sshd we started: ours, ended by pid
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            with pytest.raises(pyssh.ConnectError) as e:
                s.exec_internal("echo gone", timeout=10)
            assert "jump host" in str(e.value)
        finally:
            s.close()


def _descendants(pid):
    """The processes below `pid` (Linux /proc), children first."""
    parent = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    parent[int(d)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        found += kids
        todo += kids
    return found


def test_too_many_jump_hosts_are_refused_before_connecting(server):
    many = ",".join(f"h{i}" for i in range(pyssh._jump.MAX_HOPS + 1))
    with pytest.raises(ValueError, match="at most 16 jump hosts"):
        server.connect(jump=many)


@pytest.mark.slow
def test_proxycommand_keeps_working(server, hops, home):
    """ProxyCommand from the config (here OpenSSH's own ssh -W through a jump
    host) is run by libssh, as before pyssh built ProxyJump itself."""
    j1, _ = hops
    authorize(server, j1)
    kh = home / ".ssh" / "known_hosts"
    kh.write_text(f"{server.host_key_line}\n{j1.host_key_line}\n")
    proxy = (
        f"ssh -F none -i {server.client_key} -o UserKnownHostsFile={kh} -o BatchMode=yes "
        f"-o StrictHostKeyChecking=yes -p {j1.port} -W %h:%p {j1.user}@127.0.0.1"
    )
    (home / ".ssh" / "config").write_text(
        f"Host target\n    HostName 127.0.0.1\n    Port {server.port}\n    ProxyCommand {proxy}\n"
    )
    with pyssh.connect(
        "target", user=server.user, keyfile=server.client_key, host_key_policy="strict"
    ) as s:
        assert s.exec_internal("echo proxied").stdout == b"proxied\n"
        assert s.info()["jump"] == []
