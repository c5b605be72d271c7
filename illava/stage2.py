"""Stage 2: the language model's layer loop, pruning visual tokens at the chosen layers in prefill.

``Stage2`` stands in for the text model's ``forward`` during one ``generate`` call (see
``installed``) and calls the model's own decoder layers, rotary embedding, norm and mask helpers.
At each stage-2 layer ``k`` in prefill it scores the visual tokens with the attention the last
prompt token (or, for SparseVLM, the prompt's text tokens most relevant to the picture) paid them in
layer ``k - 1``, keeps the best, folds the rest into recycled tokens and
gathers hidden states and rotary angles, so kept tokens keep their original M-RoPE (or 1D) positions.
Layers before ``k`` cache the full sequence and later ones the reduced one; every decoding step
rebuilds the later layers' padding mask from the stored selection, and positions continue from the
unreduced length, as the original model would. Hybrid text models (linear-attention layers between
full-attention ones, as the backbone reports them) get the 2D padding mask in their linear layers, as
their own loop gives them; models with per-layer visual features (DeepStack) get them through the
backbone's hooks, reduced as the tokens were.
"""

from __future__ import annotations

import functools
import inspect
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import torch

from .backbones import Backbone
from .config import MergeConfig
from .merge import KEPT, text_raters
from .methods import method
from .methods import select as select_reduction


@dataclass
class _Segment:
    """From ``layer`` on, slot j of row b holds original position ``index[b, j]`` (if ``valid``)."""

    layer: int
    index: torch.Tensor
    valid: torch.Tensor


@dataclass
class _Run:
    """One forward call's state as the layer loop reads it; a stage-2 cut or a decoding step's re-masking
    changes what the later layers get."""

    hidden: torch.Tensor
    cache: object
    past: int
    use_cache: bool
    attention_mask: torch.Tensor
    rotary: tuple
    text_position_ids: torch.Tensor | None
    visual_positions: torch.Tensor | None
    layer_features: list | None
    mask: object = None
    padding: object = None


@dataclass
class Stage2Record:
    """What stage 2 did in the last prefill: per sample, the status of each visual token in order."""

    visual_status: list[torch.Tensor] = field(default_factory=list)
    visual_after: list[int] = field(default_factory=list)


