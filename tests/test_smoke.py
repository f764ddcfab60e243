"""tests/smoke.py is what the Windows wheels are tested with (no sshd there): run it
here too, so that it keeps working."""

import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.mark.slow
def test_smoke_script_against_asyncssh_server():
    r = subprocess.run(
        [sys.executable, os.path.join(HERE, "smoke.py")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines[-1] == "smoke: all passed", r.stdout
    assert any("changed host key is refused" in line for line in lines)


def test_the_test_servers_extra_config_replaces_its_defaults():
    """pyssh.testing.SSHServer: a keyword given in extra_config wins over the default
    line (sshd keeps the last MaxStartups but the first MaxSessions), ListenAddress
    adds to the server's own, and sshd reads it so (sshd -T)."""
    from pyssh.testing import SSHServer, find_sshd

    extra = ["MaxStartups 7:30:9", "MaxSessions 3", "ListenAddress 127.0.0.2"]
    with SSHServer(extra_config=extra) as srv:
        out = subprocess.run(
            [find_sshd(), "-T", "-f", srv.config], capture_output=True, text=True, timeout=30
        ).stdout
    assert "maxstartups 7:30:9" in out
    assert "maxsessions 3" in out
    assert f"listenaddress 127.0.0.1:{srv.port}" in out
    assert f"listenaddress 127.0.0.2:{srv.port}" in out
