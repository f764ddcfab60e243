"""ProxyJump chains: which jump hosts, and the bridge from one hop to the next.

pyssh builds the chain itself, from pieces it has: each jump host is a Session of
its own, connected by the same code as a direct connection (its own config
lookup, host key check and authentication); the next hop is reached through a
``direct-tcpip`` channel of that session. libssh needs a socket for the next
session, so the channel is bridged to one end of a socketpair by a tunnel
(``_ssh.Tunnel.adopt_local``: the C code of local forwards), and the next
session gets the other end. No thread runs that tunnel: it is the next
session's carrier (``Session._carry``), whose waits move it a step at a time
with their own, outermost hop first, from the same poll() (csrc/wait.c).
"""

from __future__ import annotations

import socket
from typing import Any, List, Optional

from . import _ssh

MAX_HOPS = _ssh.MAX_HOPS  # the waits walk at most this many jump hosts


def parse(value: Any) -> Optional[List[str]]:
    """jump=: None (the config's ProxyJump), "none" (no jump host), or the jump
    hosts, first first: a comma-separated str or a list of str, each
    ``[user@]host[:port]``."""
    from .session import parse_host  # session imports this module

    if value is None:
        return None
    if isinstance(value, str):
        if value.strip().lower() == "none":
            return []
        items = value.split(",")
    elif isinstance(value, (list, tuple)) and all(isinstance(x, str) for x in value):
        items = list(value)
    else:
        raise TypeError(
            f'jump must be "none", a comma-separated str or a list of "[user@]host[:port]" '
            f"str, not {type(value).__name__}"
        )
    hops = [x.strip() for x in items]
    if not hops:
        raise ValueError('jump must name at least one host (or be "none")')
    if len(hops) > MAX_HOPS:
        raise ValueError(f"jump names {len(hops)} hosts: at most {MAX_HOPS} jump hosts")
    for h in hops:
        if not h:
            raise ValueError(f"jump has an empty host name: {value!r}")
        parse_host(h)  # raises ValueError naming what is wrong
    return hops


def from_config(opts: Any) -> List[str]:
    """The target's ProxyJump from the ssh configuration ([] for none)."""
    value = opts.get("proxyjump", ["none"])[0]
    if value.strip().lower() == "none":
        return []
    hops = [x.strip() for x in value.split(",") if x.strip()]
    if len(hops) > MAX_HOPS:
        raise ValueError(f"ProxyJump names {len(hops)} hosts: at most {MAX_HOPS} jump hosts")
    return hops


def bridge(hop: Any, target: Any, host: str, port: int) -> socket.socket:
    """A socket for the session `target` whose bytes go to host:port through a
    direct-tcpip channel of the session `hop`, moved by `target`'s waits (its
    carrier); closed by `target`'s close."""
    mine, theirs = socket.socketpair()
    try:
        c = _ssh.Tunnel(hop)
    except BaseException:
        mine.close()
        theirs.close()
        raise
    try:
        c.adopt_local(theirs.detach(), host, port)  # owned by the tunnel, even on failure
        target._carry(c)
    except BaseException:
        mine.close()
        raise
    return mine
