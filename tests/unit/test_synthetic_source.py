"""The seeded synthetic click log: canonical, deterministic, power-law, drifting, learnable,
validated, and preparable end to end without `--input`."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from diet_ray.cli import main
from diet_ray.data.errors import DataError
from diet_ray.data.prepare import PrepareOptions, prepare
from diet_ray.data.schema import Schema
from diet_ray.data.sources import SOURCES, build_source
from diet_ray.data.sources.synthetic import EPOCH, Synthetic
from diet_ray.evaluate.metrics import auc


def read_all(source: Synthetic) -> pa.Table:
    return pa.concat_tables(source.chunks())


def ids(table: pa.Table, name: str) -> np.ndarray:
    return table.column(name).to_numpy(zero_copy_only=False).astype(np.int64)


def top_ids(values: np.ndarray, k: int = 100) -> set[int]:
    u, c = np.unique(values, return_counts=True)
    return set(u[np.argsort(-c, kind="stable")[:k]].tolist())


def test_canonical_columns_types_and_timestamps():
    s = Synthetic(rows=5_000, fields=8, vocab=3_000, days=2, chunk_rows=1_500)
    chunks = list(s.chunks())
    assert [c.num_rows for c in chunks] == [1_500, 1_500, 1_500, 500]
    t = pa.concat_tables(chunks)
    assert s.spec.categorical == ("user", "item", "category", "c3", "c4", "c5", "c6", "c7")
    assert t.column_names == s.spec.columns()
    assert t.schema.field("timestamp").type == pa.int64()
    assert t.schema.field("label").type == pa.int8()
    assert all(t.schema.field(n).type == pa.string() for n in s.spec.categorical)
    assert all(t.column(n).null_count == 0 for n in t.column_names)
    ts = t.column("timestamp").to_numpy()
    assert ts[0] == EPOCH and np.all(np.diff(ts) >= 0) and ts[-1] < EPOCH + 2 * 86400
    assert ts[-1] > EPOCH + 2 * 86400 - 100
    # category is a function of item; context fields stay within their documented sizes
    pairs = set(zip(ids(t, "item").tolist(), ids(t, "category").tolist()))
    assert len(pairs) == len(np.unique(ids(t, "item")))
    assert ids(t, "category").max() < 3_000 // 200
    assert ids(t, "c3").max() < 10 and ids(t, "c4").max() < 100 and ids(t, "c7").max() < 10
    assert set(np.unique(t.column("label").to_numpy())) <= {0, 1}


def test_deterministic_across_passes_and_instances_and_seeds():
    opts = {"rows": 3_000, "vocab": 500, "fields": 4, "chunk_rows": 700}
    a = Synthetic(**opts)
    first, second = read_all(a), read_all(a)
    assert first.equals(second)
    assert read_all(Synthetic(**opts)).equals(first)
    other = read_all(Synthetic(**opts, seed=1))
    assert not other.equals(first)
    assert not np.array_equal(ids(other, "item"), ids(first, "item"))
    # a chunk can be drawn on its own and matches its place in the stream
    assert a.chunk(2).equals(first.slice(1_400, 700))
    with pytest.raises(IndexError):
        a.chunk(5)


def test_row_count_and_positive_rate():
    for rows, chunk_rows in ((1, 1), (12_345, 4_000)):
        assert read_all(Synthetic(rows=rows, vocab=100, chunk_rows=chunk_rows)).num_rows == rows
    for rate in (0.25, 0.1, 0.6):
        t = read_all(Synthetic(rows=60_000, vocab=5_000, positive_rate=rate, chunk_rows=30_000))
        assert abs(t.column("label").to_numpy().mean() - rate) < 0.02


def test_power_law_popularity():
    t = read_all(Synthetic(rows=400_000, vocab=10_000, fields=3))
    _, counts = np.unique(ids(t, "item"), return_counts=True)
    counts = np.sort(counts)[::-1]
    assert counts[:100].sum() / t.num_rows > 0.2  # top 1% of the 10,000 item ids
    assert counts[0] > 50 * np.median(counts)
    uniform = read_all(Synthetic(rows=100_000, vocab=1_000, fields=2, zipf=0.0, drift=0.0))
    _, counts = np.unique(ids(uniform, "item"), return_counts=True)
    assert counts.max() < 2 * counts.mean()


def test_drift_rotates_the_popular_items():
    overlap = {}
    for drift in (0.0, 1.0):
        items = ids(read_all(Synthetic(rows=400_000, vocab=10_000, fields=3, drift=drift)), "item")
        tenth = len(items) // 10
        overlap[drift] = len(top_ids(items[:tenth]) & top_ids(items[-tenth:])) / 100
    assert overlap[0.0] > 0.8
    assert overlap[1.0] < 0.4


def test_labels_are_learnable_on_a_later_stage():
    """Smoothed per-id log-odds from the first 80% of the stream rank the last 10% well."""
    s = Synthetic(rows=200_000, vocab=500, fields=4, chunk_rows=50_000)
    t = read_all(s)
    y = t.column("label").to_numpy().astype(np.float64)
    train, test = slice(0, 160_000), slice(180_000, 200_000)
    prior = y[train].mean()
    score = np.zeros(20_000)
    for name in ("user", "item", "c3"):
        v = ids(t, name)
        pos = np.bincount(v[train], weights=y[train], minlength=v.max() + 1)
        n = np.bincount(v[train], minlength=v.max() + 1)
        score += np.log((pos + 20 * prior) / (n - pos + 20 * (1 - prior)))[v[test]]
    assert auc(y[test], score) >= 0.65


@pytest.mark.parametrize(
    ("option", "value"),
    [("rows", 0), ("rows", 1.5), ("fields", 1), ("vocab", 1), ("zipf", -0.1),
     ("drift", float("nan")), ("days", 0), ("positive_rate", 1.0), ("positive_rate", 0),
     ("seed", -1), ("chunk_rows", 0), ("rows", True), ("zipf", "1e6")],
)
def test_bad_option_names_it(option, value):
    with pytest.raises(DataError, match=rf"option '{option}'"):
        Synthetic(**{option: value})


def test_registry_and_yaml_options(tmp_path):
    assert "synthetic" in SOURCES
    cfg = tmp_path / "s.yaml"
    cfg.write_text("rows: 1000\nvocab: 200\nfields: 3\nseed: 7\n")
    s = build_source("synthetic", "", str(cfg))
    assert isinstance(s, Synthetic) and s.rows == 1_000 and s.seed == 7
    assert s.spec.categorical == ("user", "item", "category")
    cfg.write_text("rows: 1000\nvocabulary: 200\n")
    with pytest.raises(DataError, match=r"unknown option.*vocabulary"):
        build_source("synthetic", "", str(cfg))
    cfg.write_text("rows: -5\n")
    with pytest.raises(DataError, match=r"option 'rows'"):
        build_source("synthetic", "", str(cfg))


def test_prepare_through_the_cli_without_input(tmp_path):
    cfg = tmp_path / "synth.yaml"
    cfg.write_text("rows: 10000\nvocab: 2000\nfields: 5\nchunk_rows: 3000\n")
    out = tmp_path / "out"
    rc = main(["-q", "prepare", "--source", "synthetic", "--config", str(cfg),
               "--output", str(out), "--stage-by", "rows:2500"])
    assert rc == 0
    schema = Schema.load(str(out))
    assert [s.rows for s in schema.stages] == [2_500] * 4
    assert schema.source == "synthetic" and schema.total_rows == 10_000
    assert [f.name for f in schema.sparse] == ["user", "item", "category", "c3", "c4"]
    assert all(1 < f.vocab_size <= 2_001 for f in schema.sparse)
    body = json.loads((out / "schema.json").read_text())
    assert abs(body["positive_rate"] - 0.25) < 0.03
    for a, b in zip(schema.stages, schema.stages[1:]):
        assert a.end <= b.start
    # other sources still need --input
    assert main(["-q", "prepare", "--source", "avazu", "--output", str(tmp_path / "x")]) == 2


def test_prepare_library_call_is_reproducible(tmp_path):
    opts = PrepareOptions(stage_by="rows:1000")
    a = prepare(Synthetic(rows=3_000, vocab=300, fields=3), str(tmp_path / "a"), opts)
    b = prepare(Synthetic(rows=3_000, vocab=300, fields=3), str(tmp_path / "b"), opts)
    assert [s.sha256 for s in a.stages] == [s.sha256 for s in b.stages]
    assert [s.positives for s in a.stages] == [s.positives for s in b.stages]
