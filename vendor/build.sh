#!/usr/bin/env bash
# Build libssh (and, on request, OpenSSL and zlib) as static, position-independent
# archives into a prefix outside the source tree, for pyssh to link.
#
#   bash vendor/build.sh                 build (or reuse) the prefix, print its path last
#   bash vendor/build.sh --print-prefix  print the prefix path only, build nothing
#
# Environment (all optional):
#   PYSSH_OPENSSL=system|source  system: link the system's static libcrypto.a (Debian's
#                                libssl-dev); source: build OpenSSL from its release tarball.
#                                Default: system where a libcrypto.a is found (Linux only), else source.
#   PYSSH_ZLIB=off|source        zlib for SSH compression. Default: source with
#                                PYSSH_OPENSSL=source, off otherwise (Debian's libz.a is not PIC).
#   PYSSH_VENDOR_DIR             where prefixes and downloads are kept
#                                (default: ${XDG_CACHE_HOME:-~/.cache}/pyssh-vendor).
#   PYSSH_VENDOR_TARBALLS        a directory holding release tarballs already downloaded
#                                (upstream file names, e.g. libssh-0.11.5.tar.xz); looked at first.
#   PYSSH_VENDOR_OFFLINE=1       never touch the network: local tarballs only.
#   PYSSH_VENDOR_JOBS            parallel make jobs (default: number of CPUs).
#   PYSSH_VENDOR_NO_GPG=1        build even without gpgv, checking tarballs by sha256 alone.
#   MACOSX_DEPLOYMENT_TARGET     macOS: the oldest macOS the archives are built for.
#   ARCHFLAGS, CIBW_ARCHS        macOS: the architecture ("-arch x86_64", "arm64"); default uname -m.
#   PYSSH_PERL                   Windows: a native Windows perl for OpenSSL (default: Strawberry Perl).
#
# Every tarball, wherever it comes from, is checked against the sha256 pinned in
# vendor/versions.env before it is unpacked, and against upstream's signature when
# vendor/signatures/ holds one (gpgv, with the keys in vendor/keys/ only). The prefix is
# keyed by a hash of this script, versions.env, the patches, the options above and the
# target (OS, architecture, deployment target), so a second run finds it and takes seconds.
#
# Platforms: Linux and other Unix (./configure, make), macOS (clang, darwin64-* OpenSSL
# targets), Windows from Git Bash inside an MSVC developer environment (nmake, cmake).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=versions.env
. "$here/versions.env"

log() { printf 'pyssh-vendor: %s\n' "$*" >&2; }
die() { printf 'pyssh-vendor: error: %s\n' "$*" >&2; exit 1; }

case "$(uname -s)" in
    Darwin) os=macos ;;
    MINGW*|MSYS*) os=windows ;;
    CYGWIN*) die "Cygwin is not supported: run this from Git Bash inside an MSVC developer environment" ;;
    *) os=unix ;;
esac

