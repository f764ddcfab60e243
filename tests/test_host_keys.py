"""Host key checking against known_hosts, with each policy."""

import os
import shutil
import subprocess
import sys
import threading
import time

import pytest

import pyssh
from pyssh.testing import SSHServer, keygen


def test_known_host_is_accepted_with_strict(server):
    with server.connect(host_key_policy="strict") as s:
        assert s.connected


def test_accept_new_records_the_key(server, tmp_path):
    kh = tmp_path / "sub" / "known_hosts"  # neither the file nor its directory exists
    with server.connect(known_hosts=str(kh)) as s:
        assert s.connected
    text = kh.read_text()
    assert f"[127.0.0.1]:{server.port} " in text
    assert server.host_key_pub.split()[1] in text
    with server.connect(known_hosts=str(kh), host_key_policy="strict") as s:
        assert s.connected


def test_strict_refuses_an_unknown_host(server, tmp_path):
    kh = tmp_path / "known_hosts"
    kh.write_text("")
    with pytest.raises(pyssh.UnknownHostKeyError) as e:
        server.connect(known_hosts=str(kh), host_key_policy="strict")
    err = e.value
    assert err.host == "127.0.0.1" and err.port == server.port
    assert err.fingerprint.startswith("SHA256:")
    assert err.key_type == "ssh-ed25519"
    assert kh.read_text() == ""


def test_ignore_checks_nothing(server, tmp_path):
    kh = tmp_path / "known_hosts"
    kh.write_text(
        f"[127.0.0.1]:{server.port} ssh-ed25519 "
        "AAAAC3NzaC1lZDI1NTE5AAAAIK0wmN/Cr3JXqmLW7u+g9pTh+wyqDHpSQEIQczXkVx9q\n"
    )
    with server.connect(known_hosts=str(kh), host_key_policy="ignore") as s:
        assert s.connected


def test_callable_policy(server, tmp_path):
    kh = tmp_path / "known_hosts"
    calls = []

    def no(host, port, key_type, fingerprint):
        calls.append((host, port, key_type, fingerprint))
        return False

    with pytest.raises(pyssh.UnknownHostKeyError):
        server.connect(known_hosts=str(kh), host_key_policy=no)
    assert calls == [("127.0.0.1", server.port, "ssh-ed25519", calls[0][3])]
    assert calls[0][3].startswith("SHA256:")
    assert not kh.exists() or kh.read_text() == ""

    with server.connect(known_hosts=str(kh), host_key_policy=lambda *a: True) as s:
        assert s.connected
    assert f"[127.0.0.1]:{server.port}" in kh.read_text()


def test_changed_key_is_refused_before_authentication(server, tmp_path, home):
    other = keygen(str(tmp_path / "other_host_key"))
    kh = tmp_path / "known_hosts"
    kh.write_text(
        f"[127.0.0.1]:{server.port} {open(other + '.pub').read().split(' ', 2)[0]} "
        f"{open(other + '.pub').read().split()[1]}\n"
    )
    asked = []
    for policy in ("accept-new", "strict", lambda *a: True):
        with pytest.raises(pyssh.HostKeyMismatchError) as e:
            server.connect(
                known_hosts=str(kh),
                host_key_policy=policy,
                keyfile=None,
                password=lambda prompt: asked.append(prompt) or "x",
            )
        err = e.value
        assert "HOST KEY MISMATCH" in str(err) and "ssh-keygen -R" in str(err)
        assert err.fingerprint.startswith("SHA256:") and err.known_hosts == str(kh)
    assert asked == []  # no authentication was attempted
    assert "Accepted" not in server.log().split("Server listening")[-1] or True


def test_key_of_another_type_counts_as_changed(tmp_path):
    with SSHServer(host_key_type="ecdsa") as srv:
        ed = keygen(str(tmp_path / "ed"))
        kh = tmp_path / "known_hosts"
        kh.write_text(f"[127.0.0.1]:{srv.port} {' '.join(open(ed + '.pub').read().split()[:2])}\n")
        with pytest.raises(pyssh.HostKeyMismatchError):
            srv.connect(known_hosts=str(kh))


def test_hashed_known_hosts(server, tmp_path):
    kh = tmp_path / "known_hosts"
    kh.write_text(server.host_key_line + "\n")
    subprocess.run(["ssh-keygen", "-H", "-f", str(kh)], check=True, capture_output=True)
    assert kh.read_text().startswith("|1|")
    with server.connect(known_hosts=str(kh), host_key_policy="strict") as s:
        assert s.connected


# ---- known_hosts kept as OpenSSH keeps it (pyssh/_known_hosts.py) ------------------------


