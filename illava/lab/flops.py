"""The prefill FLOPs of a Qwen-VL model for given token counts: what an ideal speedup would be.

Counts multiply-adds as 2 FLOPs: the linear layers of every ViT block (for the tokens it sees),
attention scores and mixing (full attention per frame, windows per window), the patch merger, and
every LLM layer over the prompt (causal attention counted as half the square). Patch embedding,
norms, softmax and the scoring iLLaVA adds are left out, so measured/ideal shows overheads.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import MergeConfig
from ..merge import stage_targets


@dataclass(frozen=True)
class Dims:
    vit_hidden: int
    vit_layer_params: int
    vit_layers: int
    vit_full_layers: frozenset[int]
    window_tokens: int
    merger_params: int
    llm_hidden: int
    llm_layer_params: int
    llm_layers: int
    vocab: int = 0

    @classmethod
    def from_config(cls, config) -> "Dims":
        vision, text = config.vision_config, config.text_config
        if getattr(vision, "fullatt_block_indexes", None) is not None:
            hidden, inner = vision.hidden_size, vision.intermediate_size
            mlp = 3 * hidden * inner
            full = frozenset(vision.fullatt_block_indexes)
            window = (vision.window_size // vision.patch_size) ** 2
            out = vision.out_hidden_size
        else:
            hidden = vision.embed_dim
            mlp = 2 * hidden * int(hidden * vision.mlp_ratio)
            full = frozenset(range(vision.depth))
            window = 0
            out = vision.hidden_size
        unit = vision.spatial_merge_size**2
        head_dim = text.hidden_size // text.num_attention_heads
        attention = 2 * text.hidden_size * text.hidden_size + 2 * text.hidden_size * text.num_key_value_heads * head_dim
        return cls(
            vit_hidden=hidden,
            vit_layer_params=4 * hidden * hidden + mlp,
            vit_layers=vision.depth,
            vit_full_layers=full,
            window_tokens=window,
            merger_params=(unit * hidden) ** 2 + unit * hidden * out,
            llm_hidden=text.hidden_size,
            llm_layer_params=attention + 3 * text.hidden_size * text.intermediate_size,
            llm_layers=text.num_hidden_layers,
            vocab=text.vocab_size,
        )


def vit_flops(dims: Dims, frame_groups: list[int], config: MergeConfig) -> float:
    """ViT FLOPs for frames of ``frame_groups`` 2x2 groups each, with stage 1 as configured."""
    groups = list(frame_groups)
    schedule = {
        layer: stage_targets(frame_groups, config.stage1_keep, len(config.stage1_layers), j + 1)
        for j, layer in enumerate(config.stage1_layers)
    }
    total = 0.0
    for layer in range(dims.vit_layers):
        groups = schedule.get(layer, groups)
        tokens = [4 * g for g in groups]
        n = sum(tokens)
        total += 2 * dims.vit_layer_params * n
        if layer in dims.vit_full_layers:
            total += 4 * dims.vit_hidden * sum(t * t for t in tokens)
        else:
            shrink = [t / (4 * g0) for t, g0 in zip(tokens, frame_groups)]
            total += 4 * dims.vit_hidden * sum(t * dims.window_tokens * s for t, s in zip(tokens, shrink))
    return total + 2 * dims.merger_params * sum(groups)


def llm_visual_tokens(dims: Dims, visual_tokens: int, config: MergeConfig) -> list[int]:
    """The visual tokens each LLM layer runs on (and caches), with stage 2 as configured."""
    schedule = {
        layer: stage_targets([visual_tokens], config.stage2_keep, len(config.stage2_layers), j + 1)[0]
        for j, layer in enumerate(config.stage2_layers)
    }
    visual, per_layer = visual_tokens, []
    for layer in range(dims.llm_layers):
        visual = schedule.get(layer, visual)
        per_layer.append(visual)
    return per_layer


def llm_prefill_flops(dims: Dims, text_tokens: int, visual_tokens: int, config: MergeConfig) -> float:
    """LLM prefill FLOPs for a prompt of ``text_tokens`` plus ``visual_tokens``, with stage 2 as configured."""
    total = 0.0
    for visual in llm_visual_tokens(dims, visual_tokens, config):
        n = text_tokens + visual
        total += 2 * dims.llm_layer_params * n + 2 * dims.llm_hidden * n * n
    return total


def llm_decode_flops(dims: Dims, text_tokens: int, visual_tokens: int, config: MergeConfig, new_tokens: int) -> float:
    """FLOPs of generating ``new_tokens`` after that prompt: every layer's weights and its attention over the
    cache it holds (the whole prompt before a stage-2 layer, the reduced one after), plus the LM head."""
    total = 0.0
    for visual in llm_visual_tokens(dims, visual_tokens, config):
        cached = text_tokens + visual
        # Step t attends over cached + t keys: the sum over t of 4 * hidden * (cached + t).
        total += new_tokens * (2 * dims.llm_layer_params + 4 * dims.llm_hidden * cached)
        total += 2 * dims.llm_hidden * new_tokens * (new_tokens - 1)
    return total + 2 * dims.llm_hidden * dims.vocab * new_tokens
