/* pyssh_capi.h: pyssh's C API, for other extensions (C, C++, Cython).
 *
 * A session that Python code created and authenticated (a pyssh.Session) can be
 * used from C: run a command and read its output into your buffers, open a
 * direct-tcpip channel, stream a remote file through SCP, all with the GIL
 * released and without linking a libssh of your own. Include this header
 * (`pyssh.get_include()` gives its directory), call pyssh_import_capi() once
 * with the GIL held (in your module's exec function), keep the pointer it
 * returns, and call through it. The guide is docs/capi.md in pyssh's sources, with
 * a complete example (tests/capi/example.c, which the tests compile and run).
 *
 * Threads and the GIL:
 *  - Session_Check, raise_error and pyssh_import_capi need the GIL.
 *  - Every other function may be called with the GIL released, and should be:
 *    they wait on the network. They never touch Python objects: you must hold a
 *    reference to the session object (taken with the GIL) for as long as you use
 *    it or its channels.
 *  - session_lock must be called WITHOUT the GIL (another thread holding the
 *    lock may need the GIL to let it go).
 *  - A channel is used by one thread at a time. Several threads may each use
 *    their own channels of one session; pyssh's own Python calls on the session
 *    go on meanwhile (every libssh call holds the session's lock).
 *  - Signals (Ctrl-C) are not checked without the GIL: pass a timeout and call
 *    PyErr_CheckSignals() between calls if your loop may run for long.
 *
 * Errors: functions that can fail take a `pyssh_error *` (never NULL), fill it,
 * and return -1 (or NULL). raise_error() turns it into pyssh's exception (the
 * same classes Python code sees: SessionClosedError, SSHTimeoutError, ...).
 *
 * Versions: PYSSH_CAPI_VERSION changes only when the table changes
 * incompatibly; new functions are appended and make the table longer, which
 * pyssh_import_capi checks (an extension built with a newer header on an older
 * pyssh gets a clear ImportError, never a crash). */
#ifndef PYSSH_CAPI_H
#define PYSSH_CAPI_H

#include <Python.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PYSSH_CAPI_VERSION 1
#define PYSSH_CAPI_CAPSULE "pyssh._ssh._C_API"

/* pyssh_error.code; raise_error() raises the class named in the comment */
enum pyssh_errcode {
    PYSSH_OK = 0,
    PYSSH_E_SSH,            /* pyssh.SSHError: libssh failed, or the channel was refused */
    PYSSH_E_CLOSED,         /* pyssh.SessionClosedError: the session is (or was) closed */
    PYSSH_E_TIMEOUT,        /* pyssh.SSHTimeoutError: the timeout passed; you may retry */
    PYSSH_E_SCP,            /* pyssh.SCPError: the server's scp reported an error */
    PYSSH_E_SCP_NOT_FOUND,  /* pyssh.SCPFileNotFoundError */
    PYSSH_E_SCP_PERMISSION, /* pyssh.SCPPermissionError */
    PYSSH_E_SCP_PROTOCOL,   /* pyssh.SCPProtocolError: the server broke the protocol */
    PYSSH_E_ARGUMENT,       /* ValueError: a bad argument (a NULL, a closed channel...) */
    PYSSH_E_NOMEM,          /* MemoryError */
    PYSSH_E_ABORTED,        /* your sink returned non-zero: nothing is raised for it
                                 unless you call raise_error (pyssh.SSHError) */
    PYSSH_E_OS,             /* OSError: a system call failed; `os_errno` says which */
    PYSSH_E_LOST            /* pyssh.ConnectError: the connection to the server is gone
                                 (connect again); added in C API version 1 of pyssh 0.1 */
};

typedef struct {
    int code;          /* enum pyssh_errcode */
    int os_errno;      /* PYSSH_E_OS: the errno */
    char message[512]; /* what went wrong, in words, NUL-terminated */
} pyssh_error;

/* A channel opened through the API: opaque; closed (and freed) by channel_close. */
typedef struct pyssh_capi_channel pyssh_channel;

/* Which stream channel_read's data came from */
#define PYSSH_STDOUT 1
#define PYSSH_STDERR 2

/* A sink for streamed data: return 0 to go on, anything else to stop (the
 * operation then fails with PYSSH_E_ABORTED). Called without the GIL. */
typedef int (*pyssh_sink_fn)(void *ctx, const char *data, size_t len);

