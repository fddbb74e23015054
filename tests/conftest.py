"""Shared fixtures: small synthetic logs written by the tests themselves."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

GENERIC_YAML = """\
timestamp: ts
timestamp_format: unix
label: click
positive: [1]
categorical: [user, item]
multi_hot: {tags: "|"}
dense: [price]
"""


def write_click_log(path: Path, rows: int = 400, seed: int = 0, days: int = 4) -> Path:
    """A CSV click log: ts over `days` days, user/item ids, '|'-separated tags, a price."""
    rng = np.random.default_rng(seed)
    ts = np.sort(rng.integers(1_700_000_000, 1_700_000_000 + days * 86400, rows))
    users = rng.integers(0, 30, rows)
    items = rng.integers(0, 50, rows)
    lines = ["ts,user,item,tags,price,click"]
    for i in range(rows):
        tags = "|".join(f"t{t}" for t in rng.choice(6, rng.integers(0, 4), replace=False))
        click = int((users[i] + items[i]) % 3 == 0)
        lines.append(f"{ts[i]},u{users[i]},i{items[i]},{tags},{rng.uniform(1, 100):.2f},{click}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def click_log(tmp_path: Path) -> tuple[Path, Path]:
    """(csv path, yaml config path) of a 400-row click log."""
    csv = write_click_log(tmp_path / "log.csv")
    cfg = tmp_path / "log.yaml"
    cfg.write_text(GENERIC_YAML)
    return csv, cfg


# Fake credentials for the loopback S3 server, set before any Ray worker starts so that
# workers inherit them. Real credentials are never needed by the test suite.
for _key, _value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                     "AWS_DEFAULT_REGION": "us-east-1"}.items():
    os.environ.setdefault(_key, _value)
