"""Dataset I/O: from files on disk to numpy arrays.

Covers reading images, masks and instance maps, decoding masks to class
indices, inferring the label encoding, validating a whole dataset and the
human summary behind ``unet-tf check-data DIR``. Pure numpy + OpenCV; this
module must never import TensorFlow (the tf.data pipeline builds on it).

Which files are the images, masks and instance maps of a dataset folder is
decided in :mod:`unet_tf.layouts` (``find_samples``, ``split_samples``, also
importable from here).

Conventions:
    * Images are (H, W, C) with C >= 1, channels in RGB order, dtype as stored
      (uint8, uint16 or float32). Alpha is dropped unless ``keep_alpha=True``.
    * Class-index masks are (H, W) int32; void pixels hold ``spec.ignore_index``.
    * Every error names the file, the problem and what to do about it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import cv2
import numpy as np

__all__ = [
    "IMAGE_EXTENSIONS",
    "DatasetError",
    "DatasetReport",
    "LabelSpec",
    "Sample",
    "check_dataset",
    "decode_mask",
    "format_report",
    "infer_label_spec",
    "load_class_dict_csv",
    "load_classes_json",
    "load_dataset",
    "load_mask",
    "load_sample",
    "read_image",
    "read_instances",
    "read_mask_raw",
]

logger = logging.getLogger(__name__)


def __getattr__(name: str):
    # find_samples and split_samples live in unet_tf.layouts (which imports
    # this module), and stay importable from here.
    if name in ("find_samples", "split_samples"):
        from . import layouts
        return getattr(layouts, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# GIF is not in the documented list but OpenCV reads it and Carvana ships GIF masks.
IMAGE_EXTENSIONS = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp", ".gif")
MAX_MASK_VALUES = 1024          # more distinct values than this is not a label mask
CLASSES_FILE = "classes.json"
CLASS_DICT_FILE = "class_dict.csv"  # CamVid / DeepGlobe: name,r,g,b per class
# class_dict.csv has no ignore column: classes with these names become void.
VOID_CLASS_NAMES = ("void", "unlabelled", "unlabeled", "ignore")
CLASSES_HINT = 'expected [{"name": "road", "color": [128, 64, 128]}, ...]'
_LOSSY_EXTS = (".jpg", ".jpeg")
_LOSSY_HINT = " JPEG compression alters mask values; save masks as PNG."


# --------------------------------------------------------------------------- data model


class DatasetError(ValueError):
    """A dataset problem the user must fix; ``.problems`` lists every one found.

    Args:
        problems: One message or a list of messages, each naming a file.
    """

    def __init__(self, problems: str | Iterable[str]):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__(self.problems)

    def __str__(self) -> str:
        if len(self.problems) == 1:
            return self.problems[0]
        lines = [f"{len(self.problems)} problems found:"]
        lines += [f"  - {p}" for p in self.problems]
        return "\n".join(lines)


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


_MODES = ("binary", "index", "palette", "instance")


@dataclass
class LabelSpec:
    """How mask files decode to class indices.

    Attributes:
        mode: "binary" (0/255, 0/1 or 0/65535 -> 0/1), "index" (values are class
            indices 0..C-1 plus ``ignore_index``), "palette" (RGB colours mapped
            through classes.json) or "instance" (masks are instance-id maps:
            any id is foreground, and the ids feed the weight map).
        num_labels: Number of classes (binary -> 2).
        ignore_index: Value written for void pixels; losses should skip it.
        class_names: One name per class (defaults filled in when empty).
        palette: RGB colour per class in class-index order (palette mode only).
        ignore_colors: RGB colours decoded to ``ignore_index`` (palette mode).
    """

    mode: str
    num_labels: int
    ignore_index: int = 255
    class_names: list[str] = field(default_factory=list)
    palette: list[tuple[int, int, int]] | None = None
    ignore_colors: list[tuple[int, int, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.mode not in _MODES:
            raise ValueError(f"LabelSpec.mode must be one of {_MODES}, got {self.mode!r}")
        if self.mode in ("binary", "instance") and self.num_labels != 2:
            raise ValueError(f"{self.mode} LabelSpec needs num_labels=2, got {self.num_labels}")
        if self.num_labels < 1:
            raise ValueError(f"LabelSpec.num_labels must be >= 1, got {self.num_labels}")
        if self.mode == "palette" and len(self.palette or []) != self.num_labels:
            raise ValueError("palette LabelSpec needs one palette colour per class")
        self.palette = None if self.palette is None else [tuple(map(int, c)) for c in self.palette]
        self.ignore_colors = [tuple(map(int, c)) for c in self.ignore_colors]
        if not self.class_names:
            self.class_names = _default_names(self.mode, self.num_labels)
        if len(self.class_names) != self.num_labels:
            raise ValueError(f"LabelSpec has {len(self.class_names)} class names "
                             f"for {self.num_labels} classes")

    def to_dict(self) -> dict:
        """Returns a JSON-serialisable dict (for a run's config.json)."""
        return {
            "mode": self.mode,
            "num_labels": self.num_labels,
            "ignore_index": self.ignore_index,
            "class_names": list(self.class_names),
            "palette": None if self.palette is None else [list(c) for c in self.palette],
            "ignore_colors": [list(c) for c in self.ignore_colors],
        }

    @classmethod
    def from_dict(cls, data: dict) -> "LabelSpec":
        """Builds a LabelSpec from :meth:`to_dict` output.

        Args:
            data: Dict as written by ``to_dict``.

        Returns:
            The LabelSpec.
        """
        palette = data.get("palette")
        return cls(
            mode=data["mode"],
            num_labels=int(data["num_labels"]),
            ignore_index=int(data.get("ignore_index", 255)),
            class_names=list(data.get("class_names") or []),
            palette=None if palette is None else [tuple(c) for c in palette],
            ignore_colors=[tuple(c) for c in data.get("ignore_colors") or []],
        )


def _default_names(mode: str, num_labels: int) -> list[str]:
    if mode in ("binary", "instance"):
        return ["background", "foreground"]
    return [f"class_{i}" for i in range(num_labels)]


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


# --------------------------------------------------------------------------- reading


def _is_ascii(path: Path) -> bool:
    return str(path).isascii()


def _read_bytes(path: Path) -> np.ndarray:
    try:
        return np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read file ({exc.strerror}); "
                           "check permissions.") from exc


