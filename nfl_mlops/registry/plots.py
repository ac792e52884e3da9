"""A confusion-matrix image for model cards, drawn with numpy and written as PNG with zlib.

No plotting library is needed: cells are shaded by their row share (recall), and counts and
percentages are drawn with a built-in 5x7 bitmap font.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence

import numpy as np

_GLYPHS: dict[str, tuple[str, ...]] = {
    "A": ("01110", "10001", "10001", "11111", "10001", "10001", "10001"),
    "B": ("11110", "10001", "10001", "11110", "10001", "10001", "11110"),
    "C": ("01110", "10001", "10000", "10000", "10000", "10001", "01110"),
    "D": ("11110", "10001", "10001", "10001", "10001", "10001", "11110"),
    "E": ("11111", "10000", "10000", "11110", "10000", "10000", "11111"),
    "F": ("11111", "10000", "10000", "11110", "10000", "10000", "10000"),
    "G": ("01110", "10001", "10000", "10111", "10001", "10001", "01111"),
    "H": ("10001", "10001", "10001", "11111", "10001", "10001", "10001"),
    "I": ("01110", "00100", "00100", "00100", "00100", "00100", "01110"),
    "J": ("00111", "00010", "00010", "00010", "00010", "10010", "01100"),
    "K": ("10001", "10010", "10100", "11000", "10100", "10010", "10001"),
    "L": ("10000", "10000", "10000", "10000", "10000", "10000", "11111"),
    "M": ("10001", "11011", "10101", "10101", "10001", "10001", "10001"),
    "N": ("10001", "11001", "10101", "10011", "10001", "10001", "10001"),
    "O": ("01110", "10001", "10001", "10001", "10001", "10001", "01110"),
    "P": ("11110", "10001", "10001", "11110", "10000", "10000", "10000"),
    "Q": ("01110", "10001", "10001", "10001", "10101", "10010", "01101"),
    "R": ("11110", "10001", "10001", "11110", "10100", "10010", "10001"),
    "S": ("01111", "10000", "10000", "01110", "00001", "00001", "11110"),
    "T": ("11111", "00100", "00100", "00100", "00100", "00100", "00100"),
    "U": ("10001", "10001", "10001", "10001", "10001", "10001", "01110"),
    "V": ("10001", "10001", "10001", "10001", "10001", "01010", "00100"),
    "W": ("10001", "10001", "10001", "10101", "10101", "10101", "01010"),
    "X": ("10001", "10001", "01010", "00100", "01010", "10001", "10001"),
    "Y": ("10001", "10001", "01010", "00100", "00100", "00100", "00100"),
    "Z": ("11111", "00001", "00010", "00100", "01000", "10000", "11111"),
    "0": ("01110", "10001", "10011", "10101", "11001", "10001", "01110"),
    "1": ("00100", "01100", "00100", "00100", "00100", "00100", "01110"),
    "2": ("01110", "10001", "00001", "00010", "00100", "01000", "11111"),
    "3": ("11111", "00010", "00100", "00010", "00001", "10001", "01110"),
    "4": ("00010", "00110", "01010", "10010", "11111", "00010", "00010"),
    "5": ("11111", "10000", "11110", "00001", "00001", "10001", "01110"),
    "6": ("00110", "01000", "10000", "11110", "10001", "10001", "01110"),
    "7": ("11111", "00001", "00010", "00100", "01000", "01000", "01000"),
    "8": ("01110", "10001", "10001", "01110", "10001", "10001", "01110"),
    "9": ("01110", "10001", "10001", "01111", "00001", "00010", "01100"),
    "%": ("11000", "11001", "00010", "00100", "01000", "10011", "00011"),
    ".": ("00000", "00000", "00000", "00000", "00000", "01100", "01100"),
    "-": ("00000", "00000", "00000", "11111", "00000", "00000", "00000"),
    ":": ("00000", "01100", "01100", "00000", "01100", "01100", "00000"),
    "(": ("00010", "00100", "01000", "01000", "01000", "00100", "00010"),
    ")": ("01000", "00100", "00010", "00010", "00010", "00100", "01000"),
    "/": ("00001", "00001", "00010", "00100", "01000", "10000", "10000"),
    "_": ("00000", "00000", "00000", "00000", "00000", "00000", "11111"),
    " ": ("00000",) * 7,
}
_MASKS = {c: np.array([[ch == "1" for ch in row] for row in rows], dtype=bool) for c, rows in _GLYPHS.items()}

WHITE = (255, 255, 255)
BLACK = (20, 20, 20)
BLUE = (8, 69, 148)


def text_width(text: str, scale: int) -> int:
    return max(0, len(text) * 6 * scale - scale)


def draw_text(
    img: np.ndarray,
    text: str,
    x: int,
    y: int,
    scale: int = 2,
    color: tuple[int, int, int] = BLACK,
    vertical: bool = False,
) -> None:
    """Draw `text` (upper-cased; unknown characters as spaces) with its top-left corner at (x, y)."""
    for i, ch in enumerate(text.upper()):
        mask = np.kron(_MASKS.get(ch, _MASKS[" "]), np.ones((scale, scale), dtype=bool))
        if vertical:  # read bottom to top
            mask = np.rot90(mask)
            top, left = y - (i + 1) * 6 * scale + scale, x
        else:
            top, left = y, x + i * 6 * scale
        h, w = mask.shape
        if top < 0 or left < 0 or top + h > img.shape[0] or left + w > img.shape[1]:
            continue
        img[top : top + h, left : left + w][mask] = color


def confusion_matrix_image(
    matrix: Sequence[Sequence[int]], labels: Sequence[str], title: str = "", cell: int = 84
) -> np.ndarray:
    """An RGB image (h x w x 3, uint8) of a confusion matrix (rows true, columns predicted)."""
    cm = np.asarray(matrix, dtype=np.int64)
    k = len(labels)
    if cm.shape != (k, k):
        raise ValueError(f"matrix shape {cm.shape} does not match {k} labels")
    row_totals = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, row_totals, out=np.zeros(cm.shape), where=row_totals > 0)
    s = 2
    label_w = max(text_width(lab, s) for lab in labels) + 12
    left, top = 32 + label_w, 44 + 7 * s + 12
    width, height = left + k * cell + 16, top + k * cell + 16
    img = np.full((height, width, 3), 255, dtype=np.uint8)
    if title:
        draw_text(img, title, 8, 8, scale=s)
    draw_text(img, "predicted", left + (k * cell - text_width("predicted", s)) // 2, 30, scale=s)
    draw_text(img, "true", 4, top + (k * cell + text_width("true", s)) // 2, scale=s, vertical=True)
    for j, lab in enumerate(labels):
        draw_text(
            img, lab[:3], left + j * cell + (cell - text_width(lab[:3], s)) // 2, top - 7 * s - 6, scale=s
        )
    for i, lab in enumerate(labels):
        draw_text(img, lab, 32, top + i * cell + (cell - 7 * s) // 2, scale=s)
        for j in range(k):
            v = share[i, j]
            color = np.array(WHITE) + v * (np.array(BLUE) - np.array(WHITE))
            y0, x0 = top + i * cell, left + j * cell
            img[y0 : y0 + cell, x0 : x0 + cell] = color.astype(np.uint8)
            img[y0 : y0 + cell, x0] = img[y0, x0 : x0 + cell] = (200, 200, 200)
            ink = WHITE if v > 0.5 else BLACK
            count, pct = str(int(cm[i, j])), f"{100 * v:.0f}%"
            draw_text(img, count, x0 + (cell - text_width(count, s)) // 2, y0 + cell // 2 - 7 * s - 2, s, ink)
            draw_text(img, pct, x0 + (cell - text_width(pct, 1)) // 2, y0 + cell // 2 + 6, 1, ink)
    img[top : top + k * cell + 1, left + k * cell] = (200, 200, 200)
    img[top + k * cell, left : left + k * cell + 1] = (200, 200, 200)
    return img


def png_bytes(img: np.ndarray) -> bytes:
    """Encode an RGB uint8 image as PNG (8-bit truecolour, no filter, zlib level 9)."""
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError("expected an h x w x 3 uint8 array")
    h, w, _ = img.shape
    raw = np.concatenate([np.zeros((h, 1), dtype=np.uint8), img.reshape(h, w * 3)], axis=1).tobytes()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


def confusion_matrix_png(matrix: Sequence[Sequence[int]], labels: Sequence[str], title: str = "") -> bytes:
    """The confusion matrix as PNG bytes."""
    return png_bytes(confusion_matrix_image(matrix, labels, title))
