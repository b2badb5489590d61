"""A dataset folder measured without decoding it: image sizes from file headers,
the memory its decoded samples would take, and the quick check that streaming uses.

:func:`image_header` reads height, width, channels and dtype from a PNG, JPEG
or TIFF header (other files are decoded once). :func:`footprint` turns a
header into the bytes :func:`unet_tf.data.pipeline.load_data` keeps in memory
for that sample. :func:`scan_folder` discovers a dataset, reads every header
and infers the label encoding from up to :data:`MAX_SCANNED_MASKS` masks
spread over the dataset: the check a streamed run starts from (the full check,
:func:`unet_tf.data.check.check_dataset`, decodes every file; a streamed run
checks each file as it reads it instead). Pure numpy + OpenCV; never imports
TensorFlow.
"""
from __future__ import annotations

import dataclasses
import logging
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DatasetError
from .check import _check_channels, _ImageInfo
from .images import read_image
from .label_inference import infer_from_stats, labelled_samples, load_classes, mask_stat, validate_stat
from .labels import LabelSpec, size_problem
from .layouts import discover
from .samples import Sample

__all__ = ["MAX_SCANNED_MASKS", "Header", "Survey", "FolderScan", "image_header", "footprint",
           "survey_folder", "scan_folder", "spread"]

logger = logging.getLogger(__name__)

#: Masks decoded to infer the label encoding of a streamed dataset, spread
#: evenly over it (each costs about a millisecond for 512x512): enough to see
#: every class of a dataset whose classes are not very rare; a mask holding a
#: value the spec does not explain fails, naming its file, when it is read.
MAX_SCANNED_MASKS = 500


@dataclass(frozen=True)
class Header:
    """What a file header says about an image as :func:`read_image` returns it."""
    height: int
    width: int
    channels: int
    dtype: str

    @property
    def pixels(self) -> int:
        return self.height * self.width


def _itemsize(dtype: str) -> int:
    # The pipeline keeps uint8, uint16 and float32 as stored and makes any other type float32.
    return np.dtype(dtype).itemsize if dtype in ("uint8", "uint16", "float32") else 4


def footprint(header: Header, *, label_bytes: int = 1, instances: bool = True) -> int:
    """Bytes one decoded sample takes in memory in the in-memory path.

    Pixels as stored, the label (``label_bytes``: 1 for up to 255 classes with
    an 8-bit void value, else 4), the float32 weight map and, for instance maps
    or binary masks (whose connected components are kept), int32 instance ids.
    """
    per_pixel = header.channels * _itemsize(header.dtype) + label_bytes + 4 + (4 if instances else 0)
    return header.pixels * per_pixel


# --------------------------------------------------------------------------- headers
def _png(fh) -> Header | None:
    if fh.read(8) != b"\x89PNG\r\n\x1a\n":
        return None
    length, kind = struct.unpack(">I4s", fh.read(8))
    if kind != b"IHDR" or length < 13:
        return None
    width, height, bits, color = struct.unpack(">IIBB", fh.read(10))
    # read_image drops alpha and expands palettes to RGB.
    channels = {0: 1, 2: 3, 3: 3, 4: 1, 6: 3}.get(color)
    if channels is None:
        return None
    return Header(height, width, channels, "uint16" if bits == 16 else "uint8")


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg(fh) -> Header | None:
    if fh.read(2) != b"\xff\xd8":
        return None
    while True:
        byte = fh.read(1)
        if not byte:
            return None
        if byte != b"\xff":
            continue
        marker = fh.read(1)
        while marker == b"\xff":
            marker = fh.read(1)
        if not marker:
            return None
        code = marker[0]
        if code in (0xD8, 0x01) or 0xD0 <= code <= 0xD7:  # no length field
            continue
        length = struct.unpack(">H", fh.read(2))[0]
        if code in _SOF:
            _, height, width, components = struct.unpack(">BHHB", fh.read(6))
            # EXIF orientation may swap height and width: the area is the same.
            return Header(height, width, 1 if components == 1 else 3, "uint8")
        fh.seek(length - 2, 1)


