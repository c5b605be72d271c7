"""MiniCPM-V 4.6: stage 1 inside its SigLIP encoder in whole LLM-token blocks, stage 2 in its Qwen3.5 LLM.

An image becomes the downsized source image plus, when it is large, a grid of high-resolution
slices; a video is its sampled frames, each sliced the same way. Every slice runs through the
encoder as its own segment (``minicpmv_stage1``). Each LLM token is one block of 4x4 patches (2x2
in "4x" mode), fused by the window merger and the final merger, so stage 1 keeps whole blocks and
the prompt gets one placeholder per kept token, inside the model's own ``<image>...</image>``
(source) and ``<slice>...</slice>`` (slices, a newline between slice rows) markers, per frame for a
video, after ``<image_id>N</image_id>``. The text model takes plain 1D positions, so the shorter
prompt is just a shorter sequence; stage 2 gathers the rotary angles of the tokens it keeps. Its
linear-attention (Gated DeltaNet) layers have no attention map, so a scored stage-2 layer must follow
a full-attention layer.

The token map of an item has one view per slice, all on the largest slice's token grid; cells
outside a smaller slice never held a token and are marked dropped.
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ...config import MergeConfig, Resolution
from ...merge import DROPPED, KEPT
from ..base import EncodedVision, ItemLayout, ItemShape, register
from .stage1 import SliceEncoder
from ..common.decoder_scoring import decoder_query_scores
from ..common.resize import fit_area
from ..common.tower import VisionTowerBackbone

PREVIEW_SIDE = 192


@dataclass(frozen=True)
class SliceLayout(ItemLayout):
    """An item's layout plus what its placeholders need besides the kept tokens of each view (per frame,
    the source first, then the slices in raster order).

    columns: slices per row of the slice grid (0 without slices); frames: 1 for an image.
    """

    columns: int = 0
    frames: int = 1


class MiniCPMVBackbone(VisionTowerBackbone):
    """Adapter for ``MiniCPMV4_6ForConditionalGeneration``.

    The grid it hands the encoder has one row per slice: (item, frame, rows, columns in patches, slice
    columns). A video is one item whose frames are sliced like images.
    """

    @property
    def encoder_layers(self) -> torch.nn.ModuleList:
        return self.tower.encoder.layers

    @property
    def block(self) -> int:
        """Patches along the side of the block one LLM token stands for."""
        return 4 if self.config.downsample_mode != "4x" else 2

    def typical_shapes(self, kind: str, processor=None) -> tuple[ItemShape, ...]:
        """A 1024x768 image as its source view and its slices (as many as its area holds at the processor's
        scale resolution, up to its most slices), or 16 frames of one view each; every view a square of the
        scale resolution."""
        image_processor = getattr(processor, "image_processor", None)
        scale = getattr(image_processor, "scale_resolution", 448)
        most = getattr(image_processor, "max_slice_nums", 9)
        slices = min(math.ceil(1024 * 768 / scale**2), most)
        side = scale // self.config.vision_config.patch_size
        cells = side // self.block
        views = 16 if kind == "video" else 1 + slices * (slices > 1)
        return (ItemShape((views, cells, cells), views * cells * cells, views * side * side),)

    def image_inputs(
        self, processor, images: list, resolution: Resolution = Resolution()
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # Its slices and source size follow the input's size, so the pixel range resizes the input.
        images = [fit_area(image, resolution) for image in images]
        processed = processor.image_processor(images=images, return_tensors="pt")
        counts = torch.tensor(processed["num_patches_per_image"])
        items = torch.repeat_interleave(torch.arange(len(counts)), counts)
        columns = torch.repeat_interleave(torch.tensor([g[1] for g in processed["grids"]]), counts)
        return processed["pixel_values"], _grid(items, torch.zeros_like(items), processed["target_sizes"], columns)

    def smallest_image_pixels(self, processor) -> int:
        """One merged block: 2x2 patches, or 4x4 when the model downsamples 16x."""
        image_processor = processor.image_processor
        merge = 2 if image_processor.downsample_mode == "4x" else 4
        return (image_processor.patch_size * merge) ** 2

    def video_inputs(self, processor, frames) -> tuple[torch.Tensor, torch.Tensor]:
        """The clip's already sampled frames, each sliced like an image (the source frame, then its slices)."""
        processed = processor.video_processor(videos=[frames.pixels], do_sample_frames=False, return_tensors="pt")
        counts = torch.as_tensor(processed["num_patches_per_frame"]).long()
        frame = torch.repeat_interleave(torch.arange(counts.numel()), counts)
        columns = torch.repeat_interleave(torch.as_tensor(processed["grids_videos"])[:, 1].long(), counts)
        sizes = processed["target_sizes_videos"]
        return processed["pixel_values_videos"], _grid(torch.zeros_like(frame), frame, sizes, columns)

    def item_placeholders(self, processor, item, index: int) -> str:
        """``<image_id>N</image_id>``, then per frame ``<image>`` source tokens ``</image>`` and one
        ``<slice>...</slice>`` per slice, a newline between slice rows; one placeholder per kept token."""
        layout = item.layout
        rows, columns = layout.grid[1:]
        counts = torch.bincount(item.kept_groups.cpu() // (rows * columns), minlength=layout.grid[0]).tolist()
        token = processor.image_token if item.kind == "image" else processor.video_token
        per_frame = len(counts) // layout.frames
        text = "".join(
            self._frame_text(processor, token, counts[f * per_frame : (f + 1) * per_frame], layout.columns)
            for f in range(layout.frames)
        )
        # The processor numbers images and videos when its image processor says so (MiniCPM-V's default).
        if processor.default_use_image_id:
            text = f"{processor.image_id_start_token}{index}{processor.image_id_end_token}{text}"
        return text

    @staticmethod
    def _frame_text(processor, token: str, counts: list[int], columns: int) -> str:
        text = f"{processor.image_start_token}{token * counts[0]}{processor.image_end_token}"
        slices = [f"{processor.slice_start_token}{token * n}{processor.slice_end_token}" for n in counts[1:]]
        rows = [slices[i : i + columns] for i in range(0, len(slices), max(columns, 1))]
        return text + "\n".join("".join(row) for row in rows)

    def generate_inputs(self, inputs: dict[str, Any]) -> dict[str, Any]:
        # The model finds its placeholders by token id and takes neither token types nor prebuilt positions.
        return {k: v for k, v in inputs.items() if k not in ("mm_token_type_ids", "position_ids")}

    def encoder_output(self, features: tuple[torch.Tensor, ...], layer_features: tuple[tuple[torch.Tensor, ...], ...]):
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        # The model concatenates its pooler_output list and scatters it into its placeholders in order.
        return BaseModelOutputWithPooling(pooler_output=list(features))

    def stock_encode(self, pixel_values: torch.Tensor, grid: torch.Tensor, kind: str) -> EncodedVision:
        """The model's own encoder, window merger and merger, untouched (merging off in stage 1)."""
        # A video's frames are packed like images; get_video_features runs exactly this.
        output = self.model.model.get_image_features(pixel_values, grid[:, 2:4].int(), return_dict=True)
        features = list(output.pooler_output)
        blocks = [torch.arange(f.shape[0], device=f.device) for f in features]
        return self._encoded(grid, features, blocks, None)

    def encode_vision(
        self, pixel_values: torch.Tensor, grid: torch.Tensor, config: MergeConfig, check_interrupt=None
    ) -> EncodedVision:
        self._check_stage1()
        encoder = SliceEncoder(self.model, config, config.scored)
        pixels = pixel_values.to(self.tower.dtype)
        blocks, features, reducer = encoder(pixels, grid[:, 2:4].int(), check_interrupt)
        return self._encoded(grid, features, blocks, reducer.status)

    def _check_stage1(self) -> None:
        config = self.config
        vision = config.vision_config
        if tuple(config.merge_kernel_size) != (2, 2) or config.merger_times != 1 or tuple(vision.window_kernel_size) != (2, 2):
            raise ValueError(
                "stage 1 keeps whole merger blocks and supports merge_kernel_size (2, 2), merger_times 1 and "
                "window_kernel_size (2, 2): leave stage1_layers empty for this model"
            )

    def query_scores(self, layer, hidden: torch.Tensor, rotary, key_mask: torch.Tensor, slots: torch.Tensor, keys=None):
        """Head-averaged attention paid by the tokens at ``slots`` (batch, m) to every token, in ``layer``.

        Qwen3.5's query projection carries an output gate beside each head's query; only the query scores.
        """
        attn = getattr(layer, "self_attn", None)
        if attn is None:
            raise ValueError(
                "stage 2 ranks visual tokens with the attention of the layer before it, but that layer is a "
                f"linear-attention one here: use stage2_layers from {list(self.stage2_choices)}"
            )
        return decoder_query_scores(layer, hidden, rotary, key_mask, slots, keys, _gated_queries)

    def _encoded(self, grid: torch.Tensor, features, blocks, status) -> EncodedVision:
        """Per item: its slices' tokens in order, their cells on the item's (views, rows, columns) token map."""
        sizes = (grid[:, 2:4] // self.block).tolist()
        grid_rows = grid.tolist()
        out_features, out_blocks, out_status, layouts = [], [], [], []
        for item in torch.unique(grid[:, 0]).tolist():
            members = torch.nonzero(grid[:, 0] == item).squeeze(-1).tolist()
            views = tuple((sizes[i][0], sizes[i][1]) for i in members)
            height, width = max(v[0] for v in views), max(v[1] for v in views)
            cells, codes = [], []
            for view, i in enumerate(members):
                h, w = views[view]
                rows, cols = blocks[i] // w, blocks[i] % w
                cells.append(view * height * width + rows * width + cols)
                canvas = torch.full((height, width), DROPPED, dtype=torch.int8)
                canvas[:h, :w] = KEPT if status is None else status[i].view(h, w)
                codes.append(canvas.reshape(-1))
            out_features.append(torch.cat([features[i] for i in members]))
            out_blocks.append(torch.cat(cells))
            out_status.append(torch.cat(codes))
            patches = int(grid[members, 2].mul(grid[members, 3]).sum())
            layouts.append(
                SliceLayout(
                    grid=(len(members), height, width),
                    tokens_full=sum(h * w for h, w in views),
                    patches=patches,
                    draw=functools.partial(
                        slice_pictures, grid=grid_rows, members=members
                    ),
                    columns=int(grid[members[0], 4]),
                    frames=int(grid[members, 1].max()) + 1,
                )
            )
        return EncodedVision(
            features=tuple(out_features),
            kept_groups=tuple(b.to(f.device) for b, f in zip(out_blocks, out_features)),
            stage1_status=tuple(out_status),
            layouts=tuple(layouts),
        )


def slice_pictures(
    pixel_values: torch.Tensor, grid: list[list[int]], members: list[int], mean: list[float], std: list[float]
) -> np.ndarray:
    """The ``members`` slices (rows of ``grid``) of one item as uint8 pictures on the item's largest
    token grid, at most ``PREVIEW_SIDE`` a side."""
    patch = pixel_values.shape[2]
    mean_t = torch.tensor(mean, dtype=torch.float32)[:, None, None]
    std_t = torch.tensor(std, dtype=torch.float32)[:, None, None]
    height, width = max(grid[i][2] for i in members) * patch, max(grid[i][3] for i in members) * patch
    starts = [0, *itertools.accumulate(h * w * patch for _, _, h, w, _ in grid)]
    out = []
    for i in members:
        h, w = grid[i][2], grid[i][3]
        # NaViT packing: (C, patch, h * w * patch) with each patch's rows side by side; undo it.
        flat = pixel_values[0, :, :, starts[i] : starts[i + 1]].detach().float().cpu().reshape(3, patch, h, w, patch)
        canvas = torch.zeros(3, height, width)
        canvas[:, : h * patch, : w * patch] = flat.permute(0, 2, 1, 3, 4).reshape(3, h * patch, w * patch) * std_t + mean_t
        scale = min(1.0, PREVIEW_SIDE / max(height, width))
        if scale < 1.0:
            size = (max(1, round(height * scale)), max(1, round(width * scale)))
            canvas = F.interpolate(canvas[None], size=size, mode="bilinear", antialias=True)[0]
        out.append((canvas.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy())
    return np.stack(out)


def _grid(items: torch.Tensor, frames: torch.Tensor, sizes: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """One row per slice: (item, frame, rows, columns in patches, slice columns)."""
    return torch.stack([items, frames, sizes[:, 0].long(), sizes[:, 1].long(), columns.long()], dim=1)


def _gated_queries(attn, x: torch.Tensor) -> torch.Tensor:
    """Qwen3.5's queries: its query projection carries an output gate beside each head's query."""
    batch, n, _ = x.shape
    query = attn.q_proj(x).view(batch, n, -1, attn.head_dim * 2)[..., : attn.head_dim]
    return attn.q_norm(query).transpose(1, 2)


# 5.18 has the classes, but its vision tower fails on MiniCPM-V 4.6 inputs (fixed in 5.19).
register("minicpmv4_6", MiniCPMVBackbone, "MiniCPM-V 4.6", min_transformers="5.19.0")
