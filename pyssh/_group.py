"""pyssh.Group: one command, upload or download on many hosts, from one process.

The engine: a few worker threads (one per core by default), each moving many
hosts' flows (connect, check the key, authenticate, run) from one ``poll()`` in C
(``_ssh.Driver``) with the GIL released; never a thread per host. A flow is the
blocking API's own code written as steps (pyssh/_tcp.py): it yields what it waits
for, and the worker hands it the outcome, so a Group connects and authenticates
exactly as ``pyssh.connect`` does (``~/.ssh/config``, known_hosts, the auth order).
SFTP uploads and downloads are flows too (the SFTP layer's own, pyssh/_sftp.py):
their requests and pipelined transfers are Ops in the same loops. Only resolving
host names runs on a small thread pool (8 threads, whatever the number of hosts):
getaddrinfo cannot be made non-blocking.
"""

from __future__ import annotations

import collections
import os
import re
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import (
    Any,
    Callable,
    Deque,
    Dict,
    Iterable,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Union,
)

from . import _exec, _ssh, session as _session
from ._tcp import Call as _Call, Steps, TCPConnect, tcp_steps as _tcp_steps
from .errors import SSHError

Host = Union[str, Tuple[str, Mapping[str, Any]]]
LineSink = Callable[[str, bytes], Any]
Progress = Union[None, bool, str, Callable[[int, int, int, int], Any]]

_CONNECT_DEFAULTS = _session.CONNECT_DEFAULTS


class GroupError(SSHError):
    """Some hosts of a Group failed (Python < 3.11; ExceptionGroup from 3.11 on):
    ``.exceptions`` lists them, each with ``.host`` set."""

    def __init__(self, message: str, exceptions: Sequence[BaseException]):
        super().__init__(message)
        self.exceptions = tuple(exceptions)


class GroupResult(Mapping[str, Any]):
    """What each host gave, in the group's order: its result, or the exception that
    stopped it (also set as the exception's ``.host``)."""

    def __init__(self, hosts: Sequence[str], values: Mapping[str, Any]):
        self._hosts = [h for h in hosts if h in values]
        self._values = dict(values)

    def __getitem__(self, host: str) -> Any:
        return self._values[host]

    def __iter__(self) -> Iterator[str]:
        return iter(self._hosts)

    def __len__(self) -> int:
        return len(self._hosts)

    @property
    def ok(self) -> Dict[str, Any]:
        """The hosts that succeeded, with their results."""
        return {h: v for h, v in self.items() if not isinstance(v, BaseException)}

    @property
    def failed(self) -> Dict[str, BaseException]:
        """The hosts that failed, with their exceptions."""
        return {h: v for h, v in self.items() if isinstance(v, BaseException)}

    def raise_for_failures(self) -> GroupResult:
        """Raise an ExceptionGroup (GroupError before Python 3.11) of the hosts'
        exceptions if any host failed; else return self."""
        failed = self.failed
        if not failed:
            return self
        excs = list(failed.values())
        msg = f"{len(failed)} of {len(self)} hosts failed: " + ", ".join(list(failed)[:10])
        if len(failed) > 10:
            msg += ", ..."
        plain = [e for e in excs if isinstance(e, Exception)]
        if sys.version_info >= (3, 11) and len(plain) == len(excs):
            raise ExceptionGroup(msg, plain)  # noqa: F821 (a builtin from 3.11 on)
        raise GroupError(msg, excs)

    def __repr__(self) -> str:
        return f"<GroupResult: {len(self.ok)} ok, {len(self.failed)} failed>"


# ---- the engine --------------------------------------------------------------------------------


class _Flow:
    """One host's generators, innermost last (a request's own steps go on top)."""

    def __init__(self, name: str, steps: Steps[Any]):
        self.name = name
        self.stack: List[Steps[Any]] = [steps]
        self.call: Optional[_Call] = None  # the pool call it waits for


