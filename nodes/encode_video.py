"""Encode Video: samples frames from a VIDEO, an IMAGE frame batch or a file path and runs stage 1 per frame group."""

from __future__ import annotations

import os
from typing import Any, Hashable

import torch

from ..illava import VisualTokens, encode
from ..illava.video import DEFAULT_FPS, DEFAULT_MAX_FRAMES
from . import comfy_compat
from .config import MergeChoice
from .handle import LVLMHandle
from .memo import content_key
from .run import encode_remembered
from .summary import encode_summary


def video_source(video: Any, frames: torch.Tensor | None, path: str) -> Any:
    """The one connected source; says what to connect when there is none or more than one."""
    given = [source for source in (video, frames, path.strip() or None) if source is not None]
    if not given:
        raise ValueError("Connect a VIDEO (e.g. Load Video), an IMAGE batch of frames, or type a video file path: Encode Video has no input")
    if len(given) > 1:
        raise ValueError("Connect only one of video, frames and path to Encode Video: it got more than one")
    source = given[0]
    if isinstance(source, str):
        return comfy_compat.input_path(source.strip())
    if isinstance(source, torch.Tensor) and (source.ndim != 4 or source.shape[0] == 0):
        raise ValueError(f"Connect a non-empty IMAGE batch of frames: got shape {tuple(source.shape)}")
    return source


class EncodeVideo:
    """Turns a video into visual tokens for Generate; stage 1 runs on every frame group."""

    CATEGORY = "iLLaVA"
    FUNCTION = "encode"
    RETURN_TYPES = ("ILLAVA_VISUALS",)
    RETURN_NAMES = ("visuals",)
    OUTPUT_TOOLTIPS = ("The video's visual tokens after stage 1, for Generate and Preview Retained Tokens.",)
    DESCRIPTION = (
        "Samples frames at the given rate (only those are decoded), groups them in pairs as Qwen's video "
        "encoder does, and keeps the chosen share of every frame group; Generate's stage 2 then picks across frames."
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "lvlm": ("ILLAVA_LVLM", {"tooltip": "From Load LVLM."}),
                "fps": ("FLOAT", {"default": DEFAULT_FPS, "min": 0.05, "max": 60.0, "step": 0.05, "tooltip": "Frames sampled per second of video (Qwen2.5-VL was trained with 2)."}),
                "max_frames": ("INT", {"default": DEFAULT_MAX_FRAMES, "min": 1, "max": 768, "tooltip": "Most frames to sample; long videos are sampled evenly within this."}),
            },
            "optional": {
                "video": ("VIDEO", {"tooltip": "From Load Video or any node giving ComfyUI's VIDEO."}),
                "frames": ("IMAGE", {"tooltip": "Frames as an IMAGE batch (e.g. from Video Helper Suite); set frames_fps to their rate."}),
                "path": ("STRING", {"default": "", "tooltip": "Or the path of a video file on this machine; a relative path is read from ComfyUI's input folder."}),
                "frames_fps": ("FLOAT", {"default": 24.0, "min": 0.1, "max": 240.0, "step": 0.1, "tooltip": "Frame rate of the frames input (a frame batch carries none)."}),
                "config": ("ILLAVA_CONFIG", {"tooltip": "From iLLaVA Merge Config; unconnected = no merging."}),
            },
        }

    def encode(
        self,
        lvlm: LVLMHandle,
        fps: float,
        max_frames: int,
        video: Any = None,
        frames: torch.Tensor | None = None,
        path: str = "",
        frames_fps: float = 24.0,
        config: MergeChoice | None = None,
    ) -> dict:
        visuals = encode_clip("Encode Video", lvlm, video_source(video, frames, path), fps, max_frames, frames_fps, config)
        return {"ui": {"text": [encode_summary(visuals)]}, "result": (visuals,)}


def encode_clip(
    node: str, lvlm: LVLMHandle, source: Any, fps: float, max_frames: int, frames_fps: float, config: MergeChoice | None
) -> VisualTokens:
    """A video's visual tokens, remembered by source, sampling and stage-1 settings."""
    stack_fps = frames_fps if isinstance(source, torch.Tensor) else None

    def run(model, merge):
        try:
            return encode(
                model, video=source, config=merge, fps=fps, max_frames=max_frames, video_fps=stack_fps,
                check_interrupt=comfy_compat.check_interrupt,
            )
        except ValueError as error:
            raise ValueError(f"{node}: {error}") from None

    return encode_remembered(lvlm, config, "video", (_source_key(source), fps, max_frames, stack_fps), run)


def _source_key(source: Any) -> Hashable:
    """A file by its path and modification time (a replaced file is read again), anything else by content."""
    if isinstance(source, str) and os.path.isfile(source):
        return ("file", os.path.realpath(source), os.stat(source).st_mtime_ns)
    return content_key(source)
