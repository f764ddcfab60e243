"""The demo: ``python -m pyssh.demo`` (or ``bash .ci/run demo`` on a fresh machine).

Starts a throwaway OpenSSH server on 127.0.0.1 (pyssh.testing), connects to it
as the seed's example does, prints the session and its info, runs commands
(streamed, a three-command script, captured, one that fails), copies a file up
and back over SCP, lists it and reads it over SFTP, fetches a page from a small
local HTTP service through a tunnel (forward_local), and shows what a changed host
key does.
"""

from __future__ import annotations

import hashlib
import http.server
import os
import sys
import tempfile
import threading
import urllib.request

import pyssh
from pyssh.testing import SSHServer, keygen


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"hello through the tunnel, you asked for {self.path}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def tunnel_demo(session: pyssh.Session) -> None:
    service = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    threading.Thread(target=service.serve_forever, daemon=True).start()
    target = f"127.0.0.1:{service.server_address[1]}"
    try:
        # as a database client would: this process, through a background tunnel
        with session.forward_local(0, target) as tunnel:
            print(f"\n{tunnel!r}")
            url = f"http://127.0.0.1:{tunnel.port}/status"
            with urllib.request.urlopen(url, timeout=10) as reply:
                print(f"GET {url} -> {reply.status}: {reply.read().decode().strip()}")
            print(f"  {tunnel.stats}")
    finally:
        service.shutdown()
        service.server_close()


def main() -> int:
    print(f"pyssh {pyssh.__version__}, libssh {pyssh.libssh_version(full=True)}")
    with SSHServer() as server:
        print(f"started a throwaway sshd (pid {server.pid}) at {server.address}\n")

        # connect: the key argument, host key checked against known_hosts
        session = pyssh.connect(
            server.address, keyfile=server.client_key, known_hosts=server.known_hosts, config=False
        )
        print(session)
        print()
        for key, value in session.info().items():
            print(f"  {key:14} {value}")

        exec_demo(session)
        with tempfile.TemporaryDirectory() as d:
            transfer_demo(session, d)
        # a tunnel: a small HTTP service on this machine, fetched through the server
        tunnel_demo(session)

        session.disconnect()
        print()
        print(session)
        changed_key_demo(server)
    print("\nsshd stopped; demo done")
    return 0


def exec_demo(session: pyssh.Session) -> None:
    # run a command: its output streams to this terminal as it is produced
    print("\n$ whoami")
    status = session.exec_wait("whoami")
    print(f"(exit status {status})")

    # several commands run as one script, as in the seed's example
    script = [
        'd=$(mktemp -d) && cd "$d"',
        "printf 'hello from pyssh\\n' > hello.txt && tar czf hello.tar.gz hello.txt"
        " && tar tzvf hello.tar.gz",
        'cd / && rm -rf "$d" && echo "cleaned up $d"',
    ]
    print("\n$ " + "\n$ ".join(script))
    session.exec_wait(script)

    # capture the output instead
    r = session.exec_internal("uname -sr; echo 'a line on stderr' >&2")
    print(f"\nexec_internal: {r!r}\n  stdout: {r.stdout!r}\n  stderr: {r.stderr!r}")

    # a failing command raises CommandError, with the end of its stderr
    try:
        session.exec_internal("ls /no/such/directory")
    except pyssh.CommandError as e:
        print(f"\nCommandError (status {e.status}):\n  {e}")


def transfer_demo(session: pyssh.Session, d: str) -> None:
    # SCP: upload a file, download it back elsewhere, compare checksums
    os.chmod(d, 0o755)
    local = os.path.join(d, "hello.bin")
    with open(local, "wb") as f:
        f.write(os.urandom(1 << 20))
    remote_dir = os.path.join(d, "on the server")
    os.mkdir(remote_dir)
    back = os.path.join(d, "back")
    os.mkdir(back)
    print()
    session.scp_upload(local, to=remote_dir)
    session.scp_download(os.path.join(remote_dir, "hello.bin"), to=back)
    a, b = (
        hashlib.sha256(open(p, "rb").read()).hexdigest()
        for p in (local, os.path.join(back, "hello.bin"))
    )
    print(f"sha256 uploaded   {a}\nsha256 downloaded {b}\n{'the same' if a == b else 'DIFFERENT'}")

    # SFTP: list the directory, read a remote file as a file object
    with session.sftp() as sftp:
        print(f"\n{sftp!r}")
        for entry in sftp.listdir_attr(remote_dir):
            print(f"  {entry.filename}  {entry.st_size} bytes  mode {oct(entry.st_mode or 0)}")
        with sftp.open(os.path.join(remote_dir, "hello.bin"), "rb") as f:
            f.seek(-16, 2)
            print(f"  its last 16 bytes, read over SFTP: {f.read().hex()}")


def changed_key_demo(server: SSHServer) -> None:
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


if __name__ == "__main__":
    sys.exit(main())
