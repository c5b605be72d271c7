"""Held-out accuracy of a model on illava.scenes questions, through the library's own encode and generate.

    python -m illava.evaluate demo_model --n 200 --presets off paper-image paper-video fast

A prediction counts as correct when the generated text, stripped and lower-cased, equals the
one-word answer exactly.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from . import scenes
from .config import MergeConfig, preset
from .loading import LVLM
from .pipeline import GenerationOptions, encode, generate

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

    def add(self, family: str, correct: bool) -> None:
        for score in (self.overall, self.families.setdefault(family, Score())):
            score.correct += int(correct)
            score.total += 1


def answer(lvlm: LVLM, sample: scenes.Sample, config: MergeConfig) -> str:
    """The model's greedy answer to ``sample``, stripped and lower-cased."""
    if sample.frames:
        visuals = encode(
            lvlm, config=config, video=np.stack(sample.frames), video_fps=VIDEO_FPS, fps=VIDEO_FPS, max_frames=MAX_FRAMES
        )
    else:
        visuals = encode(lvlm, [Image.fromarray(image) for image in sample.images], config)
    return generate(lvlm, visuals, sample.question, config, ANSWER_OPTIONS).texts[0].strip().lower()


def evaluate(lvlm: LVLM, config: MergeConfig | None = None, kind: str = "image", n: int = 200, split: str = "test") -> KindResult:
    """Ask the first ``n`` questions of ``kind`` in ``split`` and score the answers."""
    config = config or MergeConfig()
    result = KindResult(kind)
    for index in range(n):
        sample = scenes.sample(split, kind, index)
        result.add(sample.family, answer(lvlm, sample, config) == sample.answer)
    return result


def report_line(name: str, result: KindResult) -> str:
    families = " ".join(f"{family}={score.accuracy:.3f}({score.total})" for family, score in sorted(result.families.items()))
    return f"{name:<12} {result.kind:<6} {result.overall.accuracy:.3f} ({result.overall.correct}/{result.overall.total})  {families}"


def main(argv: list[str] | None = None) -> int:
    from .loading import load

    parser = argparse.ArgumentParser(description="held-out accuracy on illava.scenes questions")
    parser.add_argument("model", help="model folder, e.g. demo_model")
    parser.add_argument("--n", type=int, default=200, help="questions per kind")
    parser.add_argument("--kinds", nargs="+", default=list(scenes.KINDS), choices=scenes.KINDS)
    parser.add_argument("--presets", nargs="+", default=["off"], help="merge presets, scaled to the model's depths")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    lvlm = load(args.model, device="cpu", dtype="fp32")
    depths = (lvlm.backbone.vit_depth, lvlm.backbone.llm_depth)
    for name in args.presets:
        config = preset(name, *depths)
        for kind in args.kinds:
            print(report_line(name, evaluate(lvlm, config, kind, args.n)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
