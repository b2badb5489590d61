"""Files in, files out: ``unet-tf predict`` and ``unet-tf evaluate`` as library functions.

``predict_files`` writes, per input image, ``<stem>.png`` (the label mask in
the training masks' encoding: 0/255 for binary models, the class colours or
grey levels for colour- or grey-coded masks, class indices otherwise),
``<stem>_overlay.png``, and with ``probabilities=True`` ``<stem>_prob.npy``
(float32, H x W x classes).

``evaluate_folder`` scores a model on a labelled dataset folder: per-class
dice and IoU, pixel accuracy, and for binary (instance-style) data the object
counts at IoU 0.5: matched, split, merged, missed, plus false positives.
"""
from __future__ import annotations

import io as io_bytes
import json
import sys
from pathlib import Path

import cv2
import numpy as np

from . import io, plots
from .files import atomic_write, atomic_write_json
from .inference import load_runtime, predict_tiled, prepare_image, to_labels
from .metrics import PixelCounts

__all__ = ["resolve_model", "collect_images", "predict_files", "object_counts", "evaluate_folder",
           "format_evaluation"]


def resolve_model(model) -> object:
    """A run folder means its ``best.keras``; anything else goes to ``load_runtime`` as is."""
    if isinstance(model, (str, Path)):
        path = Path(model)
        if path.is_dir() and (path / "best.keras").is_file():
            return path / "best.keras"
    return model


def collect_images(inputs) -> list[Path]:
    """Image files from files and folders (see :func:`_collect`)."""
    return [path for path, _, _ in _collect(inputs)]


def _collect(inputs) -> list[tuple[Path, int | None, str]]:
    """``(file, TIFF page or None, output name)`` for every image to segment.

    A folder with image files in it gives those files (sorted, not recursive).
    Any other folder is read as a dataset (every layout ``check-data`` knows:
    images/ + masks/, split folders, one folder per sample or per patient,
    TIFF stacks), and its images are segmented, labelled or not, never its
    masks; output names keep the sample names, sub-folders included. A
    folder with no known layout gives every image file below it.
    """
    items = []
    for entry in inputs:
        path = Path(entry)
        if path.is_file():
            items.append((path, None, path.stem))
        elif not path.is_dir():
            raise FileNotFoundError(f"{path}: no such file or folder")
        elif found := sorted(p for p in path.iterdir()
                             if p.is_file() and p.suffix.lower() in io.IMAGE_EXTENSIONS):
            items += [(p, None, p.stem) for p in found]
        else:
            items += _dataset_images(path)
    return _unique_names(items)


def _dataset_images(folder: Path) -> list[tuple[Path, int | None, str]]:
    splits = io.find_samples(folder, strict=False, keep_unlabelled=True)
    prefix = len(splits) > 1  # names are only unique within a split
    items = [(s.image_path, s.page, f"{split}/{s.name}" if prefix else s.name)
             for split, samples in splits.items() for s in samples]
    if not items:  # no layout: every image file below the folder
        items = [(p, None, p.relative_to(folder).with_suffix("").as_posix())
                 for p in sorted(folder.rglob("*"))
                 if p.is_file() and p.suffix.lower() in io.IMAGE_EXTENSIONS
                 and not any(part.startswith(".") for part in p.relative_to(folder).parts)]
    if not items:
        raise FileNotFoundError(f"{folder}: no image files ({', '.join(io.IMAGE_EXTENSIONS)}) "
                                "and no dataset layout with images in it")
    return [(path, page, name.replace("[", "_").replace("]", "")) for path, page, name in items]


def _unique_names(items):
    seen: dict[str, int] = {}
    out = []
    for path, page, name in items:
        n = seen.get(name, 0)
        seen[name] = n + 1
        out.append((path, page, name if n == 0 else f"{name}_{n}"))
    return out


def _mask_image(labels: np.ndarray, num_classes: int, palette=None) -> np.ndarray:
    """Predicted classes in the training masks' encoding: 0/255 for binary
    models, the class colours (or grey levels) for colour-coded training
    masks, class indices otherwise."""
    if num_classes == 1:
        return (labels * 255).astype(np.uint8)
    if palette:
        lut = np.asarray(palette, np.uint8)
        return lut[labels, 0] if plots.is_grey_palette(palette) else lut[labels]
    return labels


