"""A tiny prepared stream and a small distillation config shared by the Ray job tests."""

from __future__ import annotations

from pathlib import Path

from diet_ray.config import DistillConfig, load_config
from diet_ray.data.prepare import PrepareOptions, prepare
from diet_ray.data.sources import build_source
from diet_ray.memory.store import SnapshotStore
from tests.conftest import GENERIC_YAML, write_click_log

OVERRIDES = [
    "memory.budget=0.2", "bilevel.inner_archs=[dnn, fm]", "bilevel.inner_steps=2",
    "bilevel.outer_steps=2", "bilevel.outer_batch=32", "continual.batch_size=16",
    "influence.probe_rows=64", "influence.clusters=2", "influence.num_scorers=1",
    "influence.batch_size=64", "train.num_workers=2", "threads=1",
]


def prepare_tiny_stream(root: Path) -> str:
    """400 click-log rows in 4 stages of 100; returns the prepared dataset's path."""
    (root / "log.yaml").write_text(GENERIC_YAML)
    source = build_source("csv", str(write_click_log(root / "log.csv")), str(root / "log.yaml"))
    prepare(source, str(root / "prepared"), PrepareOptions(stage_by="rows:100"))
    return str(root / "prepared")


def config(data: str, out: str, *extra: str) -> DistillConfig:
    return load_config(None, [*OVERRIDES, *extra], data=data, out=out)


def manifests(out: str) -> dict[int, tuple[int, str, int]]:
    """stage -> (version, created, rows) of every committed snapshot."""
    store = SnapshotStore(out)
    return {s: (m.version, m.created, m.rows) for s in store.stages()
            for m in [store.manifest(s)]}


def run_into(fn, cfg, errors: list) -> None:
    """Run fn(cfg), keeping any exception for the test thread to re-raise."""
    try:
        fn(cfg)
    except BaseException as e:  # noqa: BLE001 - re-raised by the test thread
        errors.append(e)
