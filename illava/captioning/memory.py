"""How many prompts fit in a memory budget: the KV cache and activations one prompt needs, from the model's shape.

Merging shortens the cached sequence (stage 1 for every layer, stage 2 for the layers from its first one on),
so a merged prompt costs less and more of them fit in the same budget.
"""

from __future__ import annotations

import os

import torch

from ..config import MergeConfig
from ..loading import LVLM
from ..methods import method

# Largest batch the budget may pick: beyond it padding and decoding overheads outweigh what batching saves.
MAX_AUTO_BATCH = 64
# Of the free memory, what an automatic budget takes (the rest absorbs the allocator's fragmentation).
FREE_SHARE = 0.8


def layer_lengths(config: MergeConfig, llm_depth: int, prompt_tokens: int, visual_tokens: int, new_tokens: int) -> list[int]:
    """Tokens each decoder layer caches by the end of generation: the whole prompt before the first stage-2
    layer, the prompt less what stage 2 removed from its layers on (its schedule, ``MergeConfig.stage2_schedule``,
    plus the recycled tokens), and the generated tokens in every layer."""
    lengths, removed = [], 0
    layers = config.stage2_layers if config.stage2_active else ()
    for layer in range(llm_depth):
        if layer in layers:
            kept = config.stage2_schedule.left([visual_tokens], layer)[0]
            removed = max(0, visual_tokens - kept - config.stage2_recycled)
        lengths.append(prompt_tokens - removed + new_tokens)
    return lengths


def kv_bytes(lvlm: LVLM, config: MergeConfig, prompt_tokens: int, visual_tokens: int, new_tokens: int) -> int:
    """The KV cache of one prompt: 2 (keys, values) x KV heads x head size x element size per cached token and
    layer, summed over ``layer_lengths``."""
    text = lvlm.model.config.get_text_config()
    heads = getattr(text, "num_key_value_heads", None) or text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    per_token = 2 * heads * head_dim * _element_bytes(lvlm)
    lengths = layer_lengths(config, lvlm.backbone.llm_depth, prompt_tokens, visual_tokens, new_tokens)
    return per_token * sum(lengths)


def item_bytes(lvlm: LVLM, config: MergeConfig, prompt_tokens: int, visual_tokens: int, new_tokens: int) -> int:
    """Memory one prompt adds to a batch: ``kv_bytes`` + the larger of a layer's transient activations and
    stage 2's (``stage2_bytes``) + the padded batch's boolean attention mask (prompt_tokens² bytes, which
    SDPA takes whole) + 2 x vocabulary x 4 bytes (the fp32 logits of a step and their processed copy).

    A layer's activations are estimated as prompt_tokens x (4 x hidden + 2 x intermediate) x element size
    (residual stream, attention and MLP outputs, the MLP's widest tensors).
    """
    text = lvlm.model.config.get_text_config()
    intermediate = getattr(text, "intermediate_size", None) or 4 * text.hidden_size
    activations = prompt_tokens * (4 * text.hidden_size + 2 * intermediate) * _element_bytes(lvlm)
    transient = max(activations, stage2_bytes(lvlm, config, prompt_tokens, prompt_tokens - visual_tokens))
    logits = 2 * text.vocab_size * 4
    return kv_bytes(lvlm, config, prompt_tokens, visual_tokens, new_tokens) + transient + prompt_tokens**2 + logits


def stage2_bytes(lvlm: LVLM, config: MergeConfig, prompt_tokens: int, text_tokens: int = 1) -> int:
    """What a stage-2 layer holds for one prompt while it ranks and gathers (0 without stage 2): the scoring
    layer's keys recomputed and in fp32 (per key head, never repeated per query head), the fp32 attention
    rows of every head and their softmax (one row, or one per rater for SparseVLM: at most the prompt's
    ``text_tokens``), and the hidden state cloned and gathered."""
    if not config.stage2_active:
        return 0
    text = lvlm.model.config.get_text_config()
    heads = text.num_attention_heads
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    element = _element_bytes(lvlm)
    keys = kv_heads * head_dim * (element + 4)
    rows = max(1, text_tokens) if method(config.method).ranks_by == "raters" else 1
    return prompt_tokens * (keys + 2 * heads * 4 * rows + 2 * text.hidden_size * element)


def batch_size_for(
    lvlm: LVLM, config: MergeConfig, budget_bytes: int, prompt_tokens: int, visual_tokens: int, new_tokens: int
) -> int:
    """The most prompts of this size (the longest of a batch) whose ``item_bytes`` fit in ``budget_bytes``:
    budget // item_bytes, at least 1 and at most ``MAX_AUTO_BATCH``."""
    per_item = item_bytes(lvlm, config, prompt_tokens, visual_tokens, new_tokens)
    return max(1, min(MAX_AUTO_BATCH, budget_bytes // per_item))


def free_memory_bytes(device: torch.device) -> int:
    """What an automatic batch size may use on ``device``: a share of its free memory (the GPU's, or the
    machine's available RAM for the CPU)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
    else:
        try:
            import psutil  # ComfyUI depends on it; the only portable way to read available RAM (Windows too)

            free = psutil.virtual_memory().available
        except ImportError:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return int(free * FREE_SHARE)


def _element_bytes(lvlm: LVLM) -> int:
    return torch.empty((), dtype=lvlm.dtype).element_size()
