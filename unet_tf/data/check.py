"""Validating a whole dataset and the human summary behind ``unet-tf check-data DIR``.

:func:`check_dataset` reads every image, mask and instance map once and
collects ALL problems (each naming its file and what to do) and warnings;
:func:`format_report` prints them with a per-split and per-class summary;
:func:`load_dataset` is the same check for the input pipeline, raising
:class:`~unet_tf.errors.DatasetError` when anything needs fixing. Pure numpy +
OpenCV; never imports TensorFlow.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DatasetError
from ..tables import format_table
from .images import read_image
from .label_inference import (MaskStat, class_counts, infer_from_stats, labelled_samples,
                              load_classes, mask_stat, validate_stat)
from .labels import (LabelSpec, format_hw, instance_problem, load_mask, read_instances,
                     size_problem)
from .layouts import discover
from .samples import Sample

__all__ = ["DatasetReport", "check_dataset", "format_report", "load_dataset"]

logger = logging.getLogger(__name__)


@dataclass
class DatasetReport:
    """Result of :func:`check_dataset`.

    Attributes:
        root: The folder that was checked.
        samples: Samples per split ("train", "val", "test" or "all").
        spec: Inferred label spec, or None when it could not be inferred.
        problems: Every problem found (empty when the dataset is usable).
        warnings: Non-fatal oddities worth a look.
        summary: Plain data behind :func:`format_report` (see ``_summarise``).
    """

    root: Path
    samples: dict[str, list[Sample]]
    spec: LabelSpec | None
    problems: list[str]
    warnings: list[str]
    summary: dict

    @property
    def ok(self) -> bool:
        """True when no problems were found."""
        return not self.problems


@dataclass
class _ImageInfo:
    sample: Sample
    split: str
    shape: tuple[int, ...]
    dtype: str


def _check_sample(sample: Sample, split: str, expand_palette: bool, problems: list[str],
                  images: list[_ImageInfo], stats: list[tuple[str, MaskStat]],
                  objects: list[tuple[str, int]]) -> None:
    """Reads one sample's files and records shapes, value stats and problems."""
    try:
        image = read_image(sample.image_path, sample.page)
    except DatasetError as exc:
        problems.extend(exc.problems)
        image = None
    if image is not None:
        if image.ndim != 3 or min(image.shape[:2]) < 1:
            problems.append(f"{sample.image_path}: image has shape {image.shape}; expected "
                            "(H, W, C) with H, W >= 1. Re-export it as a 2-D image.")
            image = None
        else:
            images.append(_ImageInfo(sample, split, image.shape, str(image.dtype)))
    if sample.mask_path is not None:
        _check_mask(sample, split, image, expand_palette, problems, stats)
    if sample.instance_path is not None and image is not None:
        _check_instances(sample, split, image.shape[:2], problems, objects)


def _check_mask(sample: Sample, split: str, image: np.ndarray | None, expand_palette: bool,
                problems: list[str], stats: list[tuple[str, MaskStat]]) -> None:
    try:
        stat = mask_stat(sample, expand_palette)
    except DatasetError as exc:
        problems.extend(exc.problems)
        return
    stats.append((split, stat))
    if image is not None and stat.shape != image.shape[:2]:
        problems.append(size_problem(sample, image.shape[:2], stat.shape))


def _check_instances(sample: Sample, split: str, image_hw, problems: list[str],
                     objects: list[tuple[str, int]]) -> None:
    try:
        inst = read_instances(sample.instance_path, sample.page)
    except DatasetError as exc:
        problems.extend(exc.problems)
        return
    if inst.shape != tuple(image_hw):
        problems.append(size_problem(sample, image_hw, inst.shape, what="instance map"))
    objects.append((split, _present_ids(inst)))


def _present_ids(ids: np.ndarray) -> int:
    """Objects in an instance map: the distinct nonzero ids, not the largest id."""
    values = np.unique(ids)
    return int(np.count_nonzero(values))