def predict_files(model, inputs, out, *, tile_size=None, batch_size=4, threshold=0.5, tta=False,
                  probabilities=False, overlays=True, progress=False) -> list[Path]:
    """Segment image files and write masks (and overlays, probabilities) into ``out``.

    Returns the mask paths. Unreadable files are reported together at the end
    (``unet_tf.io.DatasetError``), after every readable one is written.
    """
    runtime = load_runtime(resolve_model(model))
    items = _collect(inputs)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    colors = plots.class_colors(max(2, runtime.num_classes), runtime.palette)
    written, problems = [], []

    def run(items):
        for path, page, stem in items:
            try:
                raw = io.read_image(path, page)
            except io.DatasetError as err:
                problems.append(str(err))
                continue
            (out / stem).parent.mkdir(parents=True, exist_ok=True)
            probs = predict_tiled(runtime, prepare_image(raw, runtime.in_channels, runtime.input_scale),
                                  tile_size=tile_size, batch_size=batch_size, tta=tta)
            labels = to_labels(probs, threshold)
            mask_path = out / f"{stem}.png"
            plots.write_png(mask_path, _mask_image(labels, runtime.num_classes, runtime.palette))
            if overlays:
                plots.write_png(out / f"{stem}_overlay.png", plots.overlay(raw, labels, colors))
            if probabilities:
                buffer = io_bytes.BytesIO()
                np.save(buffer, probs)
                atomic_write(out / f"{stem}_prob.npy", buffer.getvalue())
            written.append(mask_path)

    if progress:
        import click
        with click.progressbar(items, label="Predicting", file=sys.stderr,
                               item_show_func=lambda x: x[2] if x else "") as bar:
            run(bar)
    else:
        run(items)
    if problems:
        raise io.DatasetError(problems)
    return written


# --------------------------------------------------------------------------- objects
def _components(mask: np.ndarray) -> np.ndarray:
    return cv2.connectedComponents(mask.astype(np.uint8), connectivity=4)[1].astype(np.int64)


def object_counts(truth: np.ndarray, pred: np.ndarray, iou_threshold: float = 0.5) -> dict:
    """Object-level counts between two instance maps (0 = background).

    Every true object is exactly one of: ``matched`` (a predicted object has
    IoU >= the threshold with it), ``merged`` (a predicted object covers most
    of it and most of another true object), ``split`` (two or more predicted
    objects lie mostly inside it), or ``missed``. ``false_positives`` counts
    predicted objects lying mostly on background.
    """
    truth = truth.astype(np.int64)
    pred = pred.astype(np.int64)
    nt, np_ = int(truth.max()) + 1, int(pred.max()) + 1
    overlap = np.bincount((truth * np_ + pred).ravel(), minlength=nt * np_).reshape(nt, np_)
    t_area, p_area = overlap.sum(1), overlap.sum(0)
    inter = overlap[1:, 1:].astype(np.float64)
    union = t_area[1:, None] + p_area[None, 1:] - inter
    iou = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
    covers = inter > 0.5 * t_area[1:, None]           # pred j holds most of true i
    inside = inter > 0.5 * p_area[None, 1:]           # pred j lies mostly in true i
    counts = dict(true_objects=nt - 1, predicted_objects=np_ - 1, matched=0, merged=0, split=0, missed=0)
    for i in range(nt - 1):
        if iou.shape[1] and iou[i].max() >= iou_threshold:
            counts["matched"] += 1
        elif any(covers[i, j] and covers[:, j].sum() >= 2 for j in range(np_ - 1)):
            counts["merged"] += 1
        elif inside[i].sum() >= 2:
            counts["split"] += 1
        else:
            counts["missed"] += 1
    counts["false_positives"] = int((overlap[0, 1:] > 0.5 * p_area[1:]).sum())
    return counts