# The target: what goes into the prefix's name and key besides the options.
key_extra=
case "$os" in
    unix)
        machine=$(uname -sm | tr ' ' '-') ;;
    macos)
        # The architecture built for: ARCHFLAGS ("-arch x86_64"), else cibuildwheel's
        # CIBW_ARCHS(_MACOS), else this machine's.
        archs=()
        read -r -a words <<<"$(echo "${CIBW_ARCHS_MACOS:-${CIBW_ARCHS:-}}" | tr ',' ' ')"
        for a in ${words[@]+"${words[@]}"}; do
            case "$a" in native|auto|auto64) ;; *) archs+=("$a") ;; esac
        done
        read -r -a words <<<"${ARCHFLAGS:-}"
        if [ "${#words[@]}" -gt 0 ]; then
            archs=()
            for ((i = 0; i + 1 < ${#words[@]}; i++)); do [ "${words[i]}" != -arch ] || archs+=("${words[i+1]}"); done
        fi
        [ "${#archs[@]}" -le 1 ] || die "one macOS architecture at a time (ARCHFLAGS/CIBW_ARCHS name ${archs[*]}): universal2 is not built here"
        arch=${archs[0]:-$(uname -m)}
        case "$arch" in arm64|x86_64) ;; *) die "unsupported macOS architecture '$arch' (arm64 or x86_64)" ;; esac
        [ -z "${MACOSX_DEPLOYMENT_TARGET:-}" ] || export MACOSX_DEPLOYMENT_TARGET
        machine="Darwin-$arch${MACOSX_DEPLOYMENT_TARGET:+-$MACOSX_DEPLOYMENT_TARGET}"
        key_extra="macos $arch ${MACOSX_DEPLOYMENT_TARGET:-default}" ;;
    windows)
        # vcvars names the target architecture; the shell itself may be x64 on ARM64.
        case "${VSCMD_ARG_TGT_ARCH:-${PROCESSOR_ARCHITECTURE:-}}" in
            arm64|ARM64) arch=ARM64 ;;
            x64|AMD64|amd64) arch=AMD64 ;;
            *) die "cannot tell the MSVC target architecture: run this inside an MSVC developer environment (VSCMD_ARG_TGT_ARCH x64 or arm64)" ;;
        esac
        command -v cl >/dev/null || die "cl.exe is not on PATH: run this inside an MSVC developer environment (vcvarsall.bat, or the workflow's MSVC setup step)"
        machine="Windows-$arch"
        key_extra="windows $arch msvc ${VCToolsVersion:-unknown} nasm $(command -v nasm >/dev/null && echo yes || echo no)" ;;
esac

# sha256 of stdin, hex (coreutils sha256sum, or shasum on macOS).
sha256_of() {
    if command -v sha256sum >/dev/null; then sha256sum; else shasum -a 256; fi | cut -c1-64
}

# A path that native Windows programs (cmake, nmake, perl, Python) can open.
nativepath() {
    if [ "$os" = windows ] && command -v cygpath >/dev/null; then cygpath -m "$1"; else printf '%s\n' "$1"; fi
}

find_system_libcrypto() {
    local d
    [ "$os" = unix ] || return 1
    for d in "${PYSSH_SYSTEM_LIBDIR:-}" /usr/lib/"$(gcc -dumpmachine 2>/dev/null || echo none)" \
             /usr/lib64 /usr/lib /usr/local/lib64 /usr/local/lib; do
        [ -n "$d" ] && [ -f "$d/libcrypto.a" ] && { echo "$d/libcrypto.a"; return 0; }
    done
    return 1
}

openssl_mode=${PYSSH_OPENSSL:-}
if [ -z "$openssl_mode" ]; then
    if find_system_libcrypto >/dev/null; then openssl_mode=system; else openssl_mode=source; fi
fi
case "$openssl_mode" in system|source) ;; *) die "PYSSH_OPENSSL must be 'system' or 'source', not '$openssl_mode'";; esac
[ "$openssl_mode" = source ] || [ "$os" = unix ] || die "PYSSH_OPENSSL=system is for Linux: set PYSSH_OPENSSL=source on macOS and Windows"
zlib_mode=${PYSSH_ZLIB:-}
if [ -z "$zlib_mode" ]; then
    if [ "$openssl_mode" = source ]; then zlib_mode=source; else zlib_mode=off; fi
fi
case "$zlib_mode" in off|source) ;; *) die "PYSSH_ZLIB must be 'off' or 'source', not '$zlib_mode'";; esac

