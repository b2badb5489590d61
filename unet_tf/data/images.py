"""Reading image files as stored: decoding, pages of multi-page TIFFs, PNG
headers and EXIF orientation.

Conventions: images are (H, W, C) with C >= 1, channels in RGB order, dtype as
stored (uint8, uint16 or float32). Alpha is dropped unless ``keep_alpha=True``.
Every error names the file, the problem and what to do about it. Pure numpy +
OpenCV; never imports TensorFlow.
"""

from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np

from ..errors import DatasetError

__all__ = ["page_count", "png_header", "read_image"]


def _is_ascii(path: Path) -> bool:
    return str(path).isascii()


def _read_bytes(path: Path) -> np.ndarray:
    try:
        return np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read file ({exc.strerror}); "
                           "check permissions.") from exc


def _is_empty(path: Path) -> bool:
    try:
        return path.is_file() and path.stat().st_size == 0
    except OSError:
        return False


def empty_file_error(path: Path) -> DatasetError:
    return DatasetError(f"{path}: file is empty (0 bytes); re-export it or remove it.")


def unreadable_error(path: Path, page: int | None) -> DatasetError:
    if _is_empty(Path(path)):
        return empty_file_error(Path(path))
    where = f"{path}" if page is None else f"{path} page {page}"
    return DatasetError(f"{where}: unreadable or corrupt image file (OpenCV could not decode it); "
                        "re-export it as PNG/TIFF or remove it.")


def decode_as_stored(path: Path, page: int | None) -> np.ndarray:
    """Decodes one image (or one page of a stack) as stored, in OpenCV's BGR(A)
    order; JPEGs upright. Raises DatasetError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: file not found; check the path.")
    if _is_empty(path):  # OpenCV would call it corrupt
        raise empty_file_error(path)
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
        if page is not None and 0 < page_count(path) <= page:
            raise DatasetError(f"{path}: has {page_count(path)} pages, page {page} requested.")
        raise unreadable_error(path, page)
    return arr


def _decode_page(path: Path, page: int, flags: int) -> np.ndarray | None:
    if _is_ascii(path):
        ok, mats = cv2.imreadmulti(str(path), start=page, count=1, flags=flags)
        return mats[0] if ok and mats else None
    ok, mats = cv2.imdecodemulti(_read_bytes(path), flags)
    return mats[page] if ok and len(mats) > page else None


def page_count(path: Path) -> int:
    """Number of pages in a (multi-page) image; 0 when unreadable."""
    try:
        if _is_ascii(path):
            return int(cv2.imcount(str(path)))
        ok, mats = cv2.imdecodemulti(_read_bytes(path), cv2.IMREAD_UNCHANGED)
        return len(mats) if ok else 0
    except (cv2.error, DatasetError):
        return 0


def png_header(path: Path) -> tuple[int | None, list[tuple[int, int, int]] | None]:
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
    arr = decode_as_stored(path, page)
    if arr.ndim == 2:
        return arr[..., None]
    channels = arr.shape[2]
    if channels == 2:
        return arr if keep_alpha else arr[..., :1]
    if channels == 4 and png_header(path)[0] == 4:  # grey+alpha PNG decoded as BGRA
        return arr[..., [0, 3]] if keep_alpha else arr[..., :1]
    if channels == 3:
        return np.ascontiguousarray(arr[..., ::-1])
    if channels == 4:
        rgba = arr[..., [2, 1, 0, 3]]
        return rgba if keep_alpha else np.ascontiguousarray(rgba[..., :3])
    return arr
