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
    attention_received,
    bipartite_reduction,
    contextual_reduction,
    distinct_scores,
    pooled_cluster_reduction,
    random_scores,
    reduce_tokens,
    row_attention,
)

# (scores, similarity, n_out, recycled, weighting, sizes) -> the reduction, carrying how it combines its groups
Selector = Callable[[torch.Tensor, torch.Tensor, int, int, str, "torch.Tensor | None"], Reduction]


@dataclass(frozen=True)
class Method:
    """One merging method.

    scored: whether it ranks tokens by attention (so a stage must compute attention scores for it).
    stages: the stages it may run in (1: inside the vision encoder, 2: inside the language model).
    select: how it reduces one group of tokens to ``n_out`` (see ``select``).
    placement: where its paper runs it, one of ``PLACEMENTS`` (``resolve.placed`` puts it in a model).
    recycles: whether it folds what it discards into as many recycled tokens as asked, weighted as asked (so
        calibration tries their number and weighting); SparseVLM recycles by its own rule, so it does not.
    ranks_by: whose attention scores tokens, one of ``RANKINGS``.
    """

    name: str
    summary: str
    scored: bool
    stages: frozenset[int]
    select: Selector
    placement: str
    recycles: bool = False
    ranks_by: str = "attention"

    def __post_init__(self) -> None:
        # A placement or ranking no stage knows would silently run as another one.
        if self.placement not in PLACEMENTS or self.ranks_by not in RANKINGS:
            raise ValueError(f"method {self.name!r}: placement must be one of {tuple(PLACEMENTS)} and ranks_by one of "
                             f"{tuple(RANKINGS)}, got {self.placement!r} and {self.ranks_by!r}")


def _illava(scores, similarity, n_out, recycled, weighting, sizes):
    n = scores.shape[0]
    n_recycled = min(recycled, max(n_out - 1, 0), n - n_out)
    return reduce_tokens(scores, similarity, n_out, n_recycled).combining(scores, weighting)


def _distinct(scores, similarity, n_out, recycled, weighting, sizes):
    return _illava(distinct_scores(similarity), similarity, n_out, recycled, weighting, sizes)


def _drop(scores, similarity, n_out, recycled, weighting, sizes):
    return reduce_tokens(scores, similarity, n_out, 0)


def _random(scores, similarity, n_out, recycled, weighting, sizes):
    return _drop(random_scores(scores.shape[0], scores.device), similarity, n_out, recycled, weighting, sizes)


def _visionzip(scores, similarity, n_out, recycled, weighting, sizes):
    n = scores.shape[0]
    contextual = min(max(1, round(n_out * CONTEXTUAL_SHARE)), max(n_out - 1, 0), n - n_out)
    return contextual_reduction(scores, similarity, n_out, contextual).combining(scores, "mean")


def _sparse(scores, similarity, n_out, recycled, weighting, sizes):
    return pooled_cluster_reduction(scores, similarity, n_out).combining(scores, "mean")


def _tome(scores, similarity, n_out, recycled, weighting, sizes):
    sizes = torch.ones(scores.shape[0], device=scores.device) if sizes is None else sizes
    return bipartite_reduction(similarity, n_out).combining(sizes, "score")


# Where a method usually runs, as its paper places it; the layers follow each model's depths.
PLACEMENTS = {
    "paper": "iLLaVA's paper preset for the kind of input: both stages",
    "paper-stage1": "the vision-encoder blocks of iLLaVA's paper preset",
    "llm-early": "once, at layer 2 of a 32-layer LLM (FastV's K = 2), at the same relative depth",
    "encoder-output": "once, at the vision encoder's output",
    "every-encoder-block": "a little in every vision-encoder block",
    "llm-pyramid": "at the end of each of four LLM stages (after layers 8, 16 and 24 of 32), the same share each time",
    "llm-sparse": "after LLM layers 2, 6 and 15 of 32 (SparseVLM's), at the same relative depths",
}

# Whose attention ranks the tokens: in the encoder, the attention every token receives ("attention") or
# the [CLS] token's ("cls"); in the LLM, the last prompt token's ("attention") or that of the prompt's
# text tokens most relevant to the picture ("raters").
RANKINGS = {
    "attention": "attention received in the encoder; the last prompt token's attention in the LLM",
    "cls": "the [CLS] token's attention at the encoder layer the projector reads (attention received where "
    "the encoder has no [CLS] token)",
    "raters": "the attention of the prompt's text tokens most relevant to the visual ones",
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
        Method("fastervlm", "drop by the [CLS] attention at the encoder output, before the projector, nothing recycled",
               True, frozenset({1}), _drop, "encoder-output", ranks_by="cls"),
        Method("pyramiddrop", "drop the same share at the end of each LLM stage by the last prompt token's attention",
               True, frozenset({2}), _drop, "llm-pyramid"),
        Method("sparsevlm", "drop by the attention of the question's relevant text tokens at a few LLM layers; "
               "the best pruned tokens clustered into recycled ones", True, frozenset({2}), _sparse, "llm-sparse",
               ranks_by="raters"),
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
) -> Reduction:
    """The reduction method ``name`` makes of one group of ``n`` tokens down to ``n_out``, carrying how its
    recycled tokens combine their groups (``Reduction.apply``).

    ``recycled`` is the requested number of recycled tokens and ``weighting`` their weighting (the methods
    that recycle as asked); ``sizes`` are ToMe's token sizes (ones when None).
    """
    return method(name).select(scores, similarity, n_out, recycled, weighting, sizes)


# (q, k, scale, cls_row) -> (..., n) scores of one bidirectional segment's tokens; cls_row: the [CLS] row, if any.
EncoderScorer = Callable[..., torch.Tensor]


def encoder_scorer(name: str, chunk: int) -> EncoderScorer:
    """How method ``name`` scores the tokens of an encoder segment from one layer's queries and keys.

    Called as ``scorer(q, k, scale, cls_row=None)`` with q, k (..., heads, n, head_dim); ``cls_row`` is the
    [CLS] token's row in encoders that have one. ``chunk``: query rows scored at a time. FasterVLM's [CLS]
    attention has no [CLS] token to come from in Qwen's ViT and SigLIP: there it is the attention every token
    receives, the stand-in that kept the most answers on the demo model's calibration scenes
    (``scripts/fastervlm_standin.py``).
    """
    cls = method(name).ranks_by == "cls"

    def scorer(q: torch.Tensor, k: torch.Tensor, scale: float, cls_row: int | None = None) -> torch.Tensor:
        if cls and cls_row is not None:
            return row_attention(q, k, scale, cls_row)
        return attention_received(q, k, scale, chunk)

    return scorer
