/* The one place that knows the operating system: POSIX (Linux, macOS) or Windows.
 *
 * Sockets, poll, a waiter's wake-up pair, file I/O at an offset, the pid, the
 * clock and the CPU's AES support differ between them. This header (OS headers,
 * types) and platform.c (the functions) are the only files with an OS #ifdef or
 * an OS header; everything else speaks the vocabulary below. The differences
 * that matter:
 *
 *   - Windows: a socket is a SOCKET (an unsigned handle, INVALID_SOCKET when
 *     none), closed by closesocket(), with errors from WSAGetLastError();
 *     WSAPoll() polls sockets only, so a waiter's wake-up is a connected
 *     loopback socket pair, not a pipe; Winsock needs WSAStartup() once.
 *     Plain files go through the C runtime's _read/_write.
 *   - macOS: no MSG_NOSIGNAL (SO_NOSIGPIPE is set on each socket instead), no
 *     TCP_QUICKACK, no pipe2/accept4/SOCK_CLOEXEC (fcntl after the fact); the
 *     deployment targets are 10.13 (x86_64) and 11.0 (arm64).
 *   - Linux: MSG_NOSIGNAL on send, TCP_QUICKACK on the session's socket.
 *
 * Included by pyssh.h after Python.h. It does not need Python.h itself: the SCP
 * fuzz harness (tests/fuzz/) compiles scp.c, which includes it, on its own. */
#ifndef PYSSH_PLATFORM_H
#define PYSSH_PLATFORM_H

#include <stddef.h>

#ifdef _WIN32
#ifndef _WIN32_WINNT
#define _WIN32_WINNT 0x0602 /* Windows 8, as CPython's PC/pyconfig.h: WSAPoll, inet_ntop */
#endif
#include <winsock2.h>
#include <ws2tcpip.h>
#include <windows.h>
typedef SOCKET pyssh_socket_t;
#define PYSSH_INVALID_SOCKET INVALID_SOCKET
#define PYSSH_WINDOWS_PATHS  1 /* '\\' and ':' separate the parts of a local path */
#else
#include <sys/types.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <poll.h>
typedef int pyssh_socket_t;
#define PYSSH_INVALID_SOCKET (-1)
#define PYSSH_WINDOWS_PATHS  0
#endif

/* poll()'s struct, with POLLIN, POLLOUT, POLLERR, POLLHUP (WSAPOLLFD on Windows).
 * A slot whose fd is PYSSH_INVALID_SOCKET is skipped. */
typedef struct pollfd pyssh_pollfd;

/* Once per process, from the module's exec slot: WSAStartup on Windows. Returns 0,
 * or -1 with a Python exception set (the GIL is held). */
int pyssh_platform_init(void);

/* ---- sockets ------------------------------------------------------------------ */

int pyssh_poll(pyssh_pollfd *fds, unsigned int n, int timeout_ms); /* as poll() */
void pyssh_closesocket(pyssh_socket_t s);                          /* skips INVALID */
/* Non-blocking, not inherited by child processes, and no SIGPIPE when the peer
 * has gone (SO_NOSIGPIPE where it exists, else MSG_NOSIGNAL on each send).
 * Returns 0, or -1 (pyssh_socket_errno()). */
int pyssh_socket_setup(pyssh_socket_t s);
/* send() and recv() of at most `n` bytes: the count, or -1 (pyssh_socket_errno()). */
long pyssh_send(pyssh_socket_t s, const void *buf, size_t n);
long pyssh_recv(pyssh_socket_t s, void *buf, size_t n);
void pyssh_shutdown_write(pyssh_socket_t s);
/* Acknowledge what arrives at once (TCP_QUICKACK, Linux only; elsewhere nothing). */
void pyssh_quickack(pyssh_socket_t s);

/* The address of the AF_UNIX socket at `path` (an agent's), for connect(): 0,
 * PYSSH_UNIX_TOO_LONG (empty, or longer than sun_path holds) or
 * PYSSH_UNIX_UNSUPPORTED (Windows, whose OpenSSH agent is a named pipe). */
#define PYSSH_UNIX_TOO_LONG    (-1)
#define PYSSH_UNIX_UNSUPPORTED (-2)
int pyssh_unix_address(const char *path, struct sockaddr_storage *sa, socklen_t *len);

/* The last socket error (errno, or WSAGetLastError()), and what it means. */
int pyssh_socket_errno(void);
int pyssh_would_block(int err);  /* EAGAIN, EWOULDBLOCK */
int pyssh_interrupted(int err);  /* EINTR */
int pyssh_in_progress(int err);  /* a non-blocking connect() under way */
int pyssh_conn_aborted(int err); /* a connection gone before accept() took it */
/* The error's text, in buf (which is returned). */
const char *pyssh_socket_strerror(int err, char *buf, size_t size);
/* Raise OSError for a socket error (GIL held). */
void pyssh_set_socket_error(int err);

/* ---- a waiter's wake-up ---------------------------------------------------------- */

/* A pair whose read end is polled beside the session's socket: a pipe, or on
 * Windows a connected loopback socket pair. Both ends are non-blocking and not
 * inherited. open: 0, or an error number for pyssh_set_socket_error() (both ends
 * are then PYSSH_INVALID_SOCKET). ring: from any thread, a full pair is already
 * ringing. drain: empty the read end. close: both ends, INVALID ones skipped. */
