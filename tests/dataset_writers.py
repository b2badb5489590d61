"""Tiny dataset files written with OpenCV, shared by the dataset tests
(``from dataset_writers import ...``; ``tests`` is on pytest's python path)."""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np

H, W = 6, 8


def write(path: Path, arr: np.ndarray) -> Path:
    """Writes ``arr`` (RGB order for 3-channel arrays) with cv2, creating folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if arr.ndim == 3 and arr.shape[2] == 3:
        arr = arr[..., ::-1]  # RGB -> BGR for OpenCV
    assert cv2.imwrite(str(path), np.ascontiguousarray(arr)), path
    return path


def image(value: int = 100, channels: int = 3, dtype=np.uint8, h: int = H, w: int = W):
    shape = (h, w) if channels == 1 else (h, w, channels)
    return np.full(shape, value, dtype)


def binary_mask(high: int = 255, h: int = H, w: int = W) -> np.ndarray:
    mask = np.zeros((h, w), np.uint8)
    mask[: h // 2] = high
    return mask


def make_pairs(root: Path, n: int = 3, mask_fn=binary_mask, mask_name="{i}.png",
               image_name="{i}.png") -> Path:
    """``n`` images ``s0..`` in ``root/images`` with masks in ``root/masks``."""
    for i in range(n):
        write(root / "images" / image_name.format(i=f"s{i}"), image(10 * i))
        write(root / "masks" / mask_name.format(i=f"s{i}"), mask_fn())
    return root


def png_indexed(path: Path, indices: np.ndarray, palette: list[tuple[int, int, int]]) -> Path:
    """Writes an 8-bit indexed (palette) PNG by hand, like Pascal VOC masks."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    h, w = indices.shape
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 3, 0, 0, 0)
    plte = bytes(c for rgb in palette for c in rgb)
    rows = b"".join(b"\x00" + indices[r].astype(np.uint8).tobytes() for r in range(h))
    data = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"PLTE", plte)
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path