vendor_dir=${PYSSH_VENDOR_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/pyssh-vendor}
key=$( { cat "$here/build.sh" "$here/versions.env" "$here"/patches/*.patch
         echo "$openssl_mode $zlib_mode $machine ${CC:-cc} ${CFLAGS:-}${key_extra:+ $key_extra}"; } \
       | sha256_of | cut -c1-16)
prefix="$vendor_dir/$machine-$key"

if [ "${1:-}" = "--print-prefix" ]; then
    echo "$prefix"
    exit 0
fi

if [ -f "$prefix/pyssh-vendor.txt" ]; then
    log "up to date: $prefix"
    echo "$prefix"
    exit 0
fi

jobs=${PYSSH_VENDOR_JOBS:-$(getconf _NPROCESSORS_ONLN 2>/dev/null || sysctl -n hw.ncpu 2>/dev/null || echo "${NUMBER_OF_PROCESSORS:-2}")}
downloads="$vendor_dir/downloads"
mkdir -p "$downloads"
work=$(mktemp -d "${TMPDIR:-/tmp}/pyssh-vendor.XXXXXX")
trap 'rm -rf "$work"' EXIT

sha256_ok() { # file expected
    [ "$(sha256_of < "$1")" = "$2" ]
}

download() { # url dest
    command -v curl >/dev/null || return 1
    curl -fsSL --connect-timeout 10 --max-time 300 -o "$2.part" "$1" 2>/dev/null && mv "$2.part" "$2"
}

# Debian's source archive keeps upstream release tarballs as PKG_VERSION.orig.tar.*,
# byte for byte, with apt checking the archive's signature on the way. This needs
# apt-get and a Debian release whose source package has the pinned version.
debian_orig() { # srcpkg version upstream-file dest-dir
    local pkg=$1 ver=$2 file=$3 dest=$4 suite list d url orig
    command -v apt-get >/dev/null || return 1
    [ -f /usr/share/keyrings/debian-archive-keyring.gpg ] || return 1
    for suite in ${PYSSH_DEBIAN_SUITES:-trixie trixie-security bookworm bookworm-security}; do
        d="$work/apt-$suite"
        mkdir -p "$d/lists/partial" "$d/src"
        list="$d/sources.list"
        case "$suite" in *-security) url=http://deb.debian.org/debian-security ;; *) url=http://deb.debian.org/debian ;; esac
        echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $url $suite main" > "$list"
        local apt=(apt-get -q -o "Dir::Etc::SourceList=$list" -o Dir::Etc::SourceParts=/dev/null
                   -o "Dir::State::Lists=$d/lists" -o APT::Sandbox::User=root)
        "${apt[@]}" update >/dev/null 2>&1 || continue
        (cd "$d/src" && "${apt[@]}" source --download-only "$pkg" >/dev/null 2>&1) || continue
        orig=$(find "$d/src" -maxdepth 1 -name "${pkg}_${ver}.orig.tar.*" ! -name '*.asc' | head -n 1)
        if [ -n "$orig" ]; then
            cp "$orig" "$dest/$file"
            log "took $file from Debian's source archive ($suite)"
            return 0
        fi
    done
    return 1
}

# gpg/gpgv home: a throwaway directory, so no user keyring or configuration is read.
gnupghome="$work/gnupg"
mkdir -m 700 "$gnupghome"

# An ASCII-armoured key file as a binary keyring, which is what gpgv reads.
dearmor() { # armoured-in binary-out
    if command -v gpg >/dev/null; then
        gpg --batch --quiet --homedir "$gnupghome" --yes --dearmor -o "$2" "$1" 2>/dev/null && return 0
    fi
    # Without gpg: each armour block's base64, between the blank line that ends its
    # headers and its '=' checksum line.
    tr -d '\r' < "$1" | awk -v out="$2.b64." '
        /^-----BEGIN PGP/ { n++; body = 0; next }
        /^-----END PGP/   { body = 0; next }
        n && !body && /^$/ { body = 1; next }
        body && !/^=/     { print > (out n) }'
    : > "$2"
    for b in "$2".b64.*; do base64 -d < "$b" >> "$2" || return 1; done
}

# Upstream's detached signature of a release tarball, where vendor/signatures/ has one,
# checked with the keys in vendor/keys/<project>.asc and no others.
check_signature() { # tarball upstream-file project
    local f=$1 file=$2 project=$3 sig="$here/signatures/$2.asc" keys="$here/keys/$3.asc" tool keyring
    [ -f "$sig" ] || return 0
    tool=$(command -v gpgv || command -v gpgv2 || command -v gpg || true)
    if [ -z "$tool" ] && [ "${PYSSH_VENDOR_NO_GPG:-0}" = 1 ]; then
        log "warning: gpgv not found and PYSSH_VENDOR_NO_GPG=1: $file is checked by its pinned sha256 only, not by vendor/signatures/$file.asc"
        return 0
    elif [ -z "$tool" ]; then
        die "gpgv is needed to check $file against upstream's signature (vendor/signatures/$file.asc): install gnupg or gpgv (Debian/Ubuntu: apt-get install gpgv; Fedora/RHEL/manylinux: dnf install gnupg2; Alpine/musllinux: apk add gpgv; macOS: brew install gnupg), or set PYSSH_VENDOR_NO_GPG=1 to rely on the pinned sha256 alone"
    fi
    [ -f "$keys" ] || die "vendor/signatures/$file.asc is there but vendor/keys/$project.asc, the keys to check it with, is not"
    keyring="$work/keys-$project.gpg"
    dearmor "$keys" "$keyring" || die "could not read the keys in vendor/keys/$project.asc"
    local verify=("$tool" --homedir "$gnupghome" --keyring "$keyring" --status-fd 3)
    case "$tool" in  # gpg itself, where gpgv is missing: only these keys, all trusted, as gpgv does
        */gpg|*/gpg.exe) verify+=(--batch --no-default-keyring --trust-model always --verify) ;;
    esac
    if "${verify[@]}" "$sig" "$f" 3>"$work/gpg.status" >"$work/gpg.log" 2>&1; then
        log "$file: good signature by $(awk '$2 == "VALIDSIG" { print $NF }' "$work/gpg.status") (vendor/keys/$project.asc)"
    else
        sed 's/^/    /' "$work/gpg.log" >&2
        die "BAD SIGNATURE: $file does not verify against vendor/signatures/$file.asc with the keys in vendor/keys/$project.asc (gpg's words above). Do not build from it. If upstream signs with a new key, refresh vendor/keys/$project.asc as vendor/README.md says (\"Bumping a version\")"
    fi
}

