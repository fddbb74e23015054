"""Memory writing for a stage: grow the memory, seed new slots from uncovered influential
candidates, address the existing slots the stage's influence attends to, evict past a cap.

Capacity follows the stream: each stage adds round(budget × stage rows) slots, so the
memory holds budget × rows seen. With `memory.max_slots`, the least influential old
slots make room for the new ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from diet_ray.config import DistillConfig
from diet_ray.data.batch import collate
from diet_ray.data.schema import Schema
from diet_ray.distill.state import RunState
from diet_ray.influence.selection import largest_remainder
from diet_ray.memory.addressing import address, attention_mass, choose_new, coverage, evict
from diet_ray.memory.slots import Slots, new_slots

COVER = 0.98  # a candidate this similar (cosine) to an existing slot's key is covered


@dataclass(frozen=True)
class StagePlan:
    """The memory for stage t before its updates: which slots learn, which are new."""

    state: RunState
    addressed: np.ndarray  # slot indices learnable this stage (addressed old + all new)
    new: np.ndarray  # indices of slots written this stage
    evicted: int


def new_slot_count(cfg: DistillConfig, stage_rows: int) -> int:
    return round(cfg.memory.budget * stage_rows)


def empty_state(cfg: DistillConfig, schema: Schema) -> RunState:
    k = max(cfg.memory.candidates, schema.max_len)
    pool = len(cfg.bilevel.inner_archs)
    return RunState(
        slots=Slots.empty(schema.num_fields, k, schema.num_dense, cfg.influence.key_dim),
        continual={}, trajectory=[],
        log_lr=np.full(pool, np.log(cfg.bilevel.inner_lr), np.float32),
        rows_seen=0,
    )


def plan_stage(state: RunState, candidates: pa.Table, schema: Schema, cfg: DistillConfig,
               stage: int, stage_rows: int) -> StagePlan:
    """Write new slots from `candidates` (scored rows, sorted by stratum then priority) and
    address existing slots; see the module docstring."""
    mem = cfg.memory
    old = state.slots
    n_new = min(new_slot_count(cfg, stage_rows), candidates.num_rows)
    evicted = 0
    if mem.max_slots is not None and len(old) + n_new > mem.max_slots:
        keep = evict(old.influence, max(mem.max_slots - n_new, 0))
        evicted = len(old) - len(keep)
        old = old.select(keep)
        n_new = min(n_new, mem.max_slots)

    rows = collate(candidates, schema)
    keys = np.asarray(candidates.column("_key").combine_chunks().flatten()).reshape(
        candidates.num_rows, -1)
    score = candidates.column("_score").to_numpy()
    stratum = candidates.column("_stratum").to_numpy()
    prob = np.clip(candidates.column("_prob").to_numpy(), 1e-4, 1 - 1e-4)

    # new slots: per stratum, in priority order, uncovered rows first
    covered = coverage(old.key, keys) >= COVER
    strata_ids, counts = np.unique(stratum, return_counts=True)
    quotas = largest_remainder(n_new, counts)
    chosen = [
        choose_new(np.flatnonzero(stratum == s), covered, int(q))
        for s, q in zip(strata_ids, quotas)
    ]
    chosen_idx = np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)
    clip = mem.label_logit_clip
    categorical = np.array([f.kind == "categorical" for f in schema.sparse])
    fresh = new_slots(
        rows, keys, score, stage, mem.candidates, mem.seed_logit,
        np.clip(np.log(prob / (1 - prob)), -clip, clip), categorical, chosen_idx,
    )
    # addressing: influence-weighted attention of all candidates over the old slots
    weight = np.maximum(score, 0) + 1e-6
    mass = attention_mass(old.key, keys, weight, mem.temperature)
    addressed_old = address(mass, round(mem.address_fraction * len(old)))
    slots = Slots.concat([old, fresh])
    new = np.arange(len(old), len(slots))
    return StagePlan(
        state=RunState(slots, state.continual, state.trajectory, state.log_lr, state.rows_seen),
        addressed=np.concatenate([addressed_old, new]).astype(np.int64),
        new=new.astype(np.int64),
        evicted=evicted,
    )
