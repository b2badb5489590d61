"""The dataset collections that are not plain images/ + masks/ folders.

Multi-page TIFF stacks (ISBI 2012 ``train-volume.tif`` + ``train-labels.tif``,
and multi-page images paired by name), cell tracking challenge sequences
(``01/t000.tif`` + ``01_GT/SEG/man_seg000.tif``), one folder per sample (Data
Science Bowl 2018), images and masks side by side (``a.tif`` +
``a_mask.tif``), mask folders named after the image folder (CamVid
``train_labels/``) and Pascal VOC split lists. :mod:`unet_tf.data.layouts`
decides when each applies.
"""

from __future__ import annotations

import re
from pathlib import Path

from .folders import (IMAGE_DIR_NAMES, MASK_DIR_NAMES, MASK_SUFFIXES, SEPARATORS, SPLIT_ALIASES,
                      SPLIT_LIST_DIR, alias_dir, child_dirs, has_images, list_files, match_numbers,
                      strip_suffix, unique_files)
from .images import page_count, unreadable_error
from .samples import Sample

__all__ = ["expand_pages", "pair_in_place", "sample_folders", "sibling_masks", "split_lists",
           "stack_files", "stack_samples", "stack_split", "tracking_sequences"]

_STACK_RE = re.compile(r"^(?P<prefix>.*?)[-_](?P<kind>volume|labels?|masks?|instances?)$",
                       re.IGNORECASE)


def stack_files(folder: Path) -> dict[str, dict[str, Path]]:
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


def stack_split(prefix: str, split: str | None) -> str:
    """The split a stack belongs to: ``split`` if given, else by its prefix ("train-volume")."""
    if split:
        return split
    for canonical, aliases in SPLIT_ALIASES.items():
        if prefix.lower() in aliases:
            return canonical
    return "all"


def stack_samples(prefix: str, files: dict[str, Path], split: str,
                  problems: list[str]) -> list[Sample]:
    """One sample per page of a ``<prefix>-volume.tif`` stack."""
    volume, labels = files.get("volume"), files.get("labels")
    if volume is None:
        problems.append(f"{labels}: labels stack without a volume; add "
                        f"{prefix}-volume.tif next to it.")
        return []
    pages = page_count(volume)
    if pages == 0:
        problems.append(str(unreadable_error(volume, None)))
        return []
    if labels is None and split != "test":
        problems.append(f"{volume}: stack without labels; add {prefix}-labels.tif with one "
                        f"mask page per image page, or name it test-volume.tif.")
        return []
    if labels is not None:
        pages = _stack_label_pages(volume, labels, pages, problems)
    inst = matching_pages(files.get("instances"), volume, pages, problems)
    return [Sample(name=f"{volume.stem}[{i}]", image_path=volume, mask_path=labels,
                   instance_path=inst, page=i) for i in range(pages)]


def matching_pages(inst: Path | None, image: Path, pages: int, problems: list[str]) -> Path | None:
    """``inst`` if it has one page per image page, else None (and a problem)."""
    if inst is None:
        return None
    found = page_count(inst)
    if found != pages:
        problems.append(f"{inst}: {found} pages but {image} has {pages}; "
                        "instance stacks need one page per image page.")
        return None
    return inst


def _stack_label_pages(volume: Path, labels: Path, pages: int, problems: list[str]) -> int:
    label_pages = page_count(labels)
    if label_pages == 0:
        problems.append(str(unreadable_error(labels, None)))
        return 0
    if label_pages != pages:
        problems.append(f"{volume} has {pages} pages but {labels} has {label_pages}; "
                        "volume and labels need one page each per slice.")
    return min(pages, label_pages)


def expand_pages(samples: list[Sample], problems: list[str],
                 warnings: list[str]) -> list[Sample]:
    """Multi-page TIFF images paired by name: one sample per page when the mask
    has as many pages; otherwise the first page only, with a warning."""
    out = []
    for s in samples:
        pages = 1
        if (s.page is None and s.image_path.suffix.lower() in (".tif", ".tiff")
                and (s.mask_path is None or s.mask_path.is_file())):
            pages = page_count(s.image_path)
        if pages <= 1:
            out.append(s)
            continue
        mask_pages = pages if s.mask_path is None else page_count(s.mask_path)
        if mask_pages != pages:
            warnings.append(f"{s.image_path} has {pages} pages but its mask {s.mask_path} has "
                            f"{mask_pages}; only the first page is used.")
            out.append(s)
            continue
        inst = matching_pages(s.instance_path, s.image_path, pages, problems)
        out += [Sample(f"{s.name}[{i}]", s.image_path, s.mask_path, inst, page=i)
                for i in range(pages)]
    return out


