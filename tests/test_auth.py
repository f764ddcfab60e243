"""Authentication, in pyssh's order, against the real sshd."""

import os
import shutil
import subprocess

import pytest

import pyssh

from conftest import IS_ROOT


def test_key_as_path(server):
    with server.connect(keyfile=server.client_key) as s:
        assert s.info()["identity"] == server.client_key


def test_key_as_pathlike(server):
    import pathlib

    with server.connect(keyfile=pathlib.Path(server.client_key)) as s:
        assert s.connected


def test_key_as_text_str_and_bytes(server):
    text = open(server.client_key).read()
    with server.connect(keyfile=text) as s:
        assert s.info()["identity"] == "<key given as text>"
    with server.connect(keyfile=text.encode()) as s:
        assert s.connected


@pytest.mark.slow
@pytest.mark.parametrize("kind,fmt", [("ed25519", None), ("rsa", "PEM"), ("ecdsa", None)])
def test_encrypted_key_with_passphrase_string(server, make_key, kind, fmt):
    key = make_key(f"enc_{kind}", kind, passphrase="open sesame", fmt=fmt)
    server.authorize(key + ".pub")
    with server.connect(keyfile=key, passphrase="open sesame") as s:
        assert s.info()["identity"] == key


def test_encrypted_key_with_passphrase_callable(server, make_key):
    key = make_key("enc_cb", passphrase="s3cret")
    server.authorize(key + ".pub")
    prompts = []

    def ask(prompt):
        prompts.append(prompt)
        return "s3cret"

    with server.connect(keyfile=key, passphrase=ask) as s:
        assert s.connected
    assert len(prompts) == 1 and key in prompts[0]


def test_encrypted_key_text_with_passphrase(server, make_key):
    key = make_key("enc_text", passphrase="pp")
    server.authorize(key + ".pub")
    with server.connect(keyfile=open(key).read(), passphrase="pp") as s:
        assert s.connected


@pytest.mark.slow
@pytest.mark.parametrize("fmt", [None, "PEM"])
def test_encrypted_key_without_passphrase_is_a_clear_error(server, make_key, fmt):
    # stdin is not a terminal here: no prompt (and never OpenSSL's own on /dev/tty)
    key = make_key("enc_nopp", "rsa" if fmt else "ed25519", passphrase="pp-12345", fmt=fmt)
    server.authorize(key + ".pub")
    with pytest.raises(pyssh.PrivateKeyError) as e:
        server.connect(keyfile=key, passphrase=None)
    assert "encrypted" in str(e.value) and "passphrase=" in str(e.value)
    assert e.value.path == key


def test_wrong_passphrase(server, make_key):
    key = make_key("enc_wrong", passphrase="right-one")
    server.authorize(key + ".pub")
    with pytest.raises(pyssh.PrivateKeyError) as e:
        server.connect(keyfile=key, passphrase="not-it-123")
    assert "wrong passphrase" in str(e.value)
    assert "not-it-123" not in str(e.value)  # the secret is not echoed


def test_passphrase_not_asked_for_a_key_the_server_refuses(server, make_key):
    key = make_key("enc_refused", passphrase="pp")  # not authorized
    asked = []
    with pytest.raises(pyssh.AuthenticationError) as e:
        server.connect(keyfile=key, passphrase=lambda p: asked.append(p) or "pp")
    assert asked == []
    assert e.value.keys == [(key, "the server does not accept this key")]


def test_wrong_key(server, make_key):
    key = make_key("stranger")
    with pytest.raises(pyssh.AuthenticationError) as e:
        server.connect(keyfile=key)
    err = e.value
    assert "publickey" in err.methods_tried
    assert "publickey" in err.methods_allowed
    assert err.keys == [(key, "the server does not accept this key")]
    assert key in str(err) and "does not accept" in str(err)


def test_garbage_key_file(server, tmp_path):
    bad = tmp_path / "garbage"
    bad.write_text("this is not a key\n")
    with pytest.raises(pyssh.PrivateKeyError) as e:
        server.connect(keyfile=str(bad))
    assert "not a private key" in str(e.value)
    binary = tmp_path / "binary"
    binary.write_bytes(os.urandom(64) + b"\0")
    with pytest.raises(pyssh.PrivateKeyError):
        server.connect(keyfile=str(binary))


