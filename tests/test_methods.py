"""The baseline methods' selections, written from their papers, on small hand-checked inputs."""

import pytest
import torch

from illava import MergeConfig
from illava.merge import (
    KEPT,
    MERGED,
    RECYCLED,
    apply_reduction,
    DROPPED,
    bipartite_reduction,
    contextual_reduction,
    density_peak_clusters,
    distinct_scores,
    merged_sizes,
    random_scores,
    row_attention,
    sparse_counts,
    text_raters,
)
from illava.methods import encoder_scorer, select


def _one_hot_features(groups: list[int], width: int = 4) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(groups), width).float() + 0.01 * torch.arange(len(groups))[:, None]


def test_bipartite_matching_merges_the_most_similar_a_tokens_into_their_b_match():
    # A = tokens 0, 2, 4; B = 1, 3, 5. Token 0 matches 1 and token 4 matches 5 exactly; token 2 matches nothing well.
    features = torch.tensor([[1.0, 0, 0], [1.0, 0, 0], [0, 1.0, 0], [0, 0.2, 1.0], [0, 0, 1.0], [0, 0, 1.0]])
    reduction = bipartite_reduction(features, n_out=4)
    assert reduction.kept.tolist() == [1, 2, 3, 5]
    assert reduction.anchor.tolist() == [1, 5]
    assert reduction.status.tolist() == [MERGED, RECYCLED, KEPT, KEPT, MERGED, RECYCLED]
    sizes = merged_sizes(torch.ones(6), reduction)
    assert sizes.tolist() == [2.0, 1.0, 1.0, 2.0]
    values = torch.arange(6.0)[:, None]
    merged = apply_reduction(values, torch.tensor([1.0, 3.0, 1, 1, 1, 1]), reduction, "score")
    # Size-weighted: token 1 stood for three tokens already, token 0 for one.
    assert merged[:, 0].tolist() == pytest.approx([(0 * 1 + 1 * 3) / 4, 2.0, 3.0, 4.5])


def test_bipartite_matching_cannot_merge_more_than_the_a_set():
    reduction = bipartite_reduction(torch.randn(7, 3), n_out=1)
    assert reduction.kept.numel() == 7 - 3  # ToMe merges at most half the tokens (rounded down) per layer


def test_contextual_tokens_are_spread_over_the_rest_and_average_their_group():
    scores = torch.tensor([0.9, 0.1, 0.2, 0.8, 0.05, 0.3, 0.0, 0.15])
    features = _one_hot_features([0, 1, 1, 0, 2, 1, 2, 2])
    reduction = contextual_reduction(scores, features, n_out=4, n_contextual=2)
    # Dominant: 0 and 3. The rest (1, 2, 4, 5, 6, 7) gets anchors at its first and last member.
    assert reduction.anchor.tolist() == [1, 7]
    assert reduction.kept.tolist() == [0, 1, 3, 7]
    assert (reduction.status[[1, 7]] == RECYCLED).all() and (reduction.status[[0, 3]] == KEPT).all()
    assert reduction.group[[2, 5]].tolist() == [0, 0] and reduction.group[[4, 6]].tolist() == [1, 1]
    merged = apply_reduction(torch.arange(8.0)[:, None], scores, reduction, "mean")
    assert merged[:, 0].tolist() == pytest.approx([0.0, (1 + 2 + 5) / 3, 3.0, (4 + 6 + 7) / 3])


def test_distinct_keeps_the_tokens_unlike_the_picture_and_recycles_the_background():
    # Six background tokens alike (group 0), and two objects (groups 1 and 2) unlike them and each other.
    features = _one_hot_features([0, 0, 1, 0, 0, 2, 0, 0])
    scores = distinct_scores(features)
    assert set(scores.argsort(descending=True)[:2].tolist()) == {2, 5}
    attention = torch.linspace(1.0, 0.0, 8)  # ignored: distinct needs no attention
    reduction = select("distinct", attention, features, n_out=3, recycled=1, weighting="score")
    status = reduction.status.tolist()
    assert [i for i, code in enumerate(status) if code == KEPT] == [2, 5]
    # The background is folded into one recycled token, a background token itself.
    assert status.count(RECYCLED) == 1 and status.count(MERGED) == 5 and status.index(RECYCLED) not in (2, 5)
    assert torch.equal(reduction.weights, scores)


def test_random_scores_repeat_for_the_same_size():
    assert torch.equal(random_scores(10), random_scores(10))
    assert not torch.equal(random_scores(10), torch.sort(random_scores(10)).values)


@pytest.mark.parametrize("method", ["fastv", "random", "fastervlm", "pyramiddrop"])
def test_dropping_methods_recycle_nothing(method):
    scores = torch.rand(20)
    reduction = select(method, scores, torch.randn(20, 4), n_out=5, recycled=3, weighting="score")
    assert reduction.kept.numel() == 5 and reduction.anchor.numel() == 0
    if method != "random":
        assert set(reduction.kept.tolist()) == set(torch.topk(scores, 5).indices.tolist())


