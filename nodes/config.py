"""iLLaVA Merge Config: auto at a budget, a paper preset, or every MergeConfig knob, checked when queued."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..illava import PRESETS, LVLM, MergeConfig
from ..illava.budget import DEFAULT_BUDGET, check_budget
from ..illava.config import RECYCLE_WEIGHTINGS
from ..illava.cost import TYPICAL_TEXT_TOKENS
from ..illava.methods import METHODS
from ..illava.resolve import resolve, typical_estimate
from . import comfy_compat

# Menu label -> library choice; "auto" uses the model's merge profile at the budget, a method's name that method
# at its usual placement with its work solved for the budget (to compare methods at matched work), "custom" the knobs.
PRESET_CHOICES = {
    "auto": "auto", "off": "off", "paper image": "paper-image", "paper video": "paper-video", "fast": "fast",
    **{name: name for name in METHODS}, "custom": None,
}
CUSTOM_DEFAULTS = PRESETS["paper-image"]
NODE_NAME = "iLLaVA Merge Config"


@dataclass(frozen=True)
class MergeChoice:
    """What the config node outputs: ``auto`` at a budget, a named preset (scaled to the model when used)
    or a custom config.

    ``auto`` takes the loaded model's merge profile at the budget, for the kind of input being encoded,
    or the paper preset at that budget when the model has none. Preset layers are written for
    Qwen2.5-VL-7B; ``resolve`` moves them to the same relative depth of the loaded model. Custom layers
    are used as written and checked against the model.
    """

    preset_name: str | None
    config: MergeConfig
    budget: float = DEFAULT_BUDGET

    def resolve(self, lvlm: LVLM, kind: str = "image") -> MergeConfig:
        """The config for this model and kind of input; a layer past the model's depth is an error naming
        Merge Config's field to change."""
        config = self.config if self.preset_name is None else resolve(self.preset_name, self.budget, lvlm, kind)
        try:
            config.check_depths(lvlm.backbone.vit_depth, lvlm.backbone.llm_depth)
        except ValueError as error:
            raise ValueError(f"{NODE_NAME}: {error} (the loaded model is {lvlm.path.name})") from None
        return config


def readout(choice: MergeChoice, model, name: str) -> str:
    """What ``choice`` buys on ``model`` (a loaded ``LVLM`` or a ``describe.ModelOutline`` named ``name``) for a
    typical image and a 16-frame video: its work and predicted speedup, its settings and where they came from.
    Raises ValueError naming the field to change."""
    preset = choice.preset_name
    lead = f"{preset} at budget {choice.budget:.2f}" if _spends_budget(preset) else (preset or "custom")
    lines = [f"{lead} on {name}:"]
    settings = []
    for kind, what in (("image", "1024x768 image"), ("video", "16-frame video")):
        config = choice.resolve(model, kind)
        estimate = typical_estimate(config, model, kind)
        less = f"about {1 / estimate.work:.1f}x less work on the picture" if estimate.work < 0.995 else "no work saved"
        lines.append(f"{what}: work {estimate.work:.2f}, {less}; estimated ViT + prefill speedup {estimate.speedup:.1f}x "
                     f"with a {TYPICAL_TEXT_TOKENS}-token prompt")
        text = settings_text(config, model.backbone.vit_depth)
        settings.append(f"{kind}: {text}" + (f" ({config.origin})" if config.origin else ""))
    return "\n".join(lines + settings)


def _spends_budget(name: str | None) -> bool:
    """Whether choice ``name`` is fitted to a budget (auto and the methods) rather than fixed (presets, custom)."""
    return name == "auto" or name in METHODS


def settings_text(config: MergeConfig, vit_depth: int) -> str:
    """E.g. 'stage 1 before encoder block 1 keeps 24% | stage 2 before LLM layer 1 keeps 50%'; a stage-1 layer at
    the encoder's depth reads 'at the encoder output'."""
    parts = []
    for stage, layers, keep, where in ((1, config.stage1_layers, config.stage1_keep, "encoder block"),
                                       (2, config.stage2_layers, config.stage2_keep, "LLM layer")):
        if layers:
            at = f"{layers[0]}" if len(layers) == 1 else f"{layers[0]}-{layers[-1]}"
            place = "at the encoder output" if stage == 1 and layers == (vit_depth,) else f"before {where} {at}"
            # A keep ratio below 1% still keeps tokens: say how many hundredths, not 0%.
            share = f"{keep:.0%}" if keep >= 0.01 else f"{keep:.2%}"
            parts.append(f"stage {stage} {place} keeps {share}")
    method = "" if config.method == "illava" else f" ({config.method})"
    return (" | ".join(parts) or "no merging") + method


def build_choice(preset: str = "custom", budget: float = DEFAULT_BUDGET, **knobs: Any) -> MergeChoice:
    """The node's output for these widget values; the knobs a preset ignores are not read at all.
    Raises ValueError naming the node and the field to change."""
    try:
        if preset not in PRESET_CHOICES:
            raise ValueError(f"preset must be one of {', '.join(PRESET_CHOICES)}; got {preset!r}")
        name = PRESET_CHOICES[preset]
        if _spends_budget(name):
            return MergeChoice(name, MergeConfig(), check_budget(budget))
        if name is not None:
            return MergeChoice(name, PRESETS[name])
        return MergeChoice(None, MergeConfig.from_dict({**CUSTOM_DEFAULTS.to_dict(), **knobs}))
    except ValueError as error:
        raise ValueError(f"{NODE_NAME}: {error}") from None


