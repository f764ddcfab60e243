"""Host certificates: @cert-authority lines in known_hosts vouch for a server's
host certificate (OpenSSH's ssh-keygen makes the CA and signs the host keys)."""

import base64
import subprocess

import pytest

import pyssh
from pyssh import _keys, _known_hosts, _ssh
from pyssh.testing import SSHServer

pytestmark = pytest.mark.skipif(
    not hasattr(_ssh.Key, "_verify_signature"),
    reason="libssh without vendor/patches/libssh-*-host-certificates.patch",
)

ED = "ssh-ed25519-cert-v01@openssh.com"


def _keygen(path, *args):
    subprocess.run(["ssh-keygen", "-q", "-N", "", "-f", str(path), *args], check=True)


def _sign(ca, pub, *args):
    subprocess.run(["ssh-keygen", "-q", "-s", str(ca), "-I", "host", *args, str(pub)], check=True)


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """Two CAs, and host keys with certificates: ed25519 good, ecdsa-256 expired,
    ecdsa-384 for another host name, ecdsa-521 a user certificate."""
    d = tmp_path_factory.mktemp("hostcert")
    for ca in ("ca", "ca2"):
        _keygen(d / ca, "-t", "ed25519")
    hosts = {"ed": ("-t", "ed25519")}
    hosts.update({f"p{b}": ("-t", "ecdsa", "-b", str(b)) for b in (256, 384, 521)})
    for name, args in hosts.items():
        _keygen(d / name, *args)
    _sign(d / "ca", d / "ed.pub", "-h", "-n", "127.0.0.1,localhost", "-V", "-5m:+1h")
    _sign(d / "ca", d / "p256.pub", "-h", "-n", "127.0.0.1", "-V", "-2h:-1h")
    _sign(d / "ca", d / "p384.pub", "-h", "-n", "otherhost", "-V", "-5m:+1h")
    _sign(d / "ca", d / "p521.pub", "-n", "127.0.0.1", "-V", "-5m:+1h")
    return d


@pytest.fixture(scope="module")
def cert_server(keys):
    cfg = []
    for name in ("ed", "p256", "p384", "p521"):
        cfg += [f"HostKey {keys / name}", f"HostCertificate {keys / name}-cert.pub"]
    with SSHServer(host_key_type="rsa", extra_config=cfg) as srv:
        yield srv


def _pub(path):
    return path.read_text().split()[:2]


def _known(tmp_path, *lines):
    kh = tmp_path / "known_hosts"
    kh.write_text("".join(line + "\n" for line in lines))
    return kh


def _ca_line(srv, keys, ca="ca", marker="@cert-authority", hosts=None):
    t, b = _pub(keys / f"{ca}.pub")
    return f"{marker} {hosts or f'[127.0.0.1]:{srv.port}'} {t} {b}"


def test_accepted_via_cert_authority(cert_server, keys, tmp_path):
    kh = _known(tmp_path, _ca_line(cert_server, keys))
    with cert_server.connect(known_hosts=str(kh), host_key_policy="strict") as s:
        assert s._hostkey.type == ED  # offered first because a CA is known
        assert s.exec_wait("true") == 0
    assert kh.read_text().count("\n") == 1  # nothing recorded


def test_pattern_and_bare_host_name(cert_server, keys, tmp_path):
    kh = _known(tmp_path, _ca_line(cert_server, keys, hosts="127.0.0.*"))
    with cert_server.connect(known_hosts=str(kh), host_key_policy="strict") as s:
        assert s._hostkey.type == ED


@pytest.mark.parametrize("policy", ["strict", "accept-new"])
def test_wrong_ca_refused(cert_server, keys, tmp_path, policy):
    kh = _known(tmp_path, _ca_line(cert_server, keys, ca="ca2"))
    with pytest.raises(pyssh.HostKeyError) as e:
        cert_server.connect(known_hosts=str(kh), host_key_policy=policy)
    assert "no @cert-authority line trusts" in str(e.value)
    assert e.value.port == cert_server.port and e.value.key_type == "ssh-ed25519"
    assert "ca2" not in kh.read_text().split("\n", 1)[1]  # nothing appended


