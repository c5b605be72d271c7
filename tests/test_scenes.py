"""The synthetic visual-question generator: deterministic, disjoint splits, valid one-word answers."""

from __future__ import annotations

import numpy as np
import pytest

from illava.lab import scenes

SAMPLES_PER_KIND = 40
ANSWERS = {
    "colour": set(scenes.COLOURS),
    "shape": set(scenes.SHAPES),
    "count": set(scenes.NUMBERS),
    "exist": {"yes", "no"},
    "position": {"yes", "no"},
    "motion": set(scenes.DIRECTIONS),
    "appear": set(scenes.COLOURS) | set(scenes.SHAPES),
    "disappear": set(scenes.COLOURS) | set(scenes.SHAPES),
    "more": set(scenes.ORDINALS),
}


def _equal(a: scenes.Sample, b: scenes.Sample) -> bool:
    same_pixels = all(np.array_equal(x, y) for x, y in zip(a.images + a.frames, b.images + b.frames))
    return (a.family, a.question, a.answer, len(a.images), len(a.frames)) == (
        b.family, b.question, b.answer, len(b.images), len(b.frames)
    ) and same_pixels


@pytest.mark.parametrize("kind", scenes.KINDS)
def test_same_seed_same_sample(kind):
    for index in (0, 7):
        assert _equal(scenes.sample("test", kind, index), scenes.sample("test", kind, index))
    assert not _equal(scenes.sample("test", kind, 0), scenes.sample("test", kind, 1))


def test_splits_use_disjoint_seeds():
    train = {scenes.seed_for("train", i) for i in (0, 1, 999, scenes.TEST_SEED_OFFSET - 1)}
    test = {scenes.seed_for("test", i) for i in (0, 1, 999, scenes.TEST_SEED_OFFSET - 1)}
    assert not train & test
    assert max(train) < min(test)
    with pytest.raises(ValueError):
        scenes.seed_for("train", scenes.TEST_SEED_OFFSET)
    with pytest.raises(ValueError):
        scenes.seed_for("validation", 0)


def test_train_and_test_samples_differ():
    for kind in scenes.KINDS:
        assert not _equal(scenes.sample("train", kind, 3), scenes.sample("test", kind, 3))


@pytest.mark.parametrize("kind", scenes.KINDS)
def test_every_family_gives_one_word_answers_from_its_set(kind):
    seen = set()
    vocabulary = set(scenes.vocabulary())
    for index in range(SAMPLES_PER_KIND):
        sample = scenes.sample("train", kind, index)
        seen.add(sample.family)
        assert sample.family in scenes.FAMILIES[kind]
        assert sample.answer in ANSWERS[sample.family], (sample.question, sample.answer)
        assert len(sample.answer.split()) == 1
        assert set(sample.question.replace("?", " ?").split()) <= vocabulary, sample.question
    assert seen == set(scenes.FAMILIES[kind])


@pytest.mark.parametrize("kind", scenes.KINDS)
def test_rendered_media_have_the_documented_shapes(kind):
    for index in range(10):
        sample = scenes.sample("test", kind, index)
        if kind == "video":
            assert not sample.images and 8 <= len(sample.frames) <= 16
            assert {frame.shape for frame in sample.frames} == {sample.frames[0].shape}
            assert sample.frames[0].shape[:2] in scenes.VIDEO_SIZES
            media = sample.frames
        else:
            assert not sample.frames and len(sample.images) == (2 if kind == "multi" else 1)
            assert all(image.shape[:2] in scenes.IMAGE_SIZES for image in sample.images)
            media = sample.images
        for pixels in media:
            assert pixels.dtype == np.uint8 and pixels.shape[2] == 3
            assert pixels.std() > 5, "backgrounds are textured, never flat"


def test_answers_are_not_one_constant():
    for kind in scenes.KINDS:
        answers = {scenes.sample("test", kind, i).answer for i in range(SAMPLES_PER_KIND)}
        assert len(answers) >= 2


def test_objects_are_inside_and_apart():
    rng = np.random.default_rng(0)
    for height, width in scenes.IMAGE_SIZES:
        shapes = scenes.random_shapes(rng, height, width, 6)
        assert len({(s.colour, s.kind) for s in shapes}) == 6
        for i, a in enumerate(shapes):
            assert a.radius <= a.x <= width - a.radius and a.radius <= a.y <= height - a.radius
            for b in shapes[i + 1 :]:
                assert np.hypot(a.x - b.x, a.y - b.y) > a.radius + b.radius


