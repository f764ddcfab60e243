"""A red team's attacks on the promises of SECURITY.md, played by a hostile (or
merely broken) server: tests/hostile_sftp.py for SFTP, a fake ``scp -f`` for SCP,
a fake SSH server for the banner. Each test names what the server does and what
the client must (not) do; the ones that held are kept as regressions."""

import errno
import getpass
import os
import struct
import subprocess
import sys
import time

import pytest

import pyssh

from test_hostile_sftp import KIB, finishes, protocol_error, remote_file

# a name that retitles the terminal, clears it, and turns the rest of the line round
EVIL = "x\x1b]0;pwned\x07\x1b[2J\u202e"


def no_control(text):
    return not any(c in text for c in ("\x1b", "\x07", "\u202e"))


# ---- what held: kept as regressions -------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    "how, size",
    [
        ({"reverse": 4}, 1024 * KIB + 17),  # DATA replies in reverse order, 4 at a time
        ({"short": 1000}, 300 * KIB + 17),  # short reads at odd offsets
        ({"reverse": 3, "short": 777}, 300 * KIB + 17),
        ({"limits": [1 << 20] * 3}, 3072 * KIB + 17),  # 1 MiB frames, the largest accepted
        ({"limits": [(1 << 20) + 100] * 3}, 3072 * KIB + 17),  # asked for more: 1 MiB it is
    ],
)
def test_replies_reordered_or_short_still_give_every_byte(hostile_sftp, area, how, size):
    rpath, data = remote_file(area, size)

    def go(f):
        f.get(rpath, area / "to" / "f.bin")
        with f.open(rpath, "rb") as fh:
            return fh.read()

    assert hostile_sftp(how, go, timeout=10) == data
    assert (area / "to" / "f.bin").read_bytes() == data


@pytest.mark.slow
@pytest.mark.parametrize("how", [{"duplicate": True}, {"version_twice": True}])
def test_a_reply_sent_twice_is_a_protocol_error(hostile_sftp, area, how):
    """Every DATA reply twice, or the VERSION twice (the second is taken for a reply
    to request 3): the stream is broken, nothing is written."""
    rpath, _ = remote_file(area, 300 * KIB)

    def get(f):
        with pytest.raises(pyssh.SFTPError) as e:
            f.get(rpath, area / "to" / "f.bin")
        assert f.closed
        return e

    protocol_error(hostile_sftp(how, get), "a request that was not made")
    assert os.listdir(area / "to") == []


@pytest.mark.slow
@pytest.mark.parametrize("body", [b"", b"\0" * 24, b"\0" * 40])
def test_a_limits_reply_of_the_wrong_length(hostile_sftp, area, body):
    raw = struct.pack(">IBI", 5 + len(body), 201, 1) + body
    with pytest.raises(pyssh.SFTPError) as e:
        hostile_sftp({"limits": [1, 1, 1], "raw_on": 200, "raw": raw}, lambda f: None)
    protocol_error(e, "wrong length")


@pytest.mark.slow
@pytest.mark.parametrize("n, why", [(1048636, "left over"), (1048637, "impossible length")])
def test_frames_at_the_limit(hostile_sftp, area, n, why):
    raw = struct.pack(">IBII", n, 105, 1, 0) + b"\0" * (n - 9)
    with pytest.raises(pyssh.SFTPError) as e:
        hostile_sftp({"raw_on": 17, "raw": raw}, lambda f: f.stat(str(area)), timeout=5)
    protocol_error(e, why)


@pytest.mark.slow
def test_replies_to_an_interrupted_download_arrive_during_the_next_operations(hostile_sftp, area):
    """A progress callback stops a download with 16 READs in flight; the channel is
    used again at once, while the late DATA replies arrive: they are dropped, the
    next operations get their own replies, and no partial file is left."""
    rpath, data = remote_file(area, 1024 * KIB)
    small, sdata = remote_file(area, 100 * KIB, "small.bin")

    class Stop(Exception):
        pass

    def stop(moved, total):
        raise Stop()

    def work(f):
        for _ in range(2):
            with pytest.raises(Stop):
                f.get(rpath, area / "to" / "big", progress=stop)
            assert os.listdir(area / "to") == []
            with f.open(small, "rb") as fh:
                assert fh.read() == sdata
            assert f.stat(small).st_size == len(sdata)
        f.get(rpath, area / "to" / "big")

    hostile_sftp({"delay": 0.01}, work, timeout=5)
    assert (area / "to" / "big").read_bytes() == data


