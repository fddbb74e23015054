"""One Ray Data pipeline scores every stage of a run, so the scorer pool starts once.

    GatedStages (read tasks: stage s's shards are read once stage s is published)
      -> map_batches(StreamScorer, actor pool)   (each row scored with its stage's setup)
      -> ScoringStream.score(t): publish stage t's setup, merge scored batches until every
         row of stage t is accounted for, return the candidates

Why one pipeline: an actor pool costs seconds to start (fresh processes importing Ray
Data and torch: about 5 s on 2 cores), more than scoring a 500,000-row stage takes, and a
pipeline per stage paid it every stage. The pool now lives as long as the run.

Why the gate: stage t+1 is scored with the continual model after its pass over stage t,
which does not exist while stage t is scored. So the read task of a stage-s shard first
waits on the `StageSetups` actor until the job publishes stage s (models, probes, centroids,
quotas); the scorers never wait for a future stage, so they can never block behind one.
Reads are dispatched in stage order, so at most `read_concurrency` read tasks wait.

Accounting: every row a scorer call returns carries `_stage`, the call's id `_call`, its
output row count `_call_rows` and its input row count `_rows_in` (a call that keeps no row
returns one `_take = False` marker row). Ray Data may cut a call's output into several
blocks; once all `_call_rows` rows of a call have arrived, its `_rows_in` count, and the
stage is complete when they add up to the stage's rows. So the driver knows the end of a
stage without the scorers sending all their rows.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator, Sequence
from functools import partial
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from torch import nn

from diet_ray.config import DistillConfig
from diet_ray.data.fs import open_fs, to_pyarrow
from diet_ray.data.schema import Schema
from diet_ray.data.stream import sample_stage_rows, stage_paths
from diet_ray.distill.distiller import seeded
from diet_ray.influence.scorer import InfluenceScorer
from diet_ray.influence.selection import StratifiedTopM
from diet_ray.influence.stage import candidate_count, scorer_kwargs, setup_scoring

READ_CPUS = 0.25  # logical CPUs of a read task (it mostly waits at the gate or on I/O)
ACCOUNTING = ("_stage", "_call", "_call_rows", "_rows_in", "_take", "_node")


class StageSetups:
    """Ray actor (async): the published setup of each stage, as `[ObjectRef]`, and the
    gate the read tasks wait at. Keeps the newest two stages."""

    def __init__(self) -> None:
        self._setups: dict[int, list] = {}
        self._events: dict[int, asyncio.Event] = {}

    def _event(self, stage: int) -> asyncio.Event:
        return self._events.setdefault(stage, asyncio.Event())

    async def publish(self, stage: int, setup: list) -> None:
        self._setups[stage] = setup
        self._event(stage).set()
        for old in [s for s in self._setups if s < stage - 1]:
            del self._setups[old]

    async def wait(self, stage: int) -> list:
        await self._event(stage).wait()
        return self._setups[stage]


def _read_gated(filesystem: Any, path: str, stage: int, setups: Any,
                block_bytes: int) -> Iterator[pa.Table]:
    """Read task body: wait for `stage` to be published, then stream the shard in blocks
    of about `block_bytes` (whole row groups' worth of rows), tagged with `_stage`."""
    import ray

    ray.get(setups.wait.remote(stage))
    with filesystem.open_input_file(path) as f:
        shard = pq.ParquetFile(f)
        meta = shard.metadata
        size = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
        rows = max(1, int(block_bytes * meta.num_rows / max(size, 1)))
        for batch in shard.iter_batches(batch_size=rows):
            table = pa.Table.from_batches([batch])
            yield table.append_column("_stage", pa.array(np.full(len(table), stage, np.int32)))


def gated_stages(uri: str, schema: Schema, stages: Sequence[int], setups: Any,
                 block_bytes: int) -> tuple[Any, int]:
    """(a Ray Data `Datasource` over the shards of `stages`, each read behind the gate;
    the number of shards)."""
    from ray.data import Datasource, ReadTask
    from ray.data.block import BlockMetadata

    fs, _ = open_fs(uri)
    filesystem = to_pyarrow(fs)
    shards = [(s, path) for s in stages for path in stage_paths(uri, schema, s)]

    class GatedStages(Datasource):
        def estimate_inmemory_data_size(self) -> int | None:
            return None

        def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                           data_context: Any = None) -> list[ReadTask]:
            return [ReadTask(partial(_read_gated, filesystem, path, s, setups, block_bytes),
                             BlockMetadata(num_rows=None, size_bytes=None, exec_stats=None,
                                           input_files=(path,)))
                    for s, path in shards]

    return GatedStages(), len(shards)


class StreamScorer:
    """Ray Data callable class: scores each row with its stage's `InfluenceScorer`, built
    from the published setup the first time the actor meets the stage (the model is sent
    once per stage per actor, never per batch)."""

    def __init__(self, setups: Any) -> None:
        self.setups = setups
        self.stage: int | None = None
        self.scorer: InfluenceScorer | None = None

    def _scorer(self, stage: int) -> InfluenceScorer:
        import ray

        if stage != self.stage:
            (ref,) = ray.get(self.setups.wait.remote(stage))
            self.scorer, self.stage = InfluenceScorer(**ray.get(ref)), stage
        assert self.scorer is not None
        return self.scorer

    def __call__(self, table: pa.Table) -> pa.Table:
        stage_of_row = table.column("_stage").to_numpy()
        parts = []
        for stage in np.unique(stage_of_row):  # a block holds one shard: one stage
            rows = table.filter(pa.array(stage_of_row == stage)).drop_columns(["_stage"])
            out = self._scorer(int(stage))(rows, marker_if_empty=True)
            n = out.num_rows
            call = int.from_bytes(os.urandom(8), "little") >> 1  # a non-negative int64
            parts.append(out.append_column("_stage", pa.array(np.full(n, stage, np.int32)))
                         .append_column("_call", pa.array(np.full(n, call, np.int64)))
                         .append_column("_call_rows", pa.array(np.full(n, n, np.int64)))
                         .append_column("_rows_in", pa.array(np.full(n, rows.num_rows,
                                                                     np.int64))))
        return pa.concat_tables(parts)


