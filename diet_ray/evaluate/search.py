"""`diet-ray search`: architecture and hyper-parameter search on one snapshot with Ray Tune's
ASHA scheduler.

Each trial trains a fresh model on the snapshot's memory (as `diet-ray evaluate` does, via
`tune_eval.fit_tuner`) and reports its AUC on the next real stage after every epoch, so ASHA
stops bad trials early (the next stage plays the validation set here). With
`--verify-top K`, the K best configurations are retrained on the full stream (stages
0..T-1, one continual pass, `zoo.train_full`) and both rankings are compared (Kendall τ).

The search space is a YAML mapping, one key per hyper-parameter; each value is a constant
or one domain::

    arch: {choice: [dnn, deepfm, dcn]}      # required: registered architectures
    lr: {loguniform: [1.0e-3, 3.0e-2]}      # Adam learning rate (default 0.01)
    batch_size: {choice: [256, 512]}        # default 512
    epochs: 10                              # a constant: epochs per trial, ASHA's max_t
    embedding_dim: {choice: [8, 16]}
    mlp_depth: {randint: [1, 3]}            # MLP layers (inclusive bounds) ...
    mlp_width: {choice: [64, 128, 256]}     # ... of this width: hidden_units = (w,) * d
    dropout: {uniform: [0.0, 0.3]}

Domains: `choice: [v, ...]`, `uniform: [lo, hi]`, `loguniform: [lo, hi]` (0 < lo),
`randint: [lo, hi]` (integers, both ends included). Besides `arch`, `lr`, `batch_size`,
`epochs`, `mlp_depth` and `mlp_width`, any field of a model's config dataclass may be
searched (`num_cross_layers`, `cin_layer_sizes`, ...); a key applies only to the
architectures that have it (`mlp_*` to those with `hidden_units`). See
`jobs/configs/search-space.yaml`.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass, fields
from typing import Any

import yaml

from diet_ray.config import EvalConfig
from diet_ray.data.batch import SparseBatch
from diet_ray.data.errors import DataError
from diet_ray.data.fs import join, open_fs, write_bytes
from diet_ray.distill.distiller import seeded
from diet_ray.evaluate.metrics import kendall_tau
from diet_ray.evaluate.tune_eval import EvalData, fit_tuner, load_eval_data, save_results
from diet_ray.models import MODELS, model_config

DOMAINS = ("choice", "uniform", "loguniform", "randint")
TRAIN_KEYS = ("arch", "lr", "batch_size", "epochs")
MLP_KEYS = ("mlp_depth", "mlp_width")
HIDDEN_UNITS = "hidden_units"


def _model_keys() -> dict[str, set[str]]:
    """Searchable model-config field -> architectures that have it."""
    keys: dict[str, set[str]] = {}
    for arch, entry in MODELS.items():
        for f in fields(entry.config):
            if f.name not in ("sparse_grad", HIDDEN_UNITS):
                keys.setdefault(f.name, set()).add(arch)
    return keys


@dataclass(frozen=True)
class Param:
    """One searched key: a constant (`kind` "const", one value) or a Tune domain."""

    kind: str
    values: tuple

    def candidates(self) -> tuple:
        """Values to validate: every choice, or the two bounds of a range."""
        return self.values

    def to_tune(self) -> Any:
        from ray import tune

        if self.kind == "const":
            return self.values[0]
        if self.kind == "choice":
            return tune.choice(list(self.values))
        lo, hi = self.values
        if self.kind == "uniform":
            return tune.uniform(lo, hi)
        if self.kind == "loguniform":
            return tune.loguniform(lo, hi)
        return tune.randint(lo, hi + 1)  # randint: inclusive bounds in the YAML


@dataclass(frozen=True)
class TrialSettings:
    """What one trial trains: the architecture, its config overrides, the optimiser budget."""

    arch: str
    model_config: dict
    lr: float
    batch_size: int
    epochs: int


@dataclass(frozen=True)
class SearchSpace:
    """A validated search space (see the module docstring for the YAML format)."""

    params: dict[str, Param]
    source: str = "<space>"

    @property
    def epochs(self) -> int:
        p = self.params.get("epochs")
        return int(p.values[0]) if p else EvalConfig().epochs

    def to_tune(self) -> dict[str, Any]:
        return {**{k: p.to_tune() for k, p in self.params.items()}, "epochs": self.epochs}


def _plain(v: Any) -> Any:
    """A sampled value as plain Python (numpy scalars unwrapped, lists as tuples)."""
    if isinstance(v, (list, tuple)):
        return tuple(_plain(x) for x in v)
    return v.item() if hasattr(v, "item") else v


def trial_settings(config: dict) -> TrialSettings:
    """A sampled Tune config -> what the trial trains (keys its arch lacks dropped)."""
    arch = config["arch"]
    own = {f.name for f in fields(MODELS[arch].config)}
    overrides = {k: _plain(v) for k, v in config.items() if k in own and k not in TRAIN_KEYS}
    if HIDDEN_UNITS in own and any(k in config for k in MLP_KEYS):
        default = model_config(arch).hidden_units or (128,)
        depth = int(config.get("mlp_depth", len(default)))
        width = int(config.get("mlp_width", default[0]))
        overrides[HIDDEN_UNITS] = (width,) * depth
    defaults = EvalConfig()
    return TrialSettings(arch, overrides, float(config.get("lr", defaults.lr)),
                         int(config.get("batch_size", defaults.batch_size)),
                         int(config.get("epochs", defaults.epochs)))


def _param(source: str, key: str, raw: Any) -> Param:
    where = f"{source}: key {key!r}"
    if isinstance(raw, dict):
        if len(raw) != 1 or next(iter(raw)) not in DOMAINS:
            raise DataError(f"{where}: a domain is one of {{{' | '.join(DOMAINS)}: [...]}}, "
                            f"got {raw!r}")
        kind, values = next(iter(raw.items()))
        if not isinstance(values, list) or not values:
            raise DataError(f"{where}: {kind} takes a non-empty list, got {values!r}")
        if kind == "choice":
            return Param(kind, tuple(values))
        if len(values) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                       for v in values):
            raise DataError(f"{where}: {kind} takes [low, high] numbers, got {values!r}")
        lo, hi = values
        if kind == "randint" and not all(isinstance(v, int) for v in values):
            raise DataError(f"{where}: randint takes integer bounds, got {values!r}")
        if not lo < hi or (kind == "loguniform" and lo <= 0):
            need = "0 < low < high" if kind == "loguniform" else "low < high"
            raise DataError(f"{where}: {kind} needs {need}, got {values!r}")
        return Param(kind, (lo, hi))
    if isinstance(raw, (list, type(None))):
        raise DataError(f"{where}: give a constant or a domain such as {{choice: {raw!r}}}, "
                        f"got {raw!r}")
    return Param("const", (raw,))


def _check_values(source: str, key: str, param: Param, archs: list[str],
                  model_keys: dict[str, set[str]]) -> None:
    where = f"{source}: key {key!r}"
    for v in param.candidates():
        ok = {
            "lr": isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0,
            "batch_size": isinstance(v, int) and not isinstance(v, bool) and v >= 1,
            "epochs": isinstance(v, int) and not isinstance(v, bool) and v >= 1,
            "mlp_depth": isinstance(v, int) and not isinstance(v, bool) and v >= 1,
            "mlp_width": isinstance(v, int) and not isinstance(v, bool) and v >= 1,
        }.get(key, True)
        if not ok:
            need = "a number > 0" if key == "lr" else "an integer >= 1"
            raise DataError(f"{where}: {v!r} is not valid; need {need}")
    if key in MLP_KEYS or key in TRAIN_KEYS:
        return
    for arch in sorted(model_keys[key] & set(archs)):
        for v in param.candidates():
            try:
                model_config(arch, **{key: tuple(v) if isinstance(v, list) else v})
            except (ValueError, TypeError) as e:
                raise DataError(f"{where}: {v!r} is not valid for {arch}: {e}") from None


def parse_space(raw: Any, source: str = "<space>") -> SearchSpace:
    """Validate a parsed YAML search space; a `DataError` naming the bad key otherwise."""
    if not isinstance(raw, dict) or not raw:
        raise DataError(f"{source}: a search space is a non-empty YAML mapping of keys to "
                        f"constants or domains, got {type(raw).__name__}")
    model_keys = _model_keys()
    valid = sorted({*TRAIN_KEYS, *MLP_KEYS, *model_keys})
    unknown = sorted(str(k) for k in raw if k not in valid)
    if unknown:
        raise DataError(f"{source}: unknown key(s) {unknown}; valid keys: {valid}")
    if "arch" not in raw:
        raise DataError(f"{source}: key 'arch' is required, e.g. arch: {{choice: [dnn, fm]}}")
    params = {k: _param(source, k, v) for k, v in raw.items()}
    if params["arch"].kind not in ("const", "choice"):
        raise DataError(f"{source}: key 'arch': use a constant or {{choice: [...]}}")
    archs = list(params["arch"].values)
    bad = [a for a in archs if a not in MODELS]
    if bad:
        raise DataError(f"{source}: key 'arch': unknown {bad}; choose from {sorted(MODELS)}")
    if "epochs" in params and params["epochs"].kind != "const":
        raise DataError(f"{source}: key 'epochs': must be a constant (it is ASHA's max_t)")
    with_mlp = {a for a in archs if HIDDEN_UNITS in {f.name for f in fields(MODELS[a].config)}}
    for key, param in params.items():
        takers = with_mlp if key in MLP_KEYS else model_keys.get(key)
        if takers is not None and not takers & set(archs):
            raise DataError(f"{source}: key {key!r}: none of the architectures {archs} takes it")
        _check_values(source, key, param, archs, model_keys)
    return SearchSpace(params, source)


def load_space(path: str) -> SearchSpace:
    """Read and validate a YAML search space from a local path or URI."""
    fs, root = open_fs(path)
    try:
        text = fs.cat_file(root).decode()
    except FileNotFoundError:
        raise DataError(f"{path}: search space file not found") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise DataError(f"{path}: not valid YAML: {e}") from None
    return parse_space(raw, path)


# -- the trials -------------------------------------------------------------------------------


def search_trial(config: dict, memory: SparseBatch, test: SparseBatch, schema_json: str,
                 eval_cfg: dict) -> None:
    """One Tune trial: train the sampled configuration on the memory, report the test AUC
    after every epoch (`tune.report`, so ASHA can stop it)."""
    import torch
    from ray import tune

    from diet_ray.data.schema import Schema
    from diet_ray.evaluate.train import (
        TrainConfig,
        evaluate,
        make_optimizer,
        shuffled_batches,
        train_epochs,
    )
    from diet_ray.models import build_model

    torch.set_num_threads(1)
    s = trial_settings(config)
    seed = config["seed"]
    torch.manual_seed(seed)
    model = build_model(s.arch, Schema.from_json(schema_json), s.model_config)
    g = torch.Generator().manual_seed(seed)
    opt = make_optimizer(model, TrainConfig(lr=s.lr, batch_size=s.batch_size))
    rows = 0
    for epoch in range(1, s.epochs + 1):
        cfg = TrainConfig(lr=s.lr, batch_size=s.batch_size, seed=seeded(seed, epoch) % 2**31)
        rows += train_epochs(model, lambda: shuffled_batches(memory, s.batch_size, g), cfg,
                             optimizer=opt).rows
        m = evaluate(model, [test])
        tune.report({"auc": m["auc"], "logloss": m["logloss"], "epoch": epoch,
                     "rows_trained": rows})


def run_search(ev: EvalData, space: SearchSpace, samples: int, seed: int = 0,
               cpus_per_trial: float = 0.5, grace_period: int = 1,
               reduction_factor: float = 4) -> list[dict]:
    """ASHA search of `samples` configurations on `ev`; rows ranked by final test AUC."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import BasicVariantGenerator

    if samples < 1:
        raise DataError(f"--samples must be at least 1, got {samples}")
    param_space = {**space.to_tune(), "seed": seeded(seed, 0, 31) % 2**31}
    scheduler = ASHAScheduler(time_attr="training_iteration", max_t=space.epochs,
                              grace_period=min(grace_period, space.epochs),
                              reduction_factor=reduction_factor)
    tune_config = tune.TuneConfig(
        metric="auc", mode="max", num_samples=samples, scheduler=scheduler,
        search_alg=BasicVariantGenerator(random_state=seed))
    grid = fit_tuner(search_trial, ev, param_space, f"search-stage{ev.snapshot_stage}",
                     cpus_per_trial, EvalConfig(), tune_config)
    rows = []
    for result in grid:
        s = trial_settings(result.config)
        history = result.metrics_dataframe
        rows.append({
            "arch": s.arch, "lr": s.lr, "batch_size": s.batch_size,
            "model_config": json.dumps(s.model_config, sort_keys=True),
            "auc": float(result.metrics["auc"]), "logloss": float(result.metrics["logloss"]),
            "best_auc": float(history["auc"].max()), "epochs": int(result.metrics["epoch"]),
            "stopped_early": int(result.metrics["epoch"]) < s.epochs,
            "seed": result.config["seed"], "trial_id": result.metrics["trial_id"],
            "snapshot_stage": ev.snapshot_stage, "test_stage": ev.test_stage,
        })
    rows.sort(key=lambda r: -r["auc"] if not math.isnan(r["auc"]) else math.inf)
    return [{"rank": i + 1, **r} for i, r in enumerate(rows)]


