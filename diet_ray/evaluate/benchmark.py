"""`diet-ray benchmark`: DIET against every baseline at the same budget, on real data.

    diet-ray benchmark --data URI --budget 0.02 --out DIR [--archs a,b] [--seeds 3]
                       [--eval-stage T] [--variants base,lr0.3:lr_scale=0.3] [key=value ...]

The streaming protocol (DESIGN, "What good means"): train on stages 0..T-1, test on stage T
(default: the last stage). Candidates are architectures × hyper-parameter variants. Each is
trained

- under `full`: one continual pass over stages 0..T-1 (`zoo.train_full`: the zoo's per-
  architecture learning rate × the variant's scale, batch 256), the reference;
- under every other method: on that method's training set (the memory or a sample of
  sum_t round(budget × rows_t) rows) with one fixed budget for every architecture and
  method, `EvalConfig` (Adam, lr 1e-2 × the variant's scale, batch 512, 10 epochs), as the
  main job trains candidates on a memory.

Methods (`diet_ray.evaluate.baselines`): `diet` (`distill_local`: the distillation job's
per-stage code in-process, default config plus the command's dotted overrides), `random`,
`stratified`, `reservoir`, `teacher_labels`, `influence_topk`, `kcenter`, `static_distill`,
`diet_no_addressing`, `diet_random_init`. Building a training set (distillation, selection)
is timed apart from candidate training.

Metrics per method (`summarise_methods`): recovery = (AUC_m - 0.5) / (AUC_full - 0.5) per
architecture (base variant), mean over architectures; mean AUC gap = mean of AUC_full -
AUC_m; Kendall τ and Spearman ρ between the candidates' AUCs under the method and under
`full`; top-1 regret = best full-data AUC - full-data AUC of the method's top candidate;
speedup = mean over candidates of full train seconds / method train seconds (rows trained
beside it). AUCs are means over the training seeds.

Writes into DIR: `results.json`, `report.md`, `auc_by_method.png`, `rank_consistency.png`,
`cost.png`, and `runs.jsonl` (one line per finished training set and per trained candidate
× seed). A rerun with the same settings resumes from `runs.jsonl` (training sets are cached
under `DIR/.work/`, removed when the run completes); `results.json` is rewritten after
every method, marked `"complete": false` until the end.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import shlex
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from diet_ray.config import DistillConfig, load_config
from diet_ray.data.batch import SparseBatch, collate
from diet_ray.data.errors import DataError
from diet_ray.data.schema import Schema
from diet_ray.data.stream import read_stage_table
from diet_ray.distill.distiller import seeded
from diet_ray.evaluate import baselines as B
from diet_ray.evaluate.candidates import train_candidate
from diet_ray.evaluate.metrics import kendall_tau, recovery, spearman, top1_regret
from diet_ray.evaluate.zoo import DEFAULT_ARCHS, load_stages, train_full
from diet_ray.memory.slots import Slots
from diet_ray.models import MODELS, build_model
from diet_ray.progress import Progress

log = logging.getLogger("diet_ray")

REFERENCE = "full"
METHODS = ("full", "diet", "random", "stratified", "reservoir", "teacher_labels",
           "influence_topk", "kcenter", "static_distill", "diet_no_addressing",
           "diet_random_init")
BASELINES = tuple(m for m in METHODS if m not in (REFERENCE, "diet"))
DEFAULT_VARIANTS = "base,lr0.3:lr_scale=0.3"
PLOTS = ("auc_by_method.png", "rank_consistency.png", "cost.png")


# -- candidates -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    """A hyper-parameter variant applied to every architecture: a learning-rate scale (for
    full-data and memory training alike) and model-config overrides (keys an architecture
    does not have are ignored for it)."""

    name: str
    lr_scale: float = 1.0
    model: tuple[tuple[str, float | int | str], ...] = ()

    def model_config(self, arch: str) -> dict:
        keys = {f.name for f in fields(MODELS[arch].config)}
        return {k: v for k, v in self.model if k in keys}


def parse_variants(text: str) -> list[Variant]:
    """`NAME[:key=value[;key=value...]],...`; key `lr_scale` or a model-config key."""
    import yaml

    out = []
    for item in (s for s in text.split(",") if s.strip()):
        name, _, spec = item.strip().partition(":")
        scale, model = 1.0, []
        for kv in (s for s in spec.split(";") if s):
            key, sep, raw = kv.partition("=")
            if not sep:
                raise DataError(f"--variants: {kv!r} in {item!r} is not key=value")
            value = yaml.safe_load(raw)
            if key == "lr_scale":
                scale = float(value)
            else:
                model.append((key, value))
        if not name or scale <= 0:
            raise DataError(f"--variants: {item!r} needs a name and lr_scale > 0")
        out.append(Variant(name, scale, tuple(model)))
    if len({v.name for v in out}) != len(out) or not out:
        raise DataError(f"--variants: need at least one variant, with distinct names: {text!r}")
    return out


def candidate_name(arch: str, variant: Variant) -> str:
    return f"{arch}:{variant.name}"


# -- the run's settings and its log -----------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """What a benchmark run is; a resumed run must match it exactly."""

    data: str
    budget: float
    eval_stage: int
    archs: tuple[str, ...]
    variants: tuple[Variant, ...]
    seeds: int
    seed: int
    methods: tuple[str, ...]
    overrides: tuple[str, ...]

    def to_json(self) -> dict:
        body = asdict(self)
        body["variants"] = [asdict(v) for v in self.variants]
        return json.loads(json.dumps(body))

    def training_seeds(self) -> list[int]:
        return [seeded(self.seed, s, 31) % 2**31 for s in range(self.seeds)]


class RunLog:
    """`runs.jsonl`: one JSON record per finished unit of work, appended and flushed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records = ([json.loads(line) for line in path.read_text().splitlines() if line]
                        if path.exists() else [])

    def append(self, record: dict) -> None:
        self.records.append(record)
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")

    def find(self, **match) -> dict | None:
        for r in self.records:
            if all(r.get(k) == v for k, v in match.items()):
                return r
        return None


