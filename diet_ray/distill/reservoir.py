"""A bounded random sample of the real rows a worker streams past, for the outer steps.

The continual pass reads the worker's shard once; the reservoir keeps a uniform sample of
its batches (reservoir sampling over batches, at most `capacity_rows` rows), so the outer
steps draw real batches without reading the stage again: memory O(capacity), not O(stage).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import torch

from diet_ray.data.batch import SparseBatch


class BatchReservoir:
    """Uniform reservoir of whole batches holding at most `capacity_rows` rows."""

    def __init__(self, capacity_rows: int, seed: int) -> None:
        self.capacity_rows = capacity_rows
        self.rng = np.random.default_rng(seed)
        self.batches: list[SparseBatch] = []
        self.seen = 0
        self.slots: int | None = None

    def add(self, batch: SparseBatch) -> None:
        if self.slots is None:
            self.slots = max(1, self.capacity_rows // max(len(batch), 1))
        self.seen += 1
        if len(self.batches) < self.slots:
            self.batches.append(batch)
        else:
            j = int(self.rng.integers(self.seen))
            if j < self.slots:
                self.batches[j] = batch

    def tap(self, batches: Iterable[SparseBatch]) -> Iterator[SparseBatch]:
        """Pass `batches` through unchanged, sampling them on the way."""
        for batch in batches:
            self.add(batch)
            yield batch

    def sampler(self, batch_size: int, seed: int) -> Iterator[SparseBatch]:
        """Endless random batches of `batch_size` rows (or all rows if fewer)."""
        rows = SparseBatch.concat(self.batches)
        g = torch.Generator().manual_seed(seed)
        size = min(batch_size, len(rows))
        while True:
            yield rows.select(torch.randperm(len(rows), generator=g)[:size])
