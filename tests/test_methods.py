"""The baseline methods' selections, written from their papers, on small hand-checked inputs."""

import pytest
import torch

from illava import MergeConfig
from illava.merge import (
    KEPT,
    MERGED,
    RECYCLED,
    apply_reduction,
    bipartite_reduction,
    contextual_reduction,
    distinct_scores,
    merged_sizes,
    random_scores,
)
from illava.methods import select


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
    reduction, weights, _ = select("distinct", attention, features, n_out=3, recycled=1, weighting="score")
    status = reduction.status.tolist()
    assert [i for i, code in enumerate(status) if code == KEPT] == [2, 5]
    # The background is folded into one recycled token, a background token itself.
    assert status.count(RECYCLED) == 1 and status.count(MERGED) == 5 and status.index(RECYCLED) not in (2, 5)
    assert torch.equal(weights, scores)


def test_random_scores_repeat_for_the_same_size():
    assert torch.equal(random_scores(10), random_scores(10))
    assert not torch.equal(random_scores(10), torch.sort(random_scores(10)).values)


@pytest.mark.parametrize("method", ["fastv", "random"])
def test_dropping_methods_recycle_nothing(method):
    scores = torch.rand(20)
    reduction, _, _ = select(method, scores, torch.randn(20, 4), n_out=5, recycled=3, weighting="score")
    assert reduction.kept.numel() == 5 and reduction.anchor.numel() == 0
    if method == "fastv":
        assert set(reduction.kept.tolist()) == set(torch.topk(scores, 5).indices.tolist())


def test_illava_recycles_what_was_asked():
    reduction, _, weighting = select("illava", torch.rand(20), torch.randn(20, 4), n_out=5, recycled=2, weighting="paper")
    assert reduction.anchor.numel() == 2 and weighting == "paper"


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(method="fastv", stage1_layers=(2,)), "prunes in the language model only"),
        (dict(method="tome", stage2_layers=(2,)), "merges in the vision encoder only"),
        (dict(method="visionzip", stage2_layers=(2,)), "merges in the vision encoder only"),
        (dict(method="fast-v"), "method must be one of"),
    ],
)
def test_methods_refuse_the_stage_they_do_not_have(fields, message):
    with pytest.raises(ValueError, match=message):
        MergeConfig(**fields)