def verify_top(ev: EvalData, data: str, rows: list[dict], k: int,
               cpus_per_task: float = 0.5) -> dict:
    """Retrain the top `k` configurations by one continual pass over stages
    0..snapshot_stage (`zoo.train_full`, Ray tasks in parallel), test on the same stage;
    both rankings and their Kendall τ."""
    import ray

    from diet_ray.evaluate.zoo import DEEP_LR, DEFAULT_LR, load_stages, train_full

    def full(row: dict, schema: Any, train: list, test: Any) -> float:
        import torch

        torch.set_num_threads(1)
        cfg = {k: tuple(v) if isinstance(v, list) else v
               for k, v in json.loads(row["model_config"]).items()}
        scale = row["lr"] / DEFAULT_LR.get(row["arch"], DEEP_LR)  # train with the searched lr
        return train_full(row["arch"], schema, train, test, row["seed"], row["batch_size"],
                          cfg, scale).auc

    top = rows[:k]
    train = ray.put(load_stages(data, ev.schema, range(ev.test_stage)))
    task = ray.remote(num_cpus=cpus_per_task)(full)
    aucs = ray.get([task.remote(r, ev.schema, train, ev.test) for r in top])
    full_rank = {i: rank + 1 for rank, i in
                 enumerate(sorted(range(len(top)), key=lambda i: -aucs[i]))}
    table = [{"rank": r["rank"], "arch": r["arch"], "lr": r["lr"], "batch_size": r["batch_size"],
              "model_config": r["model_config"], "memory_auc": r["auc"],
              "memory_rank": i + 1, "full_auc": aucs[i], "full_rank": full_rank[i]}
             for i, r in enumerate(top)]
    tau = kendall_tau([r["auc"] for r in top], aucs)
    return {"train_stages": list(range(ev.test_stage)), "test_stage": ev.test_stage,
            "kendall_tau": tau, "configs": table}


