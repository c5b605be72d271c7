"""The demo model's training script: its pointing loss, and a short run end to end."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from illava.lab import scenes

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "train_demo"
MODULES = ("model", "labels", "batches", "attention", "probes", "training")
LAYER = 1


@pytest.fixture(scope="module")
def train_demo():
    """The script's modules, imported as it imports them (top-level, from its folder), their public names in one namespace."""
    sys.path.insert(0, str(SCRIPT))
    spec = importlib.util.spec_from_file_location("train_demo", SCRIPT / "__main__.py")
    entry = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(entry)
    modules = [importlib.import_module(name) for name in MODULES] + [entry]
    yield SimpleNamespace(**{name: value for module in modules for name, value in vars(module).items() if not name.startswith("_")})
    sys.path.remove(str(SCRIPT))
    for name in MODULES:
        del sys.modules[name]


@pytest.fixture(scope="module")
def parts(train_demo):
    torch.manual_seed(0)
    tokenizer = train_demo.build_tokenizer()
    processor = train_demo.build_processor(tokenizer)
    sizes = argparse.Namespace(hidden=64, heads=2, llm_depth=2, vit_depth=2, vit_width=64, rope_theta=1e4, interleave_rope=True)
    model = train_demo.build_model(tokenizer, sizes).eval()
    model.set_attn_implementation("eager")
    return processor, model


def _examples(train_demo, kind: str):
    if kind == "image":
        return [train_demo.Example.conversation(index, 6) for index in range(3)]
    return [train_demo.Example.from_sample(scenes.sample("train", kind, index)) for index in range(4)]


def _batch(train_demo, processor, model, examples) -> tuple[dict, list[dict]]:
    """The collated model inputs of ``examples`` (training-only entries removed) and each one's encoding."""
    encoded = [train_demo.encode_example(processor, e) for e in examples]
    batch = train_demo.collate(encoded, model.config)
    for key in ("families", "targets", "places", "named", "identities"):
        batch.pop(key)
    return batch, encoded


def _answers(batch: dict, model, targets):
    """(row, position, visual, pointed) per answer: the position predicting it, read off the ids and labels themselves."""
    labels, ids = batch["labels"], batch["input_ids"]
    first = (labels[:, 1:] != -100) & (labels[:, :-1] == -100)
    for row in range(len(ids)):
        visual = ((ids[row] == model.config.image_token_id) | (ids[row] == model.config.video_token_id)).nonzero().flatten()
        for position, pointed in zip(first[row].nonzero().flatten().tolist(), targets[row]):
            yield row, position, visual, pointed


