"""S3 for real: prepare into s3:// on a loopback moto server through s3fs, read the
stages back through Ray Data, and get clear errors for a missing bucket or bad credentials."""

from __future__ import annotations

import pytest
import s3fs

from diet_ray.cli import main
from diet_ray.data.prepare import PrepareOptions, prepare
from diet_ray.data.schema import Schema
from diet_ray.data.sources import build_source
from diet_ray.data.stream import iter_sparse_batches, read_stages
from tests.integration.conftest import moto_s3


@pytest.fixture(scope="module")
def bucket(s3_endpoint) -> str:
    s3fs.S3FileSystem(endpoint_url=s3_endpoint).mkdir("diet-test")
    return "diet-test"


def test_prepare_to_s3_and_read_back_through_ray_data(s3_endpoint, bucket, ray_local, click_log):
    csv, cfg = click_log
    uri = f"s3://{bucket}/prepared/clicks"
    schema = prepare(build_source("csv", str(csv), str(cfg)), uri,
                     PrepareOptions(stage_by="rows:100"))
    fs = s3fs.S3FileSystem(endpoint_url=s3_endpoint)
    assert fs.exists(f"{bucket}/prepared/clicks/schema.json")
    assert not fs.exists(f"{bucket}/prepared/clicks/_tmp")
    assert Schema.load(uri) == schema
    ds = read_stages(uri, [2, 3], schema)
    assert ds.count() == 200
    rows = sum(len(b) for b in iter_sparse_batches(ds, schema, batch_size=64))
    assert rows == 200


def test_missing_bucket_is_a_clear_error(s3_endpoint, click_log, capsys):
    csv, cfg = click_log
    code = main(["-q", "prepare", "--source", "csv", "--input", str(csv), "--config", str(cfg),
                 "--output", "s3://no-such-bucket/x", "--stage-by", "rows:100"])
    err = capsys.readouterr().err
    assert code == 2
    assert "s3://no-such-bucket/x: not found" in err and "bucket exists" in err


def test_wrong_credentials_are_a_clear_error(click_log, capsys, monkeypatch):
    csv, cfg = click_log
    with moto_s3(enforce_auth=True) as endpoint:
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONGWRONG1")
        code = main(["-q", "prepare", "--source", "csv", "--input", str(csv), "--config",
                     str(cfg), "--output", "s3://some-bucket/x", "--stage-by", "rows:100"])
    err = capsys.readouterr().err
    assert code == 2
    assert "access denied" in err and "credentials" in err, err
