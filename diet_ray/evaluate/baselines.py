"""Baselines at the memory's budget, read stage by stage (one stage in memory).

Each takes the prepared stream, the stages to draw from (a prefix 0..T-1 for the distilled
ones), the budget and a seed.

Samples of real rows return an Arrow table of prepared rows (collate it into a
SparseBatch) holding round(budget × rows_t) rows of each stage t, exactly the memory's
growth (`reservoir`: round(budget × all rows) of the whole stream):

- `uniform_random`, `label_stratified`, `reservoir`: no model involved;
- `influence_topk`: the rows with the highest TracIn score of the continual model;
- `kcenter`: a k-center coreset of the scorer's address keys;
- `teacher_labels`: the label-stratified sample with the final continual model's soft labels.

Distilled memories return `Slots` (see `memory_batch` for the SparseBatch), as many as the
per-stage samples hold rows:

- `diet`: `distill_local` with the job's config; `diet_no_addressing`,
  `diet_random_init`: its ablations through config overrides;
- `static_distill`: one-shot distillation of the whole history by the same code.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import nn

from diet_ray.config import DistillConfig, apply_overrides, config_from_dict
from diet_ray.data.batch import SparseBatch, collate
from diet_ray.data.fs import join, open_fs, write_bytes
from diet_ray.data.schema import SCHEMA_FILE, Schema, StageInfo, stage_dir
from diet_ray.data.stream import read_stage_table, sample_stage_rows
from diet_ray.distill.distiller import Distiller, seeded
from diet_ray.distill.local import distill_local, scoring_models, shuffled
from diet_ray.distill.write import empty_state
from diet_ray.influence.scorer import address_keys, influence_scores
from diet_ray.influence.stage import candidate_count, setup_scoring
from diet_ray.memory.slots import MemoryTensors, Slots


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


# -- baselines that need the continual model ------------------------------------------------------
#
# `influence_topk`, `kcenter` and `teacher_labels` follow the continual model of the
# distillation job: a DNN (`continual.arch`) trained one pass per stage, in stage order, with
# the same seeded initialisation and within-stage shuffles as `distill_local`, so its
# trajectory is the one DIET's memory follows. Stage t is scored with the checkpoints taken
# *before* training on t (the last `influence.checkpoints` ones; the seeded init at stage 0),
# exactly as the job scores it. Selection time therefore includes the continual passes.


class ContinualTrajectory:
    """The continual model stage by stage, run in-process with the distiller's own code
    (`Distiller.continual_pass`, no slots, no outer steps)."""

    def __init__(self, schema: Schema, cfg: DistillConfig) -> None:
        self.schema, self.cfg = schema, cfg
        self.state = empty_state(cfg, schema)

    def scoring_models(self) -> list[nn.Module]:
        """The checkpoints stage t is scored with (before training on t), oldest first."""
        return scoring_models(self.cfg, self.schema, self.state)

    def advance(self, stage: int, table: pa.Table) -> None:
        """One continual pass over `table` (stage `stage`), seeded as `distill_local`."""
        d = Distiller(self.cfg, self.schema, self.state, stage, np.zeros(0, np.int64),
                      np.zeros(0, np.int64))
        rows = collate(table, self.schema)
        bs = self.cfg.continual.batch_size
        d.continual_pass(shuffled(rows, bs, seeded(self.cfg.seed, stage, 8)), len(rows) // bs)
        self.state = d.result(table.num_rows)

    def model(self) -> nn.Module:
        """The newest continual model (the seeded init before any stage), in eval mode."""
        return self.scoring_models()[-1]


@dataclass(frozen=True)
class ScoredStage:
    """Every row of a stage through the DIET scorer: TracIn score, alignment, the newest
    checkpoint's probability and the address key, each [N] or [N, key_dim]."""

    score: np.ndarray
    alignment: np.ndarray
    prob: np.ndarray
    keys: np.ndarray


def score_all_rows(uri: str, schema: Schema, cfg: DistillConfig, stage: int, table: pa.Table,
                   models: list[nn.Module]) -> ScoredStage:
    """The scorer of `score_stage_local` (same probe sample, probe gradients and key
    projection) applied to every row of `table`, without the per-stratum top-m cut."""
    probe = sample_stage_rows(uri, schema, stage, cfg.influence.probe_rows,
                              seeded(cfg.seed, stage, 7))
    setup = setup_scoring(models, probe, schema, cfg, stage, candidate_count(cfg, table.num_rows))
    probes = [torch.from_numpy(np.array(p, np.float32)) for p in setup.probes]
    parts = []
    with torch.no_grad():
        for start in range(0, table.num_rows, cfg.influence.batch_size):
            batch = collate(table.slice(start, cfg.influence.batch_size), schema)
            score, align, prob, h = influence_scores(models, probes, batch)
            parts.append((score, align, prob, address_keys(h, setup.projection)))
    score, align, prob, keys = (np.concatenate(p) for p in zip(*parts))
    return ScoredStage(score, align, prob, keys.astype(np.float32))


