"""Attention losses: hooks that keep an LLM layer's attention inputs, and the pointing and scoring losses read from them."""

from __future__ import annotations

import numpy as np
import torch

from labels import pointed_answers


def llm_layer(model, layer: int):
    """LLM decoder layer ``layer`` of ``model``; an out-of-range index is an error that names the valid ones."""
    layers = model.model.language_model.layers
    if not 0 <= layer < len(layers):
        raise ValueError(f"--attention-layer must be an LLM layer from 0 to {len(layers) - 1}, got {layer}")
    return layers[layer]


def visual_positions(batch: dict) -> list[torch.Tensor]:
    """Per row of a collated batch, the sequence positions of its visual tokens, in order."""
    return [types.nonzero().flatten() for types in batch["mm_token_type_ids"]]


class KeptAttentionInputs:
    """Keeps the inputs of one LLM layer's attention from each forward, for a loss to read or to recompute heads from.

    Recomputed rather than read back so that training can keep SDPA, which returns no attention weights.
    """

    def __init__(self, model, layer: int) -> None:
        self.attention = llm_layer(model, layer).self_attn
        self.inputs: dict = {}
        self.attention.register_forward_pre_hook(self._keep_inputs, with_kwargs=True)

    def _keep_inputs(self, module, args, kwargs) -> None:
        self.inputs = {"hidden_states": kwargs["hidden_states"], "position_embeddings": kwargs["position_embeddings"]}

    def take_inputs(self) -> dict:
        """The inputs kept from the last forward, dropped here at once: the saved checkpoint deep-copies the model, this
        hook's owner with it."""
        inputs, self.inputs = self.inputs, {}
        return inputs

    def rotated_heads(self, heads: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotated queries of the first ``heads`` heads and keys of the key/value heads they read, from the last forward.

        Both are (rows, heads, length, dim).
        """
        from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import apply_rotary_pos_emb

        inputs = self.take_inputs()
        attention, hidden = self.attention, inputs["hidden_states"]
        rows, length, _ = hidden.shape
        kv_heads = -(-heads // attention.num_key_value_groups)
        query = attention.q_proj(hidden)[..., : heads * attention.head_dim].view(rows, length, heads, -1).transpose(1, 2)
        key = attention.k_proj(hidden)[..., : kv_heads * attention.head_dim].view(rows, length, kv_heads, -1).transpose(1, 2)
        return apply_rotary_pos_emb(query, key, *inputs["position_embeddings"])


class AnswerAttention(KeptAttentionInputs):
    """A loss that points two LLM attention heads, at each answer's prompt position, at the objects asked about.

    Learned only through the answers, the language model reads what each visual token shows (a
    linear probe of the tokens finds shape and colour) but did not learn, in 45 minutes, to find
    the token a question is about. This names it: the first two heads of ``layer`` (which share
    one key/value head), attending from the position that predicts an answer's first token, are
    each scored by the negative log of the attention they pay the tokens ``pointed_names`` gives
    them. Only training uses it; the model is unchanged.
    """

    heads = 2

    def __init__(self, model, layer: int) -> None:
        super().__init__(model, layer)
        if self.attention.num_key_value_groups < self.heads:
            raise ValueError(f"the pointed heads must share a key/value head: use --heads at least {self.heads}")

    def loss(self, batch: dict, targets: list[list[tuple[np.ndarray | None, ...]]]) -> torch.Tensor | None:
        """Mean negative log attention on the pointed tokens over every head and answer given any, from the last forward."""
        attention = self.attention
        # The pointed heads and the key/value head they read.
        query, key = self.rotated_heads(self.heads)
        visual = visual_positions(batch)
        terms = []
        for row, position, pointed in pointed_answers(batch["labels"], targets):
            for head, tokens in enumerate(pointed):
                if tokens is None:
                    continue
                scores = key[row, 0, : position + 1] @ query[row, head, position] * attention.scaling
                terms.append(-torch.logsumexp(scores.log_softmax(-1)[visual[row][torch.from_numpy(tokens)]], 0))
        return torch.stack(terms).mean() if terms else None


class ScoringAttention(KeptAttentionInputs):
    """A loss that keeps the attention stage 2 and FastV rank visual tokens with on the objects asked about.

    Both score each visual token by the head-averaged attention the last prompt token (the
    position that predicts the answer) pays it in the layer before they prune. A run with
    ``ContrastProbe`` answered where things are, but that attention had moved off the objects, and
    merging kept fewer of their tokens than random drop. This scores it: at each answer position in
    ``layer``, the negative log of the share of the head-averaged attention on visual tokens that
    falls on the tokens any pointed head should read. Attention to the text is left free; only
    training uses it.
    """

    def loss(self, batch: dict, targets: list[list[tuple[np.ndarray | None, ...]]]) -> torch.Tensor | None:
        """Mean over answers of -log(share of the visual attention on the pointed tokens), from the last forward."""
        attention = self.attention
        query, key = self.rotated_heads(attention.config.num_attention_heads)
        key = key.repeat_interleave(attention.num_key_value_groups, dim=1)
        visual = visual_positions(batch)
        terms = []
        for row, position, pointed in pointed_answers(batch["labels"], targets):
            tokens = [torch.from_numpy(found) for found in pointed if found is not None]
            if not tokens:
                continue
            scores = key[row, :, : position + 1] @ query[row, :, position, :, None] * attention.scaling
            on_visual = scores.squeeze(-1).softmax(-1)[:, visual[row]].mean(0)
            asked = torch.cat(tokens).unique()
            terms.append(on_visual.sum().log() - on_visual[asked].sum().log())
        return torch.stack(terms).mean() if terms else None