def test_missing_key_file(server, tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        server.connect(keyfile=str(tmp_path / "nope"))
    assert "keyfile not found" in str(e.value)


def test_key_file_is_a_directory(server, tmp_path):
    with pytest.raises(IsADirectoryError):
        server.connect(keyfile=str(tmp_path))


def test_only_the_given_key_is_tried(server, home, agent):
    # the agent and the default files hold a good key, the argument a bad one
    subprocess.run(["ssh-add", "-q", server.client_key], check=True, capture_output=True)
    shutil.copy(server.client_key, home / ".ssh" / "id_ed25519")
    bad = pyssh.testing.keygen(str(home / "bad"))
    with pytest.raises(pyssh.AuthenticationError) as e:
        server.connect(keyfile=bad)
    assert e.value.methods_tried == ["publickey"]


def test_agent(server, home, agent):
    subprocess.run(["ssh-add", "-q", server.client_key], check=True, capture_output=True)
    with server.connect(keyfile=None) as s:
        assert s.info()["identity"] == "ssh-agent"


def test_agent_without_the_key_falls_back_to_files(server, home, agent, make_key):
    other = make_key("agent_other")
    subprocess.run(["ssh-add", "-q", other], check=True, capture_output=True)
    shutil.copy(server.client_key, home / ".ssh" / "id_ed25519")
    with server.connect(keyfile=None) as s:
        assert s.info()["identity"] == str(home / ".ssh" / "id_ed25519")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["id_ed25519", "id_ecdsa", "id_rsa"])
def test_default_key_files(server, home, name):
    kind = name[3:]
    key = pyssh.testing.keygen(str(home / ".ssh" / name), kind)
    server.authorize(key + ".pub")
    with server.connect(keyfile=None) as s:
        assert s.info()["identity"] == key


def test_default_key_order_and_report(server, home):
    # id_ed25519 is not authorized, id_rsa is: both are tried, in that order
    pyssh.testing.keygen(str(home / ".ssh" / "id_ed25519"))
    rsa = pyssh.testing.keygen(str(home / ".ssh" / "id_rsa"), "rsa")
    server.authorize(rsa + ".pub")
    with server.connect(keyfile=None) as s:
        assert s.info()["identity"] == rsa


def test_config_identity_file(server, home):
    key = pyssh.testing.keygen(str(home / "elsewhere_key"))
    server.authorize(key + ".pub")
    (home / ".ssh" / "config").write_text("Host 127.0.0.1\n  IdentityFile ~/elsewhere_key\n")
    with server.connect(keyfile=None, config=True) as s:
        assert s.info()["identity"] == key


def test_nothing_to_try_lists_what_happened(server, home):
    with pytest.raises(pyssh.AuthenticationError) as e:
        server.connect(keyfile=None, password=None)
    err = e.value
    assert err.methods_tried == []
    assert "publickey" in err.methods_allowed
    assert "Tried: nothing" in str(err)


def test_missing_identity_file_is_reported(server, home):
    (home / ".ssh" / "config").write_text("Host *\n  IdentityFile ~/.ssh/missing_key\n")
    with pytest.raises(pyssh.AuthenticationError) as e:
        server.connect(keyfile=None, config=True)
    assert (str(home / ".ssh" / "missing_key"), "IdentityFile not found") in e.value.keys


# ---- password and keyboard-interactive: a real local account, checked by PAM ----


@pytest.fixture
def as_account(server, account, home):
    name, password = account
    return name, password, f"{name}@127.0.0.1:{server.port}"


def test_keyboard_interactive_with_a_string(server, as_account):
    name, password, address = as_account
    with server.connect(address=address, keyfile=None, password=password) as s:
        assert s.info()["identity"] == "keyboard-interactive"
        assert s.info()["user"] == name


def test_keyboard_interactive_with_a_callable(server, as_account):
    name, password, address = as_account
    prompts = []

    def answer(prompt):
        prompts.append(prompt)
        return password

    with server.connect(address=address, keyfile=None, password=answer) as s:
        assert s.connected
    assert prompts and "assword" in prompts[0]


