"""`diet-ray search`: the YAML search space's validation (no Ray), and a tiny ASHA search on
a tiny snapshot, with and without `--verify-top`."""

from __future__ import annotations

import csv
import json

import pytest

from diet_ray.cli import main
from diet_ray.data.errors import DataError
from diet_ray.data.prepare import PrepareOptions, prepare
from diet_ray.data.sources import build_source
from diet_ray.distill.local import distill_local
from diet_ray.evaluate.search import load_space, parse_space, trial_settings
from diet_ray.memory.store import SnapshotStore
from tests.conftest import GENERIC_YAML, write_click_log
from tests.unit.distill_fixtures import tiny_config

SPACE = """\
arch: {choice: [lr, dnn]}
lr: {loguniform: [1.0e-3, 3.0e-2]}
epochs: 2
embedding_dim: {choice: [4, 8]}
mlp_depth: {randint: [1, 2]}
mlp_width: {choice: [8, 16]}
"""


# -- the space (no Ray) -------------------------------------------------------------------------


def test_example_space_parses_and_maps_mlp_keys():
    space = load_space("jobs/configs/search-space.yaml")
    assert space.epochs == 10 and "arch" in space.to_tune()
    s = trial_settings({"arch": "dcn", "lr": 0.02, "epochs": 3, "embedding_dim": 8,
                        "mlp_depth": 2, "mlp_width": 64, "num_cross_layers": 2, "seed": 1})
    assert s.model_config == {"embedding_dim": 8, "num_cross_layers": 2, "hidden_units": (64, 64)}
    assert (s.lr, s.epochs, s.batch_size) == (0.02, 3, 512)
    assert trial_settings({"arch": "fm", "mlp_depth": 2, "embedding_dim": 8}).model_config == {
        "embedding_dim": 8}  # keys the architecture lacks are dropped


@pytest.mark.parametrize("raw, message", [
    ({"lr": 0.01}, "key 'arch' is required"),
    ({"arch": "dnn", "learning_rate": 0.01}, "unknown key(s) ['learning_rate']"),
    ({"arch": {"choice": ["dnn", "gbdt"]}}, "key 'arch': unknown ['gbdt']"),
    ({"arch": "dnn", "lr": {"loguniform": [0, 0.1]}}, "key 'lr': loguniform needs 0 < low"),
    ({"arch": "dnn", "lr": {"normal": [0, 1]}}, "key 'lr': a domain is one of"),
    ({"arch": "dnn", "lr": {"uniform": [0.1]}}, "key 'lr': uniform takes [low, high]"),
    ({"arch": "dnn", "lr": -1.0}, "key 'lr': -1.0 is not valid"),
    ({"arch": "dnn", "embedding_dim": [8, 16]}, "key 'embedding_dim': give a constant or"),
    ({"arch": "dnn", "epochs": {"choice": [2, 3]}}, "key 'epochs': must be a constant"),
    ({"arch": "fm", "mlp_depth": 2}, "key 'mlp_depth': none of the architectures"),
    ({"arch": "dnn", "num_cross_layers": 2}, "key 'num_cross_layers': none of the"),
    ({"arch": "dnn", "mlp_width": {"randint": [0.5, 4]}}, "randint takes integer bounds"),
    ({"arch": "dnn", "embedding_dim": {"choice": [8, 0]}}, "key 'embedding_dim': 0 is not valid"),
    ([1, 2], "a non-empty YAML mapping"),
])
def test_bad_spaces_name_the_key(raw, message):
    with pytest.raises(DataError) as e:
        parse_space(raw, "space.yaml")
    assert message in str(e.value) and "space.yaml" in str(e.value)


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_space(str(tmp_path / "nope.yaml"))
    (tmp_path / "bad.yaml").write_text("arch: [dnn\n")
    with pytest.raises(DataError, match="not valid YAML"):
        load_space(str(tmp_path / "bad.yaml"))


# -- a tiny search on Ray ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[str, str, str]:
    """(prepared data with 4 stages, run with a stage-2 snapshot, space file)."""
    root = tmp_path_factory.mktemp("search")
    (root / "log.yaml").write_text(GENERIC_YAML)
    source = build_source("csv", str(write_click_log(root / "log.csv")), str(root / "log.yaml"))
    data = str(root / "prepared")
    prepare(source, data, PrepareOptions(stage_by="rows:100"))
    state = distill_local(data, tiny_config(stages=3))
    SnapshotStore(str(root / "run")).commit(2, 1, state.to_arrays(), {"rows": 60}, "test")
    (root / "space.yaml").write_text(SPACE)
    return data, str(root / "run"), str(root / "space.yaml")


def test_tiny_asha_search_and_verify_top(tiny, tmp_path, ray_local, capsys):
    data, run, space = tiny
    code = main(["search", "--snapshot", run, "--data", data, "--space", space,
                 "--samples", "3", "--reduction-factor", "2", "--verify-top", "2",
                 "--out", str(tmp_path)])
    assert code == 0
    out = capsys.readouterr().out
    assert "tested on stage 3" in out and "| rank | configuration |" in out
    assert "Kendall τ" in out
    doc = json.loads((tmp_path / "search.json").read_text())
    trials = doc["trials"]
    assert len(trials) == 3 and [t["rank"] for t in trials] == [1, 2, 3]
    assert [t["auc"] for t in trials] == sorted((t["auc"] for t in trials), reverse=True)
    assert all(t["arch"] in ("lr", "dnn") and 1 <= t["epochs"] <= 2 for t in trials)
    assert doc["test_stage"] == 3
    with open(tmp_path / "search.csv") as f:
        assert len(list(csv.DictReader(f))) == 3
    verify = doc["verify"]
    assert verify["train_stages"] == [0, 1, 2] and verify["test_stage"] == 3
    assert [c["memory_rank"] for c in verify["configs"]] == [1, 2]
    assert sorted(c["full_rank"] for c in verify["configs"]) == [1, 2]
    assert all(0.0 <= c["full_auc"] <= 1.0 for c in verify["configs"])
    assert verify["kendall_tau"] in (-1.0, 1.0)
