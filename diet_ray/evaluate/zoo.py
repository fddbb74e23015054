"""The full-data reference: each architecture trained by one continual pass over the
training stages (stage 0..T-1, in order, shuffled within a stage) and tested on stage T,
the standard streaming protocol. `diet-ray zoo` prints the table; the benchmark reuses it
as method `full`.

Stages are read in-process (`read_stage_table`): right for streams whose training stages
fit in one process's memory (MovieLens, KuaiRand-Pure); the distillation job's continual
model is the distributed version of the same protocol.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np
import torch

from diet_ray.data.batch import SparseBatch, collate
from diet_ray.data.schema import Schema
from diet_ray.data.stream import read_stage_table
from diet_ray.evaluate.candidates import CandidateResult, summarise
from diet_ray.evaluate.train import TrainConfig, evaluate, shuffled_batches, train_continual
from diet_ray.models import MODELS, build_model

# Learning rates found on MovieLens 100K (one continual pass, batch 256, Adam): the linear
# models want larger steps than the deep ones.
DEFAULT_LR = {"lr": 1e-2, "fm": 3e-3, "autoint": 3e-3}
DEEP_LR = 1e-3
DEFAULT_ARCHS = ("lr", "fm", "dnn", "wide_deep", "deepfm", "dcn", "dcnv2", "xdeepfm",
                 "autoint", "fibinet")


def default_train_config(arch: str, seed: int, batch_size: int = 256) -> TrainConfig:
    return TrainConfig(lr=DEFAULT_LR.get(arch, DEEP_LR), batch_size=batch_size, seed=seed)


def load_stages(uri: str, schema: Schema, stages: range) -> list[SparseBatch]:
    return [collate(read_stage_table(uri, t, schema), schema) for t in stages]


def train_full(arch: str, schema: Schema, train: list[SparseBatch], test: SparseBatch,
               seed: int, batch_size: int = 256, model_config: dict | None = None,
               lr_scale: float = 1.0) -> CandidateResult:
    """One continual pass over `train` stages with seed `seed`, tested on `test`.

    `model_config` overrides the architecture's defaults; `lr_scale` multiplies its
    default learning rate (the benchmark's hyper-parameter variants)."""
    torch.manual_seed(seed)
    model = build_model(arch, schema, model_config)
    g = torch.Generator().manual_seed(seed)
    cfg = default_train_config(arch, seed, batch_size)
    cfg = replace(cfg, lr=cfg.lr * lr_scale)
    start = time.perf_counter()
    result = train_continual(model, [list(shuffled_batches(b, batch_size, g)) for b in train], cfg)
    seconds = time.perf_counter() - start
    metrics = evaluate(model, [test])
    return CandidateResult("full", arch, seed, metrics["auc"], metrics["logloss"], seconds,
                           result.rows)


def format_table(archs: dict[str, dict[str, float]]) -> str:
    """Markdown table of `summarise(...)[method]`: {arch: metrics}."""
    lines = ["| arch | test AUC | test LogLoss | train seconds |", "|---|---|---|---|"]
    for arch, r in archs.items():
        lines.append(
            f"| {arch} | {r['auc']:.4f} ± {r['auc_std']:.4f} | "
            f"{r['logloss']:.4f} ± {r['logloss_std']:.4f} | {r['train_seconds']:.1f} |"
        )
    return "\n".join(lines)


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="prepared dataset URI")
    p.add_argument("--archs", default=",".join(DEFAULT_ARCHS),
                   help=f"comma-separated, from {sorted(MODELS)}")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")


def run(args: argparse.Namespace) -> int:
    from diet_ray.data.errors import DataError

    if args.threads:
        torch.set_num_threads(args.threads)
    archs = [a for a in args.archs.split(",") if a]
    unknown = [a for a in archs if a not in MODELS]
    if unknown:
        raise DataError(f"--archs: unknown {unknown}; choose from {sorted(MODELS)}")
    schema = Schema.load(args.data)
    if len(schema.stages) < 2:
        raise DataError(f"{args.data}: needs at least 2 stages (train on all but the last)")
    t = len(schema.stages) - 1
    train = load_stages(args.data, schema, range(t))
    test = load_stages(args.data, schema, range(t, t + 1))[0]
    results = []
    for arch in archs:
        for seed in range(args.seeds):
            results.append(train_full(arch, schema, train, test, seed, args.batch_size))
        print(f"{arch}: AUC {np.mean([r.auc for r in results if r.arch == arch]):.4f}",
              flush=True)
    print(f"\nContinual pass over stages 0..{t - 1}, test on stage {t} "
          f"({args.seeds} seeds, mean ± std):\n")
    print(format_table(summarise(results)["full"]))
    return 0