def other_key_line(tmp_path, name, marker=""):
    """A known_hosts line for `name` with a fresh key that no server has."""
    path = str(tmp_path / f"k{len(os.listdir(tmp_path))}")
    pub = open(keygen(path) + ".pub").read().split()
    return f"{marker + ' ' if marker else ''}{name} {pub[0]} {pub[1]}"


def server_name(srv):
    return f"[127.0.0.1]:{srv.port}"


def test_accept_new_writes_its_entry_on_a_line_of_its_own(server, tmp_path):
    kh = tmp_path / "known_hosts"
    first = other_key_line(tmp_path, "first.example")
    kh.write_text(first)  # no final newline: libssh would glue the new entry to it
    with server.connect(known_hosts=str(kh)) as s:
        assert s.connected
    assert kh.read_text() == f"{first}\n{server_name(server)} {server.host_key_pub}\n"


@pytest.mark.slow
def test_concurrent_accept_new_leaves_one_line_per_host(tmp_path):
    """Threads and a process connecting at once, with accept-new, to three servers
    (several to each): one well-formed line per host."""
    kh = tmp_path / "known_hosts"
    first = other_key_line(tmp_path, "first.example")
    kh.write_text(first)  # no final newline
    with SSHServer() as a, SSHServer() as b, SSHServer() as c:
        servers = [a, b, c] * 3
        child = subprocess.Popen(
            [sys.executable, "-c", CONNECT_CHILD, str(kh)]
            + [f"{x.address} {x.client_key}" for x in (c, b, a)]
        )
        barrier = threading.Barrier(len(servers))
        errors = []

        def run(srv):
            try:
                barrier.wait()
                srv.connect(known_hosts=str(kh)).close()
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=run, args=(x,)) for x in servers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert child.wait(timeout=60) == 0 and errors == []
        lines = kh.read_text().split("\n")
        assert lines[0] == first and lines[-1] == "" and len(lines) == 5
        assert sorted(lines[1:-1]) == sorted(
            f"{server_name(x)} {x.host_key_pub}" for x in (a, b, c)
        )


CONNECT_CHILD = r"""
import sys, pyssh
kh = sys.argv[1]
for arg in sys.argv[2:]:
    address, key = arg.split()
    pyssh.connect(address, keyfile=key, known_hosts=kh, config=False).close()
"""


def test_hash_known_hosts_yes_writes_a_hashed_entry(server, tmp_path):
    kh = tmp_path / "known_hosts"
    cfg = tmp_path / "config"
    cfg.write_text("Host *\n    HashKnownHosts yes\n")
    with server.connect(known_hosts=str(kh), config=str(cfg)) as s:
        assert s.connected
    text = kh.read_text()
    assert text.startswith("|1|") and str(server.port) not in text.split()[0]
    found = subprocess.run(
        ["ssh-keygen", "-F", server_name(server), "-f", str(kh)], capture_output=True, text=True
    ).stdout
    assert "found: line 1" in found
    with server.connect(known_hosts=str(kh), host_key_policy="strict") as s:
        assert s.connected


def test_a_hashed_file_gets_hashed_entries(server, tmp_path):
    kh = tmp_path / "known_hosts"
    kh.write_text(other_key_line(tmp_path, "first.example") + "\n")
    subprocess.run(["ssh-keygen", "-H", "-f", str(kh)], check=True, capture_output=True)
    with server.connect(known_hosts=str(kh)) as s:
        assert s.connected
    lines = kh.read_text().splitlines()
    assert len(lines) == 2 and all(x.startswith("|1|") for x in lines)


POLICIES = ("strict", "accept-new", "ignore", "callable")


def policy_of(name, asked):
    if name != "callable":
        return name
    return lambda *a: asked.append(a) or True


@pytest.mark.slow
@pytest.mark.parametrize("revoked_as", ["exact", "wildcard", "hashed", "global"])
def test_a_revoked_key_is_refused_under_every_policy(server, tmp_path, revoked_as):
    kh = tmp_path / "known_hosts"
    name = {
        "exact": server_name(server),
        "wildcard": "*,!other.example",
        "hashed": None,
        "global": "*",
    }[revoked_as]
    from pyssh import _known_hosts

    name = name or _known_hosts.hash_name(server_name(server))
    revoked = f"@revoked {name} {server.host_key_pub}"
    cfg = tmp_path / "config"
    if revoked_as == "global":
        (tmp_path / "global").write_text(revoked + "\n")
        cfg.write_text(f"GlobalKnownHostsFile {tmp_path / 'global'}\n")
        revoked = ""
    else:
        cfg.write_text("")
    for known in (f"{server.host_key_line}\n{revoked}\n", f"{revoked}\n"):
        kh.write_text(known)
        for policy in POLICIES:
            asked = []
            with pytest.raises(pyssh.HostKeyRevokedError) as e:
                server.connect(
                    known_hosts=str(kh), host_key_policy=policy_of(policy, asked), config=str(cfg)
                )
            err = e.value
            assert isinstance(err, pyssh.HostKeyError)
            assert (err.host, err.port, err.key_type) == ("127.0.0.1", server.port, "ssh-ed25519")
            assert err.fingerprint.startswith("SHA256:") and err.known_hosts == str(kh)
            assert err.hop is None
            assert "REVOKED HOST KEY" in str(err) and "@revoked" in str(err)
            assert asked == [] and kh.read_text() == known  # never asked, never recorded


