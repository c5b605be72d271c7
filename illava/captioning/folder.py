"""caption_folder(): caption every image and video of a folder into .txt files, one JSONL or Parquet, resumably.

Files already captioned are skipped; inputs are ordered by size and answered in batches (``caption_batch``);
a bad file is named in the summary and the errors file and the run goes on; ``should_stop()`` (checked
between batches) or Ctrl-C ends the run with everything finished so far kept. ``plan_folder`` is the part
that needs no model, shared with the Ray engine (``ray_engine``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

from .memory import batch_size_for, free_memory_bytes
from .batch import CaptionSpec, ItemResult, Prepared, generate_prepared, prepare
from .outputs import CaptionOutputs, ErrorLog, JsonLines, ParquetFiles, TextFiles
from .plan import KINDS, Entry, by_size, scan
from .styles import DEFAULT_STYLE, caption_prompt
from ..config import MergeConfig, Resolution
from ..generation import GenerationOptions
from ..loading import LVLM
from ..video import DEFAULT_FPS, DEFAULT_MAX_FRAMES

STOPPED = "Stopped when asked, after the batch in hand"
# The summary names at most this many passed-over files, so a folder of thousands stays one readable paragraph.
NAMED_PASSED_OVER = 5
INTERRUPTED = "Interrupted: the batch in hand was not written"


@dataclass(frozen=True)
class Progress:
    """Where a run is: inputs finished (captioned or failed) of those it had to do, rate and time left."""

    done: int
    total: int
    failed: int
    items_per_s: float
    eta_s: float | None


@dataclass
class Summary:
    """What a run did. ``failed`` holds (name, reason) per bad file; ``passed_over`` names the files that are
    neither images nor videos; ``stopped`` says why it ended early."""

    found: int = 0
    done: int = 0
    skipped: int = 0
    passed_over: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    stopped: str | None = None
    output: str = ""
    errors_path: str | None = None

    @property
    def items_per_minute(self) -> float:
        return 60.0 * self.done / self.seconds if self.seconds > 0 else 0.0

    def text(self) -> str:
        """One paragraph: captioned, skipped, failed (each named), the rate and where things went."""
        inputs = "input" if self.found == 1 else "inputs"
        parts = [f"Captioned {self.done} of {self.found} {inputs} in {self.seconds:.1f} s ({self.items_per_minute:.1f} items/min)"]
        if self.skipped:
            parts.append(f"{self.skipped} already captioned {'was' if self.skipped == 1 else 'were'} skipped")
        if self.passed_over:
            parts.append(_passed_over(self.passed_over))
        text = "; ".join(parts) + f". Captions: {self.output}."
        if self.failed:
            named = ", ".join(f"{name} ({reason})" for name, reason in self.failed)
            text += f" {len(self.failed)} failed: {named}; listed in {self.errors_path}."
        if self.stopped:
            text += f" {self.stopped}: run it again to caption the rest."
        return text


def caption_folder(
    lvlm: LVLM,
    inputs: str | Path | Sequence[str | Path],
    out: str | Path | None = None,
    jsonl: str | Path | None = None,
    parquet: str | Path | None = None,
    style: str = DEFAULT_STYLE,
    prompt: str = "",
    config: MergeConfig | Mapping[str, MergeConfig] | None = None,
    options: GenerationOptions | None = None,
    batch_size: int | str = 4,
    memory_budget: float | None = None,
    recursive: bool = False,
    overwrite: bool = False,
    resolution: Resolution = Resolution(),
    fps: float = DEFAULT_FPS,
    max_frames: int = DEFAULT_MAX_FRAMES,
    system_prompt: str | None = None,
    progress: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Summary:
    """Caption the images and videos of ``inputs`` (a folder, a file or a list) in ``style``.

    Captions go to a .txt beside each input, or under ``out`` mirroring the folder's tree, or as records of
    one ``jsonl`` file (path, caption, prompt, tokens, timing), or of Parquet files in the folder ``parquet``.
    Inputs already captioned there are skipped unless ``overwrite``. ``config`` is one MergeConfig, or one per
    kind ("image", "video"). ``batch_size`` is a number, or "auto": as many prompts as ``memory_budget`` bytes
    hold beyond the loaded weights (``memory.item_bytes``; default: a share of the device's free memory).
    Bad files are named in the summary and the errors file; ``progress(Progress)`` follows each batch. Raises
    ValueError for bad arguments before any file is read.
    """
    if batch_size != "auto":
        check_batch_size(batch_size)
    if memory_budget is not None and memory_budget <= 0:
        raise ValueError(f"memory_budget must be a positive number of bytes, got {memory_budget!r}")
    job = plan_folder(inputs, out, jsonl, parquet, style, prompt, config, options, recursive, overwrite, resolution,
                      fps, max_frames, system_prompt, progress)
    budget = None
    if batch_size == "auto":
        budget = int(memory_budget) if memory_budget is not None else free_memory_bytes(lvlm.device)
    try:
        for batch in _batches(lvlm, job.todo, job.spec, batch_size, budget, job):
            job.finish(generate_prepared(lvlm, batch, job.spec))
            if should_stop is not None and should_stop():
                job.summary.stopped = STOPPED
                break
    except KeyboardInterrupt:
        job.summary.stopped = INTERRUPTED
    return job.end()


def check_batch_size(batch_size: object) -> None:
    """Refuse anything but a whole number of at least 1."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a whole number of at least 1, or 'auto'; got {batch_size!r}")