# -- training sets --------------------------------------------------------------------------------


@dataclass
class Context:
    data: str
    schema: Schema
    stages: range
    budget: float
    seed: int
    cfg: DistillConfig
    work: Path
    stage_stats: list[dict]


def _diet(ctx: Context) -> Slots:
    def on_stage(t: int, state, stats: dict) -> None:
        ctx.stage_stats.append({"stage": t, "slots": len(state.slots), **stats})
        log.info("diet: stage %d/%d distilled, %d slots", t + 1, len(ctx.stages),
                 len(state.slots))

    return B.diet(ctx.data, ctx.schema, ctx.stages, ctx.budget, ctx.seed, ctx.cfg,
                  on_stage=on_stage)


BUILDERS: dict[str, Callable[[Context], pa.Table | Slots]] = {
    "diet": _diet,
    "random": lambda c: B.uniform_random(c.data, c.schema, c.stages, c.budget, c.seed),
    "stratified": lambda c: B.label_stratified(c.data, c.schema, c.stages, c.budget, c.seed),
    "reservoir": lambda c: B.reservoir(c.data, c.schema, c.stages, c.budget, c.seed),
    "teacher_labels": lambda c: B.teacher_labels(c.data, c.schema, c.stages, c.budget, c.seed,
                                                 c.cfg),
    "influence_topk": lambda c: B.influence_topk(c.data, c.schema, c.stages, c.budget, c.seed,
                                                 c.cfg),
    "kcenter": lambda c: B.kcenter(c.data, c.schema, c.stages, c.budget, c.seed, c.cfg),
    "static_distill": lambda c: B.static_distill(c.data, c.schema, c.stages, c.budget, c.seed,
                                                 str(c.work / "static-view"), c.cfg),
    "diet_no_addressing": lambda c: B.diet_no_addressing(c.data, c.schema, c.stages, c.budget,
                                                         c.seed, c.cfg),
    "diet_random_init": lambda c: B.diet_random_init(c.data, c.schema, c.stages, c.budget,
                                                     c.seed, c.cfg),
}


def as_batch(rows: pa.Table | Slots, schema: Schema) -> SparseBatch:
    return B.memory_batch(rows) if isinstance(rows, Slots) else collate(rows, schema)


def save_batch(batch: SparseBatch, path: Path) -> None:
    arrays = {"ids": batch.ids.numpy(), "weights": batch.weights.numpy(),
              "labels": batch.labels.numpy(), "sample_weight": batch.sample_weight.numpy()}
    if batch.dense is not None:
        arrays["dense"] = batch.dense.numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)


def load_batch(path: Path) -> SparseBatch:
    with np.load(path, allow_pickle=False) as z:
        t = {k: torch.from_numpy(z[k]) for k in z.files}
    return SparseBatch(ids=t["ids"], weights=t["weights"], dense=t.get("dense"),
                       labels=t["labels"], sample_weight=t["sample_weight"])


