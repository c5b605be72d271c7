"""LLaVA-OneVision: stage 1 inside SigLIP with our own packing, stage 2 in the Qwen2 LLM.

Images of a prompt that holds one image are anyres (a base tile plus a grid of high-resolution
tiles); images of a multi-image prompt are one tile each; video frames are one tile each, pooled
2x2 after the projector. Stage 1 reduces every tile on its own inside SigLIP, and
``llava_onevision_layout`` packs what is left in the model's order with the image-newline tokens
it uses, so the prompt gets one placeholder per packed token. The LLM uses plain 1D rotary
positions, so the shorter prompt is just a shorter sequence; stage 2 then gathers the rotary angles
of the tokens it keeps, as for Qwen.

The encoder runs only the layers whose output the model uses (``vision_feature_layer``: with -2
the last layer never runs), so ``vit_depth`` counts those.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch

from ...config import MergeConfig, Resolution
from ...merge import DROPPED, KEPT
from ...methods import encoder_scorer
from ..base import EncodedVision, ItemLayout, ItemShape, register
from .layout import (
    TileLayout,
    image_layout,
    pack,
    pool_frames,
    pooling_weights,
    stock_groups,
    video_layout,
)
from .reducers import CellReducer, TokenReducer
from ..common.resize import fit_area
from ..common.tiles import prenorm_layer_scores, run_tiles
from ..common.tower import FeatureLayerBackbone, tile_pictures


class LlavaOnevisionBackbone(FeatureLayerBackbone):
    """Adapter for ``LlavaOnevisionForConditionalGeneration``.

    The pixel grids it hands the encoder are the processor's ``image_sizes`` (images, 2) for
    images and (1, 3) = (frames, height, width) for a video, which is how ``encode_vision`` tells them apart.
    """

    @property
    def encoder_layers(self) -> torch.nn.ModuleList:
        return self.tower.encoder.layers

    @property
    def side(self) -> int:
        vision = self.config.vision_config
        return vision.image_size // vision.patch_size

    def typical_shapes(self, kind: str, processor=None) -> tuple[ItemShape, ...]:
        """A 1024x768 image on its anyres tiles, or 16 frames pooled as the model pools video."""
        layout = video_layout(16, math.ceil(self.side / 2)) if kind == "video" else image_layout(self.config, (768, 1024), True)
        return (ItemShape((layout.tiles, layout.side, layout.side), layout.tokens_full, layout.tiles * self.side**2),)

    def image_inputs(
        self, processor, images: list, resolution: Resolution = Resolution()
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # Its anyres grid follows the input's size, so a resized input takes fewer (or more) tiles.
        images = [fit_area(image, resolution) for image in images]
        # One nested list: the images share one prompt, so several images are one tile each, as the model was trained.
        processed = processor.image_processor(images=[images], return_tensors="pt")
        return processed["pixel_values"], processed["image_sizes"]

    def smallest_image_pixels(self, processor) -> int:
        """The base tile every image is encoded with."""
        size = processor.image_processor.size
        return size["height"] * size["width"]

    def video_inputs(self, processor, frames) -> tuple[torch.Tensor, torch.Tensor]:
        pixel_values = processor.video_processor(videos=[frames.pixels], return_tensors="pt")["pixel_values_videos"]
        return pixel_values, torch.tensor([pixel_values.shape[1], *pixel_values.shape[-2:]])[None]

    def generate_inputs(self, inputs: dict[str, Any]) -> dict[str, Any]:
        # The model finds its placeholders by token id and takes neither token types nor prebuilt positions.
        out = {k: v for k, v in inputs.items() if k not in ("mm_token_type_ids", "position_ids")}
        encoder_outputs = dict(out["mm_encoder_outputs"])
        if "video" in encoder_outputs:
            # The model reads video features as one (videos, n, d) tensor, image features as a tuple.
            video = encoder_outputs["video"]
            encoder_outputs["video"] = type(video)(pooler_output=torch.cat(video.pooler_output)[None])
        out["mm_encoder_outputs"] = encoder_outputs
        return out

    def stock_encode(self, pixel_values: torch.Tensor, grid: torch.Tensor, kind: str) -> EncodedVision:
        """The model's own encoder and packing, untouched (merging off in stage 1)."""
        model = self.model.model
        if kind == "video":
            features = model.get_video_features(pixel_values, return_dict=True).pooler_output[0]
            layout = video_layout(pixel_values.shape[1], math.ceil(self.side / 2))
            return self._encoded(
                [layout], [features], [stock_groups(layout, features.shape[0])], [_all_kept(layout)], video=True
            )
        sizes = grid.tolist()
        output = model.get_image_features(
            pixel_values, grid, batch_num_images=torch.tensor([len(sizes)]), return_dict=True
        )
        layouts = [image_layout(self.config, size, len(sizes) == 1) for size in sizes]
        groups = [stock_groups(layout, f.shape[0]) for layout, f in zip(layouts, output.pooler_output)]
        status = [torch.where(layout.cells, KEPT, DROPPED).to(torch.int8) for layout in layouts]
        return self._encoded(layouts, list(output.pooler_output), groups, status)

    def encode_vision(
        self, pixel_values: torch.Tensor, grid: torch.Tensor, config: MergeConfig, check_interrupt=None
    ) -> EncodedVision:
        if self.config.vision_feature_select_strategy != "full":
            raise ValueError("stage 1 supports vision_feature_select_strategy 'full' (SigLIP has no CLS token)")
        if grid.shape[-1] == 3:
            return self._encode_video(pixel_values[0], config, check_interrupt)
        sizes = grid.tolist()
        layouts = [image_layout(self.config, size, len(sizes) == 1) for size in sizes]
        tiles = _tiles(pixel_values, layouts)
        reducer = TokenReducer(
            [cells for layout in layouts for cells in layout.tile_cells],
            [_tile_shrink(layout, t) for layout in layouts for t in range(layout.tiles)],
            config,
            tiles.device,
        )
        ids, hidden = self._run_encoder(tiles, reducer, config, check_interrupt)
        projected = _project(self.model.model.multi_modal_projector, hidden)
        features, groups, status, start = [], [], [], 0
        for layout in layouts:
            span = range(start, start + layout.tiles)
            kept = torch.cat([ids[t] + (t - start) * self.side**2 for t in span])
            packed, token_ids = pack(
                layout, kept, torch.cat([projected[t] for t in span]), self.model.model.image_newline
            )
            features.append(packed)
            groups.append(token_ids)
            status.append(torch.cat([reducer.status[t] for t in span]))
            start += layout.tiles
        return self._encoded(layouts, features, groups, status)

    def _encode_video(self, frames: torch.Tensor, config: MergeConfig, check_interrupt) -> EncodedVision:
        model = self.model.model
        weights = pooling_weights(self.side, model.apply_pooling)
        reducer = CellReducer(weights, frames.shape[0], config, frames.device)
        ids, hidden = self._run_encoder(frames, reducer, config, check_interrupt)
        projected = _project(model.multi_modal_projector, hidden)
        tokens = self.side**2
        kept = torch.cat([frame_ids + t * tokens for t, frame_ids in enumerate(ids)])
        pooled = pool_frames(kept, torch.cat(projected), frames.shape[0], self.side, model.apply_pooling)
        cells = weights.shape[0]
        kept_cells = torch.cat([reducer.kept_cells(t).to(pooled.device) + t * cells for t in range(frames.shape[0])])
        layout = video_layout(frames.shape[0], math.ceil(self.side / 2))
        packed, token_ids = pack(layout, kept_cells, pooled[kept_cells], model.image_newline)
        return self._encoded([layout], [packed], [token_ids], [torch.cat(reducer.status)], video=True)

    def _run_encoder(self, tiles: torch.Tensor, reducer, config: MergeConfig, check_interrupt):
        """SigLIP's embeddings and its first ``feature_layer`` layers over every tile, stage 1 inside; per tile,
        the ids of the tokens that came out and their raw layer outputs (the model takes ``hidden_states[...]``,
        before the post-layernorm)."""
        layers = self.tower.encoder.layers
        scorer = encoder_scorer(config.method, config.score_chunk)
        score = (lambda index, batch: prenorm_layer_scores(layers[index], batch, scorer)) if config.scored else None
        return run_tiles(
            list(self.tower.embeddings(tiles).unbind(0)), self.feature_layer, config.stage1_layers, reducer,
            # SigLIP layers take the attention mask positionally; tiles need none.
            lambda index, batch: layers[index](batch, None), score, check_interrupt=check_interrupt,
        )

    def _encoded(self, layouts: list[TileLayout], features, groups, status, video: bool = False) -> EncodedVision:
        # Image i's tiles are pixel_values[i, :tiles] (the rest is the processor's padding); a video's frames are pixel_values[0].
        item_layouts = tuple(
            ItemLayout(
                grid=(layout.tiles, layout.side, layout.side),
                tokens_full=layout.tokens_full,
                patches=layout.tiles * self.side**2,
                draw=functools.partial(
                    tile_pictures, select=(0,) if video else (i, slice(layout.tiles))
                ),
            )
            for i, layout in enumerate(layouts)
        )
        return EncodedVision(
            features=tuple(features),
            kept_groups=tuple(g.to(f.device) for g, f in zip(groups, features)),
            stage1_status=tuple(s.cpu() for s in status),
            layouts=item_layouts,
        )


def _tiles(pixel_values: torch.Tensor, layouts: list[TileLayout]) -> torch.Tensor:
    """The tiles of every image, in order, without the processor's batch padding (as the model takes them)."""
    return torch.cat([pixel_values[i, : layout.tiles] for i, layout in enumerate(layouts)])


def _tile_shrink(layout: TileLayout, tile: int) -> float:
    """The model shrinks only the high-resolution grid, never the base tile."""
    return 1.0 if tile == 0 else layout.shrink


def _all_kept(layout: TileLayout) -> torch.Tensor:
    return torch.full((layout.cells.numel(),), KEPT, dtype=torch.int8)


def _project(projector: torch.nn.Module, hidden: list[torch.Tensor]) -> list[torch.Tensor]:
    """The projector over every tile's tokens; while all tiles are whole, in the model's own (tiles, n, d) batch."""
    if len({h.shape[0] for h in hidden}) == 1:
        return list(projector(torch.stack(hidden)).unbind(0))
    return list(projector(torch.cat(hidden)).split([h.shape[0] for h in hidden]))


register("llava_onevision", LlavaOnevisionBackbone, "LLaVA-OneVision", min_transformers="5.18.0")
