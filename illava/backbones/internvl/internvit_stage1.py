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
from ...methods import encoder_scorer
from ..common.group_reduction import reduce_groups
from ..common.tiles import prenorm_layer_scores, run_tiles


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
    check_interrupt: Callable[[], None] | None = None,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Run the embeddings and the first ``n_layers`` layers, reducing before each stage-1 layer.

    A stage layer equal to ``n_layers`` reduces the output. ``final_norm``: the model takes the
    tower's last hidden state (after its final norm) rather than a raw layer output. Returns, per tile,
    the ids of the patches that came out (raster order) and their hidden states, CLS left out.
    """
    layers = tower.encoder.layer
    scorer = encoder_scorer(config.method, config.score_chunk)
    score = (lambda index, batch: prenorm_layer_scores(layers[index], batch, scorer, cls_row=0)) if config.scored else None
    ids, tiles = run_tiles(
        list(tower.embeddings(pixel_values).unbind(0)), n_layers, config.stage1_layers, reducer,
        lambda index, batch: layers[index](batch), score, fixed_rows=1, check_interrupt=check_interrupt,
    )
    if final_norm:
        tiles = [tower.layernorm(t) for t in tiles]
    return ids, tiles
