"""Preview Retained Tokens: which visual tokens each stage kept, drawn over each image."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..illava import VisualTokens
from ..illava.trace import ItemTrace
from ..illava.viz import labelled_map, stage_caption, video_strip
from . import comfy_compat


def retained_maps(visuals: VisualTokens, traces: Sequence[ItemTrace] | None = None) -> list[np.ndarray]:
    """Labelled maps of what each stage kept: per image view, the stage-1 map, then (when the trace
    has one) the after-stage-2 map; per video, one strip of its frame groups with a row per stage.

    Each item's ``preview`` holds one frame per view or temporal group, as uint8 RGB.
    """
    if not isinstance(visuals, VisualTokens):
        raise ValueError("Connect Encode Image's visuals output to Preview Retained Tokens: no visual tokens were given")
    if traces is None:
        traces = [item.trace for item in visuals.items]
    if len(traces) != len(visuals.items) or any(t.grid != item.trace.grid for t, item in zip(traces, visuals.items)):
        raise ValueError(
            "Connect the trace of the Generate that used these visuals: this trace belongs to other images"
        )
    maps: list[np.ndarray] = []
    for item, trace in zip(visuals.items, traces):
        if item.kind == "video":
            maps.append(video_strip(trace, item.preview, _sampled_frames(item)))
            continue
        for t, frame in enumerate(item.preview):
            maps.append(labelled_map(frame, trace.stage1[t], stage_caption(1, trace.stage1[t])))
            if trace.stage2 is not None:
                maps.append(labelled_map(frame, trace.stage2[t], stage_caption(2, trace.stage2[t])))
    return maps


def _sampled_frames(item) -> int:
    """Frames sampled from the video (one per temporal group when the item does not say)."""
    indices = (item.video_metadata or {}).get("frames_indices")
    return len(indices) if indices else len(item.preview)


def to_image_batch(maps: Sequence[np.ndarray]) -> torch.Tensor:
    """A ComfyUI IMAGE batch; maps of different sizes are padded with white to the largest."""
    height = max(m.shape[0] for m in maps)
    width = max(m.shape[1] for m in maps)
    batch = torch.ones((len(maps), height, width, 3), dtype=torch.float32)
    for i, m in enumerate(maps):
        batch[i, : m.shape[0], : m.shape[1]] = torch.from_numpy(m.astype(np.float32) / 255.0)
    return batch


class PreviewTokens:
    """Shows the kept (bright), dropped (dark), merged (blue) and recycled (amber) tokens of each image."""

    CATEGORY = "iLLaVA"
    FUNCTION = "preview"
    OUTPUT_NODE = True
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("maps",)
    OUTPUT_TOOLTIPS = (
        "Per image: the stage-1 map, then the after-stage-2 map when a trace is connected, each captioned with "
        "the tokens kept; per video: one strip of its frame groups, a row per stage.",
    )
    DESCRIPTION = "Connect Generate's trace to see stage 2 as well; without it only stage 1 is shown."

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {"visuals": ("ILLAVA_VISUALS", {"tooltip": "From Encode Image or Encode Video."})},
            "optional": {"trace": ("ILLAVA_TRACE", {"tooltip": "From Generate (same visuals), to add the stage-2 maps."})},
        }

    def preview(self, visuals: VisualTokens, trace: Sequence[ItemTrace] | None = None) -> dict:
        maps = retained_maps(visuals, trace)
        return {"ui": {"images": comfy_compat.save_preview_images(maps)}, "result": (to_image_batch(maps),)}