fetch() { # file sha256 url project debian-pkg debian-version ; prints the verified path
    local file=$1 sum=$2 url=$3 project=$4 dpkg=${5:-} dver=${6:-} f
    for f in "${PYSSH_VENDOR_TARBALLS:-/nonexistent}/$file" "$downloads/$file"; do
        if [ -f "$f" ]; then
            sha256_ok "$f" "$sum" || die "$f does not match the pinned sha256 $sum: delete it or fix vendor/versions.env"
            check_signature "$f" "$file" "$project"
            echo "$f"; return 0
        fi
    done
    if [ "${PYSSH_VENDOR_OFFLINE:-0}" = 1 ]; then
        die "$file not found in PYSSH_VENDOR_TARBALLS (${PYSSH_VENDOR_TARBALLS:-unset}) and PYSSH_VENDOR_OFFLINE=1"
    fi
    f="$downloads/$file"
    if download "$url" "$f"; then
        log "downloaded $url"
    elif [ -n "$dpkg" ] && debian_orig "$dpkg" "$dver" "$file" "$downloads"; then
        :
    else
        die "could not get $file: not in PYSSH_VENDOR_TARBALLS, not downloadable from $url${dpkg:+, not in the Debian source archive}. Download it by hand and set PYSSH_VENDOR_TARBALLS to its directory."
    fi
    if ! sha256_ok "$f" "$sum"; then
        mv "$f" "$f.bad"
        die "$file does not match the pinned sha256 $sum (kept as $f.bad)"
    fi
    check_signature "$f" "$file" "$project"
    echo "$f"
}

# CMake's generator and compiler: make and cc on Unix; on Windows Ninja (or NMake) and cl.
cmake_gen=()
if [ "$os" = windows ]; then
    if command -v ninja >/dev/null; then cmake_gen=(-G Ninja); else cmake_gen=(-G "NMake Makefiles"); fi
    cmake_gen+=(-DCMAKE_C_COMPILER=cl)