@pytest.mark.parametrize("kind", scenes.KINDS)
def test_pointing_loss_is_the_log_attention_on_the_referred_objects(train_demo, parts, kind):
    processor, model = parts
    batch, encoded = _batch(train_demo, processor, model, _examples(train_demo, kind))
    targets = [e["targets"] for e in encoded]
    pointing = train_demo.AnswerAttention(model, LAYER)
    with torch.no_grad():
        output = model(**batch, output_attentions=True)
        loss = pointing.loss(batch, targets)
    weights = output.attentions[LAYER]
    expected = []
    for row, position, visual, pointed in _answers(batch, model, targets):
        for head, tokens in enumerate(pointed):
            if tokens is not None:
                assert tokens.max() < len(visual)
                expected.append(-weights[row, head, position, visual[torch.from_numpy(tokens)]].sum().log())
    assert expected, "no answer referred to an object"
    torch.testing.assert_close(loss, torch.stack(expected).mean(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", scenes.KINDS)
def test_scoring_loss_is_the_log_share_of_head_averaged_visual_attention_on_the_asked_objects(train_demo, parts, kind):
    processor, model = parts
    batch, encoded = _batch(train_demo, processor, model, _examples(train_demo, kind))
    targets = [e["targets"] for e in encoded]
    scoring = train_demo.ScoringAttention(model, 0)
    with torch.no_grad():
        output = model(**batch, output_attentions=True)
        loss = scoring.loss(batch, targets)
    weights = output.attentions[0].mean(1)
    expected = []
    for row, position, visual, pointed in _answers(batch, model, targets):
        asked = sorted({int(token) for tokens in pointed if tokens is not None for token in tokens})
        if asked:
            on_visual = weights[row, position, visual]
            expected.append(-(on_visual[asked].sum() / on_visual.sum()).log())
    assert expected, "no answer referred to an object"
    torch.testing.assert_close(loss, torch.stack(expected).mean(), rtol=1e-4, atol=1e-5)


def test_referred_tokens_cover_the_object_asked_about(train_demo):
    star = scenes.Shape("star", "red", x=150.0, y=50.0, radius=30.0)
    circle = scenes.Shape("circle", "blue", x=30.0, y=170.0, radius=25.0)
    # A 224x224 image seen as 8x8 tokens of 28 pixels: the star's centre is in row 1, column 5.
    groups = [(224, 224, 8, 8, [star, circle])]
    pointer = train_demo.Pointer
    tokens = train_demo.referred_tokens(groups, pointer(frozenset({"red star"})))
    assert 1 * 8 + 5 in tokens and all(abs(t // 8 - 1) <= 1 and abs(t % 8 - 5) <= 1 for t in tokens)
    circle_tokens = train_demo.referred_tokens(groups, pointer(frozenset({"blue circle"})))
    both = train_demo.referred_tokens(groups + groups, pointer(frozenset({"blue circle"})))
    assert len(both) == 2 * len(circle_tokens) and both.max() >= 64
    first = train_demo.referred_tokens(groups + groups, pointer(frozenset({"blue circle"}), "first"))
    last = train_demo.referred_tokens(groups + groups, pointer(frozenset({"blue circle"}), "last"))
    assert first.tolist() == circle_tokens.tolist() and last.tolist() == (circle_tokens + 64).tolist()
    assert train_demo.referred_tokens(groups, pointer(frozenset())) is None


def test_position_and_motion_questions_point_the_two_heads_at_the_two_places_compared(train_demo):
    star = scenes.Shape("star", "red", x=150.0, y=50.0, radius=30.0)
    circle = scenes.Shape("circle", "blue", x=30.0, y=170.0, radius=25.0)
    pictures = [[star, circle]]
    pointer = train_demo.Pointer
    pointed = train_demo.pointed_names("position", "is the blue circle left of the red star?", "yes", pictures)
    assert pointed == (pointer(frozenset({"blue circle"})), pointer(frozenset({"red star"})))
    pointed = train_demo.pointed_names("position", "is the red star above the blue circle?", "yes", pictures)
    assert pointed == (pointer(frozenset({"red star"})), pointer(frozenset({"blue circle"})))
    pointed = train_demo.pointed_names("motion", "which way is the red star moving?", "left", [[star], [star]])
    assert pointed == (pointer(frozenset({"red star"}), "first"), pointer(frozenset({"red star"}), "last"))
    pointed = train_demo.pointed_names("colour", "what colour is the star?", "red", pictures)
    assert pointed == (pointer(frozenset({"red star"})), pointer(frozenset()))


def test_token_places_run_across_each_image_and_through_the_clip(train_demo):
    groups = [(224, 112, 2, 4, [])] * 2
    places = train_demo.token_places(groups, [0.25, 0.75])
    assert places.shape == (16, 3)
    assert places[:4, 0].tolist() == [-0.75, -0.25, 0.25, 0.75] and places[:8, 1].unique().tolist() == [-0.5, 0.5]
    assert places[:8, 2].unique().tolist() == [-0.5] and places[8:, 2].unique().tolist() == [0.5]
    assert train_demo.token_places(groups[:1], [None])[:, 2].isnan().all()


def _probed(train_demo, parts, kind: str, probe_class, key: str):
    """A probe of layer ``LAYER``'s input, its loss on a batch of ``kind`` examples, and what to recompute that from.

    Returns the probe, its loss, the batch, each example's encoding and the states the layer's attention reads.
    """
    processor, model = parts
    batch, encoded = _batch(train_demo, processor, model, _examples(train_demo, kind))
    probe = probe_class(model, LAYER)
    with torch.no_grad():
        output = model(**batch, output_hidden_states=True)
        loss = probe.loss(batch, [e[key] for e in encoded])
        states = model.model.language_model.layers[LAYER].input_layernorm(output.hidden_states[LAYER])
    return probe, loss, batch, encoded, states


@pytest.mark.parametrize("kind", scenes.KINDS)
def test_place_loss_is_the_probe_error_on_every_known_coordinate(train_demo, parts, kind):
    placing, loss, batch, encoded, states = _probed(train_demo, parts, kind, train_demo.PlaceProbe, "places")
    errors = []
    for row, e in enumerate(encoded):
        visual = batch["mm_token_type_ids"][row].nonzero().flatten()
        assert len(visual) == len(e["places"])
        predicted = placing.head(states[row, visual])
        errors.append((predicted - e["places"])[~e["places"].isnan()])
    assert torch.cat(errors).numel() > 0
    torch.testing.assert_close(loss, torch.cat(errors).square().mean(), rtol=1e-4, atol=1e-6)


def test_contrast_is_the_first_heads_mean_place_minus_the_seconds(train_demo):
    places = torch.tensor([[-0.5, 0.5, float("nan")], [0.5, 0.5, float("nan")], [0.5, -0.5, float("nan")]])
    contrast = train_demo.place_contrast(places, (np.array([0]), np.array([1, 2])))
    torch.testing.assert_close(contrast, torch.tensor([-1.0, 0.5]))
    assert train_demo.place_contrast(places, (np.array([0]), None)) is None


@pytest.mark.parametrize("kind", ["image", "video"])
def test_contrast_loss_is_the_probe_error_at_answers_that_compare_two_places(train_demo, parts, kind):
    processor, model = parts
    examples = [train_demo.Example.from_sample(s) for s in _compared_samples(kind)]
    batch, encoded = _batch(train_demo, processor, model, examples)
    # Layer 0: the last layer's entry in hidden_states has the final norm applied.
    contrasting = train_demo.ContrastProbe(model, 0)
    with torch.no_grad():
        output = model(**batch, output_hidden_states=True)
        loss = contrasting.loss(batch, [e["targets"] for e in encoded], [e["places"] for e in encoded])
    first = train_demo.answer_starts(batch["labels"])
    errors = []
    for row, e in enumerate(encoded):
        (pointed,) = e["targets"]
        contrast = train_demo.place_contrast(e["places"], pointed)
        assert contrast is not None
        position = first[row].nonzero().flatten()[0]
        errors.append(contrasting.head(output.hidden_states[1][row, position]) - contrast)
    torch.testing.assert_close(loss, torch.stack(errors).square().mean(), rtol=1e-4, atol=1e-6)


def _compared_samples(kind: str, count: int = 3) -> list[scenes.Sample]:
    family = "position" if kind == "image" else "motion"
    found = (scenes.sample("train", kind, index) for index in range(400))
    return [sample for sample, _ in zip((s for s in found if s.family == family), range(count))]


def test_question_objects_are_the_first_two_noun_phrases_in_order(train_demo):
    colour, shape = list(scenes.COLOURS).index, scenes.SHAPES.index
    no_colour, no_shape = len(scenes.COLOURS), len(scenes.SHAPES)
    objects = train_demo.question_objects
    assert objects("is the red star left of the blue circle?") == (colour("red"), shape("star"), colour("blue"), shape("circle"))
    assert objects("what colour is the star?") == (no_colour, shape("star"), no_colour, no_shape)
    assert objects("what shape is the green object?") == (colour("green"), no_shape, no_colour, no_shape)
    assert objects("how many triangles are there?") == (no_colour, shape("triangle"), no_colour, no_shape)
    assert objects("how many objects are there?") == (no_colour, no_shape, no_colour, no_shape)


def test_token_identities_label_each_object_centre_and_nothing_else(train_demo):
    star = scenes.Shape("star", "red", x=150.0, y=50.0, radius=30.0)
    circle = scenes.Shape("circle", "blue", x=30.0, y=170.0, radius=25.0)
    identities = train_demo.token_identities([(224, 224, 8, 8, [star, circle]), (224, 224, 8, 8, [])])
    assert identities.shape == (128, 2)
    labelled = (identities[:, 0] >= 0).nonzero().flatten().tolist()
    assert labelled == [1 * 8 + 5, 6 * 8 + 1]
    assert identities[13].tolist() == [scenes.SHAPES.index("star"), list(scenes.COLOURS).index("red")]
    assert identities[49].tolist() == [scenes.SHAPES.index("circle"), list(scenes.COLOURS).index("blue")]


@pytest.mark.parametrize("kind", scenes.KINDS)
def test_query_loss_is_the_probe_cross_entropy_of_each_questions_objects_at_its_answer(train_demo, parts, kind):
    querying, loss, batch, encoded, states = _probed(train_demo, parts, kind, train_demo.QueryProbe, "named")
    labels = batch["labels"]
    first = (labels[:, 1:] != -100) & (labels[:, :-1] == -100)
    per_part = [[] for _ in querying.sizes]
    for row, e in enumerate(encoded):
        positions = first[row].nonzero().flatten()
        assert len(positions) == len(e["named"])
        logits = querying.head(states[row, positions])
        for part, (logit, named) in enumerate(zip(logits.split(querying.sizes, dim=-1), torch.tensor(e["named"]).T)):
            per_part[part].append(torch.nn.functional.cross_entropy(logit, named, reduction="none"))
    expected = torch.stack([torch.cat(part).mean() for part in per_part]).mean()
    torch.testing.assert_close(loss, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("kind", scenes.KINDS)
def test_name_loss_is_the_probe_cross_entropy_of_shape_and_colour_at_object_centres(train_demo, parts, kind):
    naming, loss, batch, encoded, states = _probed(train_demo, parts, kind, train_demo.NameProbe, "identities")
    centre_states, labels = [], []
    for row, e in enumerate(encoded):
        visual = batch["mm_token_type_ids"][row].nonzero().flatten()
        centred = e["identities"][:, 0] >= 0
        centre_states.append(states[row, visual[centred]])
        labels.append(e["identities"][centred])
    logits, labels = naming.head(torch.cat(centre_states)), torch.cat(labels)
    assert len(labels) > 0
    shape_logits, colour_logits = logits.split(naming.sizes, dim=-1)
    expected = (
        torch.nn.functional.cross_entropy(shape_logits, labels[:, 0]) + torch.nn.functional.cross_entropy(colour_logits, labels[:, 1])
    ) / 2
    torch.testing.assert_close(loss, expected, rtol=1e-4, atol=1e-6)


def test_a_layer_the_model_lacks_is_named(train_demo, parts):
    _, model = parts
    with pytest.raises(ValueError, match="--attention-layer must be an LLM layer from 0 to 1, got 2"):
        train_demo.AnswerAttention(model, 2)


def test_a_model_whose_heads_share_no_key_value_head_is_refused(train_demo):
    sizes = argparse.Namespace(hidden=64, heads=1, llm_depth=2, vit_depth=2, vit_width=64, rope_theta=1e4, interleave_rope=True)
    model = train_demo.build_model(train_demo.build_tokenizer(), sizes)
    with pytest.raises(ValueError, match="use --heads at least 2"):
        train_demo.AnswerAttention(model, 1)


@pytest.mark.parametrize("precision", ["--bf16", "--no-bf16"])
def test_a_short_run_saves_a_model_the_library_loads(train_demo, tmp_path, precision, monkeypatch):
    import illava
    from illava.lab.evaluate import answer

    out = tmp_path / "model"
    tiny = "--hidden 64 --heads 2 --llm-depth 2 --vit-depth 2 --vit-width 64 --batch 2 --attention-layer 1"
    command = f"train_demo.py --out {out} --steps 2 --vision-steps 2 --log-every 1 {tiny} {precision}"
    monkeypatch.setattr(sys, "argv", command.split())
    # The suite runs every test in inference mode; training needs gradients.
    with torch.inference_mode(False):
        train_demo.main()
    lvlm = illava.load(out, dtype="float32")
    text, stats = answer(lvlm, scenes.sample("test", "image", 0), illava.MergeConfig())
    assert isinstance(text, str) and stats["visual_tokens"]["llm_input_full"] > 0