class Stage2:
    """Replacement text-model forward with stage-2 pruning for one batch of prompts."""

    def __init__(
        self, backbone: Backbone, config: MergeConfig, visual_mask: torch.Tensor, score_position: int = -1
    ) -> None:
        text_model = backbone.language_model
        if getattr(text_model, "has_sliding_layers", False):
            raise ValueError("stage 2 does not support sliding-window attention layers; set stage2_keep to 1.0")
        self.backbone = backbone
        self.text_model = text_model
        self.linear_layers = backbone.linear_attention_layers
        self.config = config
        self.visual_mask = visual_mask.bool()
        # The prompt position whose attention ranks the visual tokens: the last one, unless a test
        # re-runs a longer sequence and must score from where the prompt ended.
        self.score_position = score_position
        self.segments: list[_Segment] = []
        self.prefill_length = 0
        self.record = Stage2Record()

    def __call__(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        cache=None,
        inputs_embeds=None,
        use_cache=None,
        **kwargs,
    ):
        from transformers.modeling_outputs import BaseModelOutputWithPast

        run = self._normalised(input_ids, attention_mask, position_ids, cache, inputs_embeds, use_cache, kwargs)
        state = self._start_prefill(run) if run.past == 0 else None
        segment_at = {segment.layer: segment for segment in self.segments}
        hidden = layer_input = run.hidden
        for index, layer in enumerate(self.text_model.layers):
            if state is not None and index in self.config.stage2_layers:
                hidden = self._cut(index, layer_input, hidden, run, state)
            elif state is None and index in segment_at:
                self._remask(segment_at[index], hidden, run, index)
            layer_input = hidden
            hidden = layer(
                hidden,
                attention_mask=run.padding if index in self.linear_layers else run.mask,
                position_embeddings=run.rotary,
                position_ids=run.text_position_ids,
                use_cache=run.use_cache,
                **{_cache_argument(): run.cache},
                **kwargs,
            )
            if run.layer_features is not None and index < len(run.layer_features):
                hidden = self.backbone.add_layer_features(hidden, run.visual_positions, run.layer_features[index])
        if state is not None:
            self.record = state.record(self.visual_mask)
        return BaseModelOutputWithPast(last_hidden_state=self.text_model.norm(hidden), **{_cache_argument(): run.cache})

    def _normalised(self, input_ids, attention_mask, position_ids, cache, inputs_embeds, use_cache, kwargs) -> "_Run":
        """The call's arguments as the layer loop reads them, as the model's own forward would prepare them."""
        from transformers.cache_utils import DynamicCache
        from transformers.masking_utils import create_causal_mask

        model = self.text_model
        # Before transformers 5.24 the cache argument was named past_key_values.
        if cache is None:
            cache = kwargs.pop("past_key_values", None)
        # Features some models add to the visual tokens after each of the first layers (DeepStack).
        extra = self.backbone.pop_layer_features(kwargs)
        if inputs_embeds is None:
            inputs_embeds = model.embed_tokens(input_ids)
        use_cache = model.config.use_cache if use_cache is None else use_cache
        if use_cache and cache is None:
            cache = DynamicCache(config=model.config)
        past = cache.get_seq_length() if cache is not None else 0
        batch, length, _ = inputs_embeds.shape
        if position_ids is None:
            position_ids = (torch.arange(length, device=inputs_embeds.device) + past).expand(batch, -1)
        mrope = self.backbone.mrope
        if mrope and position_ids.ndim == 2:
            position_ids = position_ids[None, ...].expand(3, position_ids.shape[0], -1)
        # Plain 1D positions are also the text positions the mask and the layers take.
        text_position_ids = None if mrope else position_ids
        if position_ids.ndim == 3 and position_ids.shape[0] == 4:
            text_position_ids, position_ids = position_ids[0], position_ids[1:]
        if attention_mask is None:
            attention_mask = torch.ones(batch, past + length, dtype=torch.long, device=inputs_embeds.device)
        run = _Run(
            hidden=inputs_embeds, cache=cache, past=past, use_cache=use_cache, attention_mask=attention_mask,
            rotary=model.rotary_emb(inputs_embeds, position_ids), text_position_ids=text_position_ids,
            visual_positions=extra.visual_mask if extra is not None else None,
            layer_features=extra.features if extra is not None else None,
        )
        run.mask = create_causal_mask(
            config=model.config, inputs_embeds=inputs_embeds, attention_mask=attention_mask,
            position_ids=text_position_ids, **{_cache_argument(): cache},
        )
        run.padding = self._padding(inputs_embeds, attention_mask, cache)
        return run

    def _start_prefill(self, run: "_Run") -> "_PrefillState":
        """Forget the last prompt's cuts and start this one's bookkeeping (SparseVLM's raters chosen here)."""
        self.segments = []
        self.prefill_length = run.hidden.shape[1]
        self.record = Stage2Record()
        state = _PrefillState.start(run.attention_mask.bool(), self.visual_mask)
        if method(self.config.method).ranks_by == "raters":
            state.raters = _raters(run.hidden, state, self.score_position)
        return state

    def _cut(self, index: int, layer_input, hidden, run: "_Run", state: "_PrefillState") -> torch.Tensor:
        """Prefill at stage-2 layer ``index``: reduce the visual tokens and give the later layers their masks."""
        keys = _cached_keys(run.cache, index - 1, hidden.shape[1])
        hidden, run.rotary, run.layer_features = self._reduce(
            index, self.text_model.layers[index - 1], layer_input, keys, hidden, run.rotary, run.layer_features, state
        )
        run.visual_positions = state.visual
        self._mask_reduced(run, hidden, state.valid.long(), index)
        return hidden

    def _remask(self, segment: _Segment, hidden, run: "_Run", index: int) -> None:
        """A decoding step from stage-2 layer ``index`` on: the padding mask of the reduced cache it reads."""
        full = run.attention_mask[:, : self.prefill_length].gather(1, segment.index) * segment.valid
        reduced = torch.cat([full, run.attention_mask[:, self.prefill_length :]], dim=1)
        self._mask_reduced(run, hidden, reduced, index)

    def _mask_reduced(self, run: "_Run", hidden, attention_mask: torch.Tensor, index: int) -> None:
        """The masks layer ``index`` on takes over the reduced sequence whose 2D padding mask is ``attention_mask``;
        its positions are no longer plain text positions."""
        run.mask = self._mask(hidden, attention_mask, run.cache, index)
        run.padding = self._padding(hidden, attention_mask, run.cache)
        run.text_position_ids = None

    def _mask(self, hidden, attention_mask, cache, layer_index):
        from transformers.masking_utils import create_causal_mask

        # A hybrid cache knows sequence lengths only in full-attention layers; every layer from
        # ``layer_index`` on holds the same (reduced) length, so the first such layer sizes the mask.
        full = [i for i in range(layer_index, len(self.text_model.layers)) if i not in self.linear_layers]
        if not full:
            return None
        return create_causal_mask(
            config=self.text_model.config,
            inputs_embeds=hidden,
            attention_mask=attention_mask,
            position_ids=None,
            layer_idx=full[0],
            **{_cache_argument(): cache},
        )

    def _padding(self, hidden, attention_mask, cache):
        """The 2D padding mask the model's own loop gives its linear-attention layers (None without them)."""
        if not self.linear_layers:
            return None
        from transformers.masking_utils import create_recurrent_attention_mask

        return create_recurrent_attention_mask(self.text_model.config, hidden, attention_mask, cache)

    def _reduce(self, index, score_layer, score_input, keys, hidden, rotary, layer_features, state: "_PrefillState"):
        config = self.config
        slots, weights, key_mask = state.query_slots(self.score_position)
        if config.scored:
            attention = self.backbone.query_scores(score_layer, score_input, rotary, key_mask, slots, keys)
            scores = (attention * weights[..., None]).sum(dim=1)
        else:
            scores = torch.zeros(hidden.shape[:2], device=hidden.device)
        targets = config.stage2_schedule.left(state.visual_counts0, index)
        rows, recycled, reductions = [], [], []
        visual_counts = state.visual.sum(-1).tolist()
        for b in range(hidden.shape[0]):
            visual = torch.nonzero(state.visual[b] & state.valid[b]).squeeze(-1)
            text = torch.nonzero(~state.visual[b] & state.valid[b]).squeeze(-1)
            reduction = select_reduction(
                config.method, scores[b, visual], hidden[b, visual], targets[b],
                config.stage2_recycled, config.recycle_weighting,
            )
            values = reduction.recycled(hidden[b, visual]) if reduction.anchor.numel() else None
            state.mark(b, visual, reduction.status)
            reductions.append(reduction)
            rows.append(torch.sort(torch.cat([text, visual[reduction.kept]])).values)
            recycled.append((visual[reduction.anchor], values))
        width = max(row.numel() for row in rows)
        select = torch.zeros(hidden.shape[0], width, dtype=torch.long, device=hidden.device)
        valid = torch.zeros(hidden.shape[0], width, dtype=torch.bool, device=hidden.device)
        hidden = hidden.clone()
        for b, row in enumerate(rows):
            # Shorter rows are left-padded with masked slots, like the tokenizer's own padding.
            select[b, width - row.numel() :] = row
            valid[b, width - row.numel() :] = True
            anchors, values = recycled[b]
            if values is not None:
                hidden[b, anchors] = values
        gathered = hidden.gather(1, select[..., None].expand(-1, -1, hidden.shape[-1]))
        cos, sin = (t.gather(1, select[..., None].expand(-1, -1, t.shape[-1])) for t in rotary)
        state.advance(select, valid)
        self.segments.append(_Segment(index, state.index, state.valid))
        if layer_features is not None:
            layer_features = [self._reduce_rows(features, visual_counts, reductions) for features in layer_features]
        return gathered, (cos, sin), layer_features

    def _reduce_rows(self, features: torch.Tensor, counts: list[int], reductions) -> torch.Tensor:
        """Per-visual-token features (all rows' visual tokens in order) reduced as the tokens were."""
        return torch.cat([reduction.apply(rows) for rows, reduction in zip(torch.split(features, counts), reductions)])


