"""Where LLaVA-OneVision's vision tokens go in the LLM prompt, for full and for stage-1-reduced tiles.

The model's own ``pack_image_features`` needs every token of every tile. After stage 1 each tile
holds only some, so the kept tokens are packed here in the model's own order instead of being
squeezed into a square pseudo-grid: a single image is its base tile (raster order, no newline)
followed by the high-resolution grid assembled from the other tiles, cropped to the image (the
model's ``unpad_image``), in raster order with an image-newline token after every row that still
has a token. An image of a multi-image prompt is one tile and one trailing newline. A video is each
frame's pooled cells in raster order and one trailing newline.

Tokens are numbered per item as ``tile * side**2 + row * side + column``; that number is also the
token's cell in the item's token map (one view per tile).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TileLayout:
    """How the tokens of one item's tiles (or frames) are packed for the LLM.

    cells: (tiles * side**2,) bool, the token reaches the LLM (inside the unpadded image).
    order: (tiles * side**2,) sort key of each token in the packed sequence.
    row: (tiles * side**2,) newline row of each token, -1 where rows get no newline.
    trailing_newline: one newline after all tokens.
    shrink: area factor by which the model shrinks the high-resolution grid (``anyres_max_N``), 1.0 if not.
    tokens_full: the model's own token count for the item (newlines included).
    """

    tiles: int
    side: int
    cells: torch.Tensor
    order: torch.Tensor
    row: torch.Tensor
    trailing_newline: bool
    shrink: float
    tokens_full: int

    @property
    def tile_cells(self) -> torch.Tensor:
        """(tiles, side**2) bool view of ``cells``."""
        return self.cells.view(self.tiles, -1)


def image_layout(config, image_size: tuple[int, int], single: bool) -> TileLayout:
    """The layout of an image of ``image_size`` (h, w): anyres tiles when it is alone in its prompt, else one tile."""
    from transformers.models.llava_onevision.modeling_llava_onevision import (
        get_anyres_image_grid_shape,
        unpad_image,
    )

    side = config.vision_config.image_size // config.vision_config.patch_size
    base = side * side
    if not single:
        flat = torch.arange(base)
        return TileLayout(
            1, side, torch.ones(base, dtype=torch.bool), flat, torch.full((base,), -1), True, 1.0, base + 1
        )
    n_h, n_w = get_anyres_image_grid_shape(
        list(image_size), config.image_grid_pinpoints, config.vision_config.image_size
    )
    height, width = n_h * side, n_w * side
    cell_ids = torch.arange(height * width).view(1, height, width)
    visible = unpad_image(cell_ids, list(image_size))
    rows, columns = visible.shape[1:]
    max_tiles = int(config.vision_aspect_ratio.removeprefix("anyres_max_"))
    ratio = math.sqrt(rows * columns / (max_tiles * base))
    if ratio > 1.1:
        grid_tokens = int(rows // ratio) * int(columns // ratio) + int(rows // ratio)
    else:
        grid_tokens = rows * columns + rows
    # Global (R, C) of every token of the grid tiles, tile-major as the encoder batch holds them.
    tile = torch.arange(n_h * n_w).repeat_interleave(base)
    local = torch.arange(base).repeat(n_h * n_w)
    big_row = (tile // n_w) * side + local // side
    big_col = (tile % n_w) * side + local % side
    big_id = big_row * width + big_col
    inside = torch.zeros(height * width, dtype=torch.bool)
    inside[visible.reshape(-1)] = True
    return TileLayout(
        tiles=1 + n_h * n_w,
        side=side,
        cells=torch.cat([torch.ones(base, dtype=torch.bool), inside[big_id]]),
        order=torch.cat([torch.arange(base), base + big_id]),
        row=torch.cat([torch.full((base,), -1), big_row]),
        trailing_newline=False,
        shrink=ratio * ratio if ratio > 1.1 else 1.0,
        tokens_full=base + grid_tokens,
    )


def video_layout(frames: int, pooled_side: int) -> TileLayout:
    """The layout of a video's pooled cells: frame after frame in raster order, one trailing newline."""
    n = frames * pooled_side * pooled_side
    return TileLayout(
        frames, pooled_side, torch.ones(n, dtype=torch.bool), torch.arange(n), torch.full((n,), -1), True, 1.0, n + 1
    )


