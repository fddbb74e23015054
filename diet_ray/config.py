"""Typed, frozen configs for the distillation job; YAML files plus dotted `key=value`
overrides; validated on construction. A config is data: built once, saved with the
output, never mutated mid-run.

    cfg = load_config("jobs/configs/movielens.yaml", ["memory.budget=0.01", "seed=3"])
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from diet_ray.data.errors import DataError
from diet_ray.data.fs import absolute_uri


class ConfigError(DataError):
    """A bad config key or value; the message names the key."""


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"config {key}: {message}")


@dataclass(frozen=True)
class MemoryConfig:
    """The distilled memory: its size, slot layout and how stages update it.

    budget: slots = budget × rows seen so far (the memory grows with the stream).
    max_slots: optional fixed cap; past it the least influential slots are evicted.
    candidates: K, candidate ids per field of a slot (own id + ids of neighbour rows).
    seed_logit: initial mixing logit of a slot's own id (others start at 0).
    label_logit_clip: teacher label logits are clipped to ±this.
    address_fraction: share of existing slots addressed (updated) per stage.
    relabel: which slots take the continual model's soft label after each stage's pass:
        "new" (only slots written this stage) or "all".
    temperature: softmax temperature of key attention in addressing.
    """

    budget: float = 0.02
    max_slots: int | None = None
    candidates: int = 4
    seed_logit: float = 5.0
    label_logit_clip: float = 4.0
    address_fraction: float = 0.25
    temperature: float = 0.1
    relabel: Literal["new", "all"] = "all"

    def __post_init__(self) -> None:
        _check(0 < self.budget <= 1, "memory.budget", f"must be in (0, 1], got {self.budget}")
        _check(self.max_slots is None or self.max_slots > 0, "memory.max_slots", "must be > 0")
        _check(self.candidates >= 1, "memory.candidates", "must be >= 1")
        _check(0 <= self.address_fraction <= 1, "memory.address_fraction", "must be in [0, 1]")
        _check(self.temperature > 0, "memory.temperature", "must be > 0")
        _check(self.relabel in ("new", "all"), "memory.relabel", "must be new or all")


@dataclass(frozen=True)
class InfluenceConfig:
    """Influence scoring and coverage-aware selection of each stage's rows.

    probe_rows: rows of the recent validation sample whose mean gradient is the probe.
    checkpoints: C, trajectory checkpoints of the continual model summed over (TracIn).
    key_dim: width of the address key (a fixed random projection of the last hidden layer).
    clusters: key clusters per label; strata = label × cluster.
    candidate_factor: candidates kept per new slot (the rest feed addressing).
    rank_by: priority inside a stratum: "influence" (TracIn score), "alignment" (cosine of
        the row's gradient with the probe's, blind to loss magnitude) or "random".
    num_scorers / scorer_cpus: the Ray Data actor pool that scores rows.
    scheduling: "DEFAULT" (Ray packs the scorers where it likes) or "SPREAD" (one per node
        where possible, to use every node's cores and read locally).
    batch_size: rows per scoring batch.
    block_mb: target size of the Ray Data blocks scoring reads (MiB): one Parquet shard
        is cut into blocks of about this size so that every scorer gets work and scoring
        starts before the shard is read whole.
    """

    probe_rows: int = 2048
    checkpoints: int = 2
    key_dim: int = 16
    clusters: int = 8
    candidate_factor: float = 2.0
    rank_by: Literal["influence", "alignment", "random"] = "alignment"
    num_scorers: int = 2
    scorer_cpus: float = 0.5
    batch_size: int = 4096
    block_mb: float = 4.0
    scheduling: Literal["DEFAULT", "SPREAD"] = "DEFAULT"

    def __post_init__(self) -> None:
        _check(self.scheduling in ("DEFAULT", "SPREAD"), "influence.scheduling",
               "must be DEFAULT or SPREAD")
        for key in ("probe_rows", "checkpoints", "key_dim", "clusters", "num_scorers",
                    "batch_size"):
            _check(getattr(self, key) >= 1, f"influence.{key}", "must be >= 1")
        _check(self.candidate_factor >= 1, "influence.candidate_factor", "must be >= 1")
        _check(self.scorer_cpus > 0, "influence.scorer_cpus", "must be > 0")
        _check(self.block_mb > 0, "influence.block_mb", "must be > 0")
        _check(self.rank_by in ("influence", "alignment", "random"), "influence.rank_by",
               "must be influence, alignment or random")


@dataclass(frozen=True)
class ContinualConfig:
    """The continual (full-data) model: one pass per stage, data-parallel.

    sparse_embeddings: the embedding table takes sparse gradients and SparseAdam (only the
        rows a batch touches move, all-reduced as (row, vector) pairs; the other parameters
        take Adam); false: dense Adam on the whole table, which updates and all-reduces
        every row every step (about 10x slower per step at 100 K ids per field).
    """

    arch: str = "dnn"
    lr: float = 1e-3
    batch_size: int = 256
    sparse_embeddings: bool = True

    def __post_init__(self) -> None:
        from diet_ray.models import MODELS

        _check(self.arch in MODELS, "continual.arch", f"unknown {self.arch!r}; one of {sorted(MODELS)}")
        _check(self.lr > 0 and self.batch_size >= 1, "continual", "lr > 0 and batch_size >= 1")


@dataclass(frozen=True)
class BilevelConfig:
    """Bi-level updates of the addressed slots (DESIGN, "The algorithm" step 3).

    objective: "bilevel" (unroll the inner loop, outer BCE on real rows) or "gradmatch"
        (match real and synthetic loss gradients at trajectory checkpoints).
    inner_archs: pool the inner model's architecture is sampled from each outer step.
    inner_steps: U, unrolled full-batch SGD steps on the memory.
    inner_batch: memory rows the inner model trains on per outer step, at most: all
        addressed slots plus a seeded sample of the others (a seeded sample of the addressed
        ones when they alone exceed it; None: the whole memory). Keeps an outer step's cost
        flat as the memory grows; the default matches `outer_batch` (a 1,800-slot MovieLens
        memory is used whole).
    inner_lr: initial inner learning rate (learnable, per parameter tensor).
    trajectory_fraction: share of outer steps whose inner model starts from a continual
        checkpoint (when the sampled architecture is the continual one).
    outer_steps: outer steps per stage; outer_lr: Adam on the memory parameters.
    outer_batch: real rows per outer step, per worker.
    learn: which learnable parts of the addressed slots the outer steps update (any of
        id_logits, label_logit, weight_logit, dense); the others keep their values.
    """

    objective: Literal["bilevel", "gradmatch"] = "bilevel"
    inner_archs: tuple[str, ...] = ("dnn", "fm", "deepfm", "dcn")
    inner_steps: int = 10
    inner_batch: int | None = 2048
    inner_lr: float = 0.05
    trajectory_fraction: float = 0.5
    outer_steps: int = 20
    outer_lr: float = 0.03
    outer_batch: int = 2048
    learn: tuple[str, ...] = ("id_logits", "label_logit", "weight_logit", "dense")

    def __post_init__(self) -> None:
        from diet_ray.memory.slots import LEARNABLE
        from diet_ray.models import MODELS

        object.__setattr__(self, "inner_archs", tuple(self.inner_archs))
        object.__setattr__(self, "learn", tuple(self.learn))
        bad = sorted(set(self.learn) - set(LEARNABLE))
        _check(not bad and bool(self.learn), "bilevel.learn",
               f"unknown {bad}; choose one or more of {list(LEARNABLE)}")
        bad = [a for a in self.inner_archs if a not in MODELS]
        _check(not bad and bool(self.inner_archs), "bilevel.inner_archs",
               f"unknown {bad}; choose from {sorted(MODELS)}")
        _check(self.objective in ("bilevel", "gradmatch"), "bilevel.objective",
               "must be bilevel or gradmatch")
        _check(self.inner_steps >= 1 and self.outer_steps >= 0, "bilevel",
               "inner_steps >= 1 and outer_steps >= 0")
        _check(self.inner_batch is None or self.inner_batch >= 1, "bilevel.inner_batch",
               "must be >= 1 (or null: the whole memory)")
        _check(0 <= self.trajectory_fraction <= 1, "bilevel.trajectory_fraction", "in [0, 1]")


@dataclass(frozen=True)
class TrainResources:
    """Ray Train workers: N data-parallel workers (gloo on CPU, nccl on GPU), placed by
    `placement_strategy` (PACK: fewest nodes; SPREAD: one per node where possible); a failed
    worker restarts the run from the last committed stage up to `max_failures` times."""

    num_workers: int = 2
    cpus_per_worker: float = 0.5
    use_gpu: bool = False
    max_failures: int = 2
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"

    def __post_init__(self) -> None:
        _check(self.placement_strategy in ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"),
               "train.placement_strategy", "must be PACK, SPREAD, STRICT_PACK or STRICT_SPREAD")
        _check(self.num_workers >= 1, "train.num_workers", "must be >= 1")
        _check(self.cpus_per_worker > 0, "train.cpus_per_worker", "must be > 0")


@dataclass(frozen=True)
class EvalConfig:
    """How a candidate model is trained on a memory or sample: one fixed budget, chosen
    once for every architecture (DESIGN lesson 5)."""

    lr: float = 1e-2
    batch_size: int = 512
    epochs: int = 10

    def __post_init__(self) -> None:
        _check(self.lr > 0 and self.batch_size >= 1 and self.epochs >= 1, "eval",
               "lr > 0, batch_size >= 1, epochs >= 1")


@dataclass(frozen=True)
class DistillConfig:
    """Everything the distillation job needs; saved as `config.json` in the output."""

    data: str = ""
    out: str = ""
    seed: int = 0
    stages: int | None = None  # distil stages 0..stages-1 (None: all)
    threads: int | None = None  # torch threads per Train worker / scorer (None: `torch_threads`)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    influence: InfluenceConfig = field(default_factory=InfluenceConfig)
    continual: ContinualConfig = field(default_factory=ContinualConfig)
    bilevel: BilevelConfig = field(default_factory=BilevelConfig)
    train: TrainResources = field(default_factory=TrainResources)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        _check(self.stages is None or self.stages >= 1, "stages", "must be >= 1")
        # local paths become absolute: Train workers and scorers run in other directories
        object.__setattr__(self, "data", absolute_uri(self.data))
        object.__setattr__(self, "out", absolute_uri(self.out))

    def torch_threads(self, cpus: float) -> int:
        """torch threads for a Ray process that reserves `cpus` CPUs: `threads` if set, else
        one per whole reserved CPU, at least one. torch's own default (one per core of the
        machine) in every worker oversubscribes the cores: with 2 Train workers of 0.5 CPU on
        2 cores it made a 500,000-row stage 2.2x slower (90 s vs 41 s)."""
        return self.threads or max(1, int(cpus))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def hash(self) -> str:
        """What makes two runs' memories comparable: everything but paths and resources."""
        body = self.to_dict()
        for key in ("data", "out", "train", "threads"):
            body.pop(key)
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def _build(cls: type, values: dict[str, Any], prefix: str = "") -> Any:
    """Build dataclass `cls` from a nested dict, rejecting unknown keys by name."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    _check(not unknown, prefix.rstrip(".") or "(top level)",
           f"unknown key(s) {unknown}; valid: {sorted(names)}")
    kwargs = {}
    for key, value in values.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            _check(isinstance(value, dict), prefix + key, "must be a mapping")
            kwargs[key] = _build(hint, value, f"{prefix}{key}.")
        else:
            kwargs[key] = tuple(value) if isinstance(value, list) else value
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"config {prefix.rstrip('.') or '(top level)'}: {e}") from None


def config_from_dict(values: dict[str, Any]) -> DistillConfig:
    return _build(DistillConfig, values)


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b=value` overrides (values parsed as YAML) to a nested dict copy."""
    values = json.loads(json.dumps(values))
    for item in overrides:
        key, sep, raw = item.partition("=")
        _check(bool(sep) and bool(key), item, "overrides look like section.key=value")
        node = values
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
            _check(isinstance(node, dict), key, f"{p} is not a section")
        node[leaf] = yaml.safe_load(raw)
    return values


def load_config(path: str | None = None, overrides: list[str] | tuple[str, ...] = (),
                **top: Any) -> DistillConfig:
    """Defaults <- YAML file <- `top` keywords (e.g. data=, out=) <- dotted overrides."""
    values: dict[str, Any] = {}
    if path:
        try:
            with open(path) as f:
                values = yaml.safe_load(f) or {}
        except FileNotFoundError:
            raise ConfigError(f"config file {path} not found") from None
        _check(isinstance(values, dict), path, "must hold a mapping of sections")
    values.update({k: v for k, v in top.items() if v is not None})
    return config_from_dict(apply_overrides(values, list(overrides)))
