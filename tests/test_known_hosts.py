"""pyssh/_known_hosts.py without a server: reading lines as OpenSSH does, host
patterns and hashed names, the verdicts, and appending under a lock."""

import base64
import multiprocessing
import os
import re
import struct
import subprocess

import pytest
from hypothesis import given, settings, strategies as st  # the `test` extra

from pyssh import _known_hosts as kh


def blob(key_type="ssh-ed25519", seed=b"k"):
    """A well-formed public key blob (type and one more field)."""

    def s(b):
        return struct.pack(">I", len(b)) + b

    return s(key_type.encode()) + s(seed.ljust(32, b"\0"))


def line(hosts, b, marker=""):
    t = struct.unpack(">I", b[:4])[0]
    prefix = f"{marker} " if marker else ""
    return f"{prefix}{hosts} {b[4 : 4 + t].decode()} {base64.b64encode(b).decode()}"


KEY, OTHER = blob(seed=b"key"), blob(seed=b"other")


# ---- lines ------------------------------------------------------------------------------


def test_lines_are_read_as_openssh_reads_them():
    assert kh.parse_line("# comment") is None
    assert kh.parse_line("   ") is None
    e = kh.parse_line(" \t" + line("a,b", KEY) + " a comment\r\n")
    assert (e.marker, e.hosts, e.key_type, e.blob) == (None, "a,b", "ssh-ed25519", KEY)
    assert kh.parse_line(line("a", KEY, "@revoked")).marker == "revoked"
    assert kh.parse_line(line("a", KEY, "@cert-authority")).marker == "cert-authority"
    assert kh.parse_line(line("a", KEY).replace(" ", "\t")).blob == KEY
    # skipped, as OpenSSH skips them: unknown, capitalised or repeated markers,
    # missing fields, bad base64, a blob whose type is not the line's
    for bad in (
        line("a", KEY, "@Revoked"),
        line("a", KEY, "@revoked @revoked"),
        line("a", KEY, "@foo"),
        "a ssh-ed25519",
        "@revoked a ssh-ed25519",
        line("a", KEY) + "==",
        "a ssh-rsa " + base64.b64encode(KEY).decode(),
        "a ssh-ed25519 " + base64.b64encode(b"\0\0\0\x0bssh-ed25519").decode(),
        "a # ssh-ed25519 " + base64.b64encode(KEY).decode(),
    ):
        assert kh.parse_line(bad) is None, bad
    # OpenSSH reads rsa-sha2-* as a name of ssh-rsa keys
    rsa = blob("ssh-rsa")
    assert kh.parse_line("a rsa-sha2-256 " + base64.b64encode(rsa).decode()).blob == rsa


@given(st.text())
def test_no_line_makes_the_parser_raise(text):
    kh.parse_line(text)
    kh.host_matches("host", text.split(" ")[0])


def test_a_changed_file_is_read_again_even_at_the_same_size(tmp_path):
    """read_entries keeps a file's parse while it is unchanged (a Group checks it for
    every host): a same-size rewrite must still be seen, fresh (within 2 s, whatever
    the file system's timestamps) and old (another mtime)."""
    path = str(tmp_path / "known_hosts")
    with open(path, "w") as f:
        f.write(line("host", KEY) + "\n")
    assert [e.blob for e in kh.read_entries([path])] == [KEY]
    with open(path, "w") as f:  # same size, at once
        f.write(line("host", OTHER) + "\n")
    assert [e.blob for e in kh.read_entries([path])] == [OTHER]
    os.utime(path, (1_000_000_000, 1_000_000_000))  # an old file: its parse is kept
    assert [e.blob for e in kh.read_entries([path])] == [OTHER]
    with open(path, "w") as f:
        f.write(line("host", KEY) + "\n")
    os.utime(path, (1_000_000_100, 1_000_000_100))  # rewritten: another mtime
    assert [e.blob for e in kh.read_entries([path])] == [KEY]


_INDEX_HOSTS = st.sampled_from(
    ["a", "A", "b", "host1", "[a]:2222", "[A]:2222", "*", "h*", "ho?t1", "!b", "!a", "[a]:*"]
)


@settings(max_examples=60, deadline=None)
@given(
    lines=st.lists(
        st.one_of(
            st.lists(_INDEX_HOSTS, min_size=1, max_size=3).map(",".join),
            st.sampled_from(["a", "host1", "[a]:2222"]).map(kh.hash_name),
            # not as hash_name writes it (no padding): it matches nothing
            st.sampled_from(["a", "host1"]).map(lambda n: kh.hash_name(n).rstrip("=")),
        ),
        min_size=1,
        max_size=12,
    ),
    names=st.lists(st.sampled_from(["a", "b", "host1", "[a]:2222", "hx", "zz"]), max_size=6),
)
def test_the_index_of_a_file_finds_what_matching_every_line_finds(tmp_path_factory, lines, names):
    """A file's lines are found by name through an index (plain names in a dict, the
    rest matched one by one, each name's result kept): the same lines, in the same
    order, as matching every line, asked once or again."""
    path = str(tmp_path_factory.mktemp("kh") / "known_hosts")
    with open(path, "w") as f:
        f.write("".join(line(h, blob(seed=str(i).encode())) + "\n" for i, h in enumerate(lines)))
    os.utime(path, (1_000_000_000, 1_000_000_000))  # old: its index is kept between lookups
    entries = kh.read_entries([path])
    for name in names + names:
        assert kh.named([path], name) == [e for e in entries if kh.host_matches(name, e.hosts)]