def test_motion_moves_the_named_object_the_answered_way():
    for index in range(40):
        sample = scenes.sample("test", "video", index)
        if sample.family != "motion":
            continue
        colour = np.array(scenes.COLOURS[sample.question.split()[4]])
        centres = []
        for frame in (sample.frames[0], sample.frames[-1]):
            mask = np.abs(frame.astype(int) - colour).sum(-1) < 30
            ys, xs = np.nonzero(mask)
            centres.append((xs.mean(), ys.mean()))
        dx, dy = centres[1][0] - centres[0][0], centres[1][1] - centres[0][1]
        expected = ("right" if dx > 0 else "left") if abs(dx) > abs(dy) else ("down" if dy > 0 else "up")
        assert expected == sample.answer, sample.question


def test_conversations_ask_distinct_valid_questions_about_one_scene():
    vocabulary = set(scenes.vocabulary())
    for index in range(30):
        chat = scenes.conversation(index, turns=4)
        again = scenes.conversation(index, turns=4)
        assert np.array_equal(chat.image, again.image) and chat.turns == again.turns and chat.shapes == again.shapes
        asked = chat.turns
        questions = [question for _, question, _ in asked]
        assert len(questions) == len(set(questions)) == 4
        for family, question, answer in asked:
            assert set(question.replace("?", " ?").split()) <= vocabulary
            if family == "describe":
                names = answer.split(", ")
                assert 1 <= len(names) <= scenes.MAX_OBJECTS and all(name.split()[0] in scenes.COLOURS for name in names)
            else:
                assert answer in ANSWERS[family]
    assert not np.array_equal(scenes.conversation(0).image, scenes.conversation(0, split="test").image)


def test_the_curriculum_draws_fewer_larger_objects():
    for index in range(20):
        easy = scenes.conversation(index, difficulty=0.0).turns
        count = [answer for family, question, answer in easy if question == "how many objects are there?"]
        assert all(answer == "one" for answer in count)
    with pytest.raises(ValueError, match="difficulty"):
        scenes.conversation(0, difficulty=1.5)


def test_crowded_placement_starts_over_instead_of_looping():
    # Two shapes this large fit in 224x224 only near opposite corners: a first shape placed near the
    # centre leaves no room, so placement must start over.
    rng = np.random.default_rng(0)
    for _ in range(20):
        a, b = scenes.random_shapes(rng, 224, 224, 2, (0.25, 0.25))
        assert np.hypot(a.x - b.x, a.y - b.y) > a.radius + b.radius


@pytest.mark.parametrize("kind", scenes.KINDS)
def test_samples_record_the_objects_drawn_in_each_picture(kind):
    for index in range(12):
        sample = scenes.sample("train", kind, index)
        pictures = sample.images + sample.frames
        assert len(sample.shapes) == len(pictures)
        for pixels, shapes in zip(pictures, sample.shapes):
            for shape in shapes:
                centre = pixels[int(shape.y), int(shape.x)].astype(int)
                assert np.abs(centre - scenes.COLOURS[shape.colour]).sum() < 10, (sample.question, shape)


def test_referred_names_are_the_objects_that_decide_the_answer():
    checked = set()
    for kind in scenes.KINDS:
        for index in range(60):
            s = scenes.sample("train", kind, index)
            names = scenes.referred_names(s.family, s.question, s.answer, s.shapes)
            first, last = ({shape.name: shape for shape in s.shapes[i]} for i in (0, -1))
            if s.family == "colour":
                assert [name.split()[0] for name in names] == [s.answer]
            elif s.family == "shape":
                assert [name.split()[1] for name in names] == [s.answer]
            elif s.family == "count":
                assert len(names) == scenes.NUMBERS.index(s.answer)
            elif s.family == "exist":
                assert len(names) == (s.answer == "yes")
            elif s.family == "position":
                assert len(names) == 2 and all(name in s.question for name in names)
            elif s.family == "motion":
                (name,) = names
                assert (first[name].x, first[name].y) != (last[name].x, last[name].y)
            elif s.family in ("appear", "disappear"):
                (name,) = names
                assert (name in last) == (s.family == "appear") and (name in first) == (s.family == "disappear")
                assert s.answer in name.split()
            elif s.family == "more":
                per_image = [sum(shape.name in names for shape in shapes) for shapes in s.shapes]
                assert scenes.ORDINALS[int(per_image[1] > per_image[0])] == s.answer
            checked.add(s.family)
    assert checked == {family for families in scenes.FAMILIES.values() for family in families}
    described = 0
    for index in range(10):
        chat = scenes.conversation(index, turns=6)
        for family, question, answer in chat.turns:
            names = scenes.referred_names(family, question, answer, [chat.shapes])
            assert names <= {shape.name for shape in chat.shapes}
            if family == "describe":
                assert names == {answer.split(", ")[0]}
                described += 1
    assert described
