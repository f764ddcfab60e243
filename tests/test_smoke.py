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
