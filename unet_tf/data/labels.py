"""Masks and how they encode classes: :class:`LabelSpec`, reading masks and
instance maps, palettes (classes.json, class_dict.csv) and decoding masks to
class indices.

Class-index masks are (H, W) int32; void pixels hold ``spec.ignore_index``.
Which encoding a dataset uses is worked out in
:mod:`unet_tf.data.label_inference`. Pure numpy + OpenCV; never imports
TensorFlow.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import DatasetError
from .images import decode_as_stored, png_header, read_image
from .samples import (CLASSES_HINT, IMAGE_EXTENSIONS, MAX_CLASSES, VOID_CLASS_NAMES, Sample,
                      natural_key)

__all__ = [
    "LabelSpec",
    "decode_mask",
    "load_class_dict_csv",
    "load_classes_json",
    "load_mask",
    "load_sample",
    "instance_problem",
    "read_instances",
    "read_mask_raw",
]

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


# --------------------------------------------------------------------------- reading


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
    arr = decode_as_stored(path, page)
    if arr.ndim == 2:
        return arr
    channels = arr.shape[2]
    if channels in (1, 2):  # grey or grey+alpha
        return arr[..., 0]
    if channels not in (3, 4):
        raise DatasetError(f"{path}: mask has {channels} channels; save masks as single-channel "
                           "(class indices) or RGB (colours listed in classes.json).")
    color_type, palette = png_header(path)
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
    files = [p for p in sorted(folder.iterdir(), key=lambda p: natural_key(p.name))
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
    keys = pack_rgb(bgr[..., ::-1])
    lut = {}
    for index, color in enumerate(palette):
        lut.setdefault(int(pack_rgb(np.array(color))), index)
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
        DatasetError: Unreadable file, non-integer or negative ids, or ids
            beyond int32.
    """
    path = Path(path)
    if path.is_dir():  # one binary mask per object
        return _object_masks(path)
    raw = read_mask_raw(path, page)  # indexed PNG: palette indices are the ids
    if raw.ndim == 3:
        keys = pack_rgb(raw)
        colors, inverse = np.unique(keys, return_inverse=True)
        ids = inverse.reshape(keys.shape).astype(np.int32)
        return ids if colors[0] == 0 else ids + 1  # keep black as background 0
    where = f"{path}" if page is None else f"{path} page {page}"
    if raw.dtype.kind == "f" and not np.all(np.isfinite(raw) & (raw == np.round(raw))):
        bad = raw[~(np.isfinite(raw) & (raw == np.round(raw)))].flat[0]
        raise DatasetError(f"{where}: instance map has non-integer ids (dtype {raw.dtype}, e.g. "
                           f"{bad}); save instance ids as 16-bit integer PNG/TIFF.")
    if raw.size and raw.dtype.kind in "if" and raw.min() < 0:
        raise DatasetError(f"{where}: instance map has negative ids (smallest {_as_number(raw.min())}); "
                           "ids must be 0 (background) or positive.")
    if raw.size and raw.max() > np.iinfo(np.int32).max:
        raise DatasetError(f"{where}: instance map has ids beyond int32 (largest "
                           f"{_as_number(raw.max())}); renumber the objects (1..N).")
    return raw.astype(np.int32)


#: An instance map whose foreground disagrees with its mask's on more than
#: this share of the pixels either calls foreground is refused.
INSTANCE_MISMATCH = 0.25