def test_lookup_names():
    assert kh.lookup_name("Example.COM", 22) == "example.com"
    assert kh.lookup_name("example.com", 2222) == "[example.com]:2222"
    assert kh.lookup_name("::1", 2222) == "[::1]:2222"


# ---- patterns and hashed names -------------------------------------------------------------


def glob_oracle(s, pattern):
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, s, re.DOTALL) is not None


names = st.text(alphabet="ab.:[]*?!,-0123456789", max_size=12)


@pytest.mark.slow
@given(names, names)
@settings(max_examples=500)
def test_match_pattern_is_openssh_glob(s, pattern):
    assert kh.match_pattern(s, pattern) == glob_oracle(s, pattern)


plain_patterns = names.filter(lambda p: "," not in p and not p.startswith("!"))


@pytest.mark.slow
@given(names, st.lists(st.tuples(st.booleans(), plain_patterns), min_size=1, max_size=4))
@settings(max_examples=500)
def test_negation_vetoes_the_line(name, subs):
    patterns = ",".join(("!" if neg else "") + p for neg, p in subs)
    got = kh.match_pattern_list(name, patterns)
    if any(neg and glob_oracle(name, p) for neg, p in subs):
        assert got == -1
    elif any(not neg and glob_oracle(name, p) for neg, p in subs):
        assert got == 1
    else:
        assert got == 0


def test_patterns_as_in_known_hosts():
    assert kh.host_matches("[10.0.0.1]:2222", "[10.0.0.*]:2222")
    assert kh.host_matches("a.example.com", "b.example.com,*.EXAMPLE.com")
    assert not kh.host_matches("bad.example.com", "*.example.com,!bad.example.com")
    assert not kh.host_matches("bad.example.com", "!bad.example.com")
    assert not kh.host_matches("a", "a" * 2000 + ",a")  # an over-long pattern: no match


@given(st.text(min_size=1, max_size=40), st.text(min_size=1, max_size=40))
def test_hashed_names_match_their_name_only(name, other):
    hashed = kh.hash_name(name)
    assert hashed.startswith("|1|")
    assert kh.host_matches(name, hashed)
    assert kh.host_matches(other, hashed) == (other == name)


def test_hashed_names_agree_with_ssh_keygen(tmp_path):
    f = tmp_path / "known_hosts"
    f.write_text(line("[host.example]:2222", KEY) + "\n")
    subprocess.run(["ssh-keygen", "-H", "-f", str(f)], check=True, capture_output=True)
    (entry,) = kh.read_entries([str(f)])
    assert entry.hosts.startswith("|1|")
    assert kh.host_matches("[host.example]:2222", entry.hosts)
    assert not kh.host_matches("host.example", entry.hosts)
    ours = tmp_path / "ours"
    ours.write_text(f"{kh.hash_name('[host.example]:2222')} {line('x', KEY).split(' ', 1)[1]}\n")
    found = subprocess.run(
        ["ssh-keygen", "-F", "[host.example]:2222", "-f", str(ours)], capture_output=True, text=True
    ).stdout
    assert "found: line 1" in found
    # a damaged hash matches nothing (and does not raise)
    assert not kh.host_matches("[host.example]:2222", "|1|!!!|" + entry.hosts.split("|")[3])
    assert not kh.host_matches("x", "|2|abc|def")


# ---- verdicts ----------------------------------------------------------------------------------


def verdict(tmp_path, lines, host="h.example", port=22, key=KEY):
    f = tmp_path / "known_hosts"
    f.write_text("\n".join(lines) + "\n")
    return kh.check([str(f)], host, port, key)


