"""A scriptable SFTP version 3 server, run by the test sshd as its ``Subsystem``.

It serves the real file system (paths as given, relative to the home directory),
well enough for pyssh's SFTP client to work against it, and then lies, stalls or
floods as the scenario says. The scenario is a Python literal (a dict) in the file
named on the command line, read when the subsystem starts (each ``session.sftp()``
starts one). Keys (all optional):

  status        {request type: code}     answer these requests with this status
  read_ok       True                     answer READ with an OK status
  data_extra    n                        DATA replies carry n bytes more than asked
  wrong_id      True                     replies carry an id no request had
  eof_at        n                        READ at or past offset n: EOF (size unchanged)
  data_after    n                        with eof_at: READs past n get data again
  size          n                        STAT/LSTAT/FSTAT report this size
  realpath      "path"                   REALPATH answers this
  names         ["a", ...]               READDIR lists these (once a handle), files of 4
                                         bytes; OPENDIR opens any path
  names_mode    mode                     the listed names' mode (0o40755: directories)
  per_reply     n                        with names: n entries per NAME reply
  list_forever  True                     READDIR never ends: new names every time
  count_extra   n                        NAME replies claim n entries more than they hold
  handle_len    n                        handles are n bytes long
  stall_after   n                        after n requests, read on but answer nothing
  delay         seconds                  sleep before each reply
  message       "text"                   the message of every failed status
  limits        [packet, read, write]    offer limits@openssh.com with these
  ext_reply     {b"name": b"data"}       offer these extensions, each answered by an
                                         EXTENDED_REPLY of these bytes as they are
  raw, raw_on   bytes, request type      answer that request with these bytes as they are
  ignore        [request type, ...]      never answer requests of these types
  stall_on      [request type, nth]      from the nth request of that type on, answer nothing
  split         [pieces, seconds]        write each DATA reply in that many pieces, pausing between
  short         n                        DATA replies carry at most n bytes (short reads)
  reverse       n                        send DATA replies n at a time, the last first
  duplicate     True                     send every DATA reply twice
  version_twice True                     send the VERSION message twice
  stderr_flood  True                     write to stderr without end (in a thread)
  chaos         seed                     answer READs at random: the truth, short, EOF,
                                         failures, wrong ids, twice, too long, junk frames
"""

import ast
import os
import select
import struct
import sys
import time

S = {}
OPEN, CLOSE, READ, WRITE, LSTAT, FSTAT, SETSTAT, FSETSTAT = 3, 4, 5, 6, 7, 8, 9, 10
OPENDIR, READDIR, REMOVE, MKDIR, RMDIR, REALPATH, STAT, RENAME = 11, 12, 13, 14, 15, 16, 17, 18
READLINK, SYMLINK, EXTENDED = 19, 20, 200
STATUS, HANDLE, DATA, NAME, ATTRS, EXTENDED_REPLY = 101, 102, 103, 104, 105, 201
inp, out = sys.stdin.buffer, sys.stdout.buffer
handles = {}
requests = 0


def u32(b, i):
    return struct.unpack_from(">I", b, i)[0], i + 4


def string(b, i):
    n, i = u32(b, i)
    return b[i : i + n], i + n


def s(b):
    return struct.pack(">I", len(b)) + b


def read_exactly(n):
    b = b""
    while len(b) < n:
        d = inp.read(n - len(b))
        if not d:
            sys.exit(0)
        b += d
    return b


held = []


def send(t, rid, body):
    if S.get("delay"):
        time.sleep(S["delay"])
    if S.get("wrong_id"):
        rid += 1000
    frame = struct.pack(">IBI", len(body) + 5, t, rid) + body
    if t == DATA and S.get("duplicate"):
        frame += frame
    if t in (DATA, STATUS) and S.get("reverse"):
        held.append(frame)
        if len(held) < S["reverse"] and t == DATA:
            return
        frame = b"".join(reversed(held))
        held.clear()
    write_frame(t, frame)


def flush_held():
    """reverse: the client waits for what is held (no request comes): send it."""
    if held:
        frame = b"".join(reversed(held))
        held.clear()
        write_frame(DATA, frame)


