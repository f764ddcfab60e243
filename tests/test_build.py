"""The extension as built: static, with hidden symbols, beside other OpenSSLs."""

import hashlib
import os
import re
import shutil
import ssl
import subprocess
import sys

import pytest

import pyssh
from pyssh import _ssh


def test_versions():
    assert pyssh.__version__
    major, minor, patch = (int(x) for x in pyssh.libssh_version().split("."))
    assert (major, minor, patch) >= (0, 11, 5)
    assert pyssh.libssh_version(full=True).startswith(pyssh.libssh_version() + "/")
    assert "openssl" in pyssh.libssh_version(full=True)


# ELF tools: on Linux they must be there (binutils, libc-bin: bash .ci/run installs
# them), so that a missing tool fails these tests instead of skipping them
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ldd: Linux")
def test_libssh_and_libcrypto_are_linked_statically():
    assert shutil.which("ldd"), "needs ldd (Debian: libc-bin)"
    out = subprocess.run(["ldd", _ssh.__file__], capture_output=True, text=True, check=True).stdout
    assert "libssh" not in out
    assert "libcrypto" not in out
    assert "libz" not in out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="nm -D: ELF, Linux")
def test_only_the_init_function_is_exported():
    assert shutil.which("nm"), "needs nm (binutils; bash .ci/run installs it)"
    out = subprocess.run(
        ["nm", "-D", "--defined-only", _ssh.__file__], capture_output=True, text=True, check=True
    ).stdout
    names = {line.split()[-1] for line in out.splitlines() if line.strip()}
    assert names == {"PyInit__ssh"}, sorted(names)[:20]


def test_other_openssl_users_in_the_same_process(server, tmp_path):
    import cryptography
    from cryptography.hazmat.primitives.asymmetric import ed25519
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    with server.connect() as s:
        assert s.connected
        # the ssl module (CPython's own OpenSSL) works beside pyssh's static copy
        ctx = ssl.create_default_context()
        assert ctx.verify_mode == ssl.CERT_REQUIRED
        assert hashlib.sha256(b"abc").hexdigest().startswith("ba7816bf")
        key = ed25519.Ed25519PrivateKey.generate()
        sig = key.sign(b"pyssh")
        key.public_key().verify(sig, b"pyssh")
        aes = AESGCM(AESGCM.generate_key(bit_length=128))
        assert aes.decrypt(b"0" * 12, aes.encrypt(b"0" * 12, b"data", None), None) == b"data"
        assert cryptography.__version__
        assert s.info()["connected"]


def test_exception_hierarchy():
    assert issubclass(pyssh.SSHError, OSError)
    assert issubclass(pyssh.ConnectError, pyssh.SSHError)
    assert issubclass(pyssh.ConnectError, ConnectionError)
    assert issubclass(pyssh.SSHTimeoutError, TimeoutError)
    assert issubclass(pyssh.SSHTimeoutError, pyssh.SSHError)
    assert issubclass(pyssh.AuthenticationError, pyssh.SSHError)
    assert issubclass(pyssh.UnknownHostKeyError, pyssh.HostKeyError)
    assert issubclass(pyssh.HostKeyMismatchError, pyssh.HostKeyError)
    assert issubclass(pyssh.HostKeyError, pyssh.SSHError)
    assert issubclass(pyssh.SessionClosedError, pyssh.SSHError)
    assert issubclass(pyssh.PrivateKeyError, ValueError)
    assert pyssh.SSHError.__module__ == "pyssh"
    assert "man-in-the-middle" in pyssh.HostKeyMismatchError.__doc__


def test_seed_aliases():
    assert pyssh.ssh_session_info is pyssh.ssh_info
    for name in ("ssh_connect", "ssh_disconnect", "ssh_info", "libssh_version"):
        assert callable(getattr(pyssh, name))


def test_typing_files_ship():
    pkg = os.path.dirname(pyssh.__file__)
    assert os.path.isfile(os.path.join(pkg, "py.typed"))
    assert os.path.isfile(os.path.join(pkg, "_ssh.pyi"))


