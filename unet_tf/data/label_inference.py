"""Working out how a dataset's masks encode classes (:func:`infer_label_spec`).

Each mask is read once and reduced to its distinct values and their counts
(:class:`MaskStat`); the label encoding (binary, class indices, grey-coded
classes, palette colours from classes.json, 16-bit instance maps) is inferred
from those statistics, which also tell whether a mask holds values a spec does
not explain and how many pixels each class has. Pure numpy + OpenCV.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..errors import DatasetError
from .labels import (LabelSpec, binary_threshold, format_colors, format_values, grey_keys,
                     load_class_dict_csv, load_classes_json, pack_rgb, palette_lookup,
                     read_mask_raw, unpack_key)
from .layouts import class_file_candidates
from .samples import CLASS_DICT_FILE, LOSSY_EXTENSIONS, LOSSY_HINT, MAX_MASK_VALUES, Sample

__all__ = ["MaskStat", "infer_label_spec"]

#: In index masks, a void value covering more than this share of all mask
#: pixels while the last class never appears is probably that class (a
#: problem); with the classes otherwise accounted for, only a warning.
VOID_SHARE_LIMIT = 0.10

#: What :func:`load_classes` gives when a class file exists but could not be
#: read (its problem is already listed): no names, no palette, no void colours.
INVALID_CLASSES: tuple = ((), None, ())


@dataclass
class MaskStat:
    """Distinct values of one mask (cheap to keep: a few numbers per file)."""

    sample: Sample
    rgb: bool                   # values are packed RGB keys
    values: np.ndarray
    counts: np.ndarray
    shape: tuple[int, int]
    dtype: str = "uint8"

    @property
    def where(self) -> str:
        s = self.sample
        return f"{s.mask_path}" if s.page is None else f"{s.mask_path} page {s.page}"


def mask_stat(sample: Sample, expand_palette: bool) -> MaskStat:
    """Reads one mask and counts its distinct values.

    Raises:
        DatasetError: Unreadable mask, non-integer values or too many values.
    """
    raw = read_mask_raw(sample.mask_path, sample.page, expand_palette=expand_palette)
    where = f"{sample.mask_path}" + ("" if sample.page is None else f" page {sample.page}")
    rgb = raw.ndim == 3
    flat = pack_rgb(raw).ravel() if rgb else raw.ravel()
    if flat.dtype.kind == "f" and not np.all(np.isfinite(flat) & (flat == np.round(flat))):
        raise DatasetError(f"{where}: mask has non-integer values; save masks as integer "
                           "PNG/TIFF with one class index per pixel.")
    if flat.dtype in (np.uint8, np.uint16):  # bincount beats unique for small ints
        counts = np.bincount(flat)
        values = np.flatnonzero(counts)
        counts = counts[values]
    else:
        values, counts = np.unique(flat, return_counts=True)
    if len(values) > MAX_MASK_VALUES:
        hint = LOSSY_HINT if sample.mask_path.suffix.lower() in LOSSY_EXTENSIONS else ""
        raise DatasetError(f"{where}: mask has {len(values)} distinct values, too many for "
                           "class labels; is it an image or an instance map (put those in "
                           f"instances/)?{hint}")
    return MaskStat(sample, rgb, values, counts, raw.shape[:2], str(raw.dtype))


def load_classes(root: Path | None, samples: Iterable[Sample], problems: list[str]):
    """Loads the one class file (classes.json or class_dict.csv) that applies, as
    (names, palette, ignore colours); None when there is none, and
    :data:`INVALID_CLASSES` when every one found is invalid. Unreadable or
    differing files are problems."""
    paths = class_file_candidates(root, samples)
    loaded = []
    for path in paths:
        read = load_class_dict_csv if path.name == CLASS_DICT_FILE else load_classes_json
        try:
            loaded.append((path, read(path)))
        except DatasetError as exc:
            problems.extend(exc.problems)
    if len({json.dumps(c) for _, c in loaded}) > 1:
        names = ", ".join(str(p) for p, _ in loaded)
        problems.append(f"class files differ ({names}); keep one at the dataset root.")
    if not loaded:
        return INVALID_CLASSES if paths else None
    return loaded[0][1]


def _rgb_without_classes(rgb: list[MaskStat]) -> str:
    """One problem for all RGB masks, with a classes.json to start from."""
    totals: Counter = Counter()
    for stat in rgb:
        totals.update(dict(zip(stat.values.tolist(), stat.counts.tolist())))
    colors = [unpack_key(k) for k, _ in totals.most_common(64)]
    entries = ",\n    ".join(json.dumps({"name": f"class_{i}", "color": list(c)})
                              for i, c in enumerate(colors))
    examples = ", ".join(s.where for s in rgb[:3]) + (", ..." if len(rgb) > 3 else "")
    more = "" if len(totals) <= 64 else f" (the 64 most frequent of {len(totals)} colours)"
    return (f"{len(rgb)} RGB mask{'s' * (len(rgb) != 1)} ({examples}) and no classes.json to map "
            f"colours to classes. Add classes.json at the dataset root (see README), or save masks "
            f"as single-channel class indices. The colours found{more}, most frequent first, as a "
            f"classes.json to start from (rename the classes, order them as you like, and mark "
            f"void colours with \"ignore\": true):\n  [\n    {entries}\n  ]")


def _is_binary_file(values: np.ndarray) -> bool:
    vals = set(values.tolist())
    return any(vals <= allowed for allowed in ({0, 255}, {0, 1}, {0, 65535}))


def infer_from_stats(stats: list[MaskStat], classes, ignore_index: int, num_classes: int | None,
                     problems: list[str], warnings: list[str]) -> LabelSpec | None:
    """Infers the label spec from per-mask value statistics."""
    invalid = classes is INVALID_CLASSES  # its problem is listed: no "no classes.json" too
    names, palette, ignore_colors = ([], None, []) if invalid or not classes else classes
    if palette is not None:
        return _palette_spec(names, palette, ignore_colors, ignore_index, num_classes, problems)
    rgb = [s for s in stats if s.rgb]
    if rgb and not invalid:
        problems.append(_rgb_without_classes(rgb))
    grey = [s for s in stats if not s.rgb]
    if rgb or not grey:
        if not stats:
            problems.append("no labelled masks found; add masks to infer the classes from.")
        return None
    if all(_is_binary_file(s.values) or _is_near_binary(s) for s in grey) \
            and _binary_ok(names, num_classes):
        return _binary_spec(grey, names, ignore_index, warnings)
    if not names and num_classes in (None, 1, 2) and _are_instance_maps(grey):
        objects = int(np.median([np.count_nonzero(s.values) for s in grey]))
        warnings.append(f"masks are 16-bit instance-id maps (about {objects} objects per image): "
                        "any id is foreground, and the ids feed the weight map. Pass "
                        "num_classes to read them as class indices instead.")
        return LabelSpec("instance", 2, ignore_index)
    _check_noise(grey, problems, warnings)
    coded = _grey_coded_spec(grey, names, ignore_index, num_classes, warnings)
    if coded is not None:
        return coded
    spec = _index_spec(grey, names, ignore_index, num_classes, problems, warnings)
    if spec is not None:
        fix = ("drop --num-classes" if num_classes else
               "list 2 classes (or none) in classes.json" if names else "")
        _check_void(grey, spec, fix, problems, warnings)
    return spec


def _check_void(stats: list[MaskStat], spec: LabelSpec, fix: str, problems: list[str],
                warnings: list[str]) -> None:
    """Flags a void value that looks like a class: the only non-zero value
    (binary 0/255 masks read with 3 classes), or more than
    :data:`VOID_SHARE_LIMIT` of the pixels while the last class never appears
    (0/1/255 masks read with 3 classes). A large void share with the classes
    otherwise accounted for (sparse annotations, classes missing from a subset)
    is only a warning: it is common, and nothing would let the user through."""
    void = spec.ignore_index
    with_void = [s for s in stats if np.any(s.values == void)]
    total = sum(int(s.counts.sum()) for s in stats)
    if not with_void or not total:
        return
    share = sum(int(s.counts[s.values == void].sum()) for s in with_void) / total
    present = set().union(*(s.values.tolist() for s in stats))
    absent = sorted(set(range(spec.num_labels)) - present - {void})
    where = with_void[0].where + (f" and {len(with_void) - 1} more masks"
                                  if len(with_void) > 1 else "")
    head = f"{where}: {void} is the void value (--ignore-index)"
    other = "pass --ignore-index with another value"
    if present - {0} == {void}:
        problems.append(f"{head} and is the only non-zero value in the masks ({100 * share:.1f}% "
                        f"of the pixels): these look like binary 0/{void} masks; "
                        + (f"{fix}, or {other}." if fix else f"{other}."))
    elif share > VOID_SHARE_LIMIT and absent == [spec.num_labels - 1]:
        last = absent[0]
        problems.append(f"{head} and covers {100 * share:.1f}% of the mask pixels, while class "
                        f"{last} never appears: {void} probably stores class {last}; re-save the "
                        f"masks with {last} in place of {void}, or, if {void} really is void, "
                        f"use {last} classes.")
    elif share > VOID_SHARE_LIMIT:
        warnings.append(f"{head} and covers {100 * share:.1f}% of the mask pixels, which training "
                        f"ignores; if {void} is a class, {other}.")


def _grey_coded_spec(stats: list[MaskStat], names: list[str], ignore_index: int,
                     num_classes: int | None, warnings: list[str]) -> LabelSpec | None:
    """Classes stored as a few spread-out grey levels (0/128/255, 0/85/170/255),
    as exported by many annotation tools: class k is the k-th smallest level.

    The ignore value counts as a class when the levels, it included, are
    evenly spaced (0/128/255 is three classes); otherwise it stays void.
    None when the values look like class indices (0..C-1, VOC's 0..20 + 255).
    """
    if any(_is_lossy(s) for s in stats):
        return None
    levels = sorted(set().union(*(s.values.tolist() for s in stats)))
    non_void = [v for v in levels if v != ignore_index]
    if not non_void or len(levels) > 32 or max(levels) > 255 or max(non_void) < 2 * len(non_void):
        return None
    steps = np.diff(levels)
    spaced = len(levels) >= 3 and steps.max() - steps.min() <= 2
    if num_classes is not None:  # an explicit count settles the ignore value's role
        void_is_class = num_classes == len(levels) != len(non_void)
    else:
        void_is_class = ignore_index in levels and spaced
    classes = levels if void_is_class else non_void
    if num_classes is not None and num_classes != len(classes):
        return None  # let _index_spec report the mismatch
    mapping = ", ".join(f"{v} -> {k}" for k, v in enumerate(classes))
    warnings.append(f"masks hold the grey levels {format_values(levels)}, read as {len(classes)} "
                    f"classes ({mapping})" + ("" if void_is_class or ignore_index not in levels
                                              else f"; {ignore_index} is void") + ".")
    class_names = names if len(names) == len(classes) else [f"level_{v}" for v in classes]
    ignore_colors = [] if void_is_class or ignore_index not in levels else \
        [(ignore_index,) * 3]
    return LabelSpec("palette", len(classes), ignore_index, class_names,
                     [(v, v, v) for v in classes], ignore_colors)


def _are_instance_maps(stats: list[MaskStat]) -> bool:
    """16-bit masks numbering their objects (cell tracking challenge, BBBC):
    ids beyond 8 bits, or typically 8 or more ids per image. A few values
    (class indices saved as 16-bit) do not count; num_classes overrides."""
    if not stats or any(s.dtype not in ("uint16", "int32") for s in stats):
        return False
    if any(s.values.max() > 255 for s in stats):
        return True
    return float(np.median([np.count_nonzero(s.values) for s in stats])) >= 8


def _is_lossy(stat: MaskStat) -> bool:
    return stat.sample.mask_path.suffix.lower() in LOSSY_EXTENSIONS


def _is_near_binary(stat: MaskStat) -> bool:
    """A JPEG 0/255 mask: foreground present, >= 90% of pixels near 0 or 255.

    Compression noise spreads over many values, each rare; a JPEG-saved index
    mask concentrates a class on one value, so any single value other than
    0/255 covering more than 5% of the pixels means "not binary".
    """
    values, counts = stat.values, stat.counts
    if not _is_lossy(stat) or values.max() > 255 or values.max() < 128:
        return False
    total = counts.sum()
    near = (values <= 32) | (values >= 223)
    other = (values != 0) & (values != 255)
    return (counts[near].sum() >= 0.9 * total
            and (not other.any() or counts[other].max() <= 0.05 * total))


def _check_noise(stats: list[MaskStat], problems: list[str], warnings: list[str]) -> None:
    """Flags masks whose values look like damaged binary masks, not class indices."""
    lossy = [s for s in stats if _is_lossy(s) and not _is_binary_file(s.values)]
    for s in lossy:
        problems.append(f"{s.where}: JPEG mask with {len(s.values)} distinct values "
                        f"({format_values(s.values, 6)}); JPEG compression alters mask values, "
                        "re-export the masks as PNG.")
    total = sum(int(s.counts.sum()) for s in stats)
    extremes = sum(int(s.counts[(s.values == 0) | (s.values == 255)].sum()) for s in stats)
    others = set().union(*(s.values.tolist() for s in stats)) - {0, 255}
    if not lossy and len(others) > 2 and total and extremes / total > 0.98:
        warnings.append("masks are almost all 0/255 plus rare values "
                        f"{format_values(sorted(others), 6)}; if they are binary masks damaged "
                        "by resizing, re-export them with nearest-neighbour interpolation.")


def _binary_ok(names: list[str], num_classes: int | None) -> bool:
    # num_classes=1 is the usual "one sigmoid output" way of saying binary.
    return num_classes in (None, 1, 2) and len(names) in (0, 1, 2)


def _binary_spec(stats: list[MaskStat], names: list[str], ignore_index: int,
                 warnings: list[str]) -> LabelSpec:
    highs = {int(s.values.max()) for s in stats if s.values.max() > 0 and not _is_lossy(s)}
    lossy = [s.where for s in stats if _is_lossy(s) and not _is_binary_file(s.values)]
    if lossy:
        warnings.append(f"{len(lossy)} JPEG masks (e.g. {lossy[0]}) carry compression noise; "
                        "they are thresholded at 128. Save masks as PNG to avoid this.")
    if not highs and not lossy:
        warnings.append("all masks are empty (only 0); every pixel is background.")
    if len(highs) > 1:
        warnings.append(f"binary masks mix foreground values {sorted(highs)}; all are read as 1.")
    class_names = names if len(names) == 2 else ["background", *names] if names else []
    return LabelSpec("binary", 2, ignore_index, class_names)


def _index_spec(stats: list[MaskStat], names: list[str], ignore_index: int,
                num_classes: int | None, problems: list[str],
                warnings: list[str]) -> LabelSpec | None:
    values = set().union(*(s.values.tolist() for s in stats)) - {ignore_index}
    max_value = int(max(values)) if values else 0
    if num_classes and names and len(names) != num_classes:
        problems.append(f"num_classes={num_classes} but classes.json lists {len(names)} classes; "
                        "make them agree.")
        return None
    n = num_classes or len(names) or max_value + 1
    if n < 2:
        n = 2
        warnings.append("masks only contain class 0 (and void); assuming 2 classes.")
    absent = sorted(set(range(n)) - values)
    if absent:
        warnings.append(f"classes {format_values(absent)} never appear in the masks.")
    if n > 256:
        warnings.append(f"{n} classes inferred from mask values; if masks hold instance ids, "
                        "move them to instances/ and give class masks.")
    return LabelSpec("index", n, ignore_index, names if len(names) == n else [])


def _palette_spec(names, palette, ignore_colors, ignore_index, num_classes,
                  problems: list[str]) -> LabelSpec | None:
    if num_classes and num_classes != len(names):
        problems.append(f"num_classes={num_classes} but classes.json lists {len(names)} classes; "
                        "make them agree.")
        return None
    return LabelSpec("palette", len(names), ignore_index, names, palette, ignore_colors)


def labelled_samples(samples) -> list[Sample]:
    """The samples with a mask, from a list or from samples per split."""
    if isinstance(samples, dict):
        samples = [s for group in samples.values() for s in group]
    return [s for s in samples if s.mask_path is not None]


def infer_label_spec(samples: Sequence[Sample] | dict[str, list[Sample]],
                     root: str | Path | None = None, ignore_index: int = 255,
                     num_classes: int | None = None) -> LabelSpec:
    """Works out how the masks encode classes (reads each mask once).

    Rules: a classes.json with colours (in ``root``, its split folders, the
    parent of a split root, or near the masks) means palette mode; else
    masks whose values are all within {0, 255}, {0, 1} or {0, 65535} are
    binary; else values are class indices (num_labels = max non-ignore value
    + 1, or ``num_classes``, or the number of names in classes.json).

    Args:
        samples: Samples (or samples per split); unlabelled ones are skipped.
        root: Dataset root, used to find classes.json.
        ignore_index: Value meaning "void" in index masks and written for
            void pixels in the decoded masks.
        num_classes: Number of classes when known (1 or 2 for binary data).

    Returns:
        The LabelSpec.

    Raises:
        DatasetError: Masks that cannot be interpreted (RGB masks without
            classes.json, unreadable files, conflicting class counts).
    """
    labelled = labelled_samples(samples)
    problems: list[str] = []
    classes = load_classes(None if root is None else Path(root), labelled, problems)
    expand = classes is not None and classes[1] is not None
    stats = _collect_stats(labelled, expand, problems)
    spec = infer_from_stats(stats, classes, ignore_index, num_classes, problems, [])
    if problems or spec is None:
        raise DatasetError(problems or ["could not infer the label encoding."])
    return spec


def _collect_stats(samples: Sequence[Sample], expand_palette: bool,
                   problems: list[str]) -> list[MaskStat]:
    stats = []
    for sample in samples:
        try:
            stats.append(mask_stat(sample, expand_palette))
        except DatasetError as exc:
            problems.extend(exc.problems)
    return stats


# --------------------------------------------------------------------------- against a spec


def _stat_classes(stat: MaskStat, spec: LabelSpec) -> tuple[np.ndarray, np.ndarray]:
    """(class index, explained?) per distinct value of a mask."""
    values = stat.values.astype(np.int64)
    if spec.mode == "binary":
        fg = values > binary_threshold(values.max() if len(values) else 0)
        return fg.astype(np.int64), values >= 0
    if spec.mode == "instance":
        return (values != 0).astype(np.int64), np.ones(len(values), bool)
    if spec.mode == "index":
        known = ((values >= 0) & (values < spec.num_labels)) | (values == spec.ignore_index)
        return values, known
    keys = values if stat.rgb else grey_keys(values)
    pal_keys, pal_class = palette_lookup(spec)
    pos = np.clip(np.searchsorted(pal_keys, keys), 0, len(pal_keys) - 1)
    return pal_class[pos].astype(np.int64), pal_keys[pos] == keys


def validate_stat(stat: MaskStat, spec: LabelSpec) -> str | None:
    """A problem message when a mask holds values the spec does not explain."""
    _, known = _stat_classes(stat, spec)
    bad = ~known
    if not bad.any():
        return None
    hint = LOSSY_HINT if stat.sample.mask_path.suffix.lower() in LOSSY_EXTENSIONS else ""
    if spec.mode == "palette":
        order = np.argsort(-stat.counts[bad], kind="stable")
        keys = stat.values[bad][order] if stat.rgb else grey_keys(stat.values[bad][order])
        colors = [unpack_key(k) for k in keys]
        return (f"{stat.where}: colours {format_colors(colors)} are not in classes.json; add them "
                f"(mark void colours with \"ignore\": true).{hint}")
    return (f"{stat.where}: label values {format_values(stat.values[bad])} are outside "
            f"0..{spec.num_labels - 1} and are not the ignore value {spec.ignore_index}; fix the "
            f"mask or pass num_classes / ignore_index to match it.{hint}")


def class_counts(stat: MaskStat, spec: LabelSpec) -> np.ndarray:
    """Pixels per class, with the ignore count last."""
    classes, known = _stat_classes(stat, spec)
    out = np.zeros(spec.num_labels + 1, dtype=np.int64)
    ignore = known & (classes == spec.ignore_index)
    valid = known & ~ignore
    np.add.at(out, classes[valid], stat.counts[valid])
    out[-1] = stat.counts[ignore].sum()
    return out
