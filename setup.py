"""Build pyssh._ssh: plain C on the CPython C API, linked statically with libssh
and OpenSSL's libcrypto (and zlib when the vendor recipe builds it).

Environment:
  PYSSH_LIBSSH_PREFIX  a prefix with include/libssh/ and lib/libssh.a (0.11.5 or newer)
  PYSSH_DEBUG=1        debug build (-O0 -g3, assertions on)
  PYSSH_ASAN=1         AddressSanitizer build (see README, "Development")
  PYSSH_WERROR=1       warnings are errors (CI sets it)
  PYSSH_OPENSSL, PYSSH_ZLIB, PYSSH_VENDOR_*: passed on to vendor/build.sh
"""
import os
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup

HERE = Path(__file__).resolve().parent


class LibsshNotFound(RuntimeError):
    pass


def _system_static(name):
    """A static library of the system's (Debian's libssl-dev ships libcrypto.a)."""
    try:
        triplet = subprocess.run(["gcc", "-dumpmachine"], capture_output=True, text=True).stdout.strip()
    except OSError:
        triplet = ""
    for d in (f"/usr/lib/{triplet}", "/usr/lib64", "/usr/lib", "/usr/local/lib64", "/usr/local/lib"):
        p = Path(d) / name
        if p.is_file():
            return str(p)
    return None


def find_libssh():
    """Where libssh and its crypto come from, in this order:

    1. PYSSH_LIBSSH_PREFIX: a prefix with include/ and lib/libssh.a; libcrypto.a (and
       libz.a) are taken from the same lib/ when there, else from the system.
    2. The vendor/ recipe's prefix, built by vendor/build.sh if it is missing.

    Returns (include_dirs, static_archives in link order). Fails with a message that
    says how to get a libssh.
    """
    prefix = os.environ.get("PYSSH_LIBSSH_PREFIX")
    if prefix:
        lib = Path(prefix) / "lib"
        libssh = lib / "libssh.a"
        if not libssh.is_file() or not (Path(prefix) / "include" / "libssh" / "libssh.h").is_file():
            raise LibsshNotFound(
                f"PYSSH_LIBSSH_PREFIX={prefix} has no lib/libssh.a and include/libssh/libssh.h: "
                "build one with 'bash vendor/build.sh' (it prints its prefix) or unset the variable"
            )
        archives = [str(libssh)]
        crypto = lib / "libcrypto.a"
        archives.append(str(crypto) if crypto.is_file() else _system_static("libcrypto.a"))
        if None in archives:
            raise LibsshNotFound(f"no libcrypto.a in {lib} or the system: install libssl-dev")
        if (lib / "libz.a").is_file():
            archives.append(str(lib / "libz.a"))
        return [str(Path(prefix) / "include")], archives

    recipe = HERE / "vendor" / "build.sh"
    if not recipe.is_file():
        raise LibsshNotFound("vendor/build.sh is missing and PYSSH_LIBSSH_PREFIX is not set")
    try:
        out = subprocess.run(["bash", str(recipe), "--print-prefix"], check=True,
                             capture_output=True, text=True).stdout.strip()
        vprefix = Path(out)
        if not (vprefix / "pyssh-vendor.txt").is_file():
            print(f"pyssh: building libssh with vendor/build.sh into {vprefix}", file=sys.stderr)
            subprocess.run(["bash", str(recipe)], check=True, stdout=sys.stderr)
    except (OSError, subprocess.CalledProcessError) as e:
        raise LibsshNotFound(
            f"building libssh with vendor/build.sh failed ({e}). It needs bash, cmake, a C compiler, "
            "xz and libssl-dev (apt-get install cmake libssl-dev xz-utils), and the libssh tarball "
            "(see vendor/README.md); or point PYSSH_LIBSSH_PREFIX at a prefix with a static libssh 0.11.5+"
        ) from e
    archives = (vprefix / "pyssh-link.txt").read_text().split()
    return [str(vprefix / "include")], archives


def extension():
    include_dirs, archives = find_libssh()
    cflags = ["-Wall", "-Wextra", "-fvisibility=hidden", "-DLIBSSH_STATIC=1"]
    ldflags = []
    if os.environ.get("PYSSH_WERROR") == "1":
        cflags.append("-Werror")
    if os.environ.get("PYSSH_DEBUG") == "1" or os.environ.get("PYSSH_ASAN") == "1":
        cflags += ["-O0", "-g3", "-UNDEBUG"]
    if os.environ.get("PYSSH_ASAN") == "1":
        cflags += ["-fsanitize=address", "-fno-omit-frame-pointer"]
        ldflags += ["-fsanitize=address"]
    if sys.platform.startswith("linux"):
        # keep every libssh/OpenSSL symbol inside the extension
        ldflags += ["-Wl,--exclude-libs,ALL"]
    elif sys.platform == "darwin":
        ldflags += ["-Wl,-exported_symbol,_PyInit__ssh"]
    return Extension(
        "pyssh._ssh",
        sources=sorted(str(p.relative_to(HERE)) for p in (HERE / "csrc").glob("*.c")),
        depends=[str((HERE / "csrc" / "pyssh.h").relative_to(HERE))],
        include_dirs=include_dirs,
        extra_objects=archives,
        libraries=["pthread", "dl"] if sys.platform.startswith("linux") else [],
        extra_compile_args=cflags,
        extra_link_args=ldflags,
    )


try:
    ext = extension()
except LibsshNotFound as e:
    sys.exit(f"pyssh: {e}")

setup(ext_modules=[ext])
