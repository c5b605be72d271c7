"""Stage 1 inside InternViT: every tile (or video frame) is reduced on its own, in whole 2x2 groups.

InternViT puts a CLS token before the patches, adds its learned position table once (before the
first layer), has no rotary positions and runs without an attention mask, so removing patches
mid-encoder is selecting rows. The CLS token always stays: it attends and is attended to in every
layer, but it is never scored, dropped or recycled (the model discards it after the encoder).
Patches leave in whole pixel-shuffle groups (the 2x2 patches that become one LLM token), so the
pixel shuffle after the encoder still fuses true neighbours. Rows stay in raster order, as the
model holds them; tiles of equal length run (and are scored) as one batch, as in the model.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ...config import MergeConfig
from ...merge import KEPT
from ...methods import EncoderScorer, encoder_scorer
from ..common.group_reduction import reduce_groups
from ..common.ragged import run_ragged


class GroupReducer:
    """Reduce each tile's pixel-shuffle groups with ``config.method`` (iLLaVA: keep the best groups,
    fold the rest into recycled groups).

    side: patches a tile side; groups are 2x2 patches, so a tile has (side / 2)**2 of them. A group's
    score is the attention its four patches receive; its features, for similarity and recycling, are
    its four patches' hidden states in pixel-shuffle order.
    """

    def __init__(self, side: int, tiles: int, config: MergeConfig, device: torch.device = torch.device("cpu")) -> None:
        self.side = side
        self.config = config
        groups = (side // 2) ** 2
        # Bookkeeping lives beside the hidden states: a host copy would stop the device at every tile.
        self.status = [torch.full((groups,), KEPT, dtype=torch.int8, device=device) for _ in range(tiles)]
        # ToMe's token sizes: how many original groups each current group stands for.
        self.sizes = [torch.ones(groups, device=device) for _ in range(tiles)]
        self.targets = config.stage1_schedule.steps([groups] * tiles)

    def group_of(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(group, place in the group) of each patch id; places follow pixel shuffle's channel order."""
        row, column = ids // self.side, ids % self.side
        return (row // 2) * (self.side // 2) + column // 2, (row % 2) * 2 + column % 2

    def __call__(
        self, step: int, tile: int, scores: torch.Tensor, hidden: torch.Tensor, ids: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Reduce one tile's patches (CLS excluded): positions of the rows that go on, and their new states."""
        group, place = self.group_of(ids)
        target = self.targets[step - 1][tile]
        return reduce_groups(hidden, scores, group, place, 4, target, self.sizes[tile], self.status[tile], self.config)


def run_encoder(
    tower: torch.nn.Module,
    pixel_values: torch.Tensor,
    n_layers: int,
    final_norm: bool,
    reducer: GroupReducer,
    config: MergeConfig,
    scored: bool,
    check_interrupt: Callable[[], None] | None = None,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Run the embeddings and the first ``n_layers`` layers, reducing before each stage-1 layer.

    A stage layer equal to ``n_layers`` reduces the output. ``final_norm``: the model takes the
    tower's last hidden state (after its final norm) rather than a raw layer output. Without
    ``scored`` (methods that ignore attention) the reducer gets zero scores. Returns, per tile, the
    ids of the patches that came out (raster order) and their hidden states, CLS left out.
    """
    layers = tower.encoder.layer
    stage_layers = config.stage1_layers
    scorer = encoder_scorer(config.method, config.score_chunk)
    tiles = list(tower.embeddings(pixel_values).unbind(0))
    ids = [torch.arange(t.shape[0] - 1, device=t.device) for t in tiles]
    inputs = tiles
    for index in range(n_layers + 1):
        if check_interrupt is not None:
            check_interrupt()
        if index in stage_layers:
            step = stage_layers.index(index) + 1
            if scored:
                received = run_ragged(lambda batch, layer=layers[index - 1]: _scores(layer, batch, scorer), inputs)
                scores = [row[1:] for row in received]
            else:
                scores = [torch.zeros(rows.shape[0] - 1, device=rows.device) for rows in tiles]
            for t, rows in enumerate(tiles):
                keep, patches = reducer(step, t, scores[t], rows[1:], ids[t])
                tiles[t] = torch.cat([rows[:1], patches])
                ids[t] = ids[t][keep]
        if index == n_layers:
            break
        inputs = tiles
        tiles = run_ragged(layers[index], tiles)
    if final_norm:
        tiles = [tower.layernorm(t) for t in tiles]
    return ids, [t[1:] for t in tiles]


def _scores(layer: torch.nn.Module, hidden: torch.Tensor, scorer: EncoderScorer) -> torch.Tensor:
    """``scorer``'s score of each row of equal-length tiles (CLS included, in row 0) from the attention of
    ``layer``, whose input was ``hidden`` (tiles, n, d): (tiles, n)."""
    attn = layer.attention
    x = layer.layernorm_before(hidden)
    q = attn.q_norm(attn.q_proj(x)).unflatten(-1, (attn.num_heads, attn.head_dim)).transpose(-3, -2)
    k = attn.k_norm(attn.k_proj(x)).unflatten(-1, (attn.num_heads, attn.head_dim)).transpose(-3, -2)
    return scorer(q, k, attn.scale, cls_row=0)