@pytest.mark.slow
def test_stderr_without_end_is_not_progress(hostile_sftp, area):
    """A server that writes to stderr without end and answers nothing: the timeout
    fires all the same."""
    rpath, _ = remote_file(area, 300 * KIB)
    errors = []

    def get():
        try:
            hostile_sftp(
                {"stderr_flood": True, "stall_after": 2},
                lambda f: f.get(rpath, area / "to" / "f.bin"),
                timeout=1,
            )
        except pyssh.SSHTimeoutError as e:
            errors.append(e)

    assert finishes(get, within=20)
    assert len(errors) == 1 and "timeout=1" in str(errors[0])


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(24))
def test_chaos(hostile_sftp, area, seed):
    """READs answered at random (mostly the truth or short reads; now and then EOF
    where there is none, a failure, another request's id, a reply twice, too long,
    empty, a junk frame): a download either gets every byte or raises and leaves
    nothing; read() returns a prefix of the file, never a byte that was not sent.
    (Run under ASan too: 40 seeds, about half of them succeed.)"""
    rpath, data = remote_file(area, 200 * KIB + seed * 997)
    dest = area / "to" / "f.bin"

    def get(f):
        f.get(rpath, dest)

    def read(f):
        with f.open(rpath, "rb") as fh:
            return fh.read()

    try:
        hostile_sftp({"chaos": seed}, get, timeout=2)
        assert dest.read_bytes() == data
    except (pyssh.SFTPError, pyssh.SSHTimeoutError):
        assert os.listdir(area / "to") == []
    try:
        got = hostile_sftp({"chaos": seed + 1000}, read, timeout=2)
        assert data.startswith(got) and len(got) <= len(data)
    except (pyssh.SFTPError, pyssh.SSHTimeoutError):
        pass


# ---- time ------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_server_that_never_answers_close_cannot_hang_get(hostile_sftp, area):
    """get() sends the CLOSE of the file it read without waiting for the answer (send());
    after 64 unanswered, send() waits for the next answer itself: with no deadline at
    all (batch_claimed(..., dl=NULL)), so the 65th get() hung for ever although the
    channel has timeout=1."""
    rpath, _ = remote_file(area, 10)
    done, errors = [], []

    def gets(f):
        for i in range(70):
            f.get(rpath, area / "to" / f"f{i}")
            done.append(i)

    def run():
        try:
            hostile_sftp({"ignore": [4]}, gets, timeout=1)
        except pyssh.SSHTimeoutError as e:
            errors.append(e)

    assert finishes(run, within=20), f"hung after {len(done)} files"
    assert len(errors) == 1 and "timeout=1" in str(errors[0]), errors


@pytest.mark.slow
def test_a_data_reply_that_trickles_in_is_progress(hostile_sftp, area):
    """Each DATA reply arrives in three pieces 0.6 s apart: bytes of the file arrive
    every 0.6 s, never a second without progress, yet the timeout (1 s) cut the
    download off, because only a whole reply pushed the deadline back. The same
    happens on a slow link with OpenSSH's 255 KiB reads (limits@openssh.com): 20 KB/s
    and timeout=10 time out a download that never stops moving."""
    rpath, data = remote_file(area, 2 * 32 * KIB)
    hostile_sftp({"split": [3, 0.6]}, lambda f: f.get(rpath, area / "to" / "f.bin"), timeout=1)
    assert (area / "to" / "f.bin").read_bytes() == data


# ---- what is shown -------------------------------------------------------------------------


