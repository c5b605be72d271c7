"""The merge-and-recycle algorithm as pure tensor functions.

Scores come from queries and keys (recomputed for just the rows needed, so the model's own
attention kernels stay as they are). Selection keeps the top-scoring tokens; the best of the
discarded ones become *anchors*, and every other discarded token is folded into the anchor it is
most similar to. An anchor's slot then holds a weighted mean of its group, the *recycled* token,
and keeps the anchor's position.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

# Token status codes used by reductions and traces.
DROPPED, KEPT, RECYCLED, MERGED = 0, 1, 2, 3


def attention_received(q: torch.Tensor, k: torch.Tensor, scale: float, chunk: int = 1024) -> torch.Tensor:
    """Mean attention each key receives over all heads and queries of one bidirectional segment.

    q, k: (..., heads, n, head_dim), any leading dims a batch of equal-length segments scored at once.
    Returns (..., n) float32, each summing to 1. Queries are processed ``chunk`` rows at a time so no
    n x n matrix is held for long inputs. Half-precision inputs are scored in float32: a q.k product of
    a large-norm encoder (SigLIP, Qwen's ViT) can pass fp16's 65504, and an inf logit makes the softmax
    NaN and the selection silently wrong.
    """
    heads, n = q.shape[-3], q.shape[-2]
    if q.dtype in (torch.float16, torch.bfloat16):
        q, k = q.float(), k.float()
    total = torch.zeros(*q.shape[:-3], n, dtype=torch.float32, device=q.device)
    kt = k.transpose(-2, -1)
    for start in range(0, n, chunk):
        logits = torch.matmul(q[..., start : start + chunk, :], kt) * scale
        total += logits.softmax(dim=-1, dtype=torch.float32).sum(dim=(-3, -2))
    return total / (heads * n)


def row_attention(q: torch.Tensor, k: torch.Tensor, scale: float, row: int) -> torch.Tensor:
    """Attention the token at ``row`` of a bidirectional segment pays each key, averaged over heads: FasterVLM's
    [CLS] attention with ``row`` the [CLS] token's.

    q, k: (..., heads, n, head_dim). Returns (..., n) float32 summing to 1, scored in float32 as in
    ``attention_received``.
    """
    if q.dtype in (torch.float16, torch.bfloat16):
        q, k = q.float(), k.float()
    logits = torch.matmul(q[..., row : row + 1, :] * scale, k.transpose(-2, -1))
    return logits.softmax(dim=-1, dtype=torch.float32).mean(dim=-3)[..., 0, :]


def query_row_attention(q: torch.Tensor, k: torch.Tensor, key_mask: torch.Tensor | None, scale: float) -> torch.Tensor:
    """Attention probabilities of a few query rows per sample over all keys, per head.

    q: (batch, heads, m, head_dim); k: (batch, kv_heads, n, head_dim), each key head shared by
    ``heads // kv_heads`` consecutive query heads as the model shares it; key_mask: (batch, m, n) bool,
    False where a query may not look (padding, later tokens). Returns (batch, heads, m, n) float32.
    """
    batch, heads, m, dim = q.shape
    kv_heads = k.shape[1]
    # Each key head meets its own query heads where it is: no copy of the keys per query head.
    queries = (q.float() * scale).view(batch, kv_heads, heads // kv_heads, m, dim)
    logits = torch.einsum("bkgmd,bknd->bkgmn", queries, k.float()).reshape(batch, heads, m, -1)
    if key_mask is not None:
        logits = logits.masked_fill(~key_mask[:, None], float("-inf"))
    return logits.softmax(dim=-1)


def text_raters(visual: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """SparseVLM's raters: which ``text`` tokens (t, d) are relevant to the ``visual`` ones (v, d), as a (t,) mask.

    Each visual token spreads a softmax over the text tokens by dot product; a text token whose mean share
    is above the average share rates the visual tokens.
    """
    relevance = (visual.float() @ text.float().T).softmax(dim=-1).mean(dim=0)
    return relevance > relevance.mean()


@dataclass(frozen=True)
class Reduction:
    """Which of ``n`` tokens survive, and how the discarded ones were recycled.

    kept: (n_out,) ascending indices of surviving slots (top tokens and anchors).
    anchor: (n_recycled,) indices of slots holding a recycled token (a subset of kept).
    group: (n,) for each input token, the index into ``anchor`` of the group it joined, -1 if none.
    status: (n,) int8 codes DROPPED / KEPT / RECYCLED / MERGED.
    weights, weighting: how a recycled token averages its group (see ``recycled_values``): the method's
        scores or ToMe's token sizes, and "score", "mean" or "paper"; a selection sets them with ``combining``.
    """

    kept: torch.Tensor
    anchor: torch.Tensor
    group: torch.Tensor
    status: torch.Tensor
    weights: torch.Tensor | None = None
    weighting: str = "mean"

    def combining(self, weights: torch.Tensor | None, weighting: str) -> "Reduction":
        """This reduction, its recycled tokens averaged by ``weights`` as ``weighting`` says."""
        return replace(self, weights=weights, weighting=weighting)

    def apply(self, values: torch.Tensor) -> torch.Tensor:
        """The surviving rows of ``values`` (n, ...), anchors holding their recycled tokens."""
        return apply_reduction(values, self.weights, self, self.weighting)

    def recycled(self, values: torch.Tensor) -> torch.Tensor:
        """The recycled token of each anchor, from the rows of ``values`` (n, ...)."""
        return recycled_values(values, self.weights, self, self.weighting)


def reduce_tokens(scores: torch.Tensor, similarity: torch.Tensor, n_out: int, n_recycled: int) -> Reduction:
    """Keep the ``n_out - n_recycled`` best tokens; fold all others into ``n_recycled`` anchors.

    scores: (n,), higher is more important. similarity: (n, d) features compared by cosine
    similarity to pick each discarded token's anchor. The anchors are the best discarded tokens.
    """
    order = torch.argsort(scores, descending=True, stable=True)
    n_top = n_out - n_recycled
    spots = torch.arange(n_recycled, device=scores.device)
    return _fold_into_anchors(order[:n_top], order[n_top:], spots, similarity)


def _fold_into_anchors(top: torch.Tensor, discarded: torch.Tensor, spots: torch.Tensor, similarity: torch.Tensor) -> Reduction:
    """``top`` stays; ``discarded[spots]`` become anchors and every discarded token joins its most similar anchor.

    Without anchors the discarded tokens are dropped.
    """
    n = similarity.shape[0]
    device = similarity.device
    anchor = discarded[spots]
    status = torch.zeros(n, dtype=torch.int8, device=device)
    status[top] = KEPT
    group = torch.full((n,), -1, dtype=torch.long, device=device)
    if spots.numel() > 0:
        unit = torch.nn.functional.normalize(similarity.float(), dim=-1)
        affinity = unit[discarded] @ unit[anchor].T
        # Each anchor stays in its own group.
        affinity[spots, torch.arange(spots.numel(), device=device)] = float("inf")
        group[discarded] = affinity.argmax(dim=-1)
        status[discarded] = MERGED
        status[anchor] = RECYCLED
    kept = torch.sort(torch.cat([top, anchor])).values
    return Reduction(kept=kept, anchor=anchor, group=group, status=status)


# SparseVLM recycles the best 30% of the tokens a layer prunes, one cluster per ten of them.
SPARSE_POOL_SHARE, SPARSE_POOL_PER_CLUSTER = 0.3, 10


def sparse_counts(n: int, n_out: int) -> tuple[int, int]:
    """(clusters, pooled tokens) of SparseVLM's recycling when ``n`` tokens leave ``n_out`` (clusters included)."""
    clusters = pool = 0
    # A cluster takes a slot a kept token would have had, so more are pruned: settle the two counts.
    for _ in range(4):
        pruned = n - (n_out - clusters)
        pool = min(pruned, int(pruned * SPARSE_POOL_SHARE) + 1) if pruned > 0 else 0
        wanted = min(pool, int(pool / SPARSE_POOL_PER_CLUSTER) + 1, max(n_out - 1, 0)) if pool else 0
        if wanted == clusters:
            break
        clusters = wanted
    return (clusters, pool) if clusters else (0, 0)


def density_peak_clusters(features: torch.Tensor, n_clusters: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Density-peak clustering with k nearest neighbours (SparseVLM's DPC-kNN) of ``features`` (m, d).

    A token's density is exp(-mean squared distance to its ``n_clusters`` nearest tokens); centres are the
    tokens with the largest density times distance to the nearest denser token. Ties in density go to
    the earlier token, so the result is deterministic. Returns (centre indices (c,), cluster of each token (m,)).
    """
    m, d = features.shape
    distance = torch.cdist(features.float(), features.float()) / d**0.5
    nearest = distance.topk(min(n_clusters, m), dim=-1, largest=False).values
    density = (-(nearest**2).mean(dim=-1)).exp()
    rank = torch.empty(m, dtype=torch.long, device=features.device)
    rank[torch.argsort(density, descending=True, stable=True)] = torch.arange(m, device=features.device)
    denser = rank[None, :] < rank[:, None]
    parent = torch.where(denser, distance, distance.max()).min(dim=-1).values
    centres = torch.topk(parent * density, n_clusters).indices
    cluster = distance[:, centres].argmin(dim=-1)
    cluster[centres] = torch.arange(n_clusters, device=features.device)
    return centres, cluster


def pooled_cluster_reduction(scores: torch.Tensor, similarity: torch.Tensor, n_out: int) -> Reduction:
    """SparseVLM's selection: the top tokens stay; the best of the pruned ones (``sparse_counts``) are
    clustered by density peaks, each cluster recycled into its centre's slot; the other pruned tokens drop."""
    n_clusters, n_pool = sparse_counts(scores.shape[0], n_out)
    order = torch.argsort(scores, descending=True, stable=True)
    top, pooled = order[: n_out - n_clusters], order[n_out - n_clusters :][:n_pool]
    status = torch.zeros(scores.shape[0], dtype=torch.int8, device=scores.device)
    status[top] = KEPT
    group = torch.full_like(order, -1)
    anchor = pooled[:0]
    if n_clusters:
        centres, cluster = density_peak_clusters(similarity[pooled], n_clusters)
        anchor = pooled[centres]
        group[pooled] = cluster
        status[pooled] = MERGED
        status[anchor] = RECYCLED
    kept = torch.sort(torch.cat([top, anchor])).values
    return Reduction(kept=kept, anchor=anchor, group=group, status=status)


# VisionZip keeps 54 dominant and 10 contextual tokens of every 64 it keeps.
CONTEXTUAL_SHARE = 10 / 64


def distinct_scores(features: torch.Tensor) -> torch.Tensor:
    """Scores by distinctiveness: one minus each token's cosine similarity to the group's mean feature.

    In an early encoder block attention received favours tokens beside edges and in the background;
    a token unlike the picture's average (an object on a plain ground) is one the answer needs.
    """
    unit = F.normalize(features.float(), dim=-1)
    return 1.0 - unit @ F.normalize(unit.mean(0), dim=0)


def random_scores(n: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Scores of the random-drop baseline: uniform noise, seeded so that a run can be repeated."""
    return torch.rand(n, generator=torch.Generator().manual_seed(n)).to(device)


def contextual_reduction(scores: torch.Tensor, similarity: torch.Tensor, n_out: int, n_contextual: int) -> Reduction:
    """VisionZip's selection: the top tokens stay (*dominant*), and the rest are merged by similarity into
    ``n_contextual`` evenly spaced *contextual* tokens, each the plain mean of its group.
    """
    order = torch.argsort(scores, descending=True, stable=True)
    n_top = n_out - n_contextual
    rest = torch.sort(order[n_top:]).values
    spots = torch.linspace(0, rest.numel() - 1, n_contextual, device=scores.device).round().long()
    return _fold_into_anchors(order[:n_top], rest, spots, similarity)


def bipartite_reduction(similarity: torch.Tensor, n_out: int) -> Reduction:
    """ToMe's bipartite soft matching: alternate tokens form sets A and B, each A token is matched to its
    most similar B token, and the ``n - n_out`` best-matched A tokens merge into their match.
    """
    n = similarity.shape[0]
    device = similarity.device
    merges = min(n - n_out, n // 2)
    a, b = torch.arange(0, n, 2, device=device), torch.arange(1, n, 2, device=device)
    status = torch.full((n,), KEPT, dtype=torch.int8, device=device)
    group = torch.full((n,), -1, dtype=torch.long, device=device)
    if merges <= 0:
        return Reduction(kept=torch.arange(n, device=device), anchor=a[:0], group=group, status=status)
    unit = torch.nn.functional.normalize(similarity.float(), dim=-1)
    best, match = (unit[a] @ unit[b].T).max(dim=-1)
    merged = a[torch.argsort(best, descending=True, stable=True)[:merges]]
    targets = b[match[torch.searchsorted(a, merged)]]
    anchor = torch.unique(targets)
    group[merged] = torch.searchsorted(anchor, targets)
    group[anchor] = torch.arange(anchor.numel(), device=device)
    status[merged] = MERGED
    status[anchor] = RECYCLED
    keep = torch.ones(n, dtype=torch.bool, device=device)
    keep[merged] = False
    return Reduction(kept=torch.nonzero(keep).squeeze(-1), anchor=anchor, group=group, status=status)


def merged_sizes(sizes: torch.Tensor, reduction: Reduction) -> torch.Tensor:
    """How many original tokens each surviving slot stands for after ``reduction`` (ToMe's token size)."""
    out = sizes.clone()
    members = torch.nonzero(reduction.group >= 0).squeeze(-1)
    if members.numel():
        totals = torch.zeros(reduction.anchor.numel(), dtype=sizes.dtype, device=sizes.device)
        totals.index_add_(0, reduction.group[members], sizes[members])
        out[reduction.anchor] = totals
    return out[reduction.kept]


def recycled_values(
    values: torch.Tensor, scores: torch.Tensor, reduction: Reduction, weighting: str
) -> torch.Tensor:
    """The recycled token of each anchor: a weighted mean of its group's ``values`` (n, ...).

    weighting: "score" (by importance), "mean" (uniform) or "paper" (by rank within the group, the
    least important token weighted most, as in the iLLaVA reference code); ``scores`` may be None for
    "mean". Accumulates in float32.
    """
    members = torch.nonzero(reduction.group >= 0).squeeze(-1)
    target = reduction.group[members]
    n_recycled = reduction.anchor.shape[0]
    if weighting == "score":
        weight = scores[members].float().clamp_min(0) + 1e-12
    elif weighting == "mean":
        weight = torch.ones(members.shape[0], dtype=torch.float32, device=values.device)
    elif weighting == "paper":
        # Rank from the worst member upwards (worst = rank 0), then weight = group size - rank.
        by_score = torch.argsort(scores[members].float(), stable=True)
        sorted_target = target[by_score]
        group_order = torch.argsort(sorted_target, stable=True)
        sizes = torch.bincount(target, minlength=n_recycled)
        starts = torch.cumsum(sizes, 0) - sizes
        rank_sorted = torch.arange(members.shape[0], device=values.device) - starts[sorted_target[group_order]]
        rank = torch.empty_like(rank_sorted)
        rank[by_score[group_order]] = rank_sorted
        weight = (sizes[target] - rank).float()
    else:
        raise ValueError(f"unknown recycle weighting {weighting!r}")
    # A (recycled x members) weight matrix turns the grouped sums into one matrix product.
    mixing = torch.zeros(n_recycled, members.shape[0], dtype=torch.float32, device=values.device)
    mixing[target, torch.arange(members.shape[0], device=values.device)] = weight
    mixing /= mixing.sum(dim=1, keepdim=True)
    flat = values[members].float().reshape(members.shape[0], -1)
    return (mixing @ flat).reshape(n_recycled, *values.shape[1:]).to(values.dtype)


def apply_reduction(
    values: torch.Tensor, scores: torch.Tensor, reduction: Reduction, weighting: str
) -> torch.Tensor:
    """The surviving rows of ``values`` (n, ...), with anchors replaced by their recycled tokens."""
    if reduction.anchor.numel() == 0:
        return values[reduction.kept]
    out = values.clone()
    out[reduction.anchor] = recycled_values(values, scores, reduction, weighting)
    return out[reduction.kept]


@dataclass(frozen=True)
class Schedule:
    """How one stage spreads its reduction over its ``layers``: each cut keeps the same fraction, ``keep`` in all."""

    layers: tuple[int, ...]
    keep: float

    def left(self, counts: list[int], layer: int) -> list[int]:
        """The tokens each of ``counts`` has left after the stage's cut at ``layer``."""
        return stage_targets(counts, self.keep, len(self.layers), self.layers.index(layer) + 1)

    def steps(self, counts: list[int]) -> list[list[int]]:
        """``left`` after each of the stage's cuts in turn."""
        return [self.left(counts, layer) for layer in self.layers]


def stage_targets(counts: list[int], keep: float, n_layers: int, step: int) -> list[int]:
    """Tokens left after ``step`` of ``n_layers`` reductions that together keep ``keep`` of ``counts``.

    The schedule of a stage spread over several layers: each reduction keeps the same fraction.
    """
    fraction = keep ** (step / n_layers)
    return [min(n, max(1, round(n * fraction))) for n in counts]
