"""The distillation job on Ray: the memory actor and one TorchTrainer over all stages.

    distill(cfg) -> one committed snapshot per stage: cfg.out/snapshots/stage=0000/, ...

A rerun with the same `out` resumes after the last committed stage (the actor reloads it
from storage); a different config for the same `out` is refused. The config is saved as
`cfg.out/config.json`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

from diet_ray.config import DistillConfig
from diet_ray.data.errors import DataError
from diet_ray.data.fs import join, open_fs, storage_errors, write_bytes
from diet_ray.data.schema import Schema
from diet_ray.memory.actor import start_memory_actor
from diet_ray.memory.store import SnapshotStore

log = logging.getLogger("diet_ray")
NAMESPACE = "diet-ray"


def init_ray(num_cpus: int | None = None) -> None:
    """Connect to the cluster in RAY_ADDRESS if set; else start local Ray. Locally, at
    least 4 logical CPUs: Train workers and scorer actors take fractional CPUs, and Ray
    Data's read tasks need free slots beside them on a 2-core machine."""
    import ray

    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(namespace=NAMESPACE)
        return
    ray.init(num_cpus=num_cpus or max(4, os.cpu_count() or 1), include_dashboard=False,
             namespace=NAMESPACE, logging_level="WARNING",
             runtime_env={"worker_process_setup_hook": "diet_ray.worker_logs.quiet_local_worker"})


def actor_name(out: str) -> str:
    return "diet-memory-" + hashlib.sha256(out.encode()).hexdigest()[:12]


def save_config(cfg: DistillConfig) -> None:
    """Write `config.json` into the output; refuse an output made with another config."""
    fs, root = open_fs(cfg.out)
    path = join(root, "config.json")
    with storage_errors(cfg.out):
        if fs.exists(path):
            old = json.loads(fs.cat_file(path))
            if old.get("hash") != cfg.hash():
                raise DataError(
                    f"{cfg.out} was written with a different config (hash {old.get('hash')} vs "
                    f"{cfg.hash()}); use a new --out or the same config to resume"
                )
        write_bytes(fs, path, json.dumps({"hash": cfg.hash(), "config": cfg.to_dict()},
                                         indent=2).encode())


def distill(cfg: DistillConfig,
            during: Callable[[int, int], AbstractContextManager] | None = None) -> dict:
    """Run (or resume) the distillation job; return the final manifest as a dict.

    `during(total, num_stages)`, when given, is a context manager held around the Train run
    (entered even when every stage is already committed), e.g. `EvaluateEvery.watching`."""
    import ray

    if not cfg.data or not cfg.out:
        raise DataError("distill needs --data (a prepared dataset) and --out (an output URI)")
    schema = Schema.load(cfg.data)
    total = cfg.stages or len(schema.stages)
    if total > len(schema.stages):
        raise DataError(f"stages={total} but {cfg.data} has {len(schema.stages)} stages")
    save_config(cfg)
    init_ray()
    actor = start_memory_actor(actor_name(cfg.out), cfg.out, cfg.hash(), namespace=NAMESPACE)
    start = ray.get(actor.last_committed.remote()) + 1
    with during(total, len(schema.stages)) if during else nullcontext():
        _fit(cfg, schema, start, total)
    manifest = SnapshotStore(cfg.out).latest()
    if manifest is None or manifest.stage != total - 1:
        raise RuntimeError(f"distillation ended without committing stage {total - 1}")
    return json.loads(manifest.to_json())


def _fit(cfg: DistillConfig, schema: Schema, start: int, total: int) -> None:
    """One TorchTrainer.fit() over stages start..total-1 (nothing when all are committed)."""
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from diet_ray.distill.train_loop import train_loop_per_worker

    if start >= total:
        log.info("all %d stages already committed in %s", total, cfg.out)
        return
    log.info("distilling stages %d..%d of %s into %s (%d Train workers)", start, total - 1,
             cfg.data, cfg.out, cfg.train.num_workers)
    began = time.perf_counter()
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"cfg": cfg.to_dict(), "schema": schema.to_json(),
                           "actor": actor_name(cfg.out), "namespace": NAMESPACE},
        scaling_config=ScalingConfig(
            num_workers=cfg.train.num_workers, use_gpu=cfg.train.use_gpu,
            resources_per_worker={"CPU": cfg.train.cpus_per_worker},
            placement_strategy=cfg.train.placement_strategy),
        run_config=RunConfig(
            name=actor_name(cfg.out),
            storage_path=os.path.join(tempfile.gettempdir(), "diet-ray-train"),
            failure_config=FailureConfig(max_failures=cfg.train.max_failures)),
    )
    trainer.fit()
    log.info("distilled %d stages in %.0fs", total - start, time.perf_counter() - began)
