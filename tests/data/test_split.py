"""The validation split (unet_tf.data.split): one rule for folders, sample lists and arrays."""

from __future__ import annotations

from pathlib import Path

import pytest

from unet_tf.data.samples import Sample
from unet_tf.data.split import split_samples, train_and_val, validation_indices


def _samples(names):
    return [Sample(n, Path(f"{n}.png"), Path(f"{n}_mask.png")) for n in names]


def test_split_samples_deterministic():
    samples = [Sample(f"x{i}", Path(f"x{i}.png"), Path(f"m{i}.png")) for i in range(20)]
    train, val = split_samples(samples, 0.25, seed=3)
    train2, val2 = split_samples(list(reversed(samples)), 0.25, seed=3)
    assert (train, val) == (train2, val2)          # order of input does not matter
    assert len(val) == 5 and not set(train) & set(val) and len(train) + len(val) == 20
    assert split_samples(samples, 0.25, seed=4)[1] != val
    tiny_train, tiny_val = split_samples(samples[:2], 0.01, seed=0)
    assert len(tiny_train) == 1 and len(tiny_val) == 1
    with pytest.raises(ValueError):
        split_samples(samples, 1.0)


def test_split_by_folder_never_puts_most_images_in_validation():
    samples = ([Sample(f"batch1/{i}", Path(f"b1_{i}.png"), None) for i in range(90)]
               + [Sample(f"batch2/{i}", Path(f"b2_{i}.png"), None) for i in range(10)])
    for seed in range(4):
        train, val = split_samples(samples, 0.2, seed)
        assert len(val) == 10 and {s.name.split("/")[0] for s in val} == {"batch2"}
    two = [Sample(f"seq{k}/{i}", Path(f"{k}_{i}.png"), None) for k in range(2) for i in range(50)]
    train, val = split_samples(two, 0.2, 0)   # a whole sequence would be 50%: split images
    assert len(val) == 20


def test_train_and_val_keeps_a_val_split_and_otherwise_holds_out_train_images():
    train, val = _samples(["a", "b", "c"]), _samples(["v"])
    assert train_and_val({"train": train, "val": val, "test": _samples(["t"])}, 0.5) == (train, val)
    pool = _samples([f"x{i}" for i in range(10)])
    for key in ("train", "all"):
        got = train_and_val({key: pool}, 0.3, seed=2)
        assert got == split_samples(pool, 0.3, seed=2) and len(got[1]) == 3
    assert train_and_val({"all": pool}, 0.0) == (pool, [])       # no fraction: nothing held out
    assert train_and_val({"all": pool[:1]}, 0.5) == (pool[:1], [])  # one image: nothing held out
    assert train_and_val({"test": pool}, 0.5) == ([], [])


def test_items_in_a_fixed_order_split_like_samples_named_in_that_order():
    names = [f"s{i:02d}" for i in range(12)]
    for fraction in (0.1, 0.25, 0.5):
        for seed in range(3):
            val = validation_indices(names, fraction, seed)
            expected = {names.index(s.name) for s in split_samples(_samples(names), fraction, seed)[1]}
            assert val == expected and 1 <= len(val) <= 11
    assert validation_indices(names, 0.0) == set() and validation_indices(names[:1], 0.5) == set()
    with pytest.raises(ValueError):
        validation_indices(names, -0.1)
