"""`diet-ray evaluate`: a Ray Tune fan-out over architectures × seeds on one snapshot.

Each trial is a plain function trainable with its CPU share: it trains a fresh model on
the snapshot's memory under the fixed budget (`EvalConfig`) and tests it on the next real
stage (train on the past, test on the next block). The memory and the test rows are
passed with `tune.with_parameters`, so they sit in the object store once and each node
reads them once, not once per trial or epoch. Results: a printed table, `results.csv`
and `results.json` in `--out`.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from diet_ray.config import EvalConfig
from diet_ray.data.batch import SparseBatch, collate
from diet_ray.data.errors import DataError
from diet_ray.data.fs import join, open_fs, write_bytes
from diet_ray.data.schema import Schema
from diet_ray.data.stream import read_stage_table
from diet_ray.distill.distiller import seeded
from diet_ray.evaluate.candidates import load_memory, train_candidate
from diet_ray.models import MODELS

FIELDS = ("arch", "seed", "auc", "logloss", "train_seconds", "rows_trained")


def trial(config: dict, memory: SparseBatch, test: SparseBatch, schema_json: str,
          eval_cfg: dict) -> None:
    """One Tune trial: train `config["arch"]` with `config["seed"]`, report test metrics."""
    import torch
    from ray import tune

    torch.set_num_threads(1)
    schema = Schema.from_json(schema_json)
    r = train_candidate("memory", config["arch"], schema, memory, test, EvalConfig(**eval_cfg),
                        config["seed"])
    tune.report({"auc": r.auc, "logloss": r.logloss, "train_seconds": r.train_seconds,
                 "rows_trained": r.rows_trained})


@dataclass(frozen=True)
class EvalData:
    """A snapshot's memory and the next real stage's rows to test on, for a Tune fan-out."""

    schema: Schema
    memory: SparseBatch
    snapshot_stage: int
    test_stage: int
    test: SparseBatch


def load_eval_data(snapshot: str, data: str, stage: int | None = None) -> EvalData:
    """The memory of `stage` (default: latest) in `snapshot` and stage+1 of `data`."""
    schema = Schema.load(data)
    memory, snap_stage = load_memory(snapshot, stage)
    test_stage = snap_stage + 1
    if test_stage >= len(schema.stages):
        raise DataError(f"snapshot stage {snap_stage} has no next stage in {data} to test on")
    test = collate(read_stage_table(data, test_stage, schema), schema)
    return EvalData(schema, memory, snap_stage, test_stage, test)


def fit_tuner(trial_fn: Callable[..., None], data: EvalData, param_space: dict, name: str,
              cpus_per_trial: float, eval_cfg: EvalConfig,
              tune_config: Any = None) -> Any:
    """Run `trial_fn(config, memory, test, schema_json, eval_cfg)` as a Tune function
    trainable with `cpus_per_trial` CPUs (data passed once through the object store);
    returns the ResultGrid, raising if any trial failed."""
    from ray import tune

    trainable = tune.with_resources(
        tune.with_parameters(trial_fn, memory=data.memory, test=data.test,
                             schema_json=data.schema.to_json(), eval_cfg=eval_cfg.__dict__),
        {"cpu": cpus_per_trial})
    tuner = tune.Tuner(
        trainable, param_space=param_space, tune_config=tune_config,
        run_config=tune.RunConfig(name=name, verbose=0,
                                  storage_path=os.path.join(tempfile.gettempdir(), "diet-ray-tune")),
    )
    grid = tuner.fit()
    for result in grid:
        if result.error:
            raise RuntimeError(f"trial {result.config} failed: {result.error}")
    return grid


def evaluate_snapshot(snapshot: str, data: str, archs: list[str], seeds: int,
                      stage: int | None = None, seed: int = 0,
                      eval_cfg: EvalConfig | None = None, cpus_per_trial: float = 0.5
                      ) -> list[dict]:
    """Fan out archs × seeds on the snapshot of `stage` (default: latest); test on stage+1."""
    from ray import tune

    unknown = [a for a in archs if a not in MODELS]
    if unknown:
        raise DataError(f"--archs: unknown {unknown}; choose from {sorted(MODELS)}")
    ev = load_eval_data(snapshot, data, stage)
    param_space = {"arch": tune.grid_search(archs),
                   "seed": tune.grid_search([seeded(seed, s, 30) % 2**31 for s in range(seeds)])}
    grid = fit_tuner(trial, ev, param_space, f"evaluate-stage{ev.snapshot_stage}",
                     cpus_per_trial, eval_cfg or EvalConfig())
    rows = [{"arch": result.config["arch"], "seed": result.config["seed"],
             **{k: result.metrics[k] for k in FIELDS[2:]},
             "snapshot_stage": ev.snapshot_stage, "test_stage": ev.test_stage}
            for result in grid]
    order = {a: i for i, a in enumerate(archs)}
    return sorted(rows, key=lambda r: (order[r["arch"]], r["seed"]))


def save_results(rows: list[dict], out: str, name: str = "results") -> None:
    """`rows` as `name`.csv and `name`.json in folder/URI `out`."""
    fs, root = open_fs(out)
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_bytes(fs, join(root, f"{name}.csv"), text.getvalue().encode())
    write_bytes(fs, join(root, f"{name}.json"), json.dumps(rows, indent=2).encode())


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--snapshot", required=True, help="distillation output URI (its snapshots)")
    p.add_argument("--data", required=True, help="prepared dataset URI")
    p.add_argument("--archs", default="lr,fm,dnn,deepfm,dcn")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--stage", type=int, help="snapshot stage (default: the latest)")
    p.add_argument("--seed", type=int, default=0, help="base seed; trial seeds derive from it")
    p.add_argument("--cpus-per-trial", type=float, default=0.5)
    p.add_argument("--out", help="folder/URI for results.csv and results.json")


def run(args: argparse.Namespace) -> int:
    from diet_ray.pipeline import init_ray

    init_ray()
    rows = evaluate_snapshot(args.snapshot, args.data, [a for a in args.archs.split(",") if a],
                             args.seeds, args.stage, args.seed, cpus_per_trial=args.cpus_per_trial)
    print(f"snapshot stage {rows[0]['snapshot_stage']}, tested on stage {rows[0]['test_stage']}:")
    print("| arch | seed | test AUC | test LogLoss | train seconds |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['arch']} | {r['seed']} | {r['auc']:.4f} | {r['logloss']:.4f} | "
              f"{r['train_seconds']:.2f} |")
    if args.out:
        save_results(rows, args.out)
        print(f"results in {args.out}")
    return 0
