"""generate() and generate_batch(): stage 2 inside prefill, then decoding, with one ``Stats`` per prompt."""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence, TypedDict

import torch

from .config import MergeConfig
from .cost import cost_model
from .stage2 import Stage2, installed
from .loading import LVLM, synchronize
from .prompt import Request, build_inputs
from .trace import ItemTrace
from .encoding import VisualItem, VisualTokenCounts, VisualTokens, visual_token_counts

TokenCallback = Callable[[int, int, list], None]


class Stats(TypedDict):
    """What one prompt of a generation cost; ``work`` is the share of the work on its visual tokens that
    remained (the budget's measure) and ``predicted_speedup`` the cost model's ViT + prefill speedup, both
    for this prompt's own input."""

    visual_tokens: VisualTokenCounts
    work: float
    predicted_speedup: float
    prompt_tokens: int
    new_tokens: int
    vit_s: float
    prefill_s: float
    decode_s: float
    config: dict[str, Any]


@dataclass
class Generation:
    """Generated text and what it cost, one entry per prompt of the batch."""

    texts: list[str]
    ids: list[list[int]]
    stats: list[Stats]
    traces: list[list[ItemTrace]]
    logits: list[torch.Tensor] | None = field(default=None, repr=False)


@dataclass(frozen=True)
class GenerationOptions:
    """Decoding settings. Greedy by default so runs are reproducible; ``seed`` is used only when sampling."""

    max_new_tokens: int = 128
    min_new_tokens: int = 0
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int) or not 1 <= self.max_new_tokens <= 32768:
            raise ValueError(f"max_new_tokens must be an integer from 1 to 32768, got {self.max_new_tokens!r}")
        if isinstance(self.min_new_tokens, bool) or not isinstance(self.min_new_tokens, int) or not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise ValueError(f"min_new_tokens must be an integer from 0 to max_new_tokens, got {self.min_new_tokens!r}")
        if not 0.0 < self.temperature <= 10.0:
            raise ValueError(f"temperature must be in (0, 10], got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 turns it off), got {self.top_k}")
        if not 0.5 <= self.repetition_penalty <= 3.0:
            raise ValueError(f"repetition_penalty must be in [0.5, 3], got {self.repetition_penalty}")


def generate(
    lvlm: LVLM,
    visuals: VisualTokens,
    prompt: str,
    config: MergeConfig | None = None,
    options: GenerationOptions | None = None,
    system_prompt: str | None = None,
    per_item: bool = False,
    on_token: TokenCallback | None = None,
    return_logits: bool = False,
) -> Generation:
    """Answer ``prompt`` about ``visuals``: one prompt with every item, or one prompt per item (``per_item``).

    ``on_token(step, total, new_ids)`` is called after each generated token with the new token id of
    every prompt; an exception raised there stops generation and leaves the model as it was.
    """
    if visuals.model_id != lvlm.model_id:
        raise ValueError(
            "these visual tokens were encoded by another model (or dtype or device): encode them again with this one"
        )
    # Tokens kept off the compute device between runs (as ComfyUI keeps node outputs) come back for this one.
    visuals = visuals.to(lvlm.device)
    if per_item:
        requests = [((item,), prompt) for item in visuals.items]
    else:
        requests = [(visuals.items, prompt)]
    return generate_batch(lvlm, requests, config or visuals.config, options, system_prompt, on_token, return_logits, visuals.vit_s)


def generate_batch(
    lvlm: LVLM,
    requests: Sequence[Request],
    config: MergeConfig | None = None,
    options: GenerationOptions | None = None,
    system_prompt: str | None = None,
    on_token: TokenCallback | None = None,
    return_logits: bool = False,
    vit_s: float = 0.0,
    forced_ids: Sequence[Sequence[int]] | None = None,
) -> Generation:
    """Generate for several (visual items, prompt) pairs at once, left-padded into one batch.

    ``forced_ids`` teacher-forces the answers: prompt ``b`` is made to say ``forced_ids[b]`` and then
    end, through the same cached decoding, and ``return_logits`` gives the model's own logits at
    each of those steps (what calibration compares).
    """
    config = config or MergeConfig()
    options = options or GenerationOptions()
    backbone = lvlm.backbone
    _check_requests(lvlm, requests, config)
    clock = GenerationClock(options.max_new_tokens, on_token, lvlm.device)
    # Prefill counts the prompt's assembly (its M-RoPE positions included), as a plain generate() does inside.
    clock.start()
    inputs = build_inputs(lvlm, requests, system_prompt)
    prompt_length = inputs["input_ids"].shape[1]
    _check_context(lvlm, prompt_length, options.max_new_tokens)
    stage2 = Stage2(backbone, config, inputs["mm_token_type_ids"] != 0) if config.stage2_active else None
    kwargs = _generate_kwargs(lvlm, options, clock, return_logits)
    if forced_ids is not None:
        kwargs["prefix_allowed_tokens_fn"] = _forcing(forced_ids, prompt_length, min(lvlm.eos_token_ids))
    rng = torch.random.fork_rng(devices=[lvlm.device] if lvlm.device.type == "cuda" else []) if options.do_sample else nullcontext()
    with rng, torch.inference_mode(), installed(backbone, stage2):
        if options.do_sample:
            torch.manual_seed(options.seed)
        out = lvlm.model.generate(**backbone.generate_inputs(inputs), **kwargs)
        clock.stop()
    ids = [_trim(row.tolist(), lvlm.eos_token_ids) for row in out.sequences[:, prompt_length:]]
    record = stage2.record if stage2 is not None else None
    stats, traces = [], []
    for b, (items, _) in enumerate(requests):
        timing = dict(new_tokens=len(ids[b]), vit_s=vit_s, prefill_s=clock.prefill_s, decode_s=clock.decode_s)
        stats.append(_stats(lvlm, items, int(inputs["attention_mask"][b].sum()), config, record, b, timing))
        traces.append(_item_traces(items, record.visual_status[b] if record is not None else None))
    logits = None
    if return_logits:
        logits = [torch.stack([step[b] for step in out.logits]).float().cpu() for b in range(len(requests))]
    texts = [lvlm.processor.tokenizer.decode(row, skip_special_tokens=True) for row in ids]
    return Generation(texts=texts, ids=ids, stats=stats, traces=traces, logits=logits)