@pytest.mark.slow
def test_listed_names_are_escaped_in_a_timeout(hostile_sftp, area):
    """A subdirectory whose name holds escape sequences; the server stalls when asked
    to list it: the SSHTimeoutError's message printed the name raw (the path went
    into request(what=...) as is)."""
    d = area / "remote" / "d"
    (d / EVIL).mkdir(parents=True)
    (d / EVIL / "f").write_bytes(b"abc")
    with pytest.raises(pyssh.SSHTimeoutError) as e:
        hostile_sftp(
            {"stall_on": [11, 2]},
            lambda f: f.download(str(d), to=area / "to", verbose=False),
            timeout=1,
        )
    assert no_control(str(e.value)), repr(str(e.value))
    assert "\\x1b]0;pwned\\x07" in str(e.value)


def test_listed_names_are_escaped_when_a_download_is_incomplete(hostile_sftp, area):
    d = area / "remote" / "d"
    d.mkdir()
    (d / EVIL).write_bytes(b"a" * 1000)
    with pytest.raises(pyssh.SFTPError, match="incomplete") as e:
        hostile_sftp(
            {"eof_at": 10}, lambda f: f.download(str(d), to=area / "to", verbose=False), timeout=5
        )
    assert no_control(str(e.value)), repr(str(e.value))


# ---- where downloads land ------------------------------------------------------------------


def test_resume_does_not_write_through_a_symlink(hostile_sftp, area):
    """download(resume=True) into a directory holding a symbolic link that points out
    of it, with the server listing a file of the link's name: the client opened the
    link (os.open follows it) and appended the server's bytes to the file outside the
    target. Without resume the link itself is replaced, as it should be."""
    d = area / "remote" / "d"
    d.mkdir()
    (d / "notes.txt").write_bytes(b"precious local data" + b"EVIL PAYLOAD\n")
    outside = area / "outside.txt"
    outside.write_bytes(b"precious local data")
    (area / "to" / "d").mkdir()
    os.symlink(outside, area / "to" / "d" / "notes.txt")
    with pytest.raises(OSError, match="symbolic link"):
        hostile_sftp({}, lambda f: f.download(str(d), to=area / "to", verbose=False, resume=True))
    assert outside.read_bytes() == b"precious local data"


# ---- memory --------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_listing_of_huge_names_is_bounded(hostile_sftp, area):
    """Each NAME reply holds one entry whose name and long name are ~512 KiB each:
    1,000,000 of them (sftp.max_listing) would have been 1 TiB held by the client.
    A listed name over 4 KiB is refused (no file system has names that long), and a
    listing counts bytes as well as entries."""
    names = [f"{k:03d}" + "n" * (510 * KIB) for k in range(40)]

    def listing(f):
        with pytest.raises(pyssh.SFTPError) as e:
            f.listdir(str(area))
        return e.value

    e = hostile_sftp({"names": names, "per_reply": 1}, listing, timeout=10)
    assert e.errno == errno.EPROTO and "longer than any file system allows" in str(e)

    def budget(f):
        f.max_listing_bytes = 1 << 20
        with pytest.raises(pyssh.SFTPError, match="bytes of names") as e:
            f.listdir(str(area))
        return e.value.errno

    names = [f"{k:04d}" + "n" * 4000 for k in range(400)]
    assert hostile_sftp({"names": names, "per_reply": 10}, budget) == errno.EFBIG


# ---- SCP ------------------------------------------------------------------------------

# hostile_scp (conftest): an sshd whose every command is a fake `scp -f`.


@pytest.mark.slow
def test_scp_names_are_escaped_in_errors(hostile_scp, tmp_path):
    """A file named with escape sequences, then a bad end mark: the SCPProtocolError
    quoted the local path, server's name included, raw."""
    to = tmp_path / "to"
    to.mkdir()
    with pytest.raises(pyssh.SCPProtocolError, match="end mark") as e:
        hostile_scp([b"D0755 0 wanted\n", b"C0644 4 " + EVIL.encode() + b"\n", b"data\x05"], to)
    assert no_control(str(e.value)), repr(str(e.value))


def test_scp_trees_stop_at_64_levels(hostile_scp, tmp_path):
    """SECURITY.md: "trees stop at 64 levels". SFTP's do (DEPTH_MAX); SCP made
    every directory the server sent, 100 levels here."""
    to = tmp_path / "to"
    to.mkdir()
    steps = [b"D0755 0 wanted\n"] + [b"D0755 0 a\n"] * 100 + [b"E\n"] * 101
    with pytest.raises(pyssh.SCPProtocolError, match="64"):
        hostile_scp(steps, to)
    depth = max(len(p.relative_to(to).parts) for p in to.rglob("*"))
    assert depth <= 65