# -- command line -------------------------------------------------------------------------------


def _describe(r: dict) -> str:
    cfg = json.loads(r["model_config"])
    parts = [f"{k}={v}" for k, v in cfg.items()]
    return f"{r['arch']} lr={r['lr']:.2g} bs={r['batch_size']}" + (
        " " + " ".join(parts) if parts else "")


def format_top(rows: list[dict], n: int = 5) -> str:
    lines = ["| rank | configuration | test AUC | best AUC | epochs |", "|---|---|---|---|---|"]
    for r in rows[:n]:
        lines.append(f"| {r['rank']} | {_describe(r)} | {r['auc']:.4f} | {r['best_auc']:.4f} | "
                     f"{r['epochs']}{' (stopped)' if r['stopped_early'] else ''} |")
    return "\n".join(lines)


def format_verify(verify: dict) -> str:
    lines = ["| configuration | memory AUC | memory rank | full AUC | full rank |",
             "|---|---|---|---|---|"]
    for r in verify["configs"]:
        lines.append(f"| {_describe(r)} | {r['memory_auc']:.4f} | {r['memory_rank']} | "
                     f"{r['full_auc']:.4f} | {r['full_rank']} |")
    lines.append(f"\nKendall τ (memory vs full ranking): {verify['kendall_tau']:.3f}")
    return "\n".join(lines)


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--snapshot", required=True, help="distillation output URI (its snapshots)")
    p.add_argument("--data", required=True, help="prepared dataset URI")
    p.add_argument("--space", required=True, help="YAML search space (jobs/configs/search-space.yaml)")
    p.add_argument("--samples", type=int, default=20, help="configurations to try (default 20)")
    p.add_argument("--verify-top", type=int, default=0,
                   help="retrain the best K on the full stream and compare rankings")
    p.add_argument("--stage", type=int, help="snapshot stage (default: the latest)")
    p.add_argument("--seed", type=int, default=0, help="seeds sampling and training")
    p.add_argument("--cpus-per-trial", type=float, default=0.5)
    p.add_argument("--grace-period", type=int, default=1, help="ASHA: epochs before stopping")
    p.add_argument("--reduction-factor", type=float, default=4, help="ASHA reduction factor")
    p.add_argument("--out", help="folder/URI for search.csv and search.json")