@pytest.mark.slow
@pytest.mark.parametrize(
    "algorithm, why",
    [
        ("ecdsa-sha2-nistp256-cert-v01@openssh.com", "expired"),
        ("ecdsa-sha2-nistp384-cert-v01@openssh.com", "do not include '127.0.0.1'"),
        ("ecdsa-sha2-nistp521-cert-v01@openssh.com", "not a host certificate"),
    ],
)
def test_invalid_certificate_refused(cert_server, keys, tmp_path, algorithm, why):
    kh = _known(tmp_path, _ca_line(cert_server, keys))
    with pytest.raises(pyssh.HostKeyError) as e:
        cert_server.connect(known_hosts=str(kh), host_key_algorithms=algorithm)
    assert "HOST CERTIFICATE REFUSED" in str(e.value) and why in str(e.value)
    assert kh.read_text().count("\n") == 1


def test_revoked_ca(cert_server, keys, tmp_path):
    kh = _known(
        tmp_path,
        _ca_line(cert_server, keys),
        _ca_line(cert_server, keys, marker="@revoked", hosts="*"),
    )
    with pytest.raises(pyssh.HostKeyRevokedError) as e:
        cert_server.connect(known_hosts=str(kh), host_key_policy="ignore")
    assert "the CA that signed its host certificate" in str(e.value)


def test_revoked_certified_key(cert_server, keys, tmp_path):
    t, b = _pub(keys / "ed.pub")
    kh = _known(tmp_path, _ca_line(cert_server, keys), f"@revoked * {t} {b}")
    with pytest.raises(pyssh.HostKeyRevokedError):
        cert_server.connect(known_hosts=str(kh))


def test_plain_key_fallback_without_ca(cert_server, keys, tmp_path):
    """No CA trusted: a certificate counts as its plain key (OpenSSH does so)."""
    t, b = _pub(keys / "ed.pub")
    kh = _known(tmp_path, f"[127.0.0.1]:{cert_server.port} {t} {b}")
    with cert_server.connect(
        known_hosts=str(kh), host_key_policy="strict", host_key_algorithms=ED
    ) as s:
        assert s._hostkey.type == ED
    kh.write_text("")
    with cert_server.connect(known_hosts=str(kh), host_key_algorithms=ED):
        pass
    assert kh.read_text() == f"[127.0.0.1]:{cert_server.port} {t} {b}\n"  # the plain key


def test_server_without_certificate(server, tmp_path):
    kh = _known(tmp_path, f"@cert-authority [127.0.0.1]:{server.port} {server.host_key_pub}")
    with pytest.raises(pyssh.UnknownHostKeyError) as e:
        server.connect(known_hosts=str(kh))
    assert "sent a plain key, not a host certificate" in str(e.value)
    with server.connect(host_key_policy="strict") as s:  # no CA line: as before
        assert s._hostkey.type == "ssh-ed25519"


def test_forged_or_odd_certificates(keys):
    """What the C check and the parser say about tampered certificates."""
    blob = base64.b64decode(_pub(keys / "ed-cert.pub")[1])
    cert = _keys.parse_certificate_blob(blob, "cert")
    assert cert.cert_type == 2 and cert.principals == ("127.0.0.1", "localhost")
    assert _ssh.Key._verify_signature(cert.ca_blob, cert.signature, cert.signed)
    forged = cert.signed[:-40] + bytes([cert.signed[-40] ^ 1]) + cert.signed[-39:]
    assert not _ssh.Key._verify_signature(cert.ca_blob, cert.signature, forged)
    assert not _ssh.Key._verify_signature(b"junk", cert.signature, cert.signed)
    assert not _ssh.Key._verify_signature(cert.ca_blob, b"\0\0\0\1x", cert.signed)
    for n in range(len(blob)):
        with pytest.raises(ValueError):
            _keys.parse_certificate_blob(blob[:n], "cert")
    ok = lambda: True  # noqa: E731
    now = cert.valid_after + 60
    assert _known_hosts.certificate_problem(cert, "LOCALHOST", now, ok) is None
    assert "forged" in _known_hosts.certificate_problem(cert, "x", now, lambda: False)
    import dataclasses

    crit = dataclasses.replace(cert, critical_options=b"\0\0\0\1x")
    assert "critical options" in _known_hosts.certificate_problem(crit, "localhost", now, ok)
    anyhost = dataclasses.replace(cert, principals=("*.example.com",))
    assert _known_hosts.certificate_problem(anyhost, "a.example.com", now, ok) is None
    assert "not valid before" in _known_hosts.certificate_problem(
        cert, "localhost", cert.valid_after - 1, ok
    )
