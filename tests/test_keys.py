"""pyssh's key helpers: generate_key, read_key, Key, agent_keys, against OpenSSH's
own ssh-keygen, ssh-add and sshd."""

import os
import stat
import subprocess

import pytest

import pyssh


def keygen_l(path, hash="sha256"):
    """ssh-keygen -l's fingerprint of a key file."""
    out = subprocess.run(
        ["ssh-keygen", "-l", "-E", hash, "-f", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.split()[1]


def test_generate_save_read(tmp_path):
    key = pyssh.generate_key(comment="me@here")
    assert key.has_private and key.type == "ssh-ed25519" and key.bits == 256
    path = tmp_path / "id_ed25519"
    key.save(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert (tmp_path / "id_ed25519.pub").read_text() == key.public_line() + "\n"
    assert key.public_line().endswith(" me@here")
    assert key.fingerprint() == keygen_l(path) == keygen_l(str(path) + ".pub")
    assert key.fingerprint("md5") == keygen_l(path, "md5")
    back = pyssh.read_key(path)
    assert back.fingerprint() == key.fingerprint() and back.comment == "me@here"
    assert "SHA256:" in repr(back) and "me@here" in repr(back)
    public = pyssh.read_key(str(path) + ".pub")
    assert not public.has_private and public.public_line() == key.public_line()
    with pytest.raises(FileExistsError):
        key.save(path)
    key.save(path, overwrite=True)
    # ssh-keygen reads what pyssh wrote: the public half it derives is the same key
    derived = subprocess.run(
        ["ssh-keygen", "-y", "-f", str(path)], capture_output=True, text=True, check=True
    ).stdout
    assert derived.split()[:2] == key.public_line().split()[:2]


@pytest.mark.slow
def test_passphrase(tmp_path):
    key = pyssh.generate_key()
    path = tmp_path / "k"
    key.save(path, "s3cret", public=False)
    assert not (tmp_path / "k.pub").exists()
    assert pyssh.read_key(path, "s3cret").fingerprint() == key.fingerprint()
    asked = []
    assert pyssh.read_key(path, lambda p: asked.append(p) or "s3cret").has_private
    assert asked and str(path) in asked[0]
    with pytest.raises(pyssh.PrivateKeyError, match="wrong passphrase") as e:
        pyssh.read_key(path, "nope")
    assert "nope" not in str(e.value) and e.value.path == str(path)
    with pytest.raises(pyssh.PrivateKeyError, match="encrypted"):
        pyssh.read_key(path)
    subprocess.run(
        ["ssh-keygen", "-y", "-P", "s3cret", "-f", str(path)], check=True, capture_output=True
    )


def test_read_openssh_keys_and_garbage(make_key, tmp_path):
    path = make_key("ec", "ecdsa", passphrase="pp")
    key = pyssh.read_key(path, "pp")
    assert key.type == "ecdsa-sha2-nistp256" and key.bits == 256 and key.comment == "pyssh-test"
    assert key.fingerprint() == keygen_l(path)
    bad = tmp_path / "bad"
    bad.write_text(
        "-----BEGIN OPENSSH PRIVATE KEY-----\nnot a key\n-----END OPENSSH PRIVATE KEY-----\n"
    )
    with pytest.raises(pyssh.PrivateKeyError, match="not a private key"):
        pyssh.read_key(bad)
    with pytest.raises(ValueError):
        pyssh.generate_key("rsa", 1024)
    with pytest.raises(ValueError):
        pyssh.generate_key("dsa")


@pytest.mark.slow
@pytest.mark.parametrize(
    "kind,bits", [("ecdsa", 384), ("ecdsa", 521), ("rsa", 2048), ("rsa", None)]
)
def test_each_type(tmp_path, kind, bits):
    key = pyssh.generate_key(kind, bits)
    assert key.bits == (bits or 3072)
    key.save(tmp_path / "k", "pw")
    assert key.fingerprint() == keygen_l(tmp_path / "k.pub")
    assert pyssh.read_key(tmp_path / "k", "pw").fingerprint() == key.fingerprint()


def test_generated_key_logs_in(fresh_server, tmp_path):
    key = pyssh.generate_key()
    key.save(tmp_path / "id")
    fresh_server.authorize(str(tmp_path / "id.pub"))
    with fresh_server.connect(keyfile=tmp_path / "id") as s:
        assert s.info()["identity"] == str(tmp_path / "id")
    with fresh_server.connect(keyfile=key) as s:
        assert key.fingerprint() in s.info()["identity"]
    with pytest.raises(ValueError, match="public key only"):
        fresh_server.connect(keyfile=pyssh.read_key(tmp_path / "id.pub"))


def test_agent_keys(agent, make_key):
    assert pyssh.agent_keys() == []
    path = make_key("a")
    subprocess.run(["ssh-add", "-q", path], check=True, capture_output=True)
    listed = subprocess.run(["ssh-add", "-l"], capture_output=True, text=True, check=True).stdout
    keys = pyssh.agent_keys()
    assert [k.fingerprint() for k in keys] == [line.split()[1] for line in listed.splitlines()]
    assert keys[0].comment == "pyssh-test" and not keys[0].has_private


def test_agent_keys_without_agent(monkeypatch, tmp_path):
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    with pytest.raises(pyssh.SSHError, match="SSH_AUTH_SOCK"):
        pyssh.agent_keys()
    with pytest.raises(pyssh.SSHError, match="cannot ask the agent"):
        pyssh.agent_keys(tmp_path / "none.sock")


def test_public_line_text_and_malformed_answers():
    from pyssh import _keys

    key = pyssh.generate_key(comment="c")
    assert pyssh.read_key(key.public_line()).fingerprint() == key.fingerprint()
    blob = key.blob()
    good = b"\x0c" + (1).to_bytes(4, "big") + _keys._string(blob) + _keys._string(b"c")
    assert [k.comment for k in _keys._parse_identities(good)] == ["c"]
    # every truncation, a huge count, trailing bytes, a refusal: an error, never a crash
    bad = [good[:n] for n in range(len(good))] + [good + b"x", b"\x05"]
    bad.append(b"\x0c" + (10**6).to_bytes(4, "big"))
    for answer in bad:
        with pytest.raises((pyssh.SSHError, ValueError)):  # agent_keys: all SSHError
            _keys._parse_identities(answer)


def test_malformed_certificates(tmp_path, make_key):
    from pyssh import _keys

    path = make_key("k")
    subprocess.run(
        ["ssh-keygen", "-q", "-s", path, "-I", "i", "-n", "p", path + ".pub"], check=True
    )
    cert = _keys.read_certificate(path + "-cert.pub")
    assert cert.principals == ("p",) and cert.key_blob == pyssh.read_key(path).blob()
    assert cert.validity_problem() is None
    name, b64 = open(path + "-cert.pub").read().split()[:2]
    import base64

    blob = base64.b64decode(b64)
    for n in range(0, len(blob), 7):
        with pytest.raises(ValueError):
            _keys._parse_certificate("c", name, blob[:n])
    with pytest.raises(ValueError, match="not an OpenSSH"):
        _keys.read_certificate(path + ".pub")