def default_distill_config(budget: float, seed: int,
                           cfg: DistillConfig | None = None) -> DistillConfig:
    """`cfg` (default: the job's defaults) with this budget and seed."""
    cfg = cfg or DistillConfig()
    return replace(cfg, seed=seed, memory=replace(cfg.memory, budget=budget))


def influence_topk(uri: str, schema: Schema, stages: range, budget: float, seed: int,
                   cfg: DistillConfig | None = None) -> pa.Table:
    """Per stage, the round(budget × rows_t) rows with the highest closed-form TracIn score
    `sum_c (p_c - y) <[h_c(x), 1], G_c>` of the continual model before stage t: a plain
    global top-k, no strata, hard labels, no distillation (DESIGN lesson 1 expects it to lose
    to random)."""
    cfg = default_distill_config(budget, seed, cfg)
    run = ContinualTrajectory(schema, cfg)
    parts = []
    for t in stages:
        table = read_stage_table(uri, t, schema)
        scored = score_all_rows(uri, schema, cfg, t, table, run.scoring_models())
        n = per_stage_count(budget, table.num_rows)
        top = np.argsort(-scored.score, kind="stable")[:n]
        parts.append(table.take(pa.array(np.sort(top))))
        run.advance(t, table)
    return pa.concat_tables(parts)


