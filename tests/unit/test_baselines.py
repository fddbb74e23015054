"""Baselines at the memory's budget: every one holds round(budget × rows_t) rows of each
training stage t (and none of the test stage), teacher labels are soft, k-center spreads
its picks, influence top-k takes the best-scored rows, and the baselines' continual model
is the distillation loop's own."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from diet_ray.data.prepare import PrepareOptions, prepare
from diet_ray.data.schema import Schema
from diet_ray.data.sources import build_source
from diet_ray.data.stream import read_stage_table
from diet_ray.evaluate import baselines as B
from tests.conftest import GENERIC_YAML, write_click_log
from tests.unit.distill_fixtures import tiny_config

BUDGET = 0.2
TRAIN = range(3)  # 4 stages of 100 rows: train on 0..2, stage 3 is the test stage


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[str, Schema]:
    root = tmp_path_factory.mktemp("baselines")
    csv = write_click_log(root / "log.csv")
    (root / "log.yaml").write_text(GENERIC_YAML)
    uri = str(root / "d")
    prepare(build_source("csv", str(csv), str(root / "log.yaml")), uri,
            PrepareOptions(stage_by="rows:100"))
    return uri, Schema.load(uri)


def row_keys(table) -> list[tuple]:
    cols = [table.column(c).to_pylist() for c in ("timestamp", "user", "item", "price")]
    return list(zip(*cols))


def stage_counts(uri: str, schema: Schema, table) -> Counter:
    """How many rows of `table` come from each stage (rows matched on their features)."""
    where = {}
    for t in range(len(schema.stages)):
        for key in row_keys(read_stage_table(uri, t, schema)):
            where.setdefault(key, t)
    return Counter(where[k] for k in row_keys(table))


@pytest.mark.parametrize("name", ["uniform_random", "label_stratified", "influence_topk",
                                  "kcenter", "teacher_labels"])
def test_per_stage_baselines_take_the_budget_of_each_training_stage(data, name):
    uri, schema = data
    fn = getattr(B, name)
    kwargs = {} if name in ("uniform_random", "label_stratified") else {"cfg": tiny_config()}
    table = fn(uri, schema, TRAIN, BUDGET, 0, **kwargs)
    assert table.num_rows == 60
    assert stage_counts(uri, schema, table) == {0: 20, 1: 20, 2: 20}
    assert len(set(row_keys(table))) == 60  # no row twice


def test_reservoir_takes_the_budget_of_the_whole_training_stream(data):
    uri, schema = data
    table = B.reservoir(uri, schema, TRAIN, BUDGET, 0)
    counts = stage_counts(uri, schema, table)
    assert table.num_rows == 60 and sum(counts.values()) == 60 and 3 not in counts


@pytest.mark.parametrize("name", ["diet", "diet_no_addressing", "diet_random_init"])
def test_distilled_memories_hold_the_budget_of_each_training_stage(data, name):
    uri, schema = data
    slots = getattr(B, name)(uri, schema, TRAIN, BUDGET, 0, tiny_config())
    assert len(slots) == 60
    assert Counter(slots.stage.tolist()) == {0: 20, 1: 20, 2: 20}
    batch = B.memory_batch(slots)
    assert len(batch) == 60 and ((batch.labels > 0) & (batch.labels < 1)).all()


def test_static_distill_is_one_stage_of_the_training_history(data, tmp_path):
    uri, schema = data
    view = str(tmp_path / "view")
    slots = B.static_distill(uri, schema, TRAIN, BUDGET, 0, view, tiny_config(),
                             outer_steps=2)
    merged = Schema.load(view)
    assert len(merged.stages) == 1 and merged.stage(0).rows == 300  # stages 0..2, not 3
    assert merged.stage(0).positives == sum(schema.stage(t).positives for t in TRAIN)
    assert row_keys(read_stage_table(view, 0, merged)) == row_keys(
        read_stage_table(uri, TRAIN, schema))
    assert len(slots) == 60 and set(slots.stage.tolist()) == {0}


def test_teacher_labels_are_soft_labels_on_the_stratified_rows(data):
    uri, schema = data
    soft = B.teacher_labels(uri, schema, TRAIN, BUDGET, 0, tiny_config())
    hard = B.label_stratified(uri, schema, TRAIN, BUDGET, 0)
    assert row_keys(soft) == row_keys(hard)
    labels = soft.column("label").to_numpy()
    assert ((labels > 0) & (labels < 1)).all()
    assert len(np.unique(labels)) > 10  # real predictions, not a constant


def test_influence_topk_takes_the_highest_tracin_scores(data):
    uri, schema = data
    cfg = B.default_distill_config(BUDGET, 0, tiny_config())
    table = B.influence_topk(uri, schema, range(1), BUDGET, 0, tiny_config())
    stage0 = read_stage_table(uri, 0, schema)
    run = B.ContinualTrajectory(schema, cfg)
    score = B.score_all_rows(uri, schema, cfg, 0, stage0, run.scoring_models()).score
    picked = set(row_keys(table))
    mask = np.array([k in picked for k in row_keys(stage0)])
    assert mask.sum() == 20 and score[mask].min() >= score[~mask].max()


def test_continual_trajectory_is_the_distillation_loops_continual_model(data):
    from dataclasses import replace

    from diet_ray.distill.local import distill_local

    uri, schema = data
    cfg = B.default_distill_config(BUDGET, 0, tiny_config())
    run = B.ContinualTrajectory(schema, cfg)
    for t in TRAIN:
        run.advance(t, read_stage_table(uri, t, schema))
    state = distill_local(uri, replace(cfg, stages=3))
    assert run.state.continual.keys() == state.continual.keys()
    for k, v in state.continual.items():
        assert np.array_equal(run.state.continual[k], v), k


def test_kcenter_greedy_picks_one_point_per_far_cluster():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    points = np.concatenate([c + 0.1 * rng.standard_normal((6, 2)) for c in centres])
    for seed in range(5):
        pick = B.kcenter_greedy(points, 4, seed)
        assert sorted(pick // 6) == [0, 1, 2, 3]  # one from each cluster
    # farthest-first from point 0: the opposite corner comes next
    far = B.kcenter_greedy(np.array([[0.0, 0], [1, 0], [5, 5], [2, 0]]), 2, seed=0)
    assert len(set(far.tolist())) == 2 and 2 in far.tolist()


def test_kcenter_greedy_never_repeats_duplicates_and_caps_k():
    points = np.zeros((5, 3))  # all identical
    pick = B.kcenter_greedy(points, 4, seed=1)
    assert len(pick) == 4 and len(set(pick.tolist())) == 4
    assert sorted(B.kcenter_greedy(points, 9, seed=1).tolist()) == [0, 1, 2, 3, 4]
    assert len(B.kcenter_greedy(points, 0, seed=1)) == 0
