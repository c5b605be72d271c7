"""An estimate of the vision encoder's and the LLM prefill's FLOPs, for any backbone: what merging saves.

Each layer costs 2 FLOPs per parameter per token it sees, plus attention over its segments (a view
of the vision encoder: a tile, slice or frame group; the whole prompt, causally, in the LLM) at a
width estimated from its parameter count (a transformer layer holds about 12 width^2 parameters).
Stage 1 and stage 2 follow their schedules (``merge.stage_targets``). Windowed attention, norms and
the scoring merging adds are left out: the estimate ranks configurations, it does not time them.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from .config import MergeConfig
from .merge import stage_targets


class CostModel:
    """The FLOP estimate for one loaded model: its layers' parameter counts are read once."""

    def __init__(self, backbone) -> None:
        self.vision = [_parameters(layer) for layer in list(backbone.vision_layers)[: backbone.vit_depth]]
        self.text = [_parameters(layer) for layer in backbone.language_model.layers]

    def flops(self, items: Sequence, text_tokens: int, config: MergeConfig) -> float:
        """ViT + LLM prefill FLOPs of one prompt holding ``items`` (``VisualItem``s) and ``text_tokens`` of text."""
        total, visual = 0.0, 0.0
        for item in items:
            views, rows, columns = item.layout.grid
            cells = rows * columns
            per_cell = item.patches / (views * cells)
            schedule = {
                layer: stage_targets([cells], config.stage1_keep, len(config.stage1_layers), j + 1)[0]
                for j, layer in enumerate(config.stage1_layers)
            }
            kept = cells
            for index, params in enumerate(self.vision):
                kept = schedule.get(index, kept)
                total += _layer_flops(params, [kept * per_cell] * views, causal=False)
            kept = schedule.get(len(self.vision), kept)
            visual += item.tokens_full * kept / cells
        schedule = {
            layer: stage_targets([round(visual)], config.stage2_keep, len(config.stage2_layers), j + 1)[0]
            for j, layer in enumerate(config.stage2_layers)
        }
        for index, params in enumerate(self.text):
            visual = schedule.get(index, visual)
            total += _layer_flops(params, [text_tokens + visual], causal=True)
        return total

    def relative(self, items: Sequence, text_tokens: int, config: MergeConfig) -> float:
        """``config``'s estimated FLOPs over merging off's, for the same prompt."""
        return self.flops(items, text_tokens, config) / self.flops(items, text_tokens, MergeConfig())


def _parameters(layer: torch.nn.Module) -> int:
    return sum(p.numel() for p in layer.parameters())


def _layer_flops(params: int, segments: Sequence[float], causal: bool) -> float:
    width = math.sqrt(params / 12)
    attention = (2 if causal else 4) * width * sum(n * n for n in segments)
    return 2 * params * sum(segments) + attention
