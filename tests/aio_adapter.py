"""The blocking API's behaviour tests, run again through pyssh.aio (issue 22): an
AsyncSession presented with the blocking Session's method names and arguments.

Each call runs its coroutine to the end on the adapter's own event loop, in the
calling thread (``loop.run_until_complete``), as the blocking call runs in it: the
callbacks (``stdout=``, ``progress=``) are called in that thread, an exception comes
out of the call once the flow has unwound (channel closed, temporary file removed),
and ``timeout=`` is the operation's own inactivity timeout, measured by the flow in
the loop as the blocking API measures it. A loop thread (run_coroutine_threadsafe)
would move the callbacks to another thread and leave a timed-out wait's
cancellation racing the next call.

Only what pyssh.aio offers is here: exec_wait/exec_internal/run, sftp_upload/
sftp_download and scp_upload/scp_download (where AsyncSession has them: else the
test is skipped). A method
the blocking Session has and AsyncSession lacks raises AttributeError (a test that
uses it is blocking-only), and so does ``verbose=True``: printing ``[NN%]`` lines to
the terminal is the blocking API's alone.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import pyssh.aio


class AioSession:
    def __init__(self, aio: pyssh.aio.AsyncSession, loop: asyncio.AbstractEventLoop):
        self.aio = aio
        self.session = aio.session  # the blocking Session underneath
        self._loop = loop

    @classmethod
    def connect(cls, server: Any, **kwargs: Any) -> AioSession:
        """pyssh.aio.connect to the test sshd, with SSHServer.connect's defaults."""
        kwargs.setdefault("keyfile", server.client_key)
        kwargs.setdefault("known_hosts", server.known_hosts)
        kwargs.setdefault("config", False)
        kwargs.setdefault("timeout", 20)
        address = kwargs.pop("address", server.address)
        loop = asyncio.new_event_loop()
        try:
            aio = loop.run_until_complete(pyssh.aio.connect(address, **kwargs))
        except BaseException:
            loop.close()
            raise
        return cls(aio, loop)

    def _wait(self, coro: Any) -> Any:
        return self._loop.run_until_complete(coro)

    # ---- what pyssh.aio offers, with the blocking names and arguments
    def exec_wait(self, command: Any, **kw: Any) -> int:
        return self._wait(self.aio.exec_wait(command, **kw))

    def exec_internal(self, command: Any, **kw: Any) -> Any:
        return self._wait(self.aio.exec_internal(command, **kw))

    def run(self, command: Any, **kw: Any) -> Any:
        return self._wait(self.aio.run(command, **kw))

    def _transfer(self, method: str, files: Any, to: Any, verbose: bool, kw: Any) -> Any:
        if verbose:
            raise AttributeError(
                f"{method}(verbose=True): printing to the terminal is the blocking API's alone"
            )
        fn = getattr(self.aio, method, None)
        if fn is None:
            pytest.skip(f"pyssh.aio.AsyncSession has no {method} yet")
        return self._wait(fn(files, to, **kw))

    def sftp_upload(self, files: Any, to: Any = ".", *, verbose: bool = True, **kw: Any) -> Any:
        return self._transfer("sftp_upload", files, to, verbose, kw)

    def sftp_download(self, files: Any, to: Any = ".", *, verbose: bool = True, **kw: Any) -> Any:
        return self._transfer("sftp_download", files, to, verbose, kw)

    def scp_upload(self, files: Any, to: Any = ".", *, verbose: bool = True, **kw: Any) -> Any:
        return self._transfer("scp_upload", files, to, verbose, kw)

    def scp_download(self, files: Any, to: Any = ".", *, verbose: bool = True, **kw: Any) -> Any:
        return self._transfer("scp_download", files, to, verbose, kw)

    # ---- the rest
    def close(self) -> None:
        """The session closed (as Session.close); the loop stays for the calls a test
        makes on the closed session (SessionClosedError), until end()."""
        self.aio.close()

    def end(self) -> None:
        self.aio.close()
        if not self._loop.is_closed():
            self._loop.close()

    def __enter__(self) -> AioSession:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __getattr__(self, name: str) -> Any:
        """The blocking Session's properties (user, host, closed...); its methods
        that pyssh.aio does not offer are not here."""
        value = getattr(self.session, name)
        if callable(value):
            raise AttributeError(f"pyssh.aio.AsyncSession has no {name} (a blocking-only test?)")
        return value

    def __repr__(self) -> str:
        return f"<aio adapter {self.aio!r}>"
