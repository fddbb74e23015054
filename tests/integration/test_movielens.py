"""The embedded default on real data: fetch MovieLens 100K, prepare 10 equal-count stages,
read a stage back through Ray Data into SparseBatches."""

from __future__ import annotations

import os

import pytest

from diet_ray.cli import main
from diet_ray.data.schema import Schema
from diet_ray.data.stream import iter_sparse_batches, read_stages


@pytest.fixture(scope="module")
def movielens(tmp_path_factory) -> str:
    """Fetch into an empty cache (the real download path), then prepare 10 stages."""
    out = tmp_path_factory.mktemp("ml") / "ml-100k"
    cache = tmp_path_factory.mktemp("cache")
    old = os.environ.get("DIET_RAY_CACHE")
    os.environ["DIET_RAY_CACHE"] = str(cache)
    try:
        assert main(["-q", "fetch", "movielens-100k"]) == 0
    finally:
        if old is None:
            os.environ.pop("DIET_RAY_CACHE")
        else:
            os.environ["DIET_RAY_CACHE"] = old
    raw = cache / "movielens-100k"
    assert sorted(p.name for p in raw.iterdir()) == [".verified", "u.data", "u.item", "u.user"]
    assert main(["-q", "prepare", "--source", "movielens-100k", "--input", str(raw),
                 "--output", str(out), "--stage-by", "rows:10000"]) == 0
    return str(out)


def test_stages_add_up_to_the_whole_dataset(movielens):
    schema = Schema.load(movielens)
    assert [s.rows for s in schema.stages] == [10_000] * 10
    assert schema.total_rows == 100_000
    assert sum(s.positives for s in schema.stages) == 55_375  # ratings >= 4 in ml-100k
    sizes = {f.name: f.vocab_size for f in schema.sparse}
    assert sizes["user"] == 944 and sizes["item"] == 1683  # 943 users, 1682 items, + OOV
    assert sizes["gender"] == 3 and sizes["occupation"] == 22 and sizes["genres"] == 20
    for a, b in zip(schema.stages, schema.stages[1:]):
        assert a.end <= b.start


def test_stage_reads_through_ray_data(movielens, ray_local):
    schema = Schema.load(movielens)
    ds = read_stages(movielens, 9, schema)
    batches = list(iter_sparse_batches(ds, schema, batch_size=4096))
    assert sum(len(b) for b in batches) == 10_000
    b = batches[0]
    assert b.ids.shape[1:] == (8, schema.max_len)
    assert (b.weights.sum(-1) > 0.999).all()  # every movie has at least one genre