fi

stage="$prefix.tmp.$$"
rm -rf "$stage"
mkdir -p "$stage"

link_libs=()
cmake_ssl=()

if [ "$zlib_mode" = source ]; then
    tgz=$(fetch "zlib-$ZLIB_VERSION.tar.gz" "$ZLIB_SHA256" \
          "https://github.com/madler/zlib/releases/download/v$ZLIB_VERSION/zlib-$ZLIB_VERSION.tar.gz" zlib)
    log "building zlib $ZLIB_VERSION"
    tar -xzf "$tgz" -C "$work"
    if [ "$os" = windows ]; then
        # zlib's CMake build; its static archive is zlibstatic.lib.
        { cmake -S "$(nativepath "$work/zlib-$ZLIB_VERSION")" -B "$(nativepath "$work/zlib-build")" ${cmake_gen[@]+"${cmake_gen[@]}"} \
              -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX="$(nativepath "$stage")" -DZLIB_BUILD_EXAMPLES=OFF \
          && cmake --build "$(nativepath "$work/zlib-build")" && cmake --install "$(nativepath "$work/zlib-build")"; } \
            >"$work/zlib.log" 2>&1 || { tail -n 40 "$work/zlib.log" >&2; die "building zlib failed (log above)"; }
        zlib_lib="$stage/lib/zlibstatic.lib"
    else
        zlib_cflags="${CFLAGS:-} -O2 -fPIC"
        [ "$os" = macos ] && zlib_cflags="$zlib_cflags -arch $arch"
        (cd "$work/zlib-$ZLIB_VERSION" \
            && CFLAGS="$zlib_cflags" ./configure --static --prefix="$stage" && make -j"$jobs" && make install) \
            >"$work/zlib.log" 2>&1 || { tail -n 40 "$work/zlib.log" >&2; die "building zlib failed (log above)"; }
        zlib_lib="$stage/lib/libz.a"
    fi
    [ -f "$zlib_lib" ] || die "zlib's static library was not installed as $zlib_lib"
    link_libs+=("$zlib_lib")
fi

