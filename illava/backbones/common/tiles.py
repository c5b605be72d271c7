"""Stage 1 in an encoder whose views (tiles, frames, slices) never attend to each other and have no rotary
positions (SigLIP, InternViT): removing tokens mid-encoder is selecting rows, and tiles of equal length run, and
are scored, as one batch."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch

from ...methods import EncoderScorer
from .ragged import run_ragged


class TileReducer(Protocol):
    def __call__(
        self, step: int, tile: int, scores: torch.Tensor, hidden: torch.Tensor, ids: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Reduce one tile at stage-1 step ``step`` (1-based).

        scores, hidden, ids: (n,), (n, d), (n,) for the tile's current tokens (ids are token numbers in the
        tile). Returns the positions (into the current rows) of the tokens that go on and their new states.
        """


def run_tiles(
    tiles: list[torch.Tensor],
    n_layers: int,
    stage_layers: tuple[int, ...],
    reducer: TileReducer,
    run_layer: Callable[[int, torch.Tensor], torch.Tensor],
    score: Callable[[int, torch.Tensor], torch.Tensor] | None,
    fixed_rows: int = 0,
    check_interrupt: Callable[[], None] | None = None,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Run layers 0 .. ``n_layers - 1`` over ``tiles`` (each (rows, d), embedded), reducing before each of
    ``stage_layers``; one equal to ``n_layers`` reduces the output.

    run_layer(index, batch) runs layer ``index`` on equal-length tiles; score(index, batch) gives each row's
    score from layer ``index``'s attention (None: the method ignores attention, zeros). The first
    ``fixed_rows`` rows of a tile (InternViT's [CLS] token) attend and are attended to but never leave.
    Returns, per tile, the ids of the tokens that came out and their hidden states, fixed rows left out.
    """
    ids = [torch.arange(t.shape[0] - fixed_rows, device=t.device) for t in tiles]
    inputs = tiles
    for index in range(n_layers + 1):
        if check_interrupt is not None:
            check_interrupt()
        if index in stage_layers:
            step = stage_layers.index(index) + 1
            if score is not None:
                # An empty tile comes back from run_ragged as it went in: it scores nothing.
                scores = run_ragged(lambda batch, at=index - 1: score(at, batch), inputs)
                scores = [row.reshape(-1)[fixed_rows : rows.shape[0]] for row, rows in zip(scores, tiles)]
            else:
                scores = [torch.zeros(t.shape[0] - fixed_rows, device=t.device) for t in tiles]
            for t, rows in enumerate(tiles):
                keep, tokens = reducer(step, t, scores[t], rows[fixed_rows:], ids[t])
                tiles[t] = torch.cat([rows[:fixed_rows], tokens])
                ids[t] = ids[t][keep]
        if index == n_layers:
            break
        inputs = tiles
        tiles = run_ragged(lambda batch, at=index: run_layer(at, batch), tiles)
    return ids, [t[fixed_rows:] for t in tiles]


def prenorm_layer_scores(layer: torch.nn.Module, hidden: torch.Tensor, scorer: EncoderScorer, cls_row: int | None = None):
    """``scorer``'s score of each row of equal-length tiles from the attention of a pre-norm encoder layer (SigLIP's
    or InternViT's, with per-projection norms where it has them), whose input was ``hidden`` (tiles, n, d):
    (tiles, n). The queries and keys are recomputed for the rows, so the layer's own kernel stays as it is."""
    attn = layer.self_attn if hasattr(layer, "self_attn") else layer.attention
    norm = layer.layer_norm1 if hasattr(layer, "layer_norm1") else layer.layernorm_before
    x = norm(hidden)
    q, k = attn.q_proj(x), attn.k_proj(x)
    if hasattr(attn, "q_norm"):
        q, k = attn.q_norm(q), attn.k_norm(k)
    q = q.unflatten(-1, (attn.num_heads, attn.head_dim)).transpose(-3, -2)
    k = k.unflatten(-1, (attn.num_heads, attn.head_dim)).transpose(-3, -2)
    return scorer(q, k, attn.scale if hasattr(attn, "scale") else attn.scaling, cls_row=cls_row)
