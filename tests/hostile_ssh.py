"""A hostile SSH server for tests: asyncssh's server, in a child process on 127.0.0.1,
that logs the client in with its key and then misbehaves on request.

The client asks for the misbehaviour by running a command on it (exec), so the
client is reading the connection while the server does it; the command's stdout
is a JSON report of what the server saw come back:

    open KIND N [PORT]     N unsolicited SSH_MSG_CHANNEL_OPEN of type KIND (x11,
                           forwarded-tcpip for PORT, forwarded-streamlocal@openssh.com
                           for /tmp/pyssh-hostile-PORT.sock, auth-agent@openssh.com, session,
                           direct-tcpip, or any name); reports the answers:
                           {"sent", "failure": {reason code: count}, "confirmed",
                            "unimplemented", "unanswered"}
    global NAME N WANT     N SSH_MSG_GLOBAL_REQUEST NAME, want-reply WANT (0/1);
                           reports {"sent", "success", "failure", "unimplemented",
                           "unanswered"}
    chanreq NAME WANT      a channel request NAME on the command's own channel;
                           reports {"reply": "success"|"failure"|"none"}
    stderr N               N bytes on stderr, then exit 0 (nothing on stdout)
    exitsignal NAME        ends with exit-signal NAME (given as hex: any bytes)
    bigpacket N            one SSH_MSG_IGNORE packet carrying N bytes
    echo TEXT              prints TEXT (to check that the session still works)

Unanswered means no answer came within `quiet` seconds of the last one. Replies
are recognised at the packet level (asyncssh's handlers are wrapped on the one
connection), so the server needs no channel objects for what it opens.

Also: an SFTP server that floods stderr (`sftp_stderr`, bytes) before answering
stat with "no such file", and a `scp -f` that floods stderr before sending one
file "x" of 5 bytes (`scp_stderr`)."""

import asyncio
import json
import os
import struct
import subprocess
import sys
import time

import asyncssh
from asyncssh.constants import (
    MSG_CHANNEL_OPEN,
    MSG_CHANNEL_OPEN_CONFIRMATION,
    MSG_CHANNEL_OPEN_FAILURE,
    MSG_GLOBAL_REQUEST,
    MSG_IGNORE,
    MSG_REQUEST_FAILURE,
    MSG_REQUEST_SUCCESS,
    MSG_UNIMPLEMENTED,
)
from asyncssh.packet import Boolean, String, UInt32

USER = "hostile"
RAW_CHAN_BASE = 0x40000000  # ids of the channels the server opens by hand
CHUNK = 32 * 1024


class _Sink:
    """Takes what the client sends on a raw channel it accepted (window adjusts,
    EOF, CLOSE), which asyncssh, knowing no such channel, would disconnect for."""

    def log_received_packet(self, *args):
        pass

    def process_packet(self, pkttype, pktid, packet):
        return True


