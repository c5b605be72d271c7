"""Which original visual tokens survive each stage, per image or video frame group."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .merge import DROPPED, KEPT, MERGED, RECYCLED

STATUS_NAMES = {DROPPED: "dropped", KEPT: "kept", RECYCLED: "recycled", MERGED: "merged"}


@dataclass(frozen=True)
class ItemTrace:
    """Status of every LLM-token cell (a 2x2 patch group) of one image or video.

    grid: (t, h, w) of the token grid (temporal groups, rows, columns).
    stage1 / stage2: int8 arrays of that shape with merge.DROPPED / KEPT / RECYCLED / MERGED codes;
    stage2 is the status after both stages, None until a generation has run stage 2.
    """

    kind: str
    grid: tuple[int, int, int]
    stage1: np.ndarray
    stage2: np.ndarray | None = None

    def counts(self, stage: int) -> dict[str, int]:
        codes = self.stage1 if stage == 1 else self.stage2
        if codes is None:
            return {}
        return {name: int((codes == code).sum()) for code, name in STATUS_NAMES.items()}

    def with_stage2(self, kept_groups: torch.Tensor, stage2_codes: torch.Tensor) -> "ItemTrace":
        """Fold stage-2 codes of the item's LLM tokens (in raster order) into a full-grid map.

        A token numbered -1 in ``kept_groups`` (an image-newline token) has no cell and is skipped.
        """
        flat = self.stage1.reshape(-1).copy()
        kept = kept_groups.cpu().numpy()
        codes = stage2_codes.cpu().numpy().astype(np.int8)
        codes, kept = codes[kept >= 0], kept[kept >= 0]
        flat[kept] = np.where(codes == KEPT, flat[kept], codes)
        return ItemTrace(self.kind, self.grid, self.stage1, flat.reshape(self.stage1.shape))


def stage1_trace(kind: str, grid: tuple[int, int, int], status: torch.Tensor) -> ItemTrace:
    return ItemTrace(kind, grid, status.cpu().numpy().astype(np.int8).reshape(grid))
