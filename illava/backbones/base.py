"""What every backbone adapter provides, and the registry that picks one by ``model_type``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..config import MergeConfig


@dataclass(frozen=True)
class ItemLayout:
    """One item's token-map grid and token counts, for backbones that pack their own LLM tokens.

    Such a backbone puts one prompt placeholder per feature it returns (extra tokens such as image
    newlines included, marked -1 in ``kept_groups``), so the prompt is built for the kept tokens.
    grid: (views, rows, columns) of the token map; a view is a tile or a frame.
    tokens_full: LLM tokens of the item without merging; patches: tokens entering the vision encoder.
    preview: (views, h, w, 3) uint8, each view as the encoder saw it.
    """

    grid: tuple[int, int, int]
    tokens_full: int
    patches: int
    preview: np.ndarray


@dataclass(frozen=True)
class EncodedVision:
    """Vision encoder output for each image or video of one call, in input order.

    features: (n_kept_i, llm_hidden) LLM-ready tokens, in raster (t, h, w) order.
    kept_groups: (n_kept_i,) raster index of each token in the item's full token grid.
    stage1_status: (t * h * w,) int8 status code of every token of the full grid after stage 1.
    deepstack: per DeepStack layer (Qwen3-VL), that layer's features of each item, aligned with
    ``features``; empty for models without DeepStack.
    layouts: per item, for backbones whose token grid is not Qwen's (t, h/2, w/2) one; empty otherwise.
    """

    features: tuple[torch.Tensor, ...]
    kept_groups: tuple[torch.Tensor, ...]
    stage1_status: tuple[torch.Tensor, ...]
    deepstack: tuple[tuple[torch.Tensor, ...], ...] = ()
    layouts: tuple[ItemLayout, ...] = ()


class Backbone:
    """Thin adapter around one transformers model class: where its parts are and how to score."""

    #: The text model takes (t, h, w) M-RoPE positions; False for plain 1D rotary positions.
    mrope = True

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model

    @property
    def config(self):
        return self.model.config

    @property
    def language_model(self) -> torch.nn.Module:
        raise NotImplementedError

    @property
    def llm_depth(self) -> int:
        return len(self.language_model.layers)

    @property
    def vit_depth(self) -> int:
        raise NotImplementedError

    @property
    def stage2_choices(self) -> tuple[int, ...] | None:
        """The LLM layers stage 2 can prune before, when only some can (None: any layer from 1)."""
        return None

    def encode_vision(
        self,
        pixel_values: torch.Tensor,
        grid_thw: torch.Tensor,
        config: MergeConfig,
        check_interrupt: Callable[[], None] | None = None,
    ) -> EncodedVision:
        raise NotImplementedError

    def image_inputs(self, processor, images: list) -> tuple[torch.Tensor, torch.Tensor]:
        """(pixel values, grid) of the images of one prompt; Qwen's processors give (t, h, w) patch grids."""
        processed = processor.image_processor(images=images, return_tensors="pt")
        return processed["pixel_values"], processed["image_grid_thw"]

    def video_inputs(self, processor, frames) -> tuple[torch.Tensor, torch.Tensor]:
        """(pixel values, grid) of one clip's sampled ``video.Frames``."""
        from ..video import preprocess

        processed = preprocess(processor.video_processor, frames)
        return processed["pixel_values_videos"], processed["video_grid_thw"]

    def generate_inputs(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """The subset of ``pipeline.build_inputs``' result that the model's ``generate`` accepts."""
        return inputs

    def feature_kinds(self, items: Sequence) -> dict[str, list]:
        """The ``mm_encoder_outputs`` entry that takes each visual item's features, items in prompt order."""
        return {kind: [item for item in items if item.kind == kind] for kind in ("image", "video")}

    def layout_placeholders(self, processor, item) -> str:
        """The prompt text of an item with a layout: one image or video placeholder per kept feature."""
        token = processor.image_token if item.kind == "image" else processor.video_token
        return token * item.tokens_kept

    def item_placeholders(self, processor, item, index: int) -> str:
        """The prompt text of an item with a layout; ``index`` counts the prompt's earlier items of its kind
        (MiniCPM-V numbers its images)."""
        return self.layout_placeholders(processor, item)


_REGISTRY: dict[str, type[Backbone]] = {}


def register(model_type: str, adapter: type[Backbone]) -> None:
    _REGISTRY[model_type] = adapter


def supported_model_types() -> list[str]:
    return sorted(_REGISTRY)


def backbone_for(model: torch.nn.Module) -> Backbone:
    model_type = getattr(model.config, "model_type", None)
    if model_type not in _REGISTRY:
        raise ValueError(
            f"model type {model_type!r} is not supported by iLLaVA; supported: {', '.join(supported_model_types())}"
        )
    return _REGISTRY[model_type](model)


def stage_targets(counts: list[int], keep: float, n_layers: int, step: int) -> list[int]:
    """Tokens left after ``step`` of ``n_layers`` reductions that together keep ``keep`` of ``counts``."""
    fraction = keep ** (step / n_layers)
    return [min(n, max(1, round(n * fraction))) for n in counts]
