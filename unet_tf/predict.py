"""Files in, files out: ``unet-tf predict`` as a library function.

``predict_files`` writes, per input image, ``<stem>.png`` (the label mask in
the training masks' encoding: 0/255 for binary models, the class colours or
grey levels for colour- or grey-coded masks, class indices otherwise),
``<stem>_overlay.png``, and with ``probabilities=True`` ``<stem>_prob.npy``
(float32, H x W x classes). With ``instances=True`` also
``<stem>_instances.png`` (16-bit object ids, 0 = background; see
:func:`unet_tf.objects.to_instances`) and ``<stem>_instances_overlay.png``
(each object outlined in its own colour).
"""
from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np

from . import objects, plots
from .data.images import read_image
from .data.layouts import find_samples
from .data.samples import IMAGE_EXTENSIONS
from .errors import DatasetError
from .files import atomic_write
from .inference import predict_tiled, prepare_image, to_labels
from .runtimes import load_runtime

__all__ = ["INSTANCE_METHODS", "check_instance_options", "predict_files", "write_instances"]

#: ``to_instances`` methods: split touching objects, or connected components only.
INSTANCE_METHODS = ("watershed", "components")


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
                             if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS):
            items += [(p, None, p.stem) for p in found]
        else:
            items += _dataset_images(path)
    return _unique_names(items)


def _dataset_images(folder: Path) -> list[tuple[Path, int | None, str]]:
    splits = find_samples(folder, strict=False, keep_unlabelled=True)
    prefix = len(splits) > 1  # names are only unique within a split
    items = [(s.image_path, s.page, f"{split}/{s.name}" if prefix else s.name)
             for split, samples in splits.items() for s in samples]
    if not items:  # no layout: every image file below the folder
        items = [(p, None, p.relative_to(folder).with_suffix("").as_posix())
                 for p in sorted(folder.rglob("*"))
                 if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                 and not any(part.startswith(".") for part in p.relative_to(folder).parts)]
    if not items:
        raise FileNotFoundError(f"{folder}: no image files ({', '.join(IMAGE_EXTENSIONS)}) "
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


def check_instance_options(min_size, seed_distance, method) -> None:
    """Refuses instance parameters ``to_instances`` cannot use, naming the option.

    Raises:
        ValueError: ``min_size`` < 0, ``seed_distance`` < 1 or an unknown method.
    """
    if not isinstance(min_size, (int, np.integer)) or isinstance(min_size, bool) or min_size < 0:
        raise ValueError(f"min_size must be a whole number of pixels >= 0; got {min_size!r}")
    if not seed_distance >= 1:
        raise ValueError(f"seed_distance must be at least 1 (pixels); got {seed_distance!r}")
    if method not in INSTANCE_METHODS:
        raise ValueError(f"instance_method must be one of {', '.join(INSTANCE_METHODS)}; "
                         f"got {method!r}")


def write_instances(path: Path, instances: np.ndarray, name: str = "") -> None:
    """An instance map as a 16-bit PNG (0 = background).

    Raises:
        DatasetError: More objects than 16 bits hold.
    """
    if instances.size and int(instances.max()) > 65535:
        raise DatasetError(f"{name or path}: {objects.count_objects(instances)} objects, more "
                           "than a 16-bit PNG holds (65535)")
    plots.write_png(path, instances.astype(np.uint16))


def predict_files(model, inputs, out, *, tile_size=None, batch_size=4, threshold=0.5, tta=False,
                  probabilities=False, overlays=True, progress=False, instances=False,
                  min_size=15, seed_distance=5.0, instance_method="watershed") -> list[Path]:
    """Segment image files and write masks (and overlays, probabilities) into ``out``.

    Args:
        model: A ``.keras`` file, run folder, SavedModel folder, ``.tflite`` file
            or a loaded Keras model / :class:`~unet_tf.runtimes.Runtime`.
        inputs: Image files and folders (see :func:`_collect`).
        out: Output folder.
        tile_size, batch_size, tta: Tiled inference (see ``predict_tiled``).
        threshold: Foreground probability of binary models.
        probabilities: Also write ``<stem>_prob.npy``.
        overlays: Also write the overlays (``<stem>_overlay.png`` and, with
            ``instances``, ``<stem>_instances_overlay.png``).
        progress: Show a progress bar on stderr.
        instances: Also write ``<stem>_instances.png``: object ids from
            :func:`unet_tf.objects.to_instances` (binary models: components cut
            by a seeded watershed; multi-class models: instances per class).
        min_size: Smallest object kept, in pixels (smaller ones merge or go).
        seed_distance: Distance maxima closer than this (px) seed one object.
        instance_method: ``"watershed"`` or ``"components"`` (no splitting).

    Returns:
        The mask paths. Unreadable files are reported together at the end
        (``unet_tf.errors.DatasetError``), after every readable one is written.

    Raises:
        ValueError: Bad instance parameters (before any model is loaded).
    """
    if instances:
        check_instance_options(min_size, seed_distance, instance_method)
    runtime = load_runtime(model)
    items = _collect(inputs)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    colors = plots.class_colors(max(2, runtime.num_classes), runtime.palette)
    written, problems = [], []

    def run(items):
        for path, page, stem in items:
            try:
                raw = read_image(path, page)
                image = prepare_image(raw, runtime.in_channels, runtime.input_scale,
                                      runtime.normalisation, str(path))
            except DatasetError as err:
                problems.append(str(err))
                continue
            (out / stem).parent.mkdir(parents=True, exist_ok=True)
            probs = predict_tiled(runtime, image, tile_size=tile_size, batch_size=batch_size, tta=tta)
            labels = to_labels(probs, threshold)
            mask_path = out / f"{stem}.png"
            plots.write_png(mask_path, _mask_image(labels, runtime.num_classes, runtime.palette))
            if overlays:
                plots.write_png(out / f"{stem}_overlay.png", plots.overlay(raw, labels, colors))
            if instances:
                found = objects.to_instances(probs, threshold=threshold, min_size=min_size,
                                             seed_distance=seed_distance, method=instance_method)
                write_instances(out / f"{stem}_instances.png", found, str(path))
                if overlays:
                    plots.write_png(out / f"{stem}_instances_overlay.png",
                                    objects.outline_overlay(plots.to_uint8(raw), found))
            if probabilities:
                buffer = io.BytesIO()
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
        raise DatasetError(problems)
    return written
