"""The demo: ``python -m pyssh.demo`` (or ``bash .ci/run demo`` on a fresh machine).

Starts a throwaway OpenSSH server on 127.0.0.1 (pyssh.testing), connects to it
as the seed's example does, prints the session and its info, and shows what a
changed host key does.
"""
from __future__ import annotations

import os
import sys
import tempfile

import pyssh
from pyssh.testing import SSHServer, keygen


def main() -> int:
    print(f"pyssh {pyssh.__version__}, libssh {pyssh.libssh_version(full=True)}")
    with SSHServer() as server:
        print(f"started a throwaway sshd (pid {server.pid}) at {server.address}\n")

        # connect: the key argument, host key checked against known_hosts
        session = pyssh.connect(server.address, keyfile=server.client_key,
                                known_hosts=server.known_hosts, config=False)
        print(session)
        print()
        for key, value in session.info().items():
            print(f"  {key:14} {value}")
        session.disconnect()
        print()
        print(session)

        # a known host whose key changed is refused before authentication
        with tempfile.TemporaryDirectory() as d:
            other = keygen(os.path.join(d, "other"))
            kh = os.path.join(d, "known_hosts")
            with open(other + ".pub") as f, open(kh, "w") as out:
                out.write(f"[{server.host}]:{server.port} {' '.join(f.read().split()[:2])}\n")
            try:
                pyssh.connect(server.address, keyfile=server.client_key, known_hosts=kh, config=False)
            except pyssh.HostKeyMismatchError as e:
                print(f"\nwith a changed host key: {type(e).__name__}:\n  {e}")
    print("\nsshd stopped; demo done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
