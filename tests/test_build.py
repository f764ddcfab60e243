"""The extension as built: static, with hidden symbols, beside other OpenSSLs."""
import hashlib
import os
import shutil
import ssl
import subprocess

import pytest

import pyssh
from pyssh import _ssh


def test_versions():
    assert pyssh.__version__
    major, minor, patch = (int(x) for x in pyssh.libssh_version().split("."))
    assert (major, minor, patch) >= (0, 11, 5)
    assert pyssh.libssh_version(full=True).startswith(pyssh.libssh_version() + "/")
    assert "openssl" in pyssh.libssh_version(full=True)


@pytest.mark.skipif(shutil.which("ldd") is None, reason="needs ldd")
def test_libssh_and_libcrypto_are_linked_statically():
    out = subprocess.run(["ldd", _ssh.__file__], capture_output=True, text=True, check=True).stdout
    assert "libssh" not in out
    assert "libcrypto" not in out
    assert "libz" not in out


@pytest.mark.skipif(shutil.which("nm") is None, reason="needs nm (binutils)")
def test_only_the_init_function_is_exported():
    out = subprocess.run(["nm", "-D", "--defined-only", _ssh.__file__], capture_output=True,
                         text=True, check=True).stdout
    names = {line.split()[-1] for line in out.splitlines() if line.strip()}
    assert names == {"PyInit__ssh"}, sorted(names)[:20]


def test_other_openssl_users_in_the_same_process(server, tmp_path):
    cryptography = pytest.importorskip("cryptography")
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


def test_stubs_match_the_extension_and_the_package_type_checks(tmp_path):
    """mypy's stubtest compares _ssh.pyi with the built module (every name, every
    signature); mypy checks the Python layer against it. From a source tree they run
    there; for an installed pyssh (.ci/check-wheel), from an empty directory, so that
    mypy takes the rest of site-packages as installed libraries, not as this project."""
    pytest.importorskip("mypy")
    import sys
    root = os.path.dirname(os.path.dirname(pyssh.__file__))
    cwd = root if os.path.isfile(os.path.join(root, "setup.py")) else str(tmp_path)
    r = subprocess.run([sys.executable, "-m", "mypy.stubtest", "--ignore-disjoint-bases",
                        "pyssh._ssh"], capture_output=True, text=True, cwd=cwd)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run([sys.executable, "-m", "mypy", "-p", "pyssh"], capture_output=True,
                       text=True, cwd=cwd)
    assert r.returncode == 0, r.stdout + r.stderr


def test_sdist_builds_on_its_own(tmp_path):
    """The source distribution carries the vendor/ recipe (without it setup.py cannot
    build libssh) and the tests."""
    import sys
    import tarfile
    root = os.path.dirname(os.path.dirname(pyssh.__file__))
    if not os.path.isfile(os.path.join(root, "setup.py")):
        pytest.skip("not run from a source tree")
    r = subprocess.run([sys.executable, "setup.py", "-q", "sdist", "-d", str(tmp_path)],
                       cwd=root, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    (sdist,) = list(tmp_path.glob("pyssh-*.tar.gz"))
    with tarfile.open(sdist) as t:
        names = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
    for needed in ("setup.py", "pyproject.toml", "csrc/pyssh.h", "csrc/sftp.c", "vendor/build.sh",
                   "vendor/versions.env", "vendor/patches/libssh-0.11.5-channel-data-no-copy.patch",
                   "pyssh/_ssh.pyi", "pyssh/py.typed", "pyssh/include/pyssh_capi.h", "tests/conftest.py",
                   "tests/capi/example.c",
                   "tests/fuzz/scp_parse_fuzz.c", ".ci/run"):
        assert needed in names, needed
    assert not any(n.endswith((".so", ".pyc")) for n in names)
