"""Retained-token maps: the trace drawn over the image, as uint8 RGB arrays ready to save as PNG."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .merge import DROPPED, KEPT, MERGED, RECYCLED
from .trace import ItemTrace

RECYCLED_COLOUR = np.array([255, 196, 0], dtype=np.float32)
MERGED_COLOUR = np.array([70, 110, 255], dtype=np.float32)
GRID_COLOUR = np.array([40, 40, 40], dtype=np.float32)
HATCH_PERIOD = 5
MIN_SIDE = 384  # shorter side of a labelled map: small previews are unreadable in a node
VIDEO_MIN_SIDE = 192  # a video strip shows many cells, so each is smaller
VIDEO_COLUMNS = 8  # frame groups per row of a video strip
STAGE_NAMES = {1: "stage 1 (vision encoder)", 2: "after stage 2 (LLM)"}


def token_map(image: np.ndarray, codes: np.ndarray, dim: float = 0.2) -> np.ndarray:
    """Draw one (h, w) status map over ``image`` (H, W, 3 uint8).

    Kept tokens show the image as it is, dropped ones are darkened to ``dim`` of their brightness,
    tokens folded into a recycled token are darkened and hatched in blue (hatching, not a tint, so
    they never look brighter than kept ones on dark images), and the slots holding a recycled
    token are washed in amber.
    """
    h, w = codes.shape
    height, width = image.shape[:2]
    rows = (np.arange(height) * h // height).clip(0, h - 1)
    cols = (np.arange(width) * w // width).clip(0, w - 1)
    cell = codes[rows[:, None], cols[None, :]]
    out = image.astype(np.float32)
    out[cell == DROPPED] *= dim
    merged = cell == MERGED
    out[merged] *= dim
    hatch = ((np.arange(height)[:, None] + np.arange(width)[None, :]) % HATCH_PERIOD) == 0
    out[merged & hatch] = MERGED_COLOUR
    recycled = cell == RECYCLED
    out[recycled] = out[recycled] * 0.5 + RECYCLED_COLOUR * 0.5
    edge = np.zeros_like(cell, dtype=bool)
    edge[1:, :] |= cell[1:, :] != cell[:-1, :]
    edge[:, 1:] |= cell[:, 1:] != cell[:, :-1]
    out[edge & (cell != KEPT)] = GRID_COLOUR
    return out.clip(0, 255).astype(np.uint8)


def side_by_side(panels: list[np.ndarray], gap: int = 6) -> np.ndarray:
    """Panels joined left to right with a white gap, top-aligned."""
    return _join(panels, axis=1, gap=gap)


def stacked(rows: list[np.ndarray], gap: int = 6) -> np.ndarray:
    """Rows joined top to bottom with a white gap, left-aligned."""
    return _join(rows, axis=0, gap=gap)


def _join(parts: list[np.ndarray], axis: int, gap: int) -> np.ndarray:
    across = 1 - axis
    shape = [0, 0, 3]
    shape[axis] = sum(part.shape[axis] for part in parts) + gap * (len(parts) - 1)
    shape[across] = max(part.shape[across] for part in parts)
    canvas = np.full(shape, 255, dtype=np.uint8)
    offset = 0
    for part in parts:
        if axis == 0:
            canvas[offset : offset + part.shape[0], : part.shape[1]] = part
        else:
            canvas[: part.shape[0], offset : offset + part.shape[1]] = part
        offset += part.shape[axis] + gap
    return canvas


def trace_figure(trace: ItemTrace, frames: np.ndarray, columns: int = 2) -> np.ndarray:
    """Per temporal group: the frame, its stage-1 map and (when present) its after-stage-2 map.

    frames: (t, h, w, 3), one frame per temporal group of ``trace`` (t = 1 for an image). Groups are
    laid out ``columns`` to a row.
    """
    if len(frames) != trace.grid[0]:
        raise ValueError(f"the trace has {trace.grid[0]} temporal groups but {len(frames)} frames were given")
    triplets = []
    for t, frame in enumerate(frames):
        panels = [frame, token_map(frame, trace.stage1[t])]
        if trace.stage2 is not None:
            panels.append(token_map(frame, trace.stage2[t]))
        triplets.append(side_by_side(panels))
    rows = [side_by_side(triplets[i : i + columns], gap=18) for i in range(0, len(triplets), columns)]
    return stacked(rows, gap=18)


def kept_counts(codes: np.ndarray) -> tuple[int, int]:
    """(kept, total) cells of a status map; a slot holding a recycled token is a kept token."""
    return int(np.isin(codes, (KEPT, RECYCLED)).sum()), int(codes.size)


def stage_caption(stage: int, codes: np.ndarray) -> str:
    """E.g. "stage 1 (vision encoder): 245 / 980 tokens kept" for ``codes`` of ``stage`` (1, or 2 for after both)."""
    kept, total = kept_counts(codes)
    return f"{STAGE_NAMES[stage]}: {kept} / {total} tokens kept"


def upscaled(image: np.ndarray, min_side: int = MIN_SIDE) -> np.ndarray:
    """``image`` repeated by a whole factor (nearest neighbour, so token cells stay crisp) until its
    shorter side is at least ``min_side``; unchanged when it already is."""
    factor = -(-min_side // min(image.shape[:2]))
    return image.repeat(factor, axis=0).repeat(factor, axis=1) if factor > 1 else image


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one fixed-size bitmap font
        return ImageFont.load_default()


def caption_strip(text: str, width: int, size: int | None = None) -> np.ndarray:
    """(h, width, 3) uint8: ``text`` in black on white, shrunk until it fits ``width``."""
    size = size or min(28, max(12, width // 24))
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    while size > 8 and probe.textlength(text, font=_font(size)) > width - 8:
        size -= 1
    image = Image.new("RGB", (width, round(size * 1.6)), "white")
    ImageDraw.Draw(image).text((4, round(size * 0.3)), text, fill="black", font=_font(size))
    return np.asarray(image)


def labelled_map(frame: np.ndarray, codes: np.ndarray, caption: str, min_side: int = MIN_SIDE) -> np.ndarray:
    """The status map of one view, enlarged to ``min_side``, under a caption strip."""
    shown = token_map(upscaled(frame, min_side), codes)
    return stacked([caption_strip(caption, shown.shape[1]), shown], gap=0)


def frame_group_labels(frames: int, groups: int) -> list[str]:
    """The sampled frames each temporal group holds, 1-based: "frames 1-2", ... ("frame 3" when alone).

    A model that pads the last group with a repeated frame gives it fewer frames of its own."""
    per_group = -(-frames // groups)
    labels = []
    for g in range(groups):
        first, last = g * per_group + 1, min((g + 1) * per_group, frames)
        labels.append(f"frame {first}" if first >= last else f"frames {first}-{last}")
    return labels


def video_strip(
    trace: ItemTrace, frames: np.ndarray, frame_count: int, min_side: int = VIDEO_MIN_SIDE, columns: int = VIDEO_COLUMNS
) -> np.ndarray:
    """A video's frame groups side by side, a row per stage, each row under its stage's counts.

    frames: (t, h, w, 3), one frame per temporal group; frame_count: frames sampled from the video.
    Rows wrap after ``columns`` groups.
    """
    labels = frame_group_labels(frame_count, len(frames))
    stages = [(1, trace.stage1)] + ([(2, trace.stage2)] if trace.stage2 is not None else [])
    blocks = []
    for start in range(0, len(frames), columns):
        part = range(start, min(start + columns, len(frames)))
        for stage, codes in stages:
            cells = side_by_side([labelled_map(frames[t], codes[t], labels[t], min_side) for t in part])
            caption = stage_caption(stage, codes) if start == 0 else f"{STAGE_NAMES[stage]}, continued"
            blocks.append(stacked([caption_strip(caption, cells.shape[1]), cells], gap=2))
    return stacked(blocks, gap=18)


def save_png(array: np.ndarray, path) -> None:
    Image.fromarray(array).save(path, format="PNG")


def front_chart(measured: Sequence, chosen: Sequence, width: int = 480, height: int = 300) -> np.ndarray:
    """(h, w, 3) uint8 scatter of calibration candidates: work share (x) against answers kept (y); the chosen
    configurations ringed. ``measured``, ``chosen``: objects with ``work`` and ``agreement``."""
    margin = 40
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    x0, y0, x1, y1 = margin, 12, width - 12, height - margin

    def point(work: float, agreement: float) -> tuple[float, float]:
        return x0 + (x1 - x0) * min(max(work, 0.0), 1.0), y1 - (y1 - y0) * min(max(agreement, 0.0), 1.0)

    draw.rectangle((x0, y0, x1, y1), outline=(120, 120, 120))
    for row in measured:
        x, y = point(row.work, row.agreement)
        draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=(150, 170, 200))
    for row in chosen:
        x, y = point(row.work, row.agreement)
        draw.ellipse((x - 5, y - 5, x + 5, y + 5), outline=(214, 39, 40), width=2)
    draw.text((x0, y1 + 8), "0", fill="black")
    draw.text((x1 - 60, y1 + 8), "work 1 = off", fill="black")
    draw.text((x0 + 4, y0 + 2), "answers kept 100%", fill="black")
    draw.text((x0 + 90, y1 + 22), "work on the picture (ringed: chosen)", fill="black")
    return np.asarray(image)
