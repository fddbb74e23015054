"""SnapshotStore: exact round trips, manifest-last commits, immutability, checksums, retries."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np
import pytest

from diet_ray.data.errors import DataError
from diet_ray.memory import store as store_module
from diet_ray.memory.store import Manifest, SnapshotConflictError, SnapshotStore


def snapshot(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "memory/ids": rng.integers(0, 1000, (8, 3, 4)).astype(np.int64),
        "memory/logits": rng.normal(size=(8, 3, 4)).astype(np.float32),
        "memory/mask": rng.random(8) > 0.5,
        "continual/fc.weight": rng.normal(size=(4, 16))[:, ::2],  # non-contiguous
        "trajectory/0/fc.bias": np.full((), float(seed)),  # 0-d
        "counts": np.arange(5, dtype=np.uint16),
        "empty": np.zeros((0, 7), dtype=np.float16),
    }


META = {"rows": 8, "seen": 1234, "fields": ["user", "item"], "note": "é"}


@pytest.fixture(params=["local", "memory"])
def uri(request, tmp_path: Path) -> str:
    if request.param == "local":
        return str(tmp_path / "run")
    return f"memory://diet-test-{uuid.uuid4().hex}/run"


@pytest.fixture
def local(tmp_path: Path) -> SnapshotStore:
    return SnapshotStore(str(tmp_path / "run"), tries=3, backoff_s=0.0)


def assert_same(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert sorted(got) == sorted(want)
    for name, value in want.items():
        assert got[name].dtype == value.dtype, name
        assert got[name].shape == value.shape, name
        np.testing.assert_array_equal(got[name], value, err_msg=name)


def test_round_trip_is_exact(uri: str):
    store = SnapshotStore(uri)
    assert store.stages() == [] and store.latest() is None
    arrays = snapshot()
    written = store.commit(0, 1, arrays, META, "cfg")
    got, manifest = SnapshotStore(uri).load()
    assert_same(got, arrays)
    assert manifest == written
    assert (manifest.stage, manifest.version, manifest.rows) == (0, 1, 8)
    assert manifest.meta == META and manifest.config_hash == "cfg"
    assert {a.name: a.dtype for a in manifest.arrays}["memory/logits"] == "<f4"
    assert Manifest.from_json(manifest.to_json()) == manifest


def test_stages_and_latest_follow_the_highest_committed_stage(uri: str):
    store = SnapshotStore(uri)
    for stage in (0, 1, 2, 10):
        store.commit(stage, stage + 1, snapshot(stage), {"rows": stage}, "cfg")
    assert store.stages() == [0, 1, 2, 10]
    assert store.latest().stage == 10 and store.latest().version == 11
    assert_same(store.load(2)[0], snapshot(2))
    assert store.manifest(1).rows == 1
    with pytest.raises(DataError, match="stage 3 has no committed snapshot"):
        store.load(3)


def test_manifest_is_written_last(local: SnapshotStore, monkeypatch):
    local.commit(0, 1, snapshot(0), META, "cfg")
    real = store_module.write_bytes

    def crash_on_manifest(fs, path, data):
        if "manifest.json" in path:
            raise RuntimeError("simulated crash between the tensors and the manifest")
        real(fs, path, data)

    monkeypatch.setattr(store_module, "write_bytes", crash_on_manifest)
    with pytest.raises(RuntimeError, match="simulated crash"):
        local.commit(1, 2, snapshot(1), META, "cfg")
    stage_dir = Path(local.uri) / "snapshots" / "stage=0001"
    assert (stage_dir / "tensors.npz").exists() and not (stage_dir / "manifest.json").exists()
    assert local.stages() == [0] and local.latest().stage == 0

    monkeypatch.setattr(store_module, "write_bytes", real)
    retried = local.commit(1, 2, snapshot(1), META, "cfg")
    assert local.stages() == [0, 1] and local.latest() == retried
    assert_same(local.load(1)[0], snapshot(1))
    assert sorted(os.listdir(stage_dir)) == ["manifest.json", "tensors.npz"]


def test_recommit_of_identical_content_is_a_no_op(local: SnapshotStore):
    first = local.commit(0, 1, snapshot(), META, "cfg")
    npz = Path(local.uri) / "snapshots" / "stage=0000" / "tensors.npz"
    before = npz.stat().st_mtime_ns
    again = local.commit(0, 1, {k: v.copy() for k, v in snapshot().items()}, dict(META), "cfg")
    assert again == first  # the same created time: nothing was rewritten
    assert npz.stat().st_mtime_ns == before


@pytest.mark.parametrize("change", ["arrays", "meta", "version"])
def test_different_content_for_a_committed_stage_raises(local: SnapshotStore, change: str):
    local.commit(0, 1, snapshot(0), META, "cfg")
    arrays, meta, version = snapshot(0), dict(META), 1
    if change == "arrays":
        arrays["memory/logits"][0, 0, 0] += 1
    elif change == "meta":
        meta["rows"] = 9
    else:
        version = 2
    with pytest.raises(SnapshotConflictError, match="already committed"):
        local.commit(0, version, arrays, meta, "cfg")
    assert_same(local.load(0)[0], snapshot(0))


def test_corrupt_tensors_are_detected(local: SnapshotStore):
    local.commit(0, 1, snapshot(), META, "cfg")
    npz = Path(local.uri) / "snapshots" / "stage=0000" / "tensors.npz"
    data = bytearray(npz.read_bytes())
    data[len(data) // 2] ^= 0xFF
    npz.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"stage=0000/tensors.npz: checksum mismatch"):
        local.load()


@pytest.mark.parametrize("bad", [np.array([object()]), np.array(["a", "b"])])
def test_non_numeric_arrays_are_rejected(local: SnapshotStore, bad: np.ndarray):
    with pytest.raises(DataError, match="only numeric arrays"):
        local.commit(0, 1, {"memory/ids": np.arange(3), "bad": bad}, {}, "cfg")
    assert local.stages() == []


def test_meta_must_be_json(local: SnapshotStore):
    with pytest.raises(DataError, match="not JSON-able"):
        local.commit(0, 1, snapshot(), {"rows": np.int64(3), "x": object()}, "cfg")


def test_config_hash_mismatch_is_a_clear_error(local: SnapshotStore):
    local.check_config("anything")  # an empty store accepts any config
    local.commit(0, 1, snapshot(), META, "cfg-a")
    local.check_config("cfg-a")
    with pytest.raises(DataError, match="different config.*new --out or the same config"):
        local.check_config("cfg-b")
    with pytest.raises(DataError, match="different config"):
        local.commit(1, 2, snapshot(1), META, "cfg-b")


def test_transient_errors_are_retried(local: SnapshotStore, monkeypatch):
    real, calls = store_module.write_bytes, []

    def flaky(fs, path, data):
        calls.append(path)
        if len(calls) <= 2:
            raise ConnectionError("connection reset by peer")
        real(fs, path, data)

    monkeypatch.setattr(store_module, "write_bytes", flaky)
    local.commit(0, 1, snapshot(), META, "cfg")
    assert len(calls) == 4  # two failures, then tensors and manifest
    assert_same(local.load()[0], snapshot())


def test_persistent_errors_become_a_data_error_after_the_retries(local: SnapshotStore,
                                                               monkeypatch):
    calls = []

    def down(fs, path, data):
        calls.append(path)
        raise ConnectionError("endpoint unreachable")

    monkeypatch.setattr(store_module, "write_bytes", down)
    with pytest.raises(DataError, match="storage failed after 3 tries.*endpoint unreachable"):
        local.commit(0, 1, snapshot(), META, "cfg")
    assert len(calls) == 3 and local.stages() == []


def test_permission_denied_fails_fast(local: SnapshotStore, monkeypatch):
    calls = []

    def denied(fs, path, data):
        calls.append(path)
        raise PermissionError("Access Denied")

    monkeypatch.setattr(store_module, "write_bytes", denied)
    with pytest.raises(DataError, match="access denied"):
        local.commit(0, 1, snapshot(), META, "cfg")
    assert len(calls) == 1
