"""Training utilities on a tiny embedding-sum logistic model: loss weighting, learning a
separable problem, exact step budgets, early stopping, the SparseAdam path, the continual
protocol, streamed evaluation (in-process and over a small Ray Dataset)."""

import math

import numpy as np
import pyarrow as pa
import pytest
import torch
from torch import nn

from diet_ray.data.batch import SparseBatch
from diet_ray.data.schema import Schema, SparseField, StageInfo
from diet_ray.data.stream import table_batches
from diet_ray.evaluate.metrics import auc
from diet_ray.evaluate.train import (
    TrainConfig,
    evaluate,
    evaluate_dataset,
    fit,
    loss_fn,
    make_optimizer,
    predict,
    shuffled_batches,
    split_valid,
    train_continual,
    train_epochs,
)

FIELDS, VOCAB = 2, 40


class TinyLR(nn.Module):
    """logit = bias + sum_f sum_k weights[b,f,k] * E[f * VOCAB + ids[b,f,k]] (one scalar per id)."""

    def __init__(self, sparse: bool = False) -> None:
        super().__init__()
        self.emb = nn.Embedding(FIELDS * VOCAB, 1, sparse=sparse)
        nn.init.zeros_(self.emb.weight)
        self.bias = nn.Parameter(torch.zeros(()))
        self.register_buffer("offsets", torch.arange(FIELDS).view(1, FIELDS, 1) * VOCAB)
        self.calls = 0

    def forward(self, batch: SparseBatch) -> torch.Tensor:
        self.calls += 1
        e = self.emb(batch.ids + self.offsets).squeeze(-1)  # [B, F, K]
        return (e * batch.weights).sum(dim=(1, 2)) + self.bias


