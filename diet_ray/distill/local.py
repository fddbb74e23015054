"""The stage loop in one process, without Ray: the reference the distributed job must
match, and the fast path for tests and tiny streams.

    for each stage t: score -> plan (write / address) -> continual pass -> teacher labels
                      -> outer steps -> next state
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from diet_ray.config import DistillConfig
from diet_ray.data.batch import SparseBatch, collate
from diet_ray.data.schema import Schema
from diet_ray.data.stream import read_stage_table, sample_stage_rows
from diet_ray.distill.distiller import Distiller, seeded
from diet_ray.distill.state import RunState, load_state
from diet_ray.distill.write import empty_state, plan_stage
from diet_ray.evaluate.train import shuffled_batches
from diet_ray.influence.stage import score_stage_local
from diet_ray.models import build_model


def scoring_models(cfg: DistillConfig, schema: Schema, state: RunState) -> list[torch.nn.Module]:
    """The checkpoints influence is summed over (newest last); at stage 0 the seeded init."""
    states = state.trajectory[-cfg.influence.checkpoints:] or [None]
    models = []
    for s in states:
        torch.manual_seed(seeded(cfg.seed, 0, 0, 1))
        model = build_model(cfg.continual.arch, schema)
        if s is not None:
            load_state(model, s)
        models.append(model.eval())
    return models


def shuffled(batch: SparseBatch, size: int, seed: int) -> list[SparseBatch]:
    """One seeded epoch of `batch` in batches of `size` rows."""
    return list(shuffled_batches(batch, size, torch.Generator().manual_seed(seed)))


def cycle(batches: Callable[[], list[SparseBatch]]) -> Iterator[SparseBatch]:
    while True:
        yield from batches()


def distill_local(data_uri: str, cfg: DistillConfig, on_stage: Callable | None = None) -> RunState:
    schema = Schema.load(data_uri)
    stages = cfg.stages or len(schema.stages)
    state = empty_state(cfg, schema)
    for t in range(stages):
        table = read_stage_table(data_uri, t, schema)
        probe = sample_stage_rows(data_uri, schema, t, cfg.influence.probe_rows,
                                  seeded(cfg.seed, t, 7))
        candidates = score_stage_local(table, schema, cfg, t,
                                       scoring_models(cfg, schema, state), probe)
        plan = plan_stage(state, candidates, schema, cfg, t, table.num_rows)
        d = Distiller(cfg, schema, plan.state, t, plan.addressed, plan.new)
        rows = collate(table, schema)
        bs = cfg.continual.batch_size
        d.continual_pass(shuffled(rows, bs, seeded(cfg.seed, t, 8)), len(rows) // bs)
        d.relabel()
        ob = cfg.bilevel.outer_batch
        d.outer_steps(cycle(lambda rows=rows, ob=ob, t=t:
                            shuffled(rows, ob, seeded(cfg.seed, t, 9))[: max(len(rows) // ob, 1)]))
        state = d.result(table.num_rows)
        if on_stage:
            on_stage(t, state, d.stats)
    return state
