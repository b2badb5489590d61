"""objects: instance maps from predictions, and object metrics.

numpy, scipy and OpenCV only (no TensorFlow), so evaluation and post-processing
can run anywhere.

Instance maps are ``(H, W)`` integer arrays: 0 is background, every other
value one object. Ids may have gaps (a crop keeps ids 3, 17 and 183;
annotation tools renumber nothing), so objects are always counted as the ids
*present*, never as the largest id.

Object metrics follow StarDist's ``stardist.matching`` (Schmidt et al. 2018)
so that numbers agree with it exactly; ``tests/reference`` records StarDist's
own results on a set of test pairs, and the tests compare against them.

* :func:`match_objects` -- one image pair: tp/fp/fn, precision, recall, f1,
  accuracy (DSB2018 average precision), mean matched IoU and panoptic quality
  per IoU threshold.
* :class:`ObjectMetrics` -- a dataset: counts summed over images, then the
  ratios (``stardist.matching.matching_dataset(..., by_image=False)``).
* :func:`object_diagnosis` -- matched / split / merged / missed / false
  positives at one threshold (what ``unet-tf evaluate`` lists).
* :func:`to_instances` -- an instance map from a binary or multi-class
  probability map (threshold or argmax, connected components, seeded
  watershed on the distance transform to split touching objects).
* :func:`outline_overlay` -- every object outlined in its own colour.
"""
from __future__ import annotations

import colorsys
from collections.abc import Iterable, Sequence

import cv2
import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

from .data.weights import instances_from_mask

__all__ = [
    "DEFAULT_THRESHOLDS",
    "ObjectMetrics",
    "count_objects",
    "instance_colors",
    "match_objects",
    "object_diagnosis",
    "outline_overlay",
    "present_ids",
    "relabel_sequential",
    "to_instances",
    "validate_instances",
]

#: IoU thresholds 0.5, 0.55, ..., 0.95 (COCO / DSB2018), written as rounded
#: literals: ``np.arange(0.5, 1, 0.05)`` gives 0.7000000000000002 and friends.
DEFAULT_THRESHOLDS: tuple[float, ...] = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))

# Ids below this are indexed with a lookup table (one bincount); larger ids
# (int32 maps with ids in the millions) fall back to np.unique.
_LUT_LIMIT = 1 << 22
_GOLDEN = 0.618033988749895


# --------------------------------------------------------------------------- ids
def validate_instances(instances, name: str = "instances") -> np.ndarray:
    """Check that ``instances`` is a 2-D map of non-negative integer ids.

    Whole-valued float maps (an instance map saved as float) are accepted and
    converted to int64; anything else that is not an integer map is refused.

    Args:
        instances: The instance map, ``(H, W)``; 0 = background.
        name: What to call it in error messages (a file name, "truth", ...).

    Returns:
        The map as an integer numpy array (the input itself when it already is one).

    Raises:
        ValueError: Not 2-D, a boolean mask, non-numeric, non-integer or
            non-finite float values, or negative ids.
    """
    a = np.asarray(instances)
    if a.ndim != 2:
        hint = " (squeeze the channel axis)" if a.ndim == 3 and a.shape[-1] == 1 else ""
        raise ValueError(f"{name}: an instance map must be 2-D (H, W); got shape {a.shape}{hint}")
    if a.dtype == bool:
        raise ValueError(f"{name} is a boolean mask, not an instance map (0 = background, "
                         "1..N = object ids); label it first, e.g. with to_instances")
    if np.issubdtype(a.dtype, np.floating):
        bad = ~np.isfinite(a) | (a != np.round(a))
        if bad.any():
            example = a[bad].flat[0]
            raise ValueError(f"{name} has non-integer ids (dtype {a.dtype}, e.g. {example}); "
                             "instance ids must be whole numbers")
        a = a.astype(np.int64)
    elif not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{name} has dtype {a.dtype}; instance ids must be integers")
    if a.size and np.issubdtype(a.dtype, np.signedinteger) and a.min() < 0:
        raise ValueError(f"{name} has negative ids (smallest {a.min()}); ids must be "
                         "0 (background) or positive")
    return a


