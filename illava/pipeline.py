"""load() -> LVLM; encode() runs stage 1; generate() runs stage 2 and decoding.

The orchestration both the ComfyUI nodes and the command line use.
"""

from __future__ import annotations

import re
import time
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image

from .backbones import Backbone
from .backbones.base import EncodedVision, ItemLayout
from .config import MergeConfig
from .llm_stage import Stage2, installed
from .loading import LVLM
from .media import to_pil_images
from .trace import ItemTrace, stage1_trace
from .video import DEFAULT_FPS, DEFAULT_MAX_FRAMES, load_video

TokenCallback = Callable[[int, int, list], None]
PREVIEW_SIDE = 512
VIDEO_PREVIEW_SIDE = 256


@dataclass(frozen=True)
class VisualItem:
    """One encoded image or video: LLM-ready tokens after stage 1 and where they came from.

    grid_thw is the patch grid (temporal groups, rows, columns); preview holds one small RGB frame
    per temporal group (one for an image) as the encoder saw it, for drawing token maps. Backbones
    that pack their own tokens (LLaVA-OneVision) give a ``layout``: grid_thw is then its token-map
    grid and the prompt holds one placeholder per feature.
    """

    kind: str
    grid_thw: tuple[int, int, int]
    features: torch.Tensor
    kept_groups: torch.Tensor
    trace: ItemTrace
    preview: np.ndarray
    second_per_grid: float | None = None
    deepstack: tuple[torch.Tensor, ...] = ()
    video_metadata: dict | None = None
    layout: ItemLayout | None = None

    @property
    def tokens_full(self) -> int:
        if self.layout is not None:
            return self.layout.tokens_full
        t, h, w = self.grid_thw
        return t * h * w // 4

    @property
    def tokens_kept(self) -> int:
        return int(self.features.shape[0])

    @property
    def patches(self) -> int:
        if self.layout is not None:
            return self.layout.patches
        t, h, w = self.grid_thw
        return t * h * w


@dataclass(frozen=True)
class VisualTokens:
    """The visual inputs of one prompt after stage 1 (``encode``'s result)."""

    items: tuple[VisualItem, ...]
    config: MergeConfig
    vit_s: float
    model_id: str

    def counts(self) -> dict[str, int]:
        return {
            "vit_input": sum(item.patches for item in self.items),
            "vit_output": sum(item.tokens_kept for item in self.items),
            "llm_input_full": sum(item.tokens_full for item in self.items),
        }


@dataclass
class Generation:
    """Generated text and what it cost, one entry per prompt of the batch."""

    texts: list[str]
    ids: list[list[int]]
    stats: list[dict[str, Any]]
    traces: list[list[ItemTrace]]
    logits: list[torch.Tensor] | None = field(default=None, repr=False)


def encode(
    lvlm: LVLM,
    images: Any = None,
    config: MergeConfig | None = None,
    check_interrupt: Callable[[], None] | None = None,
    video: Any = None,
    fps: float = DEFAULT_FPS,
    max_frames: int = DEFAULT_MAX_FRAMES,
    video_fps: float | None = None,
) -> VisualTokens:
    """Run the vision encoder with stage 1 over the images and/or the video of one prompt.

    ``video`` is a file path (decoded with decord), a ComfyUI VIDEO or a (T, H, W, C) frame stack
    (``video_fps`` gives a stack's frame rate); ``fps`` and ``max_frames`` choose the sampled frames.
    Images come first in the prompt, then the video.
    """
    config = config or MergeConfig()
    config.check_depths(lvlm.backbone.vit_depth, lvlm.backbone.llm_depth)
    if images is None and video is None:
        raise ValueError("nothing to encode: give at least one image or a video")
    items: list[VisualItem] = []
    vit_s = 0.0
    if images is not None:
        pil_images = to_pil_images(images)
        pixel_values, grid_thw = lvlm.backbone.image_inputs(lvlm.processor, pil_images)
        encoded, seconds = _timed_encoder(lvlm, pixel_values, grid_thw, "image", config, check_interrupt)
        vit_s += seconds
        for i, image in enumerate(pil_images):
            grid = tuple(int(v) for v in grid_thw[i].tolist())
            preview = None if encoded.layouts else _preview(image, (grid[1] * 14, grid[2] * 14))[None]
            items.append(_item("image", grid, encoded, i, preview, lvlm))
    if video is not None:
        frames = load_video(video, fps, max_frames, video_fps)
        pixel_values, grid_thw = lvlm.backbone.video_inputs(lvlm.processor, frames)
        encoded, seconds = _timed_encoder(lvlm, pixel_values, grid_thw, "video", config, check_interrupt)
        vit_s += seconds
        grid = tuple(int(v) for v in grid_thw[0].tolist())
        temporal = getattr(lvlm.processor.video_processor, "temporal_patch_size", 2)
        group_frames = frames.pixels[::temporal]
        preview = None
        if not encoded.layouts:
            preview = np.stack([_preview(Image.fromarray(f), (grid[1] * 14, grid[2] * 14), VIDEO_PREVIEW_SIDE) for f in group_frames])
        item = _item("video", grid, encoded, 0, preview, lvlm, second_per_grid=temporal / frames.fps)
        items.append(replace(item, video_metadata=frames.metadata()))
    return VisualTokens(items=tuple(items), config=config, vit_s=vit_s, model_id=lvlm.model_id)


