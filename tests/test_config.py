"""~/.ssh/config: HostName, User, Port, IdentityFile and ProxyJump, and what wins."""

import shutil

import pytest

import pyssh


def write_config(home, text):
    (home / ".ssh" / "config").write_text(text)


def test_config_supplies_hostname_user_port_identity(server, home):
    shutil.copy(server.client_key, home / ".ssh" / "work_key")
    write_config(
        home,
        f"""
Host work
    HostName 127.0.0.1
    User {server.user}
    Port {server.port}
    IdentityFile ~/.ssh/work_key
""",
    )
    with pyssh.connect("work", known_hosts=server.known_hosts, host_key_policy="strict") as s:
        info = s.info()
        assert (info["host"], info["user"], info["port"]) == ("127.0.0.1", server.user, server.port)
        assert info["identity"] == str(home / ".ssh" / "work_key")


def test_explicit_arguments_win_over_config(server, home):
    write_config(
        home,
        """
Host work
    HostName 127.0.0.1
    User nobody-from-config
    Port 1
""",
    )
    with pyssh.connect(
        f"{server.user}@work",
        port=server.port,
        keyfile=server.client_key,
        known_hosts=server.known_hosts,
    ) as s:
        assert s.info()["user"] == server.user
        assert s.info()["port"] == server.port


def test_host_string_port_wins_over_config(server, home):
    write_config(home, "Host 127.0.0.1\n    Port 1\n")
    with pyssh.connect(
        f"{server.user}@127.0.0.1:{server.port}",
        keyfile=server.client_key,
        known_hosts=server.known_hosts,
    ) as s:
        assert s.port == server.port


def test_config_false_ignores_the_file(server, home):
    write_config(home, "Host *\n    Port 1\n")
    with pytest.raises(pyssh.ConnectError):
        pyssh.connect("127.0.0.1", keyfile=server.client_key, config=True, timeout=5)
    with pyssh.connect(
        f"{server.user}@127.0.0.1:{server.port}",
        keyfile=server.client_key,
        known_hosts=server.known_hosts,
        config=False,
    ) as s:
        assert s.connected


def test_config_as_a_path(server, home, tmp_path):
    cfg = tmp_path / "my_config"
    cfg.write_text(
        f"Host box\n    HostName 127.0.0.1\n    Port {server.port}\n    User {server.user}\n"
    )
    with pyssh.connect(
        "box", config=str(cfg), keyfile=server.client_key, known_hosts=server.known_hosts
    ) as s:
        assert s.port == server.port


def test_default_user_is_the_local_login(server, home, monkeypatch):
    write_config(home, "")
    import getpass

    with pyssh.connect(
        f"127.0.0.1:{server.port}", keyfile=server.client_key, known_hosts=server.known_hosts
    ) as s:
        assert s.user == getpass.getuser() == server.user


def test_proxy_jump(server, home):
    # jump through the test server to itself: the jump host authenticates with
    # the default key file, as OpenSSH's would
    shutil.copy(server.client_key, home / ".ssh" / "id_ed25519")
    with open(home / ".ssh" / "known_hosts", "w") as f:
        f.write(server.host_key_line + "\n")
    write_config(
        home,
        f"""
Host target
    HostName 127.0.0.1
    Port {server.port}
    User {server.user}
    ProxyJump {server.user}@127.0.0.1:{server.port}
""",
    )
    with pyssh.connect("target", known_hosts=server.known_hosts, timeout=20) as s:
        assert s.connected
        assert s.info()["identity"] == str(home / ".ssh" / "id_ed25519")
    assert "Accepted publickey" in server.log()
