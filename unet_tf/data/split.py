"""The validation split: which samples a run holds out when the data has no val split.

One rule for every caller: :func:`train_and_val` for a dataset folder (used by
:func:`unet_tf.data.pipeline.load_data`, and by ``unet-tf evaluate`` to find the
images a training run held out), :func:`split_samples` for a list of samples
and :func:`validation_indices` for items in a fixed order (arrays in memory).
The split is seeded, and holds out whole folders where the samples are grouped
in sub-folders (patients, sequences).
"""

from __future__ import annotations

import logging
from typing import Mapping, Sequence

import numpy as np

from .samples import Sample, natural_key

__all__ = ["split_samples", "train_and_val", "validation_indices"]

logger = logging.getLogger(__name__)


def _pick_groups(groups: dict[str, list[int]], n: int, target: float, seed: int) -> set[int]:
    """Whole groups, in a seeded random order, each taken when it brings the
    validation count closer to ``target``; at least one sample on each side."""
    if target <= 0 or n < 2:
        return set()
    keys = sorted(groups, key=natural_key)
    picked: set[int] = set()
    for g in np.random.default_rng(seed).permutation(len(keys)).tolist():
        members = groups[keys[g]]
        if len(picked) + len(members) < n and \
                abs(len(picked) + len(members) - target) < abs(len(picked) - target):
            picked.update(members)
    if not picked:  # every group overshoots: the smallest one that leaves training data
        smallest = min((groups[k] for k in keys if len(groups[k]) < n), key=len, default=[])
        picked.update(smallest)
    return picked


def validation_indices(groups: Sequence[str], val_fraction: float, seed: int = 0) -> set[int]:
    """Which of ``len(groups)`` items in a fixed order form the validation set.

    ``groups[i]`` names the group of item ``i`` (its top-level folder, or the
    item itself): when some items share a group, whole groups are held out,
    unless no choice of groups comes near ``val_fraction`` (then single items,
    with a warning). Groups are visited in a seeded random order, each taken
    when it brings the count closer to ``val_fraction`` of the items.

    Args:
        groups: One group name per item.
        val_fraction: Fraction for validation, in [0, 1). With 2 or more
            items and a fraction > 0 both sides get at least one item.
        seed: Random seed.

    Returns:
        The indices of the validation items.

    Raises:
        ValueError: ``val_fraction`` outside [0, 1).
    """
    _check_fraction(val_fraction)
    by_group: dict[str, list[int]] = {}
    for i, group in enumerate(groups):
        by_group.setdefault(group, []).append(i)
    n = len(groups)
    target = n * val_fraction
    singles = {str(i): [i] for i in range(n)}
    if len(by_group) == n:  # no item shares a group
        by_group = singles
    val_idx = _pick_groups(by_group, n, target, seed) if len(by_group) >= 2 else set()
    if by_group is not singles and abs(len(val_idx) - target) > max(1.0, target / 2):
        if len(by_group) >= 2:
            logger.warning("%d folders cannot be split near a validation fraction of %g (got %d "
                           "of %d images); splitting their images instead, so neighbouring "
                           "images of one folder may land on both sides.",
                           len(by_group), val_fraction, len(val_idx), n)
        val_idx = _pick_groups(singles, n, target, seed)
    return val_idx


def split_samples(samples: Sequence[Sample], val_fraction: float,
                  seed: int = 0) -> tuple[list[Sample], list[Sample]]:
    """Deterministically splits samples into train and validation sets.

    The result depends only on the sample names, ``val_fraction`` and
    ``seed``, not on the input order. Samples in sub-folders (one folder per
    patient or per specimen, say "patient1/slice3") are split by their
    top-level folder, so that no folder lands on both sides and validation
    measures generalisation to new patients rather than to neighbouring slices.

    Args:
        samples: Samples to split.
        val_fraction: Fraction for validation, in [0, 1). With 2 or more
            samples and a fraction > 0 both sides get at least one sample.
        seed: Random seed.

    Returns:
        (train, val), each in name order.

    Raises:
        ValueError: ``val_fraction`` outside [0, 1) or duplicate names.
    """
    _check_fraction(val_fraction)
    ordered = sorted(samples, key=lambda s: (s.name, str(s.image_path)))
    if len({(s.name, str(s.image_path)) for s in ordered}) != len(ordered):
        raise ValueError("split_samples got duplicate samples")
    groups = [s.name.split("/")[0] if "/" in s.name else s.name for s in ordered]
    val_idx = validation_indices(groups, val_fraction, seed)
    train = [s for i, s in enumerate(ordered) if i not in val_idx]
    val = [s for i, s in enumerate(ordered) if i in val_idx]
    return train, val


def train_and_val(splits: Mapping[str, Sequence[Sample]], val_fraction: float,
                  seed: int = 0) -> tuple[list[Sample], list[Sample]]:
    """The training and validation samples of a dataset.

    The dataset's own val split when it has one; otherwise ``val_fraction`` of
    its train (or, unsplit, all) samples held out by :func:`split_samples`,
    when there are at least two and the fraction is above 0.

    Args:
        splits: Samples per split, as :func:`unet_tf.data.layouts.find_samples`
            or :func:`unet_tf.data.check.load_dataset` give them.
        val_fraction: Fraction held out when there is no val split, in [0, 1).
        seed: Random seed of that split.

    Returns:
        (train, val); both may be empty.
    """
    train = list(splits.get("train") or splits.get("all") or [])
    val = list(splits.get("val") or [])
    if not val and val_fraction > 0 and len(train) >= 2:
        train, val = split_samples(train, val_fraction, seed)
    return train, val


def _check_fraction(val_fraction: float) -> None:
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
