"""Each Train worker's share of stage t: one streaming split per stage, released after it.

Ray Train's `get_dataset_shard` keeps every dataset's split coordinator (an actor process,
~120 MB here) alive until the run ends, so a run over 40 per-stage datasets held 40 of them
and its memory grew with the number of stages. Here rank 0 splits stage t itself, the same
way Train does (`streaming_split(world, equal=True)` with the workers' nodes as locality
hints), and hands the splits out through a small actor that keeps only the newest stage.
Once every worker has moved on, nothing refers to stage t's coordinator and Ray ends it:
at most two are alive at any time, whatever the number of stages.

    splits = StageSplits(name, namespace, rank, uri, schema, node_per_rank)
    rank 0:  splits.publish(t)               (before the stage's barrier)
    rank r:  splits.take(t) -> DataIterator   (after it)
"""

from __future__ import annotations

from typing import Any

import ray

from diet_ray.data.schema import Schema
from diet_ray.data.stream import read_stages


@ray.remote(num_cpus=0, max_concurrency=16)
class StageShards:
    """The splits of the newest published stage, one `DataIterator` per rank."""

    def __init__(self) -> None:
        self._stage: int | None = None
        self._splits: list[Any] = []

    def publish(self, stage: int, splits: list[Any]) -> None:
        self._stage, self._splits = stage, list(splits)  # drops the previous stage's

    def take(self, stage: int, rank: int) -> Any:
        if self._stage != stage:
            raise RuntimeError(f"stage {stage}'s shards requested, stage {self._stage} published")
        return self._splits[rank]


class StageSplits:
    """One worker's side of the handout. Rank 0 creates the run's `StageShards` actor (it
    owns it, so the actor ends with rank 0's process) and publishes each stage's splits;
    the other ranks look the actor up on their first `take`, after the stage's barrier."""

    def __init__(self, name: str, namespace: str, rank: int, uri: str, schema: Schema,
                 node_per_rank: list[str]) -> None:
        self.name, self.namespace, self.rank = name, namespace, rank
        self.uri, self.schema, self.node_per_rank = uri, schema, node_per_rank
        self._actor = (StageShards.options(name=name, namespace=namespace,
                                           get_if_exists=True).remote()
                       if rank == 0 else None)

    def publish(self, stage: int) -> None:
        """Rank 0: split stage `stage` and hand it out (before the stage's barrier)."""
        ray.get(self._actor.publish.remote(stage, split_stage(
            self.uri, self.schema, stage, self.node_per_rank)))

    def take(self, stage: int) -> Any:
        """This rank's `DataIterator` over its share of stage `stage` (after the barrier)."""
        if self._actor is None:
            self._actor = ray.get_actor(self.name, namespace=self.namespace)
        return ray.get(self._actor.take.remote(stage, self.rank))


def split_stage(uri: str, schema: Schema, stage: int, node_per_rank: list[str]) -> list[Any]:
    """Stage `stage` as one streaming split per rank (equal row counts, as Ray Train does)."""
    ds = read_stages(uri, stage, schema)
    return ds.streaming_split(len(node_per_rank), equal=True, locality_hints=node_per_rank)
