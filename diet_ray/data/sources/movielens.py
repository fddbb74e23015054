"""MovieLens ratings (GroupLens): the 100K layout (`u.data`, `u.user`, `u.item`) and the
1M / 10M layout (`ratings.dat`, `movies.dat`, optional `users.dat`, `::`-separated).

Task: label = rating >= 4. Fields: user, item, age bucket, gender, occupation, zip prefix,
release-year bucket (categorical) and genres (multi-hot). The 10M release has no user
table: its user-side fields are left missing (they map to the OOV id).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from diet_ray.data.errors import DataError
from diet_ray.data.fs import join, open_fs
from diet_ray.data.sources.base import FieldSpec, Source
from diet_ray.data.sources.csv_reader import stream_csv

GENRES_100K = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western"]
AGE_EDGES = (18, 25, 35, 45, 50, 56)  # the MovieLens-1M age groups
SPEC = FieldSpec(
    categorical=("user", "item", "age", "gender", "occupation", "zip", "year"),
    multi_hot=("genres",),
)


def age_bucket(age: int) -> str:
    """The MovieLens-1M age group of an age in years ("<18", "18-24", ..., "56+")."""
    edges = AGE_EDGES
    for lo, hi in zip((0, *edges), (*edges, None)):
        if hi is None or age < hi:
            return f"{lo}+" if hi is None else ("<18" if lo == 0 else f"{lo}-{hi - 1}")
    raise AssertionError("unreachable")


def year_bucket(year: int | None) -> str | None:
    """Five-year release bucket ("1990-94"); None when unknown."""
    if year is None:
        return None
    lo = year - year % 5
    return f"{lo}-{str(lo + 4)[-2:]}"


def _read_text(fs, path: str) -> list[str]:
    try:
        with fs.open(path, "rb") as f:
            return f.read().decode("latin-1").splitlines()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found (a MovieLens folder needs it)") from None


class MovieLens(Source):
    """Reads a MovieLens folder; detects the 100K or the 1M/10M layout from its files."""

    name = "movielens"
    spec = SPEC

    def __init__(self, input_uri: str, min_positive_rating: float = 4.0) -> None:
        self.fs, self.root = open_fs(input_uri)
        self.min_positive_rating = min_positive_rating
        if self.fs.exists(join(self.root, "u.data")):
            self.layout = "100k"
        elif self.fs.exists(join(self.root, "ratings.dat")):
            self.layout = "1m"
        else:
            raise DataError(
                f"{input_uri}: neither u.data (MovieLens 100K) nor ratings.dat (1M/10M) found. "
                "Point --input at the unpacked MovieLens folder, or run "
                "`diet-ray fetch movielens-100k`."
            )
        self.users, self.items = self._side_tables()

    # -- side tables: small, read once into dicts --------------------------------------------
    def _side_tables(self) -> tuple[dict[int, tuple], dict[int, tuple]]:
        users: dict[int, tuple] = {}
        items: dict[int, tuple] = {}
        if self.layout == "100k":
            for n, line in enumerate(_read_text(self.fs, join(self.root, "u.user")), 1):
                parts = line.split("|")
                if len(parts) != 5:
                    raise DataError(f"{self.root}/u.user line {n}: expected 5 '|' fields")
                uid, age, gender, occ, zipc = parts
                users[int(uid)] = (age_bucket(int(age)), gender, occ, zipc[:2])
            for n, line in enumerate(_read_text(self.fs, join(self.root, "u.item")), 1):
                parts = line.split("|")
                if len(parts) != 5 + len(GENRES_100K):
                    raise DataError(f"{self.root}/u.item line {n}: expected 24 '|' fields")
                match = re.search(r"(\d{4})$", parts[2])
                year = int(match.group(1)) if match else None
                genres = [g for g, flag in zip(GENRES_100K, parts[5:]) if flag.strip() == "1"]
                items[int(parts[0])] = (year_bucket(year), genres)
        else:
            users_path = join(self.root, "users.dat")
            if self.fs.exists(users_path):
                for line in _read_text(self.fs, users_path):
                    uid, gender, age, occ, zipc = line.split("::")
                    users[int(uid)] = (age_bucket(int(age)), gender, occ, zipc[:2])
            for line in _read_text(self.fs, join(self.root, "movies.dat")):
                mid, title, genres = line.split("::")
                match = re.search(r"\((\d{4})\)\s*$", title)
                year = int(match.group(1)) if match else None
                items[int(mid)] = (year_bucket(year), genres.split("|") if genres else [])
        return users, items

    # -- ratings: streamed ---------------------------------------------------------------------
    def _ratings(self) -> Iterator[tuple[str, pa.Table]]:
        if self.layout == "100k":
            path = join(self.root, "u.data")
            names = ["user", "item", "rating", "timestamp"]
            for t in stream_csv(
                self.fs, path, delimiter="\t", column_names=names,
                column_types={"user": pa.int64(), "item": pa.int64(), "rating": pa.float64(),
                              "timestamp": pa.int64()},
            ):
                yield path, t
        else:  # "1::1193::5::978300760" read with ':' leaves empty columns between
            path = join(self.root, "ratings.dat")
            names = ["user", "_a", "item", "_b", "rating", "_c", "timestamp"]
            for t in stream_csv(
                self.fs, path, delimiter=":", column_names=names,
                include_columns=["user", "item", "rating", "timestamp"],
                column_types={"user": pa.int64(), "item": pa.int64(), "rating": pa.float64(),
                              "timestamp": pa.int64()},
            ):
                yield path, t

    def chunks(self) -> Iterator[pa.Table]:
        none_user = (None, None, None, None)
        none_item = (None, [])
        for path, t in self._ratings():
            if t.column("timestamp").null_count or t.column("rating").null_count:
                raise DataError(f"{path}: a row has an empty rating or timestamp")
            uid = t.column("user").to_numpy()
            iid = t.column("item").to_numpy()
            u = [self.users.get(int(x), none_user) for x in uid]
            i = [self.items.get(int(x), none_item) for x in iid]
            label = pc.greater_equal(t.column("rating"), self.min_positive_rating)
            yield pa.table(
                {
                    "timestamp": t.column("timestamp"),
                    "label": pc.cast(label, pa.int8()),
                    "user": pa.array(uid.astype(np.int64).astype(str)),
                    "item": pa.array(iid.astype(np.int64).astype(str)),
                    "age": pa.array([r[0] for r in u], pa.string()),
                    "gender": pa.array([r[1] for r in u], pa.string()),
                    "occupation": pa.array([r[2] for r in u], pa.string()),
                    "zip": pa.array([r[3] for r in u], pa.string()),
                    "year": pa.array([r[0] for r in i], pa.string()),
                    "genres": pa.array([r[1] for r in i], pa.list_(pa.string())),
                }
            )
