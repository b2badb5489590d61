"""Listing dataset folders and matching file names: the pieces every layout
finder (:mod:`unet_tf.data.layouts`, :mod:`unet_tf.data.special_layouts`) uses.

Folder names are compared case-insensitively; hidden files and folders are
skipped. Nothing here reads pixels.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Sequence

from .samples import IMAGE_EXTENSIONS, natural_key

__all__ = ["alias_dir", "child_dirs", "list_files", "match_numbers", "strip_suffix", "unique_files"]

IMAGE_DIR_NAMES = ("images", "image", "imgs", "img", "inputs", "input", "jpegimages")
MASK_DIR_NAMES = ("masks", "mask", "labels", "label", "annotations", "annotation",
                  "gt", "groundtruth", "ground_truth", "segmentationclass")
# Pascal VOC's split lists: root/ImageSets/Segmentation/<split>.txt, one name per line.
SPLIT_LIST_DIR = ("imagesets", "segmentation")
INSTANCE_DIR_NAMES = ("instances", "instance")
SPLIT_ALIASES = {
    "train": ("train", "training"),
    "val": ("val", "valid", "validation"),
    "test": ("test", "testing"),
}
SPLIT_ORDER = ("train", "val", "test", "all")
# Suffix words a mask/instance/image stem may carry after a separator.
MASK_SUFFIXES = ("mask", "masks", "label", "labels", "gt", "seg", "segmentation",
                 "annotation", "annotations", "anno", "target", "l", "groundtruth",
                 "ground_truth")
INSTANCE_SUFFIXES = ("instance", "instances", "inst", "ids", "id", "mask", "masks",
                     "label", "labels")
IMAGE_SUFFIXES = ("img", "image", "im", "input", "sat", "rgb", "raw")
SEPARATORS = "_-. "


def child_dirs(folder: Path) -> dict[str, Path]:
    """Visible sub-folders keyed by lower-case name."""
    try:
        return {p.name.lower(): p for p in sorted(folder.iterdir())
                if p.is_dir() and not p.name.startswith((".", "__"))}
    except OSError:
        return {}


def alias_dir(folder: Path, aliases: Sequence[str], what: str,
              problems: list[str]) -> Path | None:
    """The one sub-folder named like ``aliases``; a problem if several are.

    Folders without any image file do not count (Pascal VOC's Annotations/
    holds XML next to SegmentationClass/).
    """
    found = [d for name, d in child_dirs(folder).items() if name in aliases]
    if len(found) > 1:
        found = [d for d in found if holds_images(d)] or found
    if len(found) > 1:
        names = ", ".join(f"{d.name}/" for d in found)
        problems.append(f"{folder}: several {what} folders ({names}); keep exactly one.")
    return found[0] if found else None


# Words in longer folder names: "ISIC2018_Task1-2_Training_Input" holds images,
# "ISIC2018_Task1_Training_GroundTruth" or DRIVE's "1st_manual" the masks.


def list_files(folder: Path, warnings: list[str]) -> dict[str, Path]:
    """Image files below ``folder`` keyed by relative path without extension.

    Hidden files (".DS_Store", "._x.png" AppleDouble) are skipped; other
    unsupported files produce one warning.
    """
    files, skipped = {}, Counter()
    for path in sorted(folder.rglob("*"), key=lambda p: natural_key(str(p))):
        rel = path.relative_to(folder)
        if any(part.startswith(".") or part == "__MACOSX" for part in rel.parts):
            continue
        if not path.is_file():
            continue
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            skipped[path.suffix.lower() or "(no extension)"] += 1
            continue
        key = rel.with_suffix("").as_posix()
        files.setdefault(key, []).append(path)
    if skipped:
        kinds = ", ".join(f"{ext} x{n}" for ext, n in skipped.most_common())
        warnings.append(f"{folder}: ignored {sum(skipped.values())} files with unsupported "
                        f"extensions ({kinds}); convert them to PNG or TIFF to use them.")
    return files


def unique_files(files: dict[str, list[Path]], problems: list[str]) -> dict[str, Path]:
    """{key: path} from :func:`list_files`; a key with several files is a problem."""
    out = {}
    for key, paths in files.items():
        if len(paths) > 1:
            names = ", ".join(str(p) for p in paths)
            problems.append(f"ambiguous files {names}: same name, different extensions; "
                            "keep one of them.")
        else:
            out[key] = paths[0]
    return out


def strip_suffix(key: str, words: Sequence[str]) -> str | None:
    """``key`` without a trailing separator + known word, if it has one."""
    low = key.lower()
    for word in sorted(words, key=len, reverse=True):
        if len(low) > len(word) + 1 and low.endswith(word) and low[-len(word) - 1] in SEPARATORS:
            return key[:-len(word) - 1]
    return None


def match_numbers(image_keys: Sequence[str], other_keys: Sequence[str],
                  every_image: bool = True) -> dict[str, str]:
    """{other: image} by the last (else the first) number in each name
    (t000 <- man_seg000, as the cell tracking challenge names them), when that
    number is unique on both sides and every image finds its mask (or, with
    ``every_image=False``, every mask its image: sparse ground truth); else {}."""
    def numbers(keys, which):
        found = {}
        for key in keys:
            digits = re.findall(r"\d+", key.rsplit("/", 1)[-1])
            if not digits:
                return None
            found.setdefault(int(digits[which]), []).append(key)
        return None if any(len(v) > 1 for v in found.values()) else {n: v[0] for n, v in found.items()}

    for which in (-1, 0):  # the last number, else the first (DRIVE: 21_training <- 21_manual1)
        imgs, others = numbers(image_keys, which), numbers(other_keys, which)
        if imgs and others and (set(imgs) <= set(others) if every_image else set(others) <= set(imgs)):
            return {others[n]: imgs[n] for n in imgs if n in others}
    return {}


def holds_images(folder: Path) -> bool:
    """Any image file in ``folder`` or below."""
    return any(p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file() for p in folder.rglob("*"))


def has_images(folder: Path) -> bool:
    """Any image file directly in ``folder``."""
    return any(p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS for p in folder.iterdir())