def _unreadable(path: Path, page: int | None) -> DatasetError:
    where = f"{path}" if page is None else f"{path} page {page}"
    return DatasetError(f"{where}: unreadable or corrupt image file (OpenCV could not decode it); "
                        "re-export it as PNG/TIFF or remove it.")


def _decode(path: Path, page: int | None) -> np.ndarray:
    """Decodes one image (or one page of a stack) as stored; JPEGs upright."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: file not found; check the path.")
    flags = cv2.IMREAD_UNCHANGED  # keeps 16-bit, float and alpha as stored
    if path.suffix.lower() in (".jpg", ".jpeg"):
        # Phone photos store their rotation in EXIF; annotation tools show them
        # upright, so their masks are upright too. These flags apply the EXIF
        # orientation (IMREAD_UNCHANGED ignores it) and keep grey JPEGs grey.
        flags = cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH
    try:
        if page is None:
            # cv2.imread cannot open non-ASCII paths on some platforms.
            arr = (cv2.imread(str(path), flags) if _is_ascii(path)
                   else cv2.imdecode(_read_bytes(path), flags))
        else:
            arr = _decode_page(path, page, flags)
    except cv2.error:
        arr = None
    if arr is None or arr.size == 0:
        if page is not None and 0 < _page_count(path) <= page:
            raise DatasetError(f"{path}: has {_page_count(path)} pages, page {page} requested.")
        raise _unreadable(path, page)
    return arr


def _decode_page(path: Path, page: int, flags: int) -> np.ndarray | None:
    if _is_ascii(path):
        ok, mats = cv2.imreadmulti(str(path), start=page, count=1, flags=flags)
        return mats[0] if ok and mats else None
    ok, mats = cv2.imdecodemulti(_read_bytes(path), flags)
    return mats[page] if ok and len(mats) > page else None


def _page_count(path: Path) -> int:
    """Number of pages in a (multi-page) image; 0 when unreadable."""
    try:
        if _is_ascii(path):
            return int(cv2.imcount(str(path)))
        ok, mats = cv2.imdecodemulti(_read_bytes(path), cv2.IMREAD_UNCHANGED)
        return len(mats) if ok else 0
    except (cv2.error, DatasetError):
        return 0


def _png_header(path: Path) -> tuple[int | None, list[tuple[int, int, int]] | None]:
    """Returns (PNG colour type, PLTE palette) without decoding pixels.

    Colour type 3 is an indexed PNG (Pascal VOC style), 4 is grey + alpha.
    Returns (None, None) for non-PNG or malformed files.
    """
    if path.suffix.lower() != ".png":
        return None, None
    color_type, palette = None, None
    try:
        with open(path, "rb") as fh:
            if fh.read(8) != b"\x89PNG\r\n\x1a\n":
                return None, None
            while True:
                head = fh.read(8)
                if len(head) < 8:
                    break
                length, ctype = struct.unpack(">I4s", head)
                if ctype == b"IHDR":
                    color_type = fh.read(length)[9]
                elif ctype == b"PLTE":
                    raw = fh.read(length)
                    palette = [tuple(raw[i:i + 3]) for i in range(0, len(raw) - 2, 3)]
                elif ctype == b"IDAT":
                    break
                else:
                    fh.seek(length, 1)
                fh.seek(4, 1)  # CRC
    except (OSError, IndexError, struct.error):
        return None, None
    return color_type, palette


def read_image(path: str | Path, page: int | None = None, keep_alpha: bool = False) -> np.ndarray:
    """Reads an image as stored, channels last, RGB order.

    Grey images get a channel axis; BGR(A) becomes RGB(A); the alpha channel
    of RGBA and grey+alpha files is dropped unless ``keep_alpha`` (alpha is
    almost always a constant export artefact, and keeping it would make
    channel counts disagree across a dataset). Files with more than 4
    channels (multispectral TIFF) are returned untouched.

    Args:
        path: Image file (png, tif/tiff, jpg/jpeg, bmp, gif).
        page: Page index inside a multi-page TIFF; None reads the first page.
        keep_alpha: Keep the alpha channel of RGBA / grey+alpha images.

    Returns:
        (H, W, C) array with C >= 1 and the stored dtype (uint8/uint16/float32).

    Raises:
        DatasetError: The file is missing, unreadable or corrupt.
    """
    path = Path(path)
    arr = _decode(path, page)
    if arr.ndim == 2:
        return arr[..., None]
    channels = arr.shape[2]
    if channels == 2:
        return arr if keep_alpha else arr[..., :1]
    if channels == 4 and _png_header(path)[0] == 4:  # grey+alpha PNG decoded as BGRA
        return arr[..., [0, 3]] if keep_alpha else arr[..., :1]
    if channels == 3:
        return np.ascontiguousarray(arr[..., ::-1])
    if channels == 4:
        rgba = arr[..., [2, 1, 0, 3]]
        return rgba if keep_alpha else np.ascontiguousarray(rgba[..., :3])
    return arr


def read_mask_raw(path: str | Path, page: int | None = None,
                  expand_palette: bool = False) -> np.ndarray:
    """Reads a mask as stored, before any class decoding.

    Single-channel masks come back (H, W). Colour masks come back (H, W, 3)
    RGB with alpha dropped, except when all three channels are equal, which
    is a grey mask saved as RGB and comes back (H, W). Indexed (palette)
    PNGs come back as their (H, W) palette indices, which is how Pascal VOC
    style datasets store class ids, unless ``expand_palette`` asks for the
    colours (needed when classes.json defines the classes by colour).

    Args:
        path: Mask file.
        page: Page index inside a multi-page TIFF stack.
        expand_palette: Return colours instead of indices for indexed PNGs.

    Returns:
        (H, W) or (H, W, 3) array with the stored dtype.

    Raises:
        DatasetError: Unreadable file or an unsupported number of channels.
    """
    path = Path(path)
    if path.is_dir():  # one binary mask per object
        return np.where(_object_masks(path) > 0, 255, 0).astype(np.uint8)
    arr = _decode(path, page)
    if arr.ndim == 2:
        return arr
    channels = arr.shape[2]
    if channels in (1, 2):  # grey or grey+alpha
        return arr[..., 0]
    if channels not in (3, 4):
        raise DatasetError(f"{path}: mask has {channels} channels; save masks as single-channel "
                           "(class indices) or RGB (colours listed in classes.json).")
    color_type, palette = _png_header(path)
    if color_type == 3 and palette and not expand_palette:
        indices = _palette_indices(arr[..., :3], palette)
        if indices is not None:
            return indices
    if color_type == 4:
        return arr[..., 0]
    rgb = np.ascontiguousarray(arr[..., 2::-1])
    if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
        return rgb[..., 0].copy()
    return rgb


def _object_masks(folder: Path) -> np.ndarray:
    """Instance ids (int32) from a folder holding one binary mask per object
    (Data Science Bowl 2018): object k (in name order) gets id k + 1."""
    files = [p for p in sorted(folder.iterdir(), key=lambda p: _natural_key(p.name))
             if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")]
    if not files:
        raise DatasetError(f"{folder}: no mask files; put one binary mask per object there.")
    ids = None
    for k, file in enumerate(files, start=1):
        raw = read_mask_raw(file)
        if raw.ndim == 3:
            raw = raw.max(axis=-1)
        if ids is None:
            ids = np.zeros(raw.shape, np.int32)
        elif raw.shape != ids.shape:
            raise DatasetError(f"{file}: object mask is {raw.shape[1]}x{raw.shape[0]}, the other "
                               f"masks in {folder} are {ids.shape[1]}x{ids.shape[0]}; all must "
                               "have the image's size.")
        ids[raw > 0] = k  # where objects overlap, the later one wins
    return ids


def _palette_indices(bgr: np.ndarray, palette: list[tuple[int, int, int]]) -> np.ndarray | None:
    """Maps colours decoded from an indexed PNG back to palette indices.

    OpenCV always expands palettes to colours. Duplicate palette colours
    (usually black padding) resolve to the first index holding that colour.
    """
    keys = _pack_rgb(bgr[..., ::-1])
    lut = {}
    for index, color in enumerate(palette):
        lut.setdefault(int(_pack_rgb(np.array(color))), index)
    pal_keys = np.array(sorted(lut), dtype=np.int64)
    pal_index = np.array([lut[k] for k in sorted(lut)], dtype=np.int32)
    pos = np.clip(np.searchsorted(pal_keys, keys), 0, len(pal_keys) - 1)
    if not np.all(pal_keys[pos] == keys):
        return None  # not explainable by the palette: fall back to colours
    dtype = np.uint8 if len(palette) <= 256 else np.uint16
    return pal_index[pos].astype(dtype)


def read_instances(path: str | Path, page: int | None = None) -> np.ndarray:
    """Reads an instance-id map (0 = background, 1..N = objects).

    16-bit PNG/TIFF ids are kept. Colour-coded instance maps (each object a
    random colour) are relabelled to consecutive ids with black as 0.

    Args:
        path: Instance map file (16-bit png or tif recommended).
        page: Page index inside a multi-page TIFF stack.

    Returns:
        (H, W) int32 array.

    Raises:
        DatasetError: Unreadable file or non-integer ids.
    """
    path = Path(path)
    if path.is_dir():  # one binary mask per object
        return _object_masks(path)
    raw = read_mask_raw(path, page)  # indexed PNG: palette indices are the ids
    if raw.ndim == 3:
        keys = _pack_rgb(raw)
        colors, inverse = np.unique(keys, return_inverse=True)
        ids = inverse.reshape(keys.shape).astype(np.int32)
        return ids if colors[0] == 0 else ids + 1  # keep black as background 0
    if raw.dtype.kind == "f" and not np.all(np.isfinite(raw) & (raw == np.round(raw))):
        raise DatasetError(f"{path}: instance map has non-integer values; save instance ids as "
                           "16-bit integer PNG/TIFF.")
    return raw.astype(np.int32)


# --------------------------------------------------------------------------- labels


def _pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """Packs (..., 3) RGB (any integer depth up to 16 bit) into int64 keys."""
    rgb = np.asarray(rgb).astype(np.int64)
    return (rgb[..., 0] << 32) | (rgb[..., 1] << 16) | rgb[..., 2]


def _grey_keys(values: np.ndarray) -> np.ndarray:
    """Packs grey values v into the key of colour (v, v, v)."""
    v = np.asarray(values).astype(np.int64)
    return (v << 32) | (v << 16) | v


def _unpack_key(key: int) -> tuple[int, int, int]:
    key = int(key)
    return key >> 32, (key >> 16) & 0xFFFF, key & 0xFFFF


def _fmt_values(values: Sequence, limit: int = 10) -> str:
    shown = ", ".join(str(_as_number(v)) for v in list(values)[:limit])
    return shown + (f", ... ({len(values)} in all)" if len(values) > limit else "")


def _as_number(value) -> int | float:
    value = float(value)
    return int(value) if value.is_integer() else value


def _parse_color(value, path: Path, what: str) -> tuple[int, int, int]:
    if isinstance(value, str) and re.fullmatch(r"#?[0-9a-fA-F]{6}", value):
        h = value.lstrip("#")
        return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)
    if (isinstance(value, (list, tuple)) and len(value) == 3
            and all(isinstance(c, int) and 0 <= c <= 255 for c in value)):
        return tuple(value)
    raise DatasetError(f"{path}: {what} has colour {value!r}; use [r, g, b] with integers "
                       "0-255 or \"#rrggbb\".")


def _color_list(value, path: Path, what: str) -> list[tuple[int, int, int]]:
    """Accepts one colour or a list of colours."""
    if value is None:
        return []
    if isinstance(value, str) or (isinstance(value, (list, tuple)) and value
                                  and isinstance(value[0], int)):
        return [_parse_color(value, path, what)]
    if isinstance(value, (list, tuple)):
        return [_parse_color(v, path, what) for v in value]
    raise DatasetError(f"{path}: {what} must be a list of [r, g, b] colours.")


def load_classes_json(path: str | Path) -> tuple[list[str], list[tuple[int, int, int]] | None,
                                                  list[tuple[int, int, int]]]:
    """Loads class names and colours from a classes.json file.

    Accepted forms (classes in class-index order)::

        [{"name": "building", "color": [128, 0, 0]},
         {"name": "void", "color": [0, 0, 0], "ignore": true}]
        {"classes": [...as above...], "ignore": [[0, 0, 0]]}      # or "void": [...]
        ["background", "cell"]                                   # names only

    Entries marked ``"ignore": true`` (or ``"void": true``) do not take a
    class index: they list colours decoded to ``ignore_index`` (MSRC-v2 void
    is black). Colours are [r, g, b] or "#rrggbb".

    Args:
        path: The classes.json file.

    Returns:
        (names, palette, ignore_colors): palette is None for a names-only file.

    Raises:
        DatasetError: Unreadable, invalid JSON, bad colours or duplicates.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read ({exc.strerror}).") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: invalid JSON ({exc}); fix it, {CLASSES_HINT}.") from exc
    entries, ignore_colors = _classes_entries(data, path)
    names, colors = [], []
    for i, entry in enumerate(entries):
        name, color, is_void = _classes_entry(entry, i, path)
        if is_void:
            ignore_colors.append(color)
        else:
            names.append(name)
            colors.append(color)
    return names, _check_palette(names, colors, ignore_colors, path), ignore_colors


