"""Peak memory of a process tree, sampled in a background thread.

With a local Ray started by this process, the GCS, the raylet and every Ray worker (Train
workers, scorer actors, the memory actor, Ray Data tasks) are descendants of it, so the
tree is the whole job. Each sample sums the processes' PSS (proportional set size: shared
pages, such as the object store's, are split between the processes mapping them, so the
sum does not count them twice); where PSS is unreadable it falls back to RSS.

PSS is not cheap: the kernel walks each process's page tables, about 0.25 s of CPU per
sample for a 2-worker job here (~30 processes of ~10 GB address space each). Hence one
sample every 2 s by default: a job's memory plateaus last seconds, and sampling every
0.5 s took a quarter of a 2-core machine away from the job it measured.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import psutil

if TYPE_CHECKING:
    from typing_extensions import Self


def tree_memory(root: psutil.Process) -> int:
    """Bytes held by `root` and its descendants now (sum of PSS, else RSS)."""
    total = 0
    for proc in [root, *root.children(recursive=True)]:
        try:
            info = proc.memory_full_info()
            total += getattr(info, "pss", info.rss)
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
        except psutil.AccessDenied:
            try:
                total += proc.memory_info().rss
            except psutil.Error:
                continue
    return total


@dataclass
class PeakMemory:
    """`with PeakMemory() as pm: ...` then `pm.peak_bytes` and `pm.samples` [(t_s, bytes)]."""

    every_s: float = 2.0
    peak_bytes: int = 0
    samples: list[tuple[float, int]] = field(default_factory=list)

    def __enter__(self) -> Self:
        self._stop = threading.Event()
        self._root = psutil.Process()
        self._start = time.perf_counter()
        self._thread = threading.Thread(target=self._run, name="peak-memory", daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        used = tree_memory(self._root)
        self.samples.append((time.perf_counter() - self._start, used))
        self.peak_bytes = max(self.peak_bytes, used)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.every_s)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