def tracking_sequences(folder: Path, problems: list[str], warnings: list[str],
                       keep_unlabelled: bool = False) -> list[Sample] | None:
    """Cell tracking challenge sequences: ``01/t000.tif`` with ``01_GT/SEG/man_seg000.tif``
    (gold truth, often for some frames only) or else ``01_ST/SEG/`` (silver truth).
    Frames without a mask are left out; names are "<sequence>/<frame>", so the
    validation split keeps whole sequences apart. None when there are none."""
    children = child_dirs(folder)
    samples, unlabelled = [], 0
    for name, seq in children.items():
        truths = [children[name + s] for s in ("_gt", "_st") if name + s in children]
        if not truths or not has_images(seq):
            continue
        # Gold segmentation, else silver; TRA/ holds tracking markers, not masks.
        seg = next((d for t in truths if (d := child_dirs(t).get("seg")) is not None), None)
        if seg is None:
            problems.append(f"{truths[0]}: no SEG/ folder with segmentation masks (TRA/ holds "
                            f"tracking markers); add {name}_GT/SEG or {name}_ST/SEG.")
            continue
        images = unique_files(list_files(seq, []), problems)
        masks = unique_files(list_files(seg, []), problems)
        matches = match_numbers(list(images), list(masks), every_image=False)
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


def sibling_masks(folder: Path) -> Path | None:
    """The masks folder beside an images folder named after it: train/ with
    train_labels/ (CamVid), trainannot/ (SegNet), train_masks/ (Carvana)."""
    if not has_images(folder):
        return None
    name = folder.name.lower()
    names = {name + sep + w for sep in ("", *SEPARATORS) for w in (*MASK_SUFFIXES, "annot")}
    names.discard(name + "l")  # "trainl" is not a label folder
    found = [d for n, d in child_dirs(folder.parent).items() if n in names and d != folder]
    return found[0] if len(found) == 1 else None


def sample_folders(folder: Path, labelled_required: bool,
                   problems: list[str]) -> list[Sample] | None:
    """One sub-folder per sample, each with images/ holding its one image and
    masks/ holding one mask, or one binary mask per object (Data Science Bowl
    2018: ``<id>/images/<id>.png`` + ``<id>/masks/*.png``). None when the
    sub-folders are not like that."""
    children = [d for d in child_dirs(folder).values()
                if alias_dir(d, IMAGE_DIR_NAMES, "image", []) is not None]
    if not children or len(children) < len(child_dirs(folder)) / 2:
        return None
    samples = []
    for d in children:
        img_dir = alias_dir(d, IMAGE_DIR_NAMES, "image", problems)
        images = unique_files(list_files(img_dir, []), problems)
        if len(images) != 1:
            problems.append(f"{img_dir}: {len(images)} images; a sample folder holds exactly one "
                            "image (its masks go to masks/ next to it).")
            continue
        image = next(iter(images.values()))
        mask_dir = alias_dir(d, MASK_DIR_NAMES, "mask", problems)
        masks = [] if mask_dir is None else list(unique_files(list_files(mask_dir, []), problems).values())
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


def pair_in_place(folder: Path, labelled_required: bool, problems: list[str],
                  warnings: list[str], only: set[str] | None = None) -> list[Sample] | None:
    """Images and masks side by side, in ``folder`` or any sub-folder of it
    (e.g. one folder per patient: ``a_1.tif`` + ``a_1_mask.tif``).

    A file is a mask (or an instance map) when its name is another file's name
    plus a mask (instance) suffix. None when no file is, so the layout is not
    this one.
    """
    found_warnings: list[str] = []
    files = unique_files(list_files(folder, found_warnings), problems)
    masks, instances, orphans = {}, {}, []
    for key, path in files.items():
        core = strip_suffix(key, MASK_SUFFIXES)
        if core is not None and core in files:
            masks[core] = path
            continue
        if core is not None and strip_suffix(key, ("mask", "masks")) is not None:
            orphans.append(path)  # "x_mask.tif" without "x.tif"
            continue
        core = strip_suffix(key, ("instance", "instances", "inst", "ids"))
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


def split_lists(root: Path, problems: list[str]) -> dict[str, list[str]] | None:
    """Pascal VOC split lists {split: names} from ImageSets/Segmentation/*.txt, or None."""
    folder = root
    for name in SPLIT_LIST_DIR:
        folder = child_dirs(folder).get(name)
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
