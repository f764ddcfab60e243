"""What a transfer shows while it runs, for SCP and SFTP alike: ``verbose`` lines on
stderr and the ``progress(path, transferred, total)`` callable."""

from __future__ import annotations

import sys
from typing import Any, Callable, Optional

from ._names import printable

Progress = Callable[[str, int, int], Any]


class Reporter:
    """verbose printing and the progress callable."""

    def __init__(self, verbose: bool, progress: Optional[Progress], upload: bool):
        if progress is not None and not callable(progress):
            raise TypeError(
                "progress must be a callable progress(path, transferred, total) or None"
            )
        self.verbose = bool(verbose)
        self.progress = progress
        self.upload = upload
        self.line_open = False  # a [NN%] line is drawn, not ended yet

    def callback(self, path: str, total: int) -> Optional[Callable[[int], Any]]:
        if not self.verbose and self.progress is None:
            return None

        def report(moved: int) -> None:
            if moved >= total:
                return  # finished() reports the end
            if self.progress is not None:
                self.progress(path, moved, total)
            if self.verbose and self.upload:
                pct = 100 if total == 0 else moved * 100 // total
                self.line_open = True  # first: a Ctrl-C may land in the write
                sys.stderr.write(f"\r[{pct:3d}%] {printable(path)}")
                sys.stderr.flush()

        return report

    def finished(self, path: str, total: int) -> None:
        if self.progress is not None:
            self.progress(path, total, total)
        if self.verbose:
            if self.upload:
                sys.stderr.write(f"\r[100%] {printable(path)}\n")
            else:
                sys.stderr.write(f"{total:>10} {printable(path)}\n")
            sys.stderr.flush()
            self.line_open = False

    def stopped(self) -> None:
        """The transfer failed: end a [NN%] line left drawn, so that what is printed
        next (a traceback) starts on a line of its own."""
        if self.line_open:
            self.line_open = False
            sys.stderr.write("\n")
            sys.stderr.flush()
