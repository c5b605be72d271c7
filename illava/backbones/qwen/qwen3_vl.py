"""Qwen3-VL: the Qwen2-VL encoder loop plus learned position embeddings and DeepStack features.

Qwen3-VL adds, to its ViT, a learned position table resampled to each image's grid (added once
after patch embedding) and DeepStack: the outputs of a few ViT blocks pass through their own
mergers and are added to the visual tokens of the first LLM layers. Those features are reduced
together with the hidden states (stage 1) and with the visual tokens (stage 2), so every kept
token keeps its own DeepStack features and a recycled token gets its group's weighted mean.
"""

from __future__ import annotations

import torch

from ..base import LayerFeatures, register
from .qwen2_vl import QwenVLBackbone


class Qwen3VLBackbone(QwenVLBackbone):
    """Adapter for ``Qwen3VLForConditionalGeneration``."""

    def embed_patches(self, pixel_values: torch.Tensor, grid_thw: torch.Tensor) -> torch.Tensor:
        from transformers.vision_utils import get_vision_interpolation_indices_and_weights

        visual = self.visual
        hidden = visual.patch_embed(pixel_values.type(visual.dtype))
        indices, weights = get_vision_interpolation_indices_and_weights(
            grid_thw,
            num_grid_per_side=visual.num_grid_per_side,
            mode=visual.interpolation_mode,
            align_corners=visual.interpolation_align_corners,
            spatial_merge_size=visual.config.spatial_merge_size,
        )
        positions = (visual.pos_embed(indices.to(hidden.device)) * weights.to(hidden.device)[:, :, None]).sum(1)
        return hidden + positions.to(hidden.dtype)

    def inner_features(self, block_index: int, hidden: torch.Tensor) -> torch.Tensor | None:
        visual = self.visual
        if block_index not in visual.deepstack_visual_indexes:
            return None
        return visual.deepstack_merger_list[visual.deepstack_visual_indexes.index(block_index)](hidden)

    def encoder_output(self, features: tuple[torch.Tensor, ...], layer_features: tuple[tuple[torch.Tensor, ...], ...]):
        from transformers.models.qwen3_vl.modeling_qwen3_vl import BaseModelOutputWithDeepstackFeatures

        return BaseModelOutputWithDeepstackFeatures(pooler_output=features, deepstack_features=list(layer_features))

    def pop_layer_features(self, text_kwargs: dict) -> LayerFeatures | None:
        features = text_kwargs.pop("deepstack_visual_embeds", None)
        visual_mask = text_kwargs.pop("visual_pos_masks", None)
        return None if features is None else LayerFeatures(visual_mask, list(features))

    def add_layer_features(self, hidden: torch.Tensor, visual_mask: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        return self.language_model._deepstack_process(hidden, visual_mask, features)


register("qwen3_vl", Qwen3VLBackbone, "Qwen3-VL", min_transformers="5.18.0")