class _Worker:
    """One thread's flows, moved from one Driver."""

    def __init__(self, engine: _Engine, cap: int):
        self.engine = engine
        self.cap = cap
        self.driver = _ssh.Driver()
        self.waiting: Dict[_ssh.Op, _Flow] = {}
        self.calls: Dict[Future[Any], _Flow] = {}
        self.ready: Deque[Future[Any]] = collections.deque()  # calls done (pool threads append)
        self.active = 0
        # set once the thread has given everything back; waited for instead of joining
        # the thread, because a join that Ctrl-C interrupts marks the thread finished
        # while it still runs (CPython 3.11), and the close would race its goodbyes
        self.finished = threading.Event()

    def run(self) -> None:
        _session.no_prompts.on = True  # many hosts, one terminal: never ask on it
        try:
            self.loop()
        except BaseException as e:  # a bug of the engine's: every unfinished host gets it
            self.engine.crashed(e)
        finally:
            try:
                self.abandon()
            finally:
                self.finished.set()

    def loop(self) -> None:
        e = self.engine
        while not e.cancelled:
            while self.active < self.cap:
                job = e.next_job()
                if job is None:
                    break
                self.active += 1
                self.advance(_Flow(job[0], job[1]), None, None)
            if self.active == 0:
                return
            for op in self.driver.wait(timeout=self.wait_timeout()):
                flow = self.waiting.pop(op)
                try:
                    value = op.result()
                except BaseException as exc:
                    self.advance(flow, None, exc)
                else:
                    self.advance(flow, value, None)
            self.take_calls()

    def wait_timeout(self) -> Optional[float]:
        """While a call with a deadline runs (resolving), look at it now and then."""
        timed = any(f.call is not None and f.call.deadline is not None for f in self.calls.values())
        return 0.1 if timed else None

    def take_calls(self) -> None:
        """Hand the flows their calls' outcomes, or a timeout past a call's deadline
        (the pool thread finishes on its own; what it returns is dropped)."""
        while self.ready:
            fut = self.ready.popleft()
            flow = self.calls.pop(fut, None)
            if flow is None:
                continue  # timed out already
            flow.call = None
            try:
                value = fut.result()
            except BaseException as exc:
                self.advance(flow, None, exc)
            else:
                self.advance(flow, value, None)
        for fut, flow in list(self.calls.items()):
            call = flow.call
            if call is not None and call.deadline is not None and call.deadline.expired():
                del self.calls[fut]
                flow.call = None
                self.advance(flow, None, call.late)

    def advance(self, flow: _Flow, value: Any, error: Optional[BaseException]) -> None:
        """Run the flow to what it waits for next, or to its end."""
        while True:
            top = flow.stack[-1]
            try:
                item = top.throw(error) if error is not None else top.send(value)
            except StopIteration as stop:
                flow.stack.pop()
                value, error = stop.value, None
                if not flow.stack:
                    return self.finish(flow, value)
                continue
            except BaseException as exc:
                flow.stack.pop()
                value, error = None, exc
                if not flow.stack:
                    return self.finish(flow, exc)
                continue
            value, error = None, None
            if isinstance(item, _ssh.Op):
                try:
                    self.driver.add(item)
                except Exception as exc:  # (no memory; an Op under way elsewhere): this host's
                    error = exc
                    continue
                self.waiting[item] = flow
                return None
            if isinstance(item, TCPConnect):
                flow.stack.append(_tcp_steps(item))
                continue
            if isinstance(item, _Call):
                self.submit(flow, item)
                return None
            error = TypeError(f"a flow yielded {item!r}")

    def submit(self, flow: _Flow, call: _Call) -> None:
        if call.deadline is not None and call.deadline.end is None:
            call.deadline = None
        flow.call = call
        fut = self.engine.pool(call.pool).submit(call.fn)
        self.calls[fut] = flow

        def done(f: Future[Any]) -> None:  # in the pool's thread
            self.ready.append(f)
            self.driver.wake()

        fut.add_done_callback(done)

    def finish(self, flow: _Flow, outcome: Any) -> None:
        self.active -= 1
        self.engine.record(flow.name, outcome)

    def abandon(self) -> None:
        """Cancelled (or crashed): give up the pending operations, then close the
        flows (their sessions close on the way out)."""
        self.driver.abandon()
        flows = list(self.waiting.values()) + list(self.calls.values())
        self.waiting.clear()
        self.calls.clear()
        for flow in flows:
            for gen in reversed(flow.stack):
                try:
                    gen.close()
                except BaseException:  # closing is best effort: the session closes below
                    pass
            self.engine.record(flow.name, self.engine.stop_reason())


