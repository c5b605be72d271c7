"""Held-out accuracy of a model on illava.scenes questions, through the library's own encode and generate.

The harness around it (``python -m illava eval``) lives in ``illava.harness``. A prediction counts as correct when the generated text, stripped and lower-cased, equals the
one-word answer exactly.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from ..config import MergeConfig
from ..generation import GenerationOptions, generate
from ..loading import LVLM
from ..encoding import encode
from . import scenes

# Scene videos are frame stacks; feeding them at one frame rate keeps every frame and gives each
# temporal patch pair one second, the same in training and evaluation.
VIDEO_FPS = 2.0
MAX_FRAMES = 16
ANSWER_OPTIONS = GenerationOptions(max_new_tokens=4)


@dataclass
class Score:
    """Correct answers out of questions asked."""

    correct: int = 0
    total: int = 0

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0


@dataclass
class KindResult:
    """Accuracy on one kind of sample (image, video or multi), overall and per question family."""

    kind: str
    overall: Score = field(default_factory=Score)
    families: dict[str, Score] = field(default_factory=dict)
    kept_fraction: list[float] = field(default_factory=list)
    work: list[float] = field(default_factory=list)

    def add(self, family: str, correct: bool) -> None:
        for score in (self.overall, self.families.setdefault(family, Score())):
            score.correct += int(correct)
            score.total += 1


def answer(lvlm: LVLM, sample: scenes.Sample, config: MergeConfig) -> tuple[str, dict]:
    """The model's greedy answer to ``sample`` (stripped, lower-cased) and its generation stats."""
    if sample.frames:
        visuals = encode(
            lvlm, config=config, video=np.stack(sample.frames), video_fps=VIDEO_FPS, fps=VIDEO_FPS, max_frames=MAX_FRAMES
        )
    else:
        visuals = encode(lvlm, [Image.fromarray(image) for image in sample.images], config)
    result = generate(lvlm, visuals, sample.question, config, ANSWER_OPTIONS)
    return result.texts[0].strip().lower(), result.stats[0]


def evaluate(
    lvlm: LVLM, config: MergeConfig | None = None, kind: str = "image", n: int = 200, split: str = "test", first: int = 0
) -> KindResult:
    """Ask questions ``first .. first + n - 1`` of ``kind`` in ``split`` and score the answers."""
    config = config or MergeConfig()
    result = KindResult(kind)
    for index in range(first, first + n):
        sample = scenes.sample(split, kind, index)
        text, stats = answer(lvlm, sample, config)
        result.add(sample.family, text == sample.answer)
        tokens = stats["visual_tokens"]
        result.kept_fraction.append(tokens["llm_after_stage2"] / tokens["llm_input_full"])
        result.work.append(stats["work"])
    return result


def prior_accuracy(kind: str, n: int, first: int = 0) -> float:
    """Accuracy of answering every question with its family's most common training answer.

    The floor a model that ignores the visuals can reach: what the held-out accuracy must beat.
    """
    guess = common_answers(kind)
    hits = 0
    for index in range(first, first + n):
        sample = scenes.sample("test", kind, index)
        hits += guess.get(sample.family) == sample.answer
    return hits / n


@functools.lru_cache(maxsize=None)
def common_answers(kind: str, train_samples: int = 500) -> dict[str, str]:
    """The most common answer of each question family among the first training samples of ``kind``."""
    counts: dict[str, dict[str, int]] = {}
    for index in range(train_samples):
        sample = scenes.sample("train", kind, index)
        family = counts.setdefault(sample.family, {})
        family[sample.answer] = family.get(sample.answer, 0) + 1
    return {family: max(answers, key=answers.get) for family, answers in counts.items()}