# -- summary metrics ----------------------------------------------------------------------------


def aggregate(records: list[dict], archs: list[str], variants: list[Variant]) -> dict:
    """{"candidates": {cand: stats}, "archs": {arch: stats of the base variant}} from the
    per-seed candidate records of one method; means (and stds) over seeds."""
    cands: dict[str, dict] = {}
    for arch in archs:
        for v in variants:
            rs = [r for r in records if r["arch"] == arch and r["variant"] == v.name]
            if not rs:
                continue
            cands[candidate_name(arch, v)] = {
                "arch": arch, "variant": v.name, "seeds": len(rs),
                "auc": float(np.mean([r["auc"] for r in rs])),
                "auc_std": float(np.std([r["auc"] for r in rs])),
                "logloss": float(np.mean([r["logloss"] for r in rs])),
                "logloss_std": float(np.std([r["logloss"] for r in rs])),
                "train_seconds": float(np.mean([r["train_seconds"] for r in rs])),
                "rows_trained": float(np.mean([r["rows_trained"] for r in rs])),
                "auc_by_seed": {str(r["seed"]): r["auc"] for r in rs},
            }
    base = variants[0].name
    by_arch = {c["arch"]: {k: v for k, v in c.items()
                           if k not in ("arch", "variant", "auc_by_seed")}
               for c in cands.values() if c["variant"] == base}
    return {"candidates": cands, "archs": by_arch}


def summarise_methods(methods: dict, reference: str = REFERENCE) -> dict:
    """Per method: recovery, AUC gap, rank agreement, top-1 regret and speedup against
    `reference` (module docstring), from `methods[m]["archs"]` and `["candidates"]`.
    Only candidates and architectures the method shares with the reference count."""
    ref = methods[reference]
    out = {}
    for m, r in methods.items():
        archs = [a for a in ref["archs"] if a in r.get("archs", {})]
        cands = [c for c in ref["candidates"] if c in r.get("candidates", {})]
        if not archs or not cands:
            continue
        full_auc = np.array([ref["candidates"][c]["auc"] for c in cands])
        m_auc = np.array([r["candidates"][c]["auc"] for c in cands])
        rec = {a: recovery(r["archs"][a]["auc"], ref["archs"][a]["auc"]) for a in archs}
        gap = {a: ref["archs"][a]["auc"] - r["archs"][a]["auc"] for a in archs}
        speed = [ref["candidates"][c]["train_seconds"] / r["candidates"][c]["train_seconds"]
                 for c in cands]
        rows = [ref["candidates"][c]["rows_trained"] / r["candidates"][c]["rows_trained"]
                for c in cands]
        out[m] = {
            "kendall_tau": kendall_tau(full_auc, m_auc),
            "spearman": spearman(full_auc, m_auc),
            "mean_recovery": float(np.mean(list(rec.values()))),
            "mean_auc_gap": float(np.mean(list(gap.values()))),
            "top1_regret": top1_regret(full_auc, m_auc),
            "top1": cands[int(np.argmax(m_auc))],
            "speedup": float(np.mean(speed)),
            "rows_speedup": float(np.mean(rows)),
            "train_seconds_per_candidate": float(np.mean(
                [r["candidates"][c]["train_seconds"] for c in cands])),
            "rows_per_candidate": float(np.mean(
                [r["candidates"][c]["rows_trained"] for c in cands])),
            "recovery": rec,
            "candidates": len(cands),
            "seed_tau": seed_tau(r, cands),
        }
    return out


def seed_tau(method: dict, cands: list[str]) -> float:
    """Mean Kendall τ between the candidate rankings of two single training seeds of the
    same method, over seed pairs: how reproducible its ranking is (for `full`, the noise
    ceiling of the τ any method can be expected to reach). NaN with fewer than 2 seeds."""
    per = [method["candidates"][c].get("auc_by_seed", {}) for c in cands]
    seeds = sorted(set.intersection(*(set(p) for p in per))) if per else []
    taus = [kendall_tau([p[a] for p in per], [p[b] for p in per])
            for i, a in enumerate(seeds) for b in seeds[i + 1:]]
    return float(np.mean(taus)) if taus else math.nan


# -- the run --------------------------------------------------------------------------------------


def machine() -> dict:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (math.nan,) * 3
    return {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "load_average_at_start": [round(x, 2) for x in load]}