def test_fastervlm_scores_by_the_cls_row_or_attention_received_where_there_is_none():
    torch.manual_seed(0)
    q, k = torch.randn(2, 3, 6, 4), torch.randn(2, 3, 6, 4)
    cls = encoder_scorer("fastervlm", chunk=16)(q, k, 0.5, cls_row=0)
    torch.testing.assert_close(cls, (q[..., :1, :] @ k.transpose(-2, -1) * 0.5).softmax(-1).mean(1)[:, 0])
    torch.testing.assert_close(cls, row_attention(q, k, 0.5, 0))
    received = (q @ k.transpose(-2, -1) * 0.5).softmax(-1).mean(dim=(1, 2))
    torch.testing.assert_close(encoder_scorer("fastervlm", chunk=16)(q, k, 0.5), received)
    # Every other method scores by the attention each token receives, with or without a [CLS] row.
    torch.testing.assert_close(encoder_scorer("illava", chunk=16)(q, k, 0.5, cls_row=0), received)
    assert not torch.allclose(cls, received)


def test_sparsevlm_pools_the_best_pruned_tokens_and_settles_its_cluster_count():
    # 40 tokens to 10: 32 pruned (2 clusters take kept slots), the best 30% + 1 of them (10) pooled, a
    # cluster per ten pooled + 1.
    assert sparse_counts(40, 10) == (2, 10)
    assert sparse_counts(5, 1) == (0, 0) and sparse_counts(8, 8) == (0, 0)  # one slot left: no cluster
    scores = torch.arange(40.0).flip(0)  # token 0 best
    # The pooled tokens (8-17) form two tight blobs: 8-12 and 13-17.
    features = torch.zeros(40, 2)
    features[8:13] = torch.tensor([1.0, 0.0]) + 0.01 * torch.arange(5.0)[:, None]
    features[13:18] = torch.tensor([0.0, 1.0]) + 0.01 * torch.arange(5.0)[:, None]
    features[18:] = torch.randn(22, 2)
    reduction = select("sparsevlm", scores, features, n_out=10, recycled=0, weighting="score")
    assert reduction.weighting == "mean" and reduction.kept.numel() == 10
    assert (reduction.status[:8] == KEPT).all() and (reduction.status[18:] == DROPPED).all()
    anchors = reduction.anchor.tolist()
    assert len(anchors) == 2 and sum(8 <= a < 13 for a in anchors) == 1 and sum(13 <= a < 18 for a in anchors) == 1
    assert len(set(reduction.group[8:13].tolist())) == 1 and len(set(reduction.group[13:18].tolist())) == 1
    assert (reduction.status[8:18] != DROPPED).all() and (reduction.group[18:] == -1).all()
    merged = reduction.apply(torch.arange(40.0)[:, None])
    assert sorted(merged[:, 0].tolist())[-2:] == pytest.approx([10.0, 15.0])  # each cluster's plain mean


def test_density_peaks_put_one_centre_in_each_blob_and_break_ties_by_order():
    blob = torch.tensor([[0.0, 0.0], [0.1, 0.0], [0.0, 0.1], [0.1, 0.1]])
    features = torch.cat([blob, blob + 5.0])
    centres, cluster = density_peak_clusters(features, 2)
    assert sorted(c // 4 for c in centres.tolist()) == [0, 1]
    assert cluster[:4].unique().numel() == 1 and cluster[4:].unique().numel() == 1 and cluster[0] != cluster[4]
    again, _ = density_peak_clusters(features, 2)
    assert torch.equal(centres, again)


def test_sparsevlm_raters_are_the_text_tokens_the_visual_tokens_lean_on():
    visual = torch.tensor([[4.0, 0.0], [3.0, 0.5]])
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1], [-1.0, 0.0]])
    assert text_raters(visual, text).tolist() == [True, False, True, False]
    assert not text_raters(visual, text[:1]).any()  # one text token: no share is above the average


def test_illava_recycles_what_was_asked():
    reduction = select("illava", torch.rand(20), torch.randn(20, 4), n_out=5, recycled=2, weighting="paper")
    assert reduction.anchor.numel() == 2 and reduction.weighting == "paper"


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(method="fastv", stage1_layers=(2,)), "prunes in the language model only"),
        (dict(method="tome", stage2_layers=(2,)), "merges in the vision encoder only"),
        (dict(method="visionzip", stage2_layers=(2,)), "merges in the vision encoder only"),
        (dict(method="fastervlm", stage2_layers=(2,)), "merges in the vision encoder only"),
        (dict(method="pyramiddrop", stage1_layers=(2,)), "prunes in the language model only"),
        (dict(method="sparsevlm", stage1_layers=(2,)), "prunes in the language model only"),
        (dict(method="fast-v"), "method must be one of"),
    ],
)
def test_methods_refuse_the_stage_they_do_not_have(fields, message):
    with pytest.raises(ValueError, match=message):
        MergeConfig(**fields)


def test_a_method_record_names_a_known_placement_and_ranking():
    from illava.methods import Method, _drop

    with pytest.raises(ValueError, match="ranks_by one of"):
        Method("typo", "", True, frozenset({2}), _drop, "llm-early", ranks_by="rater")
    with pytest.raises(ValueError, match="placement must be one of"):
        Method("typo", "", True, frozenset({2}), _drop, "llm-late")