if [ "$openssl_mode" = source ]; then
    tgz=$(fetch "openssl-$OPENSSL_VERSION.tar.gz" "$OPENSSL_SHA256" \
          "https://github.com/openssl/openssl/releases/download/openssl-$OPENSSL_VERSION/openssl-$OPENSSL_VERSION.tar.gz" \
          openssl openssl "$OPENSSL_VERSION")
    log "building OpenSSL $OPENSSL_VERSION (takes a few minutes)"
    tar -xzf "$tgz" -C "$work"
    # libcrypto only as libssh 0.11 uses it: AES (CBC, CTR, GCM), ChaCha20-Poly1305, 3DES-CBC,
    # SHA-1/2, MD5, HMAC, the SSH KDF, RSA, ECDSA/ECDH on P-256/384/521, Ed25519/X25519, DH,
    # PEM/PKCS#8 key files, OSSL_STORE. Left out: the openssl program, docs, TLS/DTLS/QUIC
    # extras, the legacy provider, X.509 infrastructure (CT, OCSP, CMS, TS, CMP, HTTP), binary
    # curves, post-quantum signatures, and ciphers and digests SSH has no name for. ML-KEM stays:
    # libssh 0.12's mlkem768x25519-sha256 key exchange uses OpenSSL's.
    ossl_opts=(no-shared no-tests no-apps no-docs no-engine no-module no-legacy no-comp
               no-ssl3 no-dtls no-quic no-srtp no-srp no-psk no-ct no-ocsp no-cms no-ts no-cmp no-http
               no-rfc3779 no-ec2m no-ml-dsa no-slh-dsa no-gost no-sm2 no-sm3 no-sm4 no-aria no-camellia
               no-seed no-idea no-bf no-cast no-rc2 no-rc4 no-md4 no-mdc2 no-whirlpool)
    osrc="$work/openssl-$OPENSSL_VERSION"
    case "$os" in
        windows)
            # OpenSSL's VC-* targets need a native Windows perl (Git Bash's perl will not do).
            perl=
            for p in "${PYSSH_PERL:-}" "$(command -v perl || true)" /c/Strawberry/perl/bin/perl.exe; do
                if [ -n "$p" ] && [ -x "$p" ] && [ "$("$p" -e 'print $^O' 2>/dev/null)" = MSWin32 ]; then perl=$p; break; fi
            done
            [ -n "$perl" ] || die "OpenSSL's Windows build needs a native Windows perl such as Strawberry Perl (choco install strawberryperl); set PYSSH_PERL to its perl.exe"
            if [ "$arch" = ARM64 ]; then target=VC-WIN64-ARM
            else
                target=VC-WIN64A
                command -v nasm >/dev/null || { log "NASM not found: OpenSSL without assembler (slower AES and SHA)"; ossl_opts+=(no-asm); }
            fi
            (cd "$osrc" \
                && "$perl" Configure "$target" "${ossl_opts[@]}" --prefix="$(nativepath "$stage")" \
                && nmake build_libs && nmake install_dev) >"$work/openssl.log" 2>&1 \
                || { tail -n 40 "$work/openssl.log" >&2; die "building OpenSSL failed (log above)"; }
            crypto="$stage/lib/libcrypto.lib" ;;
        *)
            target=()
            [ "$os" = macos ] && target=("darwin64-$arch-cc")
            (cd "$osrc" \
                && ./Configure ${target[@]+"${target[@]}"} "${ossl_opts[@]}" -fPIC --prefix="$stage" --libdir=lib \
                && make -j"$jobs" build_libs && make install_dev) >"$work/openssl.log" 2>&1 \
                || { tail -n 40 "$work/openssl.log" >&2; die "building OpenSSL failed (log above)"; }
            crypto="$stage/lib/libcrypto.a" ;;
    esac
    [ -f "$crypto" ] || die "OpenSSL's libcrypto was not installed as $crypto"
    cmake_ssl=(-DOPENSSL_ROOT_DIR="$(nativepath "$stage")" -DOPENSSL_USE_STATIC_LIBS=TRUE
               -DOPENSSL_CRYPTO_LIBRARY="$(nativepath "$crypto")" -DOPENSSL_INCLUDE_DIR="$(nativepath "$stage/include")")
else
    crypto=$(find_system_libcrypto) || die "no static libcrypto.a found: install libssl-dev (Debian/Ubuntu) or set PYSSH_OPENSSL=source"
    cmake_ssl=(-DOPENSSL_USE_STATIC_LIBS=TRUE -DOPENSSL_CRYPTO_LIBRARY="$crypto")
fi

txz=$(fetch "libssh-$LIBSSH_VERSION.tar.xz" "$LIBSSH_SHA256" \
      "https://www.libssh.org/files/${LIBSSH_VERSION%.*}/libssh-$LIBSSH_VERSION.tar.xz" \
      libssh libssh "$LIBSSH_VERSION")
log "building libssh $LIBSSH_VERSION (openssl: $openssl_mode, zlib: $zlib_mode)"
tar -xJf "$txz" -C "$work"
# pyssh's patches to this release (vendor/patches/, README.md there says why each)
for p in "$here"/patches/libssh-"$LIBSSH_VERSION"-*.patch; do
    [ -f "$p" ] || continue
    command -v patch >/dev/null || die "the 'patch' program is needed (Debian: apt-get install patch)"
    log "applying $(basename "$p")"
    patch -s -p1 -d "$work/libssh-$LIBSSH_VERSION" --forward <"$p" || die "patch $(basename "$p") did not apply"
