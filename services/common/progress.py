"""Progress for a person watching a terminal: a tqdm bar when the stream is a TTY, a plain
line now and then when it is not (a pipe, a CI log), so logs stay readable either way.

Progress goes to stderr by default: stdout carries a command's results and, in the
services, their JSON logs.
"""
from __future__ import annotations

import sys
import time
from typing import Callable, TextIO


def is_tty(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


class Progress:
    """``update(n, **postfix)`` as work gets done; ``close()`` at the end (or use ``with``).

    On a TTY a tqdm bar (``leave=False`` bars disappear when closed: for an inner loop);
    otherwise one line ``desc: n/total unit key=value ...`` at most every ``plain_every_s``
    seconds (0: at every update) and a last one on close. ``plain=False`` silences the
    non-TTY lines (an inner loop whose outer loop already reports).
    """

    def __init__(self, total: int | None, desc: str, unit: str = "it", *, stream: TextIO | None = None,
                 tty: bool | None = None, leave: bool = True, plain: bool = True, plain_every_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.n = 0
        self._stream = stream if stream is not None else sys.stderr
        self._plain = plain
        self._every = plain_every_s
        self._clock = clock
        self._last_line = clock()
        self._postfix: dict[str, object] = {}
        self._printed_at = -1
        self._bar = None
        if tty if tty is not None else is_tty(self._stream):
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, file=self._stream, leave=leave,
                             dynamic_ncols=True)

    def update(self, n: int = 1, **postfix: object) -> None:
        self.n += n
        if postfix:
            self._postfix.update(postfix)
        if self._bar is not None:
            if postfix:
                self._bar.set_postfix({k: _fmt(v) for k, v in self._postfix.items()}, refresh=False)
            self._bar.update(n)
            return
        now = self._clock()
        if self._plain and now - self._last_line >= self._every:
            self._line()
            self._last_line = now

    def write(self, line: str) -> None:
        """A line of its own, above the bar when there is one."""
        if self._bar is not None:
            self._bar.write(line, file=self._stream)
        else:
            print(line, file=self._stream, flush=True)

    def _line(self) -> None:
        of = f"/{self.total}" if self.total else ""
        extra = "".join(f" {k}={_fmt(v)}" for k, v in self._postfix.items())
        print(f"{self.desc}: {self.n}{of} {self.unit}{extra}", file=self._stream, flush=True)
        self._printed_at = self.n

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self._plain and self._printed_at != self.n:
            self._line()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _fmt(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