def test_verdicts(tmp_path):
    v = verdict
    assert v(tmp_path, []).status == kh.NEW
    assert v(tmp_path, [line("h.example", KEY)]).status == kh.OK
    assert v(tmp_path, [line("h.example", OTHER)]).status == kh.CHANGED
    assert v(tmp_path, [line("h.example", OTHER), line("h.example", KEY)]).status == kh.OK
    # a broken line for the host changes nothing (libssh would call the host unknown)
    assert v(tmp_path, [line("h.example", OTHER), "h.example ssh-foo AAAA"]).status == kh.CHANGED
    assert v(tmp_path, ["x" * 100000, line("h.example", OTHER)]).status == kh.CHANGED
    # a revocation wins over everything, for the hosts its patterns name
    assert v(tmp_path, [line("h.example", KEY), line("*", KEY, "@revoked")]).status == kh.REVOKED
    assert v(tmp_path, [line(kh.hash_name("h.example"), KEY, "@revoked")]).status == kh.REVOKED
    assert (
        v(tmp_path, [line("h.example", KEY), line("*,!h.example", KEY, "@revoked")]).status == kh.OK
    )
    assert (
        v(tmp_path, [line("h.example", KEY), line("h.example", OTHER, "@revoked")]).status == kh.OK
    )
    # @cert-authority lines alone cannot vouch for a plain key
    assert v(tmp_path, [line("*.example", OTHER, "@cert-authority")]).status == kh.CA_ONLY
    assert (
        v(tmp_path, [line("*", OTHER, "@cert-authority"), line("h.example", KEY)]).status == kh.OK
    )


def test_a_key_filed_under_the_bare_name_counts_on_other_ports(tmp_path):
    # as OpenSSH 9 does: the key ssh-keyscan wrote without -p is found for [h]:2222
    assert verdict(tmp_path, [line("h.example", KEY)], port=2222).status == kh.OK
    assert verdict(tmp_path, [line("h.example", KEY, "@revoked")], port=2222).status == kh.REVOKED
    assert verdict(tmp_path, [line("h.example", OTHER)], port=2222).status == kh.NEW
    assert (
        verdict(
            tmp_path, [line("[h.example]:2222", OTHER), line("h.example", KEY)], port=2222
        ).status
        == kh.CHANGED
    )


# ---- appending ---------------------------------------------------------------------------------


def test_append_starts_a_line_of_its_own(tmp_path):
    f = tmp_path / "known_hosts"
    f.write_text(line("other.example", OTHER))  # no final newline
    v = kh.append(str(f), "h.example", 2222, KEY, hash_names=False, check_paths=[str(f)])
    assert v.status == kh.NEW
    assert f.read_text().split("\n") == [
        line("other.example", OTHER),
        line("[h.example]:2222", KEY),
        "",
    ]
    # known now: a second append writes nothing
    assert (
        kh.append(str(f), "h.example", 2222, KEY, hash_names=False, check_paths=[str(f)]).status
        == kh.OK
    )
    assert len(f.read_text().splitlines()) == 2


def test_append_hashes_when_asked_or_when_the_file_is_hashed(tmp_path):
    f = tmp_path / "known_hosts"
    kh.append(str(f), "a.example", 22, KEY, hash_names=True, check_paths=[str(f)])
    assert f.read_text().startswith("|1|")
    kh.append(str(f), "b.example", 22, OTHER, hash_names=False, check_paths=[str(f)])
    entries = kh.read_entries([str(f)])
    assert [e.hosts.startswith("|1|") for e in entries] == [True, True]
    assert kh.check([str(f)], "b.example", 22, OTHER).status == kh.OK
    plain = tmp_path / "plain"
    plain.write_text(line(kh.hash_name("x"), KEY) + "\n" + line("y", KEY) + "\n")
    kh.append(str(plain), "c.example", 22, KEY, hash_names=False, check_paths=[str(plain)])
    assert plain.read_text().splitlines()[-1].startswith("c.example ")


def test_append_never_records_a_revoked_key(tmp_path):
    f = tmp_path / "known_hosts"
    f.write_text(line("*", KEY, "@revoked") + "\n")
    assert (
        kh.append(str(f), "h.example", 22, KEY, hash_names=False, check_paths=[str(f)]).status
        == kh.REVOKED
    )
    assert len(f.read_text().splitlines()) == 1


def _append_at_once(path, hosts, barrier):
    barrier.wait()
    for host in hosts:
        kh.append(path, host, 22, KEY, hash_names=False, check_paths=[path])


def test_concurrent_appends_leave_one_line_per_host(tmp_path):
    """Processes recording the same hosts at once: the lock makes each one's check
    and write one step, so every host is recorded once, on a line of its own, and
    the missing final newline is added once."""
    f = tmp_path / "known_hosts"
    f.write_text(line("first.example", OTHER))  # no final newline
    ctx = multiprocessing.get_context("fork" if hasattr(os, "fork") else "spawn")
    barrier = ctx.Barrier(6)
    hosts = [f"h{i}.example" for i in range(40)]
    procs = [ctx.Process(target=_append_at_once, args=(str(f), hosts, barrier)) for _ in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    lines = f.read_text().split("\n")
    assert lines[-1] == "" and "" not in lines[:-1]
    assert sorted(lines[:-1]) == sorted(
        [line("first.example", OTHER)] + [line(h, KEY) for h in hosts]
    )
