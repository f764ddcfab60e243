"""Agent forwarding (ssh -A) against the real sshd and a real ssh-agent (the `agent`
fixture): connect's forward_agent and ssh_config's ForwardAgent. The remote side's
ssh-add and an onward ssh see the local agent's keys only when it is forwarded;
a server that opens agent channels anyway is refused, and one that opens too many
gets no more than AGENT_MAX."""

import json
import logging
import subprocess
import threading

import pytest

import pyssh
from pyssh.testing import SSHServer

from conftest import open_sockets, wait_until
from hostile_ssh import HostileServer

AGENT_MAX = 16  # csrc/tunnel.c


def fingerprint(pub):
    """`ssh-keygen -l`'s SHA256:... of a public key file."""
    out = subprocess.run(["ssh-keygen", "-lf", pub], capture_output=True, text=True, check=True)
    return out.stdout.split()[1]


@pytest.fixture
def agent_key(agent, make_key, server):
    """A key held only by the agent (not given to pyssh), which the server accepts."""
    key = make_key("agent_key")
    subprocess.run(["ssh-add", "-q", key], check=True, capture_output=True)
    server.authorize(key + ".pub")
    return key


@pytest.fixture
def connect(server, plain_address):
    """server.connect as an ordinary user (conftest's plain_address: root's shell
    here is slow to start)."""

    def connect(**kw):
        return server.connect(address=plain_address, **kw)

    return connect


def agent_threads():
    return [t for t in threading.enumerate() if t.name.startswith("pyssh-tunnel-agent")]


def run(session, command):
    r = session.exec_internal(command, error=False, timeout=30)
    return r.status, r.stdout.decode(), r.stderr.decode()


def test_remote_ssh_add_lists_the_local_agents_key(connect, agent_key):
    with connect(forward_agent=True) as s:
        status, out, _ = run(s, "ssh-add -l")
        assert status == 0 and fingerprint(agent_key + ".pub") in out
        status, out, _ = run(s, "ssh-add -L")
        with open(agent_key + ".pub") as f:
            assert status == 0 and f.read().split()[1] in out
        # each command asks for it again, and gets a socket of its own
        status, out, _ = run(s, 'test -S "$SSH_AUTH_SOCK" && ssh-add -l')
        assert status == 0 and fingerprint(agent_key + ".pub") in out


def test_off_by_default(connect, agent_key):
    with connect() as s:
        status, out, err = run(s, 'echo "sock=$SSH_AUTH_SOCK"; ssh-add -l')
        assert status == 2 and "Could not open a connection" in err
        assert "sock=\n" in out
    with connect(forward_agent=False) as s:
        assert run(s, "ssh-add -l")[0] == 2
        assert not agent_threads()


@pytest.mark.slow
def test_onward_ssh_authenticates_with_the_forwarded_agent(
    connect, server, plain_address, agent_key
):
    # from the server, back to the same sshd: only the agent holds agent_key there
    onward = (
        "ssh -F /dev/null -o BatchMode=yes -o StrictHostKeyChecking=no "
        "-o UserKnownHostsFile=/dev/null -o LogLevel=ERROR "
        f"-p {server.port} {plain_address.split('@')[0]}@127.0.0.1 echo onward-ok"
    )
    with connect(forward_agent=True) as s:
        status, out, err = run(s, onward)
        assert (status, out) == (0, "onward-ok\n"), err
    with connect(forward_agent=False) as s:
        assert run(s, onward)[0] == 255


def test_a_path_or_an_environment_variable(connect, agent_key, agent, monkeypatch):
    fp = fingerprint(agent_key + ".pub")
    monkeypatch.delenv("SSH_AUTH_SOCK")
    with connect(forward_agent=agent) as s:
        assert fp in run(s, "ssh-add -l")[1]
    monkeypatch.setenv("MY_AGENT_SOCK", agent)
    with connect(forward_agent="$MY_AGENT_SOCK") as s:
        assert fp in run(s, "ssh-add -l")[1]


def test_true_without_an_agent_fails_before_connecting(connect, monkeypatch):
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    with pytest.raises(pyssh.SSHError, match="SSH_AUTH_SOCK is unset"):
        connect(forward_agent=True)
    with pytest.raises(pyssh.SSHError, match="NO_SUCH_VAR is unset"):
        connect(forward_agent="$NO_SUCH_VAR")
    with pytest.raises(TypeError, match="forward_agent"):
        connect(forward_agent=1)


