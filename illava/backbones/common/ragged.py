"""Running one encoder layer (or scoring) over tiles of different lengths, as stage 1 leaves them."""

from __future__ import annotations

from collections.abc import Callable

import torch


def run_ragged(layer: Callable[..., torch.Tensor], tiles: list[torch.Tensor], *more: list[torch.Tensor]) -> list[torch.Tensor]:
    """``layer`` over ragged tiles, batching tiles of equal length (empty tiles stay as they are).

    ``layer`` takes (tiles, n, ...) and returns one row per tile; ``more`` are lists aligned with
    ``tiles`` (such as each tile's keys beside its queries), stacked the same way and passed after it.
    """
    out = list(tiles)
    lengths = sorted({t.shape[0] for t in tiles} - {0})
    for length in lengths:
        members = [i for i, t in enumerate(tiles) if t.shape[0] == length]
        result = layer(*(torch.stack([group[i] for i in members]) for group in (tiles, *more)))
        for i, row in zip(members, result.unbind(0)):
            out[i] = row
    return out
