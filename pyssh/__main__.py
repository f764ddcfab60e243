"""``python -m pyssh`` (the ``pyssh`` command): a small ``ssh``.

    pyssh [-A] [-p port] [-i identity]... [-J jump] [-L spec]... [-R spec]... [-D spec]
          [-l user] [-o Key=Value]... [-F config] [-t|-T] [-N] [-v] [-q]
          destination [command...]

Exit status as ssh's: the remote command's, 255 for an error (a message
"pyssh: ..." on stderr) or a command killed by a signal, 130 for Ctrl-C.
Options that pyssh.connect() has no argument for (-J, a second -i, most -o)
go into a configuration file written for this run, ahead of the user's own.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import tempfile
import threading
from typing import Any, Dict, Iterator, List, NoReturn, Optional, Tuple, Union

__all__ = ["main"]

ERROR = 255  # ssh's status for its own errors
INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C
USAGE = (
    "pyssh [-ANqTtv] [-D [bind_address:]port] [-F configfile] [-i identity_file]\n"
    "             [-J destination] [-L address] [-l login_name] [-o option] [-p port]\n"
    "             [-R address]\n"
    "             destination [command ...]"
)


class UsageError(ValueError):
    """A malformed option: a message, then exit 255."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(ERROR, f"pyssh: {message}\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="pyssh", usage=USAGE, description="A small ssh, on pyssh.")
    add = p.add_argument
    add("-p", dest="port", type=int, help="port to connect to on the remote host")
    add("-i", dest="identity", action="append", default=[], help="private key file")
    add("-J", dest="jump", help="jump hosts: [user@]host[:port][,...] (ProxyJump)")
    add("-L", dest="local", action="append", default=[], metavar="SPEC",
        help="local forward: [bind_address:]port:host:hostport; a local or remote "
             "end may be a Unix socket's path (/local.sock:/remote.sock, ...)")  # fmt: skip
    add("-R", dest="remote", action="append", default=[], metavar="SPEC",
        help="remote forward: [bind_address:]port:host:hostport; a remote or local "
             "end may be a Unix socket's path (/remote.sock:/local.sock, ...)")  # fmt: skip
    add("-D", dest="dynamic", action="append", default=[], metavar="SPEC",
        help="dynamic (SOCKS) forward: [bind_address:]port")  # fmt: skip
    add(
        "-A",
        dest="agent",
        action="store_true",
        help="forward the ssh-agent (connect's forward_agent)",
    )
    add("-l", dest="user", help="user to log in as")
    add("-o", dest="options", action="append", default=[], metavar="KEY=VALUE",
        help="an ssh_config option (StrictHostKeyChecking, UserKnownHostsFile, ...)")  # fmt: skip
    add("-F", dest="config", help="configuration file instead of ~/.ssh/config")
    tty = p.add_mutually_exclusive_group()
    tty.add_argument("-t", dest="tty", action="store_true", default=None, help="force a pty")
    tty.add_argument("-T", dest="tty", action="store_false", help="no pty")
    add("-N", dest="no_command", action="store_true", help="no command: forward ports only")
    add("-v", dest="verbose", action="count", default=0, help="verbose (repeat for more)")
    add("-q", dest="quiet", action="store_true", help="quiet: no warnings")
    add("destination", nargs="?", help="[user@]host[:port] or ssh://[user@]host[:port]")
    add("command", nargs=argparse.REMAINDER, help="command to run instead of a shell")
    return p


# ---- forwarding specs --------------------------------------------------------------------


def _fields(spec: str) -> List[str]:
    """`spec` split at the colons outside brackets (IPv6 addresses), brackets removed."""
    out, cur, inside = [], "", False
    for ch in spec:
        if ch == "[" and not inside:
            inside = True
        elif ch == "]" and inside:
            inside = False
        elif ch == ":" and not inside:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    return out


