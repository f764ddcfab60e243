"""User certificates from files: id_*-cert.pub beside the key, CertificateFile in the
config, and connect(certificate=), against an sshd that trusts a CA and has no
authorized key; OpenSSH's ssh-keygen makes the CA and signs the certificates."""

import os
import shutil
import subprocess

import pytest

import pyssh
from pyssh._keys import read_certificate
from pyssh.testing import SSHServer, keygen


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("ca") / "ca")
    return keygen(path, comment="pyssh-test-ca")


@pytest.fixture(scope="module")
def ca_server(ca):
    config = [f"TrustedUserCAKeys {ca}.pub", "AuthorizedKeysFile none", "SetEnv SHLVL=1"]
    with SSHServer(extra_config=config) as srv:
        yield srv


def sign(ca, key, principal, validity="+1h", cert=None):
    """Sign key.pub with the CA: key-cert.pub (moved to `cert` if given)."""
    subprocess.run(
        [
            "ssh-keygen",
            "-q",
            "-s",
            ca,
            "-I",
            "pyssh-test",
            "-n",
            principal,
            "-V",
            validity,
            key + ".pub",
        ],
        check=True,
        capture_output=True,
    )
    if cert is not None:
        shutil.move(key + "-cert.pub", cert)
        return str(cert)
    return key + "-cert.pub"


def test_certificate_beside_the_key(ca, ca_server, home):
    key = keygen(str(home / ".ssh" / "id_ed25519"))
    with pytest.raises(pyssh.AuthenticationError):
        ca_server.connect(keyfile=None, timeout=10)  # no certificate yet: no way in
    cert = sign(ca, key, ca_server.user)
    with ca_server.connect(keyfile=None) as s:
        assert s.info()["identity"] == f"{key} (certificate {cert})"
    with ca_server.connect(keyfile=key) as s:
        assert cert in s.info()["identity"]


def test_certificate_file_in_config(ca, ca_server, tmp_path, home):
    key = keygen(str(tmp_path / "k"))
    cert = sign(ca, key, ca_server.user, cert=tmp_path / "elsewhere.pub")
    config = tmp_path / "config"
    config.write_text(f"Host *\n  IdentityFile {key}\n  CertificateFile {cert}\n")
    with ca_server.connect(keyfile=None, config=str(config)) as s:
        assert s.info()["identity"] == f"{key} (certificate {cert})"


def test_certificate_argument(ca, ca_server, tmp_path, home):
    key = keygen(str(tmp_path / "k"))
    cert = sign(ca, key, ca_server.user, cert=tmp_path / "c.pub")
    with ca_server.connect(keyfile=key, certificate=cert) as s:
        assert cert in s.info()["identity"]
    with ca_server.connect(keyfile=pyssh.read_key(key), certificate=cert) as s:
        assert cert in s.info()["identity"]
    other = keygen(str(tmp_path / "other"))  # a certificate that is not this key's is not used
    with pytest.raises(pyssh.AuthenticationError):
        ca_server.connect(keyfile=other, certificate=cert, timeout=10)
    with pytest.raises(FileNotFoundError):
        ca_server.connect(keyfile=key, certificate=tmp_path / "missing.pub")
    with pytest.raises(ValueError, match="not an OpenSSH"):
        ca_server.connect(keyfile=key, certificate=key + ".pub")


def test_expired_certificate(ca, ca_server, tmp_path, home):
    key = keygen(str(tmp_path / "k"))
    cert = sign(ca, key, ca_server.user, validity="20200101:20200102")
    with pytest.raises(pyssh.AuthenticationError) as e:
        ca_server.connect(keyfile=key, timeout=10)
    assert f"{cert}: the server refused the certificate: it expired on 2020-01-0" in str(e.value)
    assert any(name == cert for name, _why in e.value.keys)


def test_wrong_principal(ca, ca_server, tmp_path, home):
    key = keygen(str(tmp_path / "k"))
    cert = sign(ca, key, "somebody-else", cert=tmp_path / "c.pub")
    with pytest.raises(pyssh.AuthenticationError) as e:
        ca_server.connect(keyfile=key, certificate=cert, timeout=10)
    message = str(e.value)
    assert f"{cert}: the server refused the certificate: " in message
    assert "its principals (somebody-else) do not include" in message


def agent_only_key(path, agent, kind="ed25519"):
    """A key added to ssh-agent (to be deleted by the test: then only the agent holds it)."""
    key = keygen(str(path), kind)
    subprocess.run(["ssh-add", "-q", key], check=True, capture_output=True)
    return key


@pytest.mark.parametrize("kind", ["ed25519", "ecdsa", pytest.param("rsa", marks=pytest.mark.slow)])
def test_certificate_of_an_agent_key(ca, ca_server, tmp_path, home, agent, kind):
    key = agent_only_key(tmp_path / "k", agent, kind)
    cert = sign(ca, key, ca_server.user, cert=tmp_path / "c.pub")
    os.remove(key)
    os.remove(key + ".pub")
    assert [k.blob() for k in pyssh.agent_keys()] == [read_certificate(cert).key_blob]
    with ca_server.connect(keyfile=None, certificate=cert) as s:
        assert s.info()["identity"] == f"ssh-agent (certificate {cert})"
    config = tmp_path / "config"
    config.write_text(f"Host *\n  CertificateFile {cert}\n")
    with ca_server.connect(keyfile=None, config=str(config)) as s:
        assert s.info()["identity"] == f"ssh-agent (certificate {cert})"


def test_certificate_whose_key_the_agent_lacks(ca, ca_server, tmp_path, home, agent):
    agent_only_key(tmp_path / "other", agent)
    key = keygen(str(tmp_path / "k"))
    cert = sign(ca, key, ca_server.user, cert=tmp_path / "c.pub")
    os.remove(key)
    with pytest.raises(pyssh.AuthenticationError) as e:
        ca_server.connect(keyfile=None, certificate=cert, timeout=10)
    assert [name for name, _why in e.value.keys] == ["ssh-agent", cert]
    assert f"{cert}: no key pyssh tried is this certificate's (ssh-agent does not hold it)" in str(
        e.value
    )


def test_agent_certificate_refused(ca, ca_server, tmp_path, home, agent):
    key = agent_only_key(tmp_path / "k", agent)
    cert = sign(ca, key, "somebody-else", cert=tmp_path / "c.pub")
    os.remove(key)
    with pytest.raises(pyssh.AuthenticationError) as e:
        ca_server.connect(keyfile=None, certificate=cert, timeout=10)
    assert [name for name, _why in e.value.keys] == ["ssh-agent", cert]
    assert "its principals (somebody-else) do not include" in str(e.value)
