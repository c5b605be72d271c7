"""iLLaVA Caption: one node from a model and an image (or video) to text, for people who don't want the chain."""

from __future__ import annotations

from typing import Any

import torch

from ..illava.budget import DEFAULT_BUDGET
from ..illava.captioning.styles import DEFAULT_STYLE
from ..illava.video import DEFAULT_FPS, DEFAULT_MAX_FRAMES
from . import comfy_compat
from .config import MergeChoice, build_choice
from .encode import check_image_batch, encode_images, image_resolution, resolution_inputs
from .encode_video import encode_clip, video_source
from .generate import sampling_inputs, style_input, styled_prompt
from .handle import LVLMHandle
from .run import answer_remembered, sampling_options
from .summary import encode_summary

NODE_NAME = "iLLaVA Caption"


def caption_choice(budget: float) -> MergeChoice:
    """``auto`` at the budget; a budget of 1 means no merging at all."""
    return build_choice("off" if budget >= 1.0 else "auto", budget)


class Caption:
    """Captions each image of a batch, or a video, in the chosen style, merging tokens to the budget."""

    CATEGORY = "iLLaVA"
    FUNCTION = "caption"
    OUTPUT_NODE = True
    RETURN_TYPES = ("STRING", "STRING", "STRING")
    RETURN_NAMES = ("text", "texts", "stats")
    OUTPUT_IS_LIST = (False, True, False)
    OUTPUT_TOOLTIPS = (
        "The caption; for an image batch, one caption per image joined by blank lines.",
        "A list with one caption per image (or the video's).",
        "The prompt used, visual tokens kept and where the merge settings came from, timing.",
    )
    DESCRIPTION = (
        "Load LVLM + an image batch or a video -> one caption per image (or for the video). The budget is the share "
        "of the work on the picture that remains (auto: the settings calibrated for the model, or the paper's); 1.0 = no merging. "
        "Encode + Generate do the same in steps, with every setting exposed."
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "lvlm": ("ILLAVA_LVLM", {"tooltip": "From Load LVLM."}),
                "style": style_input(DEFAULT_STYLE),
                "prompt": ("STRING", {"multiline": True, "dynamicPrompts": False, "default": "", "tooltip": "Your question (style question) or instruction (style custom); unused by the other styles."}),
                "budget": ("FLOAT", {"default": DEFAULT_BUDGET, "min": 0.01, "max": 1.0, "step": 0.01, "tooltip": "Share of the work on the picture that remains, every vision-encoder and LLM layer counted (0.33 = about three times less); 1.0 = no merging."}),
                **sampling_inputs(),
            },
            "optional": {
                "image": ("IMAGE", {"tooltip": "An image, or a batch: each image gets its own caption."}),
                "video": ("VIDEO", {"tooltip": "Or a video (e.g. Load Video): one caption for the clip."}),
                "max_frames": ("INT", {"default": DEFAULT_MAX_FRAMES, "min": 1, "max": 768, "tooltip": f"Video only: most frames sampled ({DEFAULT_FPS:g} per second, evenly within this)."}),
                **resolution_inputs(),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    @classmethod
    def IS_CHANGED(cls, budget: float = 1.0, **_: Any) -> str:
        """Merging by auto: re-run after Calibrate writes a profile."""
        return comfy_compat.profile_store_state() if budget < 1.0 else ""

    def caption(
        self,
        lvlm: LVLMHandle,
        style: str,
        prompt: str,
        budget: float,
        max_new_tokens: int,
        sampling: str,
        temperature: float,
        top_p: float,
        top_k: int,
        repetition_penalty: float,
        seed: int,
        image: torch.Tensor | None = None,
        video: Any = None,
        max_frames: int = DEFAULT_MAX_FRAMES,
        max_pixels: int = 0,
        min_pixels: int = 0,
        unique_id: str | None = None,
    ) -> dict:
        if (image is None) == (video is None):
            raise ValueError(f"Connect an image (or image batch) or a video to {NODE_NAME}: it needs exactly one of them")
        choice = caption_choice(budget)
        options = sampling_options(max_new_tokens, sampling, temperature, top_p, top_k, repetition_penalty, seed)
        if image is not None:
            check_image_batch(image, NODE_NAME)
            resolution = image_resolution(NODE_NAME, min_pixels, max_pixels)
            visuals = encode_images(NODE_NAME, lvlm, image, choice, resolution)
        else:
            visuals = encode_clip(NODE_NAME, lvlm, video_source(video, None, ""), DEFAULT_FPS, max_frames, DEFAULT_FPS, choice)
        final_prompt = styled_prompt(NODE_NAME, style, prompt, visuals)
        joined, texts, stats, _ = answer_remembered(lvlm, visuals, final_prompt, None, options, "", True, unique_id)
        stats = f"{stats}\n{encode_summary(visuals)}"
        return {"ui": {"text": [joined], "stats": [stats]}, "result": (joined, texts, stats)}