class CallCounter:
    """Input rows of the scorer calls whose output has fully arrived (module docstring)."""

    def __init__(self) -> None:
        self.rows_in = 0
        self.received: dict[int, int] = {}

    def add(self, batch: pa.Table) -> None:
        calls, first, count = np.unique(batch.column("_call").to_numpy(), return_index=True,
                                        return_counts=True)
        expected = batch.column("_call_rows").to_numpy()[first]
        rows_in = batch.column("_rows_in").to_numpy()[first]
        for call, n, want, consumed in zip(calls.tolist(), count, expected, rows_in):
            got = self.received.pop(call, 0) + int(n)
            if got == want:
                self.rows_in += int(consumed)
            else:
                self.received[call] = got


class ScoringStream:
    """The scoring pipeline of one run over `stages` (scored in that order, each once).

    `score(t, models)` returns (candidates, stats: rows/s, seconds to the first scored
    block, the scorers' node ids); `close()` (or leaving the `with` block) stops the
    pipeline and its actors."""

    def __init__(self, data_uri: str, schema: Schema, cfg: DistillConfig,
                 stages: Sequence[int]) -> None:
        import ray
        import ray.data

        self.data_uri, self.schema, self.cfg = data_uri, schema, cfg
        self.pending = list(stages)
        inf = cfg.influence
        self.setups = ray.remote(num_cpus=0)(StageSetups).remote()
        source, shards = gated_stages(data_uri, schema, self.pending, self.setups,
                                      int(inf.block_mb * 2**20))
        # one read task per shard, its blocks as the task cuts them (no re-splitting)
        reads = ray.data.read_datasource(source, concurrency=max(2, inf.num_scorers),
                                         num_cpus=READ_CPUS, override_num_blocks=shards)
        reads.context.target_max_block_size = int(inf.block_mb * 2**20)  # this dataset only
        # batch_size=None: each block is one call (the scorer runs its forward passes
        # influence.batch_size rows at a time). With a row count, Ray Data would hold a
        # stage's last rows back until it had that many, and they would come from the next
        # stage, which waits for this one: a deadlock.
        self.scored = reads.map_batches(
            StreamScorer, fn_constructor_kwargs={"setups": self.setups},
            batch_size=None, batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=inf.num_scorers), num_cpus=inf.scorer_cpus,
            **({"scheduling_strategy": "SPREAD"} if inf.scheduling == "SPREAD" else {}),
        )
        self.batches: Iterator[pa.Table] | None = None

    def __enter__(self) -> ScoringStream:  # noqa: PYI034 - Self needs Python 3.11
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        import ray

        if self.batches is not None:
            close = getattr(self.batches, "close", None)  # a generator: stops the executor
            if close is not None:
                close()
            self.batches = None
        ray.kill(self.setups)

    def score(self, stage: int, models: list[nn.Module]) -> tuple[pa.Table, dict]:
        """Score stage `stage` (the next of the stream) with the checkpoints `models`."""
        import ray

        if not self.pending or stage != self.pending[0]:
            raise ValueError(f"stage {stage} is not the next stage of this scoring stream "
                             f"(next: {self.pending[0] if self.pending else 'none'})")
        self.pending.pop(0)
        start = time.perf_counter()
        cfg, rows = self.cfg, self.schema.stage(stage).rows
        probe = sample_stage_rows(self.data_uri, self.schema, stage, cfg.influence.probe_rows,
                                  seeded(cfg.seed, stage, 7))
        setup = setup_scoring(models, probe, self.schema, cfg, stage, candidate_count(cfg, rows))
        payload = scorer_kwargs(setup, self.schema, cfg, stage,
                                cfg.torch_threads(cfg.influence.scorer_cpus))
        ray.get(self.setups.publish.remote(stage, [ray.put(payload)]))  # opens the gate
        if self.batches is None:
            # no prefetch: a prefetching iterator holds a stage's last block back until
            # the next block arrives, which (the gate) waits for this stage to finish
            self.batches = iter(self.scored.iter_batches(batch_format="pyarrow",
                                                         batch_size=None, prefetch_batches=0))
        selection, nodes, first = StratifiedTopM(setup.quotas), set(), None
        calls = CallCounter()
        while calls.rows_in < rows:
            batch = next(self.batches, None)
            if batch is None:
                raise RuntimeError(f"the scoring stream ended after {calls.rows_in} of "
                                   f"stage {stage}'s {rows} rows")
            first = first or time.perf_counter()
            seen = set(batch.column("_stage").to_numpy().tolist())
            if seen != {stage}:
                raise RuntimeError(f"scoring stage {stage} received rows of stages {seen}")
            calls.add(batch)
            nodes.update(batch.column("_node").unique().to_pylist())
            kept = batch.filter(batch.column("_take")).drop_columns(list(ACCOUNTING))
            selection.add(kept)
        if calls.rows_in != rows:
            raise RuntimeError(f"scoring stage {stage} counted {calls.rows_in} rows, "
                               f"expected {rows}")
        seconds = time.perf_counter() - start
        return selection.result(), {"scored_rows": rows, "scoring_seconds": seconds,
                                    "scored_rows_per_s": rows / max(seconds, 1e-9),
                                    # setup and the wait for the first scored block
                                    "scoring_first_output_s": (first or start) - start,
                                    "scorer_nodes": sorted(nodes)}