@functools.cache
def _cache_argument() -> str:
    """What transformers names the KV cache argument: ``cache`` since 5.24, ``past_key_values`` before."""
    from transformers.masking_utils import create_causal_mask

    return "cache" if "cache" in inspect.signature(create_causal_mask).parameters else "past_key_values"


def _cached_keys(cache, layer_index: int, length: int) -> torch.Tensor | None:
    """The rotated keys ``layer_index`` just stored in a dynamic cache, if it holds exactly this prefill."""
    layers = getattr(cache, "layers", None)
    if layers is None or layer_index >= len(layers):
        return None
    keys = getattr(layers[layer_index], "keys", None)
    if not isinstance(keys, torch.Tensor) or keys.ndim != 4 or keys.shape[-2] != length:
        return None
    return keys


@dataclass
class _PrefillState:
    index: torch.Tensor  # (B, n) original position of each current slot
    valid: torch.Tensor  # (B, n) slot is a real token
    visual: torch.Tensor  # (B, n) slot holds a visual token
    visual_counts0: list[int]
    status: torch.Tensor  # (B, N) status of every original position
    raters: torch.Tensor | None = None  # (B, N) the original position is a text token that rates (SparseVLM)

    @classmethod
    def start(cls, attention_mask: torch.Tensor, visual_mask: torch.Tensor) -> "_PrefillState":
        batch, length = attention_mask.shape
        index = torch.arange(length, device=attention_mask.device).expand(batch, -1)
        visual = visual_mask & attention_mask
        status = torch.full((batch, length), KEPT, dtype=torch.int8, device=attention_mask.device)
        return cls(index, attention_mask, visual, visual.sum(-1).tolist(), status)

    def query_slots(self, position: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The current slots (B, m) of the tokens whose attention scores, their weights (B, m, each row summing
        to 1) and the keys they may attend to (B, n).

        The scoring token is original position ``position`` (the last slot when negative), or, with raters,
        every slot holding one (the scoring token where a row has none).
        """
        batch, n = self.index.shape
        device = self.index.device
        if position < 0:
            last, key_mask = torch.full((batch,), n - 1, device=device), self.valid
        else:
            last, key_mask = (self.index == position).long().argmax(dim=1), self.valid & (self.index <= position)
        if self.raters is None:
            return last[:, None], torch.ones(batch, 1, device=device), key_mask
        rating = self.raters.gather(1, self.index) & self.valid
        rating[torch.arange(batch, device=device), last] |= ~rating.any(dim=1)
        counts = rating.sum(dim=1, keepdim=True)
        width = int(counts.max())
        slots = torch.argsort((~rating).to(torch.int8), dim=1, stable=True)[:, :width]
        present = torch.arange(width, device=device) < counts
        slots = torch.where(present, slots, last[:, None])
        return slots, present.float() / counts, key_mask

    def mark(self, row: int, slots: torch.Tensor, codes: torch.Tensor) -> None:
        original = self.index[row, slots]
        old = self.status[row, original]
        self.status[row, original] = torch.where(codes == KEPT, old, codes)

    def advance(self, select: torch.Tensor, valid: torch.Tensor) -> None:
        self.index = self.index.gather(1, select)
        self.visual = self.visual.gather(1, select) & valid
        self.valid = valid

    def record(self, visual_mask: torch.Tensor) -> Stage2Record:
        out = Stage2Record()
        for b in range(visual_mask.shape[0]):
            out.visual_status.append(self.status[b, visual_mask[b]].cpu())
            out.visual_after.append(int(self.visual[b].sum()))
        return out


def _raters(embeds: torch.Tensor, state: _PrefillState, position: int) -> torch.Tensor:
    """SparseVLM's raters at the LLM input: per row, the text tokens after its first visual token (up to the
    scoring ``position``, the last one when negative) that ``merge.text_raters`` finds relevant."""
    length = embeds.shape[1]
    positions = torch.arange(length, device=embeds.device)
    last = position if position >= 0 else length - 1
    raters = torch.zeros_like(state.visual)
    for b in range(embeds.shape[0]):
        visual = torch.nonzero(state.visual[b]).squeeze(-1)
        if visual.numel() == 0:
            continue
        text = torch.nonzero(~state.visual[b] & state.valid[b] & (positions > visual[0]) & (positions <= last)).squeeze(-1)
        if text.numel():
            raters[b, text[text_raters(embeds[b, visual], embeds[b, text])]] = True
    return raters


@contextmanager
def installed(backbone: Backbone, stage2: Stage2 | None) -> Iterator[None]:
    """Route the text model's forward through ``stage2`` for the duration of the block."""
    if stage2 is None:
        yield
        return
    text_model = backbone.language_model
    text_model.forward = stage2
    try:
        yield
    finally:
        del text_model.forward