class _Tracker:
    """What came back for the raw opens and global requests of one connection."""

    def __init__(self, conn):
        self.conn = conn
        self.opens = {}  # raw channel id -> None (pending) or its answer
        self.next_id = RAW_CHAN_BASE
        self.globals_pending = 0
        self.globals = {"success": 0, "failure": 0}
        self.unimplemented = 0
        self.last_answer = time.monotonic()
        handlers = dict(type(conn)._packet_handlers)
        for kind in (
            MSG_CHANNEL_OPEN_CONFIRMATION,
            MSG_CHANNEL_OPEN_FAILURE,
            MSG_REQUEST_SUCCESS,
            MSG_REQUEST_FAILURE,
            MSG_UNIMPLEMENTED,
        ):
            handlers[kind] = self._wrap(handlers[kind])
        conn._packet_handlers = handlers

    def _wrap(self, original):
        def handler(conn, pkttype, pktid, packet):
            if self._mine(pkttype, packet):
                self.last_answer = time.monotonic()
                return True
            return original(conn, pkttype, pktid, packet)

        return handler

    def _mine(self, pkttype, packet):
        if pkttype == MSG_UNIMPLEMENTED:
            self.unimplemented += 1
            return True
        if pkttype in (MSG_REQUEST_SUCCESS, MSG_REQUEST_FAILURE):
            if self.globals_pending == 0:
                return False
            self.globals_pending -= 1
            self.globals["success" if pkttype == MSG_REQUEST_SUCCESS else "failure"] += 1
            return True
        # channel open answers: the first field is our channel id
        (chan,) = struct.unpack(">I", packet.get_remaining_payload()[:4])
        if chan not in self.opens:
            return False
        packet.get_uint32()
        if pkttype == MSG_CHANNEL_OPEN_FAILURE:
            self.opens[chan] = ("failure", packet.get_uint32())
        else:
            remote = packet.get_uint32()
            self.opens[chan] = ("confirmed", remote)
            self.conn._channels[chan] = _Sink()
            # be polite: close what the client accepted
            self.conn.send_packet(97, UInt32(remote))  # SSH_MSG_CHANNEL_CLOSE
        return True

    def open_channels(self, kind, n, port):
        extra = {
            b"x11": lambda: (String(b"10.9.8.7"), UInt32(6010)),
            b"forwarded-tcpip": lambda: (
                String(b"127.0.0.1"),
                UInt32(port),
                String(b"10.9.8.7"),
                UInt32(4242),
            ),
            # the socket path and the reserved string (OpenSSH's PROTOCOL 2.4)
            b"forwarded-streamlocal@openssh.com": lambda: (
                String(f"/tmp/pyssh-hostile-{port}.sock".encode()),
                String(b""),
            ),
            b"direct-tcpip": lambda: (
                String(b"127.0.0.1"),
                UInt32(port),
                String(b"10.9.8.7"),
                UInt32(4242),
            ),
        }.get(kind, lambda: ())
        for _ in range(n):
            chan = self.next_id
            self.next_id += 1
            self.opens[chan] = None
            self.conn.send_packet(
                MSG_CHANNEL_OPEN,
                String(kind),
                UInt32(chan),
                UInt32(2 << 20),
                UInt32(32768),
                *extra(),
            )

    def global_requests(self, name, n, want):
        for _ in range(n):
            if want:
                self.globals_pending += 1
            self.conn.send_packet(MSG_GLOBAL_REQUEST, String(name), Boolean(want))

    async def settle(self, done, quiet):
        """Wait until done() or until nothing came back for `quiet` seconds."""
        self.last_answer = time.monotonic()
        while not done() and time.monotonic() - self.last_answer < quiet:
            await asyncio.sleep(0.05)

    def open_report(self, sent_ids):
        failure, confirmed, unanswered = {}, 0, 0
        for chan in sent_ids:
            answer = self.opens.pop(chan)
            if answer is None:
                unanswered += 1
            elif answer[0] == "failure":
                failure[answer[1]] = failure.get(answer[1], 0) + 1
            else:
                confirmed += 1
        return {
            "sent": len(sent_ids),
            "failure": failure,
            "confirmed": confirmed,
            "unimplemented": self.unimplemented,
            "unanswered": unanswered,
        }


class HostileServer:
    """The server, in a child process of its own (so that the client's memory can
    be measured alone), on its own event loop. connect() gives a pyssh session
    logged in to it; close() ends it. `quiet`: seconds without an answer after
    which the server stops waiting and reports the rest unanswered."""

    def __init__(self, tmp_path, quiet=3.0, sftp_stderr=0, scp_stderr=0):
        self.dir = tmp_path / "hostile"
        self.dir.mkdir(exist_ok=True)
        host_key = asyncssh.generate_private_key("ssh-ed25519")
        client_key = asyncssh.generate_private_key("ssh-ed25519")
        host_key.write_private_key(str(self.dir / "host_key"))
        client_key.convert_to_public().write_public_key(str(self.dir / "client_key.pub"))
        self.key_path = str(self.dir / "client_key")
        client_key.write_private_key(self.key_path)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                __file__,
                str(self.dir),
                str(quiet),
                str(sftp_stderr),
                str(scp_stderr),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        line = self.proc.stdout.readline()
        if not line.strip().isdigit():
            self.proc.kill()
            raise RuntimeError(f"the hostile server did not start: {line!r}")
        self.port = int(line)
        self.known_hosts = str(self.dir / "known_hosts")
        with open(self.known_hosts, "wb") as f:
            f.write(b"[127.0.0.1]:%d " % self.port + host_key.export_public_key("openssh"))

    def connect(self, **kw):
        import pyssh

        return pyssh.connect(
            f"{USER}@127.0.0.1:{self.port}",
            keyfile=self.key_path,
            known_hosts=self.known_hosts,
            host_key_policy="strict",
            config=False,
            timeout=30,
            **kw,
        )

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()  # the server's cue to stop
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()


