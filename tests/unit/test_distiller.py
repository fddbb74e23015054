"""The Distiller: frozen slots stay bit-identical through a stage, 2 data-parallel
workers (gloo) apply exactly the update 1 worker computes on the same global batch, and
the in-process stage loop grows the memory by the budget."""

from __future__ import annotations

import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from diet_ray.config import ConfigError, load_config
from diet_ray.distill.distiller import Distiller
from diet_ray.distill.train_loop import allreduce_mean
from diet_ray.distill.write import empty_state
from diet_ray.memory.slots import Slots, new_slots
from tests.unit.distill_fixtures import real_batch, tiny_config, tiny_schema


def stage_state(cfg, n=10):
    state = empty_state(cfg, tiny_schema())
    rows = real_batch(n, seed=0)
    keys = np.eye(n, 4, dtype=np.float32) + 0.01
    keys /= np.linalg.norm(keys, axis=1, keepdims=True)
    state.slots = Slots.concat([state.slots, new_slots(
        rows, keys, np.zeros(n), 0, cfg.memory.candidates, 5.0, np.zeros(n),
        np.array([True, True, False]))])
    return state


def outer_update(cfg, real, allreduce=None):
    kwargs = {} if allreduce is None else {"allreduce": allreduce}
    d = Distiller(cfg, tiny_schema(), stage_state(cfg), 0, np.array([1, 3, 5]), np.array([5]),
                  **kwargs)
    d.outer_steps(iter(real))
    return d.result(stage_rows=100)


def test_frozen_slots_are_bit_identical_after_a_stage():
    cfg = tiny_config()
    before = stage_state(cfg).slots
    after = outer_update(cfg, [real_batch(16, seed=s) for s in range(3)]).slots
    frozen = [0, 2, 4, 6, 7, 8, 9]
    for name in ("ids", "mask", "id_logits", "label_logit", "weight_logit", "dense", "key"):
        assert np.array_equal(getattr(after, name)[frozen], getattr(before, name)[frozen]), name
    assert not np.array_equal(after.id_logits[[1, 3, 5]], before.id_logits[[1, 3, 5]])
    assert after.updates.tolist() == [0, 1, 0, 1, 0, 1, 0, 0, 0, 0]


def test_inner_rows_keep_every_addressed_slot_and_cap_the_rest():
    d = Distiller(tiny_config(**{"bilevel.inner_batch": 6}), tiny_schema(),
                  stage_state(tiny_config()), 0, np.array([1, 3, 5]), np.array([5]))
    rows = [d.inner_rows(step).tolist() for step in range(4)]
    for r in rows:
        assert len(r) == 6 and len(set(r)) == 6 and {1, 3, 5} <= set(r) and max(r) < 10
    assert rows[0] == d.inner_rows(0).tolist()  # seeded: every worker takes the same rows
    assert len({tuple(r) for r in rows}) > 1  # and a fresh sample per outer step
    whole = Distiller(tiny_config(**{"bilevel.inner_batch": 10}), tiny_schema(),
                      stage_state(tiny_config()), 0, np.array([1]), np.array([]))
    assert whole.inner_rows(0) is None  # the memory fits: all of it, no indexing
    many = Distiller(tiny_config(**{"bilevel.inner_batch": 2}), tiny_schema(),
                     stage_state(tiny_config()), 0, np.array([1, 3, 5, 7]), np.array([7]))
    picks = [many.inner_rows(step).tolist() for step in range(6)]
    # more addressed slots than the cap: a seeded sample of them, never more than the cap
    assert all(len(p) == 2 and set(p) <= {1, 3, 5, 7} for p in picks)
    assert len({tuple(p) for p in picks}) > 1


def test_inner_batch_still_updates_the_addressed_slots_only():
    cfg = tiny_config(**{"bilevel.inner_batch": 5})
    before = stage_state(cfg).slots
    after = outer_update(cfg, [real_batch(16, seed=s) for s in range(3)]).slots
    frozen = [0, 2, 4, 6, 7, 8, 9]
    assert np.array_equal(after.id_logits[frozen], before.id_logits[frozen])
    assert not np.array_equal(after.id_logits[[1, 3, 5]], before.id_logits[[1, 3, 5]])


@pytest.mark.parametrize("relabel", ["all", "new"])
def test_relabel_in_chunks_writes_the_teachers_labels(monkeypatch, relabel):
    cfg = tiny_config(**{"memory.relabel": relabel})
    d = Distiller(cfg, tiny_schema(), stage_state(cfg), 0, np.array([1, 3, 5]), np.array([5, 8]))
    before = d.memory.full("label_logit").detach().clone()
    with torch.no_grad():  # the teacher over the whole memory in one pass
        whole = d.continual(d.memory.batch()).clamp(-cfg.memory.label_logit_clip,
                                                    cfg.memory.label_logit_clip)
    monkeypatch.setattr("diet_ray.distill.distiller.RELABEL_CHUNK", 3)  # 4 chunks of <= 3
    d.relabel()
    after = d.memory.full("label_logit").detach()
    written = list(range(10)) if relabel == "all" else [5, 8]  # 5 addressed, 8 frozen
    kept = [i for i in range(10) if i not in written]
    torch.testing.assert_close(after[written], whole[written])
    assert torch.equal(after[kept], before[kept])
    assert not torch.equal(after[written], before[written])


