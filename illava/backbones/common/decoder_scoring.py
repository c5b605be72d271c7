"""Stage 2's scores in a Llama-style decoder layer: the attention a few prompt tokens pay every token.

Qwen2, Qwen2.5, Qwen3 and Qwen3.5 decoders (the LLMs of every supported family) share this layout:
``input_layernorm``, then ``self_attn`` with ``q_proj``/``k_proj`` (and per-head norms in Qwen3 and
later), grouped key heads and the model's own ``apply_rotary_pos_emb``. Only the query rows needed
are recomputed, so the model's attention kernel stays untouched.
"""

from __future__ import annotations

import sys
from typing import Callable

import torch

from ...merge import query_row_attention


def heads(projected: torch.Tensor, head_dim: int, norm) -> torch.Tensor:
    """(batch, n, heads * head_dim) -> (batch, heads, n, head_dim), with the per-head norm some models have."""
    batch, n, _ = projected.shape
    states = projected.view(batch, n, -1, head_dim)
    if norm is not None:
        states = norm(states)
    return states.transpose(1, 2)


def plain_queries(attn, x: torch.Tensor) -> torch.Tensor:
    """The layer's queries for ``x`` (batch, n, hidden), before rotary: (batch, heads, n, head_dim)."""
    return heads(attn.q_proj(x), attn.head_dim, getattr(attn, "q_norm", None))


def decoder_query_scores(
    layer,
    hidden: torch.Tensor,
    rotary,
    key_mask: torch.Tensor,
    slots: torch.Tensor,
    keys: torch.Tensor | None = None,
    queries: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor] = plain_queries,
) -> torch.Tensor:
    """Head-averaged attention paid by the tokens at ``slots`` (batch, m) to every token, in ``layer``: (batch, m, n).

    hidden: the layer's input; rotary: its (cos, sin); key_mask: (batch, n) False for padding; each query
    also sees only the keys up to its own slot, as in the model's causal attention. keys: the layer's
    rotated keys (batch, kv_heads, n, head_dim) when the KV cache already holds them, else they are
    recomputed. ``queries`` turns normed hidden states into that layer's queries.
    """
    attn = layer.self_attn
    cos, sin = rotary
    rows = torch.arange(hidden.shape[0], device=hidden.device)[:, None]
    apply_rope = sys.modules[type(attn).__module__].apply_rotary_pos_emb
    q = queries(attn, layer.input_layernorm(hidden[rows, slots]))
    q, _ = apply_rope(q, q, cos[rows, slots], sin[rows, slots])
    if keys is None:
        x = layer.input_layernorm(hidden)
        keys = heads(attn.k_proj(x), attn.head_dim, getattr(attn, "k_norm", None))
        keys, _ = apply_rope(keys, keys, cos, sin)
    causal = torch.arange(keys.shape[-2], device=hidden.device) <= slots[..., None]
    probs = query_row_attention(q, keys, key_mask[:, None, :] & causal, attn.scaling)
    return probs.mean(dim=1)
