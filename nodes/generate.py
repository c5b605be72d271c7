"""Generate: answers a prompt about encoded visuals; stage 2 of iLLaVA runs inside prefill."""

from __future__ import annotations

from typing import Any

from ..illava import VisualTokens
from ..illava.captioning.styles import CAPTION_STYLES, caption_prompt
from .config import MergeChoice
from .handle import LVLMHandle
from .run import answer_remembered, sampling_options

SAMPLING = ["greedy", "sample"]


def sampling_inputs() -> dict[str, tuple]:
    """The decoding widgets Generate and Caption share."""
    return {
        "max_new_tokens": ("INT", {"default": 256, "min": 1, "max": 32768, "tooltip": "Most tokens to generate."}),
        "sampling": (SAMPLING, {"default": "greedy", "tooltip": "greedy: always the likeliest token (reproducible; the knobs below are then unused). sample: random, shaped by temperature / top_p / top_k and seeded."}),
        "temperature": ("FLOAT", {"default": 0.7, "min": 0.01, "max": 10.0, "step": 0.01, "tooltip": "Sampling only: lower is more focused."}),
        "top_p": ("FLOAT", {"default": 0.9, "min": 0.01, "max": 1.0, "step": 0.01, "tooltip": "Sampling only: keep the smallest set of tokens with this much probability."}),
        "top_k": ("INT", {"default": 50, "min": 0, "max": 1000, "tooltip": "Sampling only: keep the k likeliest tokens (0 = off)."}),
        "repetition_penalty": ("FLOAT", {"default": 1.0, "min": 0.5, "max": 3.0, "step": 0.01, "tooltip": "Above 1 discourages repeating tokens (greedy and sampling)."}),
        "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": False, "tooltip": "Sampling only."}),
    }


def style_input(default: str) -> tuple:
    return (list(CAPTION_STYLES), {"default": default, "tooltip": "What to ask: a caption style, or question / custom to use the prompt text (custom: {kind} stands for image or video). The prompt used is shown in the stats."})


def styled_prompt(node: str, style: str, prompt: str, visuals: VisualTokens) -> str:
    """The final prompt; a style that cannot apply is an error naming the node and field to change."""
    kind = "video" if any(item.kind == "video" for item in visuals.items) else "image"
    try:
        return caption_prompt(style, prompt, kind)
    except ValueError as error:
        raise ValueError(f"{node}: {error}") from None


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
        "The prompt used, visual tokens after each stage, prompt and new tokens, timing.",
        "Which tokens each stage kept, for Preview Retained Tokens.",
    )
    DESCRIPTION = (
        "Answers a prompt (a caption style, or your own question) about encoded images or a video; stage 2 of "
        "iLLaVA runs in the language model. Greedy decoding by default: the same inputs give the same text, and "
        "re-queues are cached."
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "lvlm": ("ILLAVA_LVLM", {"tooltip": "From Load LVLM; the same one Encode Image used."}),
                "visuals": ("ILLAVA_VISUALS", {"tooltip": "From Encode Image or Encode Video."}),
                "prompt": ("STRING", {"multiline": True, "dynamicPrompts": False, "default": "Describe this image.", "tooltip": "The question (style question) or instruction (style custom); unused by the other styles."}),
                **sampling_inputs(),
                "per_image": ("BOOLEAN", {"default": False, "tooltip": "On: ask the prompt about each image separately (one answer per image). Off: one answer about all images together."}),
            },
            "optional": {
                "config": ("ILLAVA_CONFIG", {"tooltip": "Stage-2 settings; unconnected = the config Encode Image used."}),
                "system_prompt": ("STRING", {"multiline": True, "dynamicPrompts": False, "default": "", "tooltip": "Optional system message; empty = the model's default."}),
                # Last, so that saved workflows from before it keep their widget order and ask their prompt as written.
                "style": style_input("question"),
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
        style: str = "question",
        unique_id: str | None = None,
    ) -> dict:
        options = sampling_options(max_new_tokens, sampling, temperature, top_p, top_k, repetition_penalty, seed)
        check_visuals(visuals, lvlm.shared.lvlm.model_id)
        final_prompt = styled_prompt("Generate", style, prompt, visuals)
        joined, texts, stats, traces = answer_remembered(
            lvlm, visuals, final_prompt, config, options, system_prompt.strip(), per_image, unique_id
        )
        return {"ui": {"text": [joined], "stats": [stats]}, "result": (joined, texts, stats, traces)}