def instance_problem(sample: Sample, instances: np.ndarray, labels: np.ndarray,
                     ignore_index: int | None = None, num_labels: int = 2) -> str | None:
    """Why an instance map does not fit its decoded mask, or None when it does.

    The instance map must have the mask's size, and its foreground (ids != 0)
    must be the mask's foreground (classes other than 0): they may differ on
    at most :data:`INSTANCE_MISMATCH` of the pixels either calls foreground
    (touching objects drawn with or without a gap, a few edge pixels), void
    pixels not counted. With more than two classes the instances may cover
    some classes only, so only instance pixels on background count against it.

    Args:
        sample: The sample (for the file names in the message).
        instances: ``(H, W)`` instance ids.
        labels: ``(H, W)`` decoded class indices.
        ignore_index: Void label value.
        num_labels: Classes in the masks (2 for binary / instance data).

    Returns:
        A problem message naming both files, or None.
    """
    where = f"{sample.instance_path}" if sample.page is None else \
        f"{sample.instance_path} page {sample.page}"
    if instances.shape != labels.shape:
        return (f"{where}: instance map size {format_hw(instances.shape)} differs from its mask "
                f"{sample.mask_path} {format_hw(labels.shape)} (HxW); re-export it at the mask's size.")
    valid = labels != ignore_index if ignore_index is not None else np.ones(labels.shape, bool)
    inst_fg = (instances != 0) & valid
    mask_fg = (labels != 0) & valid
    if num_labels > 2:
        off = int(np.count_nonzero(inst_fg & ~mask_fg))
        base = int(np.count_nonzero(inst_fg))
    else:
        off = int(np.count_nonzero(inst_fg ^ mask_fg))
        base = int(np.count_nonzero(inst_fg | mask_fg))
    if off <= max(INSTANCE_MISMATCH * base, 16):
        return None
    what = "lie on the mask's background" if num_labels > 2 else "differ between the two"
    return (f"{where}: instance map does not match its mask {sample.mask_path}: "
            f"{off} of {base} foreground pixels {what} ({100 * off / base:.0f}%; at most "
            f"{100 * INSTANCE_MISMATCH:.0f}% allowed). Is it the instance map of another image?")


# --------------------------------------------------------------------------- labels


def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """Packs (..., 3) RGB (any integer depth up to 16 bit) into int64 keys."""
    rgb = np.asarray(rgb).astype(np.int64)
    return (rgb[..., 0] << 32) | (rgb[..., 1] << 16) | rgb[..., 2]


def grey_keys(values: np.ndarray) -> np.ndarray:
    """Packs grey values v into the key of colour (v, v, v)."""
    v = np.asarray(values).astype(np.int64)
    return (v << 32) | (v << 16) | v


def unpack_key(key: int) -> tuple[int, int, int]:
    """The RGB colour of a :func:`pack_rgb` key."""
    key = int(key)
    return key >> 32, (key >> 16) & 0xFFFF, key & 0xFFFF


def format_values(values: Sequence, limit: int = 10) -> str:
    """The first ``limit`` values as "a, b, ... (n in all)" for messages."""
    shown = ", ".join(str(_as_number(v)) for v in list(values)[:limit])
    return shown + (f", ... ({len(values)} in all)" if len(values) > limit else "")


def _as_number(value) -> int | float:
    value = float(value)
    return int(value) if value.is_integer() else value


def _short_repr(value, limit: int = 60) -> str:
    """repr() for messages, cut to ``limit`` characters (classes.json may hold anything)."""
    try:
        text = repr(value)
    except RecursionError:
        text = f"a deeply nested {type(value).__name__}"
    return text if len(text) <= limit else text[:limit] + "..."


def _parse_color(value, path: Path, what: str) -> tuple[int, int, int]:
    if isinstance(value, str) and re.fullmatch(r"#?[0-9a-fA-F]{6}", value):
        h = value.lstrip("#")
        return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)
    if (isinstance(value, (list, tuple)) and len(value) == 3
            and all(isinstance(c, int) and 0 <= c <= 255 for c in value)):
        return tuple(value)
    raise DatasetError(f"{path}: {what} has colour {_short_repr(value)}; use [r, g, b] with "
                       "integers 0-255 or \"#rrggbb\".")


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
        text = path.read_text(encoding="utf-8")
        if not text.strip():
            raise DatasetError(f"{path}: file is empty ({path.stat().st_size} bytes); "
                               f"{CLASSES_HINT}.")
        data = json.loads(text)
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read ({exc.strerror}).") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: invalid JSON ({exc}); fix it, {CLASSES_HINT}.") from exc
    except RecursionError:  # json gives up on deeply nested lists / objects
        raise DatasetError(f"{path}: JSON nested too deeply to read; {CLASSES_HINT}.") from None
    entries, ignore_colors = _classes_entries(data, path)
    _check_class_count(sum(not _is_void_entry(e) for e in entries), path)
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
    if not rows:
        raise DatasetError(f"{path}: file is empty ({path.stat().st_size} bytes); expected a "
                           "name,r,g,b header and one line per class.")
    _check_class_count(len(rows) - 1, path)
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


