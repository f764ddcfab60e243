/* The operating system's side of pyssh: see platform.h for what lives here and why.
 * Windows first, then POSIX (Linux, macOS), then what depends on the CPU. */
#include "pyssh.h"

#include <errno.h>
#include <limits.h>
#include <string.h>

#ifdef _WIN32
#include <io.h>
#else
#include <fcntl.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#endif

#define FILE_IO_MAX 0x40000000u /* 1 GiB: what one _read/_write call takes on Windows */

#ifdef _WIN32

/* ---- Windows ------------------------------------------------------------------------- */

static INIT_ONCE wsa_once = INIT_ONCE_STATIC_INIT;
static int wsa_error;

static BOOL CALLBACK
wsa_start(PINIT_ONCE once, PVOID param, PVOID *context)
{
    WSADATA data;
    (void)once;
    (void)param;
    (void)context;
    /* never undone (no WSACleanup): other interpreters and threads may use sockets */
    wsa_error = WSAStartup(MAKEWORD(2, 2), &data);
    return TRUE;
}

int
pyssh_platform_init(void)
{
    InitOnceExecuteOnce(&wsa_once, wsa_start, NULL, NULL);
    if (wsa_error != 0) {
        PyErr_Format(PyExc_ImportError, "pyssh: Winsock failed to start (WSAStartup error %d)",
                     wsa_error);
        return -1;
    }
    return 0;
}

int
pyssh_poll(pyssh_pollfd *fds, unsigned int n, int timeout_ms)
{
    return WSAPoll(fds, (ULONG)n, timeout_ms);
}

void
pyssh_closesocket(pyssh_socket_t s)
{
    if (s != PYSSH_INVALID_SOCKET) {
        closesocket(s);
    }
}

int
pyssh_socket_setup(pyssh_socket_t s)
{
    u_long on = 1;
    if (ioctlsocket(s, FIONBIO, &on) != 0) {
        return -1;
    }
    /* Not inherited: best effort (a layered provider's socket may not be a
     * handle). Windows has no SIGPIPE: a send to a closed peer just fails. */
    SetHandleInformation((HANDLE)s, HANDLE_FLAG_INHERIT, 0);
    return 0;
}

long
pyssh_send(pyssh_socket_t s, const void *buf, size_t n)
{
    return send(s, buf, n > INT_MAX ? INT_MAX : (int)n, 0);
}

long
pyssh_recv(pyssh_socket_t s, void *buf, size_t n)
{
    return recv(s, buf, n > INT_MAX ? INT_MAX : (int)n, 0);
}

void
pyssh_shutdown_write(pyssh_socket_t s)
{
    shutdown(s, SD_SEND);
}

void
pyssh_quickack(pyssh_socket_t s)
{
    (void)s;
}

int
pyssh_socket_errno(void)
{
    return WSAGetLastError();
}

int
pyssh_would_block(int err)
{
    return err == WSAEWOULDBLOCK;
}

int
pyssh_interrupted(int err)
{
    return err == WSAEINTR;
}

int
pyssh_in_progress(int err)
{
    return err == WSAEWOULDBLOCK || err == WSAEINPROGRESS;
}

int
pyssh_conn_aborted(int err)
{
    return err == WSAECONNABORTED || err == WSAECONNRESET;
}

const char *
pyssh_socket_strerror(int err, char *buf, size_t size)
{
    DWORD n = FormatMessageA(FORMAT_MESSAGE_FROM_SYSTEM | FORMAT_MESSAGE_IGNORE_INSERTS, NULL,
                             (DWORD)err, 0, buf, (DWORD)size, NULL);
    while (n > 0 && (buf[n - 1] == '\r' || buf[n - 1] == '\n' || buf[n - 1] == '.')) {
        n--;
    }
    if (n == 0) {
        snprintf(buf, size, "Winsock error %d", err);
    }
    else {
        buf[n] = '\0';
    }
    return buf;
}

void
pyssh_set_socket_error(int err)
{
    PyErr_SetExcFromWindowsErr(PyExc_OSError, err);
}

