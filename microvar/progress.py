"""Progress on stderr: a tqdm bar on a terminal; elsewhere (a log file, CI, a cluster job),
where a bar is a smear of carriage returns, a plain line every ``EVERY`` seconds with the
count, the rate and the time left, so a long run is not silent until its summary."""

from __future__ import annotations

import sys
import time

from tqdm.auto import tqdm

EVERY = 30.0   # seconds between progress lines when stderr is not a terminal


def progress(total: int, *, initial: int = 0, desc: str, unit: str, enabled: bool = True):
    """A bar (terminal), a ``LineProgress`` (not a terminal) or a silent bar (not enabled),
    each with ``update(n)`` and ``close()``."""
    if enabled and not sys.stderr.isatty():
        return LineProgress(total, initial=initial, desc=desc, unit=unit)
    return tqdm(total=total, initial=initial, unit=unit, leave=False, desc=desc, disable=not enabled)


def tracked(items: list, *, desc: str, unit: str, enabled: bool = True):
    """Each of ``items``, with progress counted as each one is done."""
    bar = progress(len(items), desc=desc, unit=unit, enabled=enabled)
    for x in items:
        yield x
        bar.update(1)
    bar.close()


class LineProgress:
    def __init__(self, total: int, *, initial: int = 0, desc: str, unit: str, every: float | None = None,
                 clock=time.monotonic) -> None:
        self.total, self.n, self.initial, self.desc, self.unit = total, initial, initial, desc, unit
        self.every = EVERY if every is None else every
        self.clock = clock
        self.start = self.last = clock()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = self.clock()
        if now - self.last >= self.every and self.n < self.total:
            self.last = now
            print(self.line(now), file=sys.stderr, flush=True)

    def line(self, now: float) -> str:
        """``expanding: 10/14 seeds (71%), 2.5 seeds/min, about 1 min 36 s left``"""
        done, elapsed = self.n - self.initial, now - self.start
        per_min = 60 * done / elapsed if elapsed > 0 else 0.0
        left = f"about {_duration(60 * (self.total - self.n) / per_min)} left" if per_min else "time left unknown"
        share = 100 * self.n / self.total if self.total else 100.0
        rate = f"{per_min:.3g}" if per_min < 100 else f"{per_min:.0f}"
        return f"{self.desc}: {self.n}/{self.total} {self.unit}s ({share:.0f}%), {rate} {self.unit}s/min, {left}"

    def close(self) -> None:
        pass


def _duration(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h} h {m} min" if h else f"{m} min {s} s" if m else f"{s} s"