def _check_class_count(n: int, path: Path) -> None:
    if n > MAX_CLASSES:
        raise DatasetError(f"{path}: lists {n} classes, more than the limit of {MAX_CLASSES}; "
                           "list one entry per class (not per object or per pixel value).")


def _is_void_entry(entry) -> bool:
    return isinstance(entry, dict) and bool(entry.get("ignore") or entry.get("void"))


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
        raise DatasetError(f"{path}: class entry {i} is {_short_repr(entry)}; {CLASSES_HINT}.")
    name = str(entry.get("name", f"class_{i}"))
    raw_color = entry.get("color", entry.get("colour", entry.get("rgb")))
    color = None if raw_color is None else _parse_color(raw_color, path, f"class {name!r}")
    is_void = _is_void_entry(entry)
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


def binary_threshold(max_value) -> int:
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
    return (raw > binary_threshold(raw.max() if raw.size else 0)).astype(np.int32)


def _decode_index(raw: np.ndarray, spec: LabelSpec, strict: bool) -> np.ndarray:
    out = raw.astype(np.int32)
    bad = ((out < 0) | (out >= spec.num_labels)) & (out != spec.ignore_index)
    if bad.any():
        if strict:
            found = np.unique(out[bad])
            raise DatasetError(f"label values {format_values(found)} are outside "
                               f"0..{spec.num_labels - 1} and are not the ignore value "
                               f"{spec.ignore_index}; fix the mask or set num_classes / "
                               "ignore_index.")
        out[bad] = spec.ignore_index
    return out


def palette_lookup(spec: LabelSpec) -> tuple[np.ndarray, np.ndarray]:
    """Sorted colour keys and their class index (ignore colours -> ignore_index)."""
    pairs = {int(pack_rgb(np.array(c))): i for i, c in enumerate(spec.palette or [])}
    for c in spec.ignore_colors:
        pairs[int(pack_rgb(np.array(c)))] = spec.ignore_index
    keys = np.array(sorted(pairs), dtype=np.int64)
    return keys, np.array([pairs[k] for k in keys.tolist()], dtype=np.int32)


def _decode_palette(raw: np.ndarray, spec: LabelSpec, strict: bool) -> np.ndarray:
    if raw.ndim == 2:
        keys = grey_keys(raw)  # equal-channel RGB masks arrive as grey
    elif raw.ndim == 3 and raw.shape[2] in (3, 4):
        keys = pack_rgb(raw[..., :3])
    else:
        raise DatasetError(f"mask has shape {raw.shape}; palette masks must be RGB (H, W, 3).")
    pal_keys, pal_class = palette_lookup(spec)
    pos = np.clip(np.searchsorted(pal_keys, keys), 0, len(pal_keys) - 1)
    known = pal_keys[pos] == keys
    out = np.where(known, pal_class[pos], spec.ignore_index).astype(np.int32)
    if strict and not known.all():
        colors = [unpack_key(k) for k in np.unique(keys[~known])]
        raise DatasetError(f"colours {format_colors(colors)} are not in classes.json; add them "
                           "(mark void colours with \"ignore\": true).")
    return out


def format_colors(colors: Sequence[tuple[int, int, int]], limit: int = 5) -> str:
    """The first ``limit`` colours as "(r, g, b), ..." for messages."""
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
        raise DatasetError(size_problem(sample, image.shape[:2], labels.shape))
    return image, labels


def size_problem(sample: Sample, image_hw, mask_hw, what: str = "mask") -> str:
    """The problem message for a mask (or instance map) whose size is not its image's."""
    path = sample.mask_path if what == "mask" else sample.instance_path
    where = f"{path}" if sample.page is None else f"{path} page {sample.page}"
    hint = (" It looks rotated: check for EXIF orientation in the image or mask."
            if tuple(mask_hw) == tuple(image_hw)[::-1] else "")
    return (f"{where}: {what} size {format_hw(mask_hw)} differs from its image "
            f"{sample.image_path} {format_hw(image_hw)} (HxW); resize or re-export the {what} "
            f"at the image's size.{hint}")


def format_hw(shape) -> str:
    """"HxW" of a shape."""
    return f"{shape[0]}x{shape[1]}"
