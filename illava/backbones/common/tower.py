"""Shared parts of the adapters whose model keeps its vision tower and text model at ``model.model``.

InternVL, LLaVA-OneVision and MiniCPM-V all feed a plain 1D-rotary LLM, so they share where their
parts sit and how their encoder depth is counted; ``FeatureLayerBackbone`` adds what InternVL and
LLaVA-OneVision share on top: a ``vision_feature_layer`` that cuts the encoder short, and Qwen2-style scoring;
``tile_pictures`` turns their square tiles back into previews.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..base import Backbone

PREVIEW_TILE = 192


class VisionTowerBackbone(Backbone):
    """An adapter for ``model.model.vision_tower`` feeding ``model.model.language_model`` with 1D positions."""

    @property
    def tower(self) -> torch.nn.Module:
        return self.model.model.vision_tower

    @property
    def language_model(self) -> torch.nn.Module:
        return self.model.model.language_model

    @property
    def encoder_layers(self) -> torch.nn.ModuleList:
        """The vision encoder's layers (each model names their list differently)."""
        raise NotImplementedError

    @property
    def vision_layers(self) -> torch.nn.ModuleList:
        return self.encoder_layers

    @property
    def vit_depth(self) -> int:
        return len(self.encoder_layers)


class FeatureLayerBackbone(VisionTowerBackbone):
    """A tower adapter whose model takes one encoder layer's output (``vision_feature_layer``), not the last."""

    @property
    def feature_layer(self) -> int:
        """Encoder layers whose output the model takes (``hidden_states[i]`` is layer ``i - 1``'s output)."""
        layer = self.config.vision_feature_layer
        if not isinstance(layer, int):
            raise ValueError(
                "stage 1 supports one vision_feature_layer, not a list: leave stage1_layers empty for this model"
            )
        return layer % (len(self.encoder_layers) + 1)

    @property
    def vit_depth(self) -> int:
        # Only the layers up to the feature layer run, so only they count.
        layer = self.config.vision_feature_layer
        return self.feature_layer if isinstance(layer, int) else len(self.encoder_layers)


def tile_pictures(
    pixel_values: torch.Tensor, select: tuple[int | slice, ...], mean: list[float], std: list[float]
) -> np.ndarray:
    """(tiles, h, w, 3) uint8: the normalised tiles ``pixel_values[select]`` turned back into pictures,
    at most ``PREVIEW_TILE`` a side."""
    mean = torch.tensor(mean, dtype=torch.float32)[:, None, None]
    std = torch.tensor(std, dtype=torch.float32)[:, None, None]
    pixels = pixel_values[select].detach().float().cpu() * std + mean
    if pixels.shape[-1] > PREVIEW_TILE:
        pixels = F.interpolate(pixels, size=(PREVIEW_TILE, PREVIEW_TILE), mode="bilinear", antialias=True)
    return (pixels.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
