"""Train and evaluate one model on `SparseBatch`es: small functions, composed by the caller.

A model is any `nn.Module` whose `forward(batch: SparseBatch)` returns logits [B] (no
sigmoid). Nothing here owns the model: `make_optimizer`, `loss_fn`, `train_epochs`
(multi-epoch, early stopping, fixed step budget), `train_continual` (one pass over stages,
the streaming protocol), `evaluate` / `evaluate_dataset` (streamed AUC + LogLoss) and
`predict` each do one thing. Typical use on an in-memory training set::

    result = fit(model, memory_batch, TrainConfig(lr=1e-2, epochs=5, patience=2))
    metrics = evaluate(model, table_batches(test_table, schema, 4096))
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from diet_ray.data.batch import SparseBatch
from diet_ray.data.schema import Schema
from diet_ray.data.stream import iter_sparse_batches
from diet_ray.evaluate.metrics import StreamingAUC, StreamingLogLoss, auc
from diet_ray.progress import Progress

OptimizerName = Literal["adam", "adagrad", "sgd"]
Valid = SparseBatch | Sequence[SparseBatch] | Callable[[], Iterable[SparseBatch]]
EXACT_AUC_ROWS = 2_000_000


@dataclass(frozen=True)
class TrainConfig:
    """How to train one model. Data, never mutated.

    lr, optimizer, weight_decay: the optimiser ("adam" | "adagrad" | "sgd"); weight decay
        applies to dense parameters only when embeddings have sparse gradients.
    batch_size: rows per step for in-memory data (`fit`, `shuffled_batches`).
    epochs: passes over the data (`train_epochs`); ignored by `train_continual`.
    max_steps: a fixed budget of optimiser steps. When set, `train_epochs` runs exactly this
        many steps, cycling over the data as often as needed (`epochs` is ignored), unless
        early stopping ends it sooner; `train_continual` stops after at most this many.
    patience: stop after this many epochs without a better validation AUC (None: never).
    valid_fraction: share of in-memory rows `fit` holds out for early stopping.
    seed: seeds torch (dropout etc.) and `fit`'s shuffling / split.
    sparse: None keeps each nn.Embedding / nn.EmbeddingBag as built; True / False sets their
        `sparse` flag (sparse gradients) before the optimiser is made. Weights of sparse
        embeddings go to SparseAdam (adam) or a weight-decay-free group (adagrad, sgd).
    num_threads: `torch.set_num_threads` for training (None: leave torch's default).
    """

    lr: float = 1e-3
    optimizer: OptimizerName = "adam"
    weight_decay: float = 0.0
    batch_size: int = 512
    epochs: int = 1
    max_steps: int | None = None
    patience: int | None = None
    valid_fraction: float = 0.1
    seed: int = 0
    sparse: bool | None = None
    num_threads: int | None = None

    def __post_init__(self) -> None:
        checks = {
            "lr": self.lr > 0,
            "optimizer": self.optimizer in ("adam", "adagrad", "sgd"),
            "weight_decay": self.weight_decay >= 0,
            "batch_size": self.batch_size >= 1,
            "epochs": self.epochs >= 1,
            "max_steps": self.max_steps is None or self.max_steps >= 1,
            "patience": self.patience is None or self.patience >= 1,
            "valid_fraction": 0.0 <= self.valid_fraction < 1.0,
            "num_threads": self.num_threads is None or self.num_threads >= 1,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            values = ", ".join(f"{k}={getattr(self, k)!r}" for k in bad)
            raise ValueError(
                f"invalid TrainConfig: {values}. Need lr > 0, optimizer in adam|adagrad|sgd, "
                "weight_decay >= 0, batch_size/epochs/max_steps/patience/num_threads >= 1, "
                "0 <= valid_fraction < 1"
            )


@dataclass
class TrainResult:
    """What one training run did. `history` has one dict per epoch (or per stage)."""

    steps: int = 0
    rows: int = 0
    epochs: int = 0
    train_seconds: float = 0.0
    best_epoch: int | None = None  # 1-based epoch whose end state was kept (with validation)
    best_valid_auc: float | None = None
    stopped_early: bool = False
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.train_seconds if self.train_seconds > 0 else math.nan


# -- optimiser --------------------------------------------------------------------------------


class Optimizers:
    """A few torch optimisers stepped together (dense + sparse parameters), one interface."""

    def __init__(self, optimizers: list[torch.optim.Optimizer]) -> None:
        self.optimizers = optimizers

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for opt in self.optimizers:
            opt.step()

    def state_dict(self) -> list[dict[str, Any]]:
        return [opt.state_dict() for opt in self.optimizers]

    def load_state_dict(self, states: list[dict[str, Any]]) -> None:
        for opt, state in zip(self.optimizers, states, strict=True):
            opt.load_state_dict(state)


def set_sparse_embeddings(model: nn.Module, sparse: bool) -> int:
    """Set `sparse` on every nn.Embedding / nn.EmbeddingBag of `model`; returns how many."""
    modules = [m for m in model.modules() if isinstance(m, (nn.Embedding, nn.EmbeddingBag))]
    for m in modules:
        m.sparse = sparse
    return len(modules)


def sparse_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Weights of the embedding modules built with `sparse=True` (their grads are sparse)."""
    return [
        m.weight
        for m in model.modules()
        if isinstance(m, (nn.Embedding, nn.EmbeddingBag)) and m.sparse
    ]


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> Optimizers:
    """The optimiser for `model`: dense parameters with cfg.optimizer; weights of sparse
    embeddings with SparseAdam (adam) or in a weight-decay-free group (adagrad, sgd)."""
    sparse = {id(p): p for p in sparse_parameters(model) if p.requires_grad}
    dense = [p for p in model.parameters() if p.requires_grad and id(p) not in sparse]
    lr, wd = cfg.lr, cfg.weight_decay
    groups = [{"params": dense, "weight_decay": wd}] if dense else []
    if cfg.optimizer == "adam":
        opts: list[torch.optim.Optimizer] = [torch.optim.Adam(groups, lr=lr)] if dense else []
        if sparse:
            opts.append(torch.optim.SparseAdam(list(sparse.values()), lr=lr))
    else:
        if sparse:
            groups.append({"params": list(sparse.values()), "weight_decay": 0.0})
        if not groups:
            raise ValueError("make_optimizer: the model has no trainable parameters")
        cls = torch.optim.Adagrad if cfg.optimizer == "adagrad" else torch.optim.SGD
        opts = [cls(groups, lr=lr)]
    if not opts:
        raise ValueError("make_optimizer: the model has no trainable parameters")
    return Optimizers(opts)


# -- loss and one step ------------------------------------------------------------------------


def loss_fn(logits: torch.Tensor, batch: SparseBatch) -> torch.Tensor:
    """Weighted BCE-with-logits: sum_b w_b * bce(logits_b, labels_b) / sum_b w_b.

    `logits` [B], `batch.labels` [B] in [0, 1] (soft allowed), `batch.sample_weight` [B].
    Differentiable in logits, labels and weights (usable with create_graph=True).
    """
    if logits.shape != batch.labels.shape:
        raise ValueError(
            f"model returned logits of shape {tuple(logits.shape)}, expected "
            f"{tuple(batch.labels.shape)}: forward must return one logit per row, [B]"
        )
    per_row = nn.functional.binary_cross_entropy_with_logits(
        logits, batch.labels.to(logits.dtype), reduction="none"
    )
    w = batch.sample_weight.to(logits.dtype)
    return (w * per_row).sum() / w.sum().clamp_min(1e-12)


def _step(model: nn.Module, opt: Optimizers, batch: SparseBatch) -> float:
    opt.zero_grad()
    loss = loss_fn(model(batch), batch)
    loss.backward()
    opt.step()
    return float(loss.detach())


def _prepare(model: nn.Module, cfg: TrainConfig, optimizer: Optimizers | None) -> Optimizers:
    if cfg.num_threads is not None:
        torch.set_num_threads(cfg.num_threads)
    torch.manual_seed(cfg.seed)
    if cfg.sparse is not None:
        set_sparse_embeddings(model, cfg.sparse)
    model.train()
    return optimizer or make_optimizer(model, cfg)


# -- in-memory data -----------------------------------------------------------------------------


def shuffled_batches(
    batch: SparseBatch, batch_size: int, generator: torch.Generator | None = None
) -> Iterator[SparseBatch]:
    """One epoch over an in-memory `batch` [N, ...] in random order, `batch_size` rows each
    (the last one smaller)."""
    perm = torch.randperm(len(batch), generator=generator)
    for start in range(0, len(batch), batch_size):
        yield batch.select(perm[start : start + batch_size])


def split_valid(
    batch: SparseBatch, fraction: float, generator: torch.Generator | None = None
) -> tuple[SparseBatch, SparseBatch]:
    """Random (train, valid) split of `batch`, `fraction` of rows (at least 1) in valid."""
    n = len(batch)
    n_valid = max(1, round(fraction * n))
    if n_valid >= n:
        raise ValueError(f"cannot hold out {fraction:.0%} of {n} rows for validation")
    perm = torch.randperm(n, generator=generator)
    return batch.select(perm[n_valid:]), batch.select(perm[:n_valid])


# -- training loops -----------------------------------------------------------------------------


def _valid_batches(valid: Valid, batch_size: int) -> Iterable[SparseBatch]:
    if isinstance(valid, SparseBatch):
        return (valid.select(slice(i, i + batch_size)) for i in range(0, len(valid), batch_size))
    return valid() if callable(valid) else valid


def train_epochs(
    model: nn.Module,
    batches_fn: Callable[[], Iterable[SparseBatch]],
    cfg: TrainConfig,
    valid: Valid | None = None,
    optimizer: Optimizers | None = None,
) -> TrainResult:
    """Train `model` for cfg.epochs passes (or exactly cfg.max_steps steps).

    `batches_fn()` returns one epoch's iterable of `SparseBatch` (shuffled by the caller, e.g.
    with `shuffled_batches`). With `valid` (a batch, a list of batches or a callable returning
    batches), validation AUC is measured after each epoch, the best epoch's parameters are
    restored at the end, and cfg.patience epochs without improvement stop training.
    `train_seconds` counts training steps only, not validation.
    """
    opt = _prepare(model, cfg, optimizer)
    result = TrainResult()
    best_state: dict[str, torch.Tensor] | None = None
    bad_epochs = 0
    progress = Progress("train", unit="rows", every_s=30.0)
    epochs = cfg.epochs if cfg.max_steps is None else math.inf
    while result.epochs < epochs and result.steps != cfg.max_steps:
        start, loss_sum, rows = time.perf_counter(), 0.0, 0
        for batch in batches_fn():
            loss_sum += _step(model, opt, batch) * len(batch)
            rows += len(batch)
            result.steps += 1
            progress.update(len(batch))
            if result.steps == cfg.max_steps:
                break
        if rows == 0:
            raise ValueError("train_epochs: batches_fn() yielded no rows for an epoch")
        result.train_seconds += time.perf_counter() - start
        result.rows += rows
        result.epochs += 1
        record = {"epoch": result.epochs, "loss": loss_sum / rows, "steps": result.steps}
        result.history.append(record)
        if valid is None:
            continue
        valid_auc = float(evaluate(model, _valid_batches(valid, cfg.batch_size))["auc"])
        record["valid_auc"] = valid_auc
        if math.isnan(valid_auc):
            raise ValueError(
                f"validation AUC is undefined after epoch {result.epochs}: the validation rows "
                "are empty or hold one class (pass a batch, a list or a callable, not a "
                "one-shot iterator)"
            )
        if result.best_valid_auc is None or valid_auc > result.best_valid_auc:
            result.best_valid_auc, result.best_epoch, bad_epochs = valid_auc, result.epochs, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            bad_epochs += 1
            if cfg.patience is not None and bad_epochs >= cfg.patience:
                result.stopped_early = True
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    return result


def fit(
    model: nn.Module, data: SparseBatch, cfg: TrainConfig, valid: Valid | None = None
) -> TrainResult:
    """`train_epochs` over an in-memory `data` [N, ...], reshuffled each epoch (seeded by
    cfg.seed). With cfg.patience and no `valid`, cfg.valid_fraction of `data` is held out."""
    gen = torch.Generator().manual_seed(cfg.seed)
    if valid is None and cfg.patience is not None and cfg.valid_fraction > 0:
        data, valid = split_valid(data, cfg.valid_fraction, gen)
    return train_epochs(model, lambda: shuffled_batches(data, cfg.batch_size, gen), cfg, valid)


def train_continual(
    model: nn.Module,
    stages: Iterable[Iterable[SparseBatch]],
    cfg: TrainConfig,
    optimizer: Optimizers | None = None,
    on_stage_end: Callable[[int, nn.Module], None] | None = None,
) -> TrainResult:
    """One pass over each stage, in order, with one optimiser carried across stages.

    This is the continual (streaming) protocol: stage t's batches are seen once, after stage
    t-1's. `on_stage_end(t, model)` runs after stage t (0-based), e.g. to test on stage t+1.
    cfg.epochs and cfg.patience are ignored; cfg.max_steps caps the total steps.
    `history` has one record per stage.
    """
    opt = _prepare(model, cfg, optimizer)
    result = TrainResult()
    total = len(stages) if isinstance(stages, Sequence) else None
    for t, stage in enumerate(stages):
        progress = Progress(f"continual stage {t + 1}/{total or '?'}", unit="rows")
        start, loss_sum, rows = time.perf_counter(), 0.0, 0
        for batch in stage:
            if result.steps == cfg.max_steps:
                break
            loss_sum += _step(model, opt, batch) * len(batch)
            rows += len(batch)
            result.steps += 1
            progress.update(len(batch))
        result.train_seconds += time.perf_counter() - start
        progress.finish()
        result.rows += rows
        result.epochs += 1
        result.history.append(
            {"stage": t, "rows": rows, "steps": result.steps,
             "loss": loss_sum / rows if rows else math.nan}
        )
        if on_stage_end is not None:
            on_stage_end(t, model)
            model.train()
        if result.steps == cfg.max_steps:
            break
    return result


# -- evaluation ---------------------------------------------------------------------------------


def _logits(
    model: nn.Module, batches: Iterable[SparseBatch]
) -> Iterator[tuple[SparseBatch, torch.Tensor]]:
    """(batch, logits [B]) pairs with the model in eval mode and no autograd."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in batches:
                yield batch, model(batch)
    finally:
        model.train(was_training)


def predict(model: nn.Module, batches: Iterable[SparseBatch]) -> np.ndarray:
    """Predicted probabilities [N] (float64) for all rows of `batches`, in order."""
    parts = [torch.sigmoid(lg.double()).numpy() for _, lg in _logits(model, batches)]
    return np.concatenate(parts) if parts else np.zeros(0)


def evaluate(
    model: nn.Module,
    batches: Iterable[SparseBatch],
    exact_rows: int = EXACT_AUC_ROWS,
    num_bins: int = 2**16,
) -> dict[str, float | int | bool]:
    """AUC and LogLoss of `model` on a stream of batches, weighted by `sample_weight`.

    Streams: memory is O(num_bins) plus, while at most `exact_rows` rows have been seen,
    their logits (for the exact AUC). Returns {"auc", "logloss", "rows", "auc_error_bound",
    "auc_exact"}: the exact AUC (error bound 0, auc_exact True) when rows <= exact_rows,
    else the `StreamingAUC` value with its error bound (auc_exact False).
    """
    hist, ll = StreamingAUC(num_bins), StreamingLogLoss()
    kept: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None = []
    for batch, logits in _logits(model, batches):
        probs = torch.sigmoid(logits.double())
        hist.update(batch.labels, probs, batch.sample_weight)
        ll.update(batch.labels, probs, batch.sample_weight)
        if kept is not None:
            kept.append((batch.labels, logits, batch.sample_weight))
            if hist.rows > exact_rows:
                kept = None
    if kept:
        labels, scores, weights = (torch.cat(parts) for parts in zip(*kept, strict=True))
        value, bound = auc(labels, scores, weights), 0.0
    else:
        value, bound = hist.compute(), hist.error_bound()
    return {
        "auc": value,
        "logloss": ll.compute(),
        "rows": hist.rows,
        "auc_error_bound": bound,
        "auc_exact": kept is not None,
    }


def evaluate_dataset(
    model: nn.Module, dataset: Any, schema: Schema, batch_size: int = 4096, **iter_kwargs: Any
) -> dict[str, float | int | bool]:
    """`evaluate` over a Ray Dataset (or DataIterator) of prepared rows, streamed batch by
    batch on the caller through `iter_sparse_batches` (never collected whole)."""
    return evaluate(model, iter_sparse_batches(dataset, schema, batch_size, **iter_kwargs))