_TIFF_TYPES = {3: ("H", 2), 4: ("I", 4)}


def _tiff(fh) -> Header | None:
    order = fh.read(2)
    if order not in (b"II", b"MM"):
        return None
    end = "<" if order == b"II" else ">"
    magic, offset = struct.unpack(end + "HI", fh.read(6))
    if magic != 42:  # BigTIFF and others: decode instead
        return None
    fh.seek(offset)
    (count,) = struct.unpack(end + "H", fh.read(2))
    tags = {}
    for _ in range(count):
        tag, kind, n, value = struct.unpack(end + "HHI4s", fh.read(12))
        if kind in _TIFF_TYPES:
            code, size = _TIFF_TYPES[kind]
            tags[tag] = (struct.unpack(end + code, value[:size])[0] if n * size <= 4
                         else ("offset", struct.unpack(end + "I", value)[0], code, size))
    width, height = tags.get(256), tags.get(257)
    if not isinstance(width, int) or not isinstance(height, int):
        return None
    samples = tags.get(277, 1)
    bits = tags.get(258, 1)
    if isinstance(bits, tuple):  # one entry per sample, stored elsewhere: they agree in practice
        _, where, code, size = bits
        here = fh.tell()
        fh.seek(where)
        bits = struct.unpack(end + code, fh.read(size))[0]
        fh.seek(here)
    fmt = tags.get(339, 1)
    if not isinstance(samples, int) or not isinstance(bits, int) or not isinstance(fmt, int):
        return None
    dtype = {(1, 8): "uint8", (1, 16): "uint16", (2, 8): "int8", (2, 16): "int16",
             (1, 32): "uint32", (2, 32): "int32", (3, 32): "float32", (3, 64): "float64"}.get(
        (fmt, bits), "uint8" if bits < 8 else None)
    if dtype is None:
        return None
    channels = {2: 1, 4: 3}.get(samples, samples)  # alpha dropped as read_image does
    return Header(height, width, channels, dtype)


def image_header(path: str | Path, page: int | None = None) -> Header:
    """Height, width, channels and dtype of an image as :func:`read_image` returns it.

    Read from the PNG, JPEG or TIFF header (the first page of a stack stands for
    all of them); other files, and headers this does not understand, are
    decoded once.

    Raises:
        DatasetError: the file is missing or cannot be decoded.
    """
    path = Path(path)
    readers = {".png": _png, ".jpg": _jpeg, ".jpeg": _jpeg, ".tif": _tiff, ".tiff": _tiff}
    reader = readers.get(path.suffix.lower())
    if reader is not None:
        try:
            with open(path, "rb") as fh:
                header = reader(fh)
            if header is not None and header.height > 0 and header.width > 0:
                return header
        except (OSError, struct.error):
            pass
    image = read_image(path, page)
    return Header(image.shape[0], image.shape[1], image.shape[2], image.dtype.name)


def spread(n: int, k: int) -> list[int]:
    """Up to ``k`` indices of ``range(n)`` spread evenly, first and last included."""
    if n <= k:
        return list(range(n))
    return sorted({int(round(i)) for i in np.linspace(0, n - 1, k)})


# --------------------------------------------------------------------------- the quick check
@dataclass
class FolderScan:
    """A dataset folder as the streaming path sees it.

    Attributes:
        root: the dataset folder.
        samples: samples per split (labelled and unlabelled).
        spec: the label encoding, inferred from ``masks_checked`` masks.
        headers: the image header of every sample, by sample.
        channels: the channel count images are read with (grey among RGB become RGB).
        warnings: what a full check would warn about too.
        masks_checked: how many masks were decoded to infer ``spec``.
    """
    root: Path
    samples: dict[str, list[Sample]]
    spec: LabelSpec
    headers: dict[Sample, Header]
    channels: int
    warnings: list[str] = field(default_factory=list)
    masks_checked: int = 0