def load_class_dict_csv(path: str | Path) -> tuple[list[str], list[tuple[int, int, int]],
                                                    list[tuple[int, int, int]]]:
    """Class names and colours from a ``class_dict.csv`` (``name,r,g,b`` per
    line, as CamVid and DeepGlobe ship them), in class-index order. Classes
    named void / unlabelled / ignore are decoded to ``ignore_index``.

    Returns:
        (names, palette, ignore_colors) like :func:`load_classes_json`.
    """
    import csv

    path = Path(path)
    try:
        rows = list(csv.reader(path.read_text(encoding="utf-8-sig").splitlines()))
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read ({exc}).") from exc
    rows = [[c.strip() for c in r] for r in rows if any(c.strip() for c in r)]
    header = [c.lower() for c in rows[0]] if rows else []
    cols = {k: header.index(k) for k in ("r", "g", "b") if k in header}
    if len(cols) < 3:
        raise DatasetError(f"{path}: expected a header with name,r,g,b columns, got {rows[:1]}.")
    name_col = next((i for i, c in enumerate(header) if c in ("name", "class", "class_name")), 0)
    names, colors, ignore_colors = [], [], []
    for line, row in enumerate(rows[1:], start=2):
        try:
            color = tuple(int(row[cols[k]]) for k in ("r", "g", "b"))
        except (ValueError, IndexError):
            raise DatasetError(f"{path}: line {line} ({','.join(row)}) has no integer r,g,b.") from None
        color = _parse_color(list(color), path, f"line {line}")
        if row[name_col].lower() in VOID_CLASS_NAMES:
            ignore_colors.append(color)
        else:
            names.append(row[name_col])
            colors.append(color)
    return names, _check_palette(names, colors, ignore_colors, path), ignore_colors


