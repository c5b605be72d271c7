"""Stage 1 over whole groups of rows: the step InternViT's pixel-shuffle groups and MiniCPM-V's
LLM-token blocks share, since one LLM token must come from a whole group."""

from __future__ import annotations

import torch

from ...config import MergeConfig
from ...merge import KEPT, merged_sizes
from ...methods import select


def reduce_groups(
    hidden: torch.Tensor,
    scores: torch.Tensor,
    group: torch.Tensor,
    place: torch.Tensor,
    units: int,
    target: int,
    sizes: torch.Tensor,
    status: torch.Tensor,
    config: MergeConfig,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reduce the rows of ``hidden`` to at most ``target`` whole groups of ``units`` rows with ``config.method``.

    group, place: each row's group and its place in the group (the order of a group's features). A group
    scores the attention its rows receive. sizes, status: ToMe sizes and stage-1 codes per group, on ``hidden``'s
    device (so the step needs no host copy), updated in place. Returns the positions (into ``hidden``'s rows) of the rows that go on, and their new states.
    """
    order = torch.argsort(group * units + place).view(-1, units)
    group_ids = group[order[:, 0]]
    grouped = hidden[order]
    n_out = min(order.shape[0], target)
    group_sizes = sizes[group_ids]
    reduction = select(
        config.method,
        scores[order].sum(-1),
        grouped.flatten(1),
        n_out,
        config.stage1_recycled,
        config.recycle_weighting,
        group_sizes,
    )
    status[group_ids] = torch.where(reduction.status == KEPT, status[group_ids], reduction.status)
    sizes[group_ids[reduction.kept]] = merged_sizes(group_sizes, reduction)
    rows = order[reduction.kept].reshape(-1)
    values = reduction.apply(grouped).flatten(0, 1)
    raster = torch.argsort(rows)
    return rows[raster], values[raster]
