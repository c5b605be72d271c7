"""Caption one batch of files: the unit a folder job (or a Ray Data ``map_batches`` actor) runs.

Each file is read and encoded on its own, then the batch is answered in one ``generate_batch`` (left padding),
so a caption does not depend on which other files share its batch (tested: greedy ids alone == batched).
A file that cannot be read or encoded fails alone; a batch whose generation fails is answered one file at a
time, so only the file that causes it fails.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from .plan import KINDS, Entry
from ..config import MergeConfig, Resolution
from ..generation import GenerationOptions, generate_batch
from ..loading import LVLM, release_cached_memory
from ..media import to_pil_images
from ..prompt import build_inputs
from ..video import DEFAULT_FPS, DEFAULT_MAX_FRAMES
from ..encoding import VisualTokens, encode


@dataclass(frozen=True)
class CaptionSpec:
    """Everything besides the file that decides a caption: the prompt and merge settings per kind of input."""

    prompts: Mapping[str, str]
    configs: Mapping[str, MergeConfig]
    options: GenerationOptions = GenerationOptions()
    resolution: Resolution = Resolution()
    fps: float = DEFAULT_FPS
    max_frames: int = DEFAULT_MAX_FRAMES
    system_prompt: str | None = None


@dataclass(frozen=True)
class Prepared:
    """A file encoded (stage 1 done) and the length of its prompt, waiting for its batch."""

    entry: Entry
    visuals: VisualTokens
    prompt_tokens: int


@dataclass(frozen=True)
class ItemResult:
    """One file's caption, or why it has none."""

    entry: Entry
    caption: str | None = None
    error: str | None = None
    prompt: str = ""
    ids: list[int] = field(default_factory=list)
    tokens: dict[str, int] = field(default_factory=dict)
    timing: dict[str, float] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """The JSONL record: path, caption, prompt, tokens, timing (the batch's prefill and decode)."""
        return {"path": self.entry.name, "kind": self.entry.kind, "caption": self.caption, "prompt": self.prompt,
                "tokens": self.tokens, "timing": self.timing}


def caption_batch(lvlm: LVLM, entries: Sequence[Entry], spec: CaptionSpec) -> list[ItemResult]:
    """Caption ``entries`` (any mix of kinds), one result per entry in their order."""
    results: dict[str, ItemResult] = {}
    prepared: dict[str, list[Prepared]] = {kind: [] for kind in KINDS}
    for entry in entries:
        item = prepare(lvlm, entry, spec)
        if isinstance(item, ItemResult):
            results[entry.name] = item
        else:
            prepared[entry.kind].append(item)
    for group in prepared.values():
        if group:
            results.update((result.entry.name, result) for result in generate_prepared(lvlm, group, spec))
    return [results[entry.name] for entry in entries]


def prepare(lvlm: LVLM, entry: Entry, spec: CaptionSpec) -> Prepared | ItemResult:
    """Read and encode one file; a failure is its ``ItemResult`` naming the reason."""
    config = spec.configs[entry.kind]
    try:
        if entry.kind == "image":
            visuals = encode(lvlm, to_pil_images([entry.path]), config, resolution=spec.resolution)
        else:
            visuals = encode(lvlm, None, config, video=str(entry.path), fps=spec.fps, max_frames=spec.max_frames)
        length = build_inputs(lvlm, [(visuals.items, spec.prompts[entry.kind])], spec.system_prompt)["input_ids"].shape[1]
    except Exception as error:  # noqa: BLE001 - any unreadable file fails alone, named with the reason
        return ItemResult(entry, error=_file_reason(error, entry))
    return Prepared(entry, visuals, int(length))


def generate_prepared(lvlm: LVLM, batch: Sequence[Prepared], spec: CaptionSpec) -> list[ItemResult]:
    """Answer prepared files of one kind in one batch; if that fails, each alone, so only the culprit fails."""
    kind = batch[0].entry.kind
    prompt, config = spec.prompts[kind], spec.configs[kind]
    requests = [(item.visuals.items, prompt) for item in batch]
    failure = None
    try:
        result = generate_batch(lvlm, requests, config, spec.options, spec.system_prompt)
    except Exception as error:  # noqa: BLE001 - a batch fails as a whole; retried one by one below
        failure = _reason(error)
    if failure is not None:
        # Retried only here, after the except block: its traceback held the failed batch's activations and
        # KV cache, which a retry after running out of GPU memory needs back.
        release_cached_memory(lvlm.device)
        if len(batch) == 1:
            return [ItemResult(batch[0].entry, error=failure, prompt=prompt)]
        return [answer for item in batch for answer in generate_prepared(lvlm, [item], spec)]
    answers = []
    for b, item in enumerate(batch):
        stats = result.stats[b]
        tokens = {**stats["visual_tokens"], "prompt": stats["prompt_tokens"], "new": stats["new_tokens"]}
        timing = {"vit_s": item.visuals.vit_s, "prefill_s": stats["prefill_s"], "decode_s": stats["decode_s"],
                  "batch_size": len(batch)}
        answers.append(ItemResult(item.entry, result.texts[b], None, prompt, result.ids[b], tokens, timing))
    return answers


def _reason(error: Exception) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return text if isinstance(error, ValueError) and text else f"{type(error).__name__}: {text}".rstrip(": ")


def _file_reason(error: Exception, entry: Entry) -> str:
    """Why ``entry`` could not be read, without its path or its place in a list ("image 0"): the summary and
    the errors file name the file already."""
    text = _reason(error).replace(repr(str(entry.path)), "the file").replace(str(entry.path), "the file")
    return re.sub(r"^image 0 ", "the image ", re.sub(r"^image 0: ", "", text))