class _Engine:
    """Runs one operation's flows on the workers; the caller's thread waits."""

    def __init__(self, group: Group, jobs: List[Tuple[str, Steps[Any]]]):
        self.group = group
        self.jobs: Deque[Tuple[str, Steps[Any]]] = collections.deque(jobs)
        self.total = len(jobs)
        self.results: Dict[str, Any] = {}
        self.lock = threading.Lock()
        self.cancelled = False
        self.reason: Optional[BaseException] = None
        n = max(1, min(group.workers, len(jobs)))
        cap = max(1, -(-group.max_parallel // n))
        self.workers = [_Worker(self, cap) for _ in range(n)]

    def next_job(self) -> Optional[Tuple[str, Steps[Any]]]:
        with self.lock:
            return self.jobs.popleft() if self.jobs else None

    def pool(self, name: str) -> ThreadPoolExecutor:
        return self.group.pool(name)

    def record(self, name: str, outcome: Any) -> None:
        if isinstance(outcome, BaseException):
            try:
                outcome.host = name  # type: ignore[attr-defined]
            except AttributeError:
                pass
        with self.lock:
            self.results.setdefault(name, outcome)

    def crashed(self, e: BaseException) -> None:
        self.reason = e
        self.cancel()

    def stop_reason(self) -> BaseException:
        return self.reason or SSHError("the group was stopped before this host finished")

    def cancel(self) -> None:
        self.cancelled = True
        for w in self.workers:
            w.driver.wake()

    def counts(self) -> Tuple[int, int, int]:
        with self.lock:
            failed = sum(isinstance(v, BaseException) for v in self.results.values())
            done = len(self.results) - failed
        running = sum(w.active for w in self.workers)
        return done, failed, running

    def run(self, report: Callable[[int, int, int, int], Any]) -> Dict[str, Any]:
        threads = [
            threading.Thread(target=w.run, name=f"pyssh-group-{i}", daemon=True)
            for i, w in enumerate(self.workers)
        ]
        for t in threads:
            t.start()
        try:
            for w in self.workers:
                while not w.finished.wait(0.1):
                    report(*self.counts(), self.total)
        except BaseException:
            self.cancel()
            for w in self.workers:
                w.finished.wait()
            raise
        finally:
            report(*self.counts(), self.total)
        if self.reason is not None:
            raise self.reason
        for name, _ in self.jobs:  # (none left unless a worker crashed)
            self.results.setdefault(name, self.stop_reason())
        return self.results


# ---- progress --------------------------------------------------------------------------------


def _reporter(progress: Progress) -> Tuple[Callable[[int, int, int, int], Any], Callable[[], None]]:
    """progress() calls, and what ends them."""
    if progress is None or progress is False:
        return (lambda *a: None), (lambda: None)
    if callable(progress):
        seen: List[Tuple[int, int, int]] = []

        def call(done: int, failed: int, running: int, total: int) -> None:
            if not seen or seen[-1] != (done, failed, running):
                seen[:] = [(done, failed, running)]
                progress(done, failed, running, total)

        return call, (lambda: None)
    if progress == "tqdm":
        from tqdm import tqdm  # type: ignore[import-not-found, import-untyped, unused-ignore]

        bar: Any = None

        def tick(done: int, failed: int, running: int, total: int) -> None:
            nonlocal bar
            if bar is None:
                bar = tqdm(total=total, unit="host")
            bar.set_postfix(failed=failed, running=running, refresh=False)
            bar.update(done + failed - bar.n)

        return tick, (lambda: bar.close() if bar is not None else None)
    if progress is True:
        last = [""]

        def line(done: int, failed: int, running: int, total: int) -> None:
            text = f"\r[pyssh] {done + failed}/{total} hosts: {failed} failed, {running} running"
            if text != last[0]:
                last[0] = text
                sys.stderr.write(text)
                sys.stderr.flush()

        return line, (lambda: (sys.stderr.write("\n"), sys.stderr.flush()) and None)
    raise TypeError(f"progress must be None, True, 'tqdm' or a callable, not {progress!r}")


# ---- output, a line at a time ----------------------------------------------------------------


class _Lines:
    """A host's stream cut into lines for `sink(host, line)` (the last one at the end)."""

    def __init__(self, host: str, sink: LineSink):
        self.host, self.sink, self.buf = host, sink, b""

    def __call__(self, chunk: bytes) -> None:
        data = self.buf + chunk
        *lines, self.buf = data.split(b"\n")
        for line in lines:
            self.sink(self.host, line + b"\n")

    def close(self) -> None:
        if self.buf:
            rest, self.buf = self.buf, b""
            self.sink(self.host, rest)


def _prefixed(stream: Any) -> LineSink:
    """Lines onto a text stream (sys.stdout at call time), each as "[host] line"."""
    lock = threading.Lock()

    def write(host: str, line: bytes) -> None:
        text = line.decode("utf-8", "replace")
        if not text.endswith("\n"):
            text += "\n"
        with lock:
            out = stream() if callable(stream) else stream
            out.write(f"[{host}] {text}")
            out.flush()

    return write


# ---- the Group ---------------------------------------------------------------------------------


def _safe_name(host: str) -> str:
    """A host's name as one directory name (downloads): no separator, no dot-only."""
    name = re.sub(r"[^A-Za-z0-9._@+-]", "_", host)
    return name if name.strip(".") else name.replace(".", "_") or "_"


class Group:
    """Many hosts, driven together (docs/group.md). ``hosts``: ``"user@host:port"``
    strings, or ``(host, connect_kwargs)`` pairs whose keywords win over the shared
    ``connect_kwargs`` (any of :func:`pyssh.connect`'s, and ``hostname``: where to
    connect, when ``host`` is only the name the results go by, as ssh_config's
    ``HostName``). Connections are made when
    first needed, ``max_parallel`` at a time, by ``workers`` threads (default: one per
    core), and kept for the next operation; a host whose connection failed is tried
    again by the next one. ``progress``: None, True (a line on stderr), ``"tqdm"``, or
    ``progress(done, failed, running, total)``, called from the calling thread."""

    def __init__(
        self,
        hosts: Iterable[Host],
        *,
        max_parallel: int = 256,
        workers: Optional[int] = None,
        progress: Progress = None,
        **connect_kwargs: Any,
    ):
        unknown = set(connect_kwargs) - set(_CONNECT_DEFAULTS)
        if unknown:
            raise TypeError(f"Group() got unexpected keyword arguments: {sorted(unknown)}")
        if not isinstance(max_parallel, int) or max_parallel < 1:
            raise ValueError(f"max_parallel must be a positive int, not {max_parallel!r}")
        if workers is not None and (not isinstance(workers, int) or workers < 1):
            raise ValueError(f"workers must be a positive int or None, not {workers!r}")
        self.max_parallel = max_parallel
        self.workers = workers or os.cpu_count() or 1
        self.progress = progress
        self._settings: Dict[str, Dict[str, Any]] = {}
        self._order: List[str] = []
        for h in hosts:
            name, kw = _host_entry(h)
            if name in self._settings:
                raise ValueError(f"the host {name!r} is listed twice")
            self._settings[name] = {**_CONNECT_DEFAULTS, **connect_kwargs, **kw}
            self._order.append(name)
        self._dirs = _dir_names(self._order)
        self._sessions: Dict[str, _session.Session] = {}
        self._pools: Dict[str, ThreadPoolExecutor] = {}
        self._closed = False
        self._lock = threading.Lock()

    @property
    def hosts(self) -> List[str]:
        return list(self._order)

    def __enter__(self) -> Group:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self._sessions)} connected"
        return f"<pyssh.Group of {len(self._order)} hosts, {state}>"

    def close(self) -> None:
        """Close every session (and the group's thread pools)."""
        self._closed = True
        with self._lock:
            sessions, self._sessions = list(self._sessions.values()), {}
            pools, self._pools = list(self._pools.values()), {}
        for s in sessions:
            s.close()
        for p in pools:
            p.shutdown(wait=False, cancel_futures=True)

    def pool(self, name: str) -> ThreadPoolExecutor:
        with self._lock:
            p = self._pools.get(name)
            if p is None:
                p = self._pools[name] = ThreadPoolExecutor(8, f"pyssh-group-{name}")
            return p

    # ---- operations

    def run(
        self,
        command: _exec.Command,
        *,
        timeout: Optional[float] = None,
        stdin: Optional[Union[bytes, str]] = None,
        check: bool = False,
        env: Optional[Mapping[str, str]] = None,
    ) -> GroupResult:
        """Run ``command`` on every host, capturing its output: a
        :class:`GroupResult` of :class:`ExecResult` (or the host's exception:
        ConnectError, AuthenticationError, HostKeyError, SSHTimeoutError, and
        CommandError for a non-zero status with ``check=True``). ``timeout``: as
        for :meth:`Session.exec_internal` (seconds without progress); a host
        connected by this call gets at most that long to connect too.
        ``stdin``: bytes (or str) sent to every host."""
        return self._each(
            lambda name, s: _command(s, command, True, None, None, stdin, timeout, env, check),
            timeout,
        )

    def exec_wait(
        self,
        command: _exec.Command,
        *,
        stdout: Optional[LineSink] = None,
        stderr: Optional[LineSink] = None,
        timeout: Optional[float] = None,
        stdin: Optional[Union[bytes, str]] = None,
        check: bool = False,
        env: Optional[Mapping[str, str]] = None,
    ) -> GroupResult:
        """Run ``command`` on every host, streaming its output as it comes, a line at
        a time: to ``stdout(host, line)`` / ``stderr(host, line)`` (bytes, with its
        newline), by default onto sys.stdout / sys.stderr as ``[host] line`` (as
        ``pssh -i`` and fabric print). Values: ExecResult without the output."""
        out = stdout or _prefixed(lambda: sys.stdout)
        err = stderr or _prefixed(lambda: sys.stderr)
        return self._each(
            lambda name, s: _command(s, command, False, out, err, stdin, timeout, env, check, name),
            timeout,
        )

    def upload(
        self,
        files: Any,
        to: str = ".",
        *,
        timeout: Optional[float] = None,
        preserve: bool = False,
    ) -> GroupResult:
        """SFTP-upload local ``files`` (directories recursively) into the remote
        directory ``to`` of every host. Values: the remote paths written."""

        def transfer(name: str, s: _session.Session) -> Steps[Any]:
            return (
                yield from s._sftp_upload_steps(
                    files, to, verbose=False, preserve=preserve, timeout=timeout
                )
            )

        return self._each(transfer, timeout)

    def download(
        self,
        files: Any,
        to: str = ".",
        *,
        timeout: Optional[float] = None,
        preserve: bool = False,
    ) -> GroupResult:
        """SFTP-download remote ``files`` (directories recursively) from every host,
        each into its own local directory ``to/<host>`` (the host's name made safe as
        a file name). Values: that directory."""
        os.makedirs(to, exist_ok=True)

        def transfer(name: str, s: _session.Session) -> Steps[Any]:
            local = os.path.join(to, self._dirs[name])
            os.makedirs(local, exist_ok=True)
            yield from s._sftp_download_steps(
                files, local, verbose=False, preserve=preserve, timeout=timeout
            )
            return local

        return self._each(transfer, timeout)

    # ---- the flows

    def _each(
        self, then: Callable[[str, _session.Session], Steps[Any]], timeout: Optional[float]
    ) -> GroupResult:
        if self._closed:
            raise SSHError("this Group is closed")
        if timeout is not None and (not isinstance(timeout, (int, float)) or timeout < 0):
            raise ValueError(f"timeout must be a non-negative number or None, not {timeout!r}")
        jobs = [(name, self._host_flow(name, then, timeout)) for name in self._order]
        report, end = _reporter(self.progress)
        engine = _Engine(self, jobs)
        try:
            results = engine.run(report)
        except BaseException:
            self.close()  # Ctrl-C: every session goes
            raise
        finally:
            end()
        return GroupResult(self._order, results)

    def _host_flow(
        self,
        name: str,
        then: Callable[[str, _session.Session], Steps[Any]],
        timeout: Optional[float],
    ) -> Steps[Any]:
        s = self._sessions.get(name)
        if s is None or s.closed:
            kw = dict(self._settings[name])
            if timeout is not None and (kw["timeout"] is None or kw["timeout"] > timeout):
                kw["timeout"] = timeout  # the operation's timeout bounds its connecting too
            s = yield from _session.connect_steps(kw.pop("hostname", None) or name, kw)
            with self._lock:
                if self._closed:
                    s.close()
                    raise SSHError("the group was closed")
                self._sessions[name] = s
        return (yield from then(name, s))


