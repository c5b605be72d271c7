"""Prompt assembly: the chat template, one placeholder per visual token, positions of the kept tokens."""

from __future__ import annotations

import re
from typing import Any, Sequence

import torch

from .loading import LVLM
from .encoding import VisualItem

Request = tuple[Sequence[VisualItem], str]


def build_inputs(lvlm: LVLM, requests: Sequence[Request], system_prompt: str | None = None) -> dict[str, Any]:
    """Tokenized, left-padded prompts whose placeholders match the kept visual tokens, with positions.

    Where the backbone's prompt holds the full token map (M-RoPE models), positions are computed for
    the full (unreduced) prompt, then the placeholders of tokens removed by stage 1 are dropped
    together with their positions, so every kept token keeps its slot. Other backbones get one
    placeholder per kept feature from the start.
    """
    backbone = lvlm.backbone
    tokenizer = lvlm.processor.tokenizer
    texts = [expand(lvlm, chat_text(lvlm, items, prompt, system_prompt), items) for items, prompt in requests]
    encoded = tokenizer(texts, padding=True, padding_side="left", return_tensors="pt", add_special_tokens=False)
    input_ids = encoded["input_ids"].to(lvlm.device)
    attention_mask = encoded["attention_mask"].to(lvlm.device)
    token_types = backbone.token_types(input_ids)
    all_items = [item for items, _ in requests for item in items]
    model_kwargs = {
        "attention_mask": attention_mask,
        "mm_token_type_ids": token_types,
        **backbone.prompt_kwargs(all_items, lvlm.device),
    }
    position_ids = backbone.position_ids(input_ids, model_kwargs)
    tensors = {"input_ids": input_ids, "attention_mask": attention_mask, "mm_token_type_ids": token_types}
    if backbone.prompt_holds_full_grid and any(item.tokens_kept < item.tokens_full for item in all_items):
        tensors, position_ids = _drop_removed(tensors, position_ids, requests, lvlm.pad_token_id)
    encoder_outputs = {}
    for kind, kind_items in backbone.feature_kinds(all_items).items():
        if kind_items:
            features = tuple(item.features for item in kind_items)
            layer_features = tuple(zip(*(item.layer_features for item in kind_items)))
            encoder_outputs[kind] = backbone.encoder_output(features, layer_features)
    return {**tensors, "position_ids": position_ids, "mm_encoder_outputs": encoder_outputs}


def chat_text(lvlm: LVLM, items: Sequence[VisualItem], prompt: str, system_prompt: str | None = None) -> str:
    """The chat-template prompt with one placeholder per image or video, before expansion."""
    content = [{"type": item.kind} for item in items] + [{"type": "text", "text": prompt}]
    messages = [{"role": "user", "content": content}]
    if system_prompt:
        messages.insert(0, {"role": "system", "content": [{"type": "text", "text": system_prompt}]})
    return lvlm.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def expand(lvlm: LVLM, text: str, items: Sequence[VisualItem]) -> str:
    """Replace each image/video placeholder with the backbone's text for that item.

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
        replacements[item.kind].append(lvlm.backbone.item_placeholders(processor, item, index))
    expanded, _ = processor.get_text_with_replacements(
        [text], images_replacements=replacements["image"], videos_replacements=replacements["video"]
    )
    return expanded[0]


def _drop_removed(tensors, position_ids, requests: Sequence[Request], pad_token_id: int):
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