FAKE_SCP_T = r"""
import os, sys
flood = open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "setting.txt")).read()
inp, out = sys.stdin.buffer, sys.stdout.buffer
out.write(b"\0")                           # ready
out.flush()
size = int(inp.readline().split()[1])      # C0644 <size> <name>
out.write(b"\0")
out.flush()
inp.read(size + 1)                         # the data and its end mark
out.write(b"\0")                           # received: the transfer is over
out.flush()
stream = sys.stderr.buffer if flood == "stderr" else out
while True:                                # then output without end, never exiting
    stream.write(b"y" * 65536)
    stream.flush()
"""

FAKE_SCP_F = r"""
import os, sys
kind = open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "setting.txt")).read()
inp, out = sys.stdin.buffer, sys.stdout.buffer
inp.read(1)                                # the client is ready
while True:
    if kind == "warning":                  # warnings, and nothing else
        out.write(b"\x01scp: a warning\n" * 100)
    elif kind == "T":                      # times, never followed by a file
        out.write(b"T1 0 1 0\n")
    elif kind == "DE":                     # the directory asked for, empty, again and again
        out.write(b"D0755 0 wanted\n")
        out.flush()
        inp.read(1)
        out.write(b"E\n")
    else:                                  # the file asked for, empty, again and again
        out.write(b"C0644 0 wanted\n")
        out.flush()
        inp.read(1)
        out.write(b"\0")
    out.flush()
    if kind != "warning" and not inp.read(1):
        break
"""

SCP_CHILD = r"""
import sys, pyssh
address, key, known_hosts, how, path = sys.argv[1:6]
s = pyssh.connect(address, keyfile=key, known_hosts=known_hosts, config=False)
try:
    if how == "upload":
        s.scp_upload(path, to="/tmp", verbose=False, timeout=1)
    else:
        s.scp_download("wanted", to=path, verbose=False, timeout=1)
    print("returned", flush=True)
except (pyssh.SSHTimeoutError, pyssh.SCPError) as e:
    print("raised", type(e).__name__, str(e).replace("\\n", " ")[:300], flush=True)
"""


def rss_mib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 0