def _instance_mismatches(samples: dict[str, list[Sample]], spec: LabelSpec) -> list[str]:
    """Instance maps whose foreground is not their mask's (both read again, now
    that the mask encoding is known). Unreadable files and size mismatches are
    reported by the first pass already and are skipped here."""
    found = []
    for group in samples.values():
        for sample in group:
            if (sample.instance_path is None or sample.mask_path is None
                    or sample.instance_path == sample.mask_path):
                continue
            try:
                labels = load_mask(sample.mask_path, spec, sample.page, strict=False)
                inst = read_instances(sample.instance_path, sample.page)
            except DatasetError:
                continue
            if inst.shape == labels.shape:
                problem = instance_problem(sample, inst, labels, spec.ignore_index, spec.num_labels)
                if problem:
                    found.append(problem)
    return found


def _check_channels(images: list[_ImageInfo], problems: list[str], warnings: list[str]) -> None:
    """All images must share one channel count, except greyscale among RGB
    (photo collections often hold a few grey JPEGs), which the loaders turn
    into RGB; mixed dtypes are only a warning."""
    by_channels: dict[int, list[str]] = {}
    for info in images:
        by_channels.setdefault(info.shape[2], []).append(_where(info.sample))
    if set(by_channels) == {1, 3}:
        grey = by_channels[1]
        warnings.append(f"{len(grey)} greyscale image{'s' * (len(grey) != 1)} among RGB ones "
                        f"(e.g. {', '.join(grey[:2])}) will be used as RGB (grey value repeated).")
    elif len(by_channels) > 1:
        parts = [f"{c} channel{'s' * (c != 1)} ({len(f)} file{'s' * (len(f) != 1)}, "
                 f"e.g. {', '.join(f[:2])})"
                 for c, f in sorted(by_channels.items())]
        problems.append("images have different channel counts: " + "; ".join(parts)
                        + ". Convert them all to the same number of channels (all greyscale "
                        "or all RGB).")
    dtypes = Counter(info.dtype for info in images)
    if len(dtypes) > 1:
        warnings.append(f"images mix dtypes ({', '.join(f'{d} x{n}' for d, n in dtypes.items())});"
                        " they are scaled by dtype, check that intensities are comparable.")


def _check_single_image(samples: dict[str, list[Sample]], warnings: list[str]) -> None:
    """One labelled training image and no val split: nothing to hold out, so
    training validates on the training image (see :func:`~unet_tf.data.split.train_and_val`)."""
    train = [s for s in samples.get("train") or samples.get("all") or [] if s.mask_path]
    val = [s for s in samples.get("val") or [] if s.mask_path]
    if len(train) == 1 and not val:
        warnings.append(f"{_where(train[0])}: the only labelled training image and there is no "
                        "val split, so validation scores are measured on this training image; "
                        "add more images or a val/ split.")


def _where(sample: Sample) -> str:
    return str(sample.image_path) + ("" if sample.page is None else f"[{sample.page}]")