def packing(layout: TileLayout, kept: torch.Tensor) -> torch.Tensor:
    """For each packed LLM token, the position in ``kept`` of the token it holds, or -1 for a newline.

    kept: ids of the tokens that came out of the encoder (any order); those outside ``cells`` are left out.
    """
    source = torch.nonzero(layout.cells[kept]).squeeze(-1)
    source = source[torch.argsort(layout.order[kept[source]])]
    rows = layout.row[kept[source]]
    row_end = torch.zeros_like(rows, dtype=torch.bool)
    row_end[:-1] = rows[1:] != rows[:-1]
    row_end[-1:] = True
    row_end &= rows >= 0
    # Each token moves right by the number of newlines (ends of earlier rows) before it.
    slot = torch.arange(source.numel()) + torch.cumsum(row_end.long(), 0) - row_end.long()
    out = torch.full((source.numel() + int(row_end.sum()) + int(layout.trailing_newline),), -1, dtype=torch.long)
    out[slot] = source
    return out


def pack(
    layout: TileLayout, kept: torch.Tensor, features: torch.Tensor, newline: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(LLM tokens, token id of each or -1 for a newline) from the features of the ``kept`` tokens."""
    source = packing(layout, kept.cpu()).to(features.device)
    is_token = source >= 0
    packed = newline.to(features.dtype).expand(source.numel(), -1).clone()
    packed[is_token] = features[source[is_token]]
    groups = torch.full_like(source, -1)
    groups[is_token] = kept.to(features.device)[source[is_token]]
    return packed, groups


def stock_groups(layout: TileLayout, n_features: int) -> torch.Tensor:
    """Token id (-1 for newlines) of each of the model's own ``n_features`` packed tokens of an unreduced item.

    Where the model shrank the grid (``anyres_max_N``), a shrunk token is attributed to the grid token
    nearest its centre.
    """
    groups = packing(layout, torch.arange(layout.cells.numel()))
    if groups.numel() == n_features:
        return groups
    base = layout.side * layout.side
    grid = torch.nonzero(layout.cells[base:]).squeeze(-1) + base
    height = int(torch.unique(layout.row[grid]).numel())
    raster = grid[torch.argsort(layout.order[grid])].view(height, -1)
    width = raster.shape[1]
    ratio = math.sqrt(layout.shrink)
    new_h, new_w = int(height // ratio), int(width // ratio)
    pick_r = ((torch.arange(new_h) + 0.5) * height / new_h).long().clamp(max=height - 1)
    pick_c = ((torch.arange(new_w) + 0.5) * width / new_w).long().clamp(max=width - 1)
    shrunk = raster[pick_r][:, pick_c]
    newline = torch.full((new_h, 1), -1, dtype=torch.long)
    return torch.cat([groups[:base], torch.cat([shrunk, newline], dim=1).reshape(-1)])


def pooling_weights(side: int, model_pool) -> torch.Tensor:
    """(pooled cells, side**2) weights of the model's bilinear video pooling, read off its own ``apply_pooling``."""
    n = side * side
    return model_pool(torch.eye(n, dtype=torch.float64).view(n, n, 1)).squeeze(-1).T


def pool_frames(kept: torch.Tensor, features: torch.Tensor, frames: int, side: int, model_pool) -> torch.Tensor:
    """The model's pooling over frames whose missing tokens are zero; exact for cells whose inputs were all kept."""
    canvas = features.new_zeros(frames * side * side, features.shape[-1])
    canvas[kept] = features
    return model_pool(canvas.view(frames, side * side, -1)).reshape(-1, features.shape[-1])