def _layers_text(layers: tuple[int, ...]) -> str:
    return ",".join(str(layer) for layer in layers)


class MergeConfigNode:
    """Chooses how many visual tokens iLLaVA keeps in the vision encoder (stage 1) and the LLM (stage 2)."""

    CATEGORY = "iLLaVA"
    FUNCTION = "build"
    RETURN_TYPES = ("ILLAVA_CONFIG",)
    RETURN_NAMES = ("config",)
    OUTPUT_TOOLTIPS = ("The merge settings, for Encode Image (stage 1) and Generate (stage 2).",)
    DESCRIPTION = (
        "auto spends the budget's share of the work on the picture (every vision-encoder and LLM layer counted) "
        "with the settings calibrated for the loaded model (iLLaVA Calibrate), or the paper preset scaled to the "
        "budget when it has none, and says which on Encode. A method's name (illava, fastv, fastervlm, "
        "pyramiddrop, sparsevlm, ...) places that method as its paper does, spending the same budget, to compare "
        "methods at the same work. Named presets are written for Qwen2.5-VL-7B and scaled to the loaded model's "
        "depth; the knobs below apply only with preset = custom, where layers are used exactly as written."
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        d = CUSTOM_DEFAULTS
        return {
            "required": {
                "preset": (list(PRESET_CHOICES), {"default": "auto", "tooltip": "auto: the loaded model's calibrated settings at the budget (the paper preset until it is calibrated). off: no merging. paper image / paper video: the paper's settings. fast: about 11% of the visual tokens reach the late LLM layers. illava ... sparsevlm: that method at its usual placement, its work solved for the budget, to compare methods at the same work (fastervlm, pyramiddrop and sparsevlm are the paper's own peers). custom: use the knobs below."}),
                "stage1_layers": ("STRING", {"default": _layers_text(d.stage1_layers), "tooltip": "Vision-encoder blocks that merge tokens, each the first block that runs on fewer tokens, e.g. '13,14,15,16' (from 1, increasing, at most the encoder's depth; empty = no stage 1). Custom only."}),
                "stage1_keep": ("FLOAT", {"default": d.stage1_keep, "min": 0.01, "max": 1.0, "step": 0.01, "tooltip": "Fraction of visual tokens that leave the vision encoder (recycled tokens included). Custom only."}),
                "stage1_recycled": ("INT", {"default": d.stage1_recycled, "min": 0, "max": 64, "tooltip": "Tokens per image that absorb the discarded ones instead of dropping them. Custom only."}),
                "stage2_layers": ("STRING", {"default": _layers_text(d.stage2_layers), "tooltip": "LLM layers before which visual tokens are pruned, e.g. '6,7,8' (from 1, increasing, below the LLM's depth; empty = no stage 2). Custom only."}),
                "stage2_keep": ("FLOAT", {"default": d.stage2_keep, "min": 0.01, "max": 1.0, "step": 0.01, "tooltip": "Fraction of the visual tokens entering the LLM that reach its later layers. Custom only."}),
                "stage2_recycled": ("INT", {"default": d.stage2_recycled, "min": 0, "max": 64, "tooltip": "Tokens per prompt that absorb the pruned ones in the LLM. Custom only."}),
                "recycle_weighting": (list(RECYCLE_WEIGHTINGS), {"default": d.recycle_weighting, "tooltip": "How discarded tokens are averaged into recycled ones: by attention score, plain mean, or as in the paper's code. Custom only."}),
                "score_chunk": ("INT", {"default": d.score_chunk, "min": 16, "max": 65536, "tooltip": "Rows scored at once in the vision encoder: lower saves memory on large images. Custom only."}),
                # Last, so that saved workflows from before it keep their widget order.
                "method": (list(METHODS), {"default": d.method, "tooltip": "illava, or a peer to compare with: fastv, pyramiddrop, sparsevlm (LLM layers only), fastervlm, visionzip (encoder output: set stage1_layers to the encoder depth), tome (merging in every listed ViT block), random. Custom only; pick a method as the preset to place it for you."}),
            },
            # Optional and after method, so that saved workflows and API prompts from before it still load.
            "optional": {
                "budget": ("FLOAT", {"default": DEFAULT_BUDGET, "min": 0.01, "max": 1.0, "step": 0.01, "tooltip": "auto and the methods: the share of the work on the picture that remains, every vision-encoder and LLM layer counted (0.33 = about three times less)."}),
            },
        }

    @classmethod
    def IS_CHANGED(cls, preset: str = "auto", **_: Any) -> str:
        """auto re-runs after Calibrate writes a profile, and with it every node it feeds."""
        return comfy_compat.profile_store_state() if preset == "auto" else ""

    def build(self, preset: str, **knobs: Any) -> tuple[MergeChoice]:
        return (build_choice(preset, **knobs),)