class _Server:
    """What runs in the child process."""

    def __init__(self, folder, quiet, sftp_stderr, scp_stderr):
        self.quiet = quiet
        self.sftp_stderr = sftp_stderr
        self.scp_stderr = scp_stderr
        self.host_key = asyncssh.read_private_key(os.path.join(folder, "host_key"))
        self.client_pub = asyncssh.read_public_key(os.path.join(folder, "client_key.pub"))
        self.trackers = []

    # ---- the server ----------------------------------------------------------------

    async def serve(self):
        outer = self

        class Server(asyncssh.SSHServer):
            def connection_made(self, conn):
                outer.trackers.append(_Tracker(conn))

            def begin_auth(self, username):
                return True

            def public_key_auth_supported(self):
                return True

            def validate_public_key(self, username, key):
                return username == USER and key.public_data == outer.client_pub.public_data

        server = await asyncssh.create_server(
            Server,
            "127.0.0.1",
            0,
            server_host_keys=[self.host_key],
            process_factory=self._process,
            sftp_factory=self._sftp_factory,
            encoding=None,
            allow_scp=False,
        )
        print(server.sockets[0].getsockname()[1], flush=True)
        # until the parent closes our stdin
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        server.close()

    def _tracker(self, process):
        conn = process.channel.get_connection()
        return next(t for t in self.trackers if t.conn is conn)

    async def _process(self, process):
        try:
            words = (process.command or "").split()
            report = await self._command(process, words)
            if report is not None:
                process.stdout.write(json.dumps(report).encode() + b"\n")
            process.exit(0)
        except (asyncssh.Error, ConnectionError, BrokenPipeError):
            pass
        except Exception as e:  # shown to the client, so that a test says what broke
            process.stderr.write(f"hostile server: {e!r}\n".encode())
            process.exit(99)

    async def _command(self, process, words):
        t = self._tracker(process)
        what = words[0] if words else ""
        if what == "open":
            kind, n = words[1].encode(), int(words[2])
            port = int(words[3]) if len(words) > 3 else 0
            first = t.next_id
            t.open_channels(kind, n, port)
            ids = range(first, first + n)
            await t.settle(lambda: all(t.opens[i] is not None for i in ids), self.quiet)
            return t.open_report(ids)
        if what == "global":
            t.unimplemented = 0
            t.globals = {"success": 0, "failure": 0}
            n, want = int(words[2]), words[3] == "1"
            t.global_requests(words[1].encode(), n, want)
            got = lambda: sum(t.globals.values()) + t.unimplemented  # noqa: E731
            await t.settle(lambda: got() >= n, self.quiet)
            return {
                "sent": n,
                **t.globals,
                "unimplemented": t.unimplemented,
                "unanswered": max(0, n - got()),
            }
        if what == "chanreq":
            want = words[2] == "1"
            if not want:
                process.channel._send_request(words[1].encode(), String(b"ls"))
                return {"reply": "none"}
            try:
                ok = await asyncio.wait_for(
                    process.channel._make_request(words[1].encode(), String(b"ls")), self.quiet
                )
            except asyncio.TimeoutError:
                return {"reply": "none"}
            return {"reply": "success" if ok else "failure"}
        if what == "stderr":
            await self._flood_stderr(process, int(words[1]))
            return None
        if what == "exitsignal":
            process.exit_with_signal(bytes.fromhex(words[1]).decode("latin-1"), True, "msg\x1b[2J")
            return None
        if what == "bigpacket":
            t.conn.send_packet(MSG_IGNORE, String(os.urandom(int(words[1]))))
            await asyncio.sleep(self.quiet)
            return {"sent": int(words[1])}
        if what == "echo":
            return {"echo": " ".join(words[1:])}
        if what == "scp":  # scp -f PATH: the download side
            await self._scp_source(process)
            return None
        raise ValueError(f"unknown command {words!r}")

    async def _flood_stderr(self, process, n):
        block = b"E" * CHUNK
        while n > 0:
            process.stderr.write(block[:n])
            n -= min(n, CHUNK)
            await process.stderr.drain()

    async def _scp_source(self, process):
        """scp -f: stderr first, then one file "x" of 5 bytes."""
        await process.stdin.readexactly(1)  # the client's go-ahead
        await self._flood_stderr(process, self.scp_stderr)
        process.stdout.write(b"C0644 5 x\n")
        await process.stdin.readexactly(1)
        process.stdout.write(b"hello\0")
        await process.stdin.readexactly(1)

    def _sftp_factory(self, chan):
        return _FloodSFTP(chan, self.sftp_stderr)


class _FloodSFTP(asyncssh.SFTPServer):
    """An SFTP server that knows no file, and floods stderr before each answer."""

    def __init__(self, chan, stderr):
        super().__init__(chan)
        self._stderr = stderr

    async def _flood(self):
        block, n = b"E" * CHUNK, self._stderr
        while n > 0:
            self.channel.write_stderr(block[:n])
            n -= min(n, CHUNK)
            while self.channel.get_write_buffer_size() > 1 << 20:
                await asyncio.sleep(0.002)

    async def stat(self, path):
        await self._flood()
        raise asyncssh.SFTPNoSuchFile("no such file")

    lstat = stat


if __name__ == "__main__":
    folder, quiet, sftp_stderr, scp_stderr = sys.argv[1:5]
    asyncio.run(_Server(folder, float(quiet), int(sftp_stderr), int(scp_stderr)).serve())
