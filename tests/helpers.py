"""Shared test helpers: vanilla transformers runs (built without any iLLaVA code), iLLaVA runs to compare with them, and media."""

from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image

import illava
from illava.stage2 import Stage2, installed
from illava.prompt import build_inputs
from illava.resolve import placed

# One config per baseline method, each reducing where that method can.
# Where and in what precision the model fixtures run: the CPU in fp32 by default (and in CI);
# scripts/gpu_check.sh runs the contracts on CUDA in bf16 and fp16.
TEST_DEVICE = os.environ.get("ILLAVA_TEST_DEVICE", "cpu")
TEST_DTYPE = os.environ.get("ILLAVA_TEST_DTYPE", "fp32")
# How far a cached decoding step may be from a fresh forward over the same (reduced) sequence. The two run
# different shapes, so their kernels sum in different orders: in fp32 on a CPU that is rounding at 1e-6;
# in half precision on a GPU, one rounding of a logit of size ~10 (bf16 keeps 8 bits: 10 * 2**-8 = 0.04;
# fp16 keeps 11: 0.005), with a margin for the few steps it can compound over.
CACHED_ATOL = {"fp32": 1e-5, "bf16": 0.1, "fp16": 0.02}[TEST_DTYPE]


BASELINE_CONFIGS = (
    illava.MergeConfig(method="distinct", stage1_layers=(2,), stage1_keep=0.4, stage2_layers=(2,), stage2_keep=0.5),
    illava.MergeConfig(method="visionzip", stage1_layers=(2,), stage1_keep=0.4),
    illava.MergeConfig(method="tome", stage1_layers=(1, 3), stage1_keep=0.5),
    illava.MergeConfig(method="random", stage1_layers=(2,), stage1_keep=0.4, stage2_layers=(2,), stage2_keep=0.5),
    illava.MergeConfig(method="fastv", stage2_layers=(2,), stage2_keep=0.5),
    illava.MergeConfig(method="fastervlm", stage1_layers=(2,), stage1_keep=0.4),
    illava.MergeConfig(method="pyramiddrop", stage2_layers=(2,), stage2_keep=0.5),
    illava.MergeConfig(method="sparsevlm", stage2_layers=(2,), stage2_keep=0.3),
)
# The paper's own peers, each tested at its usual placement in every family (``placed_peer``).
PEERS = ("fastervlm", "pyramiddrop", "sparsevlm")


def placed_peer(lvlm: illava.LVLM, name: str) -> illava.MergeConfig:
    """Method ``name`` at its usual placement in this model, keeping a share small enough to recycle."""
    config = placed(name, lvlm.backbone)
    return config.with_(stage1_keep=0.4) if config.stage1_active else config.with_(stage2_keep=0.3)


def vanilla_generate(lvlm: illava.LVLM, requests, max_new_tokens: int = 6, system_prompt: str | None = None):
    """``processor(...)`` + ``model.generate(...)`` for [(images, prompt), ...]; returns (new ids, logits)."""
    processor = lvlm.processor
    texts, flat = [], []
    for images, prompt in requests:
        content = [{"type": "image"} for _ in images] + [{"type": "text", "text": prompt}]
        messages = [{"role": "user", "content": content}]
        if system_prompt:
            messages.insert(0, {"role": "system", "content": [{"type": "text", "text": system_prompt}]})
        texts.append(processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))
        flat.extend(images)
    inputs = processor(text=texts, images=flat, return_tensors="pt", padding=True, padding_side="left")
    return greedy_generate(lvlm, inputs, max_new_tokens)