def _index(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dense indices for the ids of a validated map.

    Returns:
        ``(ids, index)``: ``ids`` is ``[0, *sorted present nonzero ids]``
        (int64; 0 is always first, present or not) and ``index`` has ``a``'s
        shape, each pixel's position in ``ids``.
    """
    flat = a.ravel()
    if flat.size and int(flat.max()) < _LUT_LIMIT:
        present = np.bincount(flat.astype(np.intp, copy=False)) > 0
        present[0] = True
        ids = np.flatnonzero(present)
        index = (np.cumsum(present) - 1)[flat]
    else:
        ids, index = np.unique(flat, return_inverse=True)
        if ids.size == 0 or ids[0] != 0:
            ids, index = np.concatenate([[0], ids]), index + 1
    return ids.astype(np.int64), index.reshape(a.shape)


def present_ids(instances) -> np.ndarray:
    """The object ids present in an instance map.

    Args:
        instances: ``(H, W)`` integer map, 0 = background.

    Returns:
        Sorted int64 array of the nonzero ids that occur (gaps kept).
    """
    return _index(validate_instances(instances))[0][1:]


def count_objects(instances) -> int:
    """Number of objects: ids present, not the largest id.

    Args:
        instances: ``(H, W)`` integer map, 0 = background.

    Returns:
        How many distinct nonzero ids occur.
    """
    return int(present_ids(instances).size)


def relabel_sequential(instances) -> np.ndarray:
    """Renumber ids to 1..N, keeping their order (smallest id becomes 1).

    Args:
        instances: ``(H, W)`` integer map, 0 = background.

    Returns:
        A new map of the same dtype (int64 for whole-valued float input) with
        ids 1..N and background 0.
    """
    a = validate_instances(instances)
    return _index(a)[1].astype(a.dtype)


# --------------------------------------------------------------------------- matching
def _pair_iou(truth, pred) -> tuple[np.ndarray, np.ndarray]:
    """Overlap counts and IoU between the objects of two maps.

    Returns:
        ``(overlap, iou)``: ``overlap[i, j]`` pixels of truth index i and
        prediction index j, index 0 = background (so row sums are the truth
        areas); ``iou`` the ``(n_true, n_pred)`` float32 IoU of the objects.
    """
    truth = validate_instances(truth, "truth")
    pred = validate_instances(pred, "prediction")
    if truth.shape != pred.shape:
        raise ValueError(f"truth {truth.shape} and prediction {pred.shape} differ in shape")
    t_ids, t_idx = _index(truth)
    p_ids, p_idx = _index(pred)
    n_t, n_p = len(t_ids), len(p_ids)
    # One bincount over (truth index, prediction index) pairs: every overlap at once.
    pairs = t_idx.ravel().astype(np.int64) * n_p + p_idx.ravel()
    overlap = np.bincount(pairs, minlength=n_t * n_p).reshape(n_t, n_p)
    inter = overlap[1:, 1:]
    union = overlap.sum(1)[1:, None] + overlap.sum(0)[None, 1:] - inter
    # StarDist stores IoU as float32; rounding the same way makes ties such as
    # IoU = 70/100 at threshold 0.7 come out as they do in StarDist.
    iou = (inter / np.maximum(union, 1)).astype(np.float32)
    return overlap, iou


def _match(iou: np.ndarray, thresh: float) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matching of objects with IoU >= ``thresh`` (StarDist's rule).

    When the pairs at or above ``thresh`` are already one-to-one they are
    the matching; that is always so above 0.5, where an object can overlap
    that much with one partner at most. Otherwise (thresholds up to 0.5, or
    exact 0.5 ties) an optimal assignment (``linear_sum_assignment``) picks
    the most pairs, ties broken by the largest IoU sum, with StarDist's own
    cost matrix so that the same pairs come out.

    Returns:
        ``(rows, cols)``: truth and prediction indices of the matched pairs.
    """
    n_matched = min(iou.shape)
    if n_matched == 0:
        return np.zeros(0, np.intp), np.zeros(0, np.intp)
    # Compare in float32 as StarDist does (its python-float threshold is cast
    # to the float32 scores' dtype).
    hits = iou >= np.float32(thresh)
    if (hits.sum(0) <= 1).all() and (hits.sum(1) <= 1).all():
        return np.nonzero(hits)
    costs = -hits.astype(float) - iou / (2 * n_matched)
    rows, cols = linear_sum_assignment(costs)
    ok = hits[rows, cols]
    return rows[ok], cols[ok]


def _ratio(num: float, den: float) -> float:
    """num / den, 0.0 when den is 0 (StarDist's ``_safe_divide``)."""
    return float(num / den) if abs(den) > 1e-10 else 0.0


def _scores(thresh: float, tp: int, n_true: int, n_pred: int, score_sum: float) -> dict:
    """The StarDist ``Matching`` numbers from counts and the matched IoU sum."""
    fp, fn = n_pred - tp, n_true - tp
    # StarDist: the count ratios are 0 when nothing is matched, even for two
    # empty images (precision of nothing against nothing is 0, not 1).
    ok = tp > 0
    return {
        "thresh": float(thresh), "tp": int(tp), "fp": int(fp), "fn": int(fn),
        "n_true": int(n_true), "n_pred": int(n_pred),
        "precision": tp / (tp + fp) if ok else 0.0,
        "recall": tp / (tp + fn) if ok else 0.0,
        "f1": 2 * tp / (2 * tp + fp + fn) if ok else 0.0,
        "accuracy": tp / (tp + fp + fn) if ok else 0.0,      # DSB2018 "average precision"
        "mean_true_score": _ratio(score_sum, n_true),        # matched IoU sum / true objects
        "mean_matched_score": _ratio(score_sum, tp),         # mean IoU of the matches
        "panoptic_quality": _ratio(score_sum, tp + fp / 2 + fn / 2),
        "sum_matched_score": float(score_sum),
    }


def _thresholds(thresholds) -> tuple[float, ...]:
    values = tuple(float(t) for t in np.atleast_1d(thresholds))
    if not values or any(not 0.0 <= t <= 1.0 for t in values):
        raise ValueError(f"IoU thresholds must lie in [0, 1]; got {thresholds!r}")
    return values


def match_objects(truth, pred, thresholds=DEFAULT_THRESHOLDS):
    """Match the objects of two instance maps at one or more IoU thresholds.

    A truth and a predicted object match when their IoU >= the threshold,
    each object matching at most once (StarDist's ``matching``; see
    :func:`_match`). The numbers equal StarDist's (``tests/reference``), up
    to float32 rounding of the IoU sums, which are kept in float64 here.

    Args:
        truth: ``(H, W)`` integer instance map, 0 = background.
        pred: Predicted instance map, same shape.
        thresholds: One IoU threshold or a sequence of them.

    Returns:
        For a sequence, a list of dicts, one per threshold; for a single
        number, one dict. Keys: ``thresh, tp, fp, fn, n_true, n_pred,
        precision, recall, f1, accuracy`` (tp / (tp + fp + fn), the DSB2018
        average precision), ``mean_true_score`` (matched IoU sum / n_true),
        ``mean_matched_score`` (matched IoU sum / tp), ``panoptic_quality``
        (sum / (tp + fp/2 + fn/2)) and ``sum_matched_score``. Plain Python
        numbers, JSON-serialisable.

    Raises:
        ValueError: Invalid instance maps, different shapes, thresholds outside [0, 1].
    """
    single = np.isscalar(thresholds)
    values = _thresholds(thresholds)
    _, iou = _pair_iou(truth, pred)
    n_true, n_pred = iou.shape
    results = []
    for thresh in values:
        rows, cols = _match(iou, thresh)
        score_sum = iou[rows, cols].astype(np.float64).sum()
        results.append(_scores(thresh, len(rows), n_true, n_pred, score_sum))
    return results[0] if single else results


def _mean_ap(results: Sequence[dict]) -> float | None:
    """Mean of ``accuracy`` over the thresholds in 0.5..0.95 (None if none is)."""
    aps = [r["accuracy"] for r in results if 0.5 - 1e-9 <= r["thresh"] <= 0.95 + 1e-9]
    return float(np.mean(aps)) if aps else None


class ObjectMetrics:
    """Object metrics over a dataset, from counts summed over its images.

    Like ``stardist.matching.matching_dataset(..., by_image=False)``: tp, fp,
    fn, the object counts and the matched IoU sums are added up over images,
    and precision, recall, f1, accuracy, mean IoUs and panoptic quality are
    computed once from the sums, so an image with many objects weighs more
    than one with few (a mean of per-image ratios would not).

    Args:
        thresholds: IoU thresholds (default 0.5, 0.55, ..., 0.95).

    Example::

        metrics = ObjectMetrics()
        for name, truth, pred in pairs:
            metrics.update(truth, pred, name)
        report = metrics.result()   # JSON-serialisable
    """

    def __init__(self, thresholds: Iterable[float] = DEFAULT_THRESHOLDS):
        self.thresholds = _thresholds(thresholds)
        self.reset()

    def reset(self) -> None:
        """Forget every image seen so far."""
        k = len(self.thresholds)
        self._tp = np.zeros(k, np.int64)
        self._score = np.zeros(k, np.float64)
        self._n_true = 0
        self._n_pred = 0
        self.per_image: list[dict] = []

    def __len__(self) -> int:
        return len(self.per_image)

    def update(self, truth, pred, name: str | None = None) -> list[dict]:
        """Add one image pair.

        Args:
            truth: ``(H, W)`` integer instance map, 0 = background.
            pred: Predicted instance map, same shape.
            name: The image's name for ``per_image`` (default: its index).

        Returns:
            The image's own per-threshold results (as :func:`match_objects`).
        """
        try:
            results = match_objects(truth, pred, self.thresholds)
        except ValueError as err:
            if name is None:
                raise
            raise ValueError(f"{name}: {err}") from None
        self._tp += [r["tp"] for r in results]
        self._score += [r["sum_matched_score"] for r in results]
        self._n_true += results[0]["n_true"]
        self._n_pred += results[0]["n_pred"]
        self.per_image.append({
            "name": str(len(self.per_image)) if name is None else str(name),
            "n_true": results[0]["n_true"], "n_pred": results[0]["n_pred"],
            "mean_ap": _mean_ap(results), "by_threshold": results})
        return results

    def result(self) -> dict:
        """The dataset-level numbers.

        Returns:
            A JSON-serialisable dict: ``images``, ``n_true``, ``n_pred``,
            ``by_threshold`` (one dict per threshold with the keys of
            :func:`match_objects`, from the summed counts), ``mean_ap`` (the
            mean of those ``accuracy`` values over thresholds 0.5..0.95, None
            if no threshold lies there) and ``per_image`` (name, counts,
            ``mean_ap`` and ``by_threshold`` per image).
        """
        by_threshold = [_scores(t, int(tp), self._n_true, self._n_pred, float(s))
                        for t, tp, s in zip(self.thresholds, self._tp, self._score)]
        return {"images": len(self.per_image), "n_true": self._n_true, "n_pred": self._n_pred,
                    "by_threshold": by_threshold, "mean_ap": _mean_ap(by_threshold),
                    "per_image": list(self.per_image)}


def object_diagnosis(truth, pred, iou_threshold: float = 0.5) -> dict:
    """What happened to each true object: matched, merged, split or missed.

    Every true object is exactly one of: ``matched`` (matched one-to-one at
    IoU >= ``iou_threshold``, as in :func:`match_objects`), ``merged`` (a
    predicted object holds most of it and most of another true object: the
    true objects lost to merges are counted), ``split`` (two or more
    predicted objects lie mostly inside it and together cover most of it),
    or ``missed``. ``false_positives`` counts predicted objects lying mostly
    on background. Objects are counted as the ids present, not the largest id
    (``unet-tf evaluate`` once counted the largest id).

    Args:
        truth: ``(H, W)`` integer instance map, 0 = background.
        pred: Predicted instance map, same shape.
        iou_threshold: IoU needed for a match.

    Returns:
        Dict of ints: ``true_objects, predicted_objects, matched, merged,
        split, missed, false_positives``.
    """
    overlap, iou = _pair_iou(truth, pred)
    rows, _ = _match(iou, iou_threshold)
    matched = np.zeros(iou.shape[0], bool)
    matched[rows] = True
    inter = overlap[1:, 1:]
    t_area, p_area = overlap.sum(1)[1:], overlap.sum(0)[1:]
    covers = inter > 0.5 * t_area[:, None]             # pred j holds most of truth i
    inside = inter > 0.5 * p_area[None, :]             # pred j lies mostly in truth i
    merger = covers.sum(0) >= 2                        # pred j holds most of 2+ truths
    merged = ~matched & (covers & merger[None, :]).any(1)
    pieces = (inter * inside).sum(1)                   # truth pixels under its inside preds
    split = ~matched & ~merged & (inside.sum(1) >= 2) & (pieces > 0.5 * t_area)
    missed = ~matched & ~merged & ~split
    return {"true_objects": int(iou.shape[0]), "predicted_objects": int(iou.shape[1]),
                "matched": int(matched.sum()), "merged": int(merged.sum()), "split": int(split.sum()),
                "missed": int(missed.sum()),
                "false_positives": int((overlap[0, 1:] > 0.5 * p_area).sum())}


# --------------------------------------------------------------------------- instances
def to_instances(probabilities, *, threshold: float = 0.5, min_size: int = 15,
                 seed_distance: float = 5.0, h: float = 1.5, method: str = "watershed",
                 ignore_background: bool = True, return_classes: bool = False):
    """An instance map from a model's probabilities.

    Binary ``(H, W)`` or ``(H, W, 1)``: pixels with probability >= ``threshold``
    are foreground. Multi-class ``(H, W, K)``, K >= 2: each pixel takes its
    argmax class, and each class other than 0 (background) gets its own
    instances, with ids unique across classes (``threshold`` is unused).

    Each class mask is cut into 4-connected components (so a one-pixel gap
    drawn by the network separates objects), and with ``method="watershed"``
    touching objects inside a component are split:

    1. Seeds: maxima of the mask's Euclidean distance transform that are the
       highest point within a ``(2 * seed_distance + 1)`` square; maxima
       within about ``seed_distance`` px of each other form one seed.
    2. The negated distance is flooded from the seeds inside the mask
       (flooding by immersion, one pixel of distance per level).
    3. Neighbouring regions merge unless the distance map dips by at least
       ``h`` px between them (below the lower of the two maxima: h-maxima
       dynamics). A neck between two round objects is such a dip; the ridge
       of an elongated object is nearly flat and stays one object.
    4. Regions smaller than ``min_size`` px merge into the neighbour they
       share the highest pass with; small objects with no neighbour are removed.

    Args:
        probabilities: ``(H, W)``, ``(H, W, 1)`` or ``(H, W, K)`` array.
        threshold: Foreground probability for binary maps.
        min_size: Smallest object kept, in pixels.
        seed_distance: Seeds closer than this (px) are one seed (at least 1).
        h: How far (px) the distance map must dip between two maxima, below
            the lower one, for them to be two objects. 1.5 keeps ragged
            elongated objects whole; 1.0 splits shallower necks.
        method: ``"watershed"`` (split touching objects) or ``"components"``
            (connected components only).
        ignore_background: Skip class 0; with False class 0 (for binary maps,
            the pixels below ``threshold``) gets instances too.
        return_classes: Also return each id's class.

    Returns:
        ``instances``: ``(H, W)`` uint16 map (int32 past 65535 objects), ids
        1..N, 0 = background; with ``return_classes``, ``(instances,
        {id: class})``.

    Raises:
        ValueError: Bad shape, ``method`` or ``seed_distance``.
    """
    if method not in ("watershed", "components"):
        raise ValueError(f"method must be 'watershed' or 'components', not {method!r}")
    if seed_distance < 1:
        raise ValueError(f"seed_distance must be at least 1 px; got {seed_distance}")
    masks = _class_masks(probabilities, threshold, ignore_background)
    out, classes = np.zeros(masks[0][1].shape, np.int64), {}
    for cls, mask in masks:
        found = _mask_instances(mask, method, min_size, seed_distance, h)
        n, offset = int(found.max(initial=0)), len(classes)
        out[found > 0] = found[found > 0] + offset
        classes.update({offset + k: cls for k in range(1, n + 1)})
    out = out.astype(np.uint16 if len(classes) < 65536 else np.int32)
    return (out, classes) if return_classes else out


def _class_masks(probabilities, threshold: float, ignore_background: bool) -> list:
    """``[(class, mask), ...]`` for each class to cut into instances."""
    p = np.asarray(probabilities)
    if p.ndim == 3 and p.shape[-1] == 1:
        p = p[..., 0]
    if p.ndim == 2:
        fg = p >= threshold
        return ([] if ignore_background else [(0, ~fg)]) + [(1, fg)]
    if p.ndim == 3 and p.shape[-1] >= 2:
        labels = p.argmax(-1)
        return [(c, labels == c) for c in range(1 if ignore_background else 0, p.shape[-1])]
    raise ValueError(f"probabilities must be (H, W), (H, W, 1) or (H, W, K); got shape {p.shape}")


def _mask_instances(mask: np.ndarray, method: str, min_size: int, seed_distance: float,
                    h: float) -> np.ndarray:
    """Instances (int64, ids 1..N) of one boolean mask."""
    components = instances_from_mask(mask, 4)
    if method == "watershed" and components.max() > 0:
        dist = ndimage.distance_transform_edt(mask)
        regions = _flood(dist, _seeds(dist, components, seed_distance), mask)
        labels = _merge_regions(regions, dist, h, min_size)
    else:
        labels = components.astype(np.int64)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    labels = np.where(sizes[labels] >= min_size, labels, 0)   # isolated specks
    return _index(labels)[1]


def _seeds(dist: np.ndarray, components: np.ndarray, seed_distance: float) -> np.ndarray:
    """Seed labels (int32): the distance maxima described in :func:`to_instances`.

    Every connected component gets at least one seed: a component next to a
    wider one can lose all its maxima to the window, and would then vanish.
    """
    window = 2 * int(seed_distance + 0.5) + 1
    peaks = (dist > 0) & (dist >= ndimage.maximum_filter(dist, size=window))
    n = int(components.max())
    seeded = np.zeros(n + 1, bool)
    seeded[components[peaks]] = True
    if not seeded[1:].all():
        top = np.concatenate([[0], ndimage.maximum(dist, components, np.arange(1, n + 1))])
        peaks |= ~seeded[components] & (components > 0) & (dist == top[components])
    # Join maxima within seed_distance: grow each by seed_distance / 2, inside
    # its own component only (a grown seed must not leak across a thin gap).
    radius = int(np.floor(seed_distance / 2))
    if radius:
        disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
        owner = cv2.dilate(np.where(peaks, components, 0).astype(np.float32), disc)
        peaks = (owner == components) & (components > 0)
    blobs = instances_from_mask(peaks, 8)
    n_blobs = int(blobs.max())
    keyed = np.where(peaks, components.astype(np.int64) * (n_blobs + 1) + blobs, 0)
    return _index(keyed)[1].astype(np.int32)


def _flood(dist: np.ndarray, seeds: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Watershed of the negated distance from ``seeds``, restricted to ``mask``.

    Meyer's flooding with integer levels (the distance rounded down): pixels
    are taken highest level first, and within a level breadth-first from the
    regions already labelled (4-neighbours), which puts the border of two
    regions in the middle of a neck. Vectorised over each breadth-first step,
    so the work grows with the number of pixels, not pixels x levels.
    (``scipy.ndimage.watershed_ift`` is not used: on a distance map its ties
    let one seed flood its neighbours' basins.)
    """
    height, width = mask.shape
    stride = width + 2               # one pixel of padding: neighbour offsets never wrap
    level = np.full((height + 2, stride), -1, np.int64)
    level[1:-1, 1:-1] = np.where(mask, np.floor(dist), -1)
    level = level.ravel()
    labels = np.zeros((height + 2, stride), np.int64)
    labels[1:-1, 1:-1] = np.where(mask, seeds, 0)
    labels = labels.ravel()
    offsets = np.array([-stride, stride, -1, 1])
    buckets: dict[int, list] = {}

    def push(src: np.ndarray, current) -> None:
        """Queue the open neighbours of ``src`` with its labels, at their level
        (never above ``current``: flooding goes downhill from where it is)."""
        nb = (src[:, None] + offsets).ravel()
        keep = (level[nb] >= 0) & (labels[nb] == 0)
        nb = nb[keep]
        lab = np.repeat(labels[src], 4)[keep]
        pri = np.minimum(level[nb], np.broadcast_to(current, src.shape).repeat(4)[keep])
        for k in np.unique(pri).tolist():
            at = pri == k
            buckets.setdefault(k, []).append((nb[at], lab[at]))

    start = np.flatnonzero(labels)
    push(start, level[start])
    while buckets:
        k = max(buckets)
        pix, lab = (np.concatenate(parts) for parts in zip(*buckets.pop(k)))
        free = labels[pix] == 0
        pix, first = np.unique(pix[free], return_index=True)   # first claim wins
        if pix.size:
            labels[pix] = lab[free][first]
            push(pix, k)
    return labels.reshape(height + 2, stride)[1:-1, 1:-1].copy()


def _region_passes(regions: np.ndarray, dist: np.ndarray) -> tuple[np.ndarray, ...]:
    """Adjacent region pairs and the height of the highest pass between them.

    Returns:
        ``(a, b, height)``, sorted by height, highest first; the pass height
        of two 4-neighbour pixels is the lower of their two distances.
    """
    lo, hi, d = [], [], []
    for ra, rb, da, db in ((regions[:, :-1], regions[:, 1:], dist[:, :-1], dist[:, 1:]),
                           (regions[:-1], regions[1:], dist[:-1], dist[1:])):
        keep = (ra != rb) & (ra > 0) & (rb > 0)            # a border between two regions
        x, y = ra[keep], rb[keep]
        lo.append(np.minimum(x, y))
        hi.append(np.maximum(x, y))
        d.append(np.minimum(da[keep], db[keep]))
    lo, hi, d = np.concatenate(lo), np.concatenate(hi), np.concatenate(d)
    base = int(regions.max()) + 1
    key = lo * base + hi
    order = np.lexsort((-d, key))                          # by pair, highest pass first
    key, d = key[order], d[order]
    first = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if key.size else key
    pairs, height = key[first], d[first]
    order = np.argsort(-height, kind="stable")
    return pairs[order] // base, pairs[order] % base, height[order]


def _find(parent: list, i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


def _merge_regions(regions: np.ndarray, dist: np.ndarray, h: float, min_size: int) -> np.ndarray:
    """Merge watershed regions separated by shallow passes, then small ones.

    Passes are visited from the highest down, tracking which regions are
    already joined above the current level (``level``) and the highest
    maximum of each such group: at a pass, the lower group's maximum minus
    the pass height is its dynamic, and a dynamic below ``h`` means no real
    neck, so the two regions become one object (``obj``).
    """
    n = int(regions.max())
    if n <= 1:
        return regions
    a_list, b_list, heights = _region_passes(regions, dist)
    peak = np.zeros(n + 1)
    np.maximum.at(peak, regions[regions > 0], dist[regions > 0])
    peak = peak.tolist()
    level, obj = list(range(n + 1)), list(range(n + 1))
    for a, b, height in zip(a_list.tolist(), b_list.tolist(), heights.tolist()):
        ra, rb = _find(level, a), _find(level, b)
        if ra == rb:
            continue
        if min(peak[ra], peak[rb]) - height < h:
            obj[_find(obj, a)] = _find(obj, b)
        high, low = (ra, rb) if peak[ra] >= peak[rb] else (rb, ra)
        level[low] = high
    size = np.bincount(np.array([_find(obj, r) for r in range(n + 1)])[regions].ravel(),
                       minlength=n + 1).tolist()
    for a, b in zip(a_list.tolist(), b_list.tolist()):
        oa, ob = _find(obj, a), _find(obj, b)
        if oa != ob and min(size[oa], size[ob]) < min_size:
            obj[oa] = ob
            size[ob] += size[oa]
    roots = np.array([_find(obj, r) for r in range(n + 1)])
    roots[0] = 0
    return roots[regions]


# --------------------------------------------------------------------------- overlays
def instance_colors(ids) -> np.ndarray:
    """A distinct, deterministic RGB colour per id (golden-ratio hues).

    Args:
        ids: Object ids (any integers).

    Returns:
        ``(len(ids), 3)`` uint8 RGB; consecutive ids get well separated hues.
    """
    hues = (np.asarray(ids, np.float64).ravel() * _GOLDEN) % 1.0
    return np.array([[round(255 * c) for c in colorsys.hsv_to_rgb(hue, 0.85, 1.0)]
                     for hue in hues], np.uint8).reshape(-1, 3)


def outline_overlay(image_rgb_uint8, instances, thickness: int = 1) -> np.ndarray:
    """The image with each object outlined in its own colour.

    Args:
        image_rgb_uint8: ``(H, W, 3)`` RGB (or ``(H, W)`` grey, ``(H, W, 4)``
            RGBA) uint8 image.
        instances: ``(H, W)`` integer instance map, 0 = background.
        thickness: Outline width in pixels, drawn inside each object.

    Returns:
        ``(H, W, 3)`` uint8 RGB copy with the outlines drawn
        (colours from :func:`instance_colors`).

    Raises:
        ValueError: Not uint8, or the shapes differ.
    """
    image = np.asarray(image_rgb_uint8)
    if image.dtype != np.uint8:
        raise ValueError(f"outline_overlay needs a uint8 image; got {image.dtype}")
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    image = np.array(image[..., :3])
    inst = validate_instances(instances)
    if inst.shape != image.shape[:2]:
        raise ValueError(f"image {image.shape[:2]} and instances {inst.shape} differ in shape")
    size = 2 * max(int(thickness), 1) + 1
    # A pixel is on an outline when some neighbour has another id.
    edge = (inst > 0) & ((ndimage.grey_dilation(inst, size=size) != inst)
                         | (ndimage.grey_erosion(inst, size=size) != inst))
    ids, index = _index(inst)
    image[edge] = instance_colors(ids)[index[edge]]
    return image
