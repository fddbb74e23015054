"""The dataset schema: fields, vocabularies and stages of a prepared stream (`schema.json`).

A prepared dataset is a folder (any fsspec URI) holding

    schema.json                      written last: its presence means "complete"
    stage=0000/part-00000.parquet    one or more shards per stage
    stage=0001/...
    vocab/<field>.json               value -> id maps (absent for hashed fields)

Id conventions, for every sparse field: id 0 is the padding / out-of-vocabulary bucket,
known values take ids 1..vocab_size-1. A hashed field maps values to 1..vocab_size-1 by a
stable hash. Multi-hot fields are stored as lists of ids (empty allowed).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Literal

from diet_ray.data.errors import DataError
from diet_ray.data.fs import open_fs, storage_errors

SCHEMA_FILE = "schema.json"
SCHEMA_VERSION = 1
FieldKind = Literal["categorical", "multi_hot"]


@dataclass(frozen=True)
class SparseField:
    """One categorical or multi-hot field.

    `max_len` is the widest list seen for a multi-hot field (1 for categorical).
    `hashed` fields have no vocabulary file: ids come from a stable hash.
    """

    name: str
    kind: FieldKind
    vocab_size: int
    max_len: int = 1
    hashed: bool = False
    oov_rows: int = 0


@dataclass(frozen=True)
class DenseField:
    """One dense (numeric) field with the statistics used to standardise it."""

    name: str
    mean: float
    std: float


@dataclass(frozen=True)
class StageInfo:
    """One stage of the stream: rows with `start <= timestamp <= end` (inclusive)."""

    index: int
    start: int
    end: int
    rows: int
    positives: int
    files: tuple[str, ...]
    sha256: tuple[str, ...]

    @property
    def path(self) -> str:
        return stage_dir(self.index)


def stage_dir(index: int) -> str:
    return f"stage={index:04d}"


@dataclass(frozen=True)
class Schema:
    """Everything a model, a reader or the distiller needs to know about a prepared stream."""

    dataset: str
    sparse: tuple[SparseField, ...]
    dense: tuple[DenseField, ...]
    stages: tuple[StageInfo, ...]
    stage_by: str
    source: str = ""
    version: int = SCHEMA_VERSION
    extra: dict = field(default_factory=dict)

    # -- derived views -------------------------------------------------------------------
    @property
    def num_fields(self) -> int:
        return len(self.sparse)

    @property
    def num_dense(self) -> int:
        return len(self.dense)

    @property
    def field_names(self) -> list[str]:
        return [f.name for f in self.sparse]

    @property
    def vocab_sizes(self) -> list[int]:
        return [f.vocab_size for f in self.sparse]

    @property
    def max_len(self) -> int:
        """K of a real-row `SparseBatch`: the widest field (1 when all are categorical)."""
        return max((f.max_len for f in self.sparse), default=1)

    @property
    def total_rows(self) -> int:
        return sum(s.rows for s in self.stages)

    @property
    def positive_rate(self) -> float:
        total = self.total_rows
        return sum(s.positives for s in self.stages) / total if total else 0.0

    def stage(self, index: int) -> StageInfo:
        if not 0 <= index < len(self.stages):
            raise DataError(
                f"stage {index} does not exist: this dataset has stages 0..{len(self.stages) - 1}"
            )
        return self.stages[index]

    # -- (de)serialisation -----------------------------------------------------------------
    def to_json(self) -> str:
        body = asdict(self)
        body["total_rows"] = self.total_rows
        body["positive_rate"] = round(self.positive_rate, 6)
        return json.dumps(body, indent=2)

    @classmethod
    def from_json(cls, text: str) -> Schema:
        raw = json.loads(text)
        if raw.get("version") != SCHEMA_VERSION:
            raise DataError(
                f"schema.json has version {raw.get('version')!r}, this diet-ray reads "
                f"version {SCHEMA_VERSION}: prepare the data again with this version"
            )
        return cls(
            dataset=raw["dataset"],
            sparse=tuple(SparseField(**f) for f in raw["sparse"]),
            dense=tuple(DenseField(**f) for f in raw["dense"]),
            stages=tuple(
                StageInfo(
                    **{**s, "files": tuple(s["files"]), "sha256": tuple(s["sha256"])}
                )
                for s in raw["stages"]
            ),
            stage_by=raw["stage_by"],
            source=raw.get("source", ""),
            extra=raw.get("extra", {}),
        )

    @classmethod
    def load(cls, uri: str) -> Schema:
        """Read `<uri>/schema.json`; a missing file means the dataset is absent or incomplete."""
        fs, root = open_fs(uri)
        path = f"{root}/{SCHEMA_FILE}"
        with storage_errors(uri):
            try:
                with fs.open(path, "rb") as f:
                    text = f.read().decode()
            except FileNotFoundError:
                raise DataError(
                    f"{uri}: no {SCHEMA_FILE} found. Either this is not a prepared dataset or "
                    "its preparation did not finish; run `diet-ray prepare` with this --output."
                ) from None
        return cls.from_json(text)
