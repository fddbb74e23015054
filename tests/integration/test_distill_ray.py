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
from pathlib import Path

import numpy as np
import psutil
import pytest

from diet_ray.memory.store import SnapshotStore
from diet_ray.pipeline import NAMESPACE, actor_name, distill
from tests.integration.tiny_run import (
    OVERRIDES,
    config,
    manifests,
    prepare_tiny_stream,
    run_into,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_stream(tmp_path_factory) -> str:
    return prepare_tiny_stream(tmp_path_factory.mktemp("stream"))


def ray_processes(title: str) -> list[int]:
    """PIDs of this test's Ray worker processes whose title starts with `title` (Ray titles
    its workers ray::<ActorClass>...). Only descendants of this process (the local Ray that
    `ray_local` started): another job's Ray on the same machine is never touched."""
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            cmd = " ".join(proc.cmdline())
        except psutil.Error:
            continue
        if cmd.startswith(title):
            found.append(proc.pid)
    return found


@pytest.fixture(scope="module")
def coordinators_seen() -> list[int]:
    """How many split-coordinator processes were alive at each sample of the reference run."""
    return []


@pytest.fixture(scope="module")
def reference(tiny_stream, tmp_path_factory, ray_local, coordinators_seen) -> tuple[str, dict]:
    """An undisturbed run: (output path, final manifest). While it runs, the number of
    live split-coordinator processes is sampled into `coordinators_seen`."""
    out = str(tmp_path_factory.mktemp("reference") / "run")
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            coordinators_seen.append(len(ray_processes("ray::SplitCoordinator")))
            done.wait(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        return out, distill(config(tiny_stream, out))
    finally:
        done.set()
        watcher.join()


def final_arrays(out: str) -> dict[str, np.ndarray]:
    return SnapshotStore(out).load()[0]


def test_distill_commits_every_stage_once_and_resumes_as_a_no_op(tiny_stream, reference):
    out, final = reference
    assert final["stage"] == 3 and final["version"] == 4
    first = manifests(out)
    assert [v for v, _, _ in first.values()] == [1, 2, 3, 4]
    assert [final["meta"]["memory_slots"]] == [80]  # 20% of 400 rows
    assert json.loads((Path(out) / "config.json").read_text())["hash"]
    distill(config(tiny_stream, out))  # rerun: everything committed, nothing rewritten
    assert manifests(out) == first


def test_each_stage_split_is_released_after_its_stage(reference, coordinators_seen):
    """Peak memory must not grow with the number of stages: a stage's streaming-split
    coordinator (an actor process) ends once its stage is done, so over the 4 stages no
    more than the current and the previous one are ever alive."""
    assert max(coordinators_seen) >= 1  # the watcher did see the run's coordinators
    assert max(coordinators_seen) <= 2, coordinators_seen


def train_worker_pids() -> list[int]:
    return ray_processes("ray::RayTrainWorker")


def test_train_worker_killed_mid_run_restarts_and_commits_each_stage_once(
        tiny_stream, reference, tmp_path, ray_local):
    out = str(tmp_path / "run")
    errors: list[BaseException] = []
    job = threading.Thread(target=lambda: run_into(distill, config(tiny_stream, out), errors))
    job.start()
    deadline = time.time() + 300
    while not SnapshotStore(out).stages() and time.time() < deadline:
        time.sleep(0.2)
    victims = train_worker_pids()
    assert victims, "no Ray Train worker process found to kill"
    os.kill(victims[-1], signal.SIGKILL)
    job.join(timeout=600)
    assert not errors, errors
    assert [v for v, _, _ in manifests(out).values()] == [1, 2, 3, 4]


def test_actor_killed_mid_run_job_finishes_with_the_same_versions(tiny_stream, tmp_path, ray_local):
    import ray

    out = str(tmp_path / "run")
    errors: list[BaseException] = []
    job = threading.Thread(target=lambda: run_into(distill, config(tiny_stream, out), errors))
    job.start()
    deadline = time.time() + 300
    while not SnapshotStore(out).stages() and time.time() < deadline:
        time.sleep(0.5)
    ray.kill(ray.get_actor(actor_name(out), namespace=NAMESPACE), no_restart=False)
    job.join(timeout=600)
    assert not errors, errors
    assert [v for v, _, _ in manifests(out).values()] == [1, 2, 3, 4]


def test_driver_killed_after_a_stage_resumes_at_the_next(tiny_stream, reference, tmp_path,
                                                         ray_local):
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
    expected = final_arrays(reference[0])  # and the memory is the undisturbed run's
    for name, value in final_arrays(out).items():
        np.testing.assert_allclose(value, expected[name], rtol=1e-5, atol=1e-6, err_msg=name)