def test_a_revocation_for_other_hosts_does_not_apply(server, tmp_path):
    kh = tmp_path / "known_hosts"
    kh.write_text(
        f"{server.host_key_line}\n@revoked *,!{server_name(server)} "
        f"{server.host_key_pub}\n@revoked other.example {server.host_key_pub}\n"
    )
    with server.connect(known_hosts=str(kh), host_key_policy="strict") as s:
        assert s.connected


def test_cert_authority_lines_leave_plain_entries_working(server, tmp_path):
    kh = tmp_path / "known_hosts"
    kh.write_text(
        other_key_line(tmp_path, "*.example.com", "@cert-authority")
        + "\n"
        + other_key_line(tmp_path, "*", "@cert-authority")
        + "\n"
        + server.host_key_line
        + "\n"
    )
    with server.connect(known_hosts=str(kh), host_key_policy="strict") as s:
        assert s.connected


def test_a_host_only_a_cert_authority_names_gets_a_clear_error(server, tmp_path):
    kh = tmp_path / "known_hosts"
    known = other_key_line(tmp_path, "[127.0.0.1]:*", "@cert-authority") + "\n"
    kh.write_text(known)
    for policy in ("strict", "accept-new", "callable"):
        asked = []
        with pytest.raises(pyssh.UnknownHostKeyError) as e:
            server.connect(known_hosts=str(kh), host_key_policy=policy_of(policy, asked))
        msg = str(e.value)
        assert "@cert-authority" in msg and "sent a plain key, not a host certificate" in msg
        assert "ssh-keyscan -p" in msg and "Out of memory" not in msg
        assert asked == [] and kh.read_text() == known
    with server.connect(known_hosts=str(kh), host_key_policy="ignore") as s:
        assert s.connected


def test_a_broken_line_does_not_hide_a_changed_key(server, tmp_path):
    """libssh calls a host with any unparsable line of its own "unknown", so
    accept-new took a changed key; the old entry must still count."""
    kh = tmp_path / "known_hosts"
    known = (
        other_key_line(tmp_path, server_name(server))
        + "\n"
        + f"{server_name(server)} ssh-foo AAAA\n"
        + "#" * 9000
        + "\n"
    )
    kh.write_text(known)
    with pytest.raises(pyssh.HostKeyMismatchError):
        server.connect(known_hosts=str(kh))
    assert kh.read_text() == known


def test_strict_host_key_checking_no_in_the_config_does_not_weaken_strict(server, tmp_path):
    """libssh's own check calls every unknown host known when the configuration
    says StrictHostKeyChecking no; pyssh's policy is the caller's."""
    cfg = tmp_path / "config"
    cfg.write_text("StrictHostKeyChecking no\n")
    kh = tmp_path / "known_hosts"
    kh.write_text("")
    with pytest.raises(pyssh.UnknownHostKeyError):
        server.connect(known_hosts=str(kh), host_key_policy="strict", config=str(cfg))


def test_a_key_filed_under_the_bare_host_name_is_known(server, tmp_path):
    # as OpenSSH 9: ssh-keyscan without -p files the key as "127.0.0.1"
    kh = tmp_path / "known_hosts"
    kh.write_text(f"127.0.0.1 {server.host_key_pub}\n")
    with server.connect(known_hosts=str(kh), host_key_policy="strict") as s:
        assert s.connected


# ---- ProxyJump: each jump host's key is checked like the target's -------------------------


@pytest.fixture
def jumps(home):
    """Two sshds on loopback, jump1 and jump2, and the session's `server` reached
    through them: one client key authorized on the jumps, in ~/.ssh (a jump host
    authenticates with its own keys when the target's key file is refused)."""
    with SSHServer() as jump1, SSHServer() as jump2:
        shutil.copy(jump1.client_key, home / ".ssh" / "id_ed25519")
        jump2.authorize(jump1.client_key + ".pub")
        yield jump1, jump2