# --------------------------------------------------------------------------- evaluate
def _held_out(model, data, splits: dict) -> list:
    """The images a run held out for validation, when ``model`` is that run's
    model and ``data`` its dataset without a val split (same fraction, same seed)."""
    if "val" in splits or not isinstance(model, (str, Path)):
        return []
    config_path = Path(model).parent / "config.json"
    try:
        config = json.loads(config_path.read_text())
        same = Path(config["data"]).resolve() == Path(data).resolve()
    except (OSError, ValueError, KeyError, TypeError):
        return []
    pool = splits.get("train") or splits.get("all") or []
    if not same or len(pool) < 2 or not config.get("val_fraction"):
        return []
    return io.split_samples(pool, float(config["val_fraction"]), int(config.get("seed", 0)))[1]


def _pick_split(splits: dict, split: str | None, held_out: list = ()) -> tuple[str, list]:
    if split == "all":
        return "all", [s for group in splits.values() for s in group if s.mask_path is not None]
    labelled_test = any(s.mask_path is not None for s in splits.get("test", []))
    if held_out and (split == "val" or (split is None and not labelled_test)):
        return "held-out val", list(held_out)
    order = [split] if split else ["test", "val", "all", "train"]
    for name in order:
        samples = [s for s in splits.get(name, []) if s.mask_path is not None]
        if samples:
            return name, samples
    raise io.DatasetError(f"no labelled images in split {split or 'test/val/all'}; "
                          f"available: {sorted(splits)}")


def evaluate_folder(model, data, *, split=None, out=None, tile_size=None, threshold=0.5,
                    tta=False) -> dict:
    """Score a model on a labelled dataset folder; writes and returns the JSON report."""
    model = resolve_model(model)
    runtime = load_runtime(model)
    splits, spec = io.load_dataset(data, num_classes=runtime.num_classes if runtime.num_classes > 1 else None)
    split_name, samples = _pick_split(splits, split, _held_out(model, data, splits))
    counts = PixelCounts(runtime.num_classes)
    objects = None
    per_image = []
    for sample in samples:
        raw, truth = io.load_sample(sample, spec)
        probs = predict_tiled(runtime, prepare_image(raw, runtime.in_channels, runtime.input_scale),
                              tile_size=tile_size, tta=tta)
        pred = to_labels(probs, threshold).astype(np.int64)
        valid = truth != spec.ignore_index
        try:
            img_tp = counts.add(truth, pred, valid)
        except ValueError as err:
            raise io.DatasetError(f"{sample.mask_path}: {err}") from None
        entry = {"name": sample.name, "pixel_accuracy": float(img_tp.sum() / max(valid.sum(), 1))}
        if runtime.num_classes == 1:
            true_inst = (io.read_instances(sample.instance_path, sample.page)
                         if sample.instance_path else _components((truth == 1) & valid))
            found = object_counts(true_inst, _components((pred == 1) & valid))
            entry["objects"] = found
            objects = found if objects is None else {key: objects[key] + found[key] for key in found}
        per_image.append(entry)
    result = {
        "model": str(model), "data": str(data), "split": split_name, "images": len(samples),
        "class_names": spec.class_names, **counts.scores(),
        "objects": objects, "per_image": per_image,
    }
    report_path = Path(out) if out else (Path(model).parent if isinstance(model, (str, Path))
                                         else Path(".")) / "evaluation.json"
    report_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(report_path, result)
    result["report_path"] = str(report_path)
    return result


def format_evaluation(result: dict) -> str:
    """The evaluation as a table: one row per class, then the totals and object counts."""
    names = result["class_names"] or [str(i) for i in range(len(result["dice_per_class"]))]
    fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    width = max(len("class"), *(len(n) for n in names))
    lines = [f"{result['images']} images ({result['split']})", f"{'class'.ljust(width)}  dice    IoU"]
    for name, d, i in zip(names, result["dice_per_class"], result["iou_per_class"]):
        lines.append(f"{name.ljust(width)}  {fmt(d)}  {fmt(i)}")
    lines.append(f"{'mean'.ljust(width)}  {fmt(result['dice'])}  {fmt(result['mean_iou'])}")
    lines.append(f"pixel accuracy {fmt(result['pixel_accuracy'])}")
    if result.get("objects"):
        o = result["objects"]
        lines.append("objects (IoU 0.5): " + ", ".join(f"{k} {o[k]}" for k in
                     ("true_objects", "matched", "split", "merged", "missed", "false_positives")))
    return "\n".join(lines)