def run(args: argparse.Namespace) -> int:
    from diet_ray.pipeline import init_ray

    space = load_space(args.space)
    if args.verify_top < 0:
        raise DataError(f"--verify-top must be >= 0, got {args.verify_top}")
    init_ray()
    ev = load_eval_data(args.snapshot, args.data, args.stage)
    rows = run_search(ev, space, args.samples, args.seed, args.cpus_per_trial,
                      args.grace_period, args.reduction_factor)
    print(f"ASHA search, {len(rows)} configurations on the snapshot of stage "
          f"{ev.snapshot_stage}, tested on stage {ev.test_stage}; best {min(5, len(rows))}:")
    print(format_top(rows))
    verify = None
    if args.verify_top:
        verify = verify_top(ev, args.data, rows, args.verify_top, args.cpus_per_trial)
        print(f"\nTop {len(verify['configs'])} retrained on the full stream (stages "
              f"0..{ev.test_stage - 1}, one continual pass), tested on stage {ev.test_stage}:")
        print(format_verify(verify))
    if args.out:
        save_results(rows, args.out, "search")
        fs, root = open_fs(args.out)
        doc = {"snapshot": args.snapshot, "data": args.data, "space": args.space,
               "samples": args.samples, "seed": args.seed, "metric": "auc", "mode": "max",
               "snapshot_stage": ev.snapshot_stage, "test_stage": ev.test_stage,
               "trials": rows, "verify": verify}
        write_bytes(fs, join(root, "search.json"), json.dumps(doc, indent=2).encode())
        print(f"results in {args.out} (search.csv, search.json)")
    return 0
