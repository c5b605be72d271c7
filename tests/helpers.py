"""Vanilla transformers runs to compare iLLaVA against, built without any iLLaVA code."""

from __future__ import annotations

import numpy as np
import torch

import illava


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


def illava_generate(lvlm, requests, config, max_new_tokens: int = 6, **kwargs):
    """iLLaVA's encode + generate_batch for [(images, prompt), ...]."""
    batch = []
    for images, prompt in requests:
        visuals = illava.encode(lvlm, images, config)
        batch.append((visuals.items, prompt))
    options = illava.GenerationOptions(max_new_tokens=max_new_tokens)
    return illava.generate_batch(lvlm, batch, config, options, return_logits=True, **kwargs)


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