def plan_folder(
    inputs: str | Path | Sequence[str | Path],
    out: str | Path | None = None,
    jsonl: str | Path | None = None,
    parquet: str | Path | None = None,
    style: str = DEFAULT_STYLE,
    prompt: str = "",
    config: MergeConfig | Mapping[str, MergeConfig] | None = None,
    options: GenerationOptions | None = None,
    recursive: bool = False,
    overwrite: bool = False,
    resolution: Resolution = Resolution(),
    fps: float = DEFAULT_FPS,
    max_frames: int = DEFAULT_MAX_FRAMES,
    system_prompt: str | None = None,
    progress: Callable[[Progress], None] | None = None,
) -> FolderJob:
    """The part of a run that needs no model: scan ``inputs``, open the outputs, list what is left to caption
    (smallest first, see ``by_size``) and the spec that captions it, and report name clashes; an engine then
    answers ``todo`` and hands the results to ``finish`` (arguments as ``caption_folder``'s)."""
    if sum(where is not None for where in (out, jsonl, parquet)) > 1:
        raise ValueError("give one of out (a folder for .txt files), jsonl (one file) or parquet (a folder), not several")
    entries, passed_over, root = scan(inputs, recursive)
    outputs: CaptionOutputs
    if jsonl is not None:
        outputs = JsonLines(jsonl, overwrite)
    elif parquet is not None:
        outputs = ParquetFiles(parquet, overwrite)
    else:
        outputs = TextFiles(out, root)
    summary = Summary(found=len(entries), passed_over=passed_over, output=str(outputs.where))
    todo, clashes = _todo(entries, outputs, overwrite)
    summary.skipped = len(entries) - len(todo) - len(clashes)
    kinds = [kind for kind in KINDS if any(entry.kind == kind for entry in todo)]
    spec = CaptionSpec(
        prompts={kind: caption_prompt(style, prompt, kind) for kind in kinds},
        configs={kind: _config_for(config, kind) for kind in kinds},
        options=options or GenerationOptions(), resolution=resolution, fps=fps, max_frames=max_frames,
        system_prompt=system_prompt,
    )
    job = FolderJob(by_size(todo), spec, outputs, ErrorLog(outputs.errors_path), summary, len(todo) + len(clashes), progress)
    for entry, reason in clashes:
        job.fail(entry.name, reason)
    return job


