"""InternVL: stage 1 inside InternViT in whole pixel-shuffle groups, stage 2 in its LLM.

An image is cut into tiles (a grid chosen by its aspect ratio, plus a thumbnail when there is more
than one); a video is one tile per frame. Every tile runs through InternViT with a CLS token,
loses the CLS token, and is pixel-shuffled (2x2 patches become one token) and projected. Stage 1
reduces each tile on its own, in whole 2x2 groups (``internvit_stage1``); the pixel shuffle then
runs over the kept groups only, so every LLM token is still the model's fusion of four true
neighbours. The prompt gets one ``<IMG_CONTEXT>`` per kept token, inside the model's own
``<img>...</img>`` (per frame, with its ``FrameN:`` label, for a video). The LLM uses plain 1D
rotary positions, so the shorter prompt is just a shorter sequence; stage 2 then gathers the rotary
angles of the tokens it keeps, as for Qwen.

The encoder runs only the layers whose output the model uses (``vision_feature_layer``), so
``vit_depth`` counts those.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence
from typing import Any

import torch

from ...config import MergeConfig, Resolution
from ...merge import KEPT
from ..base import EncodedVision, ItemLayout, ItemShape, register
from .internvit_stage1 import GroupReducer, run_encoder
from ..common.tower import FeatureLayerBackbone, tile_pictures


class InternVLBackbone(FeatureLayerBackbone):
    """Adapter for ``InternVLForConditionalGeneration``.

    The grid it hands the encoder is (items, 1): the number of tiles (frames for a video) of each item.
    """

    @property
    def encoder_layers(self) -> torch.nn.ModuleList:
        return self.tower.encoder.layer

    @property
    def side(self) -> int:
        """Patches along a tile's side."""
        vision = self.config.vision_config
        return vision.image_size[0] // vision.patch_size[0]

    @property
    def groups_per_tile(self) -> int:
        return (self.side // 2) ** 2

    def typical_shapes(self, kind: str, processor=None) -> tuple[ItemShape, ...]:
        """16 frames of one tile each, or a 1024x768 image on the tiles its aspect ratio picks plus a thumbnail."""
        most = getattr(getattr(processor, "image_processor", None), "max_patches", 12)
        tiles = 16 if kind == "video" else _tiles_for(4 / 3, most)
        half = self.side // 2
        return (ItemShape((tiles, half, half), tiles * self.groups_per_tile, tiles * self.side**2),)

    def image_inputs(
        self, processor, images: list, resolution: Resolution = Resolution()
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # The tiles are chosen from the aspect ratio alone, so the pixel range becomes a range of tiles.
        tile = self.smallest_image_pixels(processor)
        limits = {}
        if resolution.max_pixels:
            limits["max_patches"] = max(1, resolution.max_pixels // tile)
        if resolution.min_pixels:
            most = limits.get("max_patches", processor.image_processor.max_patches)
            limits["min_patches"] = min(most, math.ceil(resolution.min_pixels / tile))
        # InternVLProcessor turns tiling on for images (its image processor alone leaves it off).
        processed = processor.image_processor(images=images, crop_to_patches=True, return_tensors="pt", **limits)
        return processed["pixel_values"], torch.as_tensor(processed["num_patches"]).view(-1, 1)

    def smallest_image_pixels(self, processor) -> int:
        """One tile."""
        size = processor.image_processor.size
        return size["height"] * size["width"]

    def video_inputs(self, processor, frames) -> tuple[torch.Tensor, torch.Tensor]:
        pixel_values = processor.video_processor(videos=[frames.pixels], return_tensors="pt")["pixel_values_videos"][0]
        return pixel_values, torch.tensor([[pixel_values.shape[0]]])

    def feature_kinds(self, items: Sequence) -> dict[str, list]:
        # The model reads video frames as images: one stream of features, in prompt order.
        return {"image": list(items)}

    def item_placeholders(self, processor, item, index: int) -> str:
        """``<img>`` + one ``<IMG_CONTEXT>`` per kept token + ``</img>``; per frame, labelled, for a video."""
        tile_tokens = self.groups_per_tile
        views = item.layout.grid[0]
        counts = torch.bincount(item.kept_groups.cpu() // tile_tokens, minlength=views).tolist()
        start, end, token = processor.start_image_token, processor.end_image_token, processor.image_token
        if item.kind == "image":
            return f"{start}{token * sum(counts)}{end}"
        return "\n".join(f"Frame{i + 1}: {start}{token * n}{end}" for i, n in enumerate(counts))

    def generate_inputs(self, inputs: dict[str, Any]) -> dict[str, Any]:
        # The model finds its placeholders by token id and takes neither token types nor prebuilt positions.
        return {k: v for k, v in inputs.items() if k not in ("mm_token_type_ids", "position_ids")}

    def encoder_output(self, features: tuple[torch.Tensor, ...], layer_features: tuple[tuple[torch.Tensor, ...], ...]):
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        # The model scatters one (tokens, d) tensor into its placeholders in order.
        return BaseModelOutputWithPooling(pooler_output=torch.cat(features))

    def stock_encode(self, pixel_values: torch.Tensor, grid: torch.Tensor, kind: str) -> EncodedVision:
        """The model's own encoder, pixel shuffle and projector, untouched (merging off in stage 1)."""
        projected = self.model.model.get_image_features(pixel_values, return_dict=True).pooler_output
        counts = grid[:, 0].tolist()
        features = [f.flatten(0, 1) for f in projected.split(counts)]
        groups = [torch.arange(f.shape[0], device=f.device) for f in features]
        status = [torch.full((f.shape[0],), KEPT, dtype=torch.int8) for f in features]
        return self._encoded(counts, features, groups, status)

    def encode_vision(
        self, pixel_values: torch.Tensor, grid: torch.Tensor, config: MergeConfig, check_interrupt=None
    ) -> EncodedVision:
        self._check_stage1()
        reducer = GroupReducer(self.side, pixel_values.shape[0], config, pixel_values.device)
        ids, hidden = run_encoder(
            self.tower,
            pixel_values.to(self.model.dtype),
            self.feature_layer,
            self.config.vision_feature_layer == -1,
            reducer,
            config,
            check_interrupt,
        )
        kept, projected = self._shuffle_and_project(ids, hidden)
        counts = grid[:, 0].tolist()
        features, groups, status, start = [], [], [], 0
        for count in counts:
            span = range(start, start + count)
            features.append(torch.cat([projected[t] for t in span]))
            groups.append(torch.cat([kept[t] + (t - start) * self.groups_per_tile for t in span]))
            status.append(torch.cat([reducer.status[t] for t in span]))
            start += count
        return self._encoded(counts, features, groups, status)

    def _check_stage1(self) -> None:
        config = self.config
        if config.vision_feature_select_strategy != "default":
            raise ValueError("stage 1 supports vision_feature_select_strategy 'default' (the CLS token dropped)")
        if config.downsample_ratio != 0.5 or self.side % 2:
            raise ValueError(
                f"stage 1 keeps whole 2x2 pixel-shuffle groups, but this model's downsample_ratio is "
                f"{config.downsample_ratio} over a {self.side}-patch tile: leave stage1_layers empty for it"
            )

    def _shuffle_and_project(
        self, ids: list[torch.Tensor], hidden: list[torch.Tensor]
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per tile: the kept groups (raster order) and their LLM tokens, made by the model's own pixel
        shuffle and projector.

        Kept patches are placed on a blank canvas of the full tile and shuffled there, so each kept
        group's four patches are concatenated exactly as the model concatenates them.
        """
        model = self.model.model
        side, width = self.side, hidden[0].shape[-1]
        canvas = hidden[0].new_zeros(len(hidden), side * side, width)
        for t, (tile_ids, rows) in enumerate(zip(ids, hidden)):
            canvas[t, tile_ids] = rows
        shuffled = model.pixel_shuffle(canvas.view(-1, side, side, width), scale_factor=self.config.downsample_ratio)
        shuffled = shuffled.reshape(len(hidden), self.groups_per_tile, -1)
        kept = [torch.unique((i // side // 2) * (side // 2) + (i % side) // 2) for i in ids]
        projector = model.multi_modal_projector
        if all(k.numel() == self.groups_per_tile for k in kept):
            # Every tile whole: project in the model's own (tiles, tokens, d) batch.
            return kept, list(projector(shuffled).unbind(0))
        tokens = torch.cat([shuffled[t, k] for t, k in enumerate(kept)])
        return kept, list(projector(tokens).split([k.numel() for k in kept]))

    def _encoded(self, counts: list[int], features, groups, status) -> EncodedVision:
        half, starts = self.side // 2, [0, *itertools.accumulate(counts)]
        layouts = tuple(
            ItemLayout(
                grid=(count, half, half),
                tokens_full=count * self.groups_per_tile,
                patches=count * self.side**2,
                draw=functools.partial(
                    tile_pictures, select=(slice(start, start + count),)
                ),
            )
            for count, start in zip(counts, starts)
        )
        return EncodedVision(
            features=tuple(features),
            kept_groups=tuple(g.to(f.device) for g, f in zip(groups, features)),
            stage1_status=tuple(s.cpu() for s in status),
            layouts=layouts,
        )


register("internvl", InternVLBackbone, "InternVL", min_transformers="5.18.0")


def _tiles_for(aspect: float, most: int) -> int:
    """Tiles InternVL's processor cuts an image of ``aspect`` (width / height) into, with its thumbnail: the
    grid of at most ``most`` tiles whose aspect is nearest (the larger grid on a tie)."""
    grids = [(c, r) for c in range(1, most + 1) for r in range(1, most + 1) if c * r <= most]
    columns, rows = min(grids, key=lambda g: (abs(g[0] / g[1] - aspect), -g[0] * g[1]))
    return columns * rows + (columns * rows > 1)