/* WSAPoll cannot poll a pipe: a loopback TCP connection with itself instead (as
 * CPython's socket.socketpair() does on Windows), checked to be ours and not
 * another local process's that connected to the listener first. */
int
pyssh_wake_open(pyssh_socket_t *rd, pyssh_socket_t *wr)
{
    struct sockaddr_in addr, peer, mine;
    int len, err = 0, one = 1;
    SOCKET lsn, r = INVALID_SOCKET, w = INVALID_SOCKET;

    *rd = *wr = INVALID_SOCKET;
    lsn = socket(AF_INET, SOCK_STREAM, IPPROTO_TCP);
    if (lsn == INVALID_SOCKET) {
        return WSAGetLastError();
    }
    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    len = sizeof(addr);
    if (bind(lsn, (struct sockaddr *)&addr, sizeof(addr)) != 0 ||
        getsockname(lsn, (struct sockaddr *)&addr, &len) != 0 || listen(lsn, 1) != 0 ||
        (w = socket(AF_INET, SOCK_STREAM, IPPROTO_TCP)) == INVALID_SOCKET ||
        connect(w, (struct sockaddr *)&addr, sizeof(addr)) != 0) {
        goto fail;
    }
    len = sizeof(peer);
    if ((r = accept(lsn, (struct sockaddr *)&peer, &len)) == INVALID_SOCKET) {
        goto fail;
    }
    len = sizeof(mine);
    if (getsockname(w, (struct sockaddr *)&mine, &len) != 0) {
        goto fail;
    }
    if (peer.sin_addr.s_addr != mine.sin_addr.s_addr || peer.sin_port != mine.sin_port) {
        err = WSAECONNABORTED;
        goto fail;
    }
    if (pyssh_socket_setup(r) != 0 || pyssh_socket_setup(w) != 0) {
        goto fail;
    }
    setsockopt(w, IPPROTO_TCP, TCP_NODELAY, (const char *)&one, sizeof(one));
    closesocket(lsn);
    *rd = r;
    *wr = w;
    return 0;

fail:
    if (err == 0) {
        err = WSAGetLastError();
    }
    closesocket(lsn);
    pyssh_closesocket(r);
    pyssh_closesocket(w);
    return err != 0 ? err : WSAEINVAL;
}

void
pyssh_wake_ring(pyssh_socket_t wr)
{
    if (wr != PYSSH_INVALID_SOCKET) {
        char b = 1;
        send(wr, &b, 1, 0); /* would block: a ring is already waiting */
    }
}

void
pyssh_wake_drain(pyssh_socket_t rd)
{
    char buf[64];
    while (rd != PYSSH_INVALID_SOCKET && recv(rd, buf, sizeof(buf), 0) > 0) {
    }
}

long
pyssh_read(int fd, void *buf, size_t n)
{
    return _read(fd, buf, n > FILE_IO_MAX ? FILE_IO_MAX : (unsigned int)n);
}

long
pyssh_write(int fd, const void *buf, size_t n)
{
    return _write(fd, buf, n > FILE_IO_MAX ? FILE_IO_MAX : (unsigned int)n);
}

/* No pread/pwrite: seek, then read or write. The descriptor is the transfer's own. */
long
pyssh_pread(int fd, void *buf, size_t n, unsigned long long offset)
{
    if (_lseeki64(fd, (__int64)offset, SEEK_SET) < 0) {
        return -1;
    }
    return pyssh_read(fd, buf, n);
}

long
pyssh_pwrite(int fd, const void *buf, size_t n, unsigned long long offset)
{
    if (_lseeki64(fd, (__int64)offset, SEEK_SET) < 0) {
        return -1;
    }
    return pyssh_write(fd, buf, n);
}

int
pyssh_ftruncate(int fd, unsigned long long size)
{
    errno_t e = _chsize_s(fd, (__int64)size);
    if (e != 0) {
        errno = e;
        return -1;
    }
    return 0;
}

long
pyssh_getpid(void)
{
    return (long)GetCurrentProcessId();
}