class FolderJob:
    """A planned run: ``todo`` and its ``spec``; writes each result or error as it comes, reports progress."""

    def __init__(self, todo: list[Entry], spec: CaptionSpec, outputs: CaptionOutputs, errors: ErrorLog, summary: Summary,
                 total: int, progress: Callable[[Progress], None] | None) -> None:
        self.todo, self.spec, self.outputs, self.errors, self.summary = todo, spec, outputs, errors, summary
        self.total, self.progress = total, progress
        self.finished = 0
        self.start = time.perf_counter()

    def fail(self, name: str, reason: str) -> None:
        self.errors.add(name, reason)
        self.summary.failed.append((name, reason))
        self.finished += 1

    def finish(self, results: Sequence[ItemResult]) -> None:
        for result in results:
            if result.error is not None:
                self.fail(result.entry.name, result.error)
            else:
                self.outputs.write(result.entry, result.record())
                self.summary.done += 1
                self.finished += 1
        if self.progress is not None:
            elapsed = time.perf_counter() - self.start
            rate = self.finished / elapsed if elapsed > 0 else 0.0
            eta = (self.total - self.finished) / rate if rate > 0 else None
            self.progress(Progress(self.finished, self.total, len(self.summary.failed), rate, eta))

    def end(self) -> Summary:
        """Write what the outputs still hold and return the summary, timed from the plan."""
        self.outputs.close()
        self.summary.seconds = time.perf_counter() - self.start
        self.summary.errors_path = str(self.errors.path) if self.summary.failed else None
        return self.summary


def _todo(entries: Sequence[Entry], outputs: CaptionOutputs, overwrite: bool) -> tuple[list[Entry], list[tuple[Entry, str]]]:
    """The entries still to caption, and those whose caption would land on another input's (reported)."""
    todo, clashes, owners = [], [], {}
    for entry in entries:
        target = outputs.target(entry) if isinstance(outputs, TextFiles) else entry.name
        if target in owners:
            clashes.append((entry, f"its caption would overwrite {owners[target]}'s ({target}): rename one of them"))
            continue
        owners[target] = entry.name
        if overwrite or not outputs.done(entry):
            todo.append(entry)
    return todo, clashes


def _config_for(config: MergeConfig | Mapping[str, MergeConfig] | None, kind: str) -> MergeConfig:
    if config is None:
        return MergeConfig()
    if isinstance(config, MergeConfig):
        return config
    return config[kind]


def _batches(lvlm: LVLM, entries: Sequence[Entry], spec: CaptionSpec, batch_size: int | str, budget: int | None, job: FolderJob):
    """Prepared inputs of one kind, grouped into batches of ``batch_size``, or as many as ``budget`` holds
    (sized by the longest prompt of the batch: inputs come shortest first). Failures go to ``job``."""
    pending: list[Prepared] = []
    for entry in entries:
        item = prepare(lvlm, entry, spec)
        if isinstance(item, ItemResult):
            job.finish([item])
            continue
        if pending and (pending[0].entry.kind != entry.kind or len(pending) + 1 > _limit(lvlm, spec, [*pending, item], batch_size, budget)):
            yield pending
            pending = []
        pending.append(item)
        if len(pending) >= _limit(lvlm, spec, pending, batch_size, budget):
            yield pending
            pending = []
    if pending:
        yield pending


def _limit(lvlm: LVLM, spec: CaptionSpec, batch: Sequence[Prepared], batch_size: int | str, budget: int | None) -> int:
    if budget is None:
        return int(batch_size)
    longest = max(batch, key=lambda item: item.prompt_tokens)
    visual = sum(item.tokens_kept for item in longest.visuals.items)
    config = spec.configs[longest.entry.kind]
    return batch_size_for(lvlm, config, budget, longest.prompt_tokens, visual, spec.options.max_new_tokens)


def _passed_over(names: Sequence[str]) -> str:
    shown = ", ".join(names[:NAMED_PASSED_OVER])
    more = f" and {len(names) - NAMED_PASSED_OVER} more" if len(names) > NAMED_PASSED_OVER else ""
    were = "file that is neither an image nor a video was" if len(names) == 1 else "files that are neither images nor videos were"
    return f"{len(names)} {were} passed over ({shown}{more})"
