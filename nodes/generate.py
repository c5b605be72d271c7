"""Generate: answers a prompt about encoded visuals; stage 2 of iLLaVA runs inside prefill."""

from __future__ import annotations

import time
from typing import Any

from ..illava import GenerationOptions, VisualTokens, generate
from ..illava.trace import ItemTrace
from . import comfy_compat
from .config import MergeChoice
from .handle import LVLMHandle
from .summary import generation_summary

SAMPLING = ["greedy", "sample"]
PROGRESS_TEXT_INTERVAL_S = 0.25
STREAM_CHARS = 2000


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


def check_visuals(visuals: Any, model_id: str) -> VisualTokens:
    """Reject a missing input or visuals encoded by another model, saying what to connect."""
    if not isinstance(visuals, VisualTokens):
        raise ValueError("Connect Encode Image's visuals output to Generate: no visual tokens were given")
    if visuals.model_id != model_id:
        raise ValueError(
            "Encode the images with the same Load LVLM that Generate uses: these visuals come from another model, "
            "dtype or device"
        )
    return visuals


class Generate:
    """Answers the prompt about the visuals: text, one answer per image when asked, stats and the token trace."""

    CATEGORY = "iLLaVA"
    FUNCTION = "generate"
    OUTPUT_NODE = True
    RETURN_TYPES = ("STRING", "STRING", "STRING", "ILLAVA_TRACE")
    RETURN_NAMES = ("text", "texts", "stats", "trace")
    OUTPUT_IS_LIST = (False, True, False, False)
    OUTPUT_TOOLTIPS = (
        "The answer; with per_image, all answers joined by blank lines.",
        "A list with one answer per image (per_image), or the single answer.",
        "Visual tokens after each stage, prompt and new tokens, timing.",
        "Which tokens each stage kept, for Preview Retained Tokens.",
    )
    DESCRIPTION = "Greedy decoding by default, so the same inputs give the same text and re-queues are cached."

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "lvlm": ("ILLAVA_LVLM", {"tooltip": "From Load LVLM; the same one Encode Image used."}),
                "visuals": ("ILLAVA_VISUALS", {"tooltip": "From Encode Image or Encode Video."}),
                "prompt": ("STRING", {"multiline": True, "dynamicPrompts": False, "default": "Describe this image.", "tooltip": "The question or instruction about the images."}),
                "max_new_tokens": ("INT", {"default": 256, "min": 1, "max": 32768, "tooltip": "Most tokens to generate."}),
                "sampling": (SAMPLING, {"default": "greedy", "tooltip": "greedy: always the likeliest token (reproducible). sample: random, shaped by temperature / top_p / top_k and seeded."}),
                "temperature": ("FLOAT", {"default": 0.7, "min": 0.01, "max": 10.0, "step": 0.01, "tooltip": "Sampling only: lower is more focused."}),
                "top_p": ("FLOAT", {"default": 0.9, "min": 0.01, "max": 1.0, "step": 0.01, "tooltip": "Sampling only: keep the smallest set of tokens with this much probability."}),
                "top_k": ("INT", {"default": 50, "min": 0, "max": 1000, "tooltip": "Sampling only: keep the k likeliest tokens (0 = off)."}),
                "repetition_penalty": ("FLOAT", {"default": 1.0, "min": 0.5, "max": 3.0, "step": 0.01, "tooltip": "Above 1 discourages repeating tokens (greedy and sampling)."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": False, "tooltip": "Sampling only; ignored by greedy decoding."}),
                "per_image": ("BOOLEAN", {"default": False, "tooltip": "On: ask the prompt about each image separately (one answer per image). Off: one answer about all images together."}),
            },
            "optional": {
                "config": ("ILLAVA_CONFIG", {"tooltip": "Stage-2 settings; unconnected = the config Encode Image used."}),
                "system_prompt": ("STRING", {"multiline": True, "dynamicPrompts": False, "default": "", "tooltip": "Optional system message; empty = the model's default."}),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    def generate(
        self,
        lvlm: LVLMHandle,
        visuals: VisualTokens,
        prompt: str,
        max_new_tokens: int,
        sampling: str,
        temperature: float,
        top_p: float,
        top_k: int,
        repetition_penalty: float,
        seed: int,
        per_image: bool,
        config: MergeChoice | None = None,
        system_prompt: str = "",
        unique_id: str | None = None,
    ) -> dict:
        do_sample = sampling == "sample"
        options = GenerationOptions(
            max_new_tokens=max_new_tokens,
            do_sample=do_sample,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            repetition_penalty=repetition_penalty,
            seed=seed if do_sample else 0,
        )
        model = lvlm.acquire()
        check_visuals(visuals, model.model_id)
        kind = "video" if any(item.kind == "video" for item in visuals.items) else "image"
        merge = config.resolve(model, kind) if config is not None else None
        progress = _TokenProgress(max_new_tokens, unique_id, model.processor.tokenizer)
        try:
            result = generate(
                model, visuals, prompt, merge, options, system_prompt.strip() or None, per_item=per_image, on_token=progress
            )
        finally:
            lvlm.finish()
        progress.bar.update_absolute(max_new_tokens, max_new_tokens)
        texts = list(result.texts)
        joined = "\n\n".join(texts)
        stats = generation_summary(result.stats)
        comfy_compat.send_progress_text(f"generated {sum(len(ids) for ids in result.ids)} tokens", unique_id)
        traces: tuple[ItemTrace, ...] = tuple(trace for per_prompt in result.traces for trace in per_prompt)
        return {"ui": {"text": [joined], "stats": [stats]}, "result": (joined, texts, stats, traces)}
