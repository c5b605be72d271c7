"""Qwen2-VL and Qwen2.5-VL (and, by extension, Qwen3-VL): stage 1 inside the ViT, and the hooks
stage 2 needs in the LLM.

The ViT loop below calls the model's own patch embedding, rotary embedding, blocks and merger and
transformers' own grid helpers. Stage 1 removes whole 2x2 merge groups, so the merger still fuses
true neighbours and every kept patch keeps its real 2D rotary position; the attention segments
(one per frame) and Qwen2.5-VL's windows are recounted from the groups that remain.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ...config import MergeConfig, Resolution
from ...merge import KEPT, merged_sizes
from ...methods import EncoderScorer, encoder_scorer, select
from ..common.ragged import run_ragged
from ..base import Backbone, EncodedVision, ItemShape, register
from .layout import QwenLayout, qwen_layouts
from .video import preprocess


@dataclass
class _EncoderPass:
    """The ViT's state between blocks: merge groups (``unit`` patches each) in the blocks' order, their
    rotary angles, segment and window boundaries, stage-1 codes and ToMe sizes per original group, and the
    features carried from inside the encoder (DeepStack)."""

    hidden: torch.Tensor
    cos: torch.Tensor
    sin: torch.Tensor
    groups: "_Groups"
    n_segments: int
    segment_groups0: list[int]
    status: torch.Tensor
    sizes: torch.Tensor
    windowed: bool
    carried: list = field(default_factory=list)
    cu_full: torch.Tensor | None = None
    cu_win: torch.Tensor | None = None
    max_full: int | None = None
    max_win: int | None = None


@dataclass
class _Groups:
    """Per-group bookkeeping in the encoder's current (window) order."""

    raster: torch.Tensor  # global raster id of each group
    segment: torch.Tensor  # attention segment (frame) of each group
    window: torch.Tensor | None  # window of each group (Qwen2.5-VL)

    def take(self, index: torch.Tensor) -> "_Groups":
        return _Groups(self.raster[index], self.segment[index], None if self.window is None else self.window[index])