double
pyssh_monotonic(void)
{
    LARGE_INTEGER freq, now; /* neither call fails from Windows XP on */
    QueryPerformanceFrequency(&freq);
    QueryPerformanceCounter(&now);
    return (double)now.QuadPart / (double)freq.QuadPart;
}

void
pyssh_sleep_ms(int ms)
{
    Sleep(ms > 0 ? (DWORD)ms : 0);
}

int
pyssh_unix_address(const char *path, struct sockaddr_storage *sa, socklen_t *len)
{
    /* Windows' OpenSSH agent listens on a named pipe, not a socket */
    (void)path;
    (void)sa;
    (void)len;
    return PYSSH_UNIX_UNSUPPORTED;
}

#else /* POSIX */

/* ---- POSIX: Linux, macOS ----------------------------------------------------------- */

int
pyssh_platform_init(void)
{
    return 0;
}

int
pyssh_poll(pyssh_pollfd *fds, unsigned int n, int timeout_ms)
{
    return poll(fds, (nfds_t)n, timeout_ms);
}

void
pyssh_closesocket(pyssh_socket_t s)
{
    if (s != PYSSH_INVALID_SOCKET) {
        close(s);
    }
}

/* O_NONBLOCK and FD_CLOEXEC by fcntl: macOS has no SOCK_CLOEXEC, pipe2 or accept4. */
static int
fd_nonblocking_cloexec(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
        return -1;
    }
    fl = fcntl(fd, F_GETFD);
    if (fl < 0 || fcntl(fd, F_SETFD, fl | FD_CLOEXEC) < 0) {
        return -1;
    }
    return 0;
}

int
pyssh_socket_setup(pyssh_socket_t s)
{
    if (fd_nonblocking_cloexec(s) < 0) {
        return -1;
    }
#ifdef SO_NOSIGPIPE
    /* macOS, BSD: the socket is told (a recent SDK may define MSG_NOSIGNAL for a
     * kernel older than the deployment target's) */
    int one = 1;
    setsockopt(s, SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof(one));
#endif
    return 0;
}

long
pyssh_send(pyssh_socket_t s, const void *buf, size_t n)
{
#if defined(MSG_NOSIGNAL) && !defined(SO_NOSIGPIPE)
    return (long)send(s, buf, n, MSG_NOSIGNAL); /* Linux */
#else
    return (long)send(s, buf, n, 0); /* SO_NOSIGPIPE is set by pyssh_socket_setup */
#endif
}

long
pyssh_recv(pyssh_socket_t s, void *buf, size_t n)
{
    return (long)recv(s, buf, n, 0);
}

void
pyssh_shutdown_write(pyssh_socket_t s)
{
    shutdown(s, SHUT_WR);
}

void
pyssh_quickack(pyssh_socket_t s)
{
#ifdef TCP_QUICKACK
    int one = 1;
    setsockopt(s, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof(one));
#else
    (void)s;
#endif
}

int
pyssh_socket_errno(void)
{
    return errno;
}

int
pyssh_would_block(int err)
{
    return err == EAGAIN || err == EWOULDBLOCK;
}

int
pyssh_interrupted(int err)
{
    return err == EINTR;
}

int
pyssh_in_progress(int err)
{
    return err == EINPROGRESS;
}

int
pyssh_conn_aborted(int err)
{
    return err == ECONNABORTED;
}

const char *
pyssh_socket_strerror(int err, char *buf, size_t size)
{
    snprintf(buf, size, "%s", strerror(err));
    return buf;
}

void
pyssh_set_socket_error(int err)
{
    errno = err;
    PyErr_SetFromErrno(PyExc_OSError);
}

int
pyssh_wake_open(pyssh_socket_t *rd, pyssh_socket_t *wr)
{
    int p[2];
    *rd = *wr = PYSSH_INVALID_SOCKET;
    if (pipe(p) < 0) {
        return errno;
    }
    if (fd_nonblocking_cloexec(p[0]) < 0 || fd_nonblocking_cloexec(p[1]) < 0) {
        int err = errno;
        close(p[0]);
        close(p[1]);
        return err;
    }
    *rd = p[0];
    *wr = p[1];
    return 0;
}