@pytest.mark.slow
def test_password_method(as_account):
    name, password, address = as_account
    with pyssh.testing.SSHServer(password_auth=True, kbdint_auth=False) as srv:
        address = f"{name}@127.0.0.1:{srv.port}"
        with srv.connect(address=address, keyfile=None, password=password) as s:
            assert s.info()["identity"] == "password"
        with pytest.raises(pyssh.AuthenticationError) as e:
            srv.connect(address=address, keyfile=None, password="not-the-password")
        assert e.value.methods_tried == ["password"]


@pytest.mark.slow
def test_wrong_password_is_not_echoed(server, as_account):
    name, password, address = as_account
    with pytest.raises(pyssh.AuthenticationError) as e:
        server.connect(address=address, keyfile=None, password="hunter2-wrong")
    assert "hunter2" not in str(e.value)
    assert "keyboard-interactive" in e.value.methods_tried
    assert "password" in e.value.methods_tried


def test_ssh_connect_alias_with_passwd(server, as_account):
    name, password, address = as_account
    s = pyssh.ssh_connect(address, passwd=password, known_hosts=server.known_hosts, config=False)
    try:
        assert s.connected
    finally:
        pyssh.ssh_disconnect(s)


@pytest.mark.skipif(not IS_ROOT, reason="needs root for a second local account")
def test_key_then_password_when_key_is_refused(server, as_account, make_key):
    name, password, address = as_account
    stranger = make_key("stranger2")
    with pytest.raises(pyssh.AuthenticationError):
        server.connect(address=address, keyfile=stranger)  # no password: only the key
    with server.connect(address=address, keyfile=stranger, password=password) as s:
        assert s.info()["identity"] == "keyboard-interactive"


@pytest.mark.slow
def test_passphrase_is_asked_on_a_terminal(server, make_key, tmp_path):
    import pty
    import sys
    import time

    key = make_key("enc_tty", passphrase="typed-in")
    server.authorize(key + ".pub")
    script = tmp_path / "child.py"
    script.write_text(
        "import pyssh\n"
        f"s = pyssh.connect({server.address!r}, keyfile={key!r},"
        f" known_hosts={server.known_hosts!r}, config=False, timeout=20)\n"
        "print('IDENTITY', s.info()['identity'], flush=True)\n"
    )
    pid, fd = pty.fork()
    if pid == 0:
        os.environ["PYTHONPATH"] = os.pathsep.join(sys.path)
        os.execv(sys.executable, [sys.executable, str(script)])
    out = b""
    deadline = time.monotonic() + 30
    sent = False
    try:
        while time.monotonic() < deadline:
            try:
                chunk = os.read(fd, 1024)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
            if not sent and b"Enter passphrase for key" in out:
                os.write(fd, b"typed-in\n")
                sent = True
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    text = out.decode(errors="replace")
    assert sent, text
    assert f"IDENTITY {key}" in text
    assert "typed-in" not in text  # not echoed
    assert os.WEXITSTATUS(status) == 0


def test_key_text_in_an_unknown_format_is_never_echoed(server):
    """Key text pyssh cannot read (PuTTY's format here) was taken for a path, and the
    "keyfile not found" error printed the whole key."""
    secret = "AAAAC3NzaC1lZDI1NTE5secretPRIVATEmaterial"
    putty = (
        "PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\nComment: k\n"
        f"Public-Lines: 1\nAAAAC3\nPrivate-Lines: 1\n{secret}\nPrivate-MAC: 00\n"
    )
    for keyfile in (putty, putty.encode()):
        with pytest.raises(pyssh.PrivateKeyError) as e:
            server.connect(keyfile=keyfile)
        shown = str(e.value) + repr(e.value.args) + str(getattr(e.value, "path", ""))
        assert secret not in shown and "not a private key" in shown


@pytest.mark.slow
def test_a_wrong_password_is_never_echoed(server, make_key):
    if not IS_ROOT:
        pytest.skip("password logins need PAM, and so root, in the test sshd")
    key = make_key("not_authorized")
    with pytest.raises(pyssh.AuthenticationError) as e:
        server.connect(keyfile=key, password="Wr0ng-Secret-pw-42")
    assert "Wr0ng-Secret-pw-42" not in str(e.value) + repr(e.value.args)
