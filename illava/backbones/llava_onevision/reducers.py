"""Stage-1 reductions of LLaVA-OneVision tiles and video frames, one tile at a time (``common.tiles.run_tiles``
runs SigLIP around them)."""

from __future__ import annotations

import torch

from ...config import MergeConfig
from ...merge import DROPPED, KEPT, merged_sizes
from ...methods import select

# Methods that keep or drop tokens without merging them, the only ones a pooled video cell allows.
CELL_METHODS = ("illava", "random", "fastervlm")


class TokenReducer:
    """Image tiles: reduce the tokens that reach the LLM with ``config.method`` (iLLaVA: keep the best,
    fold the rest into recycled tokens).

    cells: per tile, (tokens,) bool, the token is inside the unpadded image. Tokens outside it (the
    anyres padding the model crops anyway) leave at the first stage-1 layer. shrink: per tile, the
    area factor by which the model would shrink the tile's grid, so the kept count follows the
    model's own token count.
    """

    def __init__(
        self, cells: list[torch.Tensor], shrink: list[float], config: MergeConfig, device: torch.device = torch.device("cpu")
    ) -> None:
        counts = [int(c.sum()) for c in cells]
        # Bookkeeping lives beside the hidden states: a host copy would stop the device at every tile.
        self.cells = [c.to(device) for c in cells]
        self.config = config
        self.status = [torch.where(c, KEPT, DROPPED).to(torch.int8) for c in self.cells]
        # ToMe's token sizes: how many original tokens each current token stands for.
        self.sizes = [torch.ones(int(c.numel()), device=device) for c in cells]
        budgets = [max(1, round(n / s)) if n else 0 for n, s in zip(counts, shrink)]
        self.targets = [[min(n, t) for n, t in zip(counts, step)] for step in config.stage1_schedule.steps(budgets)]

    def __call__(self, step, tile, scores, hidden, ids):
        config = self.config
        candidates = torch.nonzero(self.cells[tile][ids]).squeeze(-1)
        n_out = min(candidates.numel(), self.targets[step - 1][tile])
        local = hidden[candidates]
        sizes = self.sizes[tile][candidates]
        reduction = select(
            config.method, scores[candidates], local, n_out, config.stage1_recycled, config.recycle_weighting, sizes
        )
        status = self.status[tile]
        original = ids[candidates]
        status[original] = torch.where(reduction.status == KEPT, status[original], reduction.status)
        self.sizes[tile] = merged_sizes(sizes, reduction)
        return candidates[reduction.kept], reduction.apply(local)


class CellReducer:
    """Video frames: keep the best pooled cells, and with each the tokens its pooling reads.

    The model pools every frame bilinearly (about 2x2 tokens per cell, overlapping), so a cell is
    kept whole: all tokens its pooling reads stay in the encoder and the cell's pooled feature is
    exactly the model's. weights: (cells, tokens) pooling weights. A cell's score is the
    pooling-weighted attention its tokens receive. Cells are kept or dropped, never recycled: a
    recycled token would need the final features of tokens that no longer exist.
    """

    def __init__(
        self, weights: torch.Tensor, frames: int, config: MergeConfig, device: torch.device = torch.device("cpu")
    ) -> None:
        if config.method not in CELL_METHODS:
            raise ValueError(
                f"method {config.method!r} merges tokens, but LLaVA-OneVision keeps or drops whole pooled cells "
                f"of a video frame in stage 1: use one of {CELL_METHODS} there, or clear stage1_layers"
            )
        self.method = config.method
        # Bookkeeping lives beside the hidden states: a host copy would stop the device at every frame.
        self.weights = weights.float().to(device)
        self.footprint = self.weights != 0
        self.status = [torch.full((weights.shape[0],), KEPT, dtype=torch.int8, device=device) for _ in range(frames)]
        cells = [weights.shape[0]] * frames
        self.targets = config.stage1_schedule.steps(cells)

    def __call__(self, step, tile, scores, hidden, ids):
        footprint = self.footprint
        present = torch.zeros(footprint.shape[1], dtype=torch.bool, device=ids.device)
        present[ids] = True
        status = self.status[tile]
        # A cell dropped earlier stays dropped even where its kept neighbours' tokens cover its own.
        whole = ((footprint & ~present).sum(-1) == 0) & (status == KEPT)
        alive = torch.nonzero(whole).squeeze(-1)
        token_scores = torch.zeros(footprint.shape[1], dtype=torch.float32, device=ids.device)
        token_scores[ids] = scores.float()
        cell_scores = (self.weights @ token_scores)[alive]
        n_out = min(alive.numel(), self.targets[step - 1][tile])
        reduction = select(self.method, cell_scores, cell_scores[:, None], n_out, 0, "score")
        status[alive] = torch.where(reduction.status == KEPT, status[alive], reduction.status)
        needed = footprint[alive[reduction.kept]].any(0)
        keep = torch.nonzero(needed[ids]).squeeze(-1)
        return keep, hidden[keep]

    def kept_cells(self, frame: int) -> torch.Tensor:
        """Cells of ``frame`` still kept after every stage-1 layer."""
        return torch.nonzero(self.status[frame] == KEPT).squeeze(-1)