def _timed_encoder(lvlm: LVLM, pixel_values, grid_thw, kind: str, config: MergeConfig, check_interrupt):
    start = time.perf_counter()
    with torch.inference_mode():
        encoded = _run_encoder(lvlm.backbone, pixel_values.to(lvlm.device), grid_thw.to(lvlm.device), kind, config, check_interrupt)
    _synchronize(lvlm.device)
    return encoded, time.perf_counter() - start


def _item(kind: str, grid_thw, encoded, index: int, preview: np.ndarray | None, lvlm: LVLM, second_per_grid=None) -> VisualItem:
    layout = encoded.layouts[index] if encoded.layouts else None
    if layout is not None:
        grid_thw = grid = layout.grid
        preview = layout.preview
    else:
        merge = lvlm.backbone.visual.spatial_merge_size
        t, h, w = grid_thw
        grid = (t, h // merge, w // merge)
    return VisualItem(
        kind=kind,
        grid_thw=grid_thw,
        features=encoded.features[index],
        kept_groups=encoded.kept_groups[index],
        trace=stage1_trace(kind, grid, encoded.stage1_status[index]),
        preview=preview,
        second_per_grid=second_per_grid,
        deepstack=tuple(layer[index] for layer in encoded.deepstack),
        layout=layout,
    )


def _run_encoder(backbone: Backbone, pixel_values, grid_thw, kind: str, config: MergeConfig, check_interrupt) -> EncodedVision:
    if config.stage1_active:
        return backbone.encode_vision(pixel_values, grid_thw, config, check_interrupt)
    return backbone.stock_encode(pixel_values, grid_thw, kind)


def _preview(image, size_hw: tuple[int, int], side: int = PREVIEW_SIDE) -> np.ndarray:
    """The image as the encoder saw it (resized to its patch grid), at most ``side`` pixels a side."""
    h, w = size_hw
    scale = min(1.0, side / max(h, w))
    return np.asarray(image.resize((max(1, round(w * scale)), max(1, round(h * scale)))).convert("RGB"))


@dataclass(frozen=True)
class GenerationOptions:
    """Decoding settings. Greedy by default so runs are reproducible; ``seed`` is used only when sampling."""

    max_new_tokens: int = 128
    min_new_tokens: int = 0
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int) or not 1 <= self.max_new_tokens <= 32768:
            raise ValueError(f"max_new_tokens must be an integer from 1 to 32768, got {self.max_new_tokens!r}")
        if isinstance(self.min_new_tokens, bool) or not isinstance(self.min_new_tokens, int) or not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise ValueError(f"min_new_tokens must be an integer from 0 to max_new_tokens, got {self.min_new_tokens!r}")
        if not 0.0 < self.temperature <= 10.0:
            raise ValueError(f"temperature must be in (0, 10], got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 turns it off), got {self.top_k}")
        if not 0.5 <= self.repetition_penalty <= 3.0:
            raise ValueError(f"repetition_penalty must be in [0.5, 3], got {self.repetition_penalty}")