void
pyssh_wake_ring(pyssh_socket_t wr)
{
    if (wr != PYSSH_INVALID_SOCKET) {
        char b = 1;
        ssize_t r = write(wr, &b, 1); /* a full pipe is already ringing */
        (void)r;
    }
}

void
pyssh_wake_drain(pyssh_socket_t rd)
{
    char buf[64];
    while (rd != PYSSH_INVALID_SOCKET && read(rd, buf, sizeof(buf)) > 0) {
    }
}

long
pyssh_read(int fd, void *buf, size_t n)
{
    return (long)read(fd, buf, n);
}

long
pyssh_write(int fd, const void *buf, size_t n)
{
    return (long)write(fd, buf, n);
}

long
pyssh_pread(int fd, void *buf, size_t n, unsigned long long offset)
{
    return (long)pread(fd, buf, n, (off_t)offset);
}

long
pyssh_pwrite(int fd, const void *buf, size_t n, unsigned long long offset)
{
    return (long)pwrite(fd, buf, n, (off_t)offset);
}

int
pyssh_ftruncate(int fd, unsigned long long size)
{
    return ftruncate(fd, (off_t)size);
}

long
pyssh_getpid(void)
{
    return (long)getpid();
}

double
pyssh_monotonic(void)
{
    struct timespec ts; /* CLOCK_MONOTONIC: macOS has it from 10.12 */
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void
pyssh_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

int
pyssh_unix_address(const char *path, struct sockaddr_storage *sa, socklen_t *len)
{
    struct sockaddr_un *un = (struct sockaddr_un *)sa;
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof(un->sun_path)) {
        return PYSSH_UNIX_TOO_LONG;
    }
    memset(sa, 0, sizeof(*sa));
    un->sun_family = AF_UNIX;
    memcpy(un->sun_path, path, n + 1);
    *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
    return 0;
}

#endif /* POSIX */

int
pyssh_write_all(int fd, const char *p, size_t n, unsigned long long offset)
{
    while (n > 0) {
        long w = offset == PYSSH_HERE ? pyssh_write(fd, p, n) : pyssh_pwrite(fd, p, n, offset);
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            return errno;
        }
        p += w;
        n -= (size_t)w;
        if (offset != PYSSH_HERE) {
            offset += (unsigned long long)w;
        }
    }
    return 0;
}

void
pyssh_wake_close(pyssh_socket_t rd, pyssh_socket_t wr)
{
    pyssh_closesocket(rd);
    pyssh_closesocket(wr);
}

/* ---- the CPU ------------------------------------------------------------------------- */

#if defined(__x86_64__) || defined(__i386__) || defined(_M_X64) || defined(_M_IX86)
#if defined(_MSC_VER)
#include <intrin.h>
#else
#include <cpuid.h>
#endif
#elif defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_AES
#define HWCAP_AES (1 << 3)
#endif
#ifndef HWCAP_PMULL
#define HWCAP_PMULL (1 << 4)
#endif
#endif

int
pyssh_cpu_has_aes(void)
{
#if defined(__x86_64__) || defined(__i386__) || defined(_M_X64) || defined(_M_IX86)
    unsigned int ecx;
#if defined(_MSC_VER)
    int r[4];
    __cpuid(r, 1);
    ecx = (unsigned int)r[2];
#else
    unsigned int eax, ebx, edx;
    if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) {
        return 0;
    }
#endif
    return (ecx & (1u << 25)) && (ecx & (1u << 1)); /* AES, PCLMULQDQ */
#elif defined(__aarch64__) && defined(__APPLE__)
    return 1; /* every Apple arm64 CPU has the crypto extension */
#elif defined(__aarch64__) && defined(__linux__)
    unsigned long hw = getauxval(AT_HWCAP);
    return (hw & HWCAP_AES) && (hw & HWCAP_PMULL);
#elif (defined(_M_ARM64) || defined(__aarch64__)) && defined(_WIN32)
    return IsProcessorFeaturePresent(PF_ARM_V8_CRYPTO_INSTRUCTIONS_AVAILABLE) != 0;
#else
    return 0;
#endif
}