def _classes_entries(data, path: Path) -> tuple[list, list[tuple[int, int, int]]]:
    if isinstance(data, list):
        return data, []
    if isinstance(data, dict) and isinstance(data.get("classes"), list):
        ignore = (_color_list(data.get("ignore"), path, '"ignore"')
                  + _color_list(data.get("void"), path, '"void"'))
        return data["classes"], ignore
    raise DatasetError(f"{path}: expected a list of classes or an object with a \"classes\" "
                       f"list; {CLASSES_HINT}.")


def _classes_entry(entry, i: int, path: Path) -> tuple[str, tuple | None, bool]:
    if isinstance(entry, str):
        return entry, None, False
    if not isinstance(entry, dict):
        raise DatasetError(f"{path}: class entry {i} is {entry!r}; {CLASSES_HINT}.")
    name = str(entry.get("name", f"class_{i}"))
    raw_color = entry.get("color", entry.get("colour", entry.get("rgb")))
    color = None if raw_color is None else _parse_color(raw_color, path, f"class {name!r}")
    is_void = bool(entry.get("ignore") or entry.get("void"))
    if is_void and color is None:
        raise DatasetError(f"{path}: ignore entry {name!r} needs a \"color\".")
    return name, color, is_void


def _check_palette(names: list[str], colors: list, ignore_colors: list, path: Path):
    if not names:
        raise DatasetError(f"{path}: no classes defined; {CLASSES_HINT}.")
    with_color = [c is not None for c in colors]
    if any(with_color) and not all(with_color):
        missing = [n for n, c in zip(names, colors) if c is None]
        raise DatasetError(f"{path}: classes {missing} have no \"color\"; give every class a "
                           "colour (RGB masks) or none (index masks).")
    if not any(with_color):
        return None
    dupes = [c for c, n in Counter(colors + ignore_colors).items() if n > 1]
    if dupes:
        raise DatasetError(f"{path}: colours {dupes} are listed more than once; each colour "
                           "must map to exactly one class.")
    return colors


