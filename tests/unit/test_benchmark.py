"""The benchmark: its summary metrics against hand-computed values, variant parsing, and a
tiny end-to-end run (every method, 2 architectures, 1 seed) that writes results.json with
the required keys, report.md and the plots, and resumes without redoing work."""

from __future__ import annotations

import json

import pytest

from diet_ray.cli import main
from diet_ray.data.errors import DataError
from diet_ray.evaluate.benchmark import METHODS, PLOTS, Variant, parse_variants, summarise_methods
from tests.conftest import GENERIC_YAML, write_click_log

FAST = ["bilevel.inner_archs=[dnn, fm]", "bilevel.inner_steps=2", "bilevel.outer_steps=2",
        "bilevel.outer_batch=16", "continual.batch_size=8", "influence.probe_rows=32",
        "influence.clusters=2", "influence.key_dim=4", "eval.epochs=2"]


def cand(auc: float, seconds: float, rows: int) -> dict:
    return {"auc": auc, "train_seconds": seconds, "rows_trained": rows}


def hand_methods() -> dict:
    # candidates a:base, a:v2, b:base, b:v2; archs report the base variant
    full = {"a:base": cand(0.70, 10, 1000), "a:v2": cand(0.66, 10, 1000),
            "b:base": cand(0.72, 10, 1000), "b:v2": cand(0.68, 10, 1000)}
    mem = {"a:base": cand(0.65, 0.5, 100), "a:v2": cand(0.64, 0.5, 100),
           "b:base": cand(0.66, 1.0, 100), "b:v2": cand(0.67, 1.0, 100)}
    return {m: {"candidates": c, "archs": {"a": c["a:base"], "b": c["b:base"]}}
            for m, c in (("full", full), ("m", mem))}


def test_summary_metrics_match_hand_computed_values():
    s = summarise_methods(hand_methods())["m"]
    # recovery: a (0.65-0.5)/(0.70-0.5) = 0.75, b 0.16/0.22; gap: a 0.05, b 0.06
    assert s["recovery"]["a"] == pytest.approx(0.75)
    assert s["mean_recovery"] == pytest.approx((0.75 + 0.16 / 0.22) / 2)
    assert s["mean_auc_gap"] == pytest.approx(0.055)
    # full AUC [.70 .66 .72 .68] vs memory [.65 .64 .66 .67]: of 6 pairs, (a:base, b:v2)
    # and (b:base, b:v2) are discordant -> tau = (4 - 2) / 6
    assert s["kendall_tau"] == pytest.approx(1 / 3)
    # ranks full [3 1 4 2], memory [2 1 3 4]: sum d^2 = 6 -> 1 - 6 * 6 / (4 * 15)
    assert s["spearman"] == pytest.approx(0.4)
    # the memory picks b:v2, whose full-data AUC is 0.68; the best full-data AUC is 0.72
    assert s["top1"] == "b:v2" and s["top1_regret"] == pytest.approx(0.04)
    # per candidate 10/0.5, 10/0.5, 10/1, 10/1 -> mean 15; rows 1000/100
    assert s["speedup"] == pytest.approx(15.0) and s["rows_speedup"] == pytest.approx(10.0)
    ref = summarise_methods(hand_methods())["full"]
    assert (ref["kendall_tau"], ref["mean_recovery"], ref["top1_regret"], ref["speedup"]) == (
        pytest.approx(1.0), pytest.approx(1.0), 0.0, pytest.approx(1.0))


def test_summary_skips_candidates_a_partial_method_lacks():
    methods = hand_methods()
    del methods["m"]["candidates"]["b:v2"]
    s = summarise_methods(methods)["m"]
    assert s["candidates"] == 3 and s["top1"] == "b:base" and s["top1_regret"] == 0.0


def test_parse_variants():
    base, small = parse_variants("base,small:lr_scale=0.5;embedding_dim=4")
    assert base == Variant("base") and small.lr_scale == 0.5
    assert small.model_config("dnn") == {"embedding_dim": 4}
    assert small.model_config("lr") == {}  # LR has no embeddings: the key does not apply
    for bad in ("a,a", "x:lr_scale", "x:lr_scale=0", ""):
        with pytest.raises(DataError):
            parse_variants(bad)


def test_tiny_benchmark_end_to_end_and_resume(tmp_path):
    from diet_ray.data.prepare import PrepareOptions, prepare
    from diet_ray.data.sources import build_source

    csv = write_click_log(tmp_path / "log.csv")
    (tmp_path / "log.yaml").write_text(GENERIC_YAML)
    data, out = str(tmp_path / "d"), tmp_path / "bench"
    prepare(build_source("csv", str(csv), str(tmp_path / "log.yaml")), data,
            PrepareOptions(stage_by="rows:100"))
    argv = ["-q", "benchmark", "--data", data, "--budget", "0.2", "--out", str(out),
            "--archs", "lr,dnn", "--seeds", "1", *FAST]
    assert main(argv) == 0

    results = json.loads((out / "results.json").read_text())
    assert results["complete"] and results["dataset"] == "csv"
    assert results["budget"] == 0.2 and results["eval_stage"] == 3
    assert set(results["methods"]) == set(METHODS)
    for m, r in results["methods"].items():
        assert set(r["archs"]) == {"lr", "dnn"} and len(r["candidates"]) == 4, m
        for arch in r["archs"].values():
            assert {"auc", "auc_std", "logloss", "train_seconds", "rows_trained"} <= set(arch)
        assert r["rows"] == (300 if m == "full" else 60), m
    for m in METHODS:
        assert {"kendall_tau", "spearman", "mean_recovery", "mean_auc_gap", "top1_regret",
                "speedup"} <= set(results["summary"][m]), m
    report = (out / "report.md").read_text()
    assert "diet-ray benchmark" in report and "Wall time" in report and "CPUs" in report
    for png in PLOTS:
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    assert not (out / ".work").exists()

    # resume: the same command finds every unit done and trains nothing again
    lines = (out / "runs.jsonl").read_text().count('"kind": "candidate"')
    assert lines == len(METHODS) * 4
    assert main(argv) == 0
    assert (out / "runs.jsonl").read_text().count('"kind": "candidate"') == lines
    # other settings in the same folder are refused
    assert main([*argv[:-len(FAST)], "--seeds", "2", *FAST]) == 2
