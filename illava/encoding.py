"""encode(): images and video through the vision encoder with stage 1, into ``VisualTokens``."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence, TypedDict

import torch

from .backbones import EncodedVision, ItemLayout
from .config import MergeConfig, Resolution
from .cost import TYPICAL_TEXT_TOKENS, Estimate, cost_model
from .loading import LVLM, synchronize
from .media import to_pil_images
from .trace import ItemTrace, stage1_trace
from .video import DEFAULT_FPS, DEFAULT_MAX_FRAMES, load_video


@dataclass(frozen=True)
class VisualItem:
    """One encoded image or video: LLM-ready tokens after stage 1 and where they came from.

    layout: the item's token map (views, rows, columns), token counts and preview drawing, as its backbone
    cuts it; kept_groups: each feature's cell in that map (-1 for extra tokens such as image
    newlines). A video also carries the rate its frames were sampled at and where they came from.
    """

    kind: str
    layout: ItemLayout
    features: torch.Tensor
    kept_groups: torch.Tensor
    trace: ItemTrace
    layer_features: tuple[torch.Tensor, ...] = ()
    video_fps: float | None = None
    video_metadata: dict | None = None

    @property
    def token_grid(self) -> tuple[int, int, int]:
        """(views, rows, columns) of the item's token map."""
        return self.layout.grid

    @property
    def preview(self):
        """(views, h, w, 3) uint8: each view as the encoder saw it."""
        return self.layout.preview

    @property
    def tokens_full(self) -> int:
        return self.layout.tokens_full

    @property
    def tokens_kept(self) -> int:
        return int(self.features.shape[0])

    @property
    def patches(self) -> int:
        return self.layout.patches


class VisualTokenCounts(TypedDict):
    """Visual tokens at each point of the path, summed over a prompt's items."""

    vit_input: int  # patches entering the vision encoder
    vit_output: int  # tokens leaving it (after stage 1)
    llm_input: int  # visual tokens entering the LLM
    llm_after_stage2: int  # left after stage 2
    llm_input_full: int  # what the LLM would get without merging


def visual_token_counts(items: Sequence[VisualItem], after_stage2: int | None = None) -> VisualTokenCounts:
    """The counts of ``items``; ``after_stage2`` is what stage 2 left (all of the LLM input without it)."""
    llm_input = sum(item.tokens_kept for item in items)
    return VisualTokenCounts(
        vit_input=sum(item.patches for item in items),
        vit_output=llm_input,
        llm_input=llm_input,
        llm_after_stage2=llm_input if after_stage2 is None else after_stage2,
        llm_input_full=sum(item.tokens_full for item in items),
    )


@dataclass(frozen=True)
class VisualTokens:
    """The visual inputs of one prompt after stage 1 (``encode``'s result).

    estimate: what ``config`` (both stages) costs on these items, with a typical prompt's text: the work
    share and the predicted ViT + prefill speedup, before stage 2 has run.
    """

    items: tuple[VisualItem, ...]
    config: MergeConfig
    vit_s: float
    model_id: str
    estimate: Estimate = Estimate(1.0, 1.0)

    def counts(self) -> VisualTokenCounts:
        """The items' token counts after stage 1 (stage 2 has not run yet)."""
        return visual_token_counts(self.items)

    def to(self, device: torch.device | None) -> VisualTokens:
        """These tokens with their tensors on ``device`` (themselves where they are there already, or for None)."""
        if device is None or all(item.features.device == torch.device(device) for item in self.items):
            return self
        items = tuple(
            dataclasses.replace(
                item,
                features=item.features.to(device),
                kept_groups=item.kept_groups.to(device),
                layer_features=tuple(layer.to(device) for layer in item.layer_features),
            )
            for item in self.items
        )
        return dataclasses.replace(self, items=items)


def encode(
    lvlm: LVLM,
    images: Any = None,
    config: MergeConfig | None = None,
    check_interrupt: Callable[[], None] | None = None,
    video: Any = None,
    fps: float = DEFAULT_FPS,
    max_frames: int = DEFAULT_MAX_FRAMES,
    video_fps: float | None = None,
    resolution: Resolution = Resolution(),
) -> VisualTokens:
    """Run the vision encoder with stage 1 over the images and/or the video of one prompt.

    ``video`` is a file path (decoded with decord), a ComfyUI VIDEO or a (T, H, W, C) frame stack
    (``video_fps`` gives a stack's frame rate); ``fps`` and ``max_frames`` choose the sampled frames.
    ``resolution`` bounds each image's pixels (the model's processor default where 0).
    Images come first in the prompt, then the video.
    """
    config = config or MergeConfig()
    backbone = lvlm.backbone
    config.check_depths(backbone.vit_depth, backbone.llm_depth)
    if images is None and video is None:
        raise ValueError("nothing to encode: give at least one image or a video")
    backbone.check_resolution(lvlm.processor, resolution)
    items: list[VisualItem] = []
    vit_s = 0.0
    if images is not None:
        pixel_values, grid = backbone.image_inputs(lvlm.processor, to_pil_images(images), resolution)
        encoded, seconds = _timed_encoder(lvlm, pixel_values, grid, "image", config, check_interrupt)
        vit_s += seconds
        normalisation = _normalisation(lvlm.processor.image_processor)
        items.extend(_item("image", encoded, i, pixel_values, normalisation) for i in range(len(encoded.features)))
    if video is not None:
        frames = load_video(video, fps, max_frames, video_fps)
        pixel_values, grid = backbone.video_inputs(lvlm.processor, frames)
        encoded, seconds = _timed_encoder(lvlm, pixel_values, grid, "video", config, check_interrupt)
        vit_s += seconds
        normalisation = _normalisation(lvlm.processor.video_processor)
        items.append(_item("video", encoded, 0, pixel_values, normalisation, frames.fps, frames.metadata()))
    estimate = cost_model(backbone).estimate([item.layout for item in items], TYPICAL_TEXT_TOKENS, config)
    return VisualTokens(items=tuple(items), config=config, vit_s=vit_s, model_id=lvlm.model_id, estimate=estimate)


def _timed_encoder(lvlm: LVLM, pixel_values, grid, kind: str, config: MergeConfig, check_interrupt):
    backbone = lvlm.backbone
    start = time.perf_counter()
    with torch.inference_mode():
        pixel_values, grid = pixel_values.to(lvlm.device), grid.to(lvlm.device)
        if config.stage1_active:
            encoded = backbone.encode_vision(pixel_values, grid, config, check_interrupt)
        else:
            encoded = backbone.stock_encode(pixel_values, grid, kind)
    synchronize(lvlm.device)
    return encoded, time.perf_counter() - start


def _normalisation(processor) -> tuple[list[float], list[float]]:
    """The (mean, std) an image or video processor normalised its pixels with, which a preview undoes."""
    return processor.image_mean, processor.image_std


def _item(kind: str, encoded: EncodedVision, index: int, host_pixels, normalisation, video_fps=None,
          video_metadata=None) -> VisualItem:
    # Previews are drawn from the processor's pixels, still on the host, never from the device copy.
    layout = dataclasses.replace(encoded.layouts[index], pixels=host_pixels, normalisation=normalisation)
    return VisualItem(
        kind=kind,
        layout=layout,
        features=encoded.features[index],
        kept_groups=encoded.kept_groups[index],
        trace=stage1_trace(kind, layout.grid, encoded.stage1_status[index]),
        layer_features=tuple(layer[index] for layer in encoded.layer_features),
        video_fps=video_fps,
        video_metadata=video_metadata,
    )