@dataclass
class Survey:
    """A dataset folder's files and their headers, before the labels are looked at.

    ``problems`` are the structural ones (unpaired files, unreadable headers,
    image and mask sizes that differ); :func:`scan_folder` raises them.
    """
    root: Path
    samples: dict[str, list[Sample]]
    headers: dict[Sample, Header]
    problems: list[str]
    warnings: list[str]
    infos: list = field(default_factory=list)

    def labelled(self) -> list[Sample]:
        return labelled_samples(self.samples)

    def footprint(self) -> tuple[int, Sample | None, int]:
        """(bytes of every labelled sample decoded, the largest sample, its bytes)."""
        total, largest, most = 0, None, 0
        for sample in self.labelled():
            header = self.headers.get(sample)
            if header is None:
                continue
            size = footprint(header)
            total += size
            if size > most:
                largest, most = sample, size
        return total, largest, most


def survey_folder(root: str | Path) -> Survey:
    """Discovers a dataset and reads the header of every image and mask (no pixels)."""
    root, samples, problems, warnings = discover(Path(root))
    headers: dict[Sample, Header] = {}
    infos = []
    for split, group in samples.items():
        for sample in group:
            try:
                header = image_header(sample.image_path, sample.page)
            except DatasetError as exc:
                problems.extend(exc.problems)
                continue
            headers[sample] = header
            infos.append(_ImageInfo(sample, split, (header.height, header.width, header.channels),
                                    header.dtype))
            if sample.mask_path is not None and sample.mask_path.is_file():
                try:
                    mask = image_header(sample.mask_path, sample.page)
                except DatasetError as exc:
                    problems.extend(exc.problems)
                    continue
                if (mask.height, mask.width) != (header.height, header.width):
                    problems.append(size_problem(sample, (header.height, header.width),
                                                 (mask.height, mask.width)))
    _check_channels(infos, problems, warnings)
    return Survey(root, samples, headers, problems, warnings, infos)


def scan_folder(root: str | Path, *, num_classes: int | None = None, ignore_index: int = 255,
                max_masks: int = MAX_SCANNED_MASKS, survey: Survey | None = None) -> FolderScan:
    """Discovers a dataset, reads every image and mask header and infers the labels.

    Structural problems (unpaired files, sizes that differ between an image and
    its mask by their headers, channel counts) are found for every file; the
    label encoding comes from ``max_masks`` masks spread over the dataset.

    Args:
        root: the dataset folder.
        num_classes, ignore_index: as for :func:`unet_tf.data.check.check_dataset`.
        max_masks: masks decoded to infer the label encoding.
        survey: the folder's :func:`survey_folder`, when it was taken already.

    Raises:
        DatasetError: every problem found, each naming its file.
    """
    survey = survey or survey_folder(root)
    root, samples, headers = survey.root, survey.samples, survey.headers
    problems, warnings = list(survey.problems), list(survey.warnings)
    labelled = survey.labelled()
    classes = load_classes(root, labelled, problems)
    expand = classes is not None and classes[1] is not None
    if not labelled and samples:
        problems.append(f"{root}: no labelled samples (only unlabelled test images); add "
                        "masks for training.")
    stats = []
    for i in spread(len(labelled), max_masks):
        try:
            stats.append(mask_stat(labelled[i], expand))
        except DatasetError as exc:
            problems.extend(exc.problems)
    spec = None
    if labelled:
        spec = infer_from_stats(stats, classes, ignore_index, num_classes, problems, warnings)
    if spec is not None:
        problems.extend(p for s in stats if (p := validate_stat(s, spec)))
    if problems or spec is None:
        raise DatasetError(problems or [f"{root}: could not infer the label encoding."])
    if spec.mode == "instance":  # the masks are the instance maps too
        def with_instances(s):
            return s if s.instance_path or s.mask_path is None else \
                dataclasses.replace(s, instance_path=s.mask_path)
        samples = {k: [with_instances(s) for s in v] for k, v in samples.items()}
        headers = {with_instances(s): h for s, h in headers.items()}
    channels = max(h.channels for h in headers.values())
    return FolderScan(root, samples, spec, headers, channels, warnings, len(stats))
