"""Sampling baselines at the memory's budget, read stage by stage (one stage in memory).

Each takes the prepared stream, the stages to draw from and the budget, and returns an
Arrow table of real prepared rows (collate it into a SparseBatch). The per-stage samples
take round(budget × stage rows) rows from each stage, exactly the memory's growth.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from diet_ray.data.schema import Schema
from diet_ray.data.stream import read_stage_table
from diet_ray.distill.distiller import seeded


def per_stage_count(budget: float, rows: int) -> int:
    return round(budget * rows)


def uniform_random(uri: str, schema: Schema, stages: range, budget: float, seed: int) -> pa.Table:
    """round(budget × rows_t) rows drawn uniformly from each stage t."""
    parts = []
    for t in stages:
        table = read_stage_table(uri, t, schema)
        rng = np.random.default_rng(seeded(seed, t, 20))
        n = per_stage_count(budget, table.num_rows)
        parts.append(table.take(pa.array(np.sort(rng.choice(table.num_rows, n, replace=False)))))
    return pa.concat_tables(parts)


def label_stratified(uri: str, schema: Schema, stages: range, budget: float,
                     seed: int) -> pa.Table:
    """Per stage, positives and negatives in the stage's proportion (largest remainder)."""
    from diet_ray.influence.selection import largest_remainder

    parts = []
    for t in stages:
        table = read_stage_table(uri, t, schema)
        labels = table.column("label").to_numpy() >= 0.5
        rng = np.random.default_rng(seeded(seed, t, 21))
        n = per_stage_count(budget, table.num_rows)
        quotas = largest_remainder(n, np.array([(~labels).sum(), labels.sum()]))
        picks = [rng.choice(np.flatnonzero(labels == bool(c)), int(q), replace=False)
                 for c, q in enumerate(quotas)]
        parts.append(table.take(pa.array(np.sort(np.concatenate(picks)))))
    return pa.concat_tables(parts)


def reservoir(uri: str, schema: Schema, stages: range, budget: float, seed: int) -> pa.Table:
    """A uniform sample of round(budget × rows) rows of the whole stream, kept by streaming
    reservoir sampling (Algorithm R), one stage in memory at a time."""
    size = per_stage_count(budget, sum(schema.stage(t).rows for t in stages))
    rng = np.random.default_rng(seeded(seed, 22))
    kept: pa.Table | None = None
    seen = 0
    for t in stages:
        table = read_stage_table(uri, t, schema)
        fill = max(0, min(size - seen, table.num_rows))
        head = table.slice(0, fill)
        kept = head if kept is None else pa.concat_tables([kept, head])
        index = np.arange(fill, table.num_rows)
        # stream row p = seen + i replaces slot j ~ U{0..p} when j < size; the last
        # replacement of a slot wins
        j = rng.integers(0, seen + index + 1)
        hit = j < size
        rows, slots = index[hit], j[hit]
        last = len(slots) - 1 - np.unique(slots[::-1], return_index=True)[1]
        rows, slots = rows[last], slots[last]
        if len(slots):
            keep = np.ones(kept.num_rows, bool)
            keep[slots] = False
            kept = pa.concat_tables([kept.filter(pa.array(keep)), table.take(pa.array(rows))])
        seen += table.num_rows
    return kept
