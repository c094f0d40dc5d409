"""Progress lines for the logs: done / total, rate and ETA, at most every ``period`` seconds.

The rules run every stage with its output in a log file (no progress bar), so long loops (training
iterations, predicted images) log ``<what> 120/500 (24%), 1.9 it/s, elapsed 1:03, ETA 3:20``.
"""
from __future__ import annotations

import logging
import time


def clock(seconds: float) -> str:
    """``h:mm:ss`` (or ``m:ss`` under an hour) of a duration in seconds."""
    s = max(0, int(round(seconds)))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class ProgressLog:
    """Logs progress of a loop of ``total`` steps (``unit`` per step) every ``period`` seconds,
    on the first update and on the last; ``start`` steps were done before (a resumed run)."""

    def __init__(self, logger: logging.Logger, what: str, total: int, unit: str = "it", period: float = 30.0,
                 start: int = 0, now=time.perf_counter) -> None:
        self.logger, self.what, self.total, self.unit, self.period = logger, what, int(total), unit, float(period)
        self.start = self.done = int(start)
        self._now = now
        self.t0 = self._last = now()
        self._logged_once = False

    def line(self, extra: str = "") -> str:
        """The progress line for the current state."""
        elapsed = self._now() - self.t0
        steps = self.done - self.start
        rate = steps / elapsed if elapsed > 0 else 0.0
        left = self.total - self.done
        eta = clock(left / rate) if rate > 0 else "?"
        pct = 100.0 * self.done / self.total if self.total else 100.0
        speed = f"{rate:.2f} {self.unit}/s" if rate >= 1 or rate == 0 else f"{1 / rate:.2f} s/{self.unit}"
        text = f"{self.what} {self.done}/{self.total} ({pct:.0f}%), {speed}, elapsed {clock(elapsed)}, ETA {eta}"
        return f"{text}; {extra}" if extra else text

    def update(self, n: int = 1, extra: str = "") -> bool:
        """Count ``n`` more steps; log when due. Returns whether a line was logged."""
        self.done += int(n)
        t = self._now()
        if self._logged_once and t - self._last < self.period and self.done < self.total:
            return False
        self._logged_once = True
        self._last = t
        self.logger.info("%s", self.line(extra))
        return True
