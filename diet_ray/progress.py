"""One small progress helper for long work: counts, rate and ETA through `logging`."""

from __future__ import annotations

import logging
import time

log = logging.getLogger("diet_ray")


class Progress:
    """Log `what` every `every_s` seconds: done, rate per second and ETA when `total` is known."""

    def __init__(self, what: str, total: int | None = None, unit: str = "rows", every_s: float = 5.0):
        self.what, self.total, self.unit, self.every_s = what, total, unit, every_s
        self.done = 0
        self.start = self.last = time.perf_counter()

    def update(self, n: int) -> None:
        self.done += n
        now = time.perf_counter()
        if now - self.last >= self.every_s:
            self.last = now
            log.info(self.line(now))

    def line(self, now: float | None = None) -> str:
        elapsed = max((now or time.perf_counter()) - self.start, 1e-9)
        rate = self.done / elapsed
        text = f"{self.what}: {self.done:,} {self.unit} ({rate:,.0f} {self.unit}/s"
        if self.total:
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            text += f", {100 * self.done / self.total:.0f}%, ETA {eta:,.0f}s"
        return text + ")"

    def finish(self) -> float:
        log.info(self.line() + " done")
        return time.perf_counter() - self.start