int pyssh_wake_open(pyssh_socket_t *rd, pyssh_socket_t *wr);
void pyssh_wake_ring(pyssh_socket_t wr);
void pyssh_wake_drain(pyssh_socket_t rd);
void pyssh_wake_close(pyssh_socket_t rd, pyssh_socket_t wr);

/* ---- files ------------------------------------------------------------------------ */

/* read(), write(), pread(), pwrite() on a C file descriptor: at most `n` bytes
 * (1 GiB per call on Windows); the count, or -1 with errno set. */
long pyssh_read(int fd, void *buf, size_t n);
long pyssh_write(int fd, const void *buf, size_t n);
long pyssh_pread(int fd, void *buf, size_t n, unsigned long long offset);
long pyssh_pwrite(int fd, const void *buf, size_t n, unsigned long long offset);
/* All of p[0:n], at `offset` (pwrite), or where the file is when `offset` is
 * PYSSH_HERE (write), retrying on EINTR: 0, or the errno of the failure. */
#define PYSSH_HERE (~0ULL)
int pyssh_write_all(int fd, const char *p, size_t n, unsigned long long offset);
/* ftruncate(): 0, or -1 with errno set. */
int pyssh_ftruncate(int fd, unsigned long long size);

/* ---- the process, time, the CPU ----------------------------------------------------- */

long pyssh_getpid(void);      /* for the fork check of dealloc */
double pyssh_monotonic(void); /* seconds on a monotonic clock; no GIL needed */
#if defined(_MSC_VER)
#define PYSSH_THREAD_LOCAL __declspec(thread)
#else
#define PYSSH_THREAD_LOCAL _Thread_local
#endif
void pyssh_sleep_ms(int ms);
/* Does this CPU do AES and GCM's multiplication in hardware (AES-NI and PCLMULQDQ,
 * ARMv8's AES and PMULL)? */
int pyssh_cpu_has_aes(void);

/* ---- atomics ---------------------------------------------------------------------- */

/* A pointer that threads share without one lock that orders them all (an
 * object's claim, which a free-threaded CPython lets two threads take at once;
 * the session's handle, cleared with the GIL and read under the session lock):
 * loaded, stored and compare-and-swapped atomically, each a full barrier. gcc
 * and clang have C11's atomics as builtins that work on a plain pointer (and
 * ThreadSanitizer knows them); MSVC's C11 atomics are still experimental, its
 * Interlocked functions are not. PYSSH_ATOMIC_LOAD_PTR(p) is *p,
 * PYSSH_ATOMIC_STORE_PTR(p, v) is *p = v, PYSSH_ATOMIC_EXCHANGE_PTR(p, v)
 * stores v and returns what *p held; the _INT ones are the same for an int.
 * pyssh_atomic_cas_str: when *p is `expected`, store `desired` and return
 * `expected`; otherwise return what *p holds. */
#if defined(_MSC_VER) && !defined(__clang__)
#define PYSSH_ATOMIC_LOAD_PTR(p)                                                                   \
    InterlockedCompareExchangePointer((PVOID volatile *)(p), NULL, NULL)
#define PYSSH_ATOMIC_STORE_PTR(p, v)                                                               \
    ((void)InterlockedExchangePointer((PVOID volatile *)(p), (PVOID)(v)))
#define PYSSH_ATOMIC_EXCHANGE_PTR(p, v)                                                            \
    InterlockedExchangePointer((PVOID volatile *)(p), (PVOID)(v))
#define PYSSH_ATOMIC_LOAD_INT(p)     ((int)InterlockedCompareExchange((LONG volatile *)(p), 0, 0))
#define PYSSH_ATOMIC_STORE_INT(p, v) ((void)InterlockedExchange((LONG volatile *)(p), (LONG)(v)))
static inline const char *
pyssh_atomic_cas_str(const char **p, const char *expected, const char *desired)
{
    return (const char *)InterlockedCompareExchangePointer((PVOID volatile *)p, (PVOID)desired,
                                                           (PVOID)expected);
}
#else
#define PYSSH_ATOMIC_LOAD_PTR(p)        __atomic_load_n((p), __ATOMIC_SEQ_CST)
#define PYSSH_ATOMIC_STORE_PTR(p, v)    __atomic_store_n((p), (v), __ATOMIC_SEQ_CST)
#define PYSSH_ATOMIC_EXCHANGE_PTR(p, v) __atomic_exchange_n((p), (v), __ATOMIC_SEQ_CST)
#define PYSSH_ATOMIC_LOAD_INT(p)        __atomic_load_n((p), __ATOMIC_SEQ_CST)
#define PYSSH_ATOMIC_STORE_INT(p, v)    __atomic_store_n((p), (v), __ATOMIC_SEQ_CST)
static inline const char *
pyssh_atomic_cas_str(const char **p, const char *expected, const char *desired)
{
    __atomic_compare_exchange_n(p, &expected, desired, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    return expected;
}
#endif

#endif /* PYSSH_PLATFORM_H */
