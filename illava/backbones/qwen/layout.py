"""Qwen's token maps: a (t, h, w) patch grid of 2x2 merge groups, and previews rebuilt from its patches."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..base import ItemLayout

IMAGE_PREVIEW_SIDE = 512
VIDEO_PREVIEW_SIDE = 256


@dataclass(frozen=True)
class QwenLayout(ItemLayout):
    """An item's layout plus its patch grid (temporal groups, patch rows, patch columns), which Qwen's
    processor expands placeholders and positions from."""

    grid_thw: tuple[int, int, int] = (1, 1, 1)


def patch_pictures(
    pixel_values: torch.Tensor,
    start: int,
    grid_thw: tuple[int, int, int],
    patch: int,
    temporal: int,
    merge: int,
    mean: list[float],
    std: list[float],
) -> np.ndarray:
    """(t, h, w, 3) uint8: the first frame of each temporal group of the item whose patches start at ``start``.

    Undoes the processor's patch flattening: its rows are (t, h/merge, w/merge, merge, merge) patches
    of (channels, temporal, patch, patch) values, normalised.
    """
    t, h, w = grid_thw
    values = pixel_values[start : start + t * h * w].detach().float().cpu().reshape(t, h // merge, w // merge, merge, merge, -1, temporal, patch, patch)
    frames = values.permute(0, 6, 5, 1, 3, 7, 2, 4, 8).reshape(t, temporal, -1, h * patch, w * patch)[:, 0]
    mean_t = torch.tensor(mean, dtype=torch.float32)[:, None, None]
    std_t = torch.tensor(std, dtype=torch.float32)[:, None, None]
    pixels = frames * std_t + mean_t
    side = IMAGE_PREVIEW_SIDE if t == 1 else VIDEO_PREVIEW_SIDE
    scale = min(1.0, side / max(h * patch, w * patch))
    if scale < 1.0:
        size = (max(1, round(h * patch * scale)), max(1, round(w * patch * scale)))
        pixels = F.interpolate(pixels, size=size, mode="bilinear", antialias=True)
    return (pixels.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def qwen_layouts(grid_thw: torch.Tensor, patch: int, temporal: int, merge: int) -> tuple[QwenLayout, ...]:
    """One layout per item of a call: its (t, h/merge, w/merge) token map, counts and preview drawing."""
    layouts, start = [], 0
    for row in grid_thw.tolist():
        t, h, w = (int(v) for v in row)
        patches = t * h * w
        draw = functools.partial(
            patch_pictures, start=start, grid_thw=(t, h, w), patch=patch, temporal=temporal, merge=merge
        )
        start += patches
        layouts.append(
            QwenLayout(
                grid=(t, h // merge, w // merge),
                tokens_full=patches // merge**2,
                patches=patches,
                draw=draw,
                grid_thw=(t, h, w),
            )
        )
    return tuple(layouts)
