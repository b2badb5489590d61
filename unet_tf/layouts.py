"""Dataset layouts: which files on disk are the images, masks and instance maps.

Everything ``unet-tf check-data`` recognises, detected automatically (folder
names case-insensitive)::

    root/images/*.png + root/masks/*.png         -> {"all": [...]}
    root/{train,val,test}/images + .../masks     -> {"train": ..., "val": ..., "test": ...}
    root/images/{train,val}/ + root/masks/{train,val}/   (split inside the folders)
    root/train-volume.tif + root/train-labels.tif (ISBI 2012 multi-page stacks)
    root/{train,val,test}/*.png + root/{train,val,test}_labels/*.png  (CamVid; also
        trainannot/, train_masks/), colours from class_dict.csv or classes.json
    root/**/a.tif + root/**/a_mask.tif           (side by side, e.g. one folder per patient)
    root/01/t000.tif + root/01_GT/SEG/man_seg000.tif  (cell tracking challenge sequences)
    root/<id>/images/<id>.png + root/<id>/masks/*.png  (one folder per sample, one binary
        mask per object: Data Science Bowl 2018; the masks also give the instances)
    root/JPEGImages + root/SegmentationClass (Pascal VOC; ImageSets/Segmentation/
        train.txt and val.txt, when present, choose the samples and the split)
    folders named in longer words: ..._Training_Input + ..._Training_GroundTruth (ISIC),
        images/ + 1st_manual/ (DRIVE)

Discovery never reads pixels (only TIFF page counts); :mod:`unet_tf.io`
reads, decodes and validates what is found here. Every guess that is not
certain is reported as a warning, every failure as a problem naming the file.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .io import (CLASS_DICT_FILE, CLASSES_FILE, IMAGE_EXTENSIONS, DatasetError, Sample,
                 _natural_key, _page_count, _unreadable)

__all__ = ["find_samples", "split_samples"]

logger = logging.getLogger(__name__)

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
_STACK_RE = re.compile(r"^(?P<prefix>.*?)[-_](?P<kind>volume|labels?|masks?|instances?)$",
                       re.IGNORECASE)

def _child_dirs(folder: Path) -> dict[str, Path]:
    """Visible sub-folders keyed by lower-case name."""
    try:
        return {p.name.lower(): p for p in sorted(folder.iterdir())
                if p.is_dir() and not p.name.startswith((".", "__"))}
    except OSError:
        return {}


def _alias_dir(folder: Path, aliases: Sequence[str], what: str,
               problems: list[str]) -> Path | None:
    """The one sub-folder named like ``aliases``; a problem if several are.

    Folders without any image file do not count (Pascal VOC's Annotations/
    holds XML next to SegmentationClass/).
    """
    found = [d for name, d in _child_dirs(folder).items() if name in aliases]
    if len(found) > 1:
        found = [d for d in found if _holds_images(d)] or found
    if len(found) > 1:
        names = ", ".join(f"{d.name}/" for d in found)
        problems.append(f"{folder}: several {what} folders ({names}); keep exactly one.")
    return found[0] if found else None


# Words in longer folder names: "ISIC2018_Task1-2_Training_Input" holds images,
# "ISIC2018_Task1_Training_GroundTruth" or DRIVE's "1st_manual" the masks.
_IMAGE_WORDS = ("images", "image", "imgs", "img", "input", "inputs", "jpegimages")
_MASK_WORDS = ("groundtruth", "gt", "manual", "labels", "label", "annotations", "annotation",
               "segmentation", "seg", "segmentationclass", "masks", "mask")
_WEAK_MASK_WORDS = ("masks", "mask")  # DRIVE's mask/ is the field of view, not the labels
_TRUTH_WORDS = ("groundtruth", "gt", "manual", "truth")


def _words(name: str) -> set[str]:
    return set(re.split(r"[^a-z0-9]+", name.lower())) - {""}


def _described_dirs(folder: Path, img_dir: Path | None, mask_dir: Path | None,
                    warnings: list[str]) -> tuple[Path | None, Path | None]:
    """Image and mask folders found by the words in their names, where the
    exact names (images/, masks/) are missing or only a weak "mask" folder
    competes with a clearer one ("1st_manual", "..._GroundTruth")."""
    children = {n: d for n, d in _child_dirs(folder).items()  # not "01_GT" beside "01" (CTC)
                if not (n[-3:] in ("_gt", "_st") and n[:-3] in _child_dirs(folder))}
    strong = sorted((d for d in children.values() if d != img_dir
                     and _words(d.name) & set(_TRUTH_WORDS)), key=lambda d: _natural_key(d.name))
    if mask_dir is not None and mask_dir.name.lower() in _WEAK_MASK_WORDS and strong:
        others = f" (also found: {', '.join(d.name + '/' for d in strong[1:])})" if strong[1:] else ""
        warnings.append(f"{folder}: using {strong[0].name}/ as the masks, not {mask_dir.name}/ "
                        f"(e.g. a field-of-view mask){others}; rename the folders if that is wrong.")
        mask_dir = strong[0]
    if img_dir is None or mask_dir is None:
        images, masks = _word_dirs(children)
        if img_dir is None and len(images) == 1:
            img_dir = images[0]
            warnings.append(f"{folder}: reading images from {img_dir.name}/ (by its name).")
        if mask_dir is None and len(masks) == 1 and masks[0] != img_dir:
            mask_dir = masks[0]
            warnings.append(f"{folder}: reading masks from {mask_dir.name}/ (by its name).")
    return img_dir, mask_dir


def _word_dirs(children: dict[str, Path]) -> tuple[list[Path], list[Path]]:
    """Sub-folders whose names hold image words, and those holding mask words."""
    images = [d for d in children.values() if _words(d.name) & set(_IMAGE_WORDS)
              and not _words(d.name) & set(_MASK_WORDS)]
    masks = [d for d in children.values() if _words(d.name) & set(_MASK_WORDS)]
    return images, masks


def _split_word_pairs(folder: Path) -> dict[str, tuple[Path, Path | None]]:
    """{split: (images, masks or None)} for image and mask folders told apart
    by a split word (ISIC: ..._Training_Input + ..._Training_GroundTruth,
    ..._Validation_Input + ..._Validation_GroundTruth); {} otherwise."""
    images, masks = _word_dirs(_child_dirs(folder))
    if len(images) < 2:
        return {}

    def split_of(d: Path) -> str | None:
        found = {s for s, aliases in SPLIT_ALIASES.items() if _words(d.name) & set(aliases)}
        return found.pop() if len(found) == 1 else None

    img_by = {split_of(d): d for d in images}
    mask_by = {split_of(d): d for d in masks}
    if None in img_by or len(img_by) != len(images) or None in mask_by or len(mask_by) != len(masks) \
            or not set(mask_by) <= set(img_by) or "train" not in mask_by:
        return {}
    return {s: (d, mask_by.get(s)) for s, d in img_by.items()}


def _split_dirs(folder: Path, problems: list[str]) -> dict[str, Path]:
    """Split sub-folders (train/val/test and aliases) keyed by canonical name."""
    children = _child_dirs(folder)
    out = {}
    for split, aliases in SPLIT_ALIASES.items():
        found = [children[a] for a in aliases if a in children]
        if len(found) > 1:
            names = ", ".join(f"{d.name}/" for d in found)
            problems.append(f"{folder}: several {split} folders ({names}); keep exactly one.")
        if found:
            out[split] = found[0]
    return out


def _list_files(folder: Path, warnings: list[str]) -> dict[str, Path]:
    """Image files below ``folder`` keyed by relative path without extension.

    Hidden files (".DS_Store", "._x.png" AppleDouble) are skipped; other
    unsupported files produce one warning.
    """
    files, skipped = {}, Counter()
    for path in sorted(folder.rglob("*"), key=lambda p: _natural_key(str(p))):
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


def _unique_files(files: dict[str, list[Path]], problems: list[str]) -> dict[str, Path]:
    out = {}
    for key, paths in files.items():
        if len(paths) > 1:
            names = ", ".join(str(p) for p in paths)
            problems.append(f"ambiguous files {names}: same name, different extensions; "
                            "keep one of them.")
        else:
            out[key] = paths[0]
    return out


def _strip_suffix(key: str, words: Sequence[str]) -> str | None:
    """``key`` without a trailing separator + known word, if it has one."""
    low = key.lower()
    for word in sorted(words, key=len, reverse=True):
        if len(low) > len(word) + 1 and low.endswith(word) and low[-len(word) - 1] in SEPARATORS:
            return key[:-len(word) - 1]
    return None


def _image_aliases(image_keys: Iterable[str]) -> dict[str, set[str]]:
    """Names an image may be matched under: its key and its key minus an image suffix."""
    aliases: dict[str, set[str]] = {}
    for key in image_keys:
        aliases.setdefault(key, set()).add(key)
        core = _strip_suffix(key, IMAGE_SUFFIXES)
        if core:
            aliases.setdefault(core, set()).add(key)
    return aliases


def _candidates(key: str, aliases: dict[str, set[str]]) -> list[tuple[str, str]]:
    """(image key, suffix) pairs where an image alias is a prefix of ``key``."""
    out = []
    for i in range(1, len(key)):
        if key[i] in SEPARATORS and "/" not in key[i:] and key[:i] in aliases:
            out += [(img, key[i:].lower()) for img in sorted(aliases[key[:i]])]
    return out


def _match(image_keys: Sequence[str], other_keys: Sequence[str], words: Sequence[str]):
    """Matches mask (or instance) keys to image keys.

    Exact names first; then names carrying a suffix ("_mask", "-gt", or any
    suffix shared by most files, e.g. CamVid "_L") after an image name or an
    image name minus its own suffix (DeepGlobe "_sat"). Known suffixes beat
    the dataset's dominant suffix, which beats others; ties are ambiguous.

    Returns:
        (matches {other: image}, ambiguous {other: [images]}, unmatched [other]).
    """
    images = set(image_keys)
    matches = {k: k for k in other_keys if k in images}
    leftover = [k for k in other_keys if k not in images]
    aliases = _image_aliases(image_keys)
    cands = {k: _candidates(k, aliases) for k in leftover}
    counts = Counter(s for c in cands.values() for s in {suffix for _, suffix in c})
    top = counts.most_common(2)
    clear = top and top[0][1] >= 2 and (len(top) == 1 or top[1][1] < top[0][1])
    dominant = top[0][0] if clear else None
    known = {sep + w for sep in SEPARATORS for w in words}
    ambiguous, unmatched = {}, []
    for key, pairs in cands.items():
        if not pairs:
            unmatched.append(key)
            continue
        scored = [(2 if s in known else 1 if s == dominant else 0, img) for img, s in pairs]
        best = max(score for score, _ in scored)
        winners = sorted({img for score, img in scored if score == best})
        if len(winners) == 1:
            matches[key] = winners[0]
        else:
            ambiguous[key] = winners
    return matches, ambiguous, unmatched


def _pair_folder(img_dir: Path, mask_dir: Path | None, inst_dir: Path | None,
                 labelled_required: bool, problems: list[str],
                 warnings: list[str], only: set[str] | None = None,
                 keep_unlabelled: bool = False) -> list[Sample]:
    """Pairs images with masks (and instance maps) by file name.

    Unlabelled images are allowed only where ``labelled_required`` is False
    (test splits) and there is no masks folder at all, or with
    ``keep_unlabelled`` (finding images to predict). ``only``: use just the
    images with these names (split lists), ignore the others.
    """
    labelled_required = not keep_unlabelled and (labelled_required or mask_dir is not None)
    images = _unique_files(_list_files(img_dir, warnings), problems)
    if only is not None:
        images = {k: v for k, v in images.items() if k in only}
    if not images:
        problems.append(f"{img_dir}: empty, no image files ({', '.join(IMAGE_EXTENSIONS)}); "
                        "put the images there or point at the right folder.")
        return []
    masks = _mask_map(images, mask_dir, labelled_required, problems, warnings,
                      listed=only is not None)
    instances = _instance_map(images, inst_dir, warnings)
    return [Sample(name=key, image_path=path, mask_path=masks.get(key),
                   instance_path=instances.get(key))
            for key, path in images.items()
            if masks.get(key) is not None or not labelled_required]


def _mask_map(images: dict[str, Path], mask_dir: Path | None, labelled_required: bool,
              problems: list[str], warnings: list[str], listed: bool = False) -> dict[str, Path]:
    """{image key: mask path}; records every pairing problem. ``listed``: the
    images were chosen by a split list, so masks of other images are expected."""
    if mask_dir is None:
        if labelled_required:
            folder = next(iter(images.values())).parent
            problems.append(f"{folder}: no masks folder next to it; add masks/ (or labels/, "
                            "annotations/, gt/) with one mask per image.")
        return {}
    masks = _unique_files(_list_files(mask_dir, warnings), problems)
    if not masks:
        problems.append(f"{mask_dir}: empty, no mask files; put one mask per image there.")
        return {}
    masks = _drop_common_folder(masks, images)
    matches, ambiguous, unmatched = _match(list(images), list(masks), MASK_SUFFIXES)
    if not matches and (by_number := _match_numbers(list(images), list(masks))):
        matches, ambiguous, unmatched = by_number, {}, [k for k in masks if k not in by_number]
        image, mask = next(iter(by_number.values())), next(iter(by_number))
        warnings.append(f"{mask_dir}: no mask is named like an image; masks are matched to "
                        f"images by the number in their names ({image!r} <- {mask!r}).")
    out = _invert_matches(matches, masks, problems, "mask")
    for key, imgs in ambiguous.items():
        names = ", ".join(str(images[i]) for i in imgs)
        problems.append(f"{masks[key]}: ambiguous mask, its name matches several images "
                        f"({names}); rename it to exactly its image's name.")
    if len(out) == 0 and len(masks) and len(images):
        problems.append(f"{mask_dir}: no mask name matches an image name (e.g. image "
                        f"{next(iter(images))!r} vs mask {next(iter(masks))!r}); masks must be "
                        "named like their images, optionally with a suffix such as _mask.")
    for key in [] if listed else unmatched:
        problems.append(f"{masks[key]}: mask without image; add the image or remove the mask.")
    for key, path in images.items():
        if key not in out and labelled_required:
            problems.append(f"{path}: image without mask; add a mask with the same name to "
                            f"{mask_dir} or remove the image.")
    return out


def _match_numbers(image_keys: Sequence[str], other_keys: Sequence[str],
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


def _drop_common_folder(masks: dict[str, Path], images: dict[str, Path]) -> dict[str, Path]:
    """Mask keys without a sub-folder that all of them share and no image has
    (Oxford-IIIT Pet: images/a.jpg with annotations/trimaps/a.png)."""
    tops = {k.split("/")[0] if "/" in k else None for k in masks}
    if len(tops) != 1 or None in tops or any("/" in k for k in images):
        return masks
    cut = len(tops.pop()) + 1
    return {k[cut:]: p for k, p in masks.items()}


def _invert_matches(matches: dict[str, str], files: dict[str, Path],
                    problems: list[str], what: str) -> dict[str, Path]:
    """{other: image} -> {image: path}; an image matched twice is a problem."""
    by_image: dict[str, list[str]] = {}
    for other, img in matches.items():
        by_image.setdefault(img, []).append(other)
    out = {}
    for img, others in by_image.items():
        if len(others) == 1:
            out[img] = files[others[0]]
        else:
            names = ", ".join(str(files[o]) for o in others)
            problems.append(f"ambiguous {what}s {names} all match image {img!r}; keep one.")
    return out


def _instance_map(images: dict[str, Path], inst_dir: Path | None,
                  warnings: list[str]) -> dict[str, Path]:
    """{image key: instance path}; missing instance maps are warnings (optional data)."""
    if inst_dir is None:
        return {}
    found = _unique_files(_list_files(inst_dir, warnings), [])
    matches, ambiguous, unmatched = _match(list(images), list(found), INSTANCE_SUFFIXES)
    dup: list[str] = []
    out = _invert_matches(matches, found, dup, "instance map")
    extra = [str(found[k]) for k in list(ambiguous) + unmatched] + dup
    if extra:
        warnings.append(f"{inst_dir}: {len(extra)} instance maps match no single image "
                        f"(e.g. {extra[0]}); they are ignored.")
    missing = [str(p) for k, p in images.items() if k not in out]
    if missing:
        warnings.append(f"{inst_dir}: {len(missing)} images have no instance map (e.g. "
                        f"{missing[0]}); weight maps fall back to the masks for them.")
    return out


def _stack_files(folder: Path) -> dict[str, dict[str, Path]]:
    """Multi-page TIFF stacks: {prefix: {"volume"|"labels"|"instances": path}}."""
    stacks: dict[str, dict[str, Path]] = {}
    try:
        files = sorted(p for p in folder.iterdir() if p.is_file())
    except OSError:
        return {}
    for path in files:
        if path.suffix.lower() not in (".tif", ".tiff") or path.name.startswith("."):
            continue
        m = _STACK_RE.match(path.stem)
        if not m:
            continue
        kind = m["kind"].lower().rstrip("s")
        kind = {"label": "labels", "mask": "labels", "instance": "instances"}.get(kind, kind)
        stacks.setdefault(m["prefix"], {})[kind] = path
    return {p: k for p, k in stacks.items() if "volume" in k or "labels" in k}


def _stack_split(prefix: str, split: str | None) -> str:
    if split:
        return split
    for canonical, aliases in SPLIT_ALIASES.items():
        if prefix.lower() in aliases:
            return canonical
    return "all"


def _stack_samples(prefix: str, files: dict[str, Path], split: str,
                   problems: list[str]) -> list[Sample]:
    """One sample per page of a ``<prefix>-volume.tif`` stack."""
    volume, labels = files.get("volume"), files.get("labels")
    if volume is None:
        problems.append(f"{labels}: labels stack without a volume; add "
                        f"{prefix}-volume.tif next to it.")
        return []
    pages = _page_count(volume)
    if pages == 0:
        problems.append(str(_unreadable(volume, None)))
        return []
    if labels is None and split != "test":
        problems.append(f"{volume}: stack without labels; add {prefix}-labels.tif with one "
                        f"mask page per image page, or name it test-volume.tif.")
        return []
    if labels is not None:
        pages = _stack_label_pages(volume, labels, pages, problems)
    inst = _matching_pages(files.get("instances"), volume, pages, problems)
    return [Sample(name=f"{volume.stem}[{i}]", image_path=volume, mask_path=labels,
                   instance_path=inst, page=i) for i in range(pages)]


def _matching_pages(inst: Path | None, image: Path, pages: int, problems: list[str]) -> Path | None:
    """``inst`` if it has one page per image page, else None (and a problem)."""
    if inst is None:
        return None
    found = _page_count(inst)
    if found != pages:
        problems.append(f"{inst}: {found} pages but {image} has {pages}; "
                        "instance stacks need one page per image page.")
        return None
    return inst


def _stack_label_pages(volume: Path, labels: Path, pages: int, problems: list[str]) -> int:
    label_pages = _page_count(labels)
    if label_pages == 0:
        problems.append(str(_unreadable(labels, None)))
        return 0
    if label_pages != pages:
        problems.append(f"{volume} has {pages} pages but {labels} has {label_pages}; "
                        "volume and labels need one page each per slice.")
    return min(pages, label_pages)


def _discover_dir(folder: Path, split: str | None, problems: list[str],
                  warnings: list[str], only: set[str] | None = None,
                  keep_unlabelled: bool = False) -> dict[str, list[Sample]]:
    """Samples of one dataset folder (images/+masks/ and/or TIFF stacks).
    ``keep_unlabelled``: masks are optional everywhere (images to predict)."""
    kept = keep_unlabelled
    img_dir = _alias_dir(folder, IMAGE_DIR_NAMES, "image", problems)
    mask_dir = _alias_dir(folder, MASK_DIR_NAMES, "mask", problems)
    inst_dir = _alias_dir(folder, INSTANCE_DIR_NAMES, "instance", problems)
    out: dict[str, list[Sample]] = {}
    if img_dir is None and mask_dir is None and split is None and \
            (pairs := _split_word_pairs(folder)):
        for name, (images, masks) in pairs.items():
            out[name] = _pair_folder(images, masks, None, name != "test" and masks is not None,
                                     problems, warnings, only, keep_unlabelled=keep_unlabelled)
        return out
    img_dir, mask_dir = _described_dirs(folder, img_dir, mask_dir, warnings)
    if img_dir is not None:
        inner = _split_dirs(img_dir, problems) if split is None else {}
        if inner:  # images/train, masks/train, ...
            for name, sub in inner.items():
                out[name] = _pair_folder(sub, _sub(mask_dir, sub.name), _sub(inst_dir, sub.name),
                                         name != "test", problems, warnings, keep_unlabelled=kept)
        else:
            out[split or "all"] = _pair_folder(img_dir, mask_dir, inst_dir, split != "test",
                                               problems, warnings, only, keep_unlabelled=kept)
    elif mask_dir is not None:
        problems.append(f"{mask_dir}: masks folder without an images folder; add images/ "
                        f"(or imgs/, inputs/) next to it in {folder}.")
    for prefix, files in _stack_files(folder).items():
        key = _stack_split(prefix, split)
        out.setdefault(key, []).extend(_stack_samples(prefix, files, "test" if kept else key,
                                                      problems))
    if img_dir is None and mask_dir is None and not out:
        labelled = split != "test" and not kept
        sibling = _sibling_masks(folder)
        if sibling is not None:
            found = _pair_folder(folder, sibling, None, labelled, problems, warnings, only,
                                 keep_unlabelled=kept)
        else:
            found = (_sample_folders(folder, labelled, problems)
                     or _tracking_sequences(folder, problems, warnings, keep_unlabelled=kept)
                     or _pair_in_place(folder, labelled, problems, warnings, only))
        if found is None and not labelled and _has_images(folder):  # plain test images
            found = _pair_folder(folder, None, None, False, problems, warnings, only)
        if found is None:
            problems.append(_nothing_found(folder))
        elif split is None and all(_stack_split(s.name, None) != "all" for s in found):
            for sample in found:  # training.tif + testing.tif (EPFL EM stacks): split by name
                out.setdefault(_stack_split(sample.name, None), []).append(sample)
        else:
            out[split or "all"] = found
    return out


def _expand_pages(samples: list[Sample], problems: list[str],
                  warnings: list[str]) -> list[Sample]:
    """Multi-page TIFF images paired by name: one sample per page when the mask
    has as many pages; otherwise the first page only, with a warning."""
    out = []
    for s in samples:
        pages = 1
        if (s.page is None and s.image_path.suffix.lower() in (".tif", ".tiff")
                and (s.mask_path is None or s.mask_path.is_file())):
            pages = _page_count(s.image_path)
        if pages <= 1:
            out.append(s)
            continue
        mask_pages = pages if s.mask_path is None else _page_count(s.mask_path)
        if mask_pages != pages:
            warnings.append(f"{s.image_path} has {pages} pages but its mask {s.mask_path} has "
                            f"{mask_pages}; only the first page is used.")
            out.append(s)
            continue
        inst = _matching_pages(s.instance_path, s.image_path, pages, problems)
        out += [Sample(f"{s.name}[{i}]", s.image_path, s.mask_path, inst, page=i)
                for i in range(pages)]
    return out


def _tracking_sequences(folder: Path, problems: list[str], warnings: list[str],
                        keep_unlabelled: bool = False) -> list[Sample] | None:
    """Cell tracking challenge sequences: ``01/t000.tif`` with ``01_GT/SEG/man_seg000.tif``
    (gold truth, often for some frames only) or else ``01_ST/SEG/`` (silver truth).
    Frames without a mask are left out; names are "<sequence>/<frame>", so the
    validation split keeps whole sequences apart. None when there are none."""
    children = _child_dirs(folder)
    samples, unlabelled = [], 0
    for name, seq in children.items():
        truths = [children[name + s] for s in ("_gt", "_st") if name + s in children]
        if not truths or not _has_images(seq):
            continue
        # Gold segmentation, else silver; TRA/ holds tracking markers, not masks.
        seg = next((d for t in truths if (d := _child_dirs(t).get("seg")) is not None), None)
        if seg is None:
            problems.append(f"{truths[0]}: no SEG/ folder with segmentation masks (TRA/ holds "
                            f"tracking markers); add {name}_GT/SEG or {name}_ST/SEG.")
            continue
        images = _unique_files(_list_files(seq, []), problems)
        masks = _unique_files(_list_files(seg, []), problems)
        matches = _match_numbers(list(images), list(masks), every_image=False)
        if not matches:
            problems.append(f"{seg}: no mask number matches a frame of {seq}; expected "
                            "man_seg<frame>.tif for t<frame>.tif.")
            continue
        by_image = {img: masks[m] for m, img in matches.items()}
        unlabelled += len(images) - len(by_image)
        samples += [Sample(f"{seq.name}/{key}", path, by_image.get(key))
                    for key, path in images.items() if key in by_image or keep_unlabelled]
    if not samples:
        return None
    if unlabelled and not keep_unlabelled:
        warnings.append(f"{folder}: {unlabelled} frames have no mask in the ground truth and are "
                        "not used.")
    return samples


def _holds_images(folder: Path) -> bool:
    """Any image file in ``folder`` or below."""
    return any(p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file() for p in folder.rglob("*"))


def _has_images(folder: Path) -> bool:
    return any(p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS for p in folder.iterdir())


def _sibling_masks(folder: Path) -> Path | None:
    """The masks folder beside an images folder named after it: train/ with
    train_labels/ (CamVid), trainannot/ (SegNet), train_masks/ (Carvana)."""
    if not _has_images(folder):
        return None
    name = folder.name.lower()
    names = {name + sep + w for sep in ("", *SEPARATORS) for w in (*MASK_SUFFIXES, "annot")}
    names.discard(name + "l")  # "trainl" is not a label folder
    found = [d for n, d in _child_dirs(folder.parent).items() if n in names and d != folder]
    return found[0] if len(found) == 1 else None


def _sample_folders(folder: Path, labelled_required: bool,
                    problems: list[str]) -> list[Sample] | None:
    """One sub-folder per sample, each with images/ holding its one image and
    masks/ holding one mask, or one binary mask per object (Data Science Bowl
    2018: ``<id>/images/<id>.png`` + ``<id>/masks/*.png``). None when the
    sub-folders are not like that."""
    children = [d for d in _child_dirs(folder).values()
                if _alias_dir(d, IMAGE_DIR_NAMES, "image", []) is not None]
    if not children or len(children) < len(_child_dirs(folder)) / 2:
        return None
    samples = []
    for d in children:
        img_dir = _alias_dir(d, IMAGE_DIR_NAMES, "image", problems)
        images = _unique_files(_list_files(img_dir, []), problems)
        if len(images) != 1:
            problems.append(f"{img_dir}: {len(images)} images; a sample folder holds exactly one "
                            "image (its masks go to masks/ next to it).")
            continue
        image = next(iter(images.values()))
        mask_dir = _alias_dir(d, MASK_DIR_NAMES, "mask", problems)
        masks = [] if mask_dir is None else list(_unique_files(_list_files(mask_dir, []), problems).values())
        if not masks and labelled_required:
            problems.append(f"{d}: no masks; add masks/ with the sample's mask (or one binary "
                            "mask per object) or remove the folder.")
            continue
        if len(masks) == 1:
            samples.append(Sample(d.name, image, masks[0]))
        else:
            samples.append(Sample(d.name, image, mask_dir if masks else None,
                                  instance_path=mask_dir if masks else None))
    return samples


def _pair_in_place(folder: Path, labelled_required: bool, problems: list[str],
                   warnings: list[str], only: set[str] | None = None) -> list[Sample] | None:
    """Images and masks side by side, in ``folder`` or any sub-folder of it
    (e.g. one folder per patient: ``a_1.tif`` + ``a_1_mask.tif``).

    A file is a mask (or an instance map) when its name is another file's name
    plus a mask (instance) suffix. None when no file is, so the layout is not
    this one.
    """
    found_warnings: list[str] = []
    files = _unique_files(_list_files(folder, found_warnings), problems)
    masks, instances, orphans = {}, {}, []
    for key, path in files.items():
        core = _strip_suffix(key, MASK_SUFFIXES)
        if core is not None and core in files:
            masks[core] = path
            continue
        if core is not None and _strip_suffix(key, ("mask", "masks")) is not None:
            orphans.append(path)  # "x_mask.tif" without "x.tif"
            continue
        core = _strip_suffix(key, ("instance", "instances", "inst", "ids"))
        if core is not None and core in files:
            instances[core] = path
    if not masks:
        return None
    warnings.extend(found_warnings)
    problems.extend(f"{p}: mask without image; add the image next to it or remove the mask."
                    for p in orphans)
    taken = {str(p) for p in (*masks.values(), *instances.values(), *orphans)}
    samples = []
    for key, path in files.items():
        if str(path) in taken or (only is not None and key not in only):
            continue
        if key not in masks and labelled_required:
            problems.append(f"{path}: image without mask; add {Path(key).name}_mask"
                            f"{path.suffix} next to it or remove the image.")
            continue
        samples.append(Sample(name=key, image_path=path, mask_path=masks.get(key),
                              instance_path=instances.get(key)))
    return samples


def _sub(folder: Path | None, name: str) -> Path | None:
    if folder is None:
        return None
    return next((d for n, d in _child_dirs(folder).items() if n == name.lower()), None)


def _nothing_found(folder: Path) -> str:
    try:
        entries = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    except OSError:
        entries = []
    seen = ", ".join(entries[:8]) + (", ..." if len(entries) > 8 else "") if entries else "nothing"
    return (f"{folder}: no dataset found (it contains {seen}); expected images/ and masks/ "
            "folders, split folders train/ val/ test/, or *-volume.tif + *-labels.tif stacks.")


def _resolve_root(root: Path, warnings: list[str]) -> Path:
    """Accepts the images/ (or masks/) folder itself by moving up to its parent."""
    name = root.resolve().name.lower()
    siblings = set(_child_dirs(root.parent))
    if ((name in IMAGE_DIR_NAMES and siblings & set(MASK_DIR_NAMES))
            or (name in MASK_DIR_NAMES and siblings & set(IMAGE_DIR_NAMES))):
        warnings.append(f"{root} is an {'images' if name in IMAGE_DIR_NAMES else 'masks'} "
                        f"folder; using its parent {root.parent}.")
        return root.parent
    return root


def _discover(root: Path, keep_unlabelled: bool = False
              ) -> tuple[Path, dict[str, list[Sample]], list[str], list[str]]:
    """Finds samples under ``root`` and every structural problem."""
    problems: list[str] = []
    warnings: list[str] = []
    if not root.exists():
        return root, {}, [f"{root}: folder does not exist; check the path."], warnings
    if not root.is_dir():
        return root, {}, [f"{root}: is a file; pass the dataset folder that contains "
                          "images/ and masks/ (or the *-volume.tif stacks)."], warnings
    root = _resolve_root(root, warnings)
    splits = _split_dirs(root, problems)
    if splits:
        samples = {}
        for name, folder in splits.items():
            found = _discover_dir(folder, name, problems, warnings,
                                  keep_unlabelled=keep_unlabelled)
            samples[name] = found.get(name, [])
        if _alias_dir(root, IMAGE_DIR_NAMES, "image", []) is not None:
            warnings.append(f"{root}: has split folders and an images folder; only the split "
                            "folders are used.")
        if "val" in samples and "train" not in samples:
            problems.append(f"{root}: has a {splits['val'].name}/ folder but no train/ folder; "
                            "add train/ with the training images and masks.")
    elif (lists := _split_lists(root, problems)) is not None:
        samples = _listed_samples(root, lists, problems, warnings)
    else:
        samples = _discover_dir(root, None, problems, warnings, keep_unlabelled=keep_unlabelled)
    samples = {k: sorted(_expand_pages(samples[k], problems, warnings),
                         key=lambda s: _natural_key(s.name))
               for k in SPLIT_ORDER if k in samples}
    return root, samples, problems, warnings


def _split_lists(root: Path, problems: list[str]) -> dict[str, list[str]] | None:
    """Pascal VOC split lists {split: names} from ImageSets/Segmentation/*.txt, or None."""
    folder = root
    for name in SPLIT_LIST_DIR:
        folder = _child_dirs(folder).get(name)
        if folder is None:
            return None
    files = {p.stem.lower(): p for p in sorted(folder.glob("*.txt"))}
    lists = {}
    for split in ("train", "val"):  # VOC's test images come without masks: not used
        path = next((files[a] for a in SPLIT_ALIASES[split] if a in files), None)
        if path is None and split == "train":
            path = files.get("trainval")
        if path is not None:
            # VOC detection lists carry a second column (" 1" / "-1"); keep the name.
            lists[split] = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    if "train" in lists and "val" in lists:  # trainval.txt also holds the val images
        val = set(lists["val"])
        lists["train"] = [n for n in lists["train"] if n not in val]
    if "train" not in lists:
        problems.append(f"{folder}: no train.txt (or trainval.txt) split list; add one with the "
                        "training image names, one per line, or remove the folder.")
        return None
    return lists


def _listed_samples(root: Path, lists: dict[str, list[str]], problems: list[str],
                    warnings: list[str]) -> dict[str, list[Sample]]:
    """Samples chosen and split by Pascal VOC lists; images not listed are ignored."""
    listed = {n for names in lists.values() for n in names}
    found = _discover_dir(root, None, problems, warnings, only=listed).get("all", [])
    by_name = {s.name: s for s in found}
    out = {}
    for split, names in lists.items():
        missing = [n for n in names if n not in by_name]
        if missing:
            problems.append(f"{root}: {len(missing)} names in the {split} list have no image "
                            f"(e.g. {missing[0]!r}); fix the list or add the images.")
        out[split] = [by_name[n] for n in names if n in by_name]
    return out


def find_samples(root: str | Path, strict: bool = True,
                 keep_unlabelled: bool = False) -> dict[str, list[Sample]]:
    """Discovers samples under a dataset folder.

    Args:
        root: Dataset root, split root, or the images/ folder itself.
        strict: Raise when pairing problems are found; when False return
            whatever could be paired.
        keep_unlabelled: Masks are optional everywhere: every image is a
            sample, with ``mask_path`` None where it has no mask (the images
            to predict).

    Returns:
        Samples per split, in natural name order. Keys are among "train",
        "val", "test" when the data is split (split folders, images/train/
        sub-folders, or ISBI ``train-``/``test-`` stack prefixes), else "all".
        "val" only exists when the data has one: callers split "train" (or
        "all") with :func:`split_samples`. "test" samples may have no mask.

    Raises:
        DatasetError: ``strict`` and the folder is missing, empty, or has
            unpaired/ambiguous files.
    """
    _, samples, problems, _ = _discover(Path(root), keep_unlabelled)
    if problems and strict:
        raise DatasetError(problems)
    return samples


def _pick_groups(groups: dict[str, list[int]], n: int, target: float, seed: int) -> set[int]:
    """Whole groups, in a seeded random order, each taken when it brings the
    validation count closer to ``target``; at least one sample on each side."""
    if target <= 0 or n < 2:
        return set()
    keys = sorted(groups, key=_natural_key)
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
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    ordered = sorted(samples, key=lambda s: (s.name, str(s.image_path)))
    if len({(s.name, str(s.image_path)) for s in ordered}) != len(ordered):
        raise ValueError("split_samples got duplicate samples")
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(ordered):
        groups.setdefault(s.name.split("/")[0] if "/" in s.name else s.name, []).append(i)
    n = len(ordered)
    target = n * val_fraction
    singles = {str(i): [i] for i in range(n)}
    if len(groups) == n:  # no sample shares a folder
        groups = singles
    val_idx = _pick_groups(groups, n, target, seed) if len(groups) >= 2 else set()
    if groups is not singles and abs(len(val_idx) - target) > max(1.0, target / 2):
        if len(groups) >= 2:
            logger.warning("%d folders cannot be split near a validation fraction of %g (got %d "
                           "of %d images); splitting their images instead, so neighbouring "
                           "images of one folder may land on both sides.",
                           len(groups), val_fraction, len(val_idx), n)
        val_idx = _pick_groups(singles, n, target, seed)
    train = [s for i, s in enumerate(ordered) if i not in val_idx]
    val = [s for i, s in enumerate(ordered) if i in val_idx]
    return train, val


# --------------------------------------------------------------------------- class files


def _classes_candidates(root: Path | None, samples: Iterable[Sample]) -> list[Path]:
    """Where classes.json may live: root, its split folders, the parent of a split root."""
    dirs: list[Path] = []
    if root is not None:
        dirs.append(root)
        dirs += list(_split_dirs(root, []).values())
        if any(root.name.lower() in a for a in SPLIT_ALIASES.values()):
            dirs.append(root.parent)
    else:
        for s in samples:
            dirs += _dataset_dirs(s)
            break
    seen, out = set(), []
    for d in dirs:
        for path in (d / CLASSES_FILE, d / CLASS_DICT_FILE):
            if path not in seen and path.is_file():
                seen.add(path)
                out.append(path)
    return out


def _dataset_dirs(sample: Sample) -> list[Path]:
    """The folder holding a sample's masks/ (or stack) and, if a split folder, its parent."""
    ref = sample.mask_path or sample.image_path
    folder = ref.parent
    for parent in ref.parents:
        if parent.name.lower() in MASK_DIR_NAMES + IMAGE_DIR_NAMES:
            folder = parent.parent
            break
    if any(folder.name.lower() in a for a in SPLIT_ALIASES.values()):
        return [folder, folder.parent]
    return [folder]
