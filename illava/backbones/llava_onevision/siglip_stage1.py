"""Stage 1 inside a SigLIP vision tower: every tile (or video frame) is reduced on its own.

SigLIP has no CLS token, no rotary positions (its learned position table is added once, before
the first layer) and runs without an attention mask, so removing tokens mid-encoder is selecting
rows. Tiles start as one batch, as in the model; once they hold different numbers of tokens, tiles
of equal length run (and are scored) together. A token's score comes from the attention of the layer before
the reduction (``scorer``: the method's rule), recomputed from that layer's queries and keys, so sdpa stays on.
"""

from __future__ import annotations

from typing import Callable, Protocol

import torch

from ...methods import EncoderScorer
from ..common.ragged import run_ragged


class TileReducer(Protocol):
    def __call__(
        self, step: int, tile: int, scores: torch.Tensor, hidden: torch.Tensor, ids: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Reduce one tile at stage-1 step ``step`` (1-based).

        scores, hidden, ids: (n,), (n, d), (n,) for the tile's current tokens (ids are token numbers
        in the tile). Returns the positions (into the current rows) of the tokens that go on and
        their new hidden states.
        """


def run_encoder(
    tower: torch.nn.Module,
    pixel_values: torch.Tensor,
    n_layers: int,
    stage_layers: tuple[int, ...],
    reducer: TileReducer,
    scorer: EncoderScorer,
    scored: bool = True,
    check_interrupt: Callable[[], None] | None = None,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Run the embeddings and the first ``n_layers`` encoder layers, reducing before each of ``stage_layers``.

    A stage layer equal to ``n_layers`` reduces the output. pixel_values: (tiles, channels, size,
    size). Without ``scored`` (methods that ignore attention) the reducer gets zero scores. Returns,
    per tile, the ids of the tokens that came out and their hidden states after layer
    ``n_layers - 1`` (no post-layernorm: the model takes ``hidden_states[...]``, raw layer outputs).
    """
    layers = tower.encoder.layers
    hidden = tower.embeddings(pixel_values)
    tiles = list(hidden.unbind(0))
    ids = [torch.arange(hidden.shape[1], device=hidden.device) for _ in tiles]
    inputs = tiles
    for index in range(n_layers + 1):
        if check_interrupt is not None:
            check_interrupt()
        if index in stage_layers:
            step = stage_layers.index(index) + 1
            if scored:
                scores = run_ragged(lambda batch, layer=layers[index - 1]: _scores(layer, batch, scorer), inputs)
            else:
                scores = [torch.zeros(t.shape[0], device=t.device) for t in tiles]
            for t in range(len(tiles)):
                # An empty tile comes back from run_ragged as it went in: it scores nothing.
                keep, tiles[t] = reducer(step, t, scores[t].reshape(-1)[: tiles[t].shape[0]], tiles[t], ids[t])
                ids[t] = ids[t][keep]
        if index == n_layers:
            break
        inputs = tiles
        # SigLIP layers take the attention mask positionally; tiles need none.
        tiles = run_ragged(lambda batch, layer=layers[index]: layer(batch, None), tiles)
    return ids, tiles


def _scores(layer: torch.nn.Module, hidden: torch.Tensor, scorer: EncoderScorer) -> torch.Tensor:
    """``scorer``'s score of each token of equal-length tiles from the attention of ``layer``, whose input was
    ``hidden`` (tiles, n, d): (tiles, n)."""
    attn = layer.self_attn
    x = layer.layer_norm1(hidden)
    q = attn.q_proj(x).unflatten(-1, (attn.num_heads, attn.head_dim)).transpose(-3, -2)
    k = attn.k_proj(x).unflatten(-1, (attn.num_heads, attn.head_dim)).transpose(-3, -2)
    return scorer(q, k, attn.scale)
