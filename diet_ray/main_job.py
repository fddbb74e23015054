"""`diet-ray run`: the main job on the embedded default, end to end.

fetch MovieLens 100K -> prepare 10 equal-count stages -> distil stages 0..8 at 2% on Ray
-> train DeepFM, DCN and FM on the final snapshot, on a uniform random 2% sample and on
a label-stratified random 2% sample of the same stages -> test on stage 9 -> print the
table (and save it as `results.json` in the work directory).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from diet_ray.config import load_config
from diet_ray.data.batch import collate
from diet_ray.data.errors import DataError
from diet_ray.data.fetch import fetch_movielens_100k
from diet_ray.data.prepare import PrepareOptions, prepare
from diet_ray.data.schema import Schema
from diet_ray.data.sources import build_source
from diet_ray.data.stream import read_stage_table
from diet_ray.evaluate.baselines import label_stratified, uniform_random
from diet_ray.evaluate.candidates import load_memory, summarise, train_candidate

log = logging.getLogger("diet_ray")


def ensure_prepared(workdir: Path) -> str:
    data = workdir / "movielens-100k"
    try:
        Schema.load(str(data))
    except DataError:  # not prepared yet (or an interrupted preparation)
        source = build_source("movielens-100k", str(fetch_movielens_100k()))
        prepare(source, str(data), PrepareOptions(stage_by="rows:10000", overwrite=True,
                                                  dataset="movielens-100k"))
    return str(data)


def format_table(summary: dict, archs: list[str], methods: list[str]) -> str:
    head = "| method | " + " | ".join(archs) + " |"
    lines = [head, "|---" * (len(archs) + 1) + "|"]
    for m in methods:
        cells = [f"{summary[m][a]['auc']:.4f} ± {summary[m][a]['auc_std']:.4f}" for a in archs]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_main_job(workdir: str, budget: float, seeds: int, archs: list[str],
                 overrides: list[str]) -> dict:
    began = time.perf_counter()
    root = Path(workdir)
    data = ensure_prepared(root)
    schema = Schema.load(data)
    test_stage = len(schema.stages) - 1
    cfg = load_config(None, [f"memory.budget={budget}", *overrides], data=data,
                      out=str(root / f"distill-{budget:g}"), stages=test_stage)
    from diet_ray.pipeline import distill

    distill(cfg)
    memory, stage = load_memory(cfg.out)
    test = collate(read_stage_table(data, test_stage, schema), schema)
    train_stages = range(test_stage)
    sets = {
        "diet (final snapshot)": memory,
        "uniform random": collate(uniform_random(data, schema, train_stages, budget, cfg.seed), schema),
        "label-stratified random": collate(
            label_stratified(data, schema, train_stages, budget, cfg.seed), schema),
    }
    results = [train_candidate(method, arch, schema, rows, test, cfg.eval, seed)
               for method, rows in sets.items() for arch in archs for seed in range(seeds)]
    summary = summarise(results)
    table = format_table(summary, archs, list(sets))
    gaps = {a: summary["diet (final snapshot)"][a]["auc"] - summary["label-stratified random"][a]["auc"]
            for a in archs}
    report = {"data": data, "snapshot": cfg.out, "snapshot_stage": stage, "test_stage": test_stage,
              "budget": budget, "rows": {m: len(b) for m, b in sets.items()}, "seeds": seeds,
              "auc": summary, "gap_vs_stratified": gaps,
              "seconds": time.perf_counter() - began}
    (root / "results.json").write_text(json.dumps(report, indent=2))
    print(f"\nTest AUC on stage {test_stage} (MovieLens 100K), {len(memory)} training rows each "
          f"({budget:.0%} of stages 0..{test_stage - 1}), mean ± std over {seeds} seeds:\n")
    print(table)
    print("\nDIET minus label-stratified random: "
          + ", ".join(f"{a} {g:+.4f}" for a, g in gaps.items())
          + f"  (mean {np.mean(list(gaps.values())):+.4f})")
    print(f"total {report['seconds']:.0f}s; results in {root / 'results.json'}")
    return report