def first_machine(runs: RunLog) -> dict:
    """The machine of the run's first session (recorded once, kept on resume)."""
    found = runs.find(kind="machine")
    if found is None:
        found = {"kind": "machine", **machine()}
        runs.append(found)
    return {k: v for k, v in found.items() if k != "kind"}


def check_settings(s: Settings, schema: Schema) -> None:
    unknown = [a for a in s.archs if a not in MODELS]
    if unknown:
        raise DataError(f"--archs: unknown {unknown}; choose from {sorted(MODELS)}")
    bad = [m for m in s.methods if m not in METHODS]
    if bad or REFERENCE not in s.methods:
        raise DataError(f"--methods: unknown {bad} or no {REFERENCE!r}; choose from {METHODS}")
    if not 1 <= s.eval_stage < len(schema.stages):
        raise DataError(f"--eval-stage {s.eval_stage}: need 1..{len(schema.stages) - 1} "
                        f"(train on the stages before it; {s.data} has {len(schema.stages)})")
    if s.seeds < 1 or not 0 < s.budget <= 1:
        raise DataError("--seeds must be >= 1 and --budget in (0, 1]")
    for v in s.variants:
        for key, _ in v.model:
            lacking = [a for a in s.archs if key not in v.model_config(a)]
            if len(lacking) == len(s.archs):
                raise DataError(f"--variants {v.name}: no architecture has config key {key!r}")
            if lacking:
                log.warning("variant %s: %s has no %r; it trains with its default there",
                            v.name, ",".join(lacking), key)


