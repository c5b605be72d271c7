"""Qwen's video preprocessing, a few frames at a time so that a long clip never exists as floats at once."""

from __future__ import annotations

import math

import torch


def preprocess(video_processor, frames, chunk_frames: int = 8) -> dict[str, torch.Tensor]:
    """``pixel_values_videos`` and ``video_grid_thw`` for one clip (``video.Frames``), a few frames at a time.

    Frames are resized and patchified independently, so chunking gives the same values as one call
    while only a chunk's float intermediates exist at once. The per-frame pixel cap of Qwen's
    reference preprocessing depends on the clip's length, so it is computed once for the whole clip.
    """
    temporal = video_processor.temporal_patch_size
    factor = video_processor.patch_size * video_processor.merge_size
    size = dict(video_processor.size)
    total_pixels = int(video_processor.max_video_tokens * factor * factor * 0.9)
    capped = min(size["longest_edge"], total_pixels * temporal // len(frames.pixels))
    size["longest_edge"] = max(capped, int(size["shortest_edge"] * 1.05))
    chunk = max(temporal, chunk_frames // temporal * temporal)
    groups = math.ceil(len(frames.pixels) / temporal)
    pixel_values = grid = None
    row = 0
    for start in range(0, len(frames.pixels), chunk):
        out = video_processor(
            videos=[frames.pixels[start : start + chunk]],
            return_tensors="pt",
            do_sample_frames=False,
            size=size,
            cap_pixels_per_frame=False,
        )
        part, (_, h, w) = out["pixel_values_videos"], out["video_grid_thw"][0].tolist()
        if pixel_values is None:
            grid = (groups, h, w)
            pixel_values = torch.empty(groups * h * w, part.shape[1], dtype=part.dtype)
        pixel_values[row : row + len(part)] = part
        row += len(part)
    return {"pixel_values_videos": pixel_values, "video_grid_thw": torch.tensor([grid])}