@pytest.mark.slow
def test_config_forward_agent(connect, agent_key, agent, tmp_path):
    fp = fingerprint(agent_key + ".pub")
    cfg = tmp_path / "config"
    cfg.write_text("Host *\n  ForwardAgent yes\n")
    with connect(config=str(cfg)) as s:
        assert fp in run(s, "ssh-add -l")[1]
    with connect(config=str(cfg), forward_agent=False) as s:  # the argument wins
        assert run(s, "ssh-add -l")[0] == 2
    cfg.write_text("Host *\n  ForwardAgent $SSH_AUTH_SOCK\n")
    with connect(config=str(cfg)) as s:
        assert fp in run(s, "ssh-add -l")[1]
    cfg.write_text(f"Host *\n  ForwardAgent {agent}\n")  # a path
    with connect(config=str(cfg)) as s:
        assert fp in run(s, "ssh-add -l")[1]
    cfg.write_text("Host *\n  ForwardAgent no\n")
    with connect(config=str(cfg)) as s:
        assert run(s, "ssh-add -l")[0] == 2


def test_config_asking_for_a_missing_agent_warns(connect, tmp_path, monkeypatch, caplog):
    # as OpenSSH: a config for every host must not break connections without an agent
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    cfg = tmp_path / "config"
    cfg.write_text("Host *\n  ForwardAgent yes\n")
    with caplog.at_level(logging.WARNING, logger="pyssh"):
        with connect(config=str(cfg)) as s:
            assert run(s, "echo ok")[1] == "ok\n"
    assert "the agent is not forwarded" in caplog.text and "SSH_AUTH_SOCK" in caplog.text


@pytest.mark.slow
def test_many_agent_clients_one_after_another_and_nothing_left(connect, agent_key):
    before = open_sockets()
    with connect(forward_agent=True) as s:
        status, out, _ = run(s, "for i in $(seq 30); do ssh-add -l >/dev/null || exit 9; done")
        assert status == 0
        # the connections to the agent are made when asked for, and closed after
        assert wait_until(lambda: s._tunnels.copy().pop().stats.active == 0, 5)
        assert s._tunnels.copy().pop().stats.connections == 30
    assert wait_until(lambda: open_sockets() == before, 5), (open_sockets(), before)
    assert wait_until(lambda: not agent_threads(), 5)


def test_a_gone_agent_fails_that_client_only(connect, agent, caplog):
    caplog.set_level(logging.WARNING, logger="pyssh")
    with connect(forward_agent=agent + ".missing") as s:
        status, _, _ = run(s, "ssh-add -l")
        assert status != 0  # its channel was opened, then closed: "communication ... failed"
        # logged by the tunnel's thread, when it is back in Python
        assert wait_until(lambda: "could not connect to the agent at" in caplog.text, 5)
        assert run(s, "echo ok")[1] == "ok\n"


def test_a_server_that_forbids_it_still_runs_the_command(agent_key):
    with SSHServer(extra_config=["AllowAgentForwarding no"]) as srv:
        with srv.connect(forward_agent=True) as s:
            status, out, _ = run(s, 'echo "sock=$SSH_AUTH_SOCK"; ssh-add -l')
            assert status == 2 and "sock=\n" in out


@pytest.mark.slow
def test_agent_channels_beyond_the_limit_are_refused(tmp_path, agent):
    # a server opening agent channels in a burst: AGENT_MAX at a time at most,
    # each answered, and the session still works
    srv = HostileServer(tmp_path)
    try:
        with srv.connect(forward_agent=True) as s:
            r = s.exec_internal("open auth-agent@openssh.com 100", timeout=60)
            got = json.loads(r.stdout)
            assert got["unanswered"] == got["unimplemented"] == 0
            assert AGENT_MAX <= got["confirmed"] < 100
            assert got["failure"] == {"1": 100 - got["confirmed"]}
            assert json.loads(s.exec_internal("echo still here").stdout) == {"echo": "still here"}
    finally:
        srv.close()


def test_popen_with_a_terminal_gets_the_agent_too(connect, agent_key):
    # ssh -A -t: the request goes on every session channel, pty or not
    with connect(forward_agent=True) as s, s.popen("ssh-add -l", pty=True) as p:
        out, _ = p.communicate(timeout=30)
        assert p.returncode == 0 and fingerprint(agent_key + ".pub").encode() in out