def decode_mask(raw: np.ndarray, spec: LabelSpec, strict: bool = True) -> np.ndarray:
    """Decodes a raw mask (from :func:`read_mask_raw`) to class indices.

    Args:
        raw: (H, W) or (H, W, 3) mask as stored.
        spec: How to decode it.
        strict: Raise on values the spec does not explain (out-of-range
            indices, unknown colours, non-binary values). When False, such
            pixels become ``spec.ignore_index`` (binary: any non-zero is 1).

    Returns:
        (H, W) int32 class indices; void pixels equal ``spec.ignore_index``.

    Raises:
        DatasetError: ``strict`` and the mask has values the spec does not
            explain, or the mask's shape does not fit the mode.
    """
    raw = np.asarray(raw)
    if raw.ndim == 3 and raw.shape[2] == 1:
        raw = raw[..., 0]
    if spec.mode == "palette":
        return _decode_palette(raw, spec, strict)
    if raw.ndim != 2:
        raise DatasetError(f"mask has shape {raw.shape}, an RGB mask in {spec.mode} mode; "
                           "add classes.json mapping colours to classes, see README.")
    if raw.dtype.kind == "f" and not np.all(np.isfinite(raw) & (raw == np.round(raw))):
        raise DatasetError("mask has non-integer values; save masks as integer PNG/TIFF.")
    if spec.mode == "binary":
        return _decode_binary(raw, strict)
    if spec.mode == "instance":
        return (raw != 0).astype(np.int32)
    return _decode_index(raw, spec, strict)


def _binary_threshold(max_value) -> int:
    """Foreground is ``value > threshold``: 0 for 0/1 masks, mid-range otherwise.

    A mid-range threshold (not ``!= 0``) keeps JPEG-compressed 0/255 masks
    (Kvasir-SEG style) from turning compression noise into foreground.
    """
    if max_value <= 1:
        return 0
    return 127 if max_value <= 255 else 32767


def _decode_binary(raw: np.ndarray, strict: bool) -> np.ndarray:
    if strict and raw.size and raw.min() < 0:
        raise DatasetError("binary mask has negative values; use 0/255 or 0/1.")
    return (raw > _binary_threshold(raw.max() if raw.size else 0)).astype(np.int32)


def _decode_index(raw: np.ndarray, spec: LabelSpec, strict: bool) -> np.ndarray:
    out = raw.astype(np.int32)
    bad = ((out < 0) | (out >= spec.num_labels)) & (out != spec.ignore_index)
    if bad.any():
        if strict:
            found = np.unique(out[bad])
            raise DatasetError(f"label values {_fmt_values(found)} are outside "
                               f"0..{spec.num_labels - 1} and are not the ignore value "
                               f"{spec.ignore_index}; fix the mask or set num_classes / "
                               "ignore_index.")
        out[bad] = spec.ignore_index
    return out


def _palette_lookup(spec: LabelSpec) -> tuple[np.ndarray, np.ndarray]:
    """Sorted colour keys and their class index (ignore colours -> ignore_index)."""
    pairs = {int(_pack_rgb(np.array(c))): i for i, c in enumerate(spec.palette or [])}
    for c in spec.ignore_colors:
        pairs[int(_pack_rgb(np.array(c)))] = spec.ignore_index
    keys = np.array(sorted(pairs), dtype=np.int64)
    return keys, np.array([pairs[k] for k in keys.tolist()], dtype=np.int32)


