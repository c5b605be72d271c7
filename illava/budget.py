"""A budget is compute: a configuration's keep ratios solved so that its work share meets a budget.

The work share is the cost model's (``cost.CostModel.estimate``): the FLOPs spent on visual tokens in
every encoder and LLM layer, relative to merging off. ``fit`` keeps a configuration's placement (its
layers, method and recycling) and scales its keep ratios together, each stage keeping its share of the
reduction in log ratio, until the work is the most the budget allows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Sequence

from .config import MergeConfig
from .cost import CostModel

# The budget ``auto``, the nodes and the CLI use unless told otherwise: a third of the work on the picture.
DEFAULT_BUDGET = 0.33
# The budgets calibration fits, the harness compares and the bench times unless told otherwise.
STANDARD_BUDGETS = (0.5, 0.33, 0.22, 0.11)
# Work may exceed the budget by this much: tokens come in whole merge groups.
BUDGET_SLACK = 0.02
# The smallest keep ratio the search tries: one token per view or sample is left in practice.
SMALLEST_KEEP = 1e-4


def check_budget(budget: Any) -> float:
    """``budget`` as a float, or a ValueError saying it must be a share of the work in (0, 1]."""
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not math.isfinite(budget) or not 0.0 < budget <= 1.0:
        raise ValueError(
            f"the budget must be in (0, 1] (the share of the work on the picture that remains, e.g. 0.33 for "
            f"a third), got {budget!r}"
        )
    return float(budget)


@dataclass(frozen=True)
class Fitted:
    """A configuration fitted to a budget: its work on the input it was fitted on, and whether the budget
    was reached (when not, ``config`` is the placement's cheapest and ``work`` its floor)."""

    config: MergeConfig
    work: float
    reached: bool


def fit(config: MergeConfig, budget: float, cost: CostModel, shapes: Sequence, text_tokens: int) -> Fitted:
    """``config`` with its keep ratios scaled so that its work on this input is the most within ``budget``.

    Each active stage keeps ``s ** share`` for one scale ``s``, its share of the reduction as in
    ``config`` (even when the config keeps everything). A config without stages cannot save work.
    """
    budget = check_budget(budget)
    shares = _shares(config)
    if not shares:
        return Fitted(config, 1.0, budget >= 1.0)

    def at(scale: float) -> MergeConfig:
        return replace(config, **{name: min(1.0, max(SMALLEST_KEEP, scale**share)) for name, share in shares.items()})

    def work(scale: float) -> float:
        return cost.work(shapes, text_tokens, at(scale))

    full = work(1.0)
    if full <= budget:
        return Fitted(at(1.0), full, True)
    low, high = SMALLEST_KEEP, 1.0
    low_work = work(low)
    if low_work > budget + BUDGET_SLACK:
        return Fitted(at(low), low_work, False)
    # Work falls in steps as the scale does (whole tokens), so bisect for the largest scale within budget.
    high_work = full
    for _ in range(40):
        middle = math.sqrt(low * high)
        middle_work = work(middle)
        if middle_work <= budget:
            low, low_work = middle, middle_work
        else:
            high, high_work = middle, middle_work
    if low_work <= budget:
        return Fitted(at(low), low_work, True)
    return Fitted(at(high), high_work, True)


def _shares(config: MergeConfig) -> dict[str, float]:
    """Each active stage's share of the reduction, in log ratio (even when nothing is reduced yet)."""
    keeps = {}
    if config.stage1_active:
        keeps["stage1_keep"] = config.stage1_keep
    if config.stage2_active:
        keeps["stage2_keep"] = config.stage2_keep
    total = sum(math.log(keep) for keep in keeps.values())
    if total == 0.0:
        return {name: 1.0 / len(keeps) for name in keeps}
    return {name: math.log(keep) / total for name, keep in keeps.items()}
