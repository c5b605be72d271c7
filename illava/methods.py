"""The merging methods, one record each: what a method scores, which stages it may run in, how it selects.

iLLaVA is the method this library is about; the others are its peers, written from their papers,
so that the accuracy harness can compare them at matched work. ``MergeConfig.method``
names one of them, and every stage looks the record up here instead of testing names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .merge import (
    CONTEXTUAL_SHARE,
    Reduction,
    bipartite_reduction,
    contextual_reduction,
    distinct_scores,
    random_scores,
    reduce_tokens,
)

# (scores, similarity, n_out, recycled, weighting, sizes) -> (reduction, weights, weighting for apply_reduction)
Selector = Callable[
    [torch.Tensor, torch.Tensor, int, int, str, "torch.Tensor | None"], "tuple[Reduction, torch.Tensor, str]"
]


@dataclass(frozen=True)
class Method:
    """One merging method.

    scored: whether it ranks tokens by attention (so a stage must compute attention scores for it).
    stages: the stages it may run in (1: inside the vision encoder, 2: inside the language model).
    select: how it reduces one group of tokens to ``n_out`` (see ``select``).
    placement: where its paper runs it, one of ``PLACEMENTS`` (``resolve.placed`` puts it in a model).
    recycles: whether it folds what it discards into recycled tokens (so their number and weighting matter).
    """

    name: str
    summary: str
    scored: bool
    stages: frozenset[int]
    select: Selector
    placement: str
    recycles: bool = False


def _illava(scores, similarity, n_out, recycled, weighting, sizes):
    n = scores.shape[0]
    n_recycled = min(recycled, max(n_out - 1, 0), n - n_out)
    return reduce_tokens(scores, similarity, n_out, n_recycled), scores, weighting


def _distinct(scores, similarity, n_out, recycled, weighting, sizes):
    return _illava(distinct_scores(similarity), similarity, n_out, recycled, weighting, sizes)


def _drop(scores, similarity, n_out, recycled, weighting, sizes):
    return reduce_tokens(scores, similarity, n_out, 0), scores, weighting


def _random(scores, similarity, n_out, recycled, weighting, sizes):
    return _drop(random_scores(scores.shape[0], scores.device), similarity, n_out, recycled, weighting, sizes)


def _visionzip(scores, similarity, n_out, recycled, weighting, sizes):
    n = scores.shape[0]
    contextual = min(max(1, round(n_out * CONTEXTUAL_SHARE)), max(n_out - 1, 0), n - n_out)
    return contextual_reduction(scores, similarity, n_out, contextual), scores, "mean"


def _tome(scores, similarity, n_out, recycled, weighting, sizes):
    sizes = torch.ones(scores.shape[0], device=scores.device) if sizes is None else sizes
    return bipartite_reduction(similarity, n_out), sizes, "score"


# Where a method usually runs, as its paper places it; the layers follow each model's depths.
PLACEMENTS = {
    "paper": "iLLaVA's paper preset for the kind of input: both stages",
    "paper-stage1": "the vision-encoder blocks of iLLaVA's paper preset",
    "llm-early": "once, at layer 2 of a 32-layer LLM (FastV's K = 2), at the same relative depth",
    "encoder-output": "once, at the vision encoder's output",
    "every-encoder-block": "a little in every vision-encoder block",
}

METHODS: dict[str, Method] = {
    method.name: method
    for method in (
        Method("illava", "attention scores; the discarded tokens recycled into a few tokens", True, frozenset({1, 2}), _illava,
               "paper", recycles=True),
        Method("distinct", "iLLaVA's keep-and-recycle, tokens ranked by how unlike the picture's mean feature they are",
               False, frozenset({1, 2}), _distinct, "paper", recycles=True),
        Method("fastv", "drop by the last prompt token's attention, nothing recycled (stage 2)", True, frozenset({2}), _drop,
               "llm-early"),
        Method(
            "visionzip",
            "dominant tokens by attention received, plus contextual tokens merged by similarity (stage 1)",
            True,
            frozenset({1}),
            _visionzip,
            "encoder-output",
        ),
        Method("tome", "bipartite soft matching with size-weighted averages (stage 1)", False, frozenset({1}), _tome,
               "every-encoder-block"),
        Method("random", "drop uniformly at random, nothing recycled", False, frozenset({1, 2}), _random, "paper-stage1"),
    )
}


def method(name: str) -> Method:
    """The record of method ``name``; a ValueError naming the choices for an unknown one."""
    if name not in METHODS:
        raise ValueError(f"method must be one of {tuple(METHODS)}, got {name!r}")
    return METHODS[name]


def select(
    name: str,
    scores: torch.Tensor,
    similarity: torch.Tensor,
    n_out: int,
    recycled: int,
    weighting: str,
    sizes: torch.Tensor | None = None,
) -> tuple[Reduction, torch.Tensor, str]:
    """The reduction method ``name`` makes of one group of ``n`` tokens down to ``n_out``.

    Returns the reduction plus the weights and weighting that ``apply_reduction`` must combine its
    groups with. ``recycled`` is the requested number of recycled tokens (iLLaVA only); ``sizes``
    are ToMe's token sizes (ones when None).
    """
    return method(name).select(scores, similarity, n_out, recycled, weighting, sizes)
