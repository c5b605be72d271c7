"""Vanilla transformers runs to compare iLLaVA against, built without any iLLaVA code."""

from __future__ import annotations

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