def greedy_generate(lvlm: illava.LVLM, inputs, max_new_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Vanilla greedy ``model.generate(...)`` from processor inputs; returns (new ids, logits)."""
    out = lvlm.model.generate(
        **inputs,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        return_dict_in_generate=True,
        output_logits=True,
        pad_token_id=lvlm.pad_token_id,
    )
    new = out.sequences[:, inputs["input_ids"].shape[1] :]
    logits = torch.stack(out.logits, dim=1)
    return new, logits


def vanilla_media_generate(
    lvlm: illava.LVLM,
    requests,
    video=None,
    max_new_tokens: int = 6,
    nested_images: bool = False,
    video_kwargs: dict | None = None,
):
    """``processor(...)`` + ``model.generate(...)`` for [(images, prompt), ...], a video following the images
    of each prompt; returns (new ids, logits, processor inputs).

    nested_images: pass each prompt's images as one list (as LLaVA-OneVision batches them), not one flat list.
    video_kwargs: extra processor arguments when there is a video.
    """
    processor = lvlm.processor
    texts, pixels = [], []
    for images, prompt in requests:
        content = [{"type": "image"} for _ in images] + ([{"type": "video"}] if video is not None else [])
        messages = [{"role": "user", "content": content + [{"type": "text", "text": prompt}]}]
        texts.append(processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))
        if nested_images:
            pixels.append(list(images))
        else:
            pixels.extend(images)
    kwargs = {"images": pixels} if any(images for images, _ in requests) else {}
    if video is not None:
        kwargs.update(videos=[video.pixels], **(video_kwargs or {}))
    inputs = processor(text=texts, return_tensors="pt", padding=True, padding_side="left", **kwargs)
    return *greedy_generate(lvlm, inputs, max_new_tokens), inputs


def illava_generate(lvlm, requests, config, max_new_tokens: int = 6, **kwargs):
    """iLLaVA's encode + generate_batch for [(images, prompt), ...]."""
    batch = []
    for images, prompt in requests:
        visuals = illava.encode(lvlm, images, config)
        batch.append((visuals.items, prompt))
    options = illava.GenerationOptions(max_new_tokens=max_new_tokens)
    return illava.generate_batch(lvlm, batch, config, options, return_logits=True, **kwargs)


def illava_media_encode(lvlm: illava.LVLM, images, config, video=None):
    """``illava.encode`` of a prompt's images and (already sampled, 2 fps) video."""
    video_pixels = video.pixels if video is not None else None
    return illava.encode(lvlm, images or None, config, video=video_pixels, video_fps=2, fps=2)


def illava_media_generate(lvlm: illava.LVLM, requests, config, video=None, max_new_tokens: int = 6):
    """iLLaVA's encode + generate_batch for [(images, prompt), ...], each prompt with the video when given."""
    batch = [(illava_media_encode(lvlm, images, config, video).items, prompt) for images, prompt in requests]
    options = illava.GenerationOptions(max_new_tokens=max_new_tokens)
    return illava.generate_batch(lvlm, batch, config, options, return_logits=True)


def assert_equals_vanilla(result, expected_ids: torch.Tensor, expected_logits: torch.Tensor) -> None:
    """Every row of iLLaVA's ``result`` has vanilla's ids (up to where it stopped) and, bit for bit, its logits."""
    for b in range(expected_ids.shape[0]):
        got = torch.tensor(result.ids[b])
        assert torch.equal(got, expected_ids[b, : got.numel()])
        assert torch.equal(result.logits[b], expected_logits[b])


def assert_cached_decoding_equals_a_fresh_forward(
    lvlm: illava.LVLM, images, video, config, visual_ids: list[int], prompts, steps: int = 6
) -> None:
    """iLLaVA's cached decoding gives the logits of one uncached forward over the reduced prompt plus the
    generated ids, with the same stage 2 installed.

    The first of ``prompts`` whose ``steps`` new ids hold no visual token (``visual_ids``) is compared: a
    generated placeholder id would count as visual in the fresh forward.
    """
    visual = torch.tensor(visual_ids)
    for prompt in prompts:
        result = illava_media_generate(lvlm, [(images, prompt)], config, video, steps)
        if len(result.ids[0]) == steps and not torch.isin(torch.tensor(result.ids[0]), visual).any():
            break
    assert len(result.ids[0]) == steps and not torch.isin(torch.tensor(result.ids[0]), visual).any(), (
        "no prompt decoded cleanly"
    )
    inputs = build_inputs(lvlm, [(illava_media_encode(lvlm, images, config, video).items, prompt)])
    n = inputs["input_ids"].shape[1]
    ids = torch.cat([inputs["input_ids"], torch.tensor([result.ids[0][:-1]])], dim=1)
    fresh = lvlm.backbone.generate_inputs({**inputs, "input_ids": ids, "attention_mask": torch.ones_like(ids)})
    stage2 = Stage2(lvlm.backbone, config, torch.isin(ids, visual), score_position=n - 1)
    with installed(lvlm.backbone, stage2):
        logits = lvlm.model(**fresh, position_ids=torch.arange(ids.shape[1])[None], use_cache=False).logits[0, -steps:]
    torch.testing.assert_close(result.logits[0], logits, rtol=0, atol=CACHED_ATOL)
    tokens = result.stats[0]["visual_tokens"]
    assert (tokens["llm_input"] < tokens["llm_input_full"]) == config.stage1_active
    assert (tokens["llm_after_stage2"] < tokens["llm_input"]) == config.stage2_active


def assert_alone_equals_batched(lvlm: illava.LVLM, first, second, config) -> None:
    """Request ``first`` gives the same ids, logits and token counts alone as after ``second`` in a batch."""
    alone = illava_media_generate(lvlm, [first], config)
    batched = illava_media_generate(lvlm, [second, first], config)
    assert batched.ids[1] == alone.ids[0]
    torch.testing.assert_close(batched.logits[1][: alone.logits[0].shape[0]], alone.logits[0], rtol=0, atol=1e-4)
    assert batched.stats[1]["visual_tokens"] == alone.stats[0]["visual_tokens"]


def assert_baseline_method_runs(lvlm: illava.LVLM, visuals, prompt: str, config) -> None:
    """A baseline method's config reduces the tokens at exactly the stages it names."""
    result = illava.generate(lvlm, visuals, prompt, config, illava.GenerationOptions(max_new_tokens=2))
    tokens = result.stats[0]["visual_tokens"]
    assert (tokens["llm_input"] < tokens["llm_input_full"]) == bool(config.stage1_layers)
    assert (tokens["llm_after_stage2"] < tokens["llm_input"]) == bool(config.stage2_layers)


def random_image(seed: int, height: int, width: int) -> Image.Image:
    """An image of uniform random pixels."""
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((height, width, 3)) * 255).astype(np.uint8))


