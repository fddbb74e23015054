"""The speed benchmark (`diet_ray.evaluate.speed`): correctness only, never timing.

Tiny sizes: the result has the expected keys and positive rates; the synthetic traffic is
valid and seeded; sparse and dense embedding gradients train the same model to the same
parameters (SGD at every step, SparseAdam vs Adam on the first step); the CLI pair writes
its JSON.
"""

import argparse
import json

import pytest
import torch

from diet_ray.evaluate.speed import (
    MODES,
    add_args,
    build_trainer,
    embedding_speed,
    run,
    synthetic_batches,
    synthetic_schema,
    train_step,
)

TINY = {"fields": 3, "vocab": 100, "batch_size": 64, "steps": 2, "warmup": 1, "repeats": 2}


def test_embedding_speed_reports_positive_rates():
    result = embedding_speed(**TINY)
    for mode in MODES:
        assert result[f"{mode}_rows_per_s"] > 0
        assert result[f"{mode}_step_ms"] > 0
        assert len(result[f"{mode}_repeat_rows_per_s"]) == TINY["repeats"]
        assert all(r > 0 for r in result[f"{mode}_repeat_rows_per_s"])
    assert result["sparse_speedup"] == pytest.approx(
        result["sparse_rows_per_s"] / result["dense_adam_rows_per_s"]
    )
    assert result["score_over_sparse"] == pytest.approx(
        result["score_rows_per_s"] / result["sparse_rows_per_s"]
    )
    assert result["torch_threads"] >= 1
    assert result["other_cpu_busy"] is None or result["other_cpu_busy"] >= 0
    assert result["config"]["arch"] == "deepfm"
    assert set(result["final_loss"]) == {"dense_adam", "sparse"}
    assert all(0 < v < 10 for v in result["final_loss"].values())
    json.dumps(result)  # JSON-serialisable as written by --out


def test_threads_are_restored():
    before = torch.get_num_threads()
    result = embedding_speed(**TINY, threads=1)
    assert result["torch_threads"] == 1
    assert torch.get_num_threads() == before


def test_invalid_sizes_raise():
    with pytest.raises(ValueError, match="steps"):
        embedding_speed(**{**TINY, "steps": 0})
    with pytest.raises(ValueError, match="vocab"):
        synthetic_schema(3, 1)


def test_synthetic_batches_are_valid_seeded_and_skewed():
    schema = synthetic_schema(3, 100)
    a = synthetic_batches(schema, 512, 2, seed=1)
    b = synthetic_batches(schema, 512, 2, seed=1)
    assert len(a) == 2
    assert a[0].ids.shape == (512, 3, 1)
    assert torch.equal(a[0].ids, b[0].ids) and torch.equal(a[1].labels, b[1].labels)
    assert not torch.equal(a[0].ids, a[1].ids)
    assert a[0].ids.min() >= 1 and a[0].ids.max() < 100  # 0 is padding / OOV
    assert torch.all(a[0].weights == 1) and torch.all(a[0].sample_weight == 1)
    # power law: the most frequent id of a field is far above the uniform share
    top = torch.bincount(a[0].ids[:, 0, 0], minlength=100).max().item()
    assert top > 5 * 512 / 99


def _params(model):
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def test_sparse_and_dense_gradients_agree_under_sgd():
    schema = synthetic_schema(3, 100)
    batches = synthetic_batches(schema, 64, 2, seed=3)
    dense, dense_opt = build_trainer("deepfm", schema, False, 8, seed=5, lr=0.1, optimizer="sgd")
    sparse, sparse_opt = build_trainer("deepfm", schema, True, 8, seed=5, lr=0.1, optimizer="sgd")
    before = _params(dense)
    assert all(torch.equal(before[k], v) for k, v in _params(sparse).items())
    for batch in batches:
        loss_d = train_step(dense, dense_opt, batch)
        loss_s = train_step(sparse, sparse_opt, batch)
        assert loss_d == pytest.approx(loss_s, rel=1e-6)
    after_d, after_s = _params(dense), _params(sparse)
    for k in after_d:
        torch.testing.assert_close(after_s[k], after_d[k], rtol=1e-5, atol=1e-7)
    # the training did move the embeddings, and only rows some batch used
    table = "embedding.fields.table.weight"
    moved = (after_d[table] != before[table]).any(dim=1)
    assert moved.any()
    offsets = torch.tensor([0, 100, 200])
    used = torch.cat([(b.ids[..., 0] + offsets).flatten() for b in batches]).unique()
    assert set(moved.nonzero().flatten().tolist()) <= set(used.tolist())


def test_sparse_adam_matches_adam_on_the_first_step():
    schema = synthetic_schema(3, 100)
    (batch,) = synthetic_batches(schema, 64, 1, seed=4)
    dense, dense_opt = build_trainer("deepfm", schema, False, 8, seed=6, lr=1e-2)
    sparse, sparse_opt = build_trainer("deepfm", schema, True, 8, seed=6, lr=1e-2)
    assert [type(o).__name__ for o in sparse_opt.optimizers] == ["Adam", "SparseAdam"]
    assert [type(o).__name__ for o in dense_opt.optimizers] == ["Adam"]
    # Adam adds eps to sqrt(v / bias_correction2), SparseAdam to sqrt(v): a true difference
    # (SparseAdam's eps is ~32x larger on step 1) that matters for |grad| near eps only.
    # A negligible eps isolates the gradients (still > 0: dense Adam divides 0 by it).
    for opt in (*dense_opt.optimizers, *sparse_opt.optimizers):
        for group in opt.param_groups:
            group["eps"] = 1e-30
    assert train_step(dense, dense_opt, batch) == pytest.approx(
        train_step(sparse, sparse_opt, batch), rel=1e-6
    )
    after_d, after_s = _params(dense), _params(sparse)
    for k in after_d:
        torch.testing.assert_close(after_s[k], after_d[k], rtol=1e-5, atol=1e-7)


def test_cli_pair_prints_table_and_writes_json(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_args(parser)
    out = tmp_path / "sub" / "speed.json"
    args = parser.parse_args(
        ["--fields", "3", "--vocab", "100", "--batch-size", "64", "--steps", "2",
         "--warmup", "1", "--repeats", "1", "--threads", "1", "--fused-baseline",
         "--out", str(out)]
    )
    assert run(args) == 0
    printed = capsys.readouterr().out
    assert "dense_adam" in printed and "sparse / dense_adam" in printed
    assert "dense_adam_fused" in printed
    written = json.loads(out.read_text())
    assert written["modes"] == [*MODES, "dense_adam_fused"]
    assert written["dense_adam_fused_rows_per_s"] > 0 and written["sparse_over_fused"] > 0
    assert written["config"]["fields"] == 3 and written["torch_threads"] == 1
    assert written["score_rows_per_s"] > 0


@pytest.mark.parametrize("arch", ["lr", "dcn"])
def test_other_architectures_run(arch):
    result = embedding_speed(**{**TINY, "repeats": 1}, arch=arch)
    assert result["config"]["arch"] == arch
    assert all(result[f"{mode}_rows_per_s"] > 0 for mode in MODES)
