"""Choosing algorithms: connect(ciphers=, kex=, macs=, host_key_algorithms=), pyssh's
default cipher order, and what ~/.ssh/config says."""

import pytest

import pyssh
from pyssh import _ssh


def test_default_cipher_order_follows_the_cpu(server):
    with server.connect() as s:
        cipher = s.info()["cipher"]
    if _ssh.CPU_HAS_AES:
        assert _ssh.DEFAULT_CIPHERS.startswith("aes128-gcm@openssh.com,")
        assert cipher == "aes128-gcm@openssh.com"
    else:
        assert _ssh.DEFAULT_CIPHERS == ""
        assert cipher == "chacha20-poly1305@openssh.com"
    # the same set as libssh's default either way: no CBC, no 3DES
    assert "cbc" not in _ssh.DEFAULT_CIPHERS and "3des" not in _ssh.DEFAULT_CIPHERS


@pytest.mark.slow
@pytest.mark.parametrize(
    "ciphers",
    [
        ["chacha20-poly1305@openssh.com"],
        "aes256-ctr",
        ["aes256-gcm@openssh.com", "aes128-gcm@openssh.com"],
    ],
)
def test_ciphers_argument(server, ciphers):
    with server.connect(ciphers=ciphers) as s:
        first = ciphers if isinstance(ciphers, str) else ciphers[0]
        assert s.info()["cipher"] == first
        assert s.exec_internal("echo ok").stdout == b"ok\n"


def test_kex_macs_and_host_key_algorithms(server):
    with server.connect(
        ciphers="aes128-ctr",
        macs=["hmac-sha2-512"],
        kex=["ecdh-sha2-nistp256"],
        host_key_algorithms=["ssh-ed25519"],
    ) as s:
        info = s.info()
        assert info["mac"] == "hmac-sha2-512"
        assert info["kex"] == "ecdh-sha2-nistp256"
        assert info["hostkey"] == "ssh-ed25519"


def test_unknown_algorithm_is_a_value_error(server):
    with pytest.raises(ValueError, match="ciphers.*ssh -Q"):
        server.connect(ciphers=["no-such-cipher"])
    with pytest.raises(ValueError, match="kex"):
        server.connect(kex="no-such-kex")


def test_no_algorithm_in_common(server):
    # a cipher libssh knows and this sshd does not offer
    with pytest.raises(pyssh.ConnectError, match="no match for method encryption"):
        server.connect(ciphers=["aes128-cbc"])


@pytest.mark.parametrize(
    "value, err", [([], ValueError), ("", ValueError), (["a b"], ValueError), (42, TypeError)]
)
def test_bad_algorithm_lists(server, value, err):
    with pytest.raises(err):
        server.connect(ciphers=value)


def test_config_ciphers_win_over_the_default_and_lose_to_the_argument(server, home):
    (home / ".ssh" / "config").write_text("Host *\n  Ciphers aes256-ctr\n")
    with server.connect(config=True) as s:
        assert s.info()["cipher"] == "aes256-ctr"
    with server.connect(config=True, ciphers=["aes128-ctr"]) as s:
        assert s.info()["cipher"] == "aes128-ctr"
