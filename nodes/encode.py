"""Encode Image: runs the vision encoder with stage 1 over an IMAGE batch (all images for one prompt)."""

from __future__ import annotations

import torch

from ..illava import MergeConfig, VisualTokens, encode
from . import comfy_compat
from .config import MergeChoice
from .handle import LVLMHandle
from .summary import encode_summary


def check_image_batch(image: torch.Tensor | None) -> None:
    """Reject what is not a non-empty ComfyUI IMAGE batch, saying what to connect."""
    if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[-1] not in (1, 3, 4):
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"Connect an IMAGE output (e.g. Load Image) to Encode Image: got {shape}, expected a [batch, height, width, 3] image")
    if image.shape[0] == 0:
        raise ValueError("Connect at least one image to Encode Image: the image batch is empty")


class EncodeImage:
    """Turns images into visual tokens for Generate; stage 1 of iLLaVA runs here."""

    CATEGORY = "iLLaVA"
    FUNCTION = "encode"
    RETURN_TYPES = ("ILLAVA_VISUALS",)
    RETURN_NAMES = ("visuals",)
    OUTPUT_TOOLTIPS = ("The visual tokens after stage 1, for Generate and Preview Retained Tokens.",)
    DESCRIPTION = "Encodes every image of the batch for one prompt; without a config no tokens are merged."

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "lvlm": ("ILLAVA_LVLM", {"tooltip": "From Load LVLM."}),
                "image": ("IMAGE", {"tooltip": "One image, or a batch: several images in one prompt."}),
            },
            "optional": {
                "config": ("ILLAVA_CONFIG", {"tooltip": "From iLLaVA Merge Config; unconnected = no merging."}),
            },
        }

    def encode(self, lvlm: LVLMHandle, image: torch.Tensor, config: MergeChoice | None = None) -> dict:
        check_image_batch(image)
        model = lvlm.acquire()
        merge = config.resolve(model, "image") if config is not None else MergeConfig()
        visuals: VisualTokens = encode(model, image, merge, check_interrupt=comfy_compat.check_interrupt)
        return {"ui": {"text": [encode_summary(visuals)]}, "result": (visuals,)}
