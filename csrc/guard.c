/* What the server may ask of the client, in one place.
 *
 * A server can open channels towards the client (x11, forwarded-tcpip,
 * auth-agent@openssh.com, session, direct-tcpip, or any name) and send global
 * and channel requests. pyssh asks for none of that except forwarded-tcpip for
 * the ports its remote forwards listen on (forwarded-streamlocal@openssh.com
 * for their Unix socket paths), and auth-agent@openssh.com on a
 * session that forwards the agent (tunnel.c), so everything else is refused at
 * once: SSH_MSG_CHANNEL_OPEN_FAILURE (ADMINISTRATIVELY_PROHIBITED,
 * or UNKNOWN_CHANNEL_TYPE for a type libssh does not know), and for a request
 * that wants a reply SSH_MSG_REQUEST_FAILURE or SSH_MSG_CHANNEL_FAILURE
 * (RFC 4254 4, 5.1, 5.4). Nothing is queued: stock libssh kept every channel
 * open in the session's message list, unanswered, for as long as the session
 * lived (about 300 bytes each: 100,000 opens grew the client by 29 to 31 MiB), and
 * the server waited for an answer forever. A forwarded-tcpip open for a real
 * forward is handed to its tunnel, at most TUNNEL_BACKLOG waiting, and an agent
 * open to the agent's tunnel, at most AGENT_MAX at a time (tunnel.c).
 *
 * The callbacks run inside libssh, in whichever thread is reading the
 * session's socket, with the session lock held and without the GIL: they only
 * look at pyssh's own tables and queue log lines (pyssh_log_queue), which
 * reach the "pyssh" logger when that thread is back in Python.
 *
 * It needs pyssh's libssh patch (vendor/patches/...-client-requests.patch): a
 * client-only libssh neither runs these callbacks nor answers what no callback
 * took. Built against a libssh without it, the guard is not installed and
 * libssh behaves as it always did (tunnel.c then takes forwarded channels from
 * libssh's queue). */
#include "pyssh.h"

#include <stdarg.h>

/* Refusals logged per session, of channel opens and of requests each; later
 * ones are only counted, so that a flood costs no more than its answers. */
#define GUARD_LOG_MAX 50

#ifdef PYSSH_LIBSSH_CLIENT_REQUESTS

static SessionObject *
owner(void *userdata)
{
    return (SessionObject *)userdata;
}

/* Log one refusal (lock held), counted in *count: channel opens at INFO (a
 * server has no business opening them), requests at DEBUG (OpenSSH sends some
 * routinely: hostkeys-00@openssh.com after login, eow@openssh.com on a
 * channel), each kind with its own cap so that routine lines cannot hide the
 * others. */
