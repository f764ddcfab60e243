"""Smoke test of an installed pyssh where no OpenSSH server can be started (the
Windows wheels): import it, then a real SSH handshake on 127.0.0.1 against
asyncssh's server, a pure-Python SSH implementation, run in a thread here.

Checks the host key against a known_hosts file, logs in with an Ed25519 key, runs a
command (stdout, stderr, exit status, stdin), moves a file through SFTP, and checks
that a changed host key is refused. Prints one line per step; exits non-zero on the
first failure. Run: python tests/smoke.py  (needs: pip install asyncssh)
"""

import asyncio
import hashlib
import os
import sys
import tempfile
import threading

import asyncssh

import pyssh

USER = "smoke"


async def _serve(host_key, client_pub, root, ready, listening):
    async def handle(process):
        cmd = process.command or ""
        if cmd == "cat":
            process.stdout.write(await process.stdin.read())
            process.exit(0)
        else:
            process.stdout.write(f"ran: {cmd}\n".encode())
            process.stderr.write(b"to stderr\n")
            process.exit(3)

    class Server(asyncssh.SSHServer):
        def begin_auth(self, username):
            return True

        def public_key_auth_supported(self):
            return True

        def validate_public_key(self, username, key):
            return username == USER and key.public_data == client_pub.public_data

    def sftp_factory(chan):
        return asyncssh.SFTPServer(chan, chroot=root.encode())

    server = await asyncssh.create_server(
        Server,
        "127.0.0.1",
        0,
        server_host_keys=[host_key],
        process_factory=handle,
        sftp_factory=sftp_factory,
        encoding=None,
    )
    stop = asyncio.Event()
    ready.append((server.sockets[0].getsockname()[1], stop))
    listening.set()
    await stop.wait()
    server.close()
    await server.wait_closed()


def _run_server(host_key, client_pub, root):
    """asyncssh's server on its own event loop in a thread: (port, shutdown)."""
    loop = asyncio.new_event_loop()
    ready = []  # (port, stop) once the server listens
    listening = threading.Event()  # set once it listens, or once it failed to start

    def run():
        try:
            loop.run_until_complete(_serve(host_key, client_pub, root, ready, listening))
        finally:
            listening.set()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    listening.wait(20)
    if not ready:
        raise SystemExit("smoke: asyncssh's server did not start")
    port, stop = ready[0]

    def shutdown():
        loop.call_soon_threadsafe(stop.set)
        t.join(10)

    return port, shutdown


def step(name):
    print(f"smoke: {name}", flush=True)


def main():
    step(
        f"pyssh {pyssh.__version__}, libssh {pyssh.libssh_version(full=True)}, "
        f"Python {sys.version.split()[0]} on {sys.platform}"
    )
    with tempfile.TemporaryDirectory() as d:
        host_key = asyncssh.generate_private_key("ssh-ed25519")
        client_key = asyncssh.generate_private_key("ssh-ed25519")
        key_path = os.path.join(d, "id_ed25519")
        client_key.write_private_key(key_path)
        known = os.path.join(d, "known_hosts")
        root = os.path.join(d, "sftp-root")
        os.mkdir(root)
        port, shutdown = _run_server(host_key, client_key.convert_to_public(), root)
        try:
            with open(known, "wb") as f:
                f.write(b"[127.0.0.1]:%d " % port + host_key.export_public_key("openssh"))
            with pyssh.connect(
                f"{USER}@127.0.0.1:{port}",
                keyfile=key_path,
                known_hosts=known,
                host_key_policy="strict",
                config=False,
                timeout=30,
            ) as s:
                step("connected: host key checked against known_hosts, logged in with a key")
                r = s.exec_internal("hello world", error=False)
                assert r.status == 3, r
                assert r.stdout == b"ran: hello world\n", r.stdout
                assert r.stderr == b"to stderr\n", r.stderr
                step("exec_internal: stdout, stderr and exit status 3")
                data = os.urandom(300_000)
                r = s.exec_internal("cat", stdin=data)
                assert r.stdout == data, (len(r.stdout), len(data))
                step("exec_internal: 300 kB through stdin and back")
                with s.sftp() as sftp:
                    with sftp.open("/blob", "wb") as f:
                        f.write(data)
                    with sftp.open("/blob", "rb") as f:
                        back = f.read()
                assert hashlib.sha256(back).digest() == hashlib.sha256(data).digest()
                step("sftp: 300 kB written and read back")
            with open(known, "wb") as f:
                other = asyncssh.generate_private_key("ssh-ed25519")
                f.write(b"[127.0.0.1]:%d " % port + other.export_public_key("openssh"))
            try:
                pyssh.connect(
                    f"{USER}@127.0.0.1:{port}",
                    keyfile=key_path,
                    known_hosts=known,
                    config=False,
                    timeout=30,
                )
            except pyssh.HostKeyMismatchError:
                step("a changed host key is refused")
            else:
                raise AssertionError("a changed host key was accepted")
        finally:
            shutdown()
    step("all passed")


if __name__ == "__main__":
    main()
