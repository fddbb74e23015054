"""Training / scoring throughput benchmark on synthetic traffic (`diet-ray bench-speed`).

`embedding_speed` builds a synthetic schema of `fields` categorical fields of `vocab` ids
each, pre-generates power-law (Zipf) batches outside the timed region and measures rows/s
of one architecture in three modes, all through the project's real code path
(`build_model`, `make_optimizer`, `loss_fn`):

    dense_adam  embeddings with dense gradients, Adam on every parameter
    sparse      embeddings with sparse gradients (`sparse_grad=True`): SparseAdam on the
                embedding tables, Adam on the rest (`make_optimizer`)
    score       forward only, eval mode, under `torch.inference_mode`

A training step is timed whole (zero_grad, forward, loss, backward, optimiser step) with
`time.perf_counter`; a scoring step is one forward. The modes are interleaved repeat by
repeat (dense, sparse, score, dense, ...) so that background load hits them alike, and a
mode's rate is ``batch_size / median step time`` over all its timed steps.

Note the optimisers differ in kind, not only in speed: SparseAdam is "lazy" (rows absent
from a batch keep their moments and do not move), dense Adam decays every row's moments
and moves rows with non-zero momentum every step. They agree on the first step (but for
where eps enters), and SGD agrees with sparse and dense gradients at every step
(`tests/unit/test_speed.py`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from diet_ray.data.batch import SparseBatch
from diet_ray.data.schema import Schema, SparseField
from diet_ray.evaluate.train import (
    OptimizerName,
    Optimizers,
    TrainConfig,
    loss_fn,
    make_optimizer,
)
from diet_ray.models import MODELS, build_model

MODES = ("dense_adam", "sparse", "score")
FUSED_MODE = "dense_adam_fused"  # optional extra baseline (fused_baseline=True)
ZIPF_EXPONENT = 1.05
POSITIVE_RATE = 0.25
OTHER_BUSY_WARN = 0.25  # CPUs kept busy by other processes above which `run` warns


def synthetic_schema(fields: int, vocab: int) -> Schema:
    """`fields` categorical fields ``c0..`` of `vocab` ids each (id 0 = padding / OOV)."""
    if fields < 1 or vocab < 2:
        raise ValueError(f"need fields >= 1 and vocab >= 2, got fields={fields}, vocab={vocab}")
    sparse = tuple(SparseField(f"c{i}", "categorical", vocab) for i in range(fields))
    return Schema(dataset="synthetic", sparse=sparse, dense=(), stages=(), stage_by="rows")


def synthetic_batches(
    schema: Schema,
    batch_size: int,
    count: int,
    seed: int = 0,
    exponent: float = ZIPF_EXPONENT,
) -> list[SparseBatch]:
    """`count` categorical batches whose ids follow a Zipf law (rank r drawn with
    probability ~ r^-exponent over ids 1..vocab-1), the popular ids scattered over each
    field's table by a per-field random permutation, as in real click logs. Labels are
    Bernoulli(POSITIVE_RATE); every row has weight 1."""
    gen = torch.Generator().manual_seed(seed)
    cols = []
    for v in schema.vocab_sizes:
        ranks = torch.arange(1, v, dtype=torch.float64)
        cdf = ranks.pow(-exponent).cumsum(0)
        cdf /= cdf[-1].clone()
        perm = torch.randperm(v - 1, generator=gen) + 1  # rank -> id in 1..v-1
        cols.append((cdf, perm))
    out = []
    for _ in range(count):
        ids = torch.empty(batch_size, schema.num_fields, 1, dtype=torch.int64)
        for f, (cdf, perm) in enumerate(cols):
            u = torch.rand(batch_size, generator=gen, dtype=torch.float64)
            rank = torch.searchsorted(cdf, u).clamp_max_(len(perm) - 1)
            ids[:, f, 0] = perm[rank]
        labels = (torch.rand(batch_size, generator=gen) < POSITIVE_RATE).float()
        ones = torch.ones(batch_size, schema.num_fields, 1)
        out.append(SparseBatch(ids, ones, None, labels, torch.ones(batch_size)))
    return out


def build_trainer(
    arch: str,
    schema: Schema,
    sparse: bool,
    dim: int,
    seed: int,
    lr: float = 1e-3,
    optimizer: OptimizerName = "adam",
) -> tuple[nn.Module, Optimizers]:
    """Model `arch` (embedding dim `dim`, sparse or dense embedding gradients) seeded by
    `seed`, in train mode, with the optimiser `make_optimizer` gives it."""
    torch.manual_seed(seed)
    overrides: dict[str, Any] = {"sparse_grad": sparse}
    if arch in MODELS and "embedding_dim" in {f.name for f in dataclass_fields(MODELS[arch].config)}:
        overrides["embedding_dim"] = dim  # `lr` has none
    model = build_model(arch, schema, overrides)
    model.train()
    return model, make_optimizer(model, TrainConfig(lr=lr, optimizer=optimizer))


def train_step(model: nn.Module, opt: Optimizers, batch: SparseBatch) -> float:
    """One whole training step, as `diet_ray.evaluate.train` takes it; returns the loss."""
    opt.zero_grad()
    loss = loss_fn(model(batch), batch)
    loss.backward()
    opt.step()
    return float(loss.detach())


def _timed(
    fn: Callable[[SparseBatch], Any], batches: Sequence[SparseBatch], start: int, steps: int
) -> list[float]:
    times = []
    for i in range(steps):
        batch = batches[(start + i) % len(batches)]
        t0 = time.perf_counter()
        fn(batch)
        times.append(time.perf_counter() - t0)
    return times


def _load_average() -> float | None:
    """The 1-minute load average (None where the OS has none)."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _cpu_seconds() -> tuple[float, float] | None:
    """(CPU seconds all CPUs have been busy since boot, CPU seconds of this process), from
    /proc/stat and os.times (None off Linux). Busy = user + nice + system + irq + softirq +
    steal (steal: taken by the hypervisor for other guests)."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    busy = sum(ticks) - ticks[3] - ticks[4]  # all but idle and iowait
    own = os.times()
    return busy / os.sysconf("SC_CLK_TCK"), own.user + own.system


def _other_cpu_busy(start: tuple[float, float] | None, seconds: float) -> float | None:
    """How many CPUs other processes kept busy, on average, over the last `seconds`.

    Other work slows every mode, and with more busy threads than cores OpenMP's spinning
    threads can collapse multi-threaded steps several-fold (set OMP_WAIT_POLICY=PASSIVE
    or --threads 1 on a shared machine); a result with this well above 0 is not clean.
    """
    end = _cpu_seconds()
    if start is None or end is None or seconds <= 0:
        return None
    other = (end[0] - start[0]) - (end[1] - start[1])
    return round(max(0.0, other / seconds), 2)


def embedding_speed(
    fields: int = 26,
    vocab: int = 100_000,
    dim: int = 16,
    batch_size: int = 4096,
    steps: int = 30,
    warmup: int = 5,
    arch: str = "deepfm",
    threads: int | None = None,
    seed: int = 0,
    repeats: int = 3,
    distinct_batches: int = 16,
    fused_baseline: bool = False,
) -> dict[str, Any]:
    """Rows/s of `arch` trained with dense embedding gradients + Adam, with sparse
    embedding gradients (SparseAdam on the tables, Adam on the rest), and scored forward
    only. Each mode runs `warmup` untimed steps, then `repeats` rounds of `steps` timed
    steps, interleaved across modes; `distinct_batches` batches (generated beforehand) are
    cycled. `threads` sets `torch.set_num_threads` for the run (restored after).

    Returns a dict: ``config``; ``<mode>_rows_per_s`` and ``<mode>_step_ms`` (median) and
    ``<mode>_repeat_rows_per_s`` (one rate per repeat, block-timed) for each of ``modes``
    (MODES, plus FUSED_MODE with `fused_baseline`: dense gradients and
    ``torch.optim.Adam(fused=True)``, a faster dense baseline than `make_optimizer`'s
    default Adam, reported with ``sparse_over_fused``);
    ``sparse_speedup`` = sparse / dense_adam; ``score_over_sparse`` = score / sparse;
    ``torch_threads``; ``torch_version``; ``final_loss`` per training mode; the machine's
    ``cpu_count``, ``load_average_before`` / ``_after`` and ``other_cpu_busy`` (CPUs kept
    busy by other processes during the timed run, on average: judge the numbers by it).
    """
    if min(steps, warmup + 1, repeats, distinct_batches, batch_size) < 1:
        raise ValueError(
            "need steps, repeats, distinct_batches, batch_size >= 1 and warmup >= 0, got "
            f"steps={steps}, repeats={repeats}, distinct_batches={distinct_batches}, "
            f"batch_size={batch_size}, warmup={warmup}"
        )
    load_before = _load_average()
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        schema = synthetic_schema(fields, vocab)
        batches = synthetic_batches(schema, batch_size, min(distinct_batches, steps), seed)
        dense_model, dense_opt = build_trainer(arch, schema, False, dim, seed)
        sparse_model, sparse_opt = build_trainer(arch, schema, True, dim, seed)
        losses: dict[str, float] = {}

        def dense(batch: SparseBatch) -> None:
            losses["dense_adam"] = train_step(dense_model, dense_opt, batch)

        def sparse(batch: SparseBatch) -> None:
            losses["sparse"] = train_step(sparse_model, sparse_opt, batch)

        def score(batch: SparseBatch) -> None:
            with torch.inference_mode():
                sparse_model(batch)

        runners: dict[str, Callable[[SparseBatch], None]] = {
            "dense_adam": dense,
            "sparse": sparse,
            "score": score,
        }
        if fused_baseline:
            fused_model, _ = build_trainer(arch, schema, False, dim, seed)
            fused_opt = Optimizers([torch.optim.Adam(fused_model.parameters(), lr=1e-3, fused=True)])

            def fused(batch: SparseBatch) -> None:
                losses[FUSED_MODE] = train_step(fused_model, fused_opt, batch)

            runners[FUSED_MODE] = fused
        modes = tuple(runners)
        times: dict[str, list[list[float]]] = {m: [] for m in modes}
        position = dict.fromkeys(modes, 0)

        def block(mode: str, count: int) -> list[float]:
            sparse_model.train(mode != "score")  # scoring runs in eval mode
            out = _timed(runners[mode], batches, position[mode], count)
            position[mode] += count
            return out

        cpu_start, wall_start = _cpu_seconds(), time.perf_counter()
        for mode in modes:
            block(mode, warmup)
        for _ in range(repeats):
            for mode in modes:
                times[mode].append(block(mode, steps))
        sparse_model.train()
        other_busy = _other_cpu_busy(cpu_start, time.perf_counter() - wall_start)
        result: dict[str, Any] = {
            "config": {
                "arch": arch, "fields": fields, "vocab": vocab, "dim": dim,
                "batch_size": batch_size, "steps": steps, "warmup": warmup,
                "repeats": repeats, "distinct_batches": len(batches), "seed": seed,
                "zipf_exponent": ZIPF_EXPONENT,
            },
        }
        result["modes"] = list(modes)
        for mode in modes:
            flat = [t for rep in times[mode] for t in rep]
            median = statistics.median(flat)
            result[f"{mode}_rows_per_s"] = batch_size / median
            result[f"{mode}_step_ms"] = 1e3 * median
            result[f"{mode}_repeat_rows_per_s"] = [batch_size * len(r) / sum(r) for r in times[mode]]
        result["sparse_speedup"] = result["sparse_rows_per_s"] / result["dense_adam_rows_per_s"]
        result["score_over_sparse"] = result["score_rows_per_s"] / result["sparse_rows_per_s"]
        if fused_baseline:
            result["sparse_over_fused"] = (
                result["sparse_rows_per_s"] / result[f"{FUSED_MODE}_rows_per_s"]
            )
        result["torch_threads"] = torch.get_num_threads()
        result["torch_version"] = torch.__version__
        result["machine"] = platform.processor() or platform.machine()
        result["cpu_count"] = os.cpu_count()
        result["load_average_before"] = load_before
        result["load_average_after"] = _load_average()
        result["other_cpu_busy"] = other_busy
        result["omp_wait_policy"] = os.environ.get("OMP_WAIT_POLICY")
        result["final_loss"] = dict(losses)
        return result
    finally:
        torch.set_num_threads(previous_threads)


# -- command line ---------------------------------------------------------------------------


def add_args(parser: argparse.ArgumentParser) -> None:
    """Arguments of `diet-ray bench-speed`."""
    parser.add_argument("--arch", default="deepfm", help="model to benchmark (default deepfm)")
    parser.add_argument("--fields", type=int, default=26, help="categorical fields (default 26)")
    parser.add_argument("--vocab", type=int, default=100_000, help="ids per field (default 1e5)")
    parser.add_argument("--dim", type=int, default=16, help="embedding dim (default 16)")
    parser.add_argument("--batch-size", type=int, default=4096, help="rows per step (default 4096)")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per repeat (default 30)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps per mode (default 5)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats (default 3)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads (default: torch's own)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fused-baseline", action="store_true",
                        help=f"also time {FUSED_MODE}: dense gradients, Adam(fused=True)")
    parser.add_argument("--out", default=None, help="also write the results to this JSON file")


def format_table(result: dict[str, Any]) -> str:
    """The human-readable summary `run` prints."""
    c = result["config"]
    header = (
        f"{c['arch']}: {c['fields']} fields x {c['vocab']:,} ids, dim {c['dim']}, "
        f"batch {c['batch_size']}, {result['torch_threads']} torch threads, "
        f"{c['repeats']} x {c['steps']} timed steps (median)"
    )
    lines = [
        header,
        f"{'mode':<17}{'rows/s':>12}{'ms/step':>10}  per-repeat rows/s",
    ]
    for mode in result.get("modes", MODES):
        reps = ", ".join(f"{r:,.0f}" for r in result[f"{mode}_repeat_rows_per_s"])
        lines.append(
            f"{mode:<17}{result[f'{mode}_rows_per_s']:>12,.0f}"
            f"{result[f'{mode}_step_ms']:>10.1f}  {reps}"
        )
    ratios = (
        f"sparse / dense_adam: {result['sparse_speedup']:.2f}x   "
        f"score / sparse: {result['score_over_sparse']:.2f}x"
    )
    if "sparse_over_fused" in result:
        ratios += f"   sparse / {FUSED_MODE}: {result['sparse_over_fused']:.2f}x"
    lines.append(ratios)
    busy = result["other_cpu_busy"]
    lines.append(
        f"other processes kept {busy if busy is not None else '?'} of {result['cpu_count']} "
        f"CPUs busy during the run (load average {result['load_average_before']} -> "
        f"{result['load_average_after']})"
    )
    if busy is not None and busy > OTHER_BUSY_WARN:
        lines.append(
            "WARNING: the machine was shared; these rates are not clean (rerun on an idle "
            "machine; OMP_WAIT_POLICY=PASSIVE avoids OpenMP's collapse under sharing)"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """`diet-ray bench-speed`: run `embedding_speed`, print the table, write --out JSON."""
    result = embedding_speed(
        fields=args.fields, vocab=args.vocab, dim=args.dim, batch_size=args.batch_size,
        steps=args.steps, warmup=args.warmup, arch=args.arch, threads=args.threads,
        seed=args.seed, repeats=args.repeats, fused_baseline=args.fused_baseline,
    )
    print(format_table(result))
    if args.out:
        path = Path(args.out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_args(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
