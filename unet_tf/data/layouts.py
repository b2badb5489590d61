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

Discovery never reads pixels (only TIFF page counts); :mod:`unet_tf.data.check`
reads, decodes and validates what is found here. Every guess that is not
certain is reported as a warning, every failure as a problem naming the file.
The plain images/ + masks/ pairing is here; stacks, sequences, sample folders,
side-by-side pairs and split lists are in :mod:`unet_tf.data.special_layouts`,
and the validation split of what is found in :mod:`unet_tf.data.split`.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

from ..errors import DatasetError
from .folders import (IMAGE_DIR_NAMES, IMAGE_SUFFIXES, INSTANCE_DIR_NAMES, INSTANCE_SUFFIXES,
                      MASK_DIR_NAMES, MASK_SUFFIXES, SEPARATORS, SPLIT_ALIASES, SPLIT_ORDER,
                      alias_dir, child_dirs, has_images, list_files, match_numbers,
                      strip_suffix, unique_files)
from .samples import CLASS_DICT_FILE, CLASSES_FILE, IMAGE_EXTENSIONS, Sample, natural_key
from .special_layouts import (expand_pages, pair_in_place, sample_folders, sibling_masks,
                              split_lists, stack_files, stack_samples, stack_split,
                              tracking_sequences)

__all__ = ["class_file_candidates", "discover", "find_samples"]

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
    children = {n: d for n, d in child_dirs(folder).items()  # not "01_GT" beside "01" (CTC)
                if not (n[-3:] in ("_gt", "_st") and n[:-3] in child_dirs(folder))}
    strong = sorted((d for d in children.values() if d != img_dir
                     and _words(d.name) & set(_TRUTH_WORDS)), key=lambda d: natural_key(d.name))
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
    images, masks = _word_dirs(child_dirs(folder))
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
    children = child_dirs(folder)
    out = {}
    for split, aliases in SPLIT_ALIASES.items():
        found = [children[a] for a in aliases if a in children]
        if len(found) > 1:
            names = ", ".join(f"{d.name}/" for d in found)
            problems.append(f"{folder}: several {split} folders ({names}); keep exactly one.")
        if found:
            out[split] = found[0]
    return out


def _image_aliases(image_keys: Iterable[str]) -> dict[str, set[str]]:
    """Names an image may be matched under: its key and its key minus an image suffix."""
    aliases: dict[str, set[str]] = {}
    for key in image_keys:
        aliases.setdefault(key, set()).add(key)
        core = strip_suffix(key, IMAGE_SUFFIXES)
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
    images = unique_files(list_files(img_dir, warnings), problems)
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
    masks = unique_files(list_files(mask_dir, warnings), problems)
    if not masks:
        problems.append(f"{mask_dir}: empty, no mask files; put one mask per image there.")
        return {}
    masks = _drop_common_folder(masks, images)
    matches, ambiguous, unmatched = _match(list(images), list(masks), MASK_SUFFIXES)
    if not matches and (by_number := match_numbers(list(images), list(masks))):
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
    found = unique_files(list_files(inst_dir, warnings), [])
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


def _discover_dir(folder: Path, split: str | None, problems: list[str],
                  warnings: list[str], only: set[str] | None = None,
                  keep_unlabelled: bool = False) -> dict[str, list[Sample]]:
    """Samples of one dataset folder (images/+masks/ and/or TIFF stacks).
    ``keep_unlabelled``: masks are optional everywhere (images to predict)."""
    kept = keep_unlabelled
    img_dir = alias_dir(folder, IMAGE_DIR_NAMES, "image", problems)
    mask_dir = alias_dir(folder, MASK_DIR_NAMES, "mask", problems)
    inst_dir = alias_dir(folder, INSTANCE_DIR_NAMES, "instance", problems)
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
    for prefix, files in stack_files(folder).items():
        key = stack_split(prefix, split)
        out.setdefault(key, []).extend(stack_samples(prefix, files, "test" if kept else key,
                                                     problems))
    if img_dir is None and mask_dir is None and not out:
        labelled = split != "test" and not kept
        sibling = sibling_masks(folder)
        if sibling is not None:
            found = _pair_folder(folder, sibling, None, labelled, problems, warnings, only,
                                 keep_unlabelled=kept)
        else:
            found = (sample_folders(folder, labelled, problems)
                     or tracking_sequences(folder, problems, warnings, keep_unlabelled=kept)
                     or pair_in_place(folder, labelled, problems, warnings, only))
        if found is None and not labelled and has_images(folder):  # plain test images
            found = _pair_folder(folder, None, None, False, problems, warnings, only)
        if found is None:
            problems.append(_nothing_found(folder))
        elif split is None and all(stack_split(s.name, None) != "all" for s in found):
            for sample in found:  # training.tif + testing.tif (EPFL EM stacks): split by name
                out.setdefault(stack_split(sample.name, None), []).append(sample)
        else:
            out[split or "all"] = found
    return out


def _sub(folder: Path | None, name: str) -> Path | None:
    if folder is None:
        return None
    return next((d for n, d in child_dirs(folder).items() if n == name.lower()), None)


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
    siblings = set(child_dirs(root.parent))
    if ((name in IMAGE_DIR_NAMES and siblings & set(MASK_DIR_NAMES))
            or (name in MASK_DIR_NAMES and siblings & set(IMAGE_DIR_NAMES))):
        warnings.append(f"{root} is an {'images' if name in IMAGE_DIR_NAMES else 'masks'} "
                        f"folder; using its parent {root.parent}.")
        return root.parent
    return root


def discover(root: Path, keep_unlabelled: bool = False
             ) -> tuple[Path, dict[str, list[Sample]], list[str], list[str]]:
    """Finds samples under ``root`` and every structural problem.

    Returns:
        (the dataset root, after moving up from an images/ folder; samples per
        split as in :func:`find_samples`; problems; warnings).
    """
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
        if alias_dir(root, IMAGE_DIR_NAMES, "image", []) is not None:
            warnings.append(f"{root}: has split folders and an images folder; only the split "
                            "folders are used.")
        if "val" in samples and "train" not in samples:
            problems.append(f"{root}: has a {splits['val'].name}/ folder but no train/ folder; "
                            "add train/ with the training images and masks.")
    elif (lists := split_lists(root, problems)) is not None:
        samples = _listed_samples(root, lists, problems, warnings)
    else:
        samples = _discover_dir(root, None, problems, warnings, keep_unlabelled=keep_unlabelled)
    samples = {k: sorted(expand_pages(samples[k], problems, warnings),
                         key=lambda s: natural_key(s.name))
               for k in SPLIT_ORDER if k in samples}
    return root, samples, problems, warnings


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
        "all") with :func:`unet_tf.data.split.train_and_val`. "test" samples
        may have no mask.

    Raises:
        DatasetError: ``strict`` and the folder is missing, empty, or has
            unpaired/ambiguous files.
    """
    _, samples, problems, _ = discover(Path(root), keep_unlabelled)
    if problems and strict:
        raise DatasetError(problems)
    return samples


# --------------------------------------------------------------------------- class files


def class_file_candidates(root: Path | None, samples: Iterable[Sample]) -> list[Path]:
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