def _check_requests(lvlm: LVLM, requests: Sequence[Request], config: MergeConfig) -> None:
    """A ValueError naming what to fix: layers the model lacks, an empty prompt or request, a static cache."""
    config.check_depths(lvlm.backbone.vit_depth, lvlm.backbone.llm_depth)
    if not requests:
        raise ValueError("nothing to generate: give at least one prompt")
    for items, prompt in requests:
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError("the prompt is empty: write a question or instruction for the model")
        if not items:
            raise ValueError("no visual inputs: encode at least one image or video for every prompt")
    cache = lvlm.model.generation_config.cache_implementation
    if config.stage2_active and cache not in (None, "dynamic"):
        raise ValueError(
            f"stage 2 shortens each layer's cache as it prunes, which a {cache!r} cache (the model's generation_config."
            f"cache_implementation) cannot: set it to None or 'dynamic', or clear stage2_layers"
        )


def _generate_kwargs(lvlm: LVLM, options: GenerationOptions, clock: "GenerationClock", return_logits: bool) -> dict:
    """The model's own ``generate`` arguments for ``options``, timed by ``clock``."""
    kwargs = dict(
        max_new_tokens=options.max_new_tokens,
        min_new_tokens=options.min_new_tokens,
        do_sample=options.do_sample,
        return_dict_in_generate=True,
        output_logits=return_logits,
        stopping_criteria=[clock],
        pad_token_id=lvlm.pad_token_id,
    )
    if options.do_sample:
        kwargs.update(temperature=options.temperature, top_p=options.top_p, top_k=options.top_k)
    else:
        kwargs.update(temperature=None, top_p=None, top_k=None)
    if options.repetition_penalty != 1.0:
        kwargs["repetition_penalty"] = options.repetition_penalty
    return kwargs


def _stats(lvlm: LVLM, items, prompt_tokens: int, config: MergeConfig, record, b: int, timing: dict) -> "Stats":
    """Prompt ``b``'s token counts (stage 2's from its ``record``), work, predicted speedup and ``timing``."""
    counts = visual_token_counts(items, record.visual_after[b] if record is not None else None)
    estimate = cost_model(lvlm.backbone).estimate(
        [item.layout for item in items], prompt_tokens - counts["llm_input"], config
    )
    return Stats(visual_tokens=counts, work=estimate.work, predicted_speedup=estimate.speedup,
                 prompt_tokens=prompt_tokens, **timing, config=config.to_dict())


def _check_context(lvlm: LVLM, prompt_tokens: int, max_new_tokens: int) -> None:
    context = lvlm.backbone.context_length
    if prompt_tokens + max_new_tokens > context:
        raise ValueError(
            f"the prompt takes {prompt_tokens} tokens and max_new_tokens is {max_new_tokens}, but this model's "
            f"context holds {context}: shorten the prompt, use fewer or smaller images, merge more, "
            "or lower max_new_tokens"
        )


def _item_traces(items: Sequence[VisualItem], stage2_status: torch.Tensor | None) -> list[ItemTrace]:
    if stage2_status is None:
        return [item.trace for item in items]
    traces, start = [], 0
    for item in items:
        codes = stage2_status[start : start + item.tokens_kept]
        start += item.tokens_kept
        traces.append(item.trace.with_stage2(item.kept_groups, codes))
    return traces


def _forcing(forced_ids: Sequence[Sequence[int]], prompt_length: int, eos: int) -> Callable[[int, torch.Tensor], list[int]]:
    """The ``prefix_allowed_tokens_fn`` that allows only row ``b``'s next forced id, then its end."""

    def allowed(row: int, sequence: torch.Tensor) -> list[int]:
        step = sequence.shape[-1] - prompt_length
        forced = forced_ids[row]
        return [int(forced[step])] if step < len(forced) else [eos]

    return allowed


def _trim(ids: list[int], eos: set[int]) -> list[int]:
    """The new ids up to the first end-of-answer token (generate pads the rows that ended early after it)."""
    out = []
    for token in ids:
        if token in eos:
            break
        out.append(token)
    return out


class GenerationClock:
    """A stopping criterion that never stops: it times prefill and decode and reports each token."""

    def __init__(self, total: int, on_token: TokenCallback | None, device: torch.device) -> None:
        self.total = total
        self.on_token = on_token
        self.device = device
        self.steps = 0
        self.t0 = self.t_first = self.t_end = 0.0

    def start(self) -> None:
        self.t0 = time.perf_counter()

    def stop(self) -> None:
        synchronize(self.device)
        self.t_end = time.perf_counter()

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        if self.steps == 0:
            synchronize(self.device)
            self.t_first = time.perf_counter()
        self.steps += 1
        if self.on_token is not None:
            self.on_token(self.steps, self.total, input_ids[:, -1].tolist())
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    @property
    def prefill_s(self) -> float:
        return self.t_first - self.t0

    @property
    def decode_s(self) -> float:
        return max(0.0, self.t_end - self.t_first)
