"""Label-free calibration: where to merge and how much, fitted to one model on the user's own inputs.

The measure is fidelity to the unmerged model. The unmerged model answers each input greedily
once; every candidate configuration is then made to give that same answer (teacher forcing through
the ordinary cached ``generate``), and its next-token distributions are compared with the unmerged
ones along the answer: the mean KL divergence KL(unmerged || merged) per answer token. It needs no
labels, reads the whole distribution (so near misses count before they flip an answer), and costs
one prefill plus a few decoding steps per candidate and input. The share of inputs whose answer
survives every step (``agreement``) is reported beside it.

The search runs per kind of input (images, video) and per budget (a share of the work on the
picture, as everywhere), coarse to fine. Every candidate is a placement whose keep ratios are solved
so that its work meets the budget (``budget.fit``): stage 2 alone at each usable LLM layer and
spread over the first layers, stage 1 alone at several relative depths of the encoder (from its
first block to its output, ranking by attention received or by distinctiveness) and spread over
every block, the peer methods that work there (ToMe, VisionZip), then both stages at the best
placements with the work split three ways, then the best one's recycled tokens and their weighting.
Encoder passes are shared between candidates with the same stage 1. For each budget the
configuration with the lowest KL whose measured work is within 2 points of the budget wins (a
cheaper one within ``kl_tolerance`` of it, when asked).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from . import __version__
from .budget import BUDGET_SLACK, STANDARD_BUDGETS, check_budget
from .config import MergeConfig
from .cost import cost_model
from .generation import GenerationOptions, generate_batch
from .loading import LVLM
from .media import to_pil_images
from .methods import method
from .profiles import KINDS, MergeProfile, ProfileEntry, model_identity
from .resolve import fitted, placed
from .video import DEFAULT_FPS, DEFAULT_MAX_FRAMES, load_video
from .encoding import VisualTokens, encode

# KL differences below this (nats per answer token) are ties, which the cheaper configuration wins.
KL_TIE = 1e-3
STAGE1_DEPTHS = (0.0, 0.25, 0.5, 0.75, 1.0)
STAGE2_DEPTHS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.65)
# How stage 1 ranks tokens at each place it is tried: attention received, or distinctiveness.
SCORES = ("illava", "distinct")
# The peers tried at their usual placements (ToMe in every encoder block, VisionZip and FasterVLM at its
# output, PyramidDrop and SparseVLM in the LLM).
PEERS = ("tome", "visionzip", "fastervlm", "pyramiddrop", "sparsevlm")
# Stage 1's share of the reduction (in log ratio) when both stages run.
STAGE1_SHARES = (0.25, 0.5, 0.75)
RECYCLED_CHOICES = (0, 1, 2, 4)
WEIGHTINGS = ("score", "paper", "mean")
ProgressCallback = Callable[[int, int, str], None]


@dataclass(frozen=True)
class CalibrationInput:
    """One unlabeled input: images (PIL) or a video (path, ComfyUI VIDEO or frame stack), and a prompt."""

    name: str
    prompt: str
    images: tuple = ()
    video: Any = None
    video_fps: float | None = None

    @property
    def kind(self) -> str:
        return "video" if self.video is not None else "image"

    def encode(self, lvlm: LVLM, config: MergeConfig) -> VisualTokens:
        if self.video is not None:
            return encode(lvlm, config=config, video=self.video, video_fps=self.video_fps, fps=self.video_fps or DEFAULT_FPS,
                          max_frames=DEFAULT_MAX_FRAMES)
        return encode(lvlm, list(self.images), config)


@dataclass(frozen=True)
class Measured:
    """One candidate configuration measured on one kind's inputs."""

    config: MergeConfig
    kl: float
    agreement: float
    work: float
    token_fraction: float


@dataclass
class CalibrationReport:
    """The profile calibration produced, every candidate it measured, and what the search cost."""

    profile: MergeProfile
    measured: dict[str, list[Measured]] = field(default_factory=dict)
    seconds: float = 0.0
    skipped: list[str] = field(default_factory=list)

    def table(self) -> str:
        """The chosen configuration per kind and budget, as a Markdown table."""
        rows = ["| kind | budget | stage 1 | stage 2 | recycled | work | tokens kept | KL | answers kept |",
                "|---|---|---|---|---|---|---|---|---|"]
        for kind, entries in self.profile.entries.items():
            for e in entries:
                rows.append(
                    f"| {kind} | {e.budget:.0%} | {_stage_text(e.config, 1)} | {_stage_text(e.config, 2)} | "
                    f"{e.config.stage1_recycled if e.config.stage1_active else e.config.stage2_recycled} "
                    f"({e.config.recycle_weighting}) | {e.work:.2f} | {e.token_fraction:.1%} | {e.kl:.3f} | "
                    f"{e.agreement:.0%} |"
                )
        return "\n".join(rows)