@pytest.mark.slow
def test_stubs_match_the_extension_and_the_package_type_checks(tmp_path):
    """mypy's stubtest compares _ssh.pyi with the built module (every name, every
    signature); mypy --strict checks the Python layer against it. .ci/run's lint()
    runs both on the source tree; this test is what runs them on an installed pyssh
    (.ci/check-wheel: the wheel's stubs and py.typed), from an empty directory, so that
    mypy takes the rest of site-packages as installed libraries, not as this project.
    mypy missing fails the test (ModuleNotFoundError), never skips it."""

    root = os.path.dirname(os.path.dirname(pyssh.__file__))
    cwd = root if os.path.isfile(os.path.join(root, "setup.py")) else str(tmp_path)
    r = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "--ignore-disjoint-bases", "pyssh._ssh"],
        capture_output=True,
        text=True,
        cwd=cwd,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "-p", "pyssh"],
        capture_output=True,
        text=True,
        cwd=cwd,
    )
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.slow
def test_sdist_builds_on_its_own(tmp_path):
    """The source distribution carries the vendor/ recipe (without it setup.py cannot
    build libssh), the tests, and the docs with what they include."""
    import tarfile

    root = os.path.dirname(os.path.dirname(pyssh.__file__))
    if not os.path.isfile(os.path.join(root, "setup.py")):
        pytest.skip("not run from a source tree")
    r = subprocess.run(
        [sys.executable, "setup.py", "-q", "sdist", "-d", str(tmp_path)],
        cwd=root,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    (sdist,) = list(tmp_path.glob("pyssh-*.tar.gz"))
    with tarfile.open(sdist) as t:
        names = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
    for needed in (
        "setup.py",
        "pyproject.toml",
        "csrc/pyssh.h",
        "csrc/sftp.c",
        "vendor/build.sh",
        "vendor/versions.env",
        "vendor/patches/libssh-0.11.5-channel-data-no-copy.patch",
        "pyssh/_ssh.pyi",
        "pyssh/py.typed",
        "pyssh/include/pyssh_capi.h",
        "tests/conftest.py",
        "tests/capi/example.c",
        "tests/fuzz/scp_parse_fuzz.c",
        "tests/fuzz/sftp_reply_fuzz.c",
        "csrc/sftpproto.h",
        "tests/fuzz/socks_parse_fuzz.c",
        "csrc/socks.h",
        "tests/hostile_sftp.py",
        ".ci/run",
        # the guide builds from the sdist, and test_capi checks docs/capi.md
        "README.md",
        "mkdocs.yml",
        "docs/capi.md",
        "docs/griffe_pyssh.py",
        "SECURITY.md",
        "CONTRIBUTING.md",
        "CHANGELOG.md",
    ):
        assert needed in names, needed
    assert not any(n.endswith((".so", ".pyc")) for n in names)


# What PyUnicode_FromFormat (and so PyErr_Format and pyssh_raise) accepts on Python
# 3.9, the oldest supported: no '*' width or precision (3.12: before, "%.*s" was
# printed as it stands, and one message ended in a literal "%.*s"), no %T or %N
# (3.13), no floating point at all.
_FORMAT_OK = re.compile(
    r"%(%|-?\d*(\.\d+)?(c|d|u|i|x|s|p|A|U|V|S|R|ld|li|lu|lld|lli|llu|zd|zi|zu))$"
)
_FORMAT_TOKEN = re.compile(r"%(?:%|[-+ #0-9.*]*(?:ll|l|z|j|t|h|hh)?[a-zA-Z])")
_FORMAT_CALLS = re.compile(
    r"\b(PyErr_Format|pyssh_raise|PyUnicode_FromFormat|PyErr_WarnFormat)\s*\("
)


def _string_literals(src, i):
    """The string literals among a call's arguments, from just after its '('."""
    depth, j, out = 1, i, []
    while depth and j < len(src):
        if src[j] in "()":
            depth += 1 if src[j] == "(" else -1
        elif src[j] == '"':
            k = j + 1
            while src[k] != '"':
                k += 2 if src[k] == "\\" else 1
            out.append(src[j + 1 : k])
            j = k
        j += 1
    return "".join(out)


def test_c_message_formats_work_on_the_oldest_python():
    root = os.path.dirname(os.path.dirname(pyssh.__file__))
    csrc = os.path.join(root, "csrc")
    if not os.path.isdir(csrc):
        pytest.skip("not run from a source tree")
    bad = []
    for name in sorted(os.listdir(csrc)):
        if name.endswith(".c"):
            src = open(os.path.join(csrc, name)).read()
            for m in _FORMAT_CALLS.finditer(src):
                bad += [
                    (name, src.count("\n", 0, m.start()) + 1, spec)
                    for spec in _FORMAT_TOKEN.findall(_string_literals(src, m.end()))
                    if not _FORMAT_OK.match(spec)
                ]
    assert bad == []
