"""caption_folder on Ray Data: the same plan, outputs and captions, answered by a pool of actors, one model each.

Ray is optional (requirements-ray.txt) and imported only when a run asks for it. This process (the driver)
plans the run as the local engine does (``plan_folder``: what is left, so a stopped run resumes) and writes
every result with the local engine's writers, in the plan's order; the actors only answer batches
(``caption_batch``, whose captions do not depend on the batch). So the .txt files, JSONL records and Parquet
parts are the local run's.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import threading
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from .batch import CaptionSpec, ItemResult, caption_batch
from .plan import Entry
from .folder import INTERRUPTED, STOPPED, FolderJob, Progress, Summary, check_batch_size, plan_folder
from ..loading import check_model_folder, load

DEFAULT_ACTORS = 2


def caption_folder_ray(
    model: str | Path,
    inputs: str | Path | Sequence[str | Path],
    *,
    actors: int = DEFAULT_ACTORS,
    address: str | None = None,
    batch_size: int = 4,
    load_options: Mapping[str, Any] | None = None,
    cpus_per_actor: float | None = None,
    gpus_per_actor: float | None = None,
    progress: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    **job: Any,
) -> Summary:
    """Caption ``inputs`` as ``caption_folder`` does (``job``: its out, jsonl, parquet, style, prompt, config,
    options, recursive, overwrite, resolution, fps, max_frames, system_prompt), with ``actors`` Ray actors
    that each load ``model`` (``illava.load(model, **load_options)``) and answer batches of ``batch_size``.

    Ray: the instance this process is connected to; else the cluster at ``address`` (or ``RAY_ADDRESS``, as
    ``ray job submit`` sets it), left after the run; else a local instance on 127.0.0.1 (``local_instance``)
    for the run. An actor takes ``gpus_per_actor`` GPUs (default: 1 where the cluster has GPUs, else 0) and
    ``cpus_per_actor`` CPUs (default: the local instance's share, ``local_sizes``; 1 on a cluster). The inputs
    and the model must be at the same paths on every node; this process writes the results.
    """
    check_batch_size(batch_size)
    if isinstance(actors, bool) or not isinstance(actors, int) or actors < 1:
        raise ValueError(f"actors must be a whole number of at least 1, got {actors!r}")
    check_model_folder(model)
    ray = _import_ray()
    plan = plan_folder(inputs, progress=progress, **job)
    if not plan.todo:
        return plan.end()
    with contextlib.ExitStack() as session:
        if not ray.is_initialized() and address is None and "RAY_ADDRESS" not in os.environ:
            cpus_per_actor = session.enter_context(local_instance(actors, cpus_per_actor))
        elif not ray.is_initialized():
            session.enter_context(_connected(lambda: ray.init(address=address)))
        _run(ray, model, plan, actors, batch_size, load_options, 1 if cpus_per_actor is None else cpus_per_actor,
             gpus_per_actor, should_stop)
    return plan.end()


def _run(ray: Any, model: str | Path, plan: FolderJob, actors: int, batch_size: int, load_options: Mapping[str, Any] | None,
         cpus: float, gpus_per_actor: float | None, should_stop: Callable[[], bool] | None) -> None:
    """Answer ``plan.todo`` on the connected instance, handing each block of results to the plan as it comes."""
    try:
        gpus = gpus_per_actor if gpus_per_actor is not None else float(ray.cluster_resources().get("GPU", 0) >= 1)
        options = dict(load_options or {})
        if options.get("device", "auto") == "auto":
            options["device"] = "cuda" if gpus else "cpu"
        results = _answers(ray, model, plan.todo, plan.spec, options, actors, batch_size, cpus, gpus)
        for batch in results:
            plan.finish(batch)
            if should_stop is not None and should_stop():
                plan.summary.stopped = STOPPED
                break
        results.close()
    except KeyboardInterrupt:
        plan.summary.stopped = INTERRUPTED


def local_sizes(actors: int, cpus_per_actor: float | None = None, cores: int | None = None) -> tuple[float, int]:
    """(CPUs per actor, logical CPUs of the local instance). The actors share the cores but one, and the
    instance always keeps a logical CPU that no actor holds, for Ray Data's own tasks: a pool that holds every
    CPU starves them (2 actors on a 2-CPU instance hang once the pipeline reads in tasks, as with
    ``read_binary_files``; this engine sends paths and reads in the actors). Ray gives an actor as many torch
    threads as CPUs."""
    cores = cores or os.cpu_count() or 1
    per_actor = cpus_per_actor if cpus_per_actor is not None else float(max(1, (cores - 1) // actors))
    return per_actor, max(cores, math.ceil(actors * per_actor) + 1)


@contextlib.contextmanager
def local_instance(actors: int = DEFAULT_ACTORS, cpus_per_actor: float | None = None) -> Iterator[float]:
    """A local Ray instance sized for ``actors`` (``local_sizes``) on 127.0.0.1 only, without the dashboard or
    the workers' logs on this process's output (they stay in Ray's session logs), for the ``with`` block;
    yields the CPUs per actor."""
    ray = _import_ray()
    per_actor, cpus = local_sizes(actors, cpus_per_actor)

    # The workers import this package from where this process found it, installed or not.
    path = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")]))

    def start() -> None:
        with _loopback():
            ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False,
                     runtime_env={"env_vars": {"PYTHONPATH": path}})

    with _connected(start):
        yield per_actor


@contextlib.contextmanager
def _connected(connect: Callable[[], Any]) -> Iterator[None]:
    """Connected to Ray by ``connect`` for the ``with`` block, then disconnected (a local instance ends) and
    the environment variables and SIGTERM handler that ray.init sets put back as they were."""
    import ray

    environ, sigterm = dict(os.environ), signal.getsignal(signal.SIGTERM)
    changed: dict[str, str | None] = {}
    try:
        connect()
        changed = {name: environ.get(name) for name in {*environ, *os.environ} if environ.get(name) != os.environ.get(name)}
        yield
    finally:
        ray.shutdown()
        for name, value in changed.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, sigterm)


class Captioner:
    """The ``map_batches`` actor: loads the model once, answers batches of file rows (path, name, kind) with
    one JSON result each (caption or error, prompt, tokens, timing)."""

    def __init__(self, model: str, load_options: Mapping[str, Any], spec: CaptionSpec) -> None:
        self.lvlm = load(model, **load_options)
        self.spec = spec

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, list[str]]:
        entries = [Entry(Path(path), str(name), str(kind)) for path, name, kind in zip(batch["path"], batch["name"], batch["kind"])]
        results = caption_batch(self.lvlm, entries, self.spec)
        return {
            "name": [result.entry.name for result in results],
            "result": [json.dumps({"caption": result.caption, "error": result.error, "prompt": result.prompt,
                                   "tokens": result.tokens, "timing": result.timing}) for result in results],
        }


def _answers(ray: Any, model: str | Path, todo: Sequence[Entry], spec: CaptionSpec, load_options: Mapping[str, Any],
             actors: int, batch_size: int, cpus: float, gpus: float) -> Iterator[list[ItemResult]]:
    """The results of ``todo`` from an actor pool, a block at a time, in ``todo``'s order."""
    rows = [{"path": os.path.abspath(entry.path), "name": entry.name, "kind": entry.kind} for entry in todo]
    dataset = ray.data.from_items(rows).map_batches(
        Captioner, fn_constructor_args=(os.path.abspath(model), load_options, spec), batch_size=batch_size,
        compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=cpus, num_gpus=gpus,
    )
    # This dataset's own copy of the context: the process-wide one is left as it was.
    dataset.context.execution_options.preserve_order = True
    dataset.context.enable_progress_bars = False
    entries = {entry.name: entry for entry in todo}
    # No prefetching thread: results are small, and a stopped run then leaves no thread behind that reaches
    # into Ray after its shutdown.
    for block in dataset.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=0):
        yield [_item(entries[str(name)], json.loads(text)) for name, text in zip(block["name"], block["result"])]


def _item(entry: Entry, answer: dict[str, Any]) -> ItemResult:
    """An actor's JSON answer as the local engine's result (without the ids, which no output holds)."""
    return ItemResult(entry, answer["caption"], answer["error"], answer["prompt"], [], answer["tokens"], answer["timing"])


@contextlib.contextmanager
def _loopback() -> Iterator[None]:
    """Ray binds a local instance to the machine's network address, refusing 127.0.0.1, except where it runs
    no clusters (its constant for Windows and macOS): set that constant for the start, so every process of
    the instance serves on 127.0.0.1 only."""
    from ray._private import ray_constants

    before = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before


def _import_ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError:
        raise ValueError("the Ray engine needs Ray Data: pip install -r requirements-ray.txt") from None
    return ray
