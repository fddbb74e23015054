"""`diet-ray distill --evaluate-every N`: evaluate snapshots while the distillation runs.

A driver-side thread watches `SnapshotStore(out).stages()` while `trainer.fit()` runs; each
due stage (N-1, 2N-1, ..., and the last; only those with a next stage to test on) gets the
`diet-ray evaluate` fan-out (`tune_eval.evaluate_snapshot`: architectures × seeds) in a
`ray.remote(num_cpus=0)` task, so the Tune driver runs beside the Train workers and its
trials take CPUs as they free up. After fit() returns, all evaluations are awaited and
summarised::

    OUT/eval/stage=000t/results.{csv,json}   one per evaluated stage (kept on resume)
    OUT/eval/auc_by_stage.csv                mean ± std test AUC per stage and architecture
    OUT/eval/auc_by_stage.png                the same, plotted
"""

from __future__ import annotations

import csv
import io
import json
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from diet_ray.config import EvalConfig
from diet_ray.data.errors import DataError
from diet_ray.data.fs import join, open_fs, write_bytes
from diet_ray.memory.store import SnapshotStore
from diet_ray.models import MODELS

log = logging.getLogger("diet_ray")
EVAL_DIR = "eval"


def stage_dir(out: str, stage: int) -> str:
    return join(out.rstrip("/"), EVAL_DIR, f"stage={stage:04d}")


def evaluate_stage(out: str, data: str, stage: int, archs: list[str], seeds: int, seed: int,
                   eval_cfg: dict) -> str:
    """The `diet-ray evaluate` fan-out on the snapshot of `stage`; results into its folder."""
    from diet_ray.evaluate.tune_eval import evaluate_snapshot, save_results

    rows = evaluate_snapshot(out, data, archs, seeds, stage, seed, EvalConfig(**eval_cfg))
    folder = stage_dir(out, stage)
    save_results(rows, folder)
    return folder


@dataclass
class EvaluateEvery:
    """Evaluate every `every`-th committed snapshot of `out` while distillation runs."""

    out: str
    data: str
    every: int
    archs: list[str]
    seeds: int = 1
    seed: int = 0
    eval_cfg: EvalConfig = field(default_factory=EvalConfig)
    poll_s: float = 2.0

    def __post_init__(self) -> None:
        if self.every < 1:
            raise DataError(f"--evaluate-every must be at least 1, got {self.every}")
        if self.seeds < 1:
            raise DataError(f"--evaluate-seeds must be at least 1, got {self.seeds}")
        unknown = [a for a in self.archs if a not in MODELS]
        if unknown or not self.archs:
            raise DataError(f"--evaluate-archs: unknown {unknown}; choose from {sorted(MODELS)}")

    def due(self, total: int, num_stages: int) -> list[int]:
        """Stages to evaluate when distilling 0..total-1 of a stream of `num_stages`."""
        stages = {*range(self.every - 1, total, self.every), total - 1}
        return sorted(t for t in stages if 0 <= t and t + 1 < num_stages)

    def done(self, stage: int) -> bool:
        fs, root = open_fs(join(stage_dir(self.out, stage), "results.json"))
        return fs.exists(root)

    @contextmanager
    def watching(self, total: int, num_stages: int) -> Iterator[None]:
        """Submit evaluations as due snapshots are committed while the body runs; then wait
        for them and write the summary (a failed body stops the watcher and re-raises)."""
        import ray

        due = [t for t in self.due(total, num_stages) if not self.done(t)]
        skipped = sorted(set(self.due(total, num_stages)) - set(due))
        if skipped:
            log.info("evaluate-every: stages %s already evaluated, skipping", skipped)
        task = ray.remote(num_cpus=0)(evaluate_stage)
        pending: dict[int, ray.ObjectRef] = {}
        stop = threading.Event()
        store = SnapshotStore(self.out)

        def submit_committed() -> None:
            committed = set(store.stages())
            for t in due:
                if t in committed and t not in pending:
                    log.info("evaluate-every: evaluating the snapshot of stage %d on stage %d "
                             "(%s × %d seeds)", t, t + 1, ",".join(self.archs), self.seeds)
                    pending[t] = task.remote(self.out, self.data, t, self.archs, self.seeds,
                                             self.seed, self.eval_cfg.__dict__)

        def watch() -> None:
            while not stop.wait(self.poll_s):
                submit_committed()

        thread = threading.Thread(target=watch, name="diet-evaluate-every", daemon=True)
        thread.start()
        try:
            yield
        except BaseException:
            stop.set()
            thread.join()
            for ref in pending.values():
                ray.cancel(ref)
            raise
        stop.set()
        thread.join()
        submit_committed()
        for t, ref in sorted(pending.items()):
            log.info("evaluate-every: stage %d results in %s", t, ray.get(ref))
        if self.due(total, num_stages):
            csv_path, png_path = self.summarise()
            log.info("evaluate-every: AUC by stage in %s and %s", csv_path, png_path)

    def summarise(self) -> tuple[str, str]:
        """Write `auc_by_stage.csv` and `auc_by_stage.png` from every stage's results."""
        fs, root = open_fs(join(self.out.rstrip("/"), EVAL_DIR))
        rows: list[dict] = []
        for path in sorted(fs.glob(join(root, "stage=*/results.json"))):
            results = json.loads(fs.cat_file(path))
            for arch in dict.fromkeys(r["arch"] for r in results):
                aucs = [r["auc"] for r in results if r["arch"] == arch]
                rows.append({"stage": results[0]["snapshot_stage"],
                             "test_stage": results[0]["test_stage"], "arch": arch,
                             "auc": float(np.mean(aucs)), "auc_std": float(np.std(aucs)),
                             "seeds": len(aucs)})
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=["stage", "test_stage", "arch", "auc",
                                                  "auc_std", "seeds"])
        writer.writeheader()
        writer.writerows(rows)
        csv_path, png_path = join(root, "auc_by_stage.csv"), join(root, "auc_by_stage.png")
        write_bytes(fs, csv_path, text.getvalue().encode())
        write_bytes(fs, png_path, plot_auc_by_stage(rows))
        return csv_path, png_path


def plot_auc_by_stage(rows: list[dict]) -> bytes:
    """PNG bytes: test AUC (mean ± std over seeds) against snapshot stage, one line per arch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for arch in dict.fromkeys(r["arch"] for r in rows):
        rs = sorted((r for r in rows if r["arch"] == arch), key=lambda r: r["stage"])
        ax.errorbar([r["stage"] for r in rs], [r["auc"] for r in rs],
                    yerr=[r["auc_std"] for r in rs], marker="o", capsize=3, label=arch)
    ax.set_xlabel("snapshot stage (tested on the next stage)")
    ax.set_ylabel("test AUC of a model trained on the memory")
    ax.set_title("Memory quality by stage")
    ax.grid(alpha=0.3)
    ax.legend()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()
