"""fastconv-bench's output: results on stdout, a progress line on stderr.

On a terminal both streams end up on the same screen. The progress line is redrawn in place
(``\\r``, erase to the end of the line) and carries no newline, so whatever is written to
stdout while it is shown would continue it: the header used to start right after
"measuring the FMA peaks ... ...". Here every stdout write goes through :meth:`Console.print`,
which erases the progress line first, and :meth:`Console.progress` flushes stdout before it
draws. A progress message is cut to the terminal's width, so it never wraps onto a second row
that ``\\r`` could not erase. When stderr is not a terminal, each progress message is a line
of its own.
"""
from __future__ import annotations

import os
import sys
from typing import Optional, TextIO

ERASE_LINE = "\r\033[K"  # to column 0, erase to the end of the line


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _columns(stream) -> int:
    """The terminal's width; COLUMNS or 80 where it is unknown (a pseudo-terminal may say 0)."""
    try:
        columns = os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, ValueError, OSError):
        columns = 0
    if columns <= 0:
        try:
            columns = int(os.environ.get("COLUMNS", ""))
        except ValueError:
            columns = 0
    return columns if columns > 0 else 80


class Console:
    """Results to ``out`` (stdout), progress to ``err`` (stderr), never on one line.

    ``live`` (default: whether ``err`` is a terminal) draws progress in place; ``columns``
    (default: the terminal's width) is where a progress message is cut.
    """

    def __init__(self, out: Optional[TextIO] = None, err: Optional[TextIO] = None,
                 live: Optional[bool] = None, columns: Optional[int] = None):
        self.out = sys.stdout if out is None else out
        self.err = sys.stderr if err is None else err
        self.live = _isatty(self.err) if live is None else live
        self.columns = columns
        self._shown = False  # a progress line is on the screen, the cursor at its end

    def progress(self, msg: str) -> None:
        if not self.live:
            self.err.write(msg + "\n")
            self.err.flush()
            return
        self.out.flush()  # stdout text first, then the progress line under it
        width = max(10, (self.columns or _columns(self.err)) - 1)
        if len(msg) > width:
            msg = msg[:width - 3] + "..."
        self.err.write(ERASE_LINE + msg)
        self.err.flush()
        self._shown = True

    def clear(self) -> None:
        """Erase the progress line, if one is shown."""
        if self._shown:
            self.err.write(ERASE_LINE)
            self.err.flush()
            self._shown = False

    def print(self, text: str = "") -> None:
        """Write ``text`` and a newline to stdout, on a line of its own."""
        self.clear()
        self.out.write(text + "\n")
        self.out.flush()

    def warn(self, text: str) -> None:
        """Write ``text`` and a newline to stderr, on a line of its own."""
        self.clear()
        self.err.write(text + "\n")
        self.err.flush()