def _decode_palette(raw: np.ndarray, spec: LabelSpec, strict: bool) -> np.ndarray:
    if raw.ndim == 2:
        keys = _grey_keys(raw)  # equal-channel RGB masks arrive as grey
    elif raw.ndim == 3 and raw.shape[2] in (3, 4):
        keys = _pack_rgb(raw[..., :3])
    else:
        raise DatasetError(f"mask has shape {raw.shape}; palette masks must be RGB (H, W, 3).")
    pal_keys, pal_class = _palette_lookup(spec)
    pos = np.clip(np.searchsorted(pal_keys, keys), 0, len(pal_keys) - 1)
    known = pal_keys[pos] == keys
    out = np.where(known, pal_class[pos], spec.ignore_index).astype(np.int32)
    if strict and not known.all():
        colors = [_unpack_key(k) for k in np.unique(keys[~known])]
        raise DatasetError(f"colours {_fmt_colors(colors)} are not in classes.json; add them "
                           "(mark void colours with \"ignore\": true).")
    return out


def _fmt_colors(colors: Sequence[tuple[int, int, int]], limit: int = 5) -> str:
    shown = ", ".join(f"({r}, {g}, {b})" for r, g, b in list(colors)[:limit])
    return shown + (f" and {len(colors) - limit} more" if len(colors) > limit else "")


def load_mask(path: str | Path, spec: LabelSpec, page: int | None = None,
              strict: bool = True) -> np.ndarray:
    """Reads and decodes a mask file; errors name the file.

    Args:
        path: Mask file.
        spec: How to decode it.
        page: Page index inside a multi-page TIFF stack.
        strict: See :func:`decode_mask`.

    Returns:
        (H, W) int32 class indices.

    Raises:
        DatasetError: Unreadable file or values the spec does not explain.
    """
    raw = read_mask_raw(path, page, expand_palette=spec.mode == "palette")
    try:
        return decode_mask(raw, spec, strict=strict)
    except DatasetError as exc:
        where = f"{path}" if page is None else f"{path} page {page}"
        raise DatasetError(f"{where}: {exc}") from None


