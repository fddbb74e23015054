"""Training candidate models on a small training set (a memory snapshot or a sample) under
one fixed budget (`EvalConfig`: the same for every architecture and every method), and
testing them on the next real stage.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from diet_ray.config import EvalConfig
from diet_ray.data.batch import SparseBatch
from diet_ray.data.schema import Schema
from diet_ray.distill.state import RunState
from diet_ray.evaluate.train import TrainConfig, evaluate, shuffled_batches, train_epochs
from diet_ray.memory.slots import MemoryTensors
from diet_ray.memory.store import SnapshotStore
from diet_ray.models import build_model


@dataclass(frozen=True)
class CandidateResult:
    method: str
    arch: str
    seed: int
    auc: float
    logloss: float
    train_seconds: float
    rows_trained: int


def detached(batch: SparseBatch) -> SparseBatch:
    return SparseBatch(
        ids=batch.ids, weights=batch.weights.detach(),
        dense=None if batch.dense is None else batch.dense.detach(),
        labels=batch.labels.detach(), sample_weight=batch.sample_weight.detach(),
    )


def load_memory(out: str, stage: int | None = None) -> tuple[SparseBatch, int]:
    """The committed memory of `stage` (default: the latest) as a SparseBatch, and its stage."""
    arrays, manifest = SnapshotStore(out).load(stage)
    slots = RunState.from_arrays(arrays).slots
    return detached(MemoryTensors(slots, np.zeros(0, np.int64)).batch()), manifest.stage


def train_candidate(method: str, arch: str, schema: Schema, data: SparseBatch, test: SparseBatch,
                    cfg: EvalConfig, seed: int, model_config: dict | None = None
                    ) -> CandidateResult:
    """Train a fresh `arch` on `data` with the fixed budget `cfg`, test on `test`."""
    torch.manual_seed(seed)
    model = build_model(arch, schema, model_config)
    g = torch.Generator().manual_seed(seed)
    train_cfg = TrainConfig(lr=cfg.lr, batch_size=cfg.batch_size, epochs=cfg.epochs, seed=seed)
    start = time.perf_counter()
    result = train_epochs(model, lambda: shuffled_batches(data, cfg.batch_size, g), train_cfg)
    seconds = time.perf_counter() - start
    metrics = evaluate(model, [test])
    return CandidateResult(method, arch, seed, metrics["auc"], metrics["logloss"], seconds,
                           result.rows)


def summarise(results: list[CandidateResult]) -> dict[str, dict[str, dict[str, float]]]:
    """{method: {arch: {auc, auc_std, logloss, logloss_std, train_seconds, rows_trained}}},
    means and stds over seeds, methods and archs in first-seen order."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for r in results:
        out.setdefault(r.method, {}).setdefault(r.arch, {})
    for method, archs in out.items():
        for arch in archs:
            rs = [r for r in results if r.method == method and r.arch == arch]
            archs[arch] = {
                "auc": float(np.mean([r.auc for r in rs])),
                "auc_std": float(np.std([r.auc for r in rs])),
                "logloss": float(np.mean([r.logloss for r in rs])),
                "logloss_std": float(np.std([r.logloss for r in rs])),
                "train_seconds": float(np.mean([r.train_seconds for r in rs])),
                "rows_trained": float(np.mean([r.rows_trained for r in rs])),
            }
    return out
