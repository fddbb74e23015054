"""Scoring one stage: probe, keys, strata, then the Ray Data actor pool and the merge.

    probe rows (a sample of the stage's newest shard) -> probe gradients per checkpoint
    -> probe keys -> k-means centroids -> per-stratum quotas
    -> read_parquet(stage) . map_batches(InfluenceScorer, actor pool) -> StratifiedTopM

`score_stage_local` runs the same scorer in-process on an Arrow table (tests, tiny data).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch
from torch import nn

from diet_ray.config import DistillConfig
from diet_ray.data.batch import collate
from diet_ray.data.schema import Schema
from diet_ray.data.stream import read_stages, sample_stage_rows
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
                  states: list) -> dict:
    return {
        "schema_json": schema.to_json(), "arch": cfg.continual.arch, "model_config": {},
        "states": states, "probes": setup.probes, "projection": setup.projection,
        "centroids": setup.centroids, "quotas": setup.quotas,
        "rank_by": cfg.influence.rank_by, "seed": seeded(cfg.seed, stage, 6),
        "threads": cfg.threads,
    }


def candidate_count(cfg: DistillConfig, stage_rows: int) -> int:
    new = cfg.memory.budget * stage_rows
    return max(1, math.ceil(cfg.influence.candidate_factor * new))


def score_stage(data_uri: str, schema: Schema, cfg: DistillConfig, stage: int,
                models: list[nn.Module]) -> tuple[pa.Table, dict]:
    """Score stage `stage` on a Ray Data actor pool; return (candidates, stats), the stats
    with rows/s and the ids of the nodes the scorers ran on."""
    import ray
    import ray.data

    start = time.perf_counter()
    rows = schema.stage(stage).rows
    probe = sample_stage_rows(data_uri, schema, stage, cfg.influence.probe_rows,
                              seeded(cfg.seed, stage, 7))
    setup = setup_scoring(models, probe, schema, cfg, stage, candidate_count(cfg, rows))
    states_ref = ray.put(setup.states)  # broadcast the checkpoints once per stage
    inf = cfg.influence
    stream = read_stages(data_uri, stage, schema)
    stream.context.target_max_block_size = int(inf.block_mb * 2**20)  # this dataset only
    scored = stream.map_batches(
        InfluenceScorer,
        fn_constructor_kwargs=scorer_kwargs(setup, schema, cfg, stage, [states_ref]),
        batch_size=inf.batch_size, batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=inf.num_scorers), num_cpus=inf.scorer_cpus,
        **({"scheduling_strategy": "SPREAD"} if inf.scheduling == "SPREAD" else {}),
    )
    selection, nodes, first = StratifiedTopM(setup.quotas), set(), None
    for batch in scored.iter_batches(batch_format="pyarrow", batch_size=None):
        first = first or time.perf_counter()
        selection.add(without_node(batch, nodes))
    seconds = time.perf_counter() - start
    return selection.result(), {"scored_rows": rows, "scoring_seconds": seconds,
                                "scored_rows_per_s": rows / max(seconds, 1e-9),
                                # setup, pipeline start and the first block's scoring
                                "scoring_first_output_s": (first or start) - start,
                                "scorer_nodes": sorted(nodes)}


def without_node(batch: pa.Table, nodes: set[str]) -> pa.Table:
    """Drop the scorer's `_node` column, adding its values to `nodes`."""
    nodes.update(batch.column("_node").unique().to_pylist())
    return batch.drop_columns(["_node"])


def score_stage_local(table: pa.Table, schema: Schema, cfg: DistillConfig, stage: int,
                      models: list[nn.Module], probe: pa.Table) -> pa.Table:
    """The same scoring in-process over an Arrow table (no Ray)."""
    setup = setup_scoring(models, probe, schema, cfg, stage,
                          candidate_count(cfg, table.num_rows))
    with torch.no_grad():
        scorer = InfluenceScorer(**scorer_kwargs(setup, schema, cfg, stage, setup.states))
        selection = StratifiedTopM(setup.quotas)
        for start in range(0, table.num_rows, cfg.influence.batch_size):
            selection.add(without_node(scorer(table.slice(start, cfg.influence.batch_size)),
                                       set()))
    return selection.result()
