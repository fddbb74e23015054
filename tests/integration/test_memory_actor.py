"""The memory actor on a local Ray: commits, restarts after a kill, exactly-once, S3 resume."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import ray
import s3fs

from diet_ray.data.errors import DataError
from diet_ray.memory import MemoryActor, MemoryStateError, SnapshotStore, start_memory_actor
from diet_ray.memory import store as store_module


@pytest.fixture(scope="module")
def ray_s3(s3_endpoint, ray_local) -> str:
    """Ray started after AWS_ENDPOINT_URL is set, so the actors reach the loopback S3."""
    return s3_endpoint


@pytest.fixture
def actor_name() -> str:
    return f"memory-{uuid.uuid4().hex[:8]}"


def state(stage: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(stage)
    return {"memory/ids": rng.integers(0, 100, (6, 2, 4)),
            "memory/logits": rng.normal(size=(6, 2, 4)).astype(np.float32),
            "continual/fc.weight": rng.normal(size=(3, 5))}


def assert_same(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert sorted(got) == sorted(want)
    for name, value in want.items():
        assert got[name].dtype == value.dtype
        np.testing.assert_array_equal(got[name], value)


def wait_for(actor, timeout: float = 60.0) -> int:
    """Poll until the (restarting) actor answers; return its last committed stage."""
    deadline = time.time() + timeout
    while True:
        try:
            return ray.get(actor.last_committed.remote(), timeout=5)
        except (ray.exceptions.GetTimeoutError, ray.exceptions.RayActorError):
            if time.time() > deadline:
                raise
            time.sleep(0.2)


def test_commit_get_and_working_copy(ray_s3, tmp_path: Path, actor_name: str):
    actor = start_memory_actor(actor_name, str(tmp_path / "run"), "cfg")
    assert ray.get(actor.last_committed.remote()) == -1
    assert ray.get(actor.get.remote()) == (0, {}, {})
    token = ray.get(actor.stage_working.remote(0, state(0), {"rows": 6}))
    got_token, working, meta = ray.get(actor.get_working.remote(0))
    assert got_token == token and meta == {"rows": 6}
    assert_same(working, state(0))
    with pytest.raises(MemoryStateError, match="no working copy for stage 1"):
        ray.get(actor.get_working.remote(1))

    assert ray.get(actor.commit.remote(0, ray.put(state(0)), {"rows": 6})) == 1
    version, arrays, meta = ray.get(actor.get.remote())
    assert (version, meta) == (1, {"rows": 6})
    assert_same(arrays, state(0))
    with pytest.raises(MemoryStateError, match="no working copy"):
        ray.get(actor.get_working.remote(0))  # the commit consumed it
    assert start_memory_actor(actor_name, str(tmp_path / "run"), "cfg") == actor
    ray.kill(actor, no_restart=True)


def test_killed_actor_restarts_at_the_last_commit(ray_s3, tmp_path: Path, actor_name: str):
    actor = start_memory_actor(actor_name, str(tmp_path / "run"), "cfg")
    for stage in (0, 1):
        ray.get(actor.commit.remote(stage, state(stage), {"rows": 6 * (stage + 1)}))
    ray.get(actor.stage_working.remote(2, state(2), {}))  # in progress, not committed

    ray.kill(actor, no_restart=False)
    assert wait_for(actor) == 1
    version, arrays, meta = ray.get(actor.get.remote())
    assert (version, meta) == (2, {"rows": 12})
    assert_same(arrays, state(1))
    with pytest.raises(MemoryStateError, match="after an actor restart"):
        ray.get(actor.get_working.remote(2))  # lost by design: stage 2 is redone
    assert ray.get(actor.commit.remote(2, state(2), {})) == 3
    ray.kill(actor, no_restart=True)


def test_commits_are_exactly_once_and_gapless(ray_s3, tmp_path: Path, actor_name: str):
    uri = str(tmp_path / "run")
    actor = start_memory_actor(actor_name, uri, "cfg")
    assert ray.get(actor.commit.remote(0, state(0), {})) == 1
    assert ray.get(actor.commit.remote(1, state(1), {})) == 2
    npz = tmp_path / "run" / "snapshots" / "stage=0001" / "tensors.npz"
    before = (npz.stat().st_mtime_ns, SnapshotStore(uri).manifest(1))

    assert ray.get(actor.commit.remote(1, state(1), {})) == 2  # a retry
    assert ray.get(actor.commit.remote(0, state(5), {})) == 1  # an old stage: ignored
    assert (npz.stat().st_mtime_ns, SnapshotStore(uri).manifest(1)) == before
    assert SnapshotStore(uri).stages() == [0, 1]
    with pytest.raises(MemoryStateError, match="does not follow the last committed stage 1"):
        ray.get(actor.commit.remote(3, state(3), {}))
    assert ray.get(actor.version.remote()) == 2 and SnapshotStore(uri).stages() == [0, 1]
    ray.kill(actor, no_restart=True)


def test_a_failed_commit_leaves_the_old_version_authoritative(tmp_path: Path, monkeypatch):
    actor = MemoryActor(str(tmp_path / "run"), "cfg")  # the plain class: no Ray needed
    actor.commit(0, state(0), {"rows": 6})
    real = store_module.write_bytes

    def crash_on_manifest(fs, path, data):
        if "manifest.json" in path:
            raise RuntimeError("simulated crash before the manifest")
        real(fs, path, data)

    monkeypatch.setattr(store_module, "write_bytes", crash_on_manifest)
    with pytest.raises(RuntimeError, match="simulated crash"):
        actor.commit(1, state(1), {})
    assert (actor.last_committed(), actor.version()) == (0, 1)
    assert_same(actor.get()[1], state(0))
    assert not actor.get()[1]["memory/ids"].flags.writeable

    monkeypatch.setattr(store_module, "write_bytes", real)
    assert actor.commit(1, state(1), {}) == 2
    assert MemoryActor(str(tmp_path / "run"), "cfg").get()[0] == 2  # what a restart sees


def test_another_config_is_refused(ray_s3, tmp_path: Path, actor_name: str):
    uri = str(tmp_path / "run")
    SnapshotStore(uri).commit(0, 1, state(0), {}, "cfg-a")
    with pytest.raises(DataError, match="different config"):
        start_memory_actor(actor_name, uri, "cfg-b")


def test_snapshots_resume_from_s3(ray_s3, actor_name: str):
    s3fs.S3FileSystem(endpoint_url=ray_s3).mkdir("diet-memory")
    uri = "s3://diet-memory/run"
    first = start_memory_actor(actor_name, uri, "cfg")
    for stage in (0, 1):
        ray.get(first.commit.remote(stage, state(stage), {"rows": stage}))
    assert SnapshotStore(uri).stages() == [0, 1]

    fresh = start_memory_actor(actor_name + "-fresh", uri, "cfg")
    assert ray.get(fresh.last_committed.remote()) == 1
    version, arrays, meta = ray.get(fresh.get.remote())
    assert (version, meta) == (2, {"rows": 1})
    assert_same(arrays, state(1))
    for actor in (first, fresh):
        ray.kill(actor, no_restart=True)
