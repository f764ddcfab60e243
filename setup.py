"""Build pyssh._ssh: plain C on the CPython C API, linked statically with libssh
and OpenSSL's libcrypto (and zlib when the vendor recipe builds it).

Compilers: gcc or clang on Linux and macOS, MSVC on Windows (where vendor/build.sh
runs under Git for Windows' bash).

Environment:
  PYSSH_LIBSSH_PREFIX  a prefix with include/libssh/ and lib/libssh.a (0.11.5 or newer;
                       on Windows lib/ssh.lib)
  PYSSH_DEBUG=1        debug build (-O0 -g3, assertions on)
  PYSSH_ASAN=1         AddressSanitizer build (see CONTRIBUTING.md, "Test")
  PYSSH_TSAN=1         ThreadSanitizer build of pyssh's own C files (CONTRIBUTING.md, "Test")
  PYSSH_WERROR=1       warnings are errors (CI sets it)
  PYSSH_BASH           the bash that runs vendor/build.sh (default: bash; on Windows
                       Git for Windows' bash.exe, never System32's, which is WSL's)
  PYSSH_OPENSSL, PYSSH_ZLIB, PYSSH_VENDOR_*: passed on to vendor/build.sh
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup

HERE = Path(__file__).resolve().parent
WINDOWS = sys.platform == "win32"

# Static archives as CMake and OpenSSL name them: libNAME.a on Unix; NAME.lib,
# libNAME.lib or a *static.lib on Windows.
ARCHIVE_NAMES = {
    "ssh": ("libssh.a", "ssh.lib", "libssh.lib"),
    "crypto": ("libcrypto.a", "libcrypto.lib", "libcrypto_static.lib"),
    "z": ("libz.a", "zlibstatic.lib", "zs.lib", "zlib.lib"),
}


class LibsshNotFound(RuntimeError):
    pass


def _archive(lib, name):
    """The static archive `name` (a key of ARCHIVE_NAMES) in directory `lib`, or None."""
    for file in ARCHIVE_NAMES[name]:
        if (lib / file).is_file():
            return str(lib / file)
    return None


def _bash():
    """The bash that runs vendor/build.sh. On Windows, a plain "bash" may start
    System32\\bash.exe (WSL: it would build Linux archives), so Git for Windows' is
    looked for: on PATH (a Git Bash shell puts it first), else beside git.exe."""
    if os.environ.get("PYSSH_BASH"):
        return os.environ["PYSSH_BASH"]
    if not WINDOWS:
        return "bash"
    found = shutil.which("bash")
    if found and Path(found).parent.name.lower() not in ("system32", "windowsapps"):
        return found
    git = shutil.which("git")
    if git:
        root = Path(git).resolve().parent.parent  # Git/cmd/git.exe, Git/mingw64/bin/git.exe
        for bash in (root / "bin" / "bash.exe", root.parent / "bin" / "bash.exe"):
            if bash.is_file():
                return str(bash)
    raise LibsshNotFound(
        "vendor/build.sh needs Git for Windows' bash: install Git for Windows, "
        "or set PYSSH_BASH to its bash.exe"
    )


def _native_paths(bash, paths):
    """Paths printed by bash, for Python: Git Bash on Windows prints /c/Users/...
    (cygpath -m makes that C:/Users/...); elsewhere they are already native."""
    if not WINDOWS or not any(p.startswith("/") for p in paths):
        return paths
    try:
        out = subprocess.run(
            [bash, "-c", 'cygpath -m -- "$@"', "cygpath", *paths],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.splitlines()
        if len(out) == len(paths):
            return out
    except (OSError, subprocess.CalledProcessError):
        pass
    return [re.sub(r"^/([A-Za-z])(?=/|$)", lambda m: m.group(1).upper() + ":", p) for p in paths]


def _system_static(name):
    """A static library of the system's (Debian's libssl-dev ships libcrypto.a)."""
    try:
        triplet = subprocess.run(
            ["gcc", "-dumpmachine"], capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        triplet = ""
    for d in (
        f"/usr/lib/{triplet}",
        "/usr/lib64",
        "/usr/lib",
        "/usr/local/lib64",
        "/usr/local/lib",
    ):
        p = Path(d) / name
        if p.is_file():
            return str(p)
    return None


def find_libssh():
    """Where libssh and its crypto come from, in this order:

    1. PYSSH_LIBSSH_PREFIX: a prefix with include/ and lib/libssh.a; libcrypto.a (and
       libz.a) are taken from the same lib/ when there, else from the system. (On
       Windows: ssh.lib, libcrypto.lib, zlibstatic.lib; see ARCHIVE_NAMES.)
    2. The vendor/ recipe's prefix, built by vendor/build.sh if it is missing; its
       pyssh-link.txt lists the archives, one path a line.

    Returns (include_dirs, static_archives in link order). Fails with a message that
    says how to get a libssh.
    """
    prefix = os.environ.get("PYSSH_LIBSSH_PREFIX")
    if prefix:
        lib = Path(prefix) / "lib"
        libssh = _archive(lib, "ssh")
        if libssh is None or not (Path(prefix) / "include" / "libssh" / "libssh.h").is_file():
            raise LibsshNotFound(
                f"PYSSH_LIBSSH_PREFIX={prefix} has no lib/libssh.a and include/libssh/libssh.h: "
                "build one with 'bash vendor/build.sh' (it prints its prefix) or unset the variable"
            )
        archives = [libssh, _archive(lib, "crypto") or _system_static("libcrypto.a")]
        if None in archives:
            raise LibsshNotFound(f"no libcrypto.a in {lib} or the system: install libssl-dev")
        if _archive(lib, "z"):
            archives.append(_archive(lib, "z"))
        return [str(Path(prefix) / "include")], archives

    recipe = HERE / "vendor" / "build.sh"
    if not recipe.is_file():
        raise LibsshNotFound("vendor/build.sh is missing and PYSSH_LIBSSH_PREFIX is not set")
    bash = _bash()
    # as_posix(): bash's dirname does not split C:\...\build.sh, and build.sh finds
    # versions.env beside itself
    try:
        out = subprocess.run(
            [bash, recipe.as_posix(), "--print-prefix"], check=True, capture_output=True, text=True
        ).stdout.strip()
        vprefix = Path(_native_paths(bash, [out])[0])
        if not (vprefix / "pyssh-vendor.txt").is_file():
            print(f"pyssh: building libssh with vendor/build.sh into {vprefix}", file=sys.stderr)
            subprocess.run([bash, recipe.as_posix()], check=True, stdout=sys.stderr)
    except (OSError, subprocess.CalledProcessError) as e:
        raise LibsshNotFound(
            f"building libssh with vendor/build.sh failed ({e}). It needs bash, cmake, a C "
            "compiler, xz and libssl-dev (apt-get install cmake libssl-dev xz-utils), and the "
            "libssh tarball (see vendor/README.md); or point PYSSH_LIBSSH_PREFIX at a prefix "
            "with a static libssh 0.11.5+"
        ) from e
    # one path a line: a path may hold spaces (C:/Users/First Last/...)
    archives = [
        line.strip()
        for line in (vprefix / "pyssh-link.txt").read_text().splitlines()
        if line.strip()
    ]
    return [str(vprefix / "include")], _native_paths(bash, archives)


def build_flags():
    """(compile flags, link flags, system libraries) for this platform's compiler."""
    werror = os.environ.get("PYSSH_WERROR") == "1"
    asan = os.environ.get("PYSSH_ASAN") == "1"
    tsan = os.environ.get("PYSSH_TSAN") == "1"
    if asan and tsan:
        raise SystemExit("PYSSH_ASAN and PYSSH_TSAN cannot be combined: pick one sanitizer")
    debug = os.environ.get("PYSSH_DEBUG") == "1" or asan or tsan
    if WINDOWS:
        # MSVC. Only PyInit__ssh is exported (PyMODINIT_FUNC's dllexport); what libssh
        # and OpenSSL need from Windows: Winsock, the IP helper, the crypto APIs.
        cflags = ["/W3"] + (["/WX"] if werror else [])
        ldflags = []
        if debug:
            cflags += ["/Od", "/Zi", "/UNDEBUG"]
            ldflags += ["/DEBUG"]
        if asan:
            cflags += ["/fsanitize=address"]
        libs = ["ws2_32", "iphlpapi", "crypt32", "bcrypt", "advapi32", "user32", "gdi32"]
        return cflags, ldflags, libs
    # gcc or clang
    cflags = ["-Wall", "-Wextra", "-fvisibility=hidden"] + (["-Werror"] if werror else [])
    ldflags = []
    if debug:
        cflags += ["-O0", "-g3", "-UNDEBUG"]
    if asan:
        cflags += ["-fsanitize=address", "-fno-omit-frame-pointer"]
        ldflags += ["-fsanitize=address"]
    if tsan:
        # Only pyssh's own files are instrumented: libssh and OpenSSL are linked as
        # built, so TSan sees their memory only where pyssh's code touches it.
        cflags += ["-fsanitize=thread", "-fno-omit-frame-pointer"]
        ldflags += ["-fsanitize=thread"]
    libs = []
    if sys.platform.startswith("linux"):
        # keep every libssh/OpenSSL symbol inside the extension
        ldflags += ["-Wl,--exclude-libs,ALL"]
        libs = ["pthread", "dl"]
    elif sys.platform == "darwin":
        ldflags += ["-Wl,-exported_symbol,_PyInit__ssh"]
    return cflags, ldflags, libs


def pyssh_version():
    """__version__ from pyssh/_version.py, for the C API table (capi.c)."""
    import re

    text = (HERE / "pyssh" / "_version.py").read_text()
    return re.search(r'__version__ = "([^"]+)"', text).group(1)


def extension():
    include_dirs, archives = find_libssh()
    cflags, ldflags, libs = build_flags()
    return Extension(
        "pyssh._ssh",
        sources=sorted(str(p.relative_to(HERE)) for p in (HERE / "csrc").glob("*.c")),
        depends=sorted(str(p.relative_to(HERE)) for p in (HERE / "csrc").glob("*.h"))
        + ["pyssh/include/pyssh_capi.h"],
        include_dirs=include_dirs,
        define_macros=[("LIBSSH_STATIC", "1"), ("PYSSH_VERSION", f'"{pyssh_version()}"')],
        extra_objects=archives,
        libraries=libs,
        extra_compile_args=cflags,
        extra_link_args=ldflags,
    )


try:
    ext = extension()
except LibsshNotFound as e:
    sys.exit(f"pyssh: {e}")

setup(ext_modules=[ext])