def check_dataset(root: str | Path, num_classes: int | None = None,
                  ignore_index: int = 255) -> DatasetReport:
    """Validates a dataset and summarises it; never raises for data problems.

    Reads every image, mask and instance map once and collects ALL problems:
    missing/empty folders, unpaired or ambiguous files, unreadable files,
    size mismatches, inconsistent channel counts, uninterpretable masks,
    out-of-range labels and unknown palette colours.

    Args:
        root: Dataset root (see :mod:`unet_tf.data.layouts` for the layouts).
        num_classes: Number of classes when known; inferred otherwise.
        ignore_index: Void value in index masks / output value for void.

    Returns:
        A DatasetReport; ``report.ok`` is True when nothing needs fixing.
    """
    root, samples, problems, warnings = discover(Path(root))
    labelled = labelled_samples(samples)
    classes = load_classes(root, labelled, problems)
    expand = classes is not None and classes[1] is not None
    images: list[_ImageInfo] = []
    stats: list[tuple[str, MaskStat]] = []
    objects: list[tuple[str, int]] = []
    for split, group in samples.items():
        for sample in group:
            _check_sample(sample, split, expand, problems, images, stats, objects)
    _check_channels(images, problems, warnings)
    _check_single_image(samples, warnings)
    if not labelled and samples:
        problems.append(f"{root}: no labelled samples (only unlabelled test images); add "
                        "masks for training.")
    spec = None
    if labelled:
        spec = infer_from_stats([s for _, s in stats], classes, ignore_index, num_classes, problems,
                                warnings)
    if spec is not None:
        problems.extend(p for _, s in stats if (p := validate_stat(s, spec)))
        problems.extend(_instance_mismatches(samples, spec))
    if spec is not None and spec.mode == "instance":  # the masks are the instance maps too
        objects += [(split, int(np.count_nonzero(stat.values))) for split, stat in stats
                    if stat.sample.instance_path is None]
        samples = {k: [s if s.instance_path or s.mask_path is None
                       else dataclasses.replace(s, instance_path=s.mask_path) for s in v]
                   for k, v in samples.items()}
    summary = _summarise(root, samples, images, stats, spec, objects)
    return DatasetReport(root, samples, spec, problems, warnings, summary)


def load_dataset(root: str | Path, num_classes: int | None = None,
                 ignore_index: int = 255) -> tuple[dict[str, list[Sample]], LabelSpec]:
    """Discovers and validates a dataset, ready for the input pipeline.

    Args:
        root: Dataset root (see :mod:`unet_tf.data.layouts` for the layouts).
        num_classes: Number of classes when known; inferred otherwise.
        ignore_index: Void value in index masks / output value for void.

    Returns:
        (samples per split as in :func:`unet_tf.data.layouts.find_samples`, LabelSpec).

    Raises:
        DatasetError: Listing every problem :func:`check_dataset` found.
    """
    report = check_dataset(root, num_classes=num_classes, ignore_index=ignore_index)
    for warning in report.warnings:  # nobody sees the report here, so log them
        logger.warning(warning)
    if not report.ok or report.spec is None:
        raise DatasetError(report.problems or [f"{root}: could not infer the label encoding."])
    return report.samples, report.spec


# --------------------------------------------------------------------------- summary


def _summarise(root: Path, samples: dict[str, list[Sample]], images: list[_ImageInfo],
               stats: list[tuple[str, MaskStat]], spec: LabelSpec | None,
               objects: list[tuple[str, int]] = ()) -> dict:
    """Plain-data summary: per-split counts, sizes, channels, dtypes, class pixels,
    and objects in the instance maps (``{split: {"maps": n, "objects": n}}``, the
    ids present counted, or None without instance maps)."""
    splits = {}
    for split, group in samples.items():
        infos = [i for i in images if i.split == split]
        splits[split] = {
            "labelled": sum(s.mask_path is not None for s in group),
            "unlabelled": sum(s.mask_path is None for s in group),
            "sizes": sorted(Counter(i.shape[:2] for i in infos).items()),
            "channels": sorted({i.shape[2] for i in infos}),
            "dtypes": sorted({i.dtype for i in infos}),
        }
    summary = {"root": str(root), "splits": splits, "label": None, "objects": None}
    for split, n in objects:
        summary["objects"] = summary["objects"] or {}
        entry = summary["objects"].setdefault(split, {"maps": 0, "objects": 0})
        entry["maps"] += 1
        entry["objects"] += n
    if spec is not None:
        counts = {}
        for split, stat in stats:
            counts.setdefault(split, np.zeros(spec.num_labels + 1, np.int64))
            counts[split] += class_counts(stat, spec)
        summary["label"] = {**spec.to_dict(),
                            "pixel_counts": {k: v.tolist() for k, v in counts.items()}}
    return summary