def _stage_text(config: MergeConfig, stage: int) -> str:
    layers = config.stage1_layers if stage == 1 else config.stage2_layers
    if not layers:
        return "-"
    keep = config.stage1_keep if stage == 1 else config.stage2_keep
    where = f"{layers[0]}" if len(layers) == 1 else f"{layers[0]}-{layers[-1]}"
    name = "" if config.method == "illava" else f" {config.method}"
    return f"layer {where} keeps {keep:.0%}{name}"


def parse_budgets(text: str) -> list[float]:
    """Budgets from text like '0.5, 0.33, 0.11'; a ValueError saying so for anything else."""
    try:
        budgets = [float(part) for part in text.replace(",", " ").split()]
    except ValueError:
        raise ValueError(f"budgets must be fractions like '0.5, 0.33, 0.11', got {text!r}") from None
    if not budgets or not all(0.0 < b <= 1.0 for b in budgets):
        raise ValueError(f"budgets must be fractions in (0, 1] like '0.5, 0.33, 0.11', got {text!r}")
    return budgets


def read_inputs(
    images: Sequence[str] = (), videos: Sequence[str] = (), prompt: str | None = None
) -> tuple[list[CalibrationInput], list[str]]:
    """Calibration inputs from image and video files, and the files that could not be read (with why).

    ``prompt`` asks every input; by default a short description request.
    """
    inputs, skipped = [], []
    for path in images:
        try:
            image = to_pil_images(path)
        except (ValueError, OSError) as error:
            skipped.append(f"{path}: {error}")
            continue
        inputs.append(CalibrationInput(str(path), prompt or "Describe this image.", tuple(image)))
    for path in videos:
        try:
            frames = load_video(path, DEFAULT_FPS, DEFAULT_MAX_FRAMES)
        except (ValueError, OSError, RuntimeError) as error:
            skipped.append(f"{path}: {error}")
            continue
        inputs.append(CalibrationInput(str(path), prompt or "Describe this video.", video=frames.pixels, video_fps=frames.fps))
    return inputs, skipped


def calibrate(
    lvlm: LVLM,
    inputs: Sequence[CalibrationInput],
    budgets: Sequence[float] = STANDARD_BUDGETS,
    max_new_tokens: int = 16,
    batch_size: int = 8,
    progress: ProgressCallback | None = None,
    check_interrupt: Callable[[], None] | None = None,
    description: str = "",
    kl_tolerance: float = 0.0,
) -> CalibrationReport:
    """Fit merge settings to ``lvlm`` on unlabeled ``inputs`` at each of ``budgets``; returns the profile.

    At each budget the most faithful configuration wins; ``kl_tolerance`` (nats per answer token)
    lets a cheaper one win when it is that close to the most faithful, trading fidelity for speed.
    Deterministic for the same inputs. ``check_interrupt`` is called between candidates (raise there
    to stop: nothing is returned or written). Nothing is saved here: see ``profiles.write_profile``.
    """
    if not 0.0 <= kl_tolerance < 10.0:
        raise ValueError(f"kl_tolerance must be in [0, 10) nats per answer token, got {kl_tolerance}")
    if not inputs:
        raise ValueError("calibration needs at least one image or video: give some of your own inputs")
    budgets = sorted({check_budget(b) for b in budgets}, reverse=True)
    start = time.perf_counter()
    searches = {
        kind: _Search(lvlm, [i for i in inputs if i.kind == kind], max_new_tokens, batch_size, check_interrupt, kl_tolerance)
        for kind in KINDS
        if any(i.kind == kind for i in inputs)
    }
    total = sum(search.planned(budgets) for search in searches.values())
    done = 0

    def step(text: str) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(min(done, total), total, text)

    entries, measured = {}, {}
    for kind, search in searches.items():
        search.on_candidate = step
        entries[kind] = tuple(search.run(budgets))
        measured[kind] = list(search.results.values())
    profile = MergeProfile(
        identity=model_identity(lvlm.path),
        entries=entries,
        calibration={
            "images": sum(i.kind == "image" for i in inputs),
            "videos": sum(i.kind == "video" for i in inputs),
            "prompts": sorted({i.prompt for i in inputs})[:8],
            "description": description,
            "measure": "mean KL(unmerged || merged) per answer token, answers teacher-forced",
            "max_new_tokens": max_new_tokens,
            "kl_tolerance": kl_tolerance,
            "seconds": round(time.perf_counter() - start, 1),
        },
        version=__version__,
    )
    return CalibrationReport(profile, measured, time.perf_counter() - start)