def load_sample(sample: Sample, spec: LabelSpec,
                keep_alpha: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """Reads one sample's image and decoded mask.

    Args:
        sample: The sample.
        spec: Label spec used to decode the mask.
        keep_alpha: See :func:`read_image`.

    Returns:
        (image (H, W, C), labels (H, W) int32 or None for unlabelled samples).

    Raises:
        DatasetError: Unreadable files, bad label values or size mismatch.
    """
    image = read_image(sample.image_path, sample.page, keep_alpha=keep_alpha)
    if sample.mask_path is None:
        return image, None
    labels = load_mask(sample.mask_path, spec, sample.page)
    if labels.shape != image.shape[:2]:
        raise DatasetError(_size_problem(sample, image.shape[:2], labels.shape))
    return image, labels


# --------------------------------------------------------------------------- names


def _natural_key(text: str) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", text)]


# --------------------------------------------------------------------------- label inference


@dataclass
class _MaskStat:
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


def _mask_stat(sample: Sample, expand_palette: bool) -> _MaskStat:
    """Reads one mask and counts its distinct values.

    Raises:
        DatasetError: Unreadable mask, non-integer values or too many values.
    """
    raw = read_mask_raw(sample.mask_path, sample.page, expand_palette=expand_palette)
    where = f"{sample.mask_path}" + ("" if sample.page is None else f" page {sample.page}")
    rgb = raw.ndim == 3
    flat = _pack_rgb(raw).ravel() if rgb else raw.ravel()
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
        hint = _LOSSY_HINT if sample.mask_path.suffix.lower() in _LOSSY_EXTS else ""
        raise DatasetError(f"{where}: mask has {len(values)} distinct values, too many for "
                           "class labels; is it an image or an instance map (put those in "
                           f"instances/)?{hint}")
    return _MaskStat(sample, rgb, values, counts, raw.shape[:2], str(raw.dtype))


def _load_classes(root: Path | None, samples: Iterable[Sample], problems: list[str]):
    """Loads the one classes.json that applies, or None."""
    from .layouts import _classes_candidates
    paths = _classes_candidates(root, samples)
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
    return loaded[0][1] if loaded else None


def _rgb_without_classes(rgb: list[_MaskStat]) -> str:
    """One problem for all RGB masks, with a classes.json to start from."""
    totals: Counter = Counter()
    for stat in rgb:
        totals.update(dict(zip(stat.values.tolist(), stat.counts.tolist())))
    colors = [_unpack_key(k) for k, _ in totals.most_common(64)]
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


def _infer(stats: list[_MaskStat], classes, ignore_index: int, num_classes: int | None,
           problems: list[str], warnings: list[str]) -> LabelSpec | None:
    """Infers the label spec from per-mask value statistics."""
    names, palette, ignore_colors = classes or ([], None, [])
    if palette is not None:
        return _palette_spec(names, palette, ignore_colors, ignore_index, num_classes, problems)
    rgb = [s for s in stats if s.rgb]
    if rgb:
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
    return _index_spec(grey, names, ignore_index, num_classes, problems, warnings)


def _grey_coded_spec(stats: list[_MaskStat], names: list[str], ignore_index: int,
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
    warnings.append(f"masks hold the grey levels {_fmt_values(levels)}, read as {len(classes)} "
                    f"classes ({mapping})" + ("" if void_is_class or ignore_index not in levels
                                              else f"; {ignore_index} is void") + ".")
    class_names = names if len(names) == len(classes) else [f"level_{v}" for v in classes]
    ignore_colors = [] if void_is_class or ignore_index not in levels else \
        [(ignore_index,) * 3]
    return LabelSpec("palette", len(classes), ignore_index, class_names,
                     [(v, v, v) for v in classes], ignore_colors)


def _are_instance_maps(stats: list[_MaskStat]) -> bool:
    """16-bit masks numbering their objects (cell tracking challenge, BBBC):
    ids beyond 8 bits, or typically 8 or more ids per image. A few values
    (class indices saved as 16-bit) do not count; num_classes overrides."""
    if not stats or any(s.dtype not in ("uint16", "int32") for s in stats):
        return False
    if any(s.values.max() > 255 for s in stats):
        return True
    return float(np.median([np.count_nonzero(s.values) for s in stats])) >= 8


def _is_lossy(stat: _MaskStat) -> bool:
    return stat.sample.mask_path.suffix.lower() in _LOSSY_EXTS


def _is_near_binary(stat: _MaskStat) -> bool:
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


def _check_noise(stats: list[_MaskStat], problems: list[str], warnings: list[str]) -> None:
    """Flags masks whose values look like damaged binary masks, not class indices."""
    lossy = [s for s in stats if _is_lossy(s) and not _is_binary_file(s.values)]
    for s in lossy:
        problems.append(f"{s.where}: JPEG mask with {len(s.values)} distinct values "
                        f"({_fmt_values(s.values, 6)}); JPEG compression alters mask values, "
                        "re-export the masks as PNG.")
    total = sum(int(s.counts.sum()) for s in stats)
    extremes = sum(int(s.counts[(s.values == 0) | (s.values == 255)].sum()) for s in stats)
    others = set().union(*(s.values.tolist() for s in stats)) - {0, 255}
    if not lossy and len(others) > 2 and total and extremes / total > 0.98:
        warnings.append("masks are almost all 0/255 plus rare values "
                        f"{_fmt_values(sorted(others), 6)}; if they are binary masks damaged "
                        "by resizing, re-export them with nearest-neighbour interpolation.")


def _binary_ok(names: list[str], num_classes: int | None) -> bool:
    # num_classes=1 is the usual "one sigmoid output" way of saying binary.
    return num_classes in (None, 1, 2) and len(names) in (0, 1, 2)


def _binary_spec(stats: list[_MaskStat], names: list[str], ignore_index: int,
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


def _index_spec(stats: list[_MaskStat], names: list[str], ignore_index: int,
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
        warnings.append(f"classes {_fmt_values(absent)} never appear in the masks.")
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


def _labelled(samples) -> list[Sample]:
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
    labelled = _labelled(samples)
    problems: list[str] = []
    classes = _load_classes(None if root is None else Path(root), labelled, problems)
    expand = classes is not None and classes[1] is not None
    stats = _collect_stats(labelled, expand, problems)
    spec = _infer(stats, classes, ignore_index, num_classes, problems, [])
    if problems or spec is None:
        raise DatasetError(problems or ["could not infer the label encoding."])
    return spec


def _collect_stats(samples: Sequence[Sample], expand_palette: bool,
                   problems: list[str]) -> list[_MaskStat]:
    stats = []
    for sample in samples:
        try:
            stats.append(_mask_stat(sample, expand_palette))
        except DatasetError as exc:
            problems.extend(exc.problems)
    return stats


# --------------------------------------------------------------------------- validation


def _stat_classes(stat: _MaskStat, spec: LabelSpec) -> tuple[np.ndarray, np.ndarray]:
    """(class index, explained?) per distinct value of a mask."""
    values = stat.values.astype(np.int64)
    if spec.mode == "binary":
        fg = values > _binary_threshold(values.max() if len(values) else 0)
        return fg.astype(np.int64), values >= 0
    if spec.mode == "instance":
        return (values != 0).astype(np.int64), np.ones(len(values), bool)
    if spec.mode == "index":
        known = ((values >= 0) & (values < spec.num_labels)) | (values == spec.ignore_index)
        return values, known
    keys = values if stat.rgb else _grey_keys(values)
    pal_keys, pal_class = _palette_lookup(spec)
    pos = np.clip(np.searchsorted(pal_keys, keys), 0, len(pal_keys) - 1)
    return pal_class[pos].astype(np.int64), pal_keys[pos] == keys


def _validate_stat(stat: _MaskStat, spec: LabelSpec) -> str | None:
    """A problem message when a mask holds values the spec does not explain."""
    _, known = _stat_classes(stat, spec)
    bad = ~known
    if not bad.any():
        return None
    hint = _LOSSY_HINT if stat.sample.mask_path.suffix.lower() in _LOSSY_EXTS else ""
    if spec.mode == "palette":
        order = np.argsort(-stat.counts[bad], kind="stable")
        keys = stat.values[bad][order] if stat.rgb else _grey_keys(stat.values[bad][order])
        colors = [_unpack_key(k) for k in keys]
        return (f"{stat.where}: colours {_fmt_colors(colors)} are not in classes.json; add them "
                f"(mark void colours with \"ignore\": true).{hint}")
    return (f"{stat.where}: label values {_fmt_values(stat.values[bad])} are outside "
            f"0..{spec.num_labels - 1} and are not the ignore value {spec.ignore_index}; fix the "
            f"mask or pass num_classes / ignore_index to match it.{hint}")


def _class_counts(stat: _MaskStat, spec: LabelSpec) -> np.ndarray:
    """Pixels per class, with the ignore count last."""
    classes, known = _stat_classes(stat, spec)
    out = np.zeros(spec.num_labels + 1, dtype=np.int64)
    ignore = known & (classes == spec.ignore_index)
    valid = known & ~ignore
    np.add.at(out, classes[valid], stat.counts[valid])
    out[-1] = stat.counts[ignore].sum()
    return out


def _size_problem(sample: Sample, image_hw, mask_hw, what: str = "mask") -> str:
    path = sample.mask_path if what == "mask" else sample.instance_path
    where = f"{path}" if sample.page is None else f"{path} page {sample.page}"
    hint = (" It looks rotated: check for EXIF orientation in the image or mask."
            if tuple(mask_hw) == tuple(image_hw)[::-1] else "")
    return (f"{where}: {what} size {_hw(mask_hw)} differs from its image {sample.image_path} "
            f"{_hw(image_hw)} (HxW); resize or re-export the {what} at the image's size.{hint}")


def _hw(shape) -> str:
    return f"{shape[0]}x{shape[1]}"


@dataclass
class _ImageInfo:
    sample: Sample
    split: str
    shape: tuple[int, ...]
    dtype: str


def _check_sample(sample: Sample, split: str, expand_palette: bool, problems: list[str],
                  images: list[_ImageInfo], stats: list[tuple[str, _MaskStat]]) -> None:
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
        _check_instances(sample, image.shape[:2], problems)


def _check_mask(sample: Sample, split: str, image: np.ndarray | None, expand_palette: bool,
                problems: list[str], stats: list[tuple[str, _MaskStat]]) -> None:
    try:
        stat = _mask_stat(sample, expand_palette)
    except DatasetError as exc:
        problems.extend(exc.problems)
        return
    stats.append((split, stat))
    if image is not None and stat.shape != image.shape[:2]:
        problems.append(_size_problem(sample, image.shape[:2], stat.shape))


def _check_instances(sample: Sample, image_hw, problems: list[str]) -> None:
    try:
        inst = read_instances(sample.instance_path, sample.page)
    except DatasetError as exc:
        problems.extend(exc.problems)
        return
    if inst.shape != tuple(image_hw):
        problems.append(_size_problem(sample, image_hw, inst.shape, what="instance map"))


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
        root: Dataset root (see module docstring for layouts).
        num_classes: Number of classes when known; inferred otherwise.
        ignore_index: Void value in index masks / output value for void.

    Returns:
        A DatasetReport; ``report.ok`` is True when nothing needs fixing.
    """
    from .layouts import _discover
    root, samples, problems, warnings = _discover(Path(root))
    labelled = _labelled(samples)
    classes = _load_classes(root, labelled, problems)
    expand = classes is not None and classes[1] is not None
    images: list[_ImageInfo] = []
    stats: list[tuple[str, _MaskStat]] = []
    for split, group in samples.items():
        for sample in group:
            _check_sample(sample, split, expand, problems, images, stats)
    _check_channels(images, problems, warnings)
    if not labelled and samples:
        problems.append(f"{root}: no labelled samples (only unlabelled test images); add "
                        "masks for training.")
    spec = None
    if labelled:
        spec = _infer([s for _, s in stats], classes, ignore_index, num_classes, problems,
                      warnings)
    if spec is not None:
        problems.extend(p for _, s in stats if (p := _validate_stat(s, spec)))
    if spec is not None and spec.mode == "instance":  # the masks are the instance maps too
        samples = {k: [s if s.instance_path or s.mask_path is None
                       else dataclasses.replace(s, instance_path=s.mask_path) for s in v]
                   for k, v in samples.items()}
    summary = _summarise(root, samples, images, stats, spec)
    return DatasetReport(root, samples, spec, problems, warnings, summary)


def load_dataset(root: str | Path, num_classes: int | None = None,
                 ignore_index: int = 255) -> tuple[dict[str, list[Sample]], LabelSpec]:
    """Discovers and validates a dataset, ready for the input pipeline.

    Args:
        root: Dataset root (see module docstring for layouts).
        num_classes: Number of classes when known; inferred otherwise.
        ignore_index: Void value in index masks / output value for void.

    Returns:
        (samples per split as in :func:`find_samples`, LabelSpec).

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
               stats: list[tuple[str, _MaskStat]], spec: LabelSpec | None) -> dict:
    """Plain-data summary: per-split counts, sizes, channels, dtypes, class pixels."""
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
    summary = {"root": str(root), "splits": splits, "label": None}
    if spec is not None:
        counts = {}
        for split, stat in stats:
            counts.setdefault(split, np.zeros(spec.num_labels + 1, np.int64))
            counts[split] += _class_counts(stat, spec)
        summary["label"] = {**spec.to_dict(),
                            "pixel_counts": {k: v.tolist() for k, v in counts.items()}}
    return summary


def _table(rows: list[list[str]], right: set[int] = frozenset()) -> list[str]:
    """Aligns rows into columns; ``right`` holds right-aligned column indices."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(c.rjust(w) if i in right else c.ljust(w)
                             for i, (c, w) in enumerate(zip(row, widths))).rstrip()
            for row in rows]


def _fmt_sizes(sizes: list[tuple[tuple[int, int], int]]) -> str:
    if not sizes:
        return "-"
    if len(sizes) <= 3:
        return ", ".join(_hw(hw) for hw, _ in sizes)
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