def run_benchmark(settings: Settings, out: str, command: str = "", restart: bool = False
                  ) -> dict:
    """Run (or resume) the benchmark described by `settings`; write DIR; return results."""
    began = time.perf_counter()
    schema = Schema.load(settings.data)
    check_settings(settings, schema)
    root = Path(out)
    work = root / ".work"
    if restart:
        for name in ("runs.jsonl", "run.json", "results.json"):
            (root / name).unlink(missing_ok=True)
        shutil.rmtree(work, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    run_json = root / "run.json"
    if run_json.exists() and json.loads(run_json.read_text()) != settings.to_json():
        raise DataError(f"{out} holds a benchmark run with other settings ({run_json}); "
                        "choose another --out or pass --restart")
    run_json.write_text(json.dumps(settings.to_json(), indent=2))
    runs = RunLog(root / "runs.jsonl")
    session = 1 + max((r["session"] for r in runs.records if r["kind"] == "elapsed"), default=0)
    cfg = load_config(None, list(settings.overrides), data=settings.data)
    cfg = B.default_distill_config(settings.budget, settings.seed, cfg)
    T = settings.eval_stage
    stages = range(T)
    archs, variants = list(settings.archs), list(settings.variants)
    seeds = settings.training_seeds()
    test = collate(read_stage_table(settings.data, T, schema), schema)
    ctx = Context(settings.data, schema, stages, settings.budget, settings.seed, cfg, work, [])
    previous = runs.find(kind="stage_stats")
    if previous:
        ctx.stage_stats = previous["stats"]
    base_info = {
        "dataset": schema.dataset, "data": settings.data, "budget": settings.budget,
        "eval_stage": T, "train_stages": [0, T - 1],
        "train_rows": sum(schema.stage(t).rows for t in stages), "test_rows": len(test),
        "archs": archs, "variants": [asdict(v) for v in variants], "seeds": seeds,
        "seed": settings.seed, "overrides": list(settings.overrides),
        "eval_config": asdict(cfg.eval), "distill_config": cfg.to_dict(),
        "command": command, "machine": first_machine(runs),
    }
    warm_up(archs, variants, schema, test)
    total_units = len(settings.methods) * len(archs) * len(variants) * len(seeds)
    progress = Progress("benchmark", total=total_units, unit="candidate trainings", every_s=60)
    progress.done = sum(1 for r in runs.records if r["kind"] == "candidate")
    methods: dict[str, dict] = {}
    for method in settings.methods:
        todo = [(a, v, s) for a in archs for v in variants for s in seeds
                if not runs.find(kind="candidate", method=method, arch=a, variant=v.name, seed=s)]
        done = runs.find(kind="set", method=method)
        if method == REFERENCE:
            train = load_stages(settings.data, schema, stages) if todo else []
            info = {"rows": base_info["train_rows"], "selection_seconds": 0.0}
        elif todo or not done:
            data, info = training_set(method, ctx, runs, work)
        else:
            info = done
        log.info("%s: %d rows, %d candidate trainings to go", method, info["rows"], len(todo))
        for arch, v, s in todo:
            if method == REFERENCE:
                r = train_full(arch, schema, train, test, s, model_config=v.model_config(arch),
                               lr_scale=v.lr_scale)
            else:
                eval_cfg = replace(cfg.eval, lr=cfg.eval.lr * v.lr_scale)
                r = train_candidate(method, arch, schema, data, test, eval_cfg, s,
                                    v.model_config(arch))
            runs.append({"kind": "candidate", "method": method, "arch": arch,
                         "variant": v.name, "seed": s, "auc": r.auc, "logloss": r.logloss,
                         "train_seconds": r.train_seconds, "rows_trained": r.rows_trained})
            progress.update(1)
        records = [r for r in runs.records if r["kind"] == "candidate" and r["method"] == method]
        methods[method] = {"rows": info["rows"], "selection_seconds": info["selection_seconds"],
                           **aggregate(records, archs, variants)}
        log.info("%s done: mean AUC %.4f over %d candidates", method,
                 np.mean([c["auc"] for c in methods[method]["candidates"].values()]),
                 len(methods[method]["candidates"]))
        runs.append({"kind": "elapsed", "session": session,
                     "seconds": time.perf_counter() - began})
        results = {**base_info, "complete": False, "methods": methods,
                   "summary": summarise_methods(methods) if REFERENCE in methods else {},
                   "diet_stages": ctx.stage_stats, "wall_seconds": wall_seconds(runs)}
        write_json(root / "results.json", results)
    results["complete"] = True
    write_json(root / "results.json", results)
    write_plots(results, root)
    (root / "report.md").write_text(render_report(results))
    shutil.rmtree(work, ignore_errors=True)
    log.info("benchmark done in %.0fs: %s", results["wall_seconds"], root / "report.md")
    return results


def warm_up(archs: list[str], variants: list[Variant], schema: Schema, rows: SparseBatch) -> None:
    """One untimed step per candidate model, so that no timed run pays torch's first-call
    costs (allocator, kernel selection) and the speedups compare steady-state training."""
    from diet_ray.evaluate.train import TrainConfig, train_epochs

    small = rows.select(slice(0, 64))
    for arch in archs:
        for v in variants:
            model = build_model(arch, schema, v.model_config(arch))
            train_epochs(model, lambda: [small], TrainConfig(lr=1e-3, batch_size=64))


def training_set(method: str, ctx: Context, runs: RunLog, work: Path
                 ) -> tuple[SparseBatch, dict]:
    """The method's training rows (cached under `work`) and {rows, selection_seconds}."""
    cache = work / "sets" / f"{method}.npz"
    done = runs.find(kind="set", method=method)
    if done and cache.exists():
        return load_batch(cache), done
    log.info("%s: building the training set", method)
    start = time.perf_counter()
    batch = as_batch(BUILDERS[method](ctx), ctx.schema)
    seconds = time.perf_counter() - start
    save_batch(batch, cache)
    info = {"rows": len(batch), "selection_seconds": seconds}
    if not done:
        runs.append({"kind": "set", "method": method, **info})
        if method == "diet":
            runs.append({"kind": "stage_stats", "stats": ctx.stage_stats})
    log.info("%s: %d rows in %.1fs", method, len(batch), seconds)
    return batch, done or info


def wall_seconds(runs: RunLog) -> float:
    """Wall time of all sessions of the run: each session's last checkpoint, summed (the time
    an interrupted session spent after its last finished method is not counted)."""
    last: dict[int, float] = {}
    for r in runs.records:
        if r["kind"] == "elapsed":
            last[r["session"]] = r["seconds"]
    return float(sum(last.values()))


def write_json(path: Path, body: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(body, indent=2, default=float))
    tmp.replace(path)


# -- plots ----------------------------------------------------------------------------------------


def write_plots(results: dict, root: Path) -> None:
    """AUC by method × architecture (heatmap), full vs method AUC per candidate (scatter
    grid), and cost per candidate (bars), as PNGs in `root`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods, summary = results["methods"], results["summary"]
    names = list(methods)
    archs = results["archs"]

    grid = np.array([[methods[m]["archs"].get(a, {}).get("auc", np.nan) for a in archs]
                     for m in names])
    fig, ax = plt.subplots(figsize=(1.0 + 0.9 * len(archs), 1.0 + 0.45 * len(names)))
    im = ax.imshow(grid, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(archs)), archs, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    for i in range(len(names)):
        for j in range(len(archs)):
            if not np.isnan(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.3f}", ha="center", va="center", fontsize=7,
                        color="white" if grid[i, j] < np.nanmean(grid) else "black")
    fig.colorbar(im, ax=ax, label="test AUC")
    ax.set_title(f"Test AUC on stage {results['eval_stage']} by method and architecture "
                 f"(budget {results['budget']:g}, base variant)")
    fig.tight_layout()
    fig.savefig(root / "auc_by_method.png", dpi=110)
    plt.close(fig)

    others = [m for m in names if m != REFERENCE]
    cols = min(4, max(1, len(others)))
    rows = max(1, math.ceil(len(others) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.0 * rows), squeeze=False)
    ref = methods[REFERENCE]["candidates"]
    for ax, m in zip(axes.flat, others):
        cands = [c for c in ref if c in methods[m]["candidates"]]
        x = [ref[c]["auc"] for c in cands]
        y = [methods[m]["candidates"][c]["auc"] for c in cands]
        ax.scatter(x, y, s=14)
        s = summary.get(m, {})
        ax.set_title(f"{m}\nτ={s.get('kendall_tau', math.nan):.2f} "
                     f"ρ={s.get('spearman', math.nan):.2f}", fontsize=9)
        ax.set_xlabel("AUC, full data", fontsize=8)
        ax.set_ylabel("AUC, method", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(others):]:
        ax.axis("off")
    fig.suptitle("Rank consistency: candidates' test AUC, full data vs method")
    fig.tight_layout()
    fig.savefig(root / "rank_consistency.png", dpi=110)
    plt.close(fig)

    train_s = [summary.get(m, {}).get("train_seconds_per_candidate", np.nan) for m in names]
    select_s = [methods[m]["selection_seconds"] for m in names]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4))
    a1.bar(names, train_s, color="tab:blue")
    a1.set_yscale("log")
    a1.set_ylabel("seconds (log)")
    a1.set_title("training seconds per candidate")
    a2.bar(names, np.maximum(select_s, 1e-3), color="tab:orange")
    a2.set_yscale("log")
    a2.set_title("building the training set (distillation / selection), seconds")
    for ax in (a1, a2):
        ax.tick_params(axis="x", rotation=60, labelsize=8)
    fig.tight_layout()
    fig.savefig(root / "cost.png", dpi=110)
    plt.close(fig)


# -- report ---------------------------------------------------------------------------------------


def _f(x: float, digits: int = 3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


HEADLINE_NOTE = (
    "Build seconds: distilling the memory or selecting the sample, timed apart from candidate "
    "training. Seed-to-seed τ: mean Kendall τ between the rankings of two single training "
    "seeds of the same method; for `full` it is the noise ceiling of the ranking (the seed "
    "means compared above are less noisy). Training seconds come from a shared machine and "
    "move with its load; rows per candidate is the stable cost measure."
)


def variant_label(v: dict) -> str:
    """'lr0.3 (lr × 0.3)' from a variant's JSON form."""
    extra = "".join(f", {k}={val}" for k, val in v["model"])
    return f"{v['name']} (lr × {v['lr_scale']:g}{extra})"


def render_report(results: dict) -> str:
    methods, summary = results["methods"], results["summary"]
    archs, T = results["archs"], results["eval_stage"]
    mach = results["machine"]
    budget = results["budget"]
    n_cands = len(archs) * len(results["variants"])
    dc, ev = results["distill_config"], results["eval_config"]
    wall = results["wall_seconds"]
    overrides = (f" and overrides `{' '.join(results['overrides'])}`"
                 if results["overrides"] else "")
    variants = ", ".join(variant_label(v) for v in results["variants"])
    lines = [
        f"# Benchmark: {results['dataset']} at {budget:.0%} (test on stage {T})",
        "",
        f"Command: `{results['command']}`",
        "",
        (f"Machine: {mach['cpus']} CPUs ({mach['platform']}; Python {mach['python']}, "
         f"torch {mach['torch']}, {mach['torch_threads']} torch threads), shared with other "
         f"work (load average at start {mach['load_average_at_start']}). "
         f"Wall time: {wall:.0f} s ({wall / 60:.1f} min)."),
        "",
        "## Protocol",
        "",
        (f"- Data: `{results['data']}`; train on stages 0..{T - 1} "
         f"({results['train_rows']:,} rows), test on stage {T} ({results['test_rows']:,} rows)."),
        (f"- Candidates: {len(archs)} architectures × {len(results['variants'])} variants = "
         f"{n_cands} ({variants}); {len(results['seeds'])} training seeds each; AUCs are "
         "seed means."),
        ("- `full`: one continual pass over the training stages, the zoo's defaults "
         "(Adam, lr 1e-2 for LR, 3e-3 for FM / AutoInt, 1e-3 otherwise, × the variant's scale; "
         "batch 256)."),
        (f"- Every other method: {methods.get('diet', {}).get('rows', 'n/a')} training rows "
         "(round(budget × rows) per stage); one fixed budget for every architecture and "
         f"method: Adam lr {ev['lr']:g} × the variant's scale, batch {ev['batch_size']}, "
         f"{ev['epochs']} epochs."),
        ("- `diet`: `distill_local` (the distillation job's per-stage code, in-process) with "
         f"the default config{overrides} (continual {dc['continual']['arch']}, rank by "
         f"{dc['influence']['rank_by']}, {dc['bilevel']['outer_steps']} outer steps per "
         f"stage, address fraction {dc['memory']['address_fraction']})."),
        ("- Baselines and ablations: `diet_ray/evaluate/baselines.py` (docstrings say how "
         "each is built)."),
        "",
        "## Headline",
        "",
        ("| method | mean recovery | Kendall τ | Spearman ρ | top-1 regret | mean AUC gap | "
         "speedup (time) | rows per candidate (full ÷ method) | build seconds | "
         "seed-to-seed τ |"),
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    order = sorted((m for m in summary if m != REFERENCE),
                   key=lambda m: -summary[m]["mean_recovery"])
    for m in [REFERENCE, *order]:
        s = summary[m]
        lines.append(
            f"| {'**' + m + '**' if m == 'diet' else m} | {_f(s['mean_recovery'])} | "
            f"{_f(s['kendall_tau'])} | {_f(s['spearman'])} | {_f(s['top1_regret'], 4)} | "
            f"{_f(s['mean_auc_gap'], 4)} | {_f(s['speedup'], 1)}× | "
            f"{s['rows_per_candidate']:,.0f} ({_f(s['rows_speedup'], 1)}×) | "
            f"{methods[m]['selection_seconds']:.1f} | {_f(s.get('seed_tau', math.nan), 2)} |")
    lines += ["", HEADLINE_NOTE, "", *verdict(results), "",
              "## Test AUC by architecture (base variant, mean ± std over seeds)", ""]
    lines.append("| method | " + " | ".join(archs) + " |")
    lines.append("|---" * (len(archs) + 1) + "|")
    for m in methods:
        cells = [f"{methods[m]['archs'][a]['auc']:.4f} ± {methods[m]['archs'][a]['auc_std']:.4f}"
                 if a in methods[m]["archs"] else "n/a" for a in archs]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    cands = list(methods[REFERENCE]["candidates"])
    lines += ["", "## Test AUC of every candidate (seed means)", "",
              "| candidate | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
    for c in cands:
        cells = [_f(methods[m]["candidates"].get(c, {}).get("auc", math.nan), 4) for m in methods]
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    lines += ["", "Top candidate under each method: " + ", ".join(
        f"{m} → {summary[m]['top1']}" for m in summary) + "."]
    if results.get("diet_stages"):
        lines += ["", "## DIET's distillation cost per stage", "",
                  "| stage | slots | continual pass s | outer steps s | outer ÷ continual |",
                  "|---|---|---|---|---|"]
        for st in results["diet_stages"]:
            c, o = st.get("continual_seconds", math.nan), st.get("outer_seconds", math.nan)
            lines.append(f"| {st['stage']} | {st['slots']} | {_f(c, 2)} | {_f(o, 2)} | "
                         f"{_f(o / c if c else math.nan, 1)} |")
    lines += ["", "## Plots", "", "![AUC by method](auc_by_method.png)", "",
              "![rank consistency](rank_consistency.png)", "", "![cost](cost.png)", "",
              "Raw per-seed results: `runs.jsonl`; everything above: `results.json`.", ""]
    return "\n".join(lines)


def verdict(results: dict) -> list[str]:
    """The DESIGN targets, checked against the numbers (honest either way)."""
    summary = results["summary"]
    if "diet" not in summary:
        return []
    d = summary["diet"]
    others = {m: s for m, s in summary.items() if m not in (REFERENCE, "diet")}
    out = ["Targets (DESIGN):", ""]
    if others:
        beat_rec = [m for m, s in others.items() if s["mean_recovery"] >= d["mean_recovery"]]
        beat_tau = [m for m, s in others.items()
                    if not math.isnan(s["kendall_tau"]) and s["kendall_tau"] >= d["kendall_tau"]]
        out.append("- DIET ahead of every baseline on mean recovery: "
                   + ("**met**" if not beat_rec else
                      f"**not met** (at or above DIET: {', '.join(beat_rec)})"))
        out.append("- DIET ahead of every baseline on Kendall τ: "
                   + ("**met**" if not beat_tau else
                      f"**not met** (at or above DIET: {', '.join(beat_tau)})"))
    rec_ok, tau_ok = d["mean_recovery"] >= 0.95, d["kendall_tau"] >= 0.8
    out.append(f"- recovery ≥ 0.95 and τ ≥ 0.8 (the target at 2%): recovery "
               f"{_f(d['mean_recovery'])} ({'met' if rec_ok else 'not met'}), τ "
               f"{_f(d['kendall_tau'])} ({'met' if tau_ok else 'not met'})")
    out.append(f"- speedup ≥ 30×: {_f(d['speedup'], 1)}× in training time, "
               f"{_f(d['rows_speedup'], 1)}× in rows ("
               + ("met" if d["speedup"] >= 30 else "not met") + ")")
    return out


# -- command line ---------------------------------------------------------------------------------


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="prepared dataset URI")
    p.add_argument("--budget", type=float, default=0.02, help="memory size, share of rows")
    p.add_argument("--out", required=True, help="local folder for results and plots")
    p.add_argument("--archs", default=",".join(DEFAULT_ARCHS),
                   help=f"comma-separated, from {sorted(MODELS)} (default: all)")
    p.add_argument("--seeds", type=int, default=3, help="training seeds per candidate")
    p.add_argument("--eval-stage", type=int, help="test stage T (default: the last); "
                   "train on stages 0..T-1")
    p.add_argument("--variants", default=DEFAULT_VARIANTS,
                   help="hyper-parameter variants of every architecture, "
                   "NAME[:key=value;...],...; keys: lr_scale or a model-config key "
                   f"(default {DEFAULT_VARIANTS})")
    p.add_argument("--methods", default=",".join(METHODS),
                   help=f"comma-separated subset of {','.join(METHODS)} (full is required)")
    p.add_argument("--seed", type=int, default=0,
                   help="distillation / selection seed; training seeds derive from it")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: on a shared 2-core machine torch's default "
                   "of 2 threads collapsed under contention, 600 s vs 44 s for one DIET "
                   "distillation of MovieLens 100K)")
    p.add_argument("--restart", action="store_true", help="discard a previous run in --out")
    p.add_argument("overrides", nargs="*",
                   help="dotted distillation config overrides, e.g. bilevel.outer_steps=10")


def command_line(args: argparse.Namespace) -> str:
    if Path(sys.argv[0]).name == "diet-ray":
        return shlex.join(["diet-ray", *sys.argv[1:]])
    parts = ["diet-ray", "benchmark", "--data", args.data, "--budget", f"{args.budget:g}",
             "--out", args.out, "--archs", args.archs, "--seeds", str(args.seeds)]
    if args.eval_stage is not None:
        parts += ["--eval-stage", str(args.eval_stage)]
    parts += ["--variants", args.variants, "--methods", args.methods, "--seed", str(args.seed),
              *args.overrides]
    return shlex.join(parts)


def run(args: argparse.Namespace) -> int:
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return _run(args)
    finally:
        torch.set_num_threads(threads)


def _run(args: argparse.Namespace) -> int:
    schema = Schema.load(args.data)
    settings = Settings(
        data=args.data, budget=args.budget,
        eval_stage=len(schema.stages) - 1 if args.eval_stage is None else args.eval_stage,
        archs=tuple(a for a in args.archs.split(",") if a),
        variants=tuple(parse_variants(args.variants)), seeds=args.seeds, seed=args.seed,
        methods=tuple(m for m in args.methods.split(",") if m),
        overrides=tuple(args.overrides),
    )
    results = run_benchmark(settings, args.out, command_line(args), args.restart)
    print("\n".join(render_report(results).split("## Test AUC by architecture")[0].splitlines()))
    print(f"results in {args.out}")
    return 0