class _Search:
    """The search for one kind of input: the unmerged reference once, then candidates on demand, memoised."""

    def __init__(self, lvlm: LVLM, inputs: list[CalibrationInput], max_new_tokens: int, batch_size: int, check_interrupt,
                 kl_tolerance: float):
        self.lvlm = lvlm
        self.kl_tolerance = kl_tolerance
        self.cost = cost_model(lvlm.backbone)
        self.inputs = inputs
        self.batch_size = batch_size
        self.check_interrupt = check_interrupt
        self.on_candidate: Callable[[str], None] = lambda text: None
        self.results: dict[MergeConfig, Measured] = {}
        self.encoded: dict[tuple, list[VisualTokens]] = {}
        backbone = lvlm.backbone
        self.stage1_layers = sorted({min(backbone.vit_depth, max(1, round(d * backbone.vit_depth))) for d in STAGE1_DEPTHS})
        self.kind = inputs[0].kind
        choices = backbone.stage2_choices or tuple(range(1, backbone.llm_depth))
        if len(choices) > len(STAGE2_DEPTHS):
            choices = tuple(sorted({min(choices, key=lambda c: abs(c - d * backbone.llm_depth)) for d in STAGE2_DEPTHS}))
        self.stage2_layers = list(choices)
        reference = self._generate(MergeConfig(), max_new_tokens)
        self.answers = [ids for result in reference for ids in result.ids]
        self.reference_logits = [logits for result in reference for logits in result.logits]
        self.steps = [min(len(ids) + 1, logits.shape[0]) for ids, logits in zip(self.answers, self.reference_logits)]

    def planned(self, budgets: Sequence[float]) -> int:
        """Candidates the search measures (the progress bar's length)."""
        first = len(self.stage2_layers) + 1 + len(SCORES) * len(self.stage1_layers) + 1 + len(PEERS)
        return len(budgets) * (first + 2 * 2 * len(STAGE1_SHARES) + (len(RECYCLED_CHOICES) - 1) + (len(WEIGHTINGS) - 1))

    def run(self, budgets: Sequence[float]) -> list[ProfileEntry]:
        return [self._best_at(budget) for budget in budgets]

    def _best_at(self, budget: float) -> ProfileEntry:
        depth = self.lvlm.backbone.vit_depth

        def at(config: MergeConfig) -> Measured | None:
            return self.measure(fitted(config, budget, self.lvlm, self.kind).config)

        early = tuple(self.stage2_layers[:2])
        stage2 = [at(MergeConfig(stage2_layers=(layer,))) for layer in self.stage2_layers]
        stage2.append(at(MergeConfig(stage2_layers=early)) if len(early) > 1 else None)
        stage1 = [at(MergeConfig(stage1_layers=(layer,), method=name)) for layer in self.stage1_layers for name in SCORES]
        stage1.append(at(MergeConfig(stage1_layers=tuple(range(1, depth + 1)))))
        peers = [at(placed(name, self.lvlm.backbone, self.kind)) for name in PEERS]
        both = []
        for s2 in _best(stage2, budget, 2, self.kl_tolerance):
            for s1 in _best(stage1, budget, 2, self.kl_tolerance):
                for share in STAGE1_SHARES:
                    both.append(at(MergeConfig(
                        stage1_layers=s1.config.stage1_layers, stage1_keep=0.5**share, method=s1.config.method,
                        stage2_layers=s2.config.stage2_layers, stage2_keep=0.5 ** (1 - share),
                    )))
        best = _best(stage2 + stage1 + peers + both, budget, 1, self.kl_tolerance)[0]
        if method(best.config.method).recycles:
            recycled = [self.measure(_recycled(best.config, n)) for n in RECYCLED_CHOICES]
            best = _best(recycled, budget, 1, self.kl_tolerance)[0]
            if (best.config.stage1_recycled if best.config.stage1_active else best.config.stage2_recycled) > 0:
                weighted = [self.measure(best.config.with_(recycle_weighting=w)) for w in WEIGHTINGS]
                best = _best(weighted, budget, 1, self.kl_tolerance)[0]
        return ProfileEntry(budget, best.config, best.kl, best.agreement, best.work, best.token_fraction)

    def measure(self, config: MergeConfig) -> Measured | None:
        """KL, agreement, work and token fraction of ``config`` over this kind's inputs (memoised); None
        where the model cannot run it (a method a backbone refuses for this kind of input)."""
        if config in self.results:
            return self.results[config]
        if self.check_interrupt is not None:
            self.check_interrupt()
        try:
            results = self._generate(config, forced=True)
        except ValueError:
            return None
        kls, kept, works, fractions = [], [], [], []
        offset = 0
        for result in results:
            for b, stats in enumerate(result.stats):
                i = offset + b
                steps = self.steps[i]
                reference = torch.log_softmax(self.reference_logits[i][:steps], dim=-1)
                merged = torch.log_softmax(result.logits[b][:steps], dim=-1)
                kls.append(float((reference.exp() * (reference - merged)).sum(-1).mean()))
                kept.append(bool(torch.equal(reference.argmax(-1), merged.argmax(-1))))
                tokens = stats["visual_tokens"]
                fractions.append(tokens["llm_after_stage2"] / tokens["llm_input_full"])
                works.append(stats["work"])
            offset += len(result.stats)
        measured = Measured(config, _mean(kls), _mean(kept), _mean(works), _mean(fractions))
        self.results[config] = measured
        self.on_candidate(f"{self.inputs[0].kind}: {len(self.results)} configurations measured")
        return measured

    def _chunks(self, config: MergeConfig) -> list[list[VisualTokens]]:
        key = (config.stage1_layers, config.stage1_keep, config.stage1_recycled, config.recycle_weighting, config.method)
        if not config.stage1_active:
            key = ()
        if key not in self.encoded:
            self.encoded[key] = [item.encode(self.lvlm, config) for item in self.inputs]
        visuals = self.encoded[key]
        return [visuals[i : i + self.batch_size] for i in range(0, len(visuals), self.batch_size)]

    def _generate(self, config: MergeConfig, max_new_tokens: int | None = None, forced: bool = False):
        results = []
        for c, chunk in enumerate(self._chunks(config)):
            start = c * self.batch_size
            prompts = self.inputs[start : start + len(chunk)]
            requests = [(visuals.items, item.prompt) for visuals, item in zip(chunk, prompts)]
            if forced:
                answers = self.answers[start : start + len(chunk)]
                options = GenerationOptions(max_new_tokens=max(len(a) for a in answers) + 1)
                results.append(generate_batch(self.lvlm, requests, config, options, return_logits=True, forced_ids=answers))
            else:
                options = GenerationOptions(max_new_tokens=max_new_tokens)
                results.append(generate_batch(self.lvlm, requests, config, options, return_logits=True))
        return results


def _recycled(config: MergeConfig, n: int) -> MergeConfig:
    return config.with_(stage1_recycled=n, stage2_recycled=n)


def _best(candidates: list[Measured | None], budget: float, count: int, tolerance: float = 0.0) -> list[Measured]:
    """The ``count`` best candidates within the budget (the cheapest first, if none is): those within
    ``tolerance`` (or a tie) of the lowest KL, cheapest first, then the rest by KL."""
    candidates = [c for c in candidates if c is not None]
    fitting = [c for c in candidates if c.work <= budget + BUDGET_SLACK]
    if not fitting:
        return sorted(candidates, key=lambda c: c.work)[:count]
    floor = min(c.kl for c in fitting) + max(tolerance, KL_TIE)
    near = sorted((c for c in fitting if c.kl <= floor), key=lambda c: (c.work, c.kl))
    rest = sorted((c for c in fitting if c.kl > floor), key=lambda c: (c.kl, c.work))
    return (near + rest)[:count]


def _mean(values: list) -> float:
    return float(sum(values) / len(values)) if values else math.nan