def _port(text: str, spec: str, option: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise UsageError(f"bad {option} spec {spec!r}: {text!r} is not a port")
    return int(text)


_FORWARD_FORMS = (
    "use [bind_address:]port:host:hostport, [bind_address:]port:/socket, "
    "/socket:host:hostport or /socket:/socket"
)


def _is_path(field: str) -> bool:
    """A Unix socket's path, as forward_local/forward_remote tell one from a port."""
    return field.startswith(("/", "./"))


def _listen(text: str, spec: str, option: str) -> Union[int, str]:
    return text if _is_path(text) else _port(text, spec, option)


def parse_forward(
    spec: str, option: str = "-L"
) -> Tuple[Optional[str], Union[int, str], str, Optional[int]]:
    """OpenSSH's -L/-R spec as (bind or None, port or listening socket's path,
    host or target socket's path, hostport or None for a path): the forms
    ``[bind_address:]port:host:hostport``, ``[bind_address:]port:/socket``,
    ``/socket:host:hostport`` and ``/socket:/socket``; IPv6 addresses in brackets.
    A path starts with "/" or "./" (for -L the first socket is local, for -R it
    is the server's)."""
    f = _fields(spec)
    paths = [_is_path(x) for x in f]
    bind: Optional[str] = None
    if len(f) == 2 and paths[1]:  # port:/socket or /socket:/socket
        return None, _listen(f[0], spec, option), f[1], None
    if len(f) == 3 and paths[2] and not paths[0]:  # bind:port:/socket
        return f[0], _port(f[1], spec, option), f[2], None
    if len(f) == 3:  # port:host:hostport or /socket:host:hostport
        f.insert(0, "")
    elif len(f) == 4 and not paths[0]:
        bind = f[0]
    else:
        raise UsageError(f"bad {option} spec {spec!r}: {_FORWARD_FORMS}")
    if not f[2] or _is_path(f[2]):
        raise UsageError(f"bad {option} spec {spec!r}: no host")
    return bind, _listen(f[1], spec, option), f[2], _port(f[3], spec, option)


def parse_dynamic(spec: str) -> Tuple[Optional[str], int]:
    """``-D [bind_address:]port`` as (bind or None, port)."""
    f = _fields(spec)
    if len(f) > 2:
        raise UsageError(f"bad -D spec {spec!r}: use [bind_address:]port")
    return (f[0] if len(f) == 2 else None), _port(f[-1], spec, "-D")


def _all_interfaces(bind: Optional[str]) -> bool:
    return bind is not None and bind in ("", "*")


# ---- what connect() gets ----------------------------------------------------------------


def parse_option(text: str) -> Tuple[str, str]:
    """``-o Key=Value`` or ``-o "Key Value"`` as (key in lower case, value)."""
    key, sep, value = text.partition("=")
    if not sep:
        key, _, value = text.strip().partition(" ")
    key, value = key.strip(), value.strip()
    if not key or not value:
        raise UsageError(f"bad -o option {text!r}: use -o Key=Value")
    return key.lower(), value


def _destination(text: str) -> str:
    if text.startswith("ssh://"):
        text = text[len("ssh://") :].rstrip("/")
    return text


def connect_arguments(args: argparse.Namespace) -> Tuple[str, Dict[str, Any], List[str]]:
    """(host, connect()'s keyword arguments, lines for the run's configuration file)."""
    kw: Dict[str, Any] = {"verbose": min(args.verbose + 1, 4) if args.verbose else 0}
    lines: List[str] = []
    opts = dict(parse_option(o) for o in args.options)
    if args.port is not None or "port" in opts:
        kw["port"] = args.port if args.port is not None else _port(opts["port"], "Port", "-o")
    if args.user or "user" in opts:
        kw["user"] = args.user or opts["user"]
    if args.identity:
        kw["keyfile"] = args.identity[0]
        lines += [f'IdentityFile "{p}"' for p in args.identity[1:]]
    if args.agent:
        kw["forward_agent"] = True
    if args.jump:
        lines.append(f"ProxyJump {args.jump}")
    if "userknownhostsfile" in opts:
        kw["known_hosts"] = opts["userknownhostsfile"].split()[0]
    if "connecttimeout" in opts:
        kw["timeout"] = float(opts["connecttimeout"])
    batch = opts.get("batchmode", "no").lower() == "yes"
    kw["host_key_policy"] = _host_key_policy(opts.get("stricthostkeychecking", "ask"), batch)
    if batch:
        kw["password"] = kw["passphrase"] = _no_prompt
    handled = {"port", "user", "userknownhostsfile", "connecttimeout", "batchmode"}
    handled.add("stricthostkeychecking")
    lines += [f"{k} {v}" for k, v in opts.items() if k not in handled]
    return _destination(args.destination), kw, lines


def _no_prompt(prompt: str) -> str:
    raise UsageError(f"BatchMode: no password or passphrase prompts ({prompt.strip()})")


def _host_key_policy(value: str, batch: bool) -> Any:
    v = value.lower()
    if v in ("yes", "true"):
        return "strict"
    if v == "accept-new":
        return "accept-new"
    if v in ("no", "off", "false"):
        return "ignore"  # as ssh's "no": even a changed key is accepted
    if v != "ask":
        raise UsageError(f"bad StrictHostKeyChecking {value!r}: yes, accept-new, no or ask")
    return "strict" if batch else ask_host_key


def ask_host_key(host: str, port: int, key_type: str, fingerprint: str) -> bool:
    """ssh's question for an unknown host key, on the terminal (/dev/tty); no
    terminal: refused, as ssh's batch mode does."""
    name = host if port == 22 else f"[{host}]:{port}"
    path = "/dev/tty" if os.name == "posix" else "CON"
    try:  # two files: a terminal cannot be opened "r+" in text mode (not seekable)
        tty, answers = open(path, "w", encoding="utf-8"), open(path, encoding="utf-8")
    except OSError:
        return False
    with tty, answers:
        tty.write(
            f"The authenticity of host '{name}' can't be established.\n"
            f"{key_type} key fingerprint is {fingerprint}.\n"
            f"Are you sure you want to continue connecting (yes/no/[fingerprint])? "
        )
        while True:
            tty.flush()
            line = answers.readline()
            answer = line.strip()
            if answer.lower() == "yes" or answer == fingerprint:
                tty.write(f"Warning: Permanently added '{name}' to the list of known hosts.\n")
                return True
            if answer.lower() == "no" or not line:
                return False
            tty.write("Please type 'yes', 'no' or the fingerprint: ")


@contextlib.contextmanager
def _config_file(lines: List[str], config: Optional[str]) -> Iterator[Union[bool, str]]:
    """connect()'s config=: the user's (-F, or the default files), or, when the
    command line adds lines, a file of them for this run that includes the user's
    after them (the first value wins in ssh_config, so the command line does)."""
    if config is not None and not os.path.isfile(config):
        raise UsageError(f"-F {config}: no such file")
    if not lines:
        yield True if config is None else config
        return
    if config is not None:
        includes = [config]
    else:
        user = os.path.join(os.path.expanduser("~"), ".ssh", "config")
        includes = [p for p in (user, "/etc/ssh/ssh_config") if os.path.isfile(p)]
    text = "\n".join(lines + [f'Include "{os.path.abspath(p)}"' for p in includes]) + "\n"
    fd, path = tempfile.mkstemp(prefix="pyssh-", suffix=".config")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        yield path
    finally:
        os.unlink(path)


# ---- the run -------------------------------------------------------------------------------


def _forwards(session: Any, args: argparse.Namespace) -> List[Any]:
    tunnels = []
    for spec in args.local:
        bind, port, host, hostport = parse_forward(spec, "-L")
        where = "0.0.0.0" if _all_interfaces(bind) else (bind or "127.0.0.1")
        tunnels.append(session.forward_local(port, _target(host, hostport), bind=where))
    for spec in args.remote:
        bind, port, host, hostport = parse_forward(spec, "-R")
        where = "" if _all_interfaces(bind) else (bind or "localhost")
        t = session.forward_remote(port, _target(host, hostport), bind_address=where)
        if port == 0 and not args.quiet:
            shown = host if hostport is None else f"{host}:{hostport}"
            print(f"Allocated port {t.port} for remote forward to {shown}", file=sys.stderr)
        tunnels.append(t)
    for spec in args.dynamic:
        bind, port = parse_dynamic(spec)
        where = "0.0.0.0" if _all_interfaces(bind) else (bind or "127.0.0.1")
        tunnels.append(session.forward_dynamic(port, bind=where))
    return tunnels


def _target(host: str, hostport: Optional[int]) -> Union[str, Tuple[str, int]]:
    """forward_local/forward_remote's target: (host, port), or a socket's path."""
    return host if hostport is None else (host, hostport)


def _wait(session: Any, tunnels: List[Any]) -> int:
    """-N: until Ctrl-C, the connection's end or a tunnel's failure."""
    idle = threading.Event()
    while session.connected and all(t.active for t in tunnels):
        idle.wait(0.5)  # a check twice a second: nothing here can wake it sooner
    failed = [t.error for t in tunnels if t.error is not None]
    if failed:
        raise failed[0]
    return 0 if session.connected else ERROR


def _run(args: argparse.Namespace) -> int:
    for spec in args.dynamic:
        parse_dynamic(spec)
    for spec in args.local:
        parse_forward(spec, "-L")
    for spec in args.remote:
        parse_forward(spec, "-R")
    command = " ".join(args.command) if args.command else None
    if command is not None and args.no_command:
        raise UsageError("-N means no command, but a command was given")
    host, kw, lines = connect_arguments(args)
    _set_up_logging(args)
    import pyssh

    with _config_file(lines, args.config) as config:
        session = pyssh.connect(host, config=config, **kw)
    with session:
        tunnels = _forwards(session, args)
        if args.no_command:
            return _wait(session, tunnels)
        pty = args.tty if args.tty is not None else (None if command is None else False)
        status = _interactive(session, command, pty)
    if (pty or (pty is None and os.isatty(0))) and not args.quiet:
        print(f"Connection to {session.host} closed.", file=sys.stderr)
    return ERROR if status < 0 else status


def _interactive(session: Any, command: Optional[str], pty: Optional[bool]) -> int:
    if os.name != "posix" and command is not None:
        return int(session.exec_wait(command))  # Windows: no terminal to attach
    return int(session.interactive(command, pty=pty))


def _set_up_logging(args: argparse.Namespace) -> None:
    log = logging.getLogger("pyssh")
    if args.quiet:
        log.setLevel(logging.CRITICAL)
    elif not args.verbose and not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("pyssh: %(message)s"))
        handler.setLevel(logging.WARNING)
        log.addHandler(handler)