def kcenter_greedy(points: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Indices of `k` rows of `points` [N, D] by greedy k-center (farthest-first traversal):
    a seeded random first centre, then repeatedly the row farthest (Euclidean) from every
    centre chosen so far. A 2-approximation of the k-center objective; O(k N D).
    Duplicated points are never picked twice while unpicked rows remain."""
    n = len(points)
    k = min(k, n)
    if k <= 0:
        return np.zeros(0, np.int64)
    points = np.asarray(points, np.float64)
    chosen = [int(np.random.default_rng(seed).integers(n))]
    dist = np.linalg.norm(points - points[chosen[0]], axis=1)
    dist[chosen[0]] = -1.0
    for _ in range(k - 1):
        i = int(np.argmax(dist))
        chosen.append(i)
        dist = np.minimum(dist, np.linalg.norm(points - points[i], axis=1))
        dist[chosen] = -1.0
    return np.array(chosen, np.int64)


def kcenter(uri: str, schema: Schema, stages: range, budget: float, seed: int,
            cfg: DistillConfig | None = None) -> pa.Table:
    """Per stage, a k-center coreset of round(budget × rows_t) rows on the address keys the
    DIET scorer gives stage t's rows (continual model before t, hard labels)."""
    cfg = default_distill_config(budget, seed, cfg)
    run = ContinualTrajectory(schema, cfg)
    parts = []
    for t in stages:
        table = read_stage_table(uri, t, schema)
        scored = score_all_rows(uri, schema, cfg, t, table, run.scoring_models())
        pick = kcenter_greedy(scored.keys, per_stage_count(budget, table.num_rows),
                              seeded(seed, t, 23))
        parts.append(table.take(pa.array(np.sort(pick))))
        run.advance(t, table)
    return pa.concat_tables(parts)


def teacher_labels(uri: str, schema: Schema, stages: range, budget: float, seed: int,
                   cfg: DistillConfig | None = None) -> pa.Table:
    """The `label_stratified` sample (same rows, same seed) relabelled with the soft
    predictions of the final continual model (after the last stage of `stages`), label
    logits clipped to ±`memory.label_logit_clip` as the memory's teacher labels are. The
    strongest simple baseline of the DESIGN calibration."""
    cfg = default_distill_config(budget, seed, cfg)
    run = ContinualTrajectory(schema, cfg)
    for t in stages:
        run.advance(t, read_stage_table(uri, t, schema))
    sample = label_stratified(uri, schema, stages, budget, seed)
    clip = cfg.memory.label_logit_clip
    with torch.no_grad():
        logits = run.model()(collate(sample, schema)).clamp(-clip, clip)
    soft = pa.array(torch.sigmoid(logits).numpy().astype(np.float32))
    return sample.set_column(sample.column_names.index("label"), "label", soft)


# -- distilled memories: DIET, its ablations, static one-shot distillation ------------------------


def memory_batch(slots: Slots) -> SparseBatch:
    """A committed memory as a plain (detached) SparseBatch: soft ids, soft labels, weights."""
    batch = MemoryTensors(slots, np.zeros(0, np.int64)).batch()
    return SparseBatch(ids=batch.ids, weights=batch.weights.detach(),
                       dense=None if batch.dense is None else batch.dense.detach(),
                       labels=batch.labels.detach(), sample_weight=batch.sample_weight.detach())


def diet(uri: str, schema: Schema, stages: range, budget: float, seed: int,
         cfg: DistillConfig | None = None, overrides: tuple[str, ...] = (),
         on_stage: Callable | None = None) -> Slots:
    """DIET's memory after stages 0..max(stages), by `distill_local` (the job's per-stage
    code in-process) with `cfg` (default: the job's defaults) and dotted `overrides`;
    `on_stage(t, state, stats)` as in `distill_local`."""
    if stages != range(stages.stop):
        raise ValueError(f"DIET distils a prefix of the stream (0..T-1), not {stages}")
    base = default_distill_config(budget, seed, cfg).to_dict()
    base.update(data=uri, stages=stages.stop)
    run_cfg = config_from_dict(apply_overrides(base, list(overrides)))
    return distill_local(uri, run_cfg, on_stage).slots


def diet_no_addressing(uri: str, schema: Schema, stages: range, budget: float, seed: int,
                       cfg: DistillConfig | None = None) -> Slots:
    """Ablation: every existing slot is addressed (learnable) at every stage
    (`memory.address_fraction=1.0`): nothing is frozen."""
    return diet(uri, schema, stages, budget, seed, cfg, ("memory.address_fraction=1.0",))


def diet_random_init(uri: str, schema: Schema, stages: range, budget: float, seed: int,
                     cfg: DistillConfig | None = None) -> Slots:
    """Ablation: new slots seeded from random rows of each label × key-cluster stratum
    instead of the most influential ones (`influence.rank_by=random`)."""
    return diet(uri, schema, stages, budget, seed, cfg, ("influence.rank_by=random",))


def merged_view(uri: str, schema: Schema, stages: range, view: str) -> Schema:
    """Write a prepared dataset at `view` whose single stage 0 holds every row of `stages`,
    in stage (time) order, as one shard; returns its schema."""
    table = read_stage_table(uri, stages, schema)
    label = table.column("label").to_numpy()
    sink = io.BytesIO()
    pq.write_table(table, sink)
    data = sink.getvalue()
    rel = f"{stage_dir(0)}/part-00000.parquet"
    first, last = schema.stage(stages[0]), schema.stage(stages[-1])
    stage = StageInfo(index=0, start=first.start, end=last.end, rows=table.num_rows,
                      positives=int((label >= 0.5).sum()), files=(rel,),
                      sha256=(hashlib.sha256(data).hexdigest(),))
    merged = replace(schema, stages=(stage,), stage_by=f"merged:{stages[0]}-{stages[-1]}")
    fs, root = open_fs(view)
    write_bytes(fs, join(root, rel), data)
    write_bytes(fs, join(root, SCHEMA_FILE), merged.to_json().encode())
    return merged


def static_distill(uri: str, schema: Schema, stages: range, budget: float, seed: int,
                   view: str, cfg: DistillConfig | None = None,
                   outer_steps: int | None = None) -> Slots:
    """One-shot distillation of the whole history with the same code: no stages, no
    addressing.

    How: `merged_view` writes a prepared dataset (at `view`) whose one stage holds all rows
    of `stages`, and `distill_local` runs on it with `stages=1`. With a single stage every
    slot is new, so every slot is learnable (addressing never applies: there are no old
    slots) and the distillation code is untouched. What that means, by step:

    - selection: scored by the *seeded initial* continual model (no model exists before the
      data in a one-shot setting), coverage-aware strata and ranking as in DIET;
    - teacher labels: the continual model after one pass over the whole history, shuffled
      across stages (not in time order);
    - bi-level updates: `outer_steps` (default: `bilevel.outer_steps` × number of stages, the
      same total number of outer steps DIET spends) on the full memory.

    The budget is set so that the memory has exactly sum_t round(budget × rows_t) slots, the
    size of DIET's memory and of every per-stage baseline. This was chosen over a
    `memory.address_fraction=1.0` run on the staged data because that still seeds each
    stage's slots from that stage with that stage's model: an ablation of addressing
    (`diet_no_addressing`), not a static distillation.
    """
    if stages != range(stages.stop):
        raise ValueError(f"static distillation takes a prefix of the stream, not {stages}")
    target = sum(per_stage_count(budget, schema.stage(t).rows) for t in stages)
    merged = merged_view(uri, schema, stages, view)
    cfg = default_distill_config(target / merged.total_rows, seed, cfg)
    steps = cfg.bilevel.outer_steps * len(stages) if outer_steps is None else outer_steps
    cfg = replace(cfg, data=view, stages=1, bilevel=replace(cfg.bilevel, outer_steps=steps))
    return distill_local(view, cfg).slots