class QwenVLBackbone(Backbone):
    """Adapter for ``Qwen2VLForConditionalGeneration`` and ``Qwen2_5_VLForConditionalGeneration``.

    The grid it hands the encoder is the processor's (temporal groups, patch rows, patch columns) per item.
    """

    mrope = True
    prompt_holds_full_grid = True

    @property
    def visual(self) -> torch.nn.Module:
        return self.model.model.visual

    @property
    def language_model(self) -> torch.nn.Module:
        return self.model.model.language_model

    @property
    def vision_layers(self) -> torch.nn.ModuleList:
        return self.visual.blocks

    @property
    def vit_depth(self) -> int:
        return len(self.visual.blocks)

    @property
    def merge_unit(self) -> int:
        return self.visual.spatial_merge_size**2

    def vision_window(self, layer: int) -> int | None:
        vision = self.visual.config
        full = getattr(vision, "fullatt_block_indexes", None)
        if full is None or layer in full:
            return None
        return (vision.window_size // vision.patch_size) ** 2

    def typical_shapes(self, kind: str, processor=None) -> tuple[ItemShape, ...]:
        """The processor's own resize of a 1024x768 image, or of 16 frames of 448x448 (temporal pairs)."""
        from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

        vision = self.visual.config
        factor = vision.patch_size * vision.spatial_merge_size
        sub = None if processor is None else (processor.video_processor if kind == "video" else processor.image_processor)
        size = getattr(sub, "size", None) or {"shortest_edge": 56 * 56, "longest_edge": 28 * 28 * 1280}
        height, width = (448, 448) if kind == "video" else (768, 1024)
        height, width = smart_resize(height, width, factor, size["shortest_edge"], size["longest_edge"])
        views = 16 // vision.temporal_patch_size if kind == "video" else 1
        rows, columns = height // factor, width // factor
        unit = vision.spatial_merge_size**2
        return (ItemShape((views, rows, columns), views * rows * columns, views * rows * columns * unit),)

    def image_inputs(
        self, processor, images: list, resolution: Resolution = Resolution()
    ) -> tuple[torch.Tensor, torch.Tensor]:
        processed = processor.image_processor(images=images, return_tensors="pt", size=pixel_range(processor, resolution))
        return processed["pixel_values"], processed["image_grid_thw"]

    def smallest_image_pixels(self, processor) -> int:
        """One merge group: ``merge_size`` x ``merge_size`` patches."""
        image_processor = processor.image_processor
        return (image_processor.patch_size * image_processor.merge_size) ** 2

    def video_inputs(self, processor, frames) -> tuple[torch.Tensor, torch.Tensor]:
        processed = preprocess(processor.video_processor, frames)
        return processed["pixel_values_videos"], processed["video_grid_thw"]

    def layouts(self, grid_thw: torch.Tensor) -> tuple[QwenLayout, ...]:
        """Each item's token map, counts and preview drawing, from the processor's patch grids."""
        vision = self.visual.config
        return qwen_layouts(
            grid_thw, vision.patch_size, vision.temporal_patch_size, vision.spatial_merge_size
        )

    def stock_encode(self, pixel_values: torch.Tensor, grid_thw: torch.Tensor, kind: str) -> EncodedVision:
        """The model's own vision encoder, untouched (merging off in stage 1)."""
        getter = self.model.model.get_image_features if kind == "image" else self.model.model.get_video_features
        output = getter(pixel_values, grid_thw, return_dict=True)
        features = tuple(output.pooler_output)
        deepstack = tuple(tuple(layer) for layer in getattr(output, "deepstack_features", None) or ())
        return EncodedVision(
            features=features,
            kept_groups=tuple(torch.arange(f.shape[0], device=f.device) for f in features),
            stage1_status=tuple(torch.full((f.shape[0],), KEPT, dtype=torch.int8) for f in features),
            layouts=self.layouts(grid_thw),
            layer_features=deepstack,
        )

    def item_placeholders(self, processor, item, index: int) -> str:
        """The processor's own expansion of the item's full patch grid (Qwen3-VL adds frame times)."""
        grid = torch.tensor([item.layout.grid_thw])
        if item.kind == "image":
            return processor.replace_image_token({"image_grid_thw": grid}, 0)
        from transformers.video_utils import VideoMetadata

        metadata = VideoMetadata(**item.video_metadata)
        return processor.replace_video_token({"video_grid_thw": grid, "video_metadata": [metadata]}, 0)

    def prompt_kwargs(self, items, device: torch.device) -> dict:
        """The patch grids (and seconds per temporal group of a video) M-RoPE positions are built from."""
        images = [item for item in items if item.kind == "image"]
        videos = [item for item in items if item.kind == "video"]
        out = {}
        if images:
            out["image_grid_thw"] = torch.tensor([item.layout.grid_thw for item in images], device=device)
        if videos:
            temporal = self.visual.config.temporal_patch_size
            out["video_grid_thw"] = torch.tensor([item.layout.grid_thw for item in videos], device=device)
            out["second_per_grid_ts"] = torch.tensor([temporal / item.video_fps for item in videos], device=device)
        return out

    def position_ids(self, input_ids: torch.Tensor, model_kwargs: dict) -> torch.Tensor:
        """The 4-row (text, t, h, w) positions ``generate`` would build for the unreduced prompt."""
        return self.model._prepare_position_ids_for_generation(input_ids, dict(model_kwargs))

    def encode_vision(
        self, pixel_values: torch.Tensor, grid_thw: torch.Tensor, config: MergeConfig, check_interrupt=None
    ) -> EncodedVision:
        visual = self.visual
        run = self._start_pass(pixel_values, grid_thw)
        targets = {layer: config.stage1_schedule.left(run.segment_groups0, layer) for layer in config.stage1_layers}
        # The block before each stage-1 layer hands over its q/k/v projection instead of recomputing it.
        projections: dict[int, torch.Tensor] = {}
        hooks = [
            visual.blocks[layer - 1].attn.qkv.register_forward_hook(
                lambda module, args, out, at=layer - 1: projections.__setitem__(at, out)
            )
            for layer in targets
        ]
        try:
            # One pass beyond the last block, so that a stage-1 layer equal to the depth reduces the
            # encoder's output.
            for index in range(len(visual.blocks) + 1):
                if check_interrupt is not None:
                    check_interrupt()
                if index in targets:
                    self._cut(run, index, projections.pop(index - 1), targets[index], config)
                if index < len(visual.blocks):
                    self._run_block(run, index)
        finally:
            for hook in hooks:
                hook.remove()
        merged = visual.merger(run.hidden.reshape(-1, run.hidden.shape[-1]))
        raster_order = torch.argsort(run.groups.raster)
        return _split_items(
            merged[raster_order],
            [c[raster_order] for c in run.carried],
            run.groups.raster[raster_order],
            self.layouts(grid_thw),
            self.merge_unit,
            run.status,
        )

    def _start_pass(self, pixel_values: torch.Tensor, grid_thw: torch.Tensor) -> "_EncoderPass":
        """The patch embeddings in the first block's (window) order, with their rotary angles and segments."""
        from transformers.vision_utils import get_vision_cu_seqlens, get_vision_position_ids, get_vision_window_index

        visual = self.visual
        unit = self.merge_unit
        device = pixel_values.device
        windowed = getattr(visual, "fullatt_block_indexes", None) is not None
        position_ids = get_vision_position_ids(grid_thw, visual.spatial_merge_size)
        cu_seqlens = get_vision_cu_seqlens(grid_thw).to(device)
        hidden = self.embed_patches(pixel_values, grid_thw)
        n_groups = hidden.shape[0] // unit
        if windowed:
            order, cu_window = get_vision_window_index(
                grid_thw, visual.spatial_merge_size, visual.window_size, visual.patch_size
            )
            order = order.to(device)
        else:
            order = torch.arange(n_groups, device=device)
        cos, sin = visual.rotary_pos_emb(hidden, position_ids.to(device))
        positions = torch.arange(n_groups, device=device) * unit
        groups = _Groups(
            raster=order,
            segment=torch.bucketize(positions, cu_seqlens[1:], right=True)[order],
            window=torch.bucketize(positions, cu_window.to(device)[1:], right=True) if windowed else None,
        )
        n_segments = cu_seqlens.numel() - 1
        run = _EncoderPass(
            hidden=hidden.reshape(n_groups, unit, -1)[order],
            cos=cos.reshape(n_groups, unit, -1)[order],
            sin=sin.reshape(n_groups, unit, -1)[order],
            groups=groups,
            n_segments=n_segments,
            segment_groups0=torch.bincount(groups.segment, minlength=n_segments).tolist(),
            status=torch.full((n_groups,), KEPT, dtype=torch.int8, device=device),
            sizes=torch.ones(n_groups, device=device),
            windowed=windowed,
        )
        self._recount(run, cu_seqlens)
        return run

    def _recount(self, run: "_EncoderPass", cu_full: torch.Tensor) -> None:
        """The segments' and windows' boundaries after a change of tokens."""
        run.cu_full = cu_full
        run.cu_win = _window_cu(run.groups.window, self.merge_unit) if run.windowed else None
        # Flash attention's longest sequence is read off the device once per change, not once per block.
        run.max_full, run.max_win = _max_lengths(run.cu_full, run.cu_win, self.visual.config)

    def _cut(self, run: "_EncoderPass", index: int, qkv: torch.Tensor, targets: list[int], config: MergeConfig) -> None:
        """Stage 1 before block ``index``: each segment reduced to its target, scored with the block before."""
        if config.scored:
            attn = self.visual.blocks[index - 1].attn
            scorer = encoder_scorer(config.method, config.score_chunk)
            scores = self.group_scores(attn, qkv, (run.cos, run.sin), run.cu_full, scorer)
        else:
            scores = torch.zeros(run.hidden.shape[0], device=run.hidden.device)
        keep_index, run.hidden, run.carried, run.status, run.sizes = _reduce_segments(
            run.hidden, run.carried, scores, run.sizes, run.groups, run.cu_full, self.merge_unit, targets, config, run.status
        )
        run.groups = run.groups.take(keep_index)
        run.cos, run.sin = run.cos[keep_index], run.sin[keep_index]
        self._recount(run, _counts_cu(run.groups.segment, run.n_segments, self.merge_unit))

    def _run_block(self, run: "_EncoderPass", index: int) -> None:
        """Encoder block ``index`` over every kept token, in its window or its whole frame."""
        visual = self.visual
        flat = run.hidden.reshape(-1, run.hidden.shape[-1])
        full = not run.windowed or index in visual.fullatt_block_indexes
        flat = visual.blocks[index](
            flat,
            cu_seqlens=run.cu_full if full else run.cu_win,
            max_seqlen=run.max_full if full else run.max_win,
            position_embeddings=(run.cos.reshape(flat.shape[0], -1), run.sin.reshape(flat.shape[0], -1)),
        )
        run.hidden = flat.reshape(-1, self.merge_unit, flat.shape[-1])
        inner = self.inner_features(index, flat)
        if inner is not None:
            run.carried.append(inner)

    def embed_patches(self, pixel_values: torch.Tensor, grid_thw: torch.Tensor) -> torch.Tensor:
        """Patch embeddings in raster (2x2-group-major) order, as the encoder's first block sees them."""
        return self.visual.patch_embed(pixel_values.type(self.visual.dtype))

    def inner_features(self, block_index: int, hidden: torch.Tensor) -> torch.Tensor | None:
        """Features the model takes from inside the encoder after ``block_index`` (none for Qwen2/2.5-VL)."""
        return None

    def group_scores(self, attn, qkv: torch.Tensor, rotary, cu_seqlens, scorer: EncoderScorer) -> torch.Tensor:
        """``scorer``'s score of each merge group from the attention of the block of ``attn``, over its whole
        frame (not its window): the sum over the group's patches.

        qkv: that block's q/k/v projection output (n, 3 * width); rotary: its (cos, sin).
        """
        n = qkv.shape[0]
        q, k, _ = qkv.reshape(n, 3, attn.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
        cos, sin = (t.reshape(n, -1) for t in rotary)
        apply_rope = sys.modules[type(attn).__module__].apply_rotary_pos_emb_vision
        q, k = apply_rope(q, k, cos, sin)
        lengths = cu_seqlens.diff().tolist()
        # Frames of a video (and images of one size) are segments of equal length: scored as one batch.
        received = run_ragged(
            lambda qs, ks: scorer(qs.transpose(1, 2), ks.transpose(1, 2), attn.scaling),
            list(q.split(lengths)),
            list(k.split(lengths)),
        )
        return torch.cat(received).reshape(-1, self.merge_unit).sum(-1)


def _reduce_segments(hidden, carried, scores, sizes, groups: _Groups, cu_full, unit, targets, config, status):
    """Reduce each frame segment to its target group count with ``config.method``.

    Returns the kept indices, the new hidden states, the carried features reduced the same way, the
    updated status and the sizes (original groups per surviving group).
    """
    bounds = (cu_full // unit).tolist()
    kept_parts, hidden_parts, size_parts = [], [], []
    carried_parts: list[list[torch.Tensor]] = [[] for _ in carried]
    for segment, (start, end) in enumerate(zip(bounds[:-1], bounds[1:])):
        n = end - start
        local = hidden[start:end]
        reduction = select(
            config.method, scores[start:end], local.reshape(n, -1), targets[segment],
            config.stage1_recycled, config.recycle_weighting, sizes[start:end],
        )
        hidden_parts.append(reduction.apply(local))
        for parts, feature in zip(carried_parts, carried):
            parts.append(reduction.apply(feature[start:end]))
        size_parts.append(merged_sizes(sizes[start:end], reduction))
        kept_parts.append(reduction.kept + start)
        raster = groups.raster[start:end]
        status[raster] = torch.where(reduction.status == KEPT, status[raster], reduction.status)
    return (
        torch.cat(kept_parts),
        torch.cat(hidden_parts),
        [torch.cat(parts) for parts in carried_parts],
        status,
        torch.cat(size_parts),
    )


def _counts_cu(ids: torch.Tensor, n: int, unit: int) -> torch.Tensor:
    counts = torch.bincount(ids, minlength=n) * unit
    return F.pad(counts.cumsum(0), (1, 0)).to(torch.int32)


def _window_cu(window: torch.Tensor, unit: int) -> torch.Tensor:
    # Groups stay in window order, so each window is a contiguous run; empty windows vanish.
    counts = torch.unique_consecutive(window, return_counts=True)[1] * unit
    return F.pad(counts.cumsum(0), (1, 0)).to(torch.int32)


def _split_items(features, carried, raster, layouts, unit, status) -> EncodedVision:
    sizes = [layout.patches // unit for layout in layouts]
    offsets = [0]
    for size in sizes:
        offsets.append(offsets[-1] + size)
    item = torch.bucketize(raster, torch.tensor(offsets[1:], device=raster.device), right=True)
    counts = torch.bincount(item, minlength=len(sizes)).tolist()
    feats = torch.split(features, counts)
    kept = torch.split(raster, counts)
    return EncodedVision(
        features=tuple(feats),
        kept_groups=tuple(k - offsets[i] for i, k in enumerate(kept)),
        stage1_status=tuple(status[offsets[i] : offsets[i + 1]].cpu() for i in range(len(sizes))),
        layouts=layouts,
        layer_features=tuple(tuple(torch.split(feature, counts)) for feature in carried),
    )


register("qwen2_vl", QwenVLBackbone, "Qwen2-VL", min_transformers="5.18.0")
register("qwen2_5_vl", QwenVLBackbone, "Qwen2.5-VL", min_transformers="5.18.0")


def pixel_range(processor, resolution: Resolution) -> dict[str, int]:
    """The image processor's ``size`` (its pixel range) with the ends ``resolution`` sets."""
    size = dict(processor.image_processor.size)
    if resolution.min_pixels:
        size["shortest_edge"] = resolution.min_pixels
        size["longest_edge"] = max(size["longest_edge"], resolution.min_pixels)
    if resolution.max_pixels:
        size["longest_edge"] = resolution.max_pixels
        size["shortest_edge"] = min(size["shortest_edge"], resolution.max_pixels)
    return size


def _max_lengths(cu_full: torch.Tensor, cu_window: torch.Tensor | None, config) -> tuple[int | None, int | None]:
    """The longest sequence of the full-attention and of the window blocks, as flash attention takes them
    (None for other attention implementations, which need no host copy)."""
    from transformers.utils.generic import get_max_seqlen

    return get_max_seqlen(cu_full, config), None if cu_window is None else get_max_seqlen(cu_window, config)
