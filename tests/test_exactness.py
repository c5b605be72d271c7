"""With merging off, iLLaVA's output equals vanilla transformers bit for bit."""

import pytest
import torch

from helpers import illava_generate, vanilla_generate
from illava import MergeConfig

# Stage layers present but keeping everything: iLLaVA's own encoder and decoder loops run.
IDENTITY = MergeConfig(stage1_layers=(1, 3), stage1_keep=1.0, stage2_layers=(1, 2), stage2_keep=1.0)
# The paper's peers keeping everything: their own scoring (the [CLS] stand-in, SparseVLM's raters) runs.
PEERS_KEEPING_EVERYTHING = (
    MergeConfig(method="fastervlm", stage1_layers=(4,)),
    MergeConfig(method="pyramiddrop", stage2_layers=(1, 2, 3)),
    MergeConfig(method="sparsevlm", stage2_layers=(1, 2)),
)


def cases(images):
    return {
        "one image": [([images[0]], "What is this?")],
        "two images": [([images[0], images[1]], "Compare the two pictures.")],
        "batch of two": [([images[1]], "Describe it."), ([images[2], images[0]], "Which one is brighter, and why?")],
    }


@pytest.mark.parametrize("case", ["one image", "two images", "batch of two"])
@pytest.mark.parametrize("config", [MergeConfig(), IDENTITY], ids=["off", "identity-loops"])
def test_merging_off_equals_vanilla_generate_exactly(lvlm, images, case, config):
    requests = cases(images)[case]
    expected_ids, expected_logits = vanilla_generate(lvlm, requests)
    result = illava_generate(lvlm, requests, config)
    for b in range(len(requests)):
        got = torch.tensor(result.ids[b])
        assert torch.equal(got, expected_ids[b, : got.numel()])
        assert torch.equal(result.logits[b], expected_logits[b])
        tokens = result.stats[b]["visual_tokens"]
        assert tokens["llm_after_stage2"] == tokens["llm_input"] == tokens["llm_input_full"]


@pytest.mark.parametrize("config", PEERS_KEEPING_EVERYTHING, ids=lambda config: config.method)
def test_the_papers_peers_keeping_everything_equals_vanilla_exactly(lvlm, images, config):
    requests = cases(images)["batch of two"]
    expected_ids, expected_logits = vanilla_generate(lvlm, requests)
    result = illava_generate(lvlm, requests, config)
    for b in range(len(requests)):
        assert torch.equal(torch.tensor(result.ids[b]), expected_ids[b, : len(result.ids[b])])
        assert torch.equal(result.logits[b], expected_logits[b])


def test_system_prompt_matches_vanilla(qwen25, images):
    requests = [([images[0]], "Name one colour.")]
    expected_ids, expected_logits = vanilla_generate(qwen25, requests, system_prompt="Answer in one word.")
    result = illava_generate(qwen25, requests, MergeConfig(), system_prompt="Answer in one word.")
    assert torch.equal(result.logits[0], expected_logits[0])