def generate(
    lvlm: LVLM,
    visuals: VisualTokens,
    prompt: str,
    config: MergeConfig | None = None,
    options: GenerationOptions | None = None,
    system_prompt: str | None = None,
    per_item: bool = False,
    on_token: TokenCallback | None = None,
    return_logits: bool = False,
) -> Generation:
    """Answer ``prompt`` about ``visuals``: one prompt with every item, or one prompt per item (``per_item``).

    ``on_token(step, total, new_ids)`` is called after each generated token with the new token id of
    every prompt; an exception raised there stops generation and leaves the model as it was.
    """
    if visuals.model_id != lvlm.model_id:
        raise ValueError(
            "these visual tokens were encoded by another model (or dtype or device): encode them again with this one"
        )
    if per_item:
        requests = [((item,), prompt) for item in visuals.items]
    else:
        requests = [(visuals.items, prompt)]
    return generate_batch(lvlm, requests, config or visuals.config, options, system_prompt, on_token, return_logits, visuals.vit_s)


def generate_batch(
    lvlm: LVLM,
    requests: Sequence[tuple[Sequence[VisualItem], str]],
    config: MergeConfig | None = None,
    options: GenerationOptions | None = None,
    system_prompt: str | None = None,
    on_token: TokenCallback | None = None,
    return_logits: bool = False,
    vit_s: float = 0.0,
) -> Generation:
    """Generate for several (visual items, prompt) pairs at once, left-padded into one batch."""
    config = config or MergeConfig()
    options = options or GenerationOptions()
    backbone = lvlm.backbone
    config.check_depths(backbone.vit_depth, backbone.llm_depth)
    if not requests:
        raise ValueError("nothing to generate: give at least one prompt")
    for items, prompt in requests:
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError("the prompt is empty: write a question or instruction for the model")
        if not items:
            raise ValueError("no visual inputs: encode at least one image or video for every prompt")
    inputs = build_inputs(lvlm, requests, system_prompt)
    _check_context(lvlm, inputs["input_ids"].shape[1], options.max_new_tokens)
    stage2 = Stage2(backbone, config, inputs["mm_token_type_ids"] != 0) if config.stage2_active else None
    clock = _Clock(options.max_new_tokens, on_token, lvlm.device)
    kwargs = dict(
        max_new_tokens=options.max_new_tokens,
        min_new_tokens=options.min_new_tokens,
        do_sample=options.do_sample,
        return_dict_in_generate=True,
        output_logits=return_logits,
        stopping_criteria=[clock],
        pad_token_id=lvlm.pad_token_id,
    )
    if options.do_sample:
        kwargs.update(temperature=options.temperature, top_p=options.top_p, top_k=options.top_k)
    else:
        kwargs.update(temperature=None, top_p=None, top_k=None)
    if options.repetition_penalty != 1.0:
        kwargs["repetition_penalty"] = options.repetition_penalty
    rng = torch.random.fork_rng(devices=[lvlm.device] if lvlm.device.type == "cuda" else []) if options.do_sample else nullcontext()
    with rng, torch.inference_mode(), installed(backbone, stage2):
        if options.do_sample:
            torch.manual_seed(options.seed)
        clock.start()
        out = lvlm.model.generate(**backbone.generate_inputs(inputs), **kwargs)
        clock.stop()
    prompt_length = inputs["input_ids"].shape[1]
    new_ids = out.sequences[:, prompt_length:]
    ids = [_trim(row.tolist(), lvlm.eos_token_ids, lvlm.pad_token_id) for row in new_ids]
    texts = [lvlm.processor.tokenizer.decode(row, skip_special_tokens=True) for row in ids]
    stats, traces = [], []
    for b, (items, _) in enumerate(requests):
        after2 = stage2.record.visual_after[b] if stage2 is not None else sum(item.tokens_kept for item in items)
        stats.append(
            {
                "visual_tokens": {
                    "vit_input": sum(item.patches for item in items),
                    "vit_output": sum(item.tokens_kept for item in items),
                    "llm_input": sum(item.tokens_kept for item in items),
                    "llm_after_stage2": after2,
                    "llm_input_full": sum(item.tokens_full for item in items),
                },
                "prompt_tokens": int(inputs["attention_mask"][b].sum()),
                "new_tokens": len(ids[b]),
                "vit_s": vit_s,
                "prefill_s": clock.prefill_s,
                "decode_s": clock.decode_s,
                "config": config.to_dict(),
            }
        )
        traces.append(_item_traces(items, stage2.record.visual_status[b] if stage2 is not None else None))
    logits = None
    if return_logits:
        logits = [torch.stack([step[b] for step in out.logits]).float().cpu() for b in range(len(requests))]
    return Generation(texts=texts, ids=ids, stats=stats, traces=traces, logits=logits)


