"""The SCP message parser under libFuzzer (tests/fuzz/): replay what was ever found,
then fuzz for a bounded time. Needs clang with its fuzzer runtime (.ci/run installs it)."""
import os
import shutil
import subprocess

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
FUZZ = os.path.join(HERE, "fuzz")
ENV = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "ASAN_OPTIONS")}


@pytest.fixture(scope="module")
def fuzzer(tmp_path_factory):
    clang = shutil.which("clang")
    if clang is None:
        pytest.skip("clang is not installed (apt-get install clang): the fuzz test needs it")
    exe = str(tmp_path_factory.mktemp("fuzz") / "scp_parse_fuzz")
    r = subprocess.run([clang, "-g", "-O1", "-fsanitize=fuzzer,address,undefined",
                        "-fno-sanitize-recover=undefined", os.path.join(FUZZ, "scp_parse_fuzz.c"),
                        "-o", exe], capture_output=True, text=True, env=ENV)
    if r.returncode != 0 and "fuzzer" in r.stderr and "cannot find" in r.stderr:
        pytest.skip("clang has no libFuzzer runtime (Debian: libclang-rt-<version>-dev)")
    assert r.returncode == 0, r.stderr
    return exe


def test_regressions_replay(fuzzer):
    inputs = [os.path.join(FUZZ, "regressions", f) for f in os.listdir(os.path.join(FUZZ, "regressions"))
              if not f.startswith(".")]
    inputs += [os.path.join(FUZZ, "corpus", f) for f in os.listdir(os.path.join(FUZZ, "corpus"))]
    r = subprocess.run([fuzzer] + inputs, capture_output=True, text=True, env=ENV, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]


def test_fuzz_for_a_while(fuzzer, tmp_path):
    seconds = int(os.environ.get("PYSSH_FUZZ_SECONDS", "20"))
    corpus = tmp_path / "corpus"
    shutil.copytree(os.path.join(FUZZ, "corpus"), corpus)
    r = subprocess.run([fuzzer, f"-max_total_time={seconds}", "-max_len=9000",
                        f"-artifact_prefix={os.path.join(FUZZ, 'regressions')}/", str(corpus)],
                       capture_output=True, text=True, env=ENV, timeout=seconds + 120)
    assert r.returncode == 0, ("the fuzzer found a failing input, saved in tests/fuzz/regressions/:\n"
                               + r.stderr[-3000:])
    assert "Done" in r.stderr
