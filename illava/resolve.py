"""One way to turn a choice and a budget into merge settings: the CLI, the nodes, the Ray driver and the
accuracy harness all call ``resolve``.

A choice is ``auto`` (the model's merge profile at the budget, else iLLaVA's paper preset scaled to the
budget), ``off``, a named preset (fixed settings, scaled to the model's depths), or a method's name (its
usual placement, ``methods.PLACEMENTS``, with its keep ratio solved so that its work meets the budget).
``model`` is anything with the model's ``backbone``, ``processor``, ``profile`` and ``profile_note``:
a loaded ``LVLM`` or a ``describe.ModelOutline``.
"""

from __future__ import annotations

from dataclasses import replace

from .budget import Fitted, check_budget, fit
from .config import PRESETS, MergeConfig, nearest_stage2_layer, preset_for, scale_layer
from .cost import TYPICAL_TEXT_TOKENS, Estimate, cost_model
from .methods import METHODS, method
from .profiles import KINDS

# Where the LLM-side peers prune in their papers' model (LLaVA-1.5-7B, 32 layers), as the first layers that
# run on fewer tokens: FastV after layer 2 (K = 2); PyramidDrop at the start of its stages 2-4; SparseVLM
# after its layers 2, 6 and 15 (0-indexed), whose attention it scores with.
LLM_PLACEMENTS = {"llm-early": (2,), "llm-pyramid": (8, 16, 24), "llm-sparse": (3, 7, 16)}
PEERS_LLM_DEPTH = 32


def choices() -> tuple[str, ...]:
    """Every choice ``resolve`` takes: auto, the presets, then the methods."""
    return ("auto", *PRESETS, *(name for name in METHODS if name not in PRESETS))


def resolve(choice: str, budget: float, model, kind: str = "image") -> MergeConfig:
    """The settings ``choice`` means for ``model`` and ``kind`` of input at ``budget`` (a work share); the
    result's ``origin`` says where they came from and what they cost."""
    budget = check_budget(budget)
    _check_kind(kind)
    if choice == "auto":
        return auto_config(model, budget, kind)
    if choice in PRESETS:
        return preset_for(choice, model.backbone)
    if choice in METHODS:
        return method_at(choice, budget, model, kind).config
    raise ValueError(f"unknown choice {choice!r}; choose one of {', '.join(choices())}")


def placed(name: str, backbone, kind: str = "image") -> MergeConfig:
    """Method ``name`` at its usual placement in this model, keeping every token (``fit`` then sets the keeps)."""
    record = method(name)
    paper = preset_for("paper-video" if kind == "video" else "paper-image", backbone)
    placement = record.placement
    if placement == "paper":
        return MergeConfig(stage1_layers=paper.stage1_layers, stage2_layers=paper.stage2_layers,
                           stage1_keep=paper.stage1_keep, stage2_keep=paper.stage2_keep, method=name)
    if placement == "paper-stage1":
        return MergeConfig(stage1_layers=paper.stage1_layers, method=name)
    if placement in LLM_PLACEMENTS:
        layers = {
            nearest_stage2_layer(scale_layer(layer, backbone.llm_depth, PEERS_LLM_DEPTH), backbone.stage2_choices)
            for layer in LLM_PLACEMENTS[placement]
        }
        return MergeConfig(stage2_layers=tuple(sorted(layers)), method=name)
    if placement == "encoder-output":
        return MergeConfig(stage1_layers=(backbone.vit_depth,), method=name)
    if placement == "every-encoder-block":
        return MergeConfig(stage1_layers=tuple(range(1, backbone.vit_depth + 1)), method=name)
    raise ValueError(f"method {name!r} has an unknown placement {placement!r}")


def fitted(config: MergeConfig, budget: float, model, kind: str = "image") -> Fitted:
    """``config``'s placement with its keeps solved for ``budget`` on the typical input of ``kind``."""
    backbone = model.backbone
    shapes = backbone.typical_shapes(kind, model.processor)
    return fit(config, budget, cost_model(backbone), shapes, TYPICAL_TEXT_TOKENS)


def method_at(name: str, budget: float, model, kind: str = "image") -> Fitted:
    """Method ``name`` at its usual placement, its work solved for ``budget``; ``reached`` False (and the
    placement's cheapest settings) where that placement cannot spend so little."""
    result = fitted(placed(name, model.backbone, kind), budget, model, kind)
    reach = "" if result.reached else f"; it cannot reach {budget:.2f} there (at least {result.work:.2f})"
    origin = f"{name}: its usual placement ({method(name).placement}), work {result.work:.2f}{reach}"
    return replace(result, config=result.config.with_(origin=origin))


def auto_config(model, budget: float, kind: str = "image") -> MergeConfig:
    """The settings ``auto`` uses for ``kind`` at ``budget``: the profile entry nearest the budget, else the
    paper preset for ``kind``, with the keep ratios solved so that the work meets the budget. The result's
    ``origin`` says which, and when even the cheapest settings of that placement spend more."""
    budget = check_budget(budget)
    _check_kind(kind)
    profile, note = model.profile, model.profile_note
    entry = profile.entry(kind, budget) if profile is not None else None
    if entry is not None:
        base = entry.config
        source = f"the {kind} settings calibrated for work {entry.budget:.2f} ({note})"
    else:
        base = preset_for(f"paper-{kind}", model.backbone)
        source = f"the paper-{kind} preset scaled to the budget, not fitted to this model ({note})"
    result = fitted(base, budget, model, kind)
    if not result.reached:
        earliest = fitted(earliest_placement(base, model.backbone), budget, model, kind)
        if earliest.reached or earliest.work < result.work:
            result = earliest
            source += ", moved to the first encoder block and the first usable LLM layer to spend so little"
    reach = "" if result.reached else f"; no settings of that placement reach {budget:.2f}, so its cheapest"
    return replace(result.config, origin=f"auto at work {budget:.2f}: {source}{reach}")


def earliest_placement(config: MergeConfig, backbone) -> MergeConfig:
    """``config`` with one stage 1 after the encoder's first block and one stage 2 at the first LLM layer that
    can score: the least work a placement of both stages can reach."""
    first = nearest_stage2_layer(1, backbone.stage2_choices)
    both = method(config.method).stages == frozenset({1, 2})
    return replace(config, method=config.method if both else "illava", stage1_layers=(1,), stage2_layers=(first,),
                   stage1_keep=config.stage1_keep if config.stage1_active else 0.5,
                   stage2_keep=config.stage2_keep if config.stage2_active else 0.5)


def typical_estimate(config: MergeConfig, model, kind: str = "image") -> Estimate:
    """``config``'s work share and predicted speedup on the typical input of ``kind`` (what readouts show
    before a run)."""
    backbone = model.backbone
    shapes = backbone.typical_shapes(kind, model.processor)
    return cost_model(backbone).estimate(shapes, TYPICAL_TEXT_TOKENS, config)


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
