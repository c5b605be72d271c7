"""The library calls behind Encode, Generate and Caption, remembered by what changes their output."""

from __future__ import annotations

import time
import weakref
from dataclasses import replace
from typing import Any, Callable, Hashable

from ..illava import GenerationOptions, LVLM, MergeConfig, VisualTokens, generate
from ..illava.trace import ItemTrace
from . import comfy_compat
from .config import MergeChoice
from .handle import LVLMHandle
from .summary import generation_summary

PROGRESS_TEXT_INTERVAL_S = 0.25
STREAM_CHARS = 2000


def merge_config(model: LVLM, choice: MergeChoice | None, kind: str) -> MergeConfig:
    """The config a node uses: the connected Merge Config's, fitted to the model, or none."""
    return choice.resolve(model, kind) if choice is not None else MergeConfig()


def encode_remembered(
    lvlm: LVLMHandle,
    choice: MergeChoice | None,
    kind: str,
    source_key: Hashable,
    run: Callable[[LVLM, MergeConfig], VisualTokens],
) -> VisualTokens:
    """``run(model, config)``, unless this model already encoded the same source with the same stage-1
    settings: then that result, carrying the new stage-2 settings (the same object when nothing changed).

    The tokens live on ComfyUI's intermediate device, as other node outputs do, so neither this memo nor
    ComfyUI's cache holds GPU memory once the weights are unloaded; Generate brings them back.
    """
    model = lvlm.acquire()
    config = merge_config(model, choice, kind)
    key = (source_key, config.stage1_part())
    visuals = lvlm.shared.encodes.get(key)
    if visuals is None:
        visuals = run(model, config).to(comfy_compat.intermediate_device())
    elif visuals.config != config:
        visuals = replace(visuals, config=config)
    lvlm.shared.encodes.put(key, visuals)
    return visuals


def sampling_options(
    max_new_tokens: int, sampling: str, temperature: float, top_p: float, top_k: int, repetition_penalty: float, seed: int
) -> GenerationOptions:
    """Decoding options; under greedy decoding the sampling knobs are left out, so they change nothing."""
    if sampling == "sample":
        return GenerationOptions(
            max_new_tokens=max_new_tokens, do_sample=True, temperature=temperature, top_p=top_p, top_k=top_k,
            repetition_penalty=repetition_penalty, seed=seed,
        )
    return GenerationOptions(max_new_tokens=max_new_tokens, repetition_penalty=repetition_penalty)


class _TokenProgress:
    """Per-token callback: Cancel check, progress bar, and the first answer streamed under the node."""

    def __init__(self, total: int, node_id: str | None, tokenizer: Any) -> None:
        self.bar = comfy_compat.progress_bar(total)
        self.node_id = node_id
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.last_text = 0.0

    def __call__(self, step: int, total: int, new_ids: list[int]) -> None:
        comfy_compat.check_interrupt()
        self.bar.update_absolute(step, total)
        self.ids.append(new_ids[0])
        now = time.monotonic()
        if now - self.last_text >= PROGRESS_TEXT_INTERVAL_S:
            self.last_text = now
            text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
            comfy_compat.send_progress_text(f"[{step} / {total}] {text[-STREAM_CHARS:]}", self.node_id)


def answer_remembered(
    lvlm: LVLMHandle,
    visuals: VisualTokens,
    prompt: str,
    choice: MergeChoice | None,
    options: GenerationOptions,
    system_prompt: str,
    per_item: bool,
    node_id: str | None,
) -> tuple[str, list[str], str, tuple[ItemTrace, ...]]:
    """(joined answer, answers, stats summary, traces), remembered per visuals object and settings."""
    model = lvlm.acquire()
    kind = "video" if any(item.kind == "video" for item in visuals.items) else "image"
    config = choice.resolve(model, kind) if choice is not None else None
    key = (id(visuals), prompt, config, options, system_prompt, per_item)
    found = lvlm.shared.answers.get(key)
    if found is not None and found[0]() is visuals:
        lvlm.finish()
        joined, texts, stats, traces = found[1]
        comfy_compat.send_progress_text("answered from memory: the same inputs ran before", node_id)
        return joined, texts, f"{stats}\n(answered from memory: the timings are those of the run that made it)", traces
    progress = _TokenProgress(options.max_new_tokens, node_id, model.processor.tokenizer)
    try:
        result = generate(model, visuals, prompt, config, options, system_prompt or None, per_item=per_item, on_token=progress)
    finally:
        lvlm.finish()
    progress.bar.update_absolute(options.max_new_tokens, options.max_new_tokens)
    texts = list(result.texts)
    new_tokens = sum(len(ids) for ids in result.ids)
    comfy_compat.send_progress_text(f"done: {new_tokens} new token{'s' if new_tokens != 1 else ''}", node_id)
    stats = f"{generation_summary(result.stats)}\nprompt: {prompt}"
    traces = tuple(trace for per_prompt in result.traces for trace in per_prompt)
    output = ("\n\n".join(texts), texts, stats, traces)
    lvlm.shared.answers.put(key, (weakref.ref(visuals), output))
    return output