typedef struct {
    /* ---- version 1 ---- */
    unsigned int version;       /* PYSSH_CAPI_VERSION of the pyssh providing it */
    unsigned int size;          /* sizeof this table there */
    const char *pyssh_version;  /* "0.1.0" */
    const char *libssh_version; /* "0.11.5/openssl/zlib": the libssh inside pyssh */

    /* GIL held. 1 if `obj` is a pyssh Session (pyssh.Session or its _ssh.Session),
     * else 0. Sessions are given to the functions below as that object. */
    int (*Session_Check)(PyObject *obj);
    /* GIL held. Raise the exception for `err` (its class and message); returns NULL. */
    PyObject *(*raise_error)(const pyssh_error *err);

    /* 1 if the session is connected and not closed, else 0. */
    int (*session_is_open)(PyObject *session);

    /* Run `command` (a shell command line, as in exec_wait) on a new channel. NULL
     * and `err` on failure. No stdin is sent until channel_write; call
     * channel_send_eof when done with stdin (a command that reads stdin waits
     * for it). `timeout` (seconds, < 0: none) bounds the opening. */
    pyssh_channel *(*exec_open)(PyObject *session, const char *command, double timeout,
                                pyssh_error *err);
    /* A direct-tcpip channel (ssh -L): the server connects to host:port. */
    pyssh_channel *(*direct_tcpip_open)(PyObject *session, const char *host, int port,
                                        double timeout, pyssh_error *err);
    /* Write as much of buf as the peer's window takes now, waiting up to
     * `timeout` for it to open when it is shut. Returns the bytes written (>= 1;
     * call again for the rest), or -1 (PYSSH_E_TIMEOUT: the window stayed shut:
     * read the channel's output, then write again; a command that echoes stops
     * taking input while its output is not read). */
    ptrdiff_t (*channel_write)(pyssh_channel *ch, const void *buf, size_t len, double timeout,
                               pyssh_error *err);
    /* No more input from us (EOF). 0 or -1. */
    int (*channel_send_eof)(pyssh_channel *ch, double timeout, pyssh_error *err);
    /* Read what is there (stdout first, then stderr), waiting up to `timeout`
     * for something. Returns the byte count (> 0) with *stream set to
     * PYSSH_STDOUT or PYSSH_STDERR, 0 once both streams are at their end, or -1
     * (PYSSH_E_TIMEOUT: nothing came in time; call again to go on waiting).
     * Read both streams: a command whose unread stderr fills the window stops. */
    ptrdiff_t (*channel_read)(pyssh_channel *ch, void *buf, size_t len, int *stream, double timeout,
                              pyssh_error *err);
    /* After channel_read returned 0: the command's exit status (0-255), or
     * -signal number for a command killed by a signal. 0 and *status, or -1. */
    int (*channel_exit_status)(pyssh_channel *ch, int *status, double timeout, pyssh_error *err);
    /* Close the channel and free it (any thread, any time, NULL allowed; the
     * remote command gets EOF and the channel's close). */
    void (*channel_close)(pyssh_channel *ch);

    /* Stream the remote file `path` (a leading "~/" is the home) through SCP to
     * `sink`, in chunks as they arrive; *size (may be NULL) gets its size once
     * known. 0, or -1 (a missing file: PYSSH_E_SCP_NOT_FOUND; a directory:
     * PYSSH_E_SCP; a broken or hostile server: PYSSH_E_SCP_PROTOCOL). */
    int (*scp_read)(PyObject *session, const char *path, pyssh_sink_fn sink, void *ctx,
                    uint64_t *size, double timeout, pyssh_error *err);

    /* Raw libssh access (docs/capi.md says what it is for and its limits). Take the session's
     * lock WITHOUT the GIL (0, or -1 with PYSSH_E_CLOSED), then session_ssh gives
     * the ssh_session (NULL if closed); release with session_unlock. While you
     * hold it no other thread can use the session, and you must not call the
     * functions above on it. libssh's symbols are hidden inside pyssh:
     * libssh_symbol gives the address of a libssh function of pyssh's copy by
     * name (NULL for a name it does not offer), to be cast to the prototype of
     * libssh 0.11's headers; never link a libssh of your own. */
    int (*session_lock)(PyObject *session, pyssh_error *err);
    void *(*session_ssh)(PyObject *session);
    void (*session_unlock)(PyObject *session);
    void *(*libssh_symbol)(const char *name);
} PysshCAPI;

/* Import the C API (GIL held): the table, or NULL with ImportError set when
 * pyssh is missing or does not provide this version of the API. */
static inline const PysshCAPI *
pyssh_import_capi_version(unsigned int version, size_t size)
{
    const PysshCAPI *api = (const PysshCAPI *)PyCapsule_Import(PYSSH_CAPI_CAPSULE, 0);
    if (api == NULL) {
        return NULL;
    }
    if (api->version != version || api->size < size) {
        PyErr_Format(PyExc_ImportError,
                     "pyssh C API mismatch: this extension was built for version %u of "
                     "pyssh's C API (table of %zu bytes), but the installed pyssh %s "
                     "provides version %u (%u bytes): rebuild the extension against the "
                     "installed pyssh (its header is in pyssh.get_include())",
                     version, size, api->pyssh_version, api->version, api->size);
        return NULL;
    }
    return api;
}

#define pyssh_import_capi() pyssh_import_capi_version(PYSSH_CAPI_VERSION, sizeof(PysshCAPI))

#ifdef __cplusplus
}
#endif

#endif /* PYSSH_CAPI_H */
