"""Vocabularies: count values in a first pass, then map values to ids in the second.

Id 0 is the OOV / padding bucket. A counted field gives ids 1..n to its values with at
least `min_count` occurrences, most frequent first (ties by value, so ids are
deterministic). A field whose distinct values exceed `max_vocab` while counting switches to
hashing into `hash_buckets` ids (1..hash_buckets-1) with a stable 64-bit hash.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc


class FieldCounter:
    """Streaming value counts for one field; gives up (and hashes) past `max_vocab` values."""

    def __init__(self, name: str, max_vocab: int, hashed: bool = False) -> None:
        self.name = name
        self.max_vocab = max_vocab
        self.hashed = hashed
        self.counts: Counter[str] = Counter()
        self.max_len = 1

    def add(self, column: pa.ChunkedArray | pa.Array) -> None:
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks()
        if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
            lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
            if len(lengths):
                self.max_len = max(self.max_len, int(np.nan_to_num(lengths.astype(float)).max()))
            column = pc.list_flatten(column)
        if self.hashed:
            return
        vc = pc.value_counts(column.drop_null().cast(pa.string()))
        for value, count in zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist()):
            self.counts[value] += count
        if len(self.counts) > self.max_vocab:
            self.hashed, self.counts = True, Counter()

    def vocabulary(self, min_count: int) -> list[str]:
        """Values given ids 1..n, in id order."""
        kept = [(v, c) for v, c in self.counts.items() if c >= min_count]
        kept.sort(key=lambda vc: (-vc[1], vc[0]))
        return [v for v, _ in kept]


class IdMapper:
    """Maps a string column to int64 ids with a vocabulary or a stable hash (0 = OOV/missing)."""

    def __init__(self, vocabulary: list[str] | None, hash_buckets: int) -> None:
        self.vocabulary = vocabulary
        self.hash_buckets = hash_buckets
        self._values = pa.array(vocabulary or [], pa.string())

    @property
    def vocab_size(self) -> int:
        return self.hash_buckets if self.vocabulary is None else len(self.vocabulary) + 1

    def __call__(self, column: pa.Array) -> np.ndarray:
        column = column.cast(pa.string())
        if self.vocabulary is None:
            values = column.to_numpy(zero_copy_only=False)
            present = ~pd.isna(values)
            ids = np.zeros(len(values), dtype=np.int64)
            if present.any():
                h = pd.util.hash_array(values[present].astype(object), categorize=False)
                ids[present] = (h % np.uint64(self.hash_buckets - 1)).astype(np.int64) + 1
            return ids
        index = pc.index_in(column, value_set=self._values)
        return pc.fill_null(pc.add(index, 1), 0).to_numpy(zero_copy_only=False).astype(np.int64)