def write_video(path, frames: int = 20, height: int = 112, width: int = 140, fps: int = 10) -> str:
    """An MP4 of a yellow square moving right over a dark red background, encoded with PyAV."""
    import av

    container = av.open(str(path), "w")
    stream = container.add_stream("mpeg4", rate=fps)
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    for i in range(frames):
        image = np.zeros((height, width, 3), np.uint8)
        image[..., 0] = 60
        x = (5 + i * 4) % (width - 30)
        image[20:50, x : x + 30] = (255, 255, 0)
        for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return str(path)


def extended_inputs(lvlm, requests, generated):
    """The reduced prompt followed by the generated tokens, with positions continuing by one."""
    inputs = build_inputs(lvlm, requests)
    ids = torch.cat([inputs["input_ids"], generated], dim=1)
    steps = generated.shape[1]
    mask = torch.cat([inputs["attention_mask"], torch.ones_like(generated)], dim=1)
    types = torch.cat([inputs["mm_token_type_ids"], torch.zeros_like(generated)], dim=1)
    positions = inputs["position_ids"]
    more = positions[..., -1:] + torch.arange(1, steps + 1)
    positions = torch.cat([positions, more], dim=-1)
    return inputs, dict(
        input_ids=ids,
        attention_mask=mask,
        mm_token_type_ids=types,
        position_ids=positions,
        mm_encoder_outputs=inputs["mm_encoder_outputs"],
        use_cache=False,
    )


def cached_and_fresh_logits(lvlm: illava.LVLM, images, config, prompts, steps: int):
    """Qwen: the logits of iLLaVA's cached decoding of ``images[:2]``, and those of one uncached forward over
    the reduced prompt plus the generated ids with the same stage 2 installed; also that stage 2 (None when
    off) and the prompt's inputs.

    The first of ``prompts`` that decodes ``steps`` ids without stopping or emitting a placeholder id is
    used: random weights can emit the end token early, or a placeholder that would read as an image when
    the answer is fed back.
    """
    placeholders = {lvlm.model.config.image_token_id, lvlm.model.config.video_token_id}
    for prompt in prompts:
        requests = [([images[0], images[1]], prompt)]
        result = illava_generate(lvlm, requests, config, max_new_tokens=steps)
        if len(result.ids[0]) == steps and not placeholders & set(result.ids[0]):
            break
    assert len(result.ids[0]) == steps and not placeholders & set(result.ids[0]), "no prompt decoded cleanly"
    visuals = illava.encode(lvlm, requests[0][0], config)
    inputs, fresh = extended_inputs(lvlm, [(visuals.items, requests[0][1])], torch.tensor([result.ids[0][:-1]]))
    stage2 = None
    if config.stage2_active:
        stage2 = Stage2(lvlm.backbone, config, fresh["mm_token_type_ids"] != 0, score_position=inputs["input_ids"].shape[1] - 1)
    with installed(lvlm.backbone, stage2):
        logits = lvlm.model(**fresh).logits[0, -steps:]
    return result.logits[0], logits, stage2, inputs
