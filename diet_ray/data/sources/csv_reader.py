"""Streaming CSV reading shared by the sources: bounded blocks, errors that name the file."""

from __future__ import annotations

from collections.abc import Iterator

import fsspec
import pyarrow as pa
import pyarrow.csv as pacsv

from diet_ray.data.errors import DataError

BLOCK_BYTES = 16 << 20


def stream_csv(
    fs: fsspec.AbstractFileSystem,
    path: str,
    *,
    delimiter: str = ",",
    column_names: list[str] | None = None,
    column_types: dict[str, pa.DataType] | None = None,
    include_columns: list[str] | None = None,
    encoding: str = "utf8",
    block_bytes: int = BLOCK_BYTES,
) -> Iterator[pa.Table]:
    """Yield `path` as Arrow tables of about `block_bytes` each.

    `column_names=None` reads the header line. Parse errors (a truncated row, a value of
    the wrong type) raise `DataError` naming the file and pyarrow's row description.
    """
    read = pacsv.ReadOptions(
        column_names=column_names, block_size=block_bytes, encoding=encoding
    )
    parse = pacsv.ParseOptions(delimiter=delimiter)
    convert = pacsv.ConvertOptions(
        column_types=column_types or {},
        include_columns=include_columns,
        strings_can_be_null=True,
    )
    try:
        with fs.open(path, "rb", compression="infer") as f:
            reader = pacsv.open_csv(f, read_options=read, parse_options=parse, convert_options=convert)
            for batch in reader:
                yield pa.Table.from_batches([batch])
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (pa.ArrowInvalid, pa.ArrowKeyError, UnicodeDecodeError) as e:
        first = str(e).splitlines()[0]
        raise DataError(
            f"{path}: cannot parse as delimited text ({first}). Check that the file is "
            "complete (not truncated) and has the documented column layout."
        ) from e


def csv_header(fs: fsspec.AbstractFileSystem, path: str, delimiter: str = ",") -> list[str]:
    """The column names on the first line of `path` (quotes and a UTF-8 BOM stripped), so a
    source can check its columns before streaming only the ones it needs."""
    try:
        with fs.open(path, "rb") as f:
            line = f.readline(1 << 20).decode("utf-8-sig", errors="replace")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    return [c.strip().strip('"') for c in line.rstrip("\r\n").split(delimiter)]
