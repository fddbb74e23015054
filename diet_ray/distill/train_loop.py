"""The Ray Train per-worker function: the stage loop, data-parallel.

One `TorchTrainer` run covers all remaining stages (a Train run costs tens of seconds to
start, so one per stage would dominate small stages). Per stage t, every worker:

1. reads the committed state from the memory actor (after a restart: the last commit);
2. rank 0 scores stage t on the run's Ray Data scoring pipeline (`ScoringStream`, one
   actor pool for all stages), writes/addresses the memory and hands the working copy to
   the actor; the others wait at a barrier, then fetch it;
3. runs the continual pass over its streaming split of stage t (`StageSplits`; gradients averaged);
4. relabels with the continual model (identical on every worker);
5. runs the outer steps on a reservoir sample of its shard's rows, kept during the pass
   (memory gradients averaged, so every worker applies the same Adam step);
6. rank 0 commits the stage to the actor (exactly once), everyone reports.

Nothing here reads driver globals: everything arrives in `config`.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from diet_ray.config import DistillConfig, config_from_dict
from diet_ray.data.schema import Schema
from diet_ray.data.stream import iter_sparse_batches
from diet_ray.distill.distiller import Distiller, seeded
from diet_ray.distill.local import scoring_models
from diet_ray.distill.reservoir import BatchReservoir
from diet_ray.distill.stage_shards import StageSplits
from diet_ray.distill.state import RunState
from diet_ray.distill.write import empty_state, plan_stage
from diet_ray.influence.scoring_stream import ScoringStream
from diet_ray.worker_logs import log_to_stderr_in_worker

log = logging.getLogger("diet_ray")


def allreduce_mean(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """The tensors averaged across the process group: dense ones in one flat all-reduce
    (in place), sparse ones (embedding gradients) by `sparse_mean`."""
    if not dist.is_initialized() or dist.get_world_size() == 1 or not tensors:
        return tensors
    dense = [t for t in tensors if not t.is_sparse]
    if dense:
        flat = torch.cat([t.reshape(-1) for t in dense])
        dist.all_reduce(flat)
        flat /= dist.get_world_size()
        offset = 0
        for t in dense:
            t.copy_(flat[offset:offset + t.numel()].view_as(t))
            offset += t.numel()
    return [sparse_mean(t) if t.is_sparse else t for t in tensors]


def sparse_mean(grad: torch.Tensor) -> torch.Tensor:
    """Mean across workers of a sparse COO gradient [V, d] (rows touched by each worker's
    batch): every worker gathers every worker's (row, vector) pairs, padded to the longest,
    and sums them in rank order, so all workers hold the identical result."""
    world = dist.get_world_size()
    grad = grad.coalesce()
    rows, values = grad.indices()[0], grad.values()
    counts = [torch.zeros(1, dtype=torch.int64) for _ in range(world)]
    dist.all_gather(counts, torch.tensor([len(rows)]))
    longest = int(max(c.item() for c in counts))
    pad = longest - len(rows)
    rows_p = torch.cat([rows, rows.new_zeros(pad)])
    values_p = torch.cat([values, values.new_zeros((pad, *values.shape[1:]))])
    all_rows = [torch.empty_like(rows_p) for _ in range(world)]
    all_values = [torch.empty_like(values_p) for _ in range(world)]
    dist.all_gather(all_rows, rows_p)
    dist.all_gather(all_values, values_p)
    n = [int(c.item()) for c in counts]
    merged = torch.sparse_coo_tensor(
        torch.cat([r[:k] for r, k in zip(all_rows, n)])[None, :],
        torch.cat([v[:k] for v, k in zip(all_values, n)]) / world, grad.shape,
        check_invariants=True)
    return merged.coalesce()


def node_per_rank(node: str) -> list[str]:
    """Every worker's node id, in rank order (this worker's is `node`)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return [node]
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, node)
    return gathered


def barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def train_loop_per_worker(config: dict) -> None:
    import ray
    import ray.data
    import ray.train

    log_to_stderr_in_worker()
    # progress bars in a Train worker reach the driver as blank lines; the job's progress is
    # its line per stage. Ray Data's datasets made here (scoring, stage splits) inherit this.
    ray.data.DataContext.get_current().enable_progress_bars = False
    cfg = config_from_dict(config["cfg"])
    schema = Schema.from_json(config["schema"])
    torch.set_num_threads(cfg.torch_threads(cfg.train.cpus_per_worker))
    actor = ray.get_actor(config["actor"], namespace=config["namespace"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    total = cfg.stages or len(schema.stages)
    nodes = node_per_rank(ray.get_runtime_context().get_node_id())
    start = ray.get(actor.last_committed.remote()) + 1
    splits = StageSplits(config["actor"] + "-splits", config["namespace"], rank, cfg.data, schema,
                         nodes)
    # rank 0 scores every stage on one Ray Data pipeline: the scorer pool starts once
    scoring = (ScoringStream(cfg.data, schema, cfg, range(start, total))
               if rank == 0 and start < total else None)
    try:
        _stages(cfg, schema, actor, splits, rank, world, nodes, start, total, scoring)
    finally:
        if scoring is not None:
            scoring.close()


def _stages(cfg: DistillConfig, schema: Schema, actor: Any, splits: StageSplits, rank: int,
            world: int, nodes: list[str], start: int, total: int,
            scoring: ScoringStream | None) -> None:
    """Stages start..total-1 on this worker (module docstring, steps 1-6)."""
    import ray
    import ray.train

    began = time.perf_counter()
    for t in range(start, total):
        stage_start = time.perf_counter()
        rows = schema.stage(t).rows
        _version, arrays, _meta = ray.get(actor.get.remote())
        state = RunState.from_arrays(arrays) if arrays else empty_state(cfg, schema)
        if rank == 0:
            splits.publish(t)  # the split's coordinator starts while rank 0 scores
        score_stats: dict = {}
        if scoring is not None:
            candidates, score_stats = scoring.score(t, scoring_models(cfg, schema, state))
            plan = plan_stage(state, candidates, schema, cfg, t, rows)
            meta = {"addressed": plan.addressed.tolist(), "new": plan.new.tolist(),
                    "evicted": plan.evicted}
            ray.get(actor.stage_working.remote(t, plan.state.to_arrays(), meta))
        barrier()
        _token, working, meta = ray.get(actor.get_working.remote(t))
        d = Distiller(cfg, schema, RunState.from_arrays(working), t,
                      np.asarray(meta["addressed"], np.int64), np.asarray(meta["new"], np.int64),
                      allreduce_mean)
        shard = splits.take(t)
        bs = cfg.continual.batch_size
        reservoir = BatchReservoir(4 * cfg.bilevel.outer_batch, seeded(cfg.seed, t, 10, rank))
        batches = iter_sparse_batches(shard, schema, bs, local_shuffle_buffer_size=4 * bs,
                                      local_shuffle_seed=seeded(cfg.seed, t, 8, rank) % 2**31)
        d.continual_pass(reservoir.tap(batches), max(rows // (world * bs), 1))
        del shard, batches  # the stage's split coordinator ends once no worker refers to it
        d.relabel()
        d.outer_steps(reservoir.sampler(cfg.bilevel.outer_batch, seeded(cfg.seed, t, 9, rank)))
        result = d.result(rows)
        scorer_nodes = score_stats.pop("scorer_nodes", [])
        metrics = {"stage": t, "memory_slots": len(result.slots),
                   "addressed": len(meta["addressed"]), "new_slots": len(meta["new"]),
                   **{k: float(v) for k, v in {**d.stats, **score_stats}.items()},
                   "stage_seconds": time.perf_counter() - stage_start}  # up to the commit
        if rank == 0:
            where = {"train_nodes": sorted(set(nodes)), "scorer_nodes": scorer_nodes}
            metrics["version"] = ray.get(actor.commit.remote(t, result.to_arrays(),
                                                             {**metrics, **where}))
            done = t - start + 1
            eta = (time.perf_counter() - began) / done * (total - t - 1)
            log.info(
                "stage %d/%d committed (v%d): %d slots (%d new, %d addressed), scored %.0f rows/s, "
                "%d outer steps, outer loss %.4f, %.1fs, ETA %.0fs", t + 1, total,
                metrics["version"], metrics["memory_slots"], metrics["new_slots"],
                metrics["addressed"], metrics.get("scored_rows_per_s", 0.0),
                metrics.get("outer_steps", 0), metrics.get("outer_loss", float("nan")),
                metrics["stage_seconds"], eta)
        barrier()
        ray.train.report(metrics)