def make_batch(n: int, seed: int, flip: float = 0.0) -> SparseBatch:
    """Rows whose label is 1 iff a fixed additive score of their ids is > 0 (LR-separable);
    `flip` of the labels are flipped."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (n, FIELDS, 1), generator=g)
    truth = torch.randn(FIELDS, VOCAB, generator=torch.Generator().manual_seed(123))
    labels = (truth[torch.arange(FIELDS), ids[..., 0]].sum(1) > 0).float()
    noise = torch.rand(n, generator=g) < flip
    labels = torch.where(noise, 1 - labels, labels)
    return SparseBatch(ids, torch.ones(n, FIELDS, 1), None, labels, torch.ones(n))


def chunks(batch: SparseBatch, size: int) -> list[SparseBatch]:
    return [batch.select(slice(i, i + size)) for i in range(0, len(batch), size)]


# -- loss ---------------------------------------------------------------------------------------


def test_loss_fn_weighted_mean_hand_value():
    b = SparseBatch(torch.zeros(2, 1, 1, dtype=torch.long), torch.ones(2, 1, 1), None,
                    torch.tensor([1.0, 0.0]), torch.tensor([1.0, 3.0]))
    softplus2 = math.log1p(math.exp(2.0))  # bce(logit 2, label 0)
    expect = (math.log(2) + 3 * softplus2) / 4
    assert loss_fn(torch.tensor([0.0, 2.0]), b).item() == pytest.approx(expect, rel=1e-6)
    with pytest.raises(ValueError, match=r"\[B\]"):
        loss_fn(torch.zeros(2, 1), b)


def test_loss_fn_ignores_weight_zero_rows():
    full = make_batch(6, seed=0)
    w = torch.tensor([1.0, 2.0, 1.0, 0.0, 0.0, 0.0])
    b = SparseBatch(full.ids, full.weights, None, full.labels, w)
    logits = torch.randn(6, requires_grad=True)
    loss = loss_fn(logits, b)
    loss.backward()
    assert torch.all(logits.grad[3:] == 0)
    head = b.select(slice(0, 3))
    assert loss.item() == pytest.approx(loss_fn(logits[:3], head).item(), rel=1e-6)
    changed = b.with_labels(torch.tensor([*b.labels[:3].tolist(), 1.0, 0.0, 0.7]))
    other = torch.cat([logits[:3].detach(), torch.tensor([-9.0, 9.0, 3.0])])
    assert loss_fn(other, changed).item() == pytest.approx(loss.item(), rel=1e-6)


def test_loss_fn_soft_labels():
    b = SparseBatch(torch.zeros(1, 1, 1, dtype=torch.long), torch.ones(1, 1, 1), None,
                    torch.tensor([0.3]), torch.ones(1))
    assert loss_fn(torch.zeros(1), b).item() == pytest.approx(math.log(2), rel=1e-6)
    # the loss is minimised at logit = logit(0.3): zero gradient there
    z = torch.tensor([math.log(0.3 / 0.7)], requires_grad=True)
    loss_fn(z, b).backward()
    assert abs(z.grad.item()) < 1e-6


def test_config_validation_names_the_key():
    with pytest.raises(ValueError, match="optimizer='rmsprop'"):
        TrainConfig(optimizer="rmsprop")
    with pytest.raises(ValueError, match="lr=0"):
        TrainConfig(lr=0)


# -- training -----------------------------------------------------------------------------------


def test_train_epochs_learns_separable_problem():
    train, test = make_batch(3000, seed=1), make_batch(1000, seed=2)
    model = TinyLR()
    cfg = TrainConfig(lr=0.05, epochs=4, batch_size=100, num_threads=1)
    gen = torch.Generator().manual_seed(0)
    result = train_epochs(model, lambda: shuffled_batches(train, cfg.batch_size, gen), cfg)
    assert result.epochs == 4 and result.steps == 120 and result.rows == 12_000
    assert result.train_seconds > 0 and len(result.history) == 4
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    metrics = evaluate(model, chunks(test, 256))
    assert metrics["auc"] > 0.9 and metrics["rows"] == 1000 and metrics["auc_exact"]
    assert metrics["auc_error_bound"] == 0.0 and metrics["logloss"] < 0.5


@pytest.mark.parametrize("max_steps", [3, 25])
def test_max_steps_honoured_exactly(max_steps):
    data = chunks(make_batch(100, seed=3), 10)  # 10 batches per epoch
    model = TinyLR()
    cfg = TrainConfig(lr=0.01, epochs=1, max_steps=max_steps)
    result = train_epochs(model, lambda: iter(data), cfg)
    assert result.steps == max_steps and model.calls == max_steps
    assert result.rows == 10 * max_steps and result.epochs == math.ceil(max_steps / 10)


def test_early_stopping_restores_best_epoch():
    """Validation labels are set from the model's own predictions so that epoch 2 is best
    (AUC 1) and every other epoch is worst (AUC 0); patience 2 stops after epoch 4."""
    train, probe = make_batch(200, seed=4), make_batch(64, seed=5)
    model = TinyLR()
    snapshots: list[dict[str, torch.Tensor]] = []

    def valid() -> list[SparseBatch]:
        with torch.no_grad():
            logits = model(probe)
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        good = len(snapshots) == 2
        labels = (logits > logits.median()) if good else (logits <= logits.median())
        return [probe.with_labels(labels.float())]

    cfg = TrainConfig(lr=0.05, epochs=20, patience=2, batch_size=50)
    gen = torch.Generator().manual_seed(0)
    result = train_epochs(model, lambda: shuffled_batches(train, 50, gen), cfg, valid=valid)
    assert result.stopped_early and result.epochs == 4 and len(snapshots) == 4
    assert result.best_epoch == 2 and result.best_valid_auc == pytest.approx(1.0)
    assert [h["valid_auc"] for h in result.history] == pytest.approx([0.0, 1.0, 0.0, 0.0])
    assert torch.equal(model.emb.weight, snapshots[1]["emb.weight"])
    assert not torch.equal(model.emb.weight, snapshots[3]["emb.weight"])


def test_fit_holds_out_validation_and_learns():
    model = TinyLR()
    cfg = TrainConfig(lr=0.05, epochs=6, batch_size=64, patience=2, valid_fraction=0.2)
    result = fit(model, make_batch(1500, seed=6), cfg)
    assert result.rows == result.epochs * 1200 and result.best_epoch is not None
    assert evaluate(model, [make_batch(800, seed=7)])["auc"] > 0.9
    train, valid = split_valid(make_batch(10, seed=0), 0.3)
    assert len(train) == 7 and len(valid) == 3


@pytest.mark.filterwarnings("ignore:Sparse invariant checks")
@pytest.mark.parametrize("optimizer", ["adam", "adagrad", "sgd"])
def test_sparse_embedding_uses_sparse_optimizer(optimizer):
    model = TinyLR(sparse=True)
    cfg = TrainConfig(lr=0.1 if optimizer == "adam" else 0.5, optimizer=optimizer, epochs=4,
                      batch_size=100, weight_decay=1e-6)
    opt = make_optimizer(model, cfg)
    kinds = [type(o).__name__ for o in opt.optimizers]
    if optimizer == "adam":
        assert kinds == ["Adam", "SparseAdam"]
        assert opt.optimizers[1].param_groups[0]["params"] == [model.emb.weight]
        assert opt.optimizers[0].param_groups[0]["params"] == [model.bias]
    else:
        groups = opt.optimizers[0].param_groups
        assert groups[1]["params"] == [model.emb.weight] and groups[1]["weight_decay"] == 0.0
    train = make_batch(2000, seed=8)
    gen = torch.Generator().manual_seed(0)
    result = train_epochs(model, lambda: shuffled_batches(train, 100, gen), cfg, optimizer=opt)
    assert model.emb.weight.grad is None or model.emb.weight.grad.is_sparse
    assert result.steps == 80
    assert evaluate(model, [make_batch(800, seed=9)])["auc"] > 0.9


def test_config_sparse_switches_embeddings():
    model = TinyLR(sparse=False)
    cfg = TrainConfig(lr=0.1, sparse=True, max_steps=2)
    train_epochs(model, lambda: chunks(make_batch(40, seed=0), 20), cfg)
    assert model.emb.sparse and model.emb.weight.grad.is_sparse
    assert [type(o).__name__ for o in make_optimizer(model, cfg).optimizers] == [
        "Adam", "SparseAdam"]


def test_train_continual_stages_in_order_one_optimizer():
    events: list[tuple[str, int]] = []
    stage_data = [chunks(make_batch(60, seed=10 + t), 20) for t in range(3)]

    def stage(t: int):
        events.append(("start", t))
        for b in stage_data[t]:
            events.append(("batch", t))
            yield b

    model = TinyLR()
    cfg = TrainConfig(lr=0.05, epochs=5)  # epochs ignored: one pass
    opt = make_optimizer(model, cfg)
    seen = []
    result = train_continual(
        model, [stage(t) for t in range(3)], cfg, optimizer=opt,
        on_stage_end=lambda t, m: (seen.append(t), events.append(("end", t))))
    expect = [e for t in range(3) for e in [("start", t)] + [("batch", t)] * 3 + [("end", t)]]
    assert events == expect and seen == [0, 1, 2]
    assert result.steps == 9 and result.rows == 180 and result.epochs == 3
    assert [h["stage"] for h in result.history] == [0, 1, 2]
    # one Adam carried across stages: its step count is the total
    assert int(opt.optimizers[0].state[model.bias]["step"]) == 9
    capped = train_continual(TinyLR(), [iter(d) for d in stage_data],
                             TrainConfig(max_steps=4))
    assert capped.steps == 4 and capped.epochs == 2


# -- evaluation ---------------------------------------------------------------------------------


def test_evaluate_streaming_path_and_predict():
    model = TinyLR()
    fit(model, make_batch(1000, seed=11, flip=0.2), TrainConfig(lr=0.05, epochs=2))
    test = chunks(make_batch(2000, seed=12, flip=0.2), 300)
    exact = evaluate(model, test)
    streamed = evaluate(model, iter(test), exact_rows=500, num_bins=64)
    assert exact["auc_exact"] and not streamed["auc_exact"]
    assert abs(streamed["auc"] - exact["auc"]) <= streamed["auc_error_bound"] + 1e-12
    assert streamed["logloss"] == pytest.approx(exact["logloss"])
    model.train()
    probs = predict(model, test)
    assert model.training and probs.shape == (2000,) and probs.dtype == np.float64
    labels = torch.cat([b.labels for b in test])
    assert auc(labels, probs) == pytest.approx(exact["auc"])


def tiny_schema() -> Schema:
    return Schema(
        dataset="tiny",
        sparse=(SparseField("f0", "categorical", VOCAB), SparseField("f1", "categorical", VOCAB)),
        dense=(),
        stages=(StageInfo(0, 0, 1, 500, 0, ("stage=0000/part-00000.parquet",), ("x",)),),
        stage_by="rows:500",
    )


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 1024**2,
             log_to_driver=False)
    yield ray
    ray.shutdown()


def test_evaluate_dataset_streams_a_ray_dataset(ray_local):
    import ray.data

    batch = make_batch(500, seed=13, flip=0.1)
    table = pa.table({
        "timestamp": pa.array(np.arange(500), pa.int64()),
        "label": pa.array(batch.labels.numpy(), pa.float32()),
        "f0": pa.array(batch.ids[:, 0, 0].numpy(), pa.int64()),
        "f1": pa.array(batch.ids[:, 1, 0].numpy(), pa.int64()),
    })
    model = TinyLR()
    fit(model, batch, TrainConfig(lr=0.05, epochs=2, batch_size=50))
    schema = tiny_schema()
    local = evaluate(model, table_batches(table, schema, 128))
    ds = ray.data.from_arrow(table).repartition(3)
    remote = evaluate_dataset(model, ds, schema, batch_size=128)
    assert remote["rows"] == 500 and remote["auc_exact"]
    assert remote["auc"] == pytest.approx(local["auc"]) and local["auc"] > 0.8
    assert remote["logloss"] == pytest.approx(local["logloss"], rel=1e-6)