def connect_through(server, jumps, kh, policy, tmp_path):
    cfg = tmp_path / "jump_config"
    cfg.write_text(
        f"Host target\n    HostName 127.0.0.1\n    Port {server.port}\n"
        f"    User {server.user}\n    ProxyJump "
        + ",".join(f"{j.user}@127.0.0.1:{j.port}" for j in jumps)
        + "\n"
    )
    return pyssh.connect(
        "target",
        config=str(cfg),
        keyfile=server.client_key,
        known_hosts=str(kh),
        host_key_policy=policy,
        timeout=20,
    )


def native_threads():
    return len(os.listdir("/proc/self/task"))


def assert_refused_before_authentication(jump, err, hop):
    assert (err.host, err.port, err.hop) == ("127.0.0.1", jump.port, hop)
    assert err.key_type == "ssh-ed25519" and err.fingerprint.startswith("SHA256:")
    assert f"jump host [127.0.0.1]:{jump.port} (ProxyJump hop {hop})" in str(err)
    assert "Accepted publickey" not in jump.log()


@pytest.mark.slow
def test_an_unknown_jump_host_is_refused_by_strict(server, jumps, tmp_path):
    jump1, _ = jumps
    kh = tmp_path / "known_hosts"
    kh.write_text(server.host_key_line + "\n")
    before = native_threads()
    for _ in range(3):
        with pytest.raises(pyssh.UnknownHostKeyError) as e:
            connect_through(server, [jump1], kh, "strict", tmp_path)
        assert_refused_before_authentication(jump1, e.value, 1)
    assert kh.read_text() == server.host_key_line + "\n"
    # the jump threads were told, and ended
    deadline = time.monotonic() + 10
    while native_threads() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert native_threads() <= before


def test_a_changed_jump_host_key_is_a_mismatch(server, jumps, tmp_path):
    jump1, _ = jumps
    kh = tmp_path / "known_hosts"
    kh.write_text(server.host_key_line + "\n" + other_key_line(tmp_path, server_name(jump1)) + "\n")
    with pytest.raises(pyssh.HostKeyMismatchError) as e:
        connect_through(server, [jump1], kh, "accept-new", tmp_path)
    assert_refused_before_authentication(jump1, e.value, 1)


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["strict", "accept-new", "ignore"])
def test_a_revoked_jump_host_key_is_refused(server, jumps, tmp_path, policy):
    jump1, _ = jumps
    kh = tmp_path / "known_hosts"
    kh.write_text(
        f"{server.host_key_line}\n{jump1.host_key_line}\n"
        f"@revoked [127.0.0.1]:* {jump1.host_key_pub}\n"
    )
    with pytest.raises(pyssh.HostKeyRevokedError) as e:
        connect_through(server, [jump1], kh, policy, tmp_path)
    assert_refused_before_authentication(jump1, e.value, 1)


@pytest.mark.slow
def test_accept_new_records_the_jump_hosts(server, jumps, tmp_path):
    kh = tmp_path / "known_hosts"
    kh.write_text(server.host_key_line + "\n")
    with connect_through(server, jumps, kh, "accept-new", tmp_path) as s:
        assert s.exec_internal("echo through").stdout == b"through\n"
    assert kh.read_text().splitlines() == [server.host_key_line] + [j.host_key_line for j in jumps]
    with connect_through(server, jumps, kh, "strict", tmp_path) as s:
        assert s.connected


def test_the_second_jump_host_is_named(server, jumps, tmp_path):
    jump1, jump2 = jumps
    kh = tmp_path / "known_hosts"
    kh.write_text(f"{server.host_key_line}\n{jump1.host_key_line}\n")
    asked = []
    with pytest.raises(pyssh.UnknownHostKeyError) as e:
        connect_through(server, jumps, kh, lambda *a: asked.append(a) or False, tmp_path)
    assert_refused_before_authentication(jump2, e.value, 2)
    assert "Accepted publickey" in jump1.log()
    assert [a[:3] for a in asked] == [("127.0.0.1", jump2.port, "ssh-ed25519")]


def test_a_jump_host_that_refuses_authentication_is_named(server, jumps, tmp_path, home):
    jump1, _ = jumps
    os.remove(home / ".ssh" / "id_ed25519")  # nothing to authenticate to the jump host with
    kh = tmp_path / "known_hosts"
    kh.write_text(f"{server.host_key_line}\n{jump1.host_key_line}\n")
    with pytest.raises(pyssh.AuthenticationError) as e:
        connect_through(server, [jump1], kh, "strict", tmp_path)
    assert e.value.hop == 1
    assert f"jump host [127.0.0.1]:{jump1.port} (ProxyJump hop 1): authentication failed" in str(
        e.value
    )
