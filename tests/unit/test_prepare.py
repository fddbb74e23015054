"""`prepare` end to end on a generic CSV log, on local disk and memory://, and every
bad-input case: one clear message, a non-zero CLI exit, no complete-looking output."""

from __future__ import annotations

import json
from pathlib import Path

import fsspec
import pyarrow.parquet as pq
import pytest

from diet_ray.cli import main
from diet_ray.data.errors import DataError
from diet_ray.data.prepare import PrepareOptions, prepare
from diet_ray.data.schema import Schema
from diet_ray.data.sources import build_source
from diet_ray.data.stream import read_stage_table, table_batches
from tests.conftest import GENERIC_YAML, write_click_log


def run_cli(*args: str) -> int:
    return main(["-q", *map(str, args)])


def assert_nothing_complete(out: Path) -> None:
    assert not (out / "schema.json").exists()
    assert not (out / "_tmp").exists()


def test_generic_csv_end_to_end(click_log, tmp_path):
    csv, cfg = click_log
    out = tmp_path / "out"
    assert run_cli("prepare", "--source", "csv", "--input", csv, "--config", cfg,
                   "--output", out, "--stage-by", "day") == 0
    schema = Schema.load(str(out))
    assert schema.total_rows == 400
    assert len(schema.stages) in (4, 5)  # 4 days from a non-midnight start
    assert [f.name for f in schema.sparse] == ["user", "item", "tags"]
    assert schema.sparse[2].kind == "multi_hot" and schema.sparse[2].max_len == 3
    assert schema.sparse[0].vocab_size == 31  # 30 users + OOV
    body = json.loads((out / "schema.json").read_text())
    assert body["total_rows"] == 400 and 0 < body["positive_rate"] < 1
    # stage boundaries hold time order, checksums verify, rows decode to SparseBatch
    for a, b in zip(schema.stages, schema.stages[1:]):
        assert a.end < b.start
    table = read_stage_table(str(out), range(len(schema.stages)), verify=True)
    assert table.num_rows == 400
    batch = next(table_batches(table, schema, 64))
    assert batch.ids.shape == (64, 3, 3)
    vocab = json.loads((out / "vocab" / "user.json").read_text())
    assert len(vocab) == 30


def test_memory_filesystem_round_trip(tmp_path):
    mem = fsspec.filesystem("memory")
    mem.pipe("/in/log.csv", write_click_log(tmp_path / "log.csv").read_bytes())
    mem.pipe("/in/log.yaml", GENERIC_YAML.encode())
    source = build_source("csv", "memory://in/log.csv", "memory://in/log.yaml")
    schema = prepare(source, "memory://prepared", PrepareOptions(stage_by="rows:100"))
    assert [s.rows for s in schema.stages] == [100] * 4
    assert Schema.load("memory://prepared") == schema
    assert read_stage_table("memory://prepared", 3, verify=True).num_rows == 100


def test_rows_per_shard_splits_stages_and_overwrite_replaces(click_log, tmp_path):
    csv, cfg = click_log
    out = tmp_path / "out"
    args = ["prepare", "--source", "csv", "--input", csv, "--config", cfg, "--output", out]
    assert run_cli(*args, "--stage-by", "rows:200", "--rows-per-shard", "80") == 0
    assert len(Schema.load(str(out)).stages[0].files) == 3
    assert run_cli(*args, "--stage-by", "rows:100") == 2  # refuses to clobber
    assert run_cli(*args, "--stage-by", "rows:100", "--overwrite") == 0
    schema = Schema.load(str(out))
    assert len(schema.stages) == 4
    assert sorted(p.name for p in out.iterdir()) == [
        "schema.json", *[f"stage={i:04d}" for i in range(4)], "vocab"]


# -- bad input ------------------------------------------------------------------------------
def prepare_expect_error(tmp_path, csv_text: str, yaml_text: str, match: str,
                         capsys, name: str = "bad.csv") -> None:
    csv, cfg, out = tmp_path / name, tmp_path / "bad.yaml", tmp_path / "out"
    csv.write_text(csv_text)
    cfg.write_text(yaml_text)
    code = run_cli("prepare", "--source", "csv", "--input", csv, "--config", cfg,
                   "--output", out, "--stage-by", "rows:2")
    err = capsys.readouterr().err
    assert code == 2
    assert match in err, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("diet-ray prepare: error: ")
    assert_nothing_complete(out)


def test_missing_column_named(tmp_path, capsys):
    prepare_expect_error(tmp_path, "ts,usr,item,tags,price,click\n1,a,b,,1.0,1\n",
                         GENERIC_YAML, "missing column(s) ['user']", capsys)