def _worker(rank: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    cfg = tiny_config()
    global_batches = [real_batch(16, seed=s) for s in range(3)]
    mine = [b.select(slice(8 * rank, 8 * rank + 8)) for b in global_batches]
    state = outer_update(cfg, mine, allreduce_mean)
    np.save(f"{out}/rank{rank}.npy", state.slots.id_logits)
    np.save(f"{out}/rank{rank}_labels.npy", state.slots.label_logit)
    for sparse in (True, False):  # the continual pass: sparse and dense embedding gradients
        np.savez(f"{out}/rank{rank}_continual_{sparse}.npz",
                 **continual_update(sparse, mine, allreduce_mean))
    dist.destroy_process_group()


def continual_update(sparse: bool, batches, allreduce=None) -> dict[str, np.ndarray]:
    cfg = tiny_config(**{"continual.sparse_embeddings": sparse})
    kwargs = {} if allreduce is None else {"allreduce": allreduce}
    d = Distiller(cfg, tiny_schema(), stage_state(cfg), 0, np.array([1]), np.array([1]),
                  **kwargs)
    d.continual_pass(batches, len(batches))
    return {k: v.detach().numpy() for k, v in d.continual.state_dict().items()}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_workers_equal_one_worker_on_the_same_global_batch(tmp_path):
    mp.spawn(_worker, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    single = outer_update(tiny_config(), [real_batch(16, seed=s) for s in range(3)])
    r0, r1 = np.load(tmp_path / "rank0.npy"), np.load(tmp_path / "rank1.npy")
    assert np.array_equal(r0, r1)  # every worker applies the identical step
    assert np.allclose(r0, single.slots.id_logits, atol=1e-5)
    assert np.allclose(np.load(tmp_path / "rank0_labels.npy"), single.slots.label_logit, atol=1e-5)
    for sparse in (True, False):
        workers = [np.load(tmp_path / f"rank{r}_continual_{sparse}.npz") for r in (0, 1)]
        alone = continual_update(sparse, [real_batch(16, seed=s) for s in range(3)])
        for name, value in alone.items():
            assert np.array_equal(workers[0][name], workers[1][name]), (sparse, name)
            np.testing.assert_allclose(workers[0][name], value, atol=1e-6, err_msg=name)
        table = "embedding.fields.table.weight"  # the pass moved it (from the seeded init)
        assert not np.array_equal(alone[table], continual_update(sparse, [])[table])


def test_config_overrides_validation_and_hash():
    cfg = load_config(None, ["memory.budget=0.01", "bilevel.inner_archs=[fm, dnn]"])
    assert cfg.memory.budget == 0.01 and cfg.bilevel.inner_archs == ("fm", "dnn")
    with pytest.raises(ConfigError, match="memory.budget"):
        load_config(None, ["memory.budget=2"])
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['budgett'\]"):
        load_config(None, ["memory.budgett=0.1"])
    with pytest.raises(ConfigError, match="bilevel.inner_archs"):
        load_config(None, ["bilevel.inner_archs=[nope]"])
    assert load_config(None, [], out="a").hash() == load_config(None, [], out="b").hash()
    assert load_config(None, ["seed=1"]).hash() != load_config(None, []).hash()


def test_torch_threads_follow_the_cpus_a_process_reserves():
    cfg = load_config(None, [])
    assert [cfg.torch_threads(c) for c in (0.25, 0.5, 1, 2.7, 8)] == [1, 1, 1, 2, 8]
    assert load_config(None, ["threads=3"]).torch_threads(0.5) == 3  # set: taken as it is


def test_local_paths_become_absolute_for_ray_workers(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(None, [], data="runs/data", out="s3://bucket/run")
    assert cfg.data == str(tmp_path / "runs" / "data") and cfg.out == "s3://bucket/run"


def test_local_stage_loop_grows_memory_by_budget(click_log, tmp_path):
    from diet_ray.data.prepare import PrepareOptions, prepare
    from diet_ray.data.sources import build_source
    from diet_ray.distill.local import distill_local

    csv, yaml_cfg = click_log
    prepare(build_source("csv", str(csv), str(yaml_cfg)), str(tmp_path / "d"),
            PrepareOptions(stage_by="rows:100"))
    sizes = []
    state = distill_local(str(tmp_path / "d"), tiny_config(),
                          on_stage=lambda t, s, stats: sizes.append(len(s.slots)))
    assert sizes == [20, 40, 60, 80]  # 20% of each 100-row stage
    assert state.rows_seen == 400 and len(state.trajectory) == 2
    assert sorted(np.unique(state.slots.stage).tolist()) == [0, 1, 2, 3]
