"""Vocabularies: frequency order, min_count -> OOV, switch to hashing past max_vocab."""

import pyarrow as pa

from diet_ray.data.vocab import FieldCounter, IdMapper


def test_ids_by_frequency_with_min_count_and_oov():
    c = FieldCounter("f", max_vocab=100)
    c.add(pa.array(["b", "a", "b", "c", None, "b", "a"]))
    vocab = c.vocabulary(min_count=2)
    assert vocab == ["b", "a"]  # c seen once -> OOV
    ids = IdMapper(vocab, hash_buckets=8)(pa.array(["a", "b", "c", None, "zzz"]))
    assert ids.tolist() == [2, 1, 0, 0, 0]
    assert IdMapper(vocab, 8).vocab_size == 3


def test_ties_are_ordered_by_value_for_determinism():
    c = FieldCounter("f", max_vocab=100)
    c.add(pa.array(["y", "x", "z"]))
    assert c.vocabulary(1) == ["x", "y", "z"]


def test_multi_hot_counts_values_and_max_len():
    c = FieldCounter("g", max_vocab=100)
    c.add(pa.array([["a", "b"], [], ["a", "c", "d"]]))
    assert c.max_len == 3 and c.counts["a"] == 2


def test_switches_to_stable_hashing_past_max_vocab():
    c = FieldCounter("f", max_vocab=3)
    c.add(pa.array([str(i) for i in range(10)]))
    assert c.hashed
    m = IdMapper(None, hash_buckets=16)
    ids = m(pa.array(["a", "b", None, "a"]))
    assert ids[0] == ids[3] and ids[2] == 0 and all(1 <= i < 16 for i in ids[[0, 1, 3]])
    # stable across processes and runs: pinned values of the fixed-key hash
    assert m(pa.array(["user-1", "a", "b"])).tolist() == [3, 10, 11]
    assert IdMapper(None, 1 << 20)(pa.array(["user-1"])).tolist() == [562368]