def scp_in_child(tmp_path, fake, setting, how, path, within=15):
    """scp_<how>(timeout=1) in a child process, against an sshd whose every command
    is the Python program `fake` (`setting` in setting.txt beside it); the child is
    killed after `within` seconds. Returns (hung, its peak RSS in MiB, what it
    printed)."""
    from pyssh.testing import SSHServer

    d = tmp_path / "fake"
    d.mkdir()
    os.chmod(tmp_path, 0o755)
    os.chmod(d, 0o755)
    (d / "fake.py").write_text(fake)
    (d / "setting.txt").write_text(setting)
    with SSHServer(extra_config=[f"ForceCommand {sys.executable} {d / 'fake.py'}"]) as srv:
        p = subprocess.Popen(
            [
                sys.executable,
                "-c",
                SCP_CHILD,
                srv.address,
                srv.client_key,
                srv.known_hosts,
                how,
                str(path),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        peak, start = 0, time.monotonic()
        try:
            while p.poll() is None and time.monotonic() - start < within:
                peak = max(peak, rss_mib(p.pid))
                time.sleep(0.2)
        finally:
            hung = p.poll() is None
            if hung:
                p.kill()
            out, err = p.communicate()
    return hung, peak, out.strip() or err[-2000:]


@pytest.mark.slow
@pytest.mark.parametrize("flood", ["stdout", "stderr"])
def test_scp_upload_ends_although_the_server_talks_on(tmp_path, flood):
    """After the last file is acknowledged, the server's scp writes without end (to
    stdout or stderr) and never exits. _finish waited with ch.run(stdout=None,
    stderr=True): discarded output counts as progress (a command's output is), so
    timeout=1 never fired, and stderr was captured whole: the upload hung for ever
    while its memory grew (hundreds of MiB in seconds)."""
    src = tmp_path / "f"
    src.write_bytes(b"data")
    hung, peak, said = scp_in_child(tmp_path, FAKE_SCP_T, flood, "upload", src)
    assert not hung, f"still running after 15 s, {peak} MiB"
    assert said.startswith("raised SSHTimeoutError"), said
    if "libasan" not in os.environ.get("LD_PRELOAD", ""):  # its quarantine keeps memory
        assert peak < 200, f"{peak} MiB"


@pytest.mark.slow
@pytest.mark.parametrize(
    "kind, raised",
    [
        ("warning", "raised SSHTimeoutError"),
        ("T", "raised SCPProtocolError"),
        ("DE", "raised SCPProtocolError"),
        ("C", "raised SCPProtocolError"),
    ],
)
def test_scp_download_ends_although_the_server_loops(tmp_path, kind, raised):
    """The server's scp sends, without end: warnings and nothing else; time messages
    never followed by a file; the directory asked for, empty, entered and left again
    and again; the file asked for, empty, again and again. Each message is output,
    so the inactivity timeout (1 s) never fired: scp_download ran for ever. Now
    warnings alone are not progress (SSHTimeoutError after the timeout), a T must be
    followed by C or D, and a name comes once per directory (as in an SFTP listing)."""
    to = tmp_path / "to"
    to.mkdir()
    hung, peak, said = scp_in_child(tmp_path, FAKE_SCP_F, kind, "download", to, within=10)
    assert not hung, f"still running after 10 s, {peak} MiB"
    assert said.startswith(raised), said


# ---- the terminal, outside transfers -----------------------------------------------------

BANNER_CHILD = r"""
import socket, threading, pyssh
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(1)

def serve():
    c, _ = srv.accept()
    c.sendall(b"SSH-2.0-evil\x1b]0;pwned\x07\x1b[2J\r\n")
    c.recv(1000)
    c.close()

threading.Thread(target=serve, daemon=True).start()
try:
    pyssh.connect(f"u@127.0.0.1:{srv.getsockname()[1]}", verbose=3, timeout=5, config=False,
                  host_key_policy="ignore", known_hosts="/dev/null")
except pyssh.SSHError:
    print("refused")
"""


def test_verbose_lines_escape_the_servers_banner():
    """connect(verbose=3) shows libssh's lines on stderr; a server whose banner holds
    escape sequences had them printed raw to the terminal. (In a child process: the
    stderr handler stays on the "pyssh" logger once added.)"""
    r = subprocess.run([sys.executable, "-c", BANNER_CHILD], capture_output=True, timeout=60)
    assert r.stdout.strip() == b"refused", r
    assert b"evil" in r.stderr
    assert b"\x1b" not in r.stderr and b"\x07" not in r.stderr


def test_a_keyboard_interactive_prompt_is_escaped_on_the_terminal(monkeypatch):
    """Without a password, a keyboard-interactive prompt is asked on the terminal
    (getpass): the server's prompt text went to it raw, escape sequences included
    (it can clear the line and pose as a local passphrase prompt)."""
    from pyssh import session as session_mod
    from pyssh._tcp import run_steps

    shown = []
    monkeypatch.setattr(session_mod, "_stdin_is_tty", lambda: True)
    monkeypatch.setattr(getpass, "getpass", lambda prompt="": shown.append(prompt) or "pw")

    class Answered:  # what the flow waits for, already there (run_steps asks .blocking())
        def blocking(self):
            return pyssh._ssh.SSH_AUTH_DENIED

    class FakeSession:
        def _auth_kbdint(self, respond, timeout=None, defer=False):
            assert respond(
                "", "", [("\x1b[2K\rEnter passphrase for key: \x1b]0;x\x07", False)]
            ) == ["pw"]
            return Answered()

    class Deadline:
        def left(self):
            return 5

    auth = session_mod._Auth(FakeSession(), Deadline(), None, None)
    assert run_steps(auth.kbdint()) is False
    assert len(shown) == 1 and no_control(shown[0]) and "\x1b[2K" not in shown[0], shown
    assert "Enter passphrase for key" in shown[0]