def _table(rows: list[list[str]], right: set[int] = frozenset()) -> list[str]:
    return format_table(rows, right, indent="  ").splitlines()


def _fmt_sizes(sizes: list[tuple[tuple[int, int], int]]) -> str:
    if not sizes:
        return "-"
    if len(sizes) <= 3:
        return ", ".join(format_hw(hw) for hw, _ in sizes)
    hs = [hw[0] for hw, _ in sizes]
    ws = [hw[1] for hw, _ in sizes]
    return f"{min(hs)}x{min(ws)} .. {max(hs)}x{max(ws)} ({len(sizes)} sizes)"


def _split_lines(summary: dict) -> list[str]:
    rows = [["split", "pairs", "unlabelled", "size (HxW)", "channels", "dtype"]]
    for split, info in summary["splits"].items():
        rows.append([split, str(info["labelled"]), str(info["unlabelled"]),
                     _fmt_sizes(info["sizes"]),
                     ",".join(map(str, info["channels"])) or "-",
                     ",".join(info["dtypes"]) or "-"])
    return _table(rows, right={1, 2})


def _label_lines(label: dict) -> list[str]:
    mode = label["mode"]
    void = "no void" if mode == "instance" else f"ignore value {label['ignore_index']}"
    lines = [f"Labels: {mode}, {label['num_labels']} classes, {void}"]
    counts = label["pixel_counts"]
    if not counts:
        return lines
    splits = list(counts)
    total = np.sum([counts[s] for s in splits], axis=0)
    columns = splits + (["total"] if len(splits) > 1 else [])
    data = [np.asarray(counts[s]) for s in splits] + ([total] if len(splits) > 1 else [])
    names = [f"{i} {n}" for i, n in enumerate(label["class_names"])] + ["ignore"]
    if label["palette"]:
        names = [f"{nm} {tuple(c)}" for nm, c in zip(names, label["palette"])] + ["ignore"]
    rows = [["class"] + [f"{c} %" for c in columns]]
    if not total[-1]:  # no void pixels anywhere: no ignore row
        names = names[:-1]
    for i, name in enumerate(names):
        rows.append([name] + [f"{100.0 * col[i] / max(col.sum(), 1):.2f}" for col in data])
    return lines + _table(rows, right=set(range(1, len(columns) + 1)))


def format_report(report: DatasetReport, max_problems: int | None = 100) -> str:
    """Human-readable summary of a :class:`DatasetReport`.

    Args:
        report: Output of :func:`check_dataset`.
        max_problems: Show at most this many problems (None: all).

    Returns:
        Multi-line text: splits table (pairs, sizes, channels, dtypes), label
        mode and per-class pixel percentages (incl. ignore), warnings, and
        either "OK" or the numbered list of problems.
    """
    summary = report.summary
    lines = [f"Dataset: {summary['root']}"]
    if summary["splits"]:
        lines += _split_lines(summary)
    if summary["label"]:
        lines += _label_lines(summary["label"])
    if summary.get("objects"):
        lines.append("Objects (distinct ids in the instance maps): " + ", ".join(
            f"{split} {o['objects']} in {o['maps']} map{'s' * (o['maps'] != 1)}"
            for split, o in summary["objects"].items()))
    if report.warnings:
        lines.append(f"Warnings ({len(report.warnings)}):")
        lines += [f"  - {w}" for w in report.warnings]
    if report.ok:
        lines.append("OK: no problems found.")
        return "\n".join(lines)
    shown = report.problems if max_problems is None else report.problems[:max_problems]
    lines.append(f"{len(report.problems)} problem{'s' * (len(report.problems) != 1)} found:")
    lines += [f"  {i}. {p}" for i, p in enumerate(shown, 1)]
    if len(shown) < len(report.problems):
        lines.append(f"  ... and {len(report.problems) - len(shown)} more.")
    return "\n".join(lines)
