"""Encode Image: runs the vision encoder with stage 1 over an IMAGE batch (all images for one prompt)."""

from __future__ import annotations

import torch

from ..illava import Resolution, VisualTokens, encode
from . import comfy_compat
from .config import MergeChoice
from .handle import LVLMHandle
from .memo import content_key
from .run import encode_remembered
from .summary import encode_summary


def check_image_batch(image: torch.Tensor | None, node: str = "Encode Image") -> None:
    """Reject what is not a non-empty ComfyUI IMAGE batch, saying what to connect."""
    if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[-1] not in (1, 3, 4):
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"Connect an IMAGE output (e.g. Load Image) to {node}: got {shape}, expected a [batch, height, width, 3] image")
    if image.shape[0] == 0:
        raise ValueError(f"Connect at least one image to {node}: the image batch is empty")


def resolution_inputs() -> dict[str, tuple]:
    """The pixel-range widgets Encode Image and Caption share."""
    return {
        "max_pixels": ("INT", {"default": 0, "min": 0, "max": 1 << 28, "step": 1024, "tooltip": "Most pixels each image is encoded with (fewer pixels, fewer visual tokens); 0 = the model's own limit. Qwen takes it as its max_pixels; tiling models as a number of tiles. The token count is shown after a run."}),
        "min_pixels": ("INT", {"default": 0, "min": 0, "max": 1 << 28, "step": 1024, "tooltip": "Fewest pixels each image is encoded with (small images are enlarged); 0 = the model's own."}),
    }


def image_resolution(node: str, min_pixels: int, max_pixels: int) -> Resolution:
    try:
        return Resolution(min_pixels=min_pixels, max_pixels=max_pixels)
    except ValueError as error:
        raise ValueError(f"{node}: {error}") from None


def encode_images(
    node: str, lvlm: LVLMHandle, image: torch.Tensor, config: MergeChoice | None, resolution: Resolution
) -> VisualTokens:
    """The images' visual tokens, remembered by content, resolution and stage-1 settings."""

    def run(model, merge):
        try:
            return encode(model, image, merge, check_interrupt=comfy_compat.check_interrupt, resolution=resolution)
        except ValueError as error:
            raise ValueError(f"{node}: {error}") from None

    return encode_remembered(lvlm, config, "image", (content_key(image), resolution), run)


class EncodeImage:
    """Turns images into visual tokens for Generate; stage 1 of iLLaVA runs here."""

    CATEGORY = "iLLaVA"
    FUNCTION = "encode"
    RETURN_TYPES = ("ILLAVA_VISUALS",)
    RETURN_NAMES = ("visuals",)
    OUTPUT_TOOLTIPS = ("The visual tokens after stage 1, for Generate and Preview Retained Tokens.",)
    DESCRIPTION = (
        "Encodes every image of the batch for one prompt; without a config no tokens are merged. Only the image, "
        "the resolution and the stage-1 settings re-run it: changing a stage-2 setting reuses the encoding."
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "lvlm": ("ILLAVA_LVLM", {"tooltip": "From Load LVLM."}),
                "image": ("IMAGE", {"tooltip": "One image, or a batch: several images in one prompt."}),
            },
            "optional": {
                "config": ("ILLAVA_CONFIG", {"tooltip": "From iLLaVA Merge Config; unconnected = no merging."}),
                **resolution_inputs(),
            },
        }

    def encode(
        self, lvlm: LVLMHandle, image: torch.Tensor, config: MergeChoice | None = None, max_pixels: int = 0, min_pixels: int = 0
    ) -> dict:
        check_image_batch(image)
        visuals = encode_images("Encode Image", lvlm, image, config, image_resolution("Encode Image", min_pixels, max_pixels))
        return {"ui": {"text": [encode_summary(visuals)]}, "result": (visuals,)}
