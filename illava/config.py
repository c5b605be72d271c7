"""MergeConfig: every knob of the two-stage merger, validated, plus the named presets."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from .merge import Schedule
from .methods import METHODS, method

RECYCLE_WEIGHTINGS = ("score", "mean", "paper")


@dataclass(frozen=True)
class MergeConfig:
    """How many visual tokens each stage keeps, and where.

    Layers are 0-indexed (so from 1: layer 0 has no attention before it to score with) and name the
    first layer that runs on the reduced tokens: a stage at
    layer ``k`` scores tokens with the attention of layer ``k - 1`` and prunes before layer ``k``.
    A keep ratio is the fraction of the stage's input tokens that leave it (recycled tokens
    included); with several layers the reduction is spread geometrically across them. A stage-1
    layer equal to the encoder's depth reduces at the encoder output, scored with its last block.

    ``method`` picks how a stage chooses and combines tokens: ``illava`` (attention scores, the
    discarded tokens recycled), or a baseline written from its paper: ``fastv`` (stage 2 only: drop
    by the last token's attention, nothing recycled), ``visionzip`` (stage 1 only: dominant tokens by
    attention received plus contextual tokens, each the mean of the discarded tokens most similar
    to it), ``tome`` (stage 1 only: bipartite soft matching, size-weighted averages) and ``random``
    (drop uniformly at random, nothing recycled).

    ``origin`` says where the settings came from when a library function chose them (``auto``'s
    profile entry or its fallback); it changes nothing and is reported with the stats.
    """

    stage1_layers: tuple[int, ...] = ()
    stage1_keep: float = 1.0
    stage1_recycled: int = 1
    stage2_layers: tuple[int, ...] = ()
    stage2_keep: float = 1.0
    stage2_recycled: int = 1
    recycle_weighting: str = "score"
    score_chunk: int = 256
    method: str = "illava"
    origin: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "stage1_layers", _layer_tuple("stage1_layers", self.stage1_layers))
        object.__setattr__(self, "stage2_layers", _layer_tuple("stage2_layers", self.stage2_layers))
        for name in ("stage1_keep", "stage2_keep"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name} must be a number in (0, 1], got {value!r}")
            if not 0.0 < value <= 1.0:
                raise ValueError(f"{name} must be in (0, 1] (the fraction of visual tokens kept), got {value}")
        for name in ("stage1_recycled", "stage2_recycled"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 64:
                raise ValueError(f"{name} must be an integer in [0, 64] (recycled tokens per image or sample), got {value!r}")
        if self.recycle_weighting not in RECYCLE_WEIGHTINGS:
            raise ValueError(f"recycle_weighting must be one of {RECYCLE_WEIGHTINGS}, got {self.recycle_weighting!r}")
        record = method(self.method)
        if 2 not in record.stages and self.stage2_layers:
            raise ValueError(f"method {self.method!r} merges in the vision encoder only: clear stage2_layers")
        if 1 not in record.stages and self.stage1_layers:
            raise ValueError(f"method {self.method!r} prunes in the language model only: clear stage1_layers")
        if isinstance(self.score_chunk, bool) or not isinstance(self.score_chunk, int) or not 16 <= self.score_chunk <= 65536:
            raise ValueError(f"score_chunk must be an integer in [16, 65536], got {self.score_chunk!r}")

    @property
    def stage1_active(self) -> bool:
        """Stage 1 runs (through iLLaVA's encoder loop) whenever it has layers, even at keep 1.0."""
        return bool(self.stage1_layers)

    @property
    def stage2_active(self) -> bool:
        """Stage 2 runs (through iLLaVA's decoder loop) whenever it has layers, even at keep 1.0."""
        return bool(self.stage2_layers)

    @property
    def stage1_schedule(self) -> Schedule:
        """Stage 1's tokens left after each of its layers."""
        return Schedule(self.stage1_layers, self.stage1_keep)

    @property
    def stage2_schedule(self) -> Schedule:
        """Stage 2's tokens left after each of its layers."""
        return Schedule(self.stage2_layers, self.stage2_keep)

    @property
    def scored(self) -> bool:
        """Whether the method ranks tokens by attention, so a stage must compute attention scores."""
        return METHODS[self.method].scored

    @property
    def is_off(self) -> bool:
        return not (self.stage1_active or self.stage2_active)

    def stage1_part(self) -> "MergeConfig":
        """What the vision encoder's output depends on: these settings with stage 2 off and no origin."""
        return replace(self, stage2_layers=(), stage2_keep=1.0, stage2_recycled=1, origin="")

    def check_depths(self, vit_depth: int, llm_depth: int) -> None:
        """Raise ValueError if a layer does not exist in a model with these depths."""
        for name, layers, depth, what in (
            ("stage1_layers", self.stage1_layers, vit_depth, "vision encoder"),
            ("stage2_layers", self.stage2_layers, llm_depth - 1, "language model"),
        ):
            for layer in layers:
                if not 1 <= layer <= depth:
                    raise ValueError(
                        f"{name} contains {layer}, but this model's {what} has "
                        f"{depth + (name == 'stage2_layers')} layers: use layers from 1 to {depth}"
                    )

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["stage1_layers"] = list(self.stage1_layers)
        out["stage2_layers"] = list(self.stage2_layers)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MergeConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown MergeConfig fields {unknown}; known fields are {sorted(known)}")
        return cls(**data)

    def with_(self, **changes: Any) -> "MergeConfig":
        return replace(self, **changes)


def _layer_tuple(name: str, layers: Any) -> tuple[int, ...]:
    if isinstance(layers, str):
        parts = [p for p in layers.replace(",", " ").replace("-", " ").split() if p]
        try:
            layers = [int(p) for p in parts]
        except ValueError:
            raise ValueError(f"{name} must be layer numbers like '3' or '12,16', got {layers!r}") from None
    if isinstance(layers, int) and not isinstance(layers, bool):
        layers = (layers,)
    try:
        out = tuple(layers)
    except TypeError:
        raise ValueError(f"{name} must be a list of layer numbers, got {layers!r}") from None
    for layer in out:
        if isinstance(layer, bool) or not isinstance(layer, int) or layer < 1:
            raise ValueError(f"{name} must hold integers >= 1 (layer 0 has no earlier layer to score with), got {layer!r}")
    if len(set(out)) != len(out) or list(out) != sorted(out):
        raise ValueError(f"{name} must be strictly increasing without repeats, got {list(out)}")
    return out


# Written for Qwen2.5-VL-7B (ViT depth 32, LLM depth 28) and scaled to other depths by scale_layers.
# paper-image follows the paper's Qwen2-VL setting: ViT blocks 12-15 merging to about half, then LLM
# layers 6-8 keeping 0.9 each (0.73); about a third of the visual tokens reach the later LLM layers.
# paper-video follows its video setting (early ViT blocks, one early LLM layer) at the strength of the
# paper's video headline, about 95% fewer tokens: frames repeat each other, so video tolerates more.
# fast keeps about 11%, the paper's headline "89% fewer image tokens".
PRESETS: dict[str, MergeConfig] = {
    "off": MergeConfig(),
    "paper-image": MergeConfig(stage1_layers=(13, 14, 15, 16), stage1_keep=0.5, stage2_layers=(6, 7, 8), stage2_keep=0.73),
    "paper-video": MergeConfig(stage1_layers=(4, 5, 6, 7), stage1_keep=0.25, stage2_layers=(2,), stage2_keep=0.2),
    "fast": MergeConfig(stage1_layers=(8,), stage1_keep=0.33, stage2_layers=(4,), stage2_keep=0.33),
}


def preset(
    name: str, vit_depth: int | None = None, llm_depth: int | None = None, stage2_choices: tuple[int, ...] | None = None
) -> MergeConfig:
    """A named preset; with model depths given, its layers are scaled to fit that model.

    ``stage2_choices`` are the only LLM layers stage 2 may use in that model (None: any).
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    config = PRESETS[name]
    if vit_depth is not None and llm_depth is not None:
        config = scale_layers(config, vit_depth, llm_depth, stage2_choices)
    return config


def preset_for(name: str, backbone) -> MergeConfig:
    """A named preset fitted to a loaded model's backbone adapter (its depths and usable stage-2 layers)."""
    return preset(name, backbone.vit_depth, backbone.llm_depth, backbone.stage2_choices)


def nearest_stage2_layer(layer: int, stage2_choices: tuple[int, ...] | None) -> int:
    """``layer``, or the nearest (the earlier on a tie) of ``stage2_choices`` when the model allows only some."""
    if not stage2_choices:
        return layer
    return min(stage2_choices, key=lambda choice: (abs(choice - layer), choice))


def scale_layer(layer: int, depth: int, reference: int) -> int:
    """``layer`` of a ``reference``-deep stack at the same relative depth of a ``depth``-deep one (1 to depth - 1)."""
    return min(depth - 1, max(1, round(layer * depth / reference)))


REFERENCE_VIT_DEPTH = 32
REFERENCE_LLM_DEPTH = 28


def scale_layers(
    config: MergeConfig, vit_depth: int, llm_depth: int, stage2_choices: tuple[int, ...] | None = None
) -> MergeConfig:
    """Move a preset's layers, written for Qwen2.5-VL-7B (ViT 32, LLM 28), to the same relative depth.

    Stage-2 layers then move to the nearest of ``stage2_choices`` when the model allows only some
    (a layer after a linear-attention one has no attention map to score with).
    """

    def scale(layers: tuple[int, ...], depth: int, reference: int) -> tuple[int, ...]:
        if depth == reference:
            return layers
        return tuple(sorted({scale_layer(layer, depth, reference) for layer in layers}))

    scaled = scale(config.stage2_layers, llm_depth, REFERENCE_LLM_DEPTH)
    stage2 = tuple(sorted({nearest_stage2_layer(layer, stage2_choices) for layer in scaled}))
    return replace(config, stage1_layers=scale(config.stage1_layers, vit_depth, REFERENCE_VIT_DEPTH), stage2_layers=stage2)


@dataclass(frozen=True)
class Resolution:
    """The pixel range each image is encoded within; 0 leaves that end to the model's processor.

    Fewer pixels mean fewer visual tokens: Qwen models take the range as their own ``min_pixels`` /
    ``max_pixels``, tiling models as a number of tiles or a resized input (see each backbone).
    """

    min_pixels: int = 0
    max_pixels: int = 0

    def __post_init__(self) -> None:
        for name in ("min_pixels", "max_pixels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0 (0 = the model's default), got {value!r}")
        if self.min_pixels and self.max_pixels and self.min_pixels > self.max_pixels:
            raise ValueError(f"min_pixels ({self.min_pixels}) must not exceed max_pixels ({self.max_pixels})")

    @property
    def is_default(self) -> bool:
        return not (self.min_pixels or self.max_pixels)