def test_non_binary_label(tmp_path, capsys):
    prepare_expect_error(tmp_path, "ts,user,item,tags,price,click\n1,a,b,,1,1\n2,a,b,,1,5\n",
                         GENERIC_YAML, "'click' is not binary: values ['5']", capsys)


def test_unparsable_timestamp(tmp_path, capsys):
    yaml_text = GENERIC_YAML.replace("unix", "iso")
    prepare_expect_error(tmp_path, "ts,user,item,tags,price,click\n2024-01-01,a,b,,1,1\nnot-a-date,a,b,,1,0\n",
                         yaml_text, "cannot parse timestamps as 'iso'", capsys)


def test_empty_timestamp_names_row(tmp_path, capsys):
    prepare_expect_error(tmp_path, "ts,user,item,tags,price,click\n5,a,b,,1,1\n,a,b,,1,0\n",
                         GENERIC_YAML, "row 1 has an empty or unparsable timestamp", capsys)


def test_truncated_csv(tmp_path, capsys):
    prepare_expect_error(tmp_path, "ts,user,item,tags,price,click\n5,a,b,,1,1\n6,a,b\n",
                         GENERIC_YAML, "bad.csv: cannot parse as delimited text", capsys)


def test_empty_csv_file(tmp_path, capsys):
    prepare_expect_error(tmp_path, "", GENERIC_YAML, "bad.csv: cannot parse", capsys)


def test_header_only_input_has_no_rows(tmp_path, capsys):
    prepare_expect_error(tmp_path, "ts,user,item,tags,price,click\n", GENERIC_YAML,
                         "the input has no rows", capsys)


def test_more_stages_than_rows(tmp_path, capsys):
    csv, cfg, out = tmp_path / "a.csv", tmp_path / "a.yaml", tmp_path / "out"
    csv.write_text("ts,user,item,tags,price,click\n1,a,b,,1,1\n")
    cfg.write_text(GENERIC_YAML)
    assert run_cli("prepare", "--source", "csv", "--input", csv, "--config", cfg,
                   "--output", out, "--stage-by", "stages:3") == 2
    assert "only 1 rows" in capsys.readouterr().err
    assert_nothing_complete(out)


def test_corrupt_parquet_input(tmp_path, capsys):
    good = tmp_path / "good.parquet"
    import pyarrow as pa

    pq.write_table(pa.table({"ts": [1, 2], "user": ["a", "b"], "item": ["x", "y"],
                             "tags": ["", ""], "price": [1.0, 2.0], "click": [0, 1]}), good)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "part.parquet").write_bytes(good.read_bytes()[:-30])
    cfg, out = tmp_path / "p.yaml", tmp_path / "out"
    cfg.write_text(GENERIC_YAML)
    assert run_cli("prepare", "--source", "parquet", "--input", tmp_path / "in", "--config",
                   cfg, "--output", out, "--stage-by", "rows:1") == 2
    err = capsys.readouterr().err
    assert "part.parquet: not a readable Parquet file" in err
    assert_nothing_complete(out)


def test_bad_config_keys(tmp_path, capsys):
    prepare_expect_error(tmp_path, "ts,user\n1,a\n", "timestamp: ts\nlabel: click\n"
                         "categorical: [user]\nlabels: x\n", "unknown key(s) ['labels']", capsys)


def test_missing_input_path(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(GENERIC_YAML)
    assert run_cli("prepare", "--source", "csv", "--input", tmp_path / "nope.csv",
                   "--config", cfg, "--output", tmp_path / "out") == 2
    assert "nope.csv: no such file or folder" in capsys.readouterr().err


def test_crash_mid_write_leaves_nothing_complete(click_log, tmp_path):
    csv, cfg = click_log
    source = build_source("csv", str(csv), str(cfg))
    calls = {"n": 0}
    real_chunks = source.chunks

    def failing_second_pass():
        calls["n"] += 1
        for i, chunk in enumerate(real_chunks()):
            if calls["n"] == 2 and i == 0:
                yield chunk
                raise OSError("disk full")
            yield chunk

    source.chunks = failing_second_pass
    out = tmp_path / "out"
    with pytest.raises(OSError, match="disk full"):
        prepare(source, str(out), PrepareOptions(stage_by="rows:50", rows_per_shard=10))
    assert_nothing_complete(out)
    with pytest.raises(DataError, match="no schema.json found"):
        Schema.load(str(out))


def test_reading_a_stage_that_does_not_exist(click_log, tmp_path):
    csv, cfg = click_log
    prepare(build_source("csv", str(csv), str(cfg)), str(tmp_path / "o"),
            PrepareOptions(stage_by="rows:200"))
    with pytest.raises(DataError, match="stage 7 does not exist: this dataset has stages 0..1"):
        read_stage_table(str(tmp_path / "o"), 7)
