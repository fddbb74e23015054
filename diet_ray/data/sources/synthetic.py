"""A seeded synthetic click log (`--source synthetic`): no input files, any size, with
power-law id popularity, drift over time and labels from a hidden logistic model.

Options (all optional, from the `--config` YAML): `rows` (1,000,000), `fields` (8),
`vocab` (100,000), `zipf` (1.05), `drift` (1.0), `days` (30), `positive_rate` (0.25),
`seed` (0), `chunk_rows` (200,000). A log of any size streams in O(vocab + chunk_rows)
memory.

Fields, all categorical strings holding the id as a decimal number:

    user       `vocab` ids
    item       `vocab` ids
    category   max(2, vocab // 200) ids, a fixed function of the item
    c3, c4 ..  context fields (`fields` - 3 of them) of 10, 100, 1,000, 10,000, 10, ...
               ids (never more than `vocab`)

Popularity: a row's user, item and context ids are power-law ranks (rank r, counted from
0, has weight (r + 1) ** -zipf; 0 = uniform), drawn by inverse CDF and mapped to ids
through a fixed random permutation. For user and item the map turns with time: at stream
position x (0 at the first row, 1 after the last) rank r is the id at permutation slot
(r - floor(drift * vocab / 100 * x)) mod vocab, so ids slide down the ranking and fresh ids
enter at the top; `drift` = 1 replaces the top 1% of ids once over the stream.

Labels: label ~ Bernoulli(sigmoid(b0 + logit)) with

    logit = b_user + b_item + b_category + sum of b_c3.. + <p_user, q_item(x)> / sqrt(8)
            + N(0, 0.3^2),
    q_item(x) = cos(drift * pi/2 * x) a_item + sin(drift * pi/2 * x) b_item,

per-id biases b and latent vectors p, a, b (dim 8) drawn once from `seed`. So `drift` = 1
turns every item's preference vector a quarter circle over the stream (the user-item
affinities at the end are uncorrelated with those at the start); `drift` = 0 is a
stationary log. The intercept b0 is set, on a 100,000-row calibration sample, so that the
expected positive share is `positive_rate`.

Timestamps are evenly spaced, non-decreasing, over `days` days from 2024-01-01 00:00 UTC.
Chunk i is drawn from the seed pair (seed, i): both passes of `prepare` and two instances
with the same options give identical rows (a different `chunk_rows` gives different rows).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from diet_ray.data.errors import DataError
from diet_ray.data.sources.base import FieldSpec, Source

EPOCH = 1_704_067_200  # 2024-01-01 00:00:00 UTC
LATENT_DIM = 8
CALIBRATION_ROWS = 100_000
CONTEXT_VOCABS = (10, 100, 1_000, 10_000)  # c3, c4, c5, c6, then again from c7
# spread of the hidden model's terms, on the logit scale
USER_BIAS_SD, ITEM_BIAS_SD, CATEGORY_BIAS_SD, CONTEXT_BIAS_SD = 0.5, 0.7, 0.3, 0.3
INTERACTION_SCALE, NOISE_SD = 1.0, 0.3
# seed streams: SeedSequence([seed, stream, ...])
_TABLES, _CHUNK, _CALIBRATE = 0, 1, 2


def field_names(fields: int) -> tuple[str, ...]:
    """`user`, `item`, `category`, `c3`, `c4`, ... (`fields` names)."""
    return ("user", "item", "category", *(f"c{k}" for k in range(3, fields)))[:fields]


def field_vocab(k: int, vocab: int) -> int:
    """Number of ids of field `k` (0 = user, 1 = item, 2 = category, 3.. = context)."""
    if k < 2:
        return vocab
    if k == 2:
        return max(2, vocab // 200)
    return min(vocab, CONTEXT_VOCABS[(k - 3) % len(CONTEXT_VOCABS)])


def _int_option(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise DataError(f"synthetic source: option {name!r} must be an integer >= {low} "
                        f"(got {value!r})")
    if value < low:
        raise DataError(f"synthetic source: option {name!r} must be at least {low} (got {value})")
    return int(value)


def _float_option(name: str, value: object, low: float, high: float | None = None,
                  open_low: bool = False) -> float:
    bound = f"> {low}" if open_low else f">= {low}"
    want = f"a number {bound}" + (f" and < {high}" if high is not None else "")
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise DataError(f"synthetic source: option {name!r} must be {want} (got {value!r})")
    v = float(value)
    if (not math.isfinite(v) or v < low or (open_low and v == low)
            or (high is not None and v >= high)):
        raise DataError(f"synthetic source: option {name!r} must be {want} (got {value!r})")
    return v


class _Field:
    """One power-law field: rank CDF, rank -> id permutation, id strings, per-id bias."""

    def __init__(self, rng: np.random.Generator, size: int, zipf: float, bias_sd: float) -> None:
        weights = np.arange(1, size + 1, dtype=np.float64) ** -zipf
        self.cdf = np.cumsum(weights)
        self.cdf /= self.cdf[-1]
        self.perm = rng.permutation(size)
        self.bias = rng.normal(0.0, bias_sd, size)
        self.names = pa.array(np.arange(size)).cast(pa.string())
        self.size = size

    def draw(self, rng: np.random.Generator, n: int, shift: np.ndarray | None = None
             ) -> np.ndarray:
        """[n] ids of power-law ranks; `shift` [n] turns the rank -> id map (None: fixed)."""
        rank = np.minimum(np.searchsorted(self.cdf, rng.random(n), side="right"), self.size - 1)
        slot = rank if shift is None else (rank - shift) % self.size
        return self.perm[slot]


@dataclass(frozen=True)
class _Rows:
    ids: list[np.ndarray]  # per field, [n] int64
    logit: np.ndarray  # [n] float64, without the intercept


class Synthetic(Source):
    """A seeded synthetic click log; see the module docstring for the model and options."""

    name = "synthetic"

    def __init__(
        self,
        input_uri: str | None = None,  # unused: the log is generated
        *,
        rows: int = 1_000_000,
        fields: int = 8,
        vocab: int = 100_000,
        zipf: float = 1.05,
        drift: float = 1.0,
        days: float = 30,
        positive_rate: float = 0.25,
        seed: int = 0,
        chunk_rows: int = 200_000,
    ) -> None:
        self.rows = _int_option("rows", rows, 1)
        self.fields = _int_option("fields", fields, 2)
        self.vocab = _int_option("vocab", vocab, 2)
        self.zipf = _float_option("zipf", zipf, 0.0)
        self.drift = _float_option("drift", drift, 0.0)
        self.days = _float_option("days", days, 0.0, open_low=True)
        self.positive_rate = _float_option("positive_rate", positive_rate, 0.0, 1.0,
                                           open_low=True)
        self.seed = _int_option("seed", seed, 0)
        self.chunk_rows = _int_option("chunk_rows", chunk_rows, 1)
        self._span = max(1, round(self.days * 86400))  # seconds covered by the stream
        if self.rows * self._span >= 2**62:
            raise DataError(f"synthetic source: options 'rows' x 'days' too large "
                            f"({self.rows} rows over {self.days} days)")
        names = field_names(self.fields)
        self.spec = FieldSpec(categorical=names)

        rng = np.random.default_rng(np.random.SeedSequence([self.seed, _TABLES]))
        sds = (USER_BIAS_SD, ITEM_BIAS_SD, CATEGORY_BIAS_SD)
        self._fields = [
            _Field(rng, field_vocab(k, self.vocab), self.zipf,
                   sds[k] if k < 3 else CONTEXT_BIAS_SD)
            for k in range(self.fields)
        ]
        n_cat = field_vocab(2, self.vocab)
        self._category = rng.integers(0, n_cat, self.vocab)  # item -> category
        self._user_vec = rng.standard_normal((self.vocab, LATENT_DIM)).astype(np.float32)
        self._item_a = rng.standard_normal((self.vocab, LATENT_DIM)).astype(np.float32)
        self._item_b = rng.standard_normal((self.vocab, LATENT_DIM)).astype(np.float32)
        self._shift_total = self.drift * self.vocab / 100.0
        self.intercept = self._calibrate()

    # -- generation -----------------------------------------------------------------------
    def _draw(self, rng: np.random.Generator, x: np.ndarray) -> _Rows:
        """Ids and logits (less the intercept) of rows at stream positions `x` [n] in [0, 1)."""
        shift = np.floor(self._shift_total * x).astype(np.int64)
        user_f, item_f = self._fields[0], self._fields[1]
        user = user_f.draw(rng, len(x), shift)
        item = item_f.draw(rng, len(x), shift)
        ids = [user, item]
        logit = user_f.bias[user] + item_f.bias[item]
        if self.fields > 2:
            cat = self._category[item]
            ids.append(cat)
            logit += self._fields[2].bias[cat]
        for f in self._fields[3:]:
            c = f.draw(rng, len(x))
            ids.append(c)
            logit += f.bias[c]
        angle = (self.drift * math.pi / 2) * x
        p = self._user_vec[user]
        affinity = (np.cos(angle) * np.einsum("nd,nd->n", p, self._item_a[item])
                    + np.sin(angle) * np.einsum("nd,nd->n", p, self._item_b[item]))
        logit += INTERACTION_SCALE / math.sqrt(LATENT_DIM) * affinity
        logit += rng.normal(0.0, NOISE_SD, len(x))
        return _Rows(ids, logit)

    def _calibrate(self) -> float:
        """The intercept b0 giving mean(sigmoid(b0 + logit)) = positive_rate on a sample."""
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, _CALIBRATE]))
        x = (np.arange(CALIBRATION_ROWS) + 0.5) / CALIBRATION_ROWS
        logit = self._draw(rng, x).logit
        lo, hi = -30.0, 30.0
        for _ in range(60):  # bisection: the mean is increasing in b0
            mid = (lo + hi) / 2
            if np.mean(_sigmoid(mid + logit)) < self.positive_rate:
                lo = mid
            else:
                hi = mid
        return (lo + hi) / 2

    def chunk(self, i: int) -> pa.Table:
        """Rows [i * chunk_rows, min((i + 1) * chunk_rows, rows)) as a canonical table."""
        start = i * self.chunk_rows
        stop = min(start + self.chunk_rows, self.rows)
        if not 0 <= start < stop:
            raise IndexError(f"chunk {i} is outside the {self.rows}-row stream")
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, _CHUNK, i]))
        pos = np.arange(start, stop, dtype=np.int64)
        x = pos / self.rows
        drawn = self._draw(rng, x)
        label = rng.random(len(pos)) < _sigmoid(self.intercept + drawn.logit)
        # integer arithmetic: exact, non-decreasing, the same whatever the chunking
        ts = EPOCH + pos * self._span // self.rows
        cols: dict[str, pa.Array] = {
            "timestamp": pa.array(ts, pa.int64()),
            "label": pa.array(label.astype(np.int8)),
        }
        for name, f, ids in zip(self.spec.categorical, self._fields, drawn.ids):
            cols[name] = f.names.take(pa.array(ids))
        return pa.table(cols)

    def chunks(self) -> Iterator[pa.Table]:
        for i in range(-(-self.rows // self.chunk_rows)):
            yield self.chunk(i)


def _sigmoid(z: np.ndarray | float) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z)))