def write_frame(t, frame):
    if t == DATA and S.get("split"):
        pieces, pause = S["split"]
        step = -(-len(frame) // pieces)
        for k in range(0, len(frame), step):
            if k:
                time.sleep(pause)
            out.write(frame[k : k + step])
            out.flush()
        return
    out.write(frame)
    out.flush()


def status(rid, code, msg=b"ok"):
    if code and "message" in S:
        msg = S["message"].encode("utf-8", "surrogateescape")
    send(STATUS, rid, struct.pack(">I", code & 0xFFFFFFFF) + s(msg) + s(b""))


def attrs(st):
    size = S.get("size", st.st_size)
    return struct.pack(
        ">IQIIIII",
        1 | 2 | 4 | 8,
        size,
        st.st_uid,
        st.st_gid,
        st.st_mode,
        int(st.st_atime),
        int(st.st_mtime),
    )


def new_handle(obj):
    n = S.get("handle_len", 8)
    h = (b"h%d-" % len(handles)).ljust(n, b"x")[:n] if n >= 4 else b"h%d" % len(handles)
    handles[h] = obj
    return h


def errno_status(rid, e):
    code = {2: 2, 13: 3, 17: 11}.get(e.errno, 4)
    status(rid, code, os.strerror(e.errno).encode())


def do_read(rid, b):
    h, i = string(b, 0)
    off = struct.unpack_from(">Q", b, i)[0]
    n, _ = u32(b, i + 8)
    if "chaos" in S and chaos(rid, h, off, n):
        return
    if S.get("read_ok"):
        return status(rid, 0)
    eof = S.get("eof_at")
    if (
        eof is not None
        and off >= eof
        and not (S.get("data_after") is not None and off >= S["data_after"])
    ):
        return status(rid, 1, b"eof")
    if eof is not None and off < eof and S.get("data_after") is None:
        n = min(n, eof - off)
    f = handles[h]
    f.seek(off)
    data = f.read(min(n, S.get("short", n)))
    if not data:
        return status(rid, 1, b"eof")
    send(DATA, rid, s(data + b"z" * S.get("data_extra", 0)))


rng = None


def chaos(rid, h, off, n):
    """chaos (a seed): answer READs at random, truthfully or not. True when done."""
    global rng
    if rng is None:
        import random

        rng = random.Random(S["chaos"])
    f = handles[h]
    f.seek(off)
    r = rng.random()
    if r < 0.70:
        return False  # the truth
    if r < 0.96:  # a short read
        data = f.read(rng.randint(1, max(1, n)))
        if data:
            send(DATA, rid, s(data))
            return True
        return False
    if r < 0.97:  # EOF, a lie or not
        status(rid, 1, b"eof")
        return True
    if r < 0.975:  # a failure
        status(rid, rng.choice([4, 2, 0x80000000]), b"chaos")
        return True
    if r < 0.98:  # another request's id
        send(DATA, rid + rng.choice([-1, 1, 7]), s(f.read(n)))
        return True
    if r < 0.985:  # twice
        data = f.read(n)
        send(DATA, rid, s(data))
        send(DATA, rid, s(data))
        return True
    if r < 0.99:  # more than asked
        send(DATA, rid, s(f.read(n) + b"x"))
        return True
    if r < 0.995:  # empty DATA (EOF)
        send(DATA, rid, s(b""))
        return True
    out.write(
        struct.pack(">IB", rng.randint(0, 40), rng.randint(0, 255))
        + bytes(rng.randint(0, 255) for _ in range(rng.randint(0, 40)))
    )
    out.flush()
    return True


def do_write(rid, b):
    h, i = string(b, 0)
    off = struct.unpack_from(">Q", b, i)[0]
    data, _ = string(b, i + 8)
    f = handles[h]
    f.seek(off)
    f.write(data)
    status(rid, 0)


listed = {}
rounds = 0


def do_readdir(rid, b):
    global rounds
    h, _ = string(b, 0)
    entries = handles[h]
    if S.get("list_forever"):
        rounds += 1
        names = [b"f%d-%d" % (rounds, k) for k in range(100)]
    elif "names" in S:
        if h not in listed:
            listed[h] = [n.encode("utf-8", "surrogateescape") for n in S["names"]]
        left = listed[h]
        if not left:
            return status(rid, 1, b"eof")
        k = S.get("per_reply", len(left))
        names, left[:] = left[:k], left[k:]
    else:
        if not entries:
            return status(rid, 1, b"eof")
        names, entries[:] = entries[:], []
    body = b""
    for name in names:
        a = struct.pack(">IQI", 1 | 4, 4, S.get("names_mode", 0o100644))
        if not S.get("names") and not S.get("list_forever"):
            try:
                a = attrs(os.lstat(os.path.join(handles[h + b"-path"], os.fsdecode(name))))
            except OSError:
                pass
        body += s(name) + s(name) + a
    send(NAME, rid, struct.pack(">I", len(names) + S.get("count_extra", 0)) + body)


def do_open(rid, b):
    path, i = string(b, 0)
    flags, _ = u32(b, i)
    mode = "r+b" if flags & 2 else "rb"
    if flags & 8:
        mode = "w+b" if flags & 16 or not os.path.exists(path) else "r+b"
    try:
        f = open(path, mode)
    except OSError as e:
        return errno_status(rid, e)
    send(HANDLE, rid, s(new_handle(f)))


def do_stat(rid, t, b):
    if t == FSTAT:
        h, _ = string(b, 0)
        st = os.fstat(handles[h].fileno())
    else:
        path, _ = string(b, 0)
        try:
            st = (os.lstat if t == LSTAT else os.stat)(path)
        except OSError as e:
            return errno_status(rid, e)
    send(ATTRS, rid, attrs(st))


def do_opendir(rid, b):
    path, _ = string(b, 0)
    try:
        names = [] if "names" in S else os.listdir(path)  # bytes, as the path is
    except OSError as e:
        return errno_status(rid, e)
    h = new_handle([b".", b".."] + sorted(names))
    handles[h + b"-path"] = path.decode("utf-8", "surrogateescape")
    send(HANDLE, rid, s(h))


def do_simple(rid, t, b):
    path, i = string(b, 0)
    try:
        if t == REMOVE:
            os.remove(path)
        elif t == RMDIR:
            os.rmdir(path)
        elif t == MKDIR:
            os.mkdir(path, 0o755)
        elif t in (SETSTAT, FSETSTAT):
            target = handles[path].fileno() if t == FSETSTAT else path
            flags, i = u32(b, i)
            if flags & 1:
                os.truncate(target, struct.unpack_from(">Q", b, i)[0])
                i += 8
            if flags & 4:
                os.chmod(target, struct.unpack_from(">I", b, i)[0] & 0o7777)
        elif t == RENAME:
            os.rename(path, string(b, i)[0])
        elif t == CLOSE:
            obj = handles.pop(path, None)
            if hasattr(obj, "close"):
                obj.close()
    except OSError as e:
        return errno_status(rid, e)
    status(rid, 0)


def do_realpath(rid, b):
    path, _ = string(b, 0)
    answer = S["realpath"].encode() if "realpath" in S else os.path.realpath(path)
    send(NAME, rid, struct.pack(">I", 1) + s(answer) + s(answer) + struct.pack(">I", 0))


def do_extended(rid, b):
    name, i = string(b, 0)
    if name in S.get("ext_reply", {}):
        return send(EXTENDED_REPLY, rid, S["ext_reply"][name])
    if name == b"limits@openssh.com" and "limits" in S:
        p, r, w = S["limits"]
        return send(EXTENDED_REPLY, rid, struct.pack(">QQQQ", p, r, w, 64))
    if name == b"posix-rename@openssh.com":
        return do_simple(rid, RENAME, b[i:])
    status(rid, 8, b"unsupported")


def handle(t, rid, b):
    if "raw" in S and t == S.get("raw_on", STAT):
        out.write(S["raw"])
        return out.flush()
    if t in S.get("status", {}):
        return status(rid, S["status"][t], b"scripted failure")
    if t == READ:
        return do_read(rid, b)
    if t == WRITE:
        return do_write(rid, b)
    if t == OPEN:
        return do_open(rid, b)
    if t == READDIR:
        return do_readdir(rid, b)
    if t == OPENDIR:
        return do_opendir(rid, b)
    if t in (STAT, LSTAT, FSTAT):
        return do_stat(rid, t, b)
    if t == REALPATH:
        return do_realpath(rid, b)
    if t == EXTENDED:
        return do_extended(rid, b)
    do_simple(rid, t, b)


def flood_stderr():
    while True:
        sys.stderr.buffer.write(b"x" * 65536)
        sys.stderr.buffer.flush()


def main():
    global S, requests
    S = ast.literal_eval(open(sys.argv[1]).read())
    os.chdir(os.path.expanduser("~"))
    if S.get("stderr_flood"):
        import threading

        threading.Thread(target=flood_stderr, daemon=True).start()
    seen = {}
    while True:
        if held and not select.select([inp], [], [], 0.05)[0]:
            flush_held()
        n, t = struct.unpack(">IB", read_exactly(5))
        body = read_exactly(n - 1)
        if t == 1:
            ext = s(b"limits@openssh.com") + s(b"1") if "limits" in S else b""
            ext += b"".join(s(k) + s(b"1") for k in S.get("ext_reply", {}))
            version = struct.pack(">IBI", 5 + len(ext), 2, 3) + ext
            out.write(version * (2 if S.get("version_twice") else 1))
            out.flush()
            continue
        requests += 1
        seen[t] = seen.get(t, 0) + 1
        if S.get("stall_after") is not None and requests > S["stall_after"]:
            continue
        if t in S.get("ignore", ()):
            continue
        if "stall_on" in S and t == S["stall_on"][0] and seen[t] >= S["stall_on"][1]:
            continue
        handle(t, struct.unpack_from(">I", body)[0], body[4:])


if __name__ == "__main__":
    main()
