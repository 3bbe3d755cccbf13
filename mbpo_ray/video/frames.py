"""Drawing on frames (docs/video.md): a caption, panels side by side, and the strip under a
dream's panels (the model's error and the ensemble's disagreement so far, the step where the
model first left the real trajectory marked). Pillow only; frames are [H, W, 3] uint8."""
from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

WHITE, BLACK, GREY = (255, 255, 255), (0, 0, 0), (150, 150, 150)
ERROR_COLOUR, SPREAD_COLOUR, MARK_COLOUR = (220, 60, 40), (40, 110, 220), (20, 20, 20)


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # an older Pillow: its fixed bitmap font
        return ImageFont.load_default()


def caption(frame: np.ndarray, lines: Sequence[str]) -> np.ndarray:
    """``lines`` at the frame's top left, white on a dark band (readable on any scene)."""
    image = Image.fromarray(frame)
    draw = ImageDraw.Draw(image)
    size = max(10, frame.shape[0] // 28)
    font = _font(size)
    height = (size + 4) * len(lines) + 4
    band = Image.new("RGB", (frame.shape[1], height), BLACK)
    image.paste(Image.blend(image.crop((0, 0, frame.shape[1], height)), band, 0.55), (0, 0))
    for i, line in enumerate(lines):
        draw.text((6, 4 + i * (size + 4)), line, fill=WHITE, font=font)
    return np.asarray(image)


def side_by_side(panels: Sequence[np.ndarray], gap: int = 4) -> np.ndarray:
    """Panels of equal height next to each other, ``gap`` white pixels apart."""
    height = panels[0].shape[0]
    parts: List[np.ndarray] = []
    for i, panel in enumerate(panels):
        if i:
            parts.append(np.full((height, gap, 3), 255, np.uint8))
        parts.append(panel)
    return np.concatenate(parts, axis=1)


def greyed(frame: np.ndarray) -> np.ndarray:
    """A panel whose episode has ended (the model said so): faded to grey."""
    grey = frame.mean(axis=2, keepdims=True)
    return (0.35 * grey + 0.65 * 200).astype(np.uint8).repeat(3, axis=2)


def strip(width: int, height: int, error: Sequence[float], spread: Sequence[float], upto: int, total: int,
          threshold: float, left_at: Optional[int]) -> np.ndarray:
    """The chart under a dream's panels: the model's error (red) and the ensemble's disagreement
    (blue) of steps 1..``upto`` on a log axis over all ``total`` steps, the error threshold as a
    dotted line and the step where the error first passed it as a black bar."""
    image = Image.new("RGB", (width, height), WHITE)
    draw = ImageDraw.Draw(image)
    font = _font(max(9, height // 7))
    values = np.asarray([v for v in list(error) + list(spread) + [threshold] if v is not None and np.isfinite(v)
                         and v > 0])
    low = float(np.log10(values.min())) if values.size else -3.0
    high = float(np.log10(values.max())) if values.size else 1.0
    low, high = min(low, high - 1.0), high + 0.1
    top, bottom, left, right = 4, height - 16, 6, width - 6

    def xy(k: int, v: float):
        x = left + (right - left) * (k - 1) / max(total - 1, 1)
        y = bottom - (bottom - top) * (np.log10(max(v, 10 ** low)) - low) / (high - low)
        return x, y

    ty = xy(1, threshold)[1]
    for x in range(left, right, 6):
        draw.line([(x, ty), (x + 2, ty)], fill=GREY)
    for series, colour in ((spread, SPREAD_COLOUR), (error, ERROR_COLOUR)):
        points = [xy(k + 1, v) for k, v in enumerate(series[:upto]) if v is not None and np.isfinite(v)]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
    if left_at is not None and left_at <= upto:
        x = xy(left_at, threshold)[0]
        draw.line([(x, top), (x, bottom)], fill=MARK_COLOUR, width=2)
    label = f"model error (red), ensemble disagreement (blue); step {upto}/{total}"
    if left_at is not None and left_at <= upto:
        label += f"; left the real trajectory at step {left_at}"
    draw.text((left, bottom + 2), label, fill=BLACK, font=font)
    return np.asarray(image)


def contact_sheet(frames: Sequence[np.ndarray], columns: int, width: int) -> np.ndarray:
    """Frames in a grid ``columns`` wide, scaled so that the sheet is ``width`` pixels wide."""
    cell_w = width // columns
    cell_h = int(round(frames[0].shape[0] * cell_w / frames[0].shape[1]))
    rows = (len(frames) + columns - 1) // columns
    sheet = Image.new("RGB", (cell_w * columns, cell_h * rows), WHITE)
    for i, frame in enumerate(frames):
        tile = Image.fromarray(frame).resize((cell_w, cell_h), Image.LANCZOS)
        sheet.paste(tile, ((i % columns) * cell_w, (i // columns) * cell_h))
    return np.asarray(sheet)