def _check_context(lvlm: LVLM, prompt_tokens: int, max_new_tokens: int) -> None:
    context = lvlm.model.config.text_config.max_position_embeddings
    if prompt_tokens + max_new_tokens > context:
        raise ValueError(
            f"the prompt takes {prompt_tokens} tokens and max_new_tokens is {max_new_tokens}, but this model's "
            f"context holds {context}: shorten the prompt, use fewer or smaller images, merge more, "
            "or lower max_new_tokens"
        )


def build_inputs(
    lvlm: LVLM, requests: Sequence[tuple[Sequence[VisualItem], str]], system_prompt: str | None = None
) -> dict[str, Any]:
    """Tokenized, left-padded prompts whose placeholders match the kept visual tokens, with positions.

    Positions are computed for the full (unreduced) prompt, then the placeholders of tokens removed
    by stage 1 are dropped together with their positions, so every kept token keeps its M-RoPE slot.
    Items with a ``layout`` get one placeholder per kept feature from the start (1D positions).
    """
    tokenizer = lvlm.processor.tokenizer
    texts = [_expand(lvlm, chat_text(lvlm, items, prompt, system_prompt), items) for items, prompt in requests]
    encoded = tokenizer(texts, padding=True, padding_side="left", return_tensors="pt", add_special_tokens=False)
    input_ids = encoded["input_ids"].to(lvlm.device)
    attention_mask = encoded["attention_mask"].to(lvlm.device)
    token_types = (input_ids == lvlm.model.config.image_token_id).long()
    # InternVL has no video token: its video frames are image placeholders.
    video_id = getattr(lvlm.model.config, "video_token_id", None)
    if video_id is not None:
        token_types += 2 * (input_ids == video_id).long()
    all_items = [item for items, _ in requests for item in items]
    images = [item for item in all_items if item.kind == "image"]
    videos = [item for item in all_items if item.kind == "video"]
    model_kwargs: dict[str, Any] = {"attention_mask": attention_mask, "mm_token_type_ids": token_types}
    if images:
        model_kwargs["image_grid_thw"] = torch.tensor([item.grid_thw for item in images], device=lvlm.device)
    if videos:
        model_kwargs["video_grid_thw"] = torch.tensor([item.grid_thw for item in videos], device=lvlm.device)
        model_kwargs["second_per_grid_ts"] = torch.tensor([item.second_per_grid for item in videos], device=lvlm.device)
    position_ids = lvlm.backbone.position_ids(input_ids, model_kwargs)
    tensors = {"input_ids": input_ids, "attention_mask": attention_mask, "mm_token_type_ids": token_types}
    if any(item.layout is None and item.tokens_kept < item.tokens_full for item in all_items):
        tensors, position_ids = _drop_removed(tensors, position_ids, requests, lvlm.pad_token_id)
    encoder_outputs = {}
    for kind, kind_items in lvlm.backbone.feature_kinds(all_items).items():
        if kind_items:
            features = tuple(item.features for item in kind_items)
            deepstack = tuple(zip(*(item.deepstack for item in kind_items)))
            encoder_outputs[kind] = lvlm.backbone.encoder_output(features, deepstack)
    return {**tensors, "position_ids": position_ids, "mm_encoder_outputs": encoder_outputs}


def chat_text(lvlm: LVLM, items: Sequence[VisualItem], prompt: str, system_prompt: str | None = None) -> str:
    """The chat-template prompt with one placeholder per image or video, before expansion."""
    content = [{"type": item.kind} for item in items] + [{"type": "text", "text": prompt}]
    messages = [{"role": "user", "content": content}]
    if system_prompt:
        messages.insert(0, {"role": "system", "content": [{"type": "text", "text": system_prompt}]})
    return lvlm.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def _expand(lvlm: LVLM, text: str, items: Sequence[VisualItem]) -> str:
    """Replace each image/video placeholder with the processor's own expansion for the full grid.

    The processor does the substitution, so any rewriting it does around a placeholder (Qwen3-VL
    drops the template's outer vision_start/vision_end around a video from transformers 5.25 on)
    matches what vanilla ``transformers`` feeds the model.
    """
    processor = lvlm.processor
    tokens = {"image": processor.image_token, "video": processor.video_token}
    found = re.findall("|".join(re.escape(token) for token in tokens.values()), text)
    produced = {kind: found.count(token) for kind, token in tokens.items()}
    wanted = {kind: sum(item.kind == kind for item in items) for kind in tokens}
    if produced != wanted:
        raise ValueError(
            f"the chat template produced {produced['image']} image and {produced['video']} video placeholders "
            f"for {wanted['image']} images and {wanted['video']} videos; check the model's chat_template"
        )
    replacements: dict[str, list[str]] = {"image": [], "video": []}
    for item in items:
        index = len(replacements[item.kind])
        if item.layout is not None:
            replacements[item.kind].append(lvlm.backbone.item_placeholders(processor, item, index))
        else:
            replacements[item.kind].append(placeholder_text(processor, item))
    expanded, _ = processor.get_text_with_replacements(
        [text], images_replacements=replacements["image"], videos_replacements=replacements["video"]
    )
    return expanded[0]