def _hint(e: BaseException) -> str:
    from .errors import UnknownHostKeyError

    if isinstance(e, UnknownHostKeyError):
        return (
            "\npyssh: to accept the key, answer 'yes' on a terminal, or add "
            "-o StrictHostKeyChecking=accept-new"
        )
    return ""


def _open_std_fds() -> None:
    """Descriptors 0, 1 and 2 on /dev/null where they are closed, as OpenSSH's
    sanitise_stdfd does: else the connection could get one, and be written to as
    stdout or read as stdin."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            os.open(os.devnull, os.O_RDWR)  # the lowest free descriptor: this one


def main(argv: Optional[List[str]] = None) -> int:
    """The command line; returns the exit status."""
    _open_std_fds()
    parser = _parser()
    args = parser.parse_args(argv)
    if args.destination is None:
        parser.error("no destination: pyssh [options] [user@]host[:port] [command ...]")
    try:
        return _run(args)
    except KeyboardInterrupt:
        return INTERRUPTED
    except BrokenPipeError:  # our stdout went away (`| head`): ssh dies of SIGPIPE quietly
        return ERROR
    except (OSError, ValueError, TypeError, NotImplementedError) as e:
        print(f"pyssh: {e}{_hint(e)}", file=sys.stderr)
        return ERROR


if __name__ == "__main__":
    sys.exit(main())