def _command(
    s: _session.Session,
    command: Any,
    capture: bool,
    out: Optional[LineSink],
    err: Optional[LineSink],
    stdin: Any,
    timeout: Optional[float],
    env: Optional[Mapping[str, str]],
    check: bool,
    name: str = "",
) -> Steps[_exec.ExecResult]:
    if capture:
        r = yield from _exec.run_flow(s, command, None, None, stdin, timeout, env, True)
    else:
        assert out is not None and err is not None
        lines = _Lines(name, out), _Lines(name, err)
        try:
            r = yield from _exec.run_flow(s, command, *lines, stdin, timeout, env, False)
        finally:
            lines[0].close()
            lines[1].close()
    if check and r.status != 0:
        raise _exec.command_error(r)
    return r


def _host_entry(h: Host) -> Tuple[str, Dict[str, Any]]:
    if isinstance(h, str):
        return h, {}
    if isinstance(h, tuple) and len(h) == 2 and isinstance(h[0], str):
        kw = dict(h[1])
        unknown = set(kw) - set(_CONNECT_DEFAULTS) - {"hostname"}
        if unknown:
            raise TypeError(f"the host {h[0]!r} has unexpected keywords: {sorted(unknown)}")
        return h[0], kw
    raise TypeError(f"a host is a str or a (str, dict) pair, not {h!r}")


def _dir_names(names: List[str]) -> Dict[str, str]:
    """Each host's download directory, unique even when names differ only in
    characters that are not safe in a file name."""
    out: Dict[str, str] = {}
    used: set[str] = set()
    for name in names:
        base = d = _safe_name(name)
        n = 1
        while d.lower() in used:
            n += 1
            d = f"{base}-{n}"
        used.add(d.lower())
        out[name] = d
    return out
