#!/usr/bin/env bash
# Compile every csrc/*.c for 64-bit Windows, as far as a Linux machine can: the
# _WIN32 side of platform.h/platform.c and everything that includes them, with
# warnings as errors. MSVC itself cannot run here; a second pass with clang's
# -Wshorten-64-to-32 and -Wfloat-conversion stands in for
# MSVC's /W3 conversion warnings (C4267, C4244).
#
#   bash tests/check_windows_syntax.sh
#
# Needs mingw-w64 and clang (apt-get install mingw-w64 clang; without either the
# script fails rather than pass on half the check), and:
#   - CPython's Windows headers (Include/ and PC/pyconfig.h): PYSSH_WINPY_SRC, a
#     CPython source tree; by default Debian's python3.11 source package, fetched
#     with apt-get source through a private sources list (the system's apt
#     configuration is not touched) and kept in ${XDG_CACHE_HOME:-~/.cache}/pyssh-winpy;
#   - libssh's headers: the prefix of vendor/build.sh (built by pip install -e .).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
die() { printf 'check_windows_syntax: %s\n' "$*" >&2; exit 1; }

command -v x86_64-w64-mingw32-gcc >/dev/null || die "no x86_64-w64-mingw32-gcc: apt-get install mingw-w64"
command -v clang >/dev/null || die "no clang, for the conversion warnings pass: apt-get install clang"

winpy=${PYSSH_WINPY_SRC:-}
if [ -z "$winpy" ]; then
    cache=${XDG_CACHE_HOME:-$HOME/.cache}/pyssh-winpy
    winpy=$(ls -d "$cache"/Python-3.* 2>/dev/null | head -n 1 || true)
    if [ -z "$winpy" ]; then
        [ -f /usr/share/keyrings/debian-archive-keyring.gpg ] || die "no Debian keyring: set PYSSH_WINPY_SRC to a CPython source tree"
        mkdir -p "$cache/apt/lists/partial" "$cache/src"
        echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main" \
            > "$cache/apt/sources.list"
        apt=(apt-get -q -o "Dir::Etc::SourceList=$cache/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
             -o "Dir::State::Lists=$cache/apt/lists" -o APT::Sandbox::User=root)
        "${apt[@]}" update >/dev/null || die "apt-get update (private sources list) failed"
        (cd "$cache/src" && "${apt[@]}" source --download-only python3.11 >/dev/null) || die "apt-get source python3.11 failed"
        orig=$(ls "$cache"/src/python3.11_*.orig.tar.* | head -n 1)
        tar -xf "$orig" -C "$cache" --wildcards 'Python-3.*/Include/*' 'Python-3.*/PC/pyconfig.h'
        rm -rf "$cache/src" "$cache/apt"
        winpy=$(ls -d "$cache"/Python-3.* | head -n 1)
    fi
fi
[ -f "$winpy/PC/pyconfig.h" ] && [ -f "$winpy/Include/Python.h" ] || die "$winpy has no Include/Python.h and PC/pyconfig.h"

prefix=$(bash "$root/vendor/build.sh" --print-prefix)
[ -f "$prefix/include/libssh/libssh.h" ] || die "no libssh headers in $prefix: build them first (bash vendor/build.sh)"

flags=(-fsyntax-only -Wall -Wextra -Werror -DMS_WIN64 -DLIBSSH_STATIC=1
       -I"$winpy/Include" -I"$winpy/PC" -I"$prefix/include")
status=0
for f in "$root"/csrc/*.c; do
    x86_64-w64-mingw32-gcc "${flags[@]}" "$f" || status=1
    clang --target=x86_64-w64-mingw32 "${flags[@]}" -Wshorten-64-to-32 -Wfloat-conversion "$f" || status=1
done
[ "$status" = 0 ] && echo "check_windows_syntax: every csrc/*.c compiles for Windows (x86_64) without a warning"
exit "$status"