done
zlib_flags=(-DWITH_ZLIB=OFF)
if [ "$zlib_mode" = source ]; then
    zlib_flags=(-DWITH_ZLIB=ON -DZLIB_ROOT="$(nativepath "$stage")" -DZLIB_USE_STATIC_LIBS=ON
                -DZLIB_LIBRARY="$(nativepath "$zlib_lib")" -DZLIB_INCLUDE_DIR="$(nativepath "$stage/include")")
fi
cflags="${CFLAGS:-} -DMAX_BUF_SIZE=262144"
target_flags=()
case "$os" in
    macos)
        target_flags=(-DCMAKE_OSX_ARCHITECTURES="$arch")
        [ -z "${MACOSX_DEPLOYMENT_TARGET:-}" ] || target_flags+=(-DCMAKE_OSX_DEPLOYMENT_TARGET="$MACOSX_DEPLOYMENT_TARGET") ;;
    windows)
        cflags="-DWIN32 -D_WINDOWS $cflags" ;;  # CMake's MSVC defaults, which setting CMAKE_C_FLAGS replaces
esac
cmake -S "$(nativepath "$work/libssh-$LIBSSH_VERSION")" -B "$(nativepath "$work/libssh-build")" ${cmake_gen[@]+"${cmake_gen[@]}"} \
    -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX="$(nativepath "$stage")" -DCMAKE_INSTALL_LIBDIR=lib \
    -DCMAKE_POSITION_INDEPENDENT_CODE=ON -DBUILD_SHARED_LIBS=OFF \
    -DCMAKE_C_FLAGS="$cflags" ${target_flags[@]+"${target_flags[@]}"} \
    -DWITH_SERVER=OFF -DWITH_GSSAPI=OFF -DWITH_EXAMPLES=OFF -DUNIT_TESTING=OFF \
    -DCLIENT_TESTING=OFF -DSERVER_TESTING=OFF -DWITH_PCAP=OFF -DWITH_SYMBOL_VERSIONING=OFF \
    -DWITH_NACL=OFF -DWITH_BLOWFISH_CIPHER=OFF \
    "${cmake_ssl[@]}" "${zlib_flags[@]}" >"$work/cmake.log" 2>&1 \
    || { tail -n 40 "$work/cmake.log" >&2; die "libssh's cmake configuration failed (log above)"; }
cmake --build "$(nativepath "$work/libssh-build")" -j "$jobs" >"$work/build.log" 2>&1 \
    || { tail -n 40 "$work/build.log" >&2; die "building libssh failed (log above)"; }
cmake --install "$(nativepath "$work/libssh-build")" >/dev/null
if [ "$os" = windows ]; then ssh_lib="$stage/lib/ssh.lib"; else ssh_lib="$stage/lib/libssh.a"; fi
[ -f "$ssh_lib" ] || die "libssh's static library was not installed as $ssh_lib"

# What setup.py links, in link order: one path a line (on Windows, C:/... paths).
{
    nativepath "${ssh_lib/#"$stage"/$prefix}"
    if [ "$openssl_mode" = source ]; then nativepath "${crypto/#"$stage"/$prefix}"; else echo "$crypto"; fi
    for l in ${link_libs[@]+"${link_libs[@]}"}; do nativepath "${l/#"$stage"/$prefix}"; done
} > "$stage/pyssh-link.txt"
# Windows: the system libraries these archives need, and libssh's headers want
# LIBSSH_STATIC defined (libssh's CMake export says so; setup.py has to do it).
if [ "$os" = windows ]; then
    printf '%s\n' ws2_32 iphlpapi crypt32 advapi32 user32 gdi32 > "$stage/pyssh-syslibs.txt"
fi
{
    echo "libssh $LIBSSH_VERSION"
    if [ "$openssl_mode" = source ]; then echo "openssl source $OPENSSL_VERSION"; else echo "openssl system $crypto"; fi
    echo "zlib $zlib_mode"
    echo "target $machine${key_extra:+ ($key_extra)}"
    echo "key $key"
} > "$stage/pyssh-vendor.txt"

rm -rf "$prefix"
mv "$stage" "$prefix"
log "built $prefix"
echo "$prefix"