def placeholder_text(processor, item: VisualItem) -> str:
    """What the model's processor puts in the prompt for this image or video (Qwen3-VL adds frame times).

    Items with a layout get their backbone's ``item_placeholders`` instead.
    """
    grid = torch.tensor([item.grid_thw])
    if item.kind == "image":
        return processor.replace_image_token({"image_grid_thw": grid}, 0)
    from transformers.video_utils import VideoMetadata

    metadata = VideoMetadata(**item.video_metadata)
    return processor.replace_video_token({"video_grid_thw": grid, "video_metadata": [metadata]}, 0)


def _drop_removed(tensors, position_ids, requests, pad_token_id):
    """Remove the placeholder columns of tokens stage 1 took out, then left-pad the rows again."""
    input_ids = tensors["input_ids"]
    keep = tensors["attention_mask"].bool().clone()
    visual = tensors["mm_token_type_ids"] != 0
    for b, (items, _) in enumerate(requests):
        flags = []
        for item in items:
            kept = torch.zeros(item.tokens_full, dtype=torch.bool, device=input_ids.device)
            kept[item.kept_groups.to(input_ids.device)] = True
            flags.append(kept)
        keep[b, visual[b]] = torch.cat(flags)
    width = int(keep.sum(-1).max())
    batch = input_ids.shape[0]
    out = {
        "input_ids": torch.full((batch, width), pad_token_id, dtype=input_ids.dtype, device=input_ids.device),
        "attention_mask": torch.zeros((batch, width), dtype=tensors["attention_mask"].dtype, device=input_ids.device),
        "mm_token_type_ids": torch.zeros((batch, width), dtype=tensors["mm_token_type_ids"].dtype, device=input_ids.device),
    }
    positions = torch.zeros((position_ids.shape[0], batch, width), dtype=position_ids.dtype, device=input_ids.device)
    for b in range(batch):
        columns = torch.nonzero(keep[b]).squeeze(-1)
        start = width - columns.numel()
        for name in out:
            out[name][b, start:] = tensors[name][b, columns]
        positions[:, b, start:] = position_ids[:, b, columns]
    return out, positions


def _item_traces(items: Sequence[VisualItem], stage2_status: torch.Tensor | None) -> list[ItemTrace]:
    if stage2_status is None:
        return [item.trace for item in items]
    traces, start = [], 0
    for item in items:
        codes = stage2_status[start : start + item.tokens_kept]
        start += item.tokens_kept
        traces.append(item.trace.with_stage2(item.kept_groups, codes))
    return traces


def _trim(ids: list[int], eos: set[int], pad: int) -> list[int]:
    out = []
    for token in ids:
        if token in eos:
            break
        out.append(token)
    return out


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Clock:
    """A stopping criterion that never stops: it times prefill and decode and reports each token."""

    def __init__(self, total: int, on_token: TokenCallback | None, device: torch.device) -> None:
        self.total = total
        self.on_token = on_token
        self.device = device
        self.steps = 0
        self.t0 = self.t_first = self.t_end = 0.0

    def start(self) -> None:
        self.t0 = time.perf_counter()

    def stop(self) -> None:
        _synchronize(self.device)
        self.t_end = time.perf_counter()

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        if self.steps == 0:
            _synchronize(self.device)
            self.t_first = time.perf_counter()
        self.steps += 1
        if self.on_token is not None:
            self.on_token(self.steps, self.total, input_ids[:, -1].tolist())
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    @property
    def prefill_s(self) -> float:
        return self.t_first - self.t0

    @property
    def decode_s(self) -> float:
        return max(0.0, self.t_end - self.t_first)
