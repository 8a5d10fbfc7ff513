"""Progress of long command-line jobs: a tqdm bar with rate and ETA on a terminal, plain
lines (at most one every `every` seconds, and one when done) when stderr is a file or a pipe."""

from __future__ import annotations

import sys
import time
from typing import IO


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60:02d}:{rest % 60:02d}"


class ProgressBar:
    """Call with (done, total[, text]); `total` may grow (e.g. while following a finding).

    Use as a context manager (the bar is closed on exit)."""

    def __init__(self, desc: str, unit: str = "it", stream: IO[str] | None = None,
                 every: float = 10.0, terminal: bool | None = None):
        self.desc, self.unit, self.every = desc, unit, every
        self.stream = stream if stream is not None else sys.stderr
        if terminal is None:
            isatty = getattr(self.stream, "isatty", None)
            terminal = bool(isatty and isatty())
        self.bar = None
        if terminal:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=0, desc=desc, unit=unit, file=self.stream, leave=False,
                            dynamic_ncols=True)
        self.t0 = time.perf_counter()
        self.last_line = self.t0
        self.done, self.total, self.text = 0, 0, ""

    def __call__(self, done: int, total: int, text: str = "") -> None:
        self.done, self.total, self.text = int(done), int(total), text
        if self.bar is not None:
            if self.bar.total != total:
                self.bar.total = total
            if text:
                self.bar.set_postfix_str(text, refresh=False)
            self.bar.update(self.done - self.bar.n)
            return
        now = time.perf_counter()
        if self.last_line is not None and now - self.last_line >= self.every:
            self._write(now)

    def _write(self, now: float) -> None:
        self.last_line = now
        self.stream.write(self.line(now) + "\n")
        self.stream.flush()

    def line(self, now: float | None = None) -> str:
        """"sampling: 120/200 steps (60%), 3.1 steps/s, 00:39 elapsed, ETA 00:26 - slices 3-9"."""
        elapsed = (now or time.perf_counter()) - self.t0
        rate = self.done / elapsed if elapsed > 0 else 0.0
        pct = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        eta = (f", ETA {_clock((self.total - self.done) / rate)}"
               if rate > 0 and self.total >= self.done else "")
        text = f" - {self.text}" if self.text else ""
        speed = f"{rate:.0f}" if rate >= 100 else f"{rate:.1f}" if rate >= 1 else f"{rate:.2f}"
        return (f"{self.desc}: {self.done}/{self.total} {self.unit}{pct}, {speed} "
                f"{self.unit}/s, {_clock(elapsed)} elapsed{eta}{text}")

    def close(self) -> None:
        """Close the bar, or write the last plain line (when anything was done)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elif self.done and self.last_line is not None:
            self._write(time.perf_counter())
        self.last_line = None  # closed: nothing more is written

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
