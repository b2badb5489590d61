"""What a dataset sample is, and the constants the dataset modules share.

A :class:`Sample` names the files of one image: its image, its mask and its
instance map (each optional but the image), and the page for a slice of a
multi-page TIFF stack. Layout discovery (:mod:`unet_tf.data.layouts`) makes
them; reading (:mod:`unet_tf.data.images`, :mod:`unet_tf.data.labels`) and
checking (:mod:`unet_tf.data.check`) use them. Pure Python: no numpy needed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["IMAGE_EXTENSIONS", "Sample", "natural_key"]

# GIF is not in the documented list but OpenCV reads it and Carvana ships GIF masks.
IMAGE_EXTENSIONS = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp", ".gif")
MAX_MASK_VALUES = 1024          # more distinct values than this is not a label mask
MAX_CLASSES = 1024              # most classes a class file may list (as --num-classes)
CLASSES_FILE = "classes.json"
CLASS_DICT_FILE = "class_dict.csv"  # CamVid / DeepGlobe: name,r,g,b per class
# class_dict.csv has no ignore column: classes with these names become void.
VOID_CLASS_NAMES = ("void", "unlabelled", "unlabeled", "ignore")
CLASSES_HINT = 'expected [{"name": "road", "color": [128, 64, 128]}, ...]'
LOSSY_EXTENSIONS = (".jpg", ".jpeg")
LOSSY_HINT = " JPEG compression alters mask values; save masks as PNG."


@dataclass(frozen=True)
class Sample:
    """One image with its (optional) mask and instance map.

    ``name`` is unique within a split: the file stem, the path relative to the
    images folder without extension for nested folders ("patient1/slice3"), or
    "<volume stem>[<page>]" for a page of a multi-page TIFF stack.
    """

    name: str
    image_path: Path
    mask_path: Path | None
    instance_path: Path | None = None
    page: int | None = None


def natural_key(text: str) -> list:
    """Sort key that orders "img2" before "img10" (case-insensitive)."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", text)]
