"""The parsers of what a peer sends, under libFuzzer (tests/fuzz/): the SCP
message parser (csrc/scp.c) and the SFTP reply checker (csrc/sftpproto.c), each
with the name rule (csrc/names.c), and the SOCKS request parser of -D tunnels'
clients (csrc/socks.c). Each harness replays what was ever found and
its seed corpus, then fuzzes for a bounded time. Needs clang with its fuzzer
runtime: .ci/run installs both, and without them these tests fail (a check that
cannot run must not pass)."""

import os
import shutil
import subprocess

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
FUZZ = os.path.join(HERE, "fuzz")
ENV = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "ASAN_OPTIONS")}
HARNESSES = {
    "scp": "scp_parse_fuzz.c",
    "sftp": "sftp_reply_fuzz.c",
    "socks": "socks_parse_fuzz.c",
}


@pytest.fixture(scope="module", params=sorted(HARNESSES))
def fuzzer(request, tmp_path_factory):
    clang = shutil.which("clang")
    assert clang is not None, (
        "clang is not installed (bash .ci/run installs it: apt-get install clang)"
    )
    exe = str(tmp_path_factory.mktemp("fuzz") / request.param)
    r = subprocess.run(
        [
            clang,
            "-g",
            "-O1",
            "-fsanitize=fuzzer,address,undefined",
            "-fno-sanitize-recover=undefined",
            "-Wall",
            "-Wextra",
            "-Werror",
            os.path.join(FUZZ, HARNESSES[request.param]),
            "-o",
            exe,
        ],
        capture_output=True,
        text=True,
        env=ENV,
    )
    assert r.returncode == 0, (
        "could not build the fuzz harness (Debian: libclang-rt-<version>-dev "
        "holds libFuzzer's runtime):\n" + r.stderr
    )
    return request.param, exe


def regressions(name):
    return os.path.join(FUZZ, "regressions", name)


@pytest.mark.slow
def test_regressions_replay(fuzzer):
    name, exe = fuzzer
    corpus = os.path.join(FUZZ, f"{name}_corpus")
    inputs = [
        os.path.join(regressions(name), f)
        for f in os.listdir(regressions(name))
        if not f.startswith(".")
    ]
    inputs += [os.path.join(corpus, f) for f in os.listdir(corpus)]
    assert len(inputs) >= 5
    r = subprocess.run([exe] + inputs, capture_output=True, text=True, env=ENV, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]


@pytest.mark.slow
def test_fuzz_for_a_while(fuzzer, tmp_path):
    name, exe = fuzzer
    seconds = int(os.environ.get("PYSSH_FUZZ_SECONDS", "20"))
    corpus = tmp_path / "corpus"
    shutil.copytree(os.path.join(FUZZ, f"{name}_corpus"), corpus)
    r = subprocess.run(
        [
            exe,
            f"-max_total_time={seconds}",
            "-max_len=9000",
            f"-artifact_prefix={regressions(name)}/",
            str(corpus),
        ],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=seconds + 120,
    )
    assert r.returncode == 0, (
        f"the fuzzer found a failing input, saved in "
        f"tests/fuzz/regressions/{name}/:\n" + r.stderr[-3000:]
    )
    assert "Done" in r.stderr