static void
refused(SessionObject *s, unsigned long *count, const char *fmt, ...)
{
    int priority = count == &s->guard.opens ? SSH_LOG_PROTOCOL : SSH_LOG_PACKET;
    if (++*count > GUARD_LOG_MAX) {
        return;
    }
    char line[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    pyssh_log_queue(s, priority, "%s%s", line,
                    *count == GUARD_LOG_MAX
                        ? " (the last such line: further ones on this session are not logged)"
                        : "");
}

static ssh_channel
on_x11_open(ssh_session ssh, const char *originator, int originator_port, void *userdata)
{
    (void)ssh;
    SessionObject *s = owner(userdata);
    refused(s, &s->guard.opens,
            "refused an x11 channel the server opened (from %s:%d): "
            "pyssh asked for no X11 forwarding",
            originator ? originator : "?", originator_port);
    return NULL;
}

/* Taken only by a session that forwards the agent (connect's forward_agent):
 * OpenSSH's sshd opens one per client of the agent socket it made for a
 * command, and pyssh connects it to the local agent (tunnel.c). */
static ssh_channel
on_agent_open(ssh_session ssh, void *userdata)
{
    SessionObject *s = owner(userdata);
    const char *why = NULL;
    ssh_channel chan = pyssh_tunnel_agent(s, ssh, &why);
    if (chan == NULL) {
        refused(s, &s->guard.opens,
                "refused an auth-agent@openssh.com channel the server opened: %s", why);
    }
    return chan;
}

static ssh_channel
on_forwarded_open(ssh_session ssh, const char *dest, int dest_port, const char *orig, int orig_port,
                  void *userdata)
{
    SessionObject *s = owner(userdata);
    const char *why = NULL;
    ssh_channel chan = pyssh_tunnel_forwarded(s, ssh, dest_port, orig, orig_port, &why);
    if (chan == NULL) {
        refused(s, &s->guard.opens,
                "refused a forwarded-tcpip channel the server opened for "
                "%s:%d (from %s:%d): %s",
                dest ? dest : "?", dest_port, orig ? orig : "?", orig_port, why);
    }
    return chan;
}

#ifdef PYSSH_LIBSSH_STREAMLOCAL
/* Only for a socket path one of this session's remote forwards asked the
 * server to listen on (streamlocal-forward@openssh.com, pyssh's patch),
 * matched as forwarded-tcpip is to its port. */
static ssh_channel
on_streamlocal_open(ssh_session ssh, const char *path, void *userdata)
{
    SessionObject *s = owner(userdata);
    const char *why = NULL;
    ssh_channel chan = pyssh_tunnel_forwarded_unix(s, ssh, path, &why);
    if (chan == NULL) {
        refused(s, &s->guard.opens,
                "refused a forwarded-streamlocal@openssh.com channel the server opened "
                "for %.200s: %s",
                path ? path : "?", why);
    }
    return chan;
}
#endif

static const char *
open_type_name(int subtype)
{
    switch (subtype) {
    case SSH_CHANNEL_SESSION:
        return "session";
    case SSH_CHANNEL_DIRECT_TCPIP:
        return "direct-tcpip";
    case SSH_CHANNEL_FORWARDED_TCPIP:
        return "forwarded-tcpip";
    case SSH_CHANNEL_X11:
        return "x11";
    case SSH_CHANNEL_AUTH_AGENT:
        return "auth-agent@openssh.com";
#ifdef PYSSH_LIBSSH_STREAMLOCAL
    case SSH_CHANNEL_FORWARDED_STREAMLOCAL:
        return "forwarded-streamlocal@openssh.com";
#endif
    default:
        return "unknown";
    }
}

static const char *
global_name(int subtype)
{
    switch (subtype) {
    case SSH_GLOBAL_REQUEST_TCPIP_FORWARD:
        return "tcpip-forward";
    case SSH_GLOBAL_REQUEST_CANCEL_TCPIP_FORWARD:
        return "cancel-tcpip-forward";
    case SSH_GLOBAL_REQUEST_KEEPALIVE:
        return "keepalive@openssh.com";
    case SSH_GLOBAL_REQUEST_NO_MORE_SESSIONS:
        return "no-more-sessions@openssh.com";
    default:
        return "unknown (libssh's log at verbose=2 names it)";
    }
}

static const char *
chanreq_name(int subtype)
{
    switch (subtype) {
    case SSH_CHANNEL_REQUEST_PTY:
        return "pty-req";
    case SSH_CHANNEL_REQUEST_EXEC:
        return "exec";
    case SSH_CHANNEL_REQUEST_SHELL:
        return "shell";
    case SSH_CHANNEL_REQUEST_ENV:
        return "env";
    case SSH_CHANNEL_REQUEST_SUBSYSTEM:
        return "subsystem";
    case SSH_CHANNEL_REQUEST_WINDOW_CHANGE:
        return "window-change";
    case SSH_CHANNEL_REQUEST_X11:
        return "x11-req";
    default:
        return "unknown (libssh's log at verbose=2 names it)";
    }
}

/* Everything no callback above took: channel opens of the other types, global
 * requests, channel requests a client has no use for. Returning 1 has libssh
 * answer by default, which the patch made a refusal. */
static int
on_message(ssh_session ssh, ssh_message msg, void *userdata)
{
    (void)ssh;
    SessionObject *s = owner(userdata);
    pyssh_guard *g = &s->guard;
    int subtype = ssh_message_subtype(msg);
    switch (ssh_message_type(msg)) {
    case SSH_REQUEST_CHANNEL_OPEN:
        refused(s, &g->opens,
                "refused a channel of type %s the server opened: a client "
                "serves none",
                open_type_name(subtype));
        break;
    case SSH_REQUEST_GLOBAL:
        refused(s, &g->requests,
                "declined the server's global request %s (failure if it "
                "wanted a reply)",
                global_name(subtype));
        break;
    case SSH_REQUEST_CHANNEL:
        refused(s, &g->requests,
                "declined the server's channel request %s (failure if it "
                "wanted a reply): a client serves none",
                chanreq_name(subtype));
        break;
    default:
        refused(s, &g->requests, "declined a message of type %d from the server",
                ssh_message_type(msg));
    }
    return 1;
}

void
pyssh_guard_setup(SessionObject *self)
{
    pyssh_guard *g = &self->guard;
    ssh_callbacks_init(&g->cb);
    g->cb.userdata = self;
    g->cb.channel_open_request_x11_function = on_x11_open;
    g->cb.channel_open_request_auth_agent_function = on_agent_open;
    g->cb.channel_open_request_forwarded_tcpip_function = on_forwarded_open;
#ifdef PYSSH_LIBSSH_STREAMLOCAL
    g->cb.channel_open_request_forwarded_streamlocal_function = on_streamlocal_open;
#endif
    ssh_set_callbacks(self->ssh, &g->cb);
    ssh_set_message_callback(self->ssh, on_message, self);
}

#else /* PYSSH_LIBSSH_CLIENT_REQUESTS */

void
pyssh_guard_setup(SessionObject *self)
{
    (void)self; /* an unpatched libssh: nothing to hook (see above) */
}

#endif /* PYSSH_LIBSSH_CLIENT_REQUESTS */
