"""Writing frames (docs/video.md, "Files"): MP4 (H.264) through imageio-ffmpeg, whose wheel
ships its own ffmpeg (no system ffmpeg), and a small GIF for pages through Pillow."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from mbpo_ray.atomic import replacing
from mbpo_ray.video.render import VideoError

GIF_WIDTH = 320  # pixels: a GIF is for a page (a README, a report), the MP4 is the video
GIF_FPS = 15


def _even(frame: np.ndarray) -> np.ndarray:
    """H.264 wants even sides: a frame cut by one pixel where needed."""
    h, w = frame.shape[:2]
    return frame[: h - h % 2, : w - w % 2]


def write_mp4(frames: Sequence[np.ndarray], path: Path, fps: int) -> Path:
    try:
        import imageio.v2 as imageio
    except ImportError as exc:
        raise VideoError(f"cannot write {path}: {exc} (pip install imageio imageio-ffmpeg)") from None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as tmp:
        try:
            writer = imageio.get_writer(str(tmp), format="FFMPEG", mode="I", fps=fps, codec="libx264",
                                        pixelformat="yuv420p", macro_block_size=1)
        except Exception as exc:  # noqa: BLE001  (no ffmpeg backend: imageio-ffmpeg missing)
            raise VideoError(f"cannot write {path}: {type(exc).__name__}: {str(exc)[:160]} "
                             f"(pip install imageio-ffmpeg)") from None
        try:
            for frame in frames:
                writer.append_data(_even(frame))
        finally:
            writer.close()
    return path


def write_gif(frames: Sequence[np.ndarray], path: Path, fps: int, width: int = GIF_WIDTH) -> Path:
    """Every k-th frame (``GIF_FPS`` frames a second of the video), at most ``width`` wide."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    every = max(1, int(round(fps / GIF_FPS)))
    picked = list(frames)[::every]
    h, w = picked[0].shape[:2]
    size = (width, int(round(h * width / w))) if w > width else (w, h)
    images = [Image.fromarray(f).resize(size, Image.LANCZOS) for f in picked]
    with replacing(path) as tmp:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:],
                       duration=int(1000 * every / fps), loop=0, optimize=True)
    return path


def write_png(frame: np.ndarray, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as tmp:
        Image.fromarray(frame).save(tmp, format="PNG", optimize=True)
    return path
