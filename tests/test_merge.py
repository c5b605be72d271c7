import pytest
import torch

from illava.merge import (
    DROPPED,
    KEPT,
    MERGED,
    RECYCLED,
    apply_reduction,
    attention_received,
    query_row_attention,
    recycled_values,
    reduce_tokens,
)


def test_attention_received_matches_the_full_softmax_for_any_chunk():
    torch.manual_seed(0)
    q, k = torch.randn(3, 50, 8), torch.randn(3, 50, 8)
    probs = torch.softmax(q @ k.transpose(1, 2) * 0.3, dim=-1)
    expected = probs.mean(dim=(0, 1))
    for chunk in (7, 50, 1024):
        got = attention_received(q, k, 0.3, chunk)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    assert abs(float(got.sum()) - 1.0) < 1e-5


def test_equal_length_segments_score_in_one_batch_as_each_alone():
    torch.manual_seed(0)
    q, k = torch.randn(4, 3, 50, 8), torch.randn(4, 3, 50, 8)
    batched = attention_received(q, k, 0.3, chunk=16)
    alone = torch.stack([attention_received(q[i], k[i], 0.3, chunk=16) for i in range(4)])
    assert batched.shape == (4, 50)
    torch.testing.assert_close(batched, alone, rtol=0, atol=1e-7)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_scores_of_large_norm_queries_stay_finite_and_rank_as_in_fp32(dtype):
    # Norms like a SigLIP or Qwen ViT's outliers: q.k reaches about 2e5, past fp16's 65504.
    generator = torch.Generator().manual_seed(0)
    q = torch.randn(2, 64, 32, generator=generator) * 80
    k = torch.randn(2, 64, 32, generator=generator) * 80
    q, k = q.to(dtype), k.to(dtype)
    reference = attention_received(q.float(), k.float(), 32**-0.5)
    half = attention_received(q, k, 32**-0.5)
    assert torch.isfinite(half).all()
    assert torch.equal(half.topk(16).indices.sort().values, reference.topk(16).indices.sort().values)


def test_query_row_attention_repeats_grouped_heads_and_masks_each_row():
    torch.manual_seed(0)
    q = torch.randn(2, 4, 3, 8)
    k = torch.randn(2, 2, 6, 8)
    mask = torch.ones(2, 3, 6, dtype=torch.bool)
    mask[1, :, :2] = False
    mask[0, 0, 4:] = False
    got = query_row_attention(q, k, mask, 0.5)
    kk = k.repeat_interleave(2, dim=1)
    logits = torch.einsum("bhmd,bhnd->bhmn", q, kk) * 0.5
    logits = logits.masked_fill(~mask[:, None], float("-inf"))
    torch.testing.assert_close(got, logits.softmax(-1))
    assert torch.all(got[1, :, :, :2] == 0) and torch.all(got[0, :, 0, 4:] == 0)


def test_reduce_tokens_keeps_the_best_and_folds_the_rest_into_anchors():
    scores = torch.tensor([0.9, 0.1, 0.5, 0.05, 0.3, 0.7, 0.2, 0.02])
    features = torch.eye(8)
    features[3] = features[2] + 0.01
    reduction = reduce_tokens(scores, features, n_out=4, n_recycled=1)
    # top 3 by score: 0, 5, 2; best discarded (anchor): 4.
    assert reduction.kept.tolist() == [0, 2, 4, 5]
    assert reduction.anchor.tolist() == [4]
    assert reduction.status.tolist() == [KEPT, MERGED, KEPT, MERGED, RECYCLED, KEPT, MERGED, MERGED]
    assert reduction.group.tolist() == [-1, 0, -1, 0, 0, -1, 0, 0]


def test_discarded_tokens_join_their_most_similar_anchor():
    scores = torch.tensor([1.0, 0.5, 0.4, 0.1, 0.1])
    features = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [0, 0.1, 1.0], [0, 1.0, 0.1]])
    reduction = reduce_tokens(scores, features, n_out=3, n_recycled=2)
    assert reduction.anchor.tolist() == [1, 2]
    assert reduction.group.tolist() == [-1, 0, 1, 1, 0]


def test_without_recycling_the_rest_is_dropped():
    scores = torch.tensor([0.2, 0.8, 0.1, 0.4])
    reduction = reduce_tokens(scores, torch.randn(4, 3), n_out=2, n_recycled=0)
    assert reduction.kept.tolist() == [1, 3]
    assert reduction.status.tolist() == [DROPPED, KEPT, DROPPED, KEPT]


@pytest.mark.parametrize("weighting", ["score", "mean", "paper"])
def test_recycled_values_are_weighted_means_of_each_group(weighting):
    scores = torch.tensor([0.9, 0.6, 0.3, 0.1])
    values = torch.tensor([[0.0], [10.0], [20.0], [40.0]])
    reduction = reduce_tokens(scores, torch.ones(4, 2), n_out=2, n_recycled=1)
    members = {"score": [0.6, 0.3, 0.1], "mean": [1.0, 1.0, 1.0], "paper": [1.0, 2.0, 3.0]}[weighting]
    expected = sum(w * v for w, v in zip(members, [10.0, 20.0, 40.0])) / sum(members)
    got = recycled_values(values, scores, reduction, weighting)
    assert got.shape == (1, 1)
    assert float(got) == pytest.approx(expected, rel=1e-6)
    out = apply_reduction(values, scores, reduction, weighting)
    assert out[:, 0].tolist() == pytest.approx([0.0, expected])


def test_apply_reduction_keeps_extra_dimensions():
    scores = torch.tensor([0.3, 0.9, 0.1, 0.5, 0.2])
    values = torch.arange(5 * 4 * 2, dtype=torch.float32).reshape(5, 4, 2)
    reduction = reduce_tokens(scores, values.reshape(5, -1), n_out=3, n_recycled=1)
    out = apply_reduction(values, scores, reduction, "mean")
    assert out.shape == (3, 4, 2)
    # Top two are 1 and 3; token 0 is the best discarded one, so it anchors 0, 2 and 4.
    assert reduction.kept.tolist() == [0, 1, 3]
    torch.testing.assert_close(out[0], values[[0, 2, 4]].mean(0))
    torch.testing.assert_close(out[1], values[1])
    torch.testing.assert_close(out[2], values[3])
