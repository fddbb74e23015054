"""Scoring one stage: probe, keys, strata, then the Ray Data actor pool and the merge.

    probe rows (a sample of the stage's newest shard) -> probe gradients per checkpoint
    -> probe keys -> k-means centroids -> per-stratum quotas
    -> the stage's shards . map_batches(scorer, actor pool) -> StratifiedTopM

`ScoringStream` (scoring_stream.py) runs this for the stages of a run on one pipeline;
`score_stage_local` runs it in-process on an Arrow table (tests, tiny data).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch
from torch import nn

from diet_ray.config import DistillConfig
from diet_ray.data.batch import collate
from diet_ray.data.schema import Schema
from diet_ray.distill.distiller import seeded
from diet_ray.distill.state import State, state_of
from diet_ray.influence.scorer import (
    InfluenceScorer,
    address_keys,
    last_linear,
    logits_and_hidden,
    probe_gradient,
    strata,
)
from diet_ray.influence.selection import StratifiedTopM, kmeans, stratum_quotas


@dataclass(frozen=True)
class ScoringSetup:
    """Everything the scorer actors need, computed once per stage on one process."""

    states: list[State]
    probes: list[np.ndarray]
    projection: np.ndarray
    centroids: np.ndarray
    quotas: np.ndarray


def setup_scoring(models: list[nn.Module], probe: pa.Table, schema: Schema,
                  cfg: DistillConfig, stage: int, candidates: int) -> ScoringSetup:
    """Probe gradients, key projection, centroids and quotas for `candidates` rows."""
    inf = cfg.influence
    batch = collate(probe, schema)
    probes = [probe_gradient(m, batch).numpy() for m in models]
    hidden = last_linear(models[-1]).in_features
    rng = np.random.default_rng(seeded(cfg.seed, 4))  # one projection for the whole run
    projection = rng.standard_normal((hidden, inf.key_dim)).astype(np.float32)
    _, h = logits_and_hidden(models[-1], batch)
    keys = address_keys(h.numpy(), projection)
    centroids = kmeans(keys, inf.clusters, seeded(cfg.seed, stage, 5))
    probe_strata = strata(batch.labels.numpy(), keys, centroids)
    rate = schema.stage(stage).positives / max(schema.stage(stage).rows, 1)
    quotas = stratum_quotas(candidates, rate, probe_strata, len(centroids))
    return ScoringSetup([state_of(m) for m in models], probes, projection, centroids, quotas)


def scorer_kwargs(setup: ScoringSetup, schema: Schema, cfg: DistillConfig, stage: int,
                  threads: int | None) -> dict:
    """The keyword arguments of stage `stage`'s `InfluenceScorer` (plain data); `threads`:
    the torch threads it sets in its process (None: leaves them as they are)."""
    return {
        "schema_json": schema.to_json(), "arch": cfg.continual.arch, "model_config": {},
        "states": setup.states, "probes": setup.probes, "projection": setup.projection,
        "centroids": setup.centroids, "quotas": setup.quotas,
        "rank_by": cfg.influence.rank_by, "seed": seeded(cfg.seed, stage, 6),
        "threads": threads, "batch_size": cfg.influence.batch_size,
    }


def candidate_count(cfg: DistillConfig, stage_rows: int) -> int:
    new = cfg.memory.budget * stage_rows
    return max(1, math.ceil(cfg.influence.candidate_factor * new))


def score_stage_local(table: pa.Table, schema: Schema, cfg: DistillConfig, stage: int,
                      models: list[nn.Module], probe: pa.Table) -> pa.Table:
    """The same scoring in-process over an Arrow table (no Ray)."""
    setup = setup_scoring(models, probe, schema, cfg, stage,
                          candidate_count(cfg, table.num_rows))
    with torch.no_grad():  # the scorer runs its forward passes influence.batch_size rows at a time
        scorer = InfluenceScorer(**scorer_kwargs(setup, schema, cfg, stage, cfg.threads))
        selection = StratifiedTopM(setup.quotas)
        selection.add(scorer(table).drop_columns(["_node"]))
    return selection.result()
