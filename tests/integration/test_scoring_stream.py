"""The run's scoring pipeline (`ScoringStream`) on a real local Ray: every stage scored on
one actor pool, each exactly as the in-process scorer scores it, whatever the batch size."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from diet_ray.data.schema import Schema
from diet_ray.data.stream import read_stage_table, sample_stage_rows
from diet_ray.distill.distiller import seeded
from diet_ray.influence.scoring_stream import ScoringStream
from diet_ray.influence.stage import score_stage_local
from diet_ray.models import build_model
from tests.integration.tiny_run import config, prepare_tiny_stream

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_stream(tmp_path_factory) -> str:
    return prepare_tiny_stream(tmp_path_factory.mktemp("stream"))


def stage_models(cfg, schema: Schema, stage: int) -> list[torch.nn.Module]:
    """Two checkpoints that differ from stage to stage, as the continual model's do."""
    models = []
    for c in range(2):
        torch.manual_seed(100 * stage + c)
        models.append(build_model(cfg.continual.arch, schema).eval())
    return models


def rows_of(table: pa.Table) -> list[tuple]:
    """The rows as sorted tuples (columns in name order), priorities rounded to 1e-5."""
    names = sorted(table.column_names)
    cols = [table.column(n).to_pylist() for n in names]
    out = []
    for row in zip(*cols):
        out.append(tuple(round(v, 5) if isinstance(v, float) else repr(v) for v in row))
    return sorted(out)


def priorities_by_stratum(table: pa.Table) -> list[tuple[int, float]]:
    return sorted(zip(table.column("_stratum").to_pylist(),
                      table.column("_priority").to_pylist()))


@pytest.mark.parametrize("extra, same_batches", [
    # batches larger than a stage (100 rows): a row-count batching would wait for the
    # next stage's rows, which wait for this stage. Both paths run one forward pass over
    # the stage: the same rows come out.
    (("influence.batch_size=4096",), True),
    # several blocks per shard and forward passes of 16 rows, cut elsewhere than the
    # in-process 16-row slices: priorities agree to float rounding (1e-7), which can swap
    # near-tied rows (this untrained model aligns most rows at 0.9999x), so the selected
    # priorities are compared, per stratum
    (("influence.batch_size=16", "influence.block_mb=0.001"), False),
])
def test_every_stage_scored_as_in_process(tiny_stream, tmp_path, ray_local, extra,
                                          same_batches):
    cfg = config(tiny_stream, str(tmp_path / "out"), *extra)
    schema = Schema.load(tiny_stream)
    with ScoringStream(tiny_stream, schema, cfg, range(4)) as stream:
        for t in range(4):
            models = stage_models(cfg, schema, t)
            got, stats = stream.score(t, models)
            probe = sample_stage_rows(tiny_stream, schema, t, cfg.influence.probe_rows,
                                      seeded(cfg.seed, t, 7))
            want = score_stage_local(read_stage_table(tiny_stream, t, schema), schema, cfg, t,
                                     models, probe)
            assert stats["scored_rows"] == 100 and len(stats["scorer_nodes"]) == 1
            assert got.num_rows == want.num_rows > 0
            if same_batches:
                assert rows_of(got) == rows_of(want)
            g, w = priorities_by_stratum(got), priorities_by_stratum(want)
            assert [s for s, _ in g] == [s for s, _ in w]
            assert np.allclose([p for _, p in g], [p for _, p in w], rtol=0, atol=1e-5)
            assert np.array_equal(np.bincount(got.column("_stratum").to_numpy(), minlength=4),
                                  np.bincount(want.column("_stratum").to_numpy(), minlength=4))


def test_stages_must_come_in_order(tiny_stream, tmp_path, ray_local):
    cfg = config(tiny_stream, str(tmp_path / "out"))
    schema = Schema.load(tiny_stream)
    with (ScoringStream(tiny_stream, schema, cfg, [1, 2]) as stream,
          pytest.raises(ValueError, match="stage 2 is not the next stage")):
        stream.score(2, stage_models(cfg, schema, 2))
