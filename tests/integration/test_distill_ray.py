"""The distillation job on a real local Ray: Ray Data scoring, Ray Train with 2 workers,
the memory actor. Resume after a killed driver, an actor killed mid-run, no stage applied
twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from diet_ray.config import load_config
from diet_ray.data.prepare import PrepareOptions, prepare
from diet_ray.data.sources import build_source
from diet_ray.memory.store import SnapshotStore
from diet_ray.pipeline import NAMESPACE, actor_name, distill
from tests.conftest import GENERIC_YAML, write_click_log

pytestmark = pytest.mark.slow

OVERRIDES = [
    "memory.budget=0.2", "bilevel.inner_archs=[dnn, fm]", "bilevel.inner_steps=2",
    "bilevel.outer_steps=2", "bilevel.outer_batch=32", "continual.batch_size=16",
    "influence.probe_rows=64", "influence.clusters=2", "influence.num_scorers=1",
    "influence.batch_size=64", "train.num_workers=2", "threads=1",
]


@pytest.fixture(scope="module")
def tiny_stream(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("stream")
    (root / "log.yaml").write_text(GENERIC_YAML)
    source = build_source("csv", str(write_click_log(root / "log.csv")), str(root / "log.yaml"))
    prepare(source, str(root / "prepared"), PrepareOptions(stage_by="rows:100"))
    return str(root / "prepared")


def config(data: str, out: str):
    return load_config(None, OVERRIDES, data=data, out=out)


def manifests(out: str) -> dict[int, tuple[int, str, int]]:
    store = SnapshotStore(out)
    return {s: (m.version, m.created, m.rows) for s in store.stages()
            for m in [store.manifest(s)]}


def test_distill_commits_every_stage_once_and_resumes_as_a_no_op(tiny_stream, tmp_path, ray_local):
    out = str(tmp_path / "run")
    final = distill(config(tiny_stream, out))
    assert final["stage"] == 3 and final["version"] == 4
    first = manifests(out)
    assert [v for v, _, _ in first.values()] == [1, 2, 3, 4]
    assert [final["meta"]["memory_slots"]] == [80]  # 20% of 400 rows
    assert json.loads((tmp_path / "run" / "config.json").read_text())["hash"]
    distill(config(tiny_stream, out))  # rerun: everything committed, nothing rewritten
    assert manifests(out) == first


def test_actor_killed_mid_run_job_finishes_with_the_same_versions(tiny_stream, tmp_path, ray_local):
    import ray

    out = str(tmp_path / "run")
    errors: list[BaseException] = []
    job = threading.Thread(target=lambda: _run(distill, config(tiny_stream, out), errors))
    job.start()
    deadline = time.time() + 300
    while not SnapshotStore(out).stages() and time.time() < deadline:
        time.sleep(0.5)
    ray.kill(ray.get_actor(actor_name(out), namespace=NAMESPACE), no_restart=False)
    job.join(timeout=600)
    assert not errors, errors
    assert [v for v, _, _ in manifests(out).values()] == [1, 2, 3, 4]


def _run(fn, cfg, errors):
    try:
        fn(cfg)
    except BaseException as e:  # noqa: BLE001 - re-raised by the test thread
        errors.append(e)


def test_driver_killed_after_a_stage_resumes_at_the_next(tiny_stream, tmp_path, ray_local):
    out = str(tmp_path / "run")
    code = ("import sys; from diet_ray.cli import main; "
            f"sys.exit(main(['distill', '--data', {tiny_stream!r}, '--out', {out!r}, "
            f"*{OVERRIDES!r}]))")
    driver = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "RAY_ADDRESS": ""},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    deadline = time.time() + 300
    while len(SnapshotStore(out).stages()) < 2 and time.time() < deadline:
        time.sleep(0.2)
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and the local Ray it started
    driver.wait()
    before = manifests(out)
    assert len(before) >= 2, "the driver was expected to commit two stages before the kill"
    distill(config(tiny_stream, out))
    after = manifests(out)
    assert [v for v, _, _ in after.values()] == [1, 2, 3, 4]
    for stage, entry in before.items():  # committed stages were not redone
        assert after[stage] == entry
