"""THE cost model: the FLOPs of every vision-encoder and LLM layer, what merging saves, and what a budget means.

A **budget is compute**: the share of the work on visual tokens that remains, over every encoder layer
and every LLM layer, relative to merging off, for the same input. A layer's work on a visual token is
2 FLOPs per parameter plus its attention: over the token's view (a tile, slice, frame group or image)
or its window in the encoder, over the prompt in the LLM (causal: half the square, each visual token's
share counted). Recycled tokens are visual tokens; text tokens are not, though they set the LLM's
attention length. The predicted speedup is the whole ViT + prefill FLOPs (text included) of merging off
over those of the configuration. Norms, the projector and the scoring merging adds are left out:
the estimate ranks configurations and predicts their ratio, it does not time them.

Per-family facts (where the encoder has windows, the widths, a typical input's geometry) come from the
backbone contract, so this module names no model.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Sequence

import torch

from .config import MergeConfig

# A prompt's text tokens when a readout or ``auto`` has no prompt at hand: a chat template and a short question.
TYPICAL_TEXT_TOKENS = 60


@dataclass(frozen=True)
class Flops:
    """FLOPs of one prompt's ViT + LLM prefill, split by what they are spent on."""

    vit: float
    llm_visual: float
    llm_text: float

    @property
    def visual(self) -> float:
        """The work on visual tokens: what a budget measures."""
        return self.vit + self.llm_visual

    @property
    def total(self) -> float:
        return self.vit + self.llm_visual + self.llm_text


@dataclass(frozen=True)
class Estimate:
    """What a configuration costs on one input: its work share (the budget's measure) and predicted speedup."""

    work: float
    speedup: float


class CostModel:
    """The FLOP estimate for one model: its layers' parameter counts and widths are read once (a meta-device
    model will do: nothing is computed on the weights)."""

    def __init__(self, backbone) -> None:
        self.vision = [_parameters(layer) for layer in list(backbone.vision_layers)[: backbone.vit_depth]]
        self.text = [_parameters(layer) for layer in backbone.language_model.layers]
        self.windows = [backbone.vision_window(index) for index in range(len(self.vision))]
        self.vision_width, self.text_width = backbone.vision_width, backbone.text_width
        self.vocab = backbone.vocab_size

    def vit_cells(self, shape, config: MergeConfig) -> list[int]:
        """Cells of each view of one item that enter each encoder layer; the last entry: those leaving it."""
        _, rows, columns = shape.grid
        cells = rows * columns
        schedule = {
            layer: config.stage1_schedule.left([cells], layer)[0] for layer in config.stage1_layers
        }
        kept, out = cells, []
        for index in range(len(self.vision) + 1):
            kept = schedule.get(index, kept)
            out.append(kept)
        return out

    def llm_visual_tokens(self, shapes: Sequence, config: MergeConfig) -> list[float]:
        """The visual tokens each LLM layer runs on (and caches), after stage 1 and on stage 2's schedule."""
        visual = sum(shape.tokens_full * self.vit_cells(shape, config)[-1] / _cells(shape) for shape in shapes)
        schedule = {
            layer: config.stage2_schedule.left([round(visual)], layer)[0] for layer in config.stage2_layers
        }
        out = []
        for index in range(len(self.text)):
            visual = schedule.get(index, visual)
            out.append(visual)
        return out

    def flops(self, shapes: Sequence, text_tokens: int, config: MergeConfig) -> Flops:
        """ViT + LLM prefill FLOPs of one prompt holding items of these shapes and ``text_tokens`` of text."""
        vit = 0.0
        for shape in shapes:
            views = shape.grid[0]
            per_cell = shape.patches / (views * _cells(shape))
            for params, window, cells in zip(self.vision, self.windows, self.vit_cells(shape, config)):
                tokens = cells * per_cell
                span = tokens if window is None else min(window, tokens)
                vit += views * tokens * (2 * params + 4 * self.vision_width * span)
        llm_visual = llm_text = 0.0
        for params, visual in zip(self.text, self.llm_visual_tokens(shapes, config)):
            per_token = 2 * params + 2 * self.text_width * (text_tokens + visual)
            llm_visual += visual * per_token
            llm_text += text_tokens * per_token
        return Flops(vit, llm_visual, llm_text)

    def estimate(self, shapes: Sequence, text_tokens: int, config: MergeConfig) -> Estimate:
        """``config``'s work share and predicted ViT + prefill speedup against merging off, on the same input."""
        off, merged = self.flops(shapes, text_tokens, MergeConfig()), self.flops(shapes, text_tokens, config)
        return Estimate(work=merged.visual / off.visual, speedup=off.total / merged.total)

    def work(self, shapes: Sequence, text_tokens: int, config: MergeConfig) -> float:
        """``config``'s work share: the budget it spends on this input."""
        return self.estimate(shapes, text_tokens, config).work

    def decode_flops(self, shapes: Sequence, text_tokens: int, config: MergeConfig, new_tokens: int) -> float:
        """FLOPs of generating ``new_tokens`` after that prompt: every layer's weights and its attention over
        the cache it holds (the whole prompt before a stage-2 layer, the reduced one after), plus the LM head."""
        total = 0.0
        for params, visual in zip(self.text, self.llm_visual_tokens(shapes, config)):
            cached = text_tokens + visual
            # Step t attends over cached + t keys: the sum over t of 4 * width * (cached + t).
            total += new_tokens * (2 * params + 4 * self.text_width * cached)
            total += 2 * self.text_width * new_tokens * (new_tokens - 1)
        return total + 2 * self.text_width * self.vocab * new_tokens


def _cells(shape) -> int:
    return shape.grid[1] * shape.grid[2]


def _parameters(layer: torch.nn.Module) -> int:
    return sum(p.numel() for p in layer.parameters())


_MODELS: "weakref.WeakKeyDictionary[object, CostModel]" = weakref.WeakKeyDictionary()


def cost_model(backbone) -> CostModel:
    """The backbone's cost model, built once per adapter (parameter counts do not change)."""
    model = _MODELS.get(backbone)
    if model is None:
        model = _MODELS[backbone] = CostModel(backbone)
    return model

