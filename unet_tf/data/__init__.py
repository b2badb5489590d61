"""Datasets: from files on disk (or arrays) to ``tf.data`` pipelines.

The modules, lowest first (each imports only those before it)::

    samples          Sample, IMAGE_EXTENSIONS and the other shared constants
    images           reading image files as stored (pages, PNG headers, EXIF)
    labels           LabelSpec, mask encodings, classes.json / class_dict.csv
    folders          listing dataset folders, matching file names
    special_layouts  TIFF stacks, tracking sequences, sample folders, VOC lists
    layouts          find_samples: which files are the images, masks, instances
    label_inference  infer_label_spec: how the masks encode classes
    check            check_dataset, format_report, load_dataset
    split            the validation split (split_samples, train_and_val)
    augment          elastic deformation and the paper's augmentations
    weights          the U-Net weight map
    synthetic        the built-in synthetic cell images (write_dataset)
    pipeline         load_data, train_dataset, val_dataset (TensorFlow)
    scan             image sizes from file headers, the quick check of a streamed folder
    shards           TFRecord shards: pack, dataset.json, records (TensorFlow)
    streaming        open_data: in memory or streamed, from a folder or shards (TensorFlow)

Everything but ``pipeline`` is numpy + OpenCV: importing this package does not
import TensorFlow; the ``pipeline`` names below are loaded on first use::

    from unet_tf.data import load_data, train_dataset, check_dataset
"""
from __future__ import annotations

import importlib

from ..errors import DatasetError
from .check import DatasetReport, check_dataset, format_report, load_dataset
from .images import read_image
from .label_inference import infer_label_spec
from .labels import LabelSpec, decode_mask, load_mask, load_sample, read_instances, read_mask_raw
from .layouts import find_samples
from .samples import IMAGE_EXTENSIONS, Sample
from .split import split_samples, train_and_val

# tf.data names, imported from .pipeline (and so TensorFlow) on first access.
_PIPELINE = ("DataBundle", "Item", "WeightMapConfig", "input_scale_for", "load_arrays",
             "load_data", "reopen_gaps", "steps_per_epoch", "tile_geometry", "train_dataset",
             "val_dataset", "val_tiles")
_SUBMODULES = ("augment", "check", "folders", "images", "label_inference", "labels", "layouts",
               "pipeline", "samples", "scan", "shards", "special_layouts", "split", "streaming",
               "synthetic", "weights")
# Larger-than-memory data (unet_tf.data.streaming), imported on first access.
_STREAMING = ("open_data", "StreamBundle", "StreamedItems")

__all__ = [
    "DataBundle", "DatasetError", "DatasetReport", "IMAGE_EXTENSIONS", "Item", "LabelSpec",
    "Sample", "WeightMapConfig", "check_dataset", "decode_mask", "find_samples",
    "format_report", "infer_label_spec", "input_scale_for", "load_arrays", "load_data",
    "load_dataset", "load_mask", "load_sample", "read_image", "read_instances",
    "read_mask_raw", "reopen_gaps", "split_samples", "steps_per_epoch", "tile_geometry",
    "train_and_val", "train_dataset", "val_dataset", "val_tiles",
    "open_data", "StreamBundle", "StreamedItems",
]


def __getattr__(name: str):
    if name in _PIPELINE:
        return getattr(importlib.import_module(f"{__name__}.pipeline"), name)
    if name in _STREAMING:
        return getattr(importlib.import_module(f"{__name__}.streaming"), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_PIPELINE) | set(_STREAMING) | set(_SUBMODULES))
