"""The Ray engine on a local 2-actor instance: the local engine's captions, records, errors and resumption on
the demo model. Records are compared whole but for ``timing`` (seconds measured in each run, and the batch an
input was answered in); .txt files byte for byte."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import signal
import sys
from pathlib import Path

import pytest

import illava
from illava.__main__ import main
from illava.captioning.outputs import ParquetFiles
from illava.captioning.plan import entry_for
from illava.captioning.folder import caption_folder
from illava.lab import scenes
from illava.lab.demo_model import demo_model_folder
from illava.captioning.ray_engine import caption_folder_ray, local_instance, local_sizes

# Users without Ray skip these; CI installs requirements-ray.txt, so there a missing Ray fails.
ray = importlib.import_module("ray") if os.environ.get("CI") else pytest.importorskip("ray")

INPUTS = Path(__file__).resolve().parents[1] / "example_workflows" / "inputs"
OPTIONS = illava.GenerationOptions(max_new_tokens=8)
JOB = dict(style="question", prompt=scenes.DESCRIBE_QUESTION, options=OPTIONS, max_frames=4)
LOADING = {"device": "cpu", "dtype": "fp32"}
RAY_INIT_SETS = ("PYTHONBREAKPOINT", "RAY_USAGE_STATS_ENABLED", "RAY_AUTH_MODE")


@pytest.fixture(scope="module")
def local_ray():
    environ, sigterm = dict(os.environ), signal.getsignal(signal.SIGTERM)
    with local_instance(actors=2):
        yield
    # What ray.init sets in the process is put back.
    assert {name: os.environ.get(name) for name in RAY_INIT_SETS} == {name: environ.get(name) for name in RAY_INIT_SETS}
    assert signal.getsignal(signal.SIGTERM) == sigterm


@pytest.fixture(scope="module")
def demo() -> illava.LVLM:
    return illava.load(demo_model_folder(), device="cpu", dtype="fp32")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """The shipped scenes, a video, and a file that is no image (read only: outputs go elsewhere)."""
    folder = tmp_path_factory.mktemp("in")
    for path in [*sorted((INPUTS / "scenes").glob("*.png")), INPUTS / "scene.png", INPUTS / "scene-video.mp4"]:
        shutil.copy(path, folder)
    (folder / "broken.png").write_bytes(b"not a png")
    return folder


@pytest.fixture(scope="module")
def local_run(demo, folder, tmp_path_factory) -> tuple[Path, Path]:
    """The local engine's JSONL and errors file of ``folder``."""
    out = tmp_path_factory.mktemp("local") / "local.jsonl"
    summary = caption_folder(demo, folder, jsonl=out, batch_size=2, **JOB)
    assert (summary.found, summary.done, [name for name, _ in summary.failed]) == (7, 6, ["broken.png"])
    return out, out.with_name("local.errors.jsonl")


def _untimed(records: list[dict]) -> list[dict]:
    return [{key: value for key, value in record.items() if key != "timing"} for record in records]


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("argv, named", [
    (["--memory-budget", "1"], "--batch-size N"),
    (["--batch-size", "auto"], "--batch-size N"),
    (["--actors", "0"], "--actors"),
])
def test_cli_errors_on_ray_name_the_flag(folder, capsys, argv, named):
    try:
        code = main(["caption-folder", str(folder), "--model", str(demo_model_folder()), "--engine", "ray", *argv])
    except SystemExit as exit:
        code = exit.code
    assert code == 2 and named in capsys.readouterr().err


def test_a_ray_run_stopped_and_resumed_gives_the_local_records_and_errors(local_ray, local_run, folder, tmp_path):
    first = caption_folder_ray(demo_model_folder(), folder, jsonl=tmp_path / "ray.jsonl", batch_size=2,
                               load_options=LOADING, should_stop=lambda: True, **JOB)
    assert first.stopped and 0 < first.done + len(first.failed) < 7
    second = caption_folder_ray(demo_model_folder(), folder, jsonl=tmp_path / "ray.jsonl", batch_size=2,
                                load_options=LOADING, **JOB)
    assert (second.skipped, second.done, [name for name, _ in second.failed], second.stopped) == (first.done, 6 - first.done, ["broken.png"], None)
    records = _lines(tmp_path / "ray.jsonl")
    assert _untimed(records) == _untimed(_lines(local_run[0]))
    assert {record["kind"] for record in records} == {"image", "video"} and all(record["caption"] for record in records)
    assert (tmp_path / "ray.errors.jsonl").read_bytes() == local_run[1].read_bytes()
    # The process-wide Ray Data context and Ray's constants are as they were.
    assert not ray.data.DataContext.get_current().execution_options.preserve_order
    from ray._private import ray_constants

    assert ray_constants.ENABLE_RAY_CLUSTER


def test_the_cli_on_ray_writes_the_local_text_files(local_ray, folder, tmp_path, capsys):
    common = ["caption-folder", str(folder), "--model", str(demo_model_folder()), "--prompt", scenes.DESCRIBE_QUESTION,
              "--max-new-tokens", "8", "--max-frames", "4", "--batch-size", "3", "--device", "cpu", "--dtype", "fp32"]
    assert main([*common, "--out", str(tmp_path / "local")]) == 0
    assert main([*common, "--out", str(tmp_path / "ray"), "--engine", "ray", "--actors", "2"]) == 0
    captured = capsys.readouterr()
    assert "[ray: 2 actors" in captured.err and "Captioned 6 of 7 inputs" in captured.out
    texts = {path.relative_to(tmp_path / "local"): path.read_bytes() for path in (tmp_path / "local").rglob("*.txt")}
    assert len(texts) == 6
    assert {path.relative_to(tmp_path / "ray"): path.read_bytes() for path in (tmp_path / "ray").rglob("*.txt")} == texts
    assert (tmp_path / "ray" / "illava-errors.jsonl").read_bytes() == (tmp_path / "local" / "illava-errors.jsonl").read_bytes()


def test_parquet_holds_the_jsonl_records(demo, folder, local_run, tmp_path):
    import pyarrow.parquet as pq

    summary = caption_folder(demo, folder, parquet=tmp_path / "c", batch_size=2, **JOB)
    assert summary.done == 6 and (tmp_path / "c.errors.jsonl").read_bytes() == local_run[1].read_bytes()
    assert _untimed(pq.read_table(tmp_path / "c").to_pylist()) == _untimed(_lines(local_run[0]))


def test_parquet_parts_hold_whole_records_and_resume(tmp_path):
    record = {"path": "", "kind": "image", "caption": "a", "prompt": "p", "tokens": {"new": 1}, "timing": {"vit_s": 0.5}}
    names = [f"{i}.png" for i in range(5)]
    outputs = ParquetFiles(tmp_path / "p", overwrite=False, rows=2)
    for name in names[:3]:
        outputs.write(entry_for(name), {**record, "path": name})
    assert [p.name for p in (tmp_path / "p").iterdir()] == ["part-00000.parquet"]
    outputs.close()
    again = ParquetFiles(tmp_path / "p", overwrite=False, rows=2)
    assert [again.done(entry_for(name)) for name in names] == [True, True, True, False, False]
    again.write(entry_for(names[3]), {**record, "path": names[3]})
    again.close()
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    assert not ParquetFiles(tmp_path / "p", overwrite=True).done(entry_for(names[0])) and not list((tmp_path / "p").iterdir())


def test_the_local_instance_keeps_a_cpu_beyond_the_actors():
    assert local_sizes(2, cores=2) == (1.0, 3)
    assert local_sizes(2, cores=16) == (7.0, 16)
    assert local_sizes(4, cpus_per_actor=0.5, cores=2) == (0.5, 3)


def test_without_ray_the_engine_says_what_to_install(folder, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ValueError, match="requirements-ray.txt"):
        caption_folder_ray(demo_model_folder(), folder, jsonl=tmp_path / "c.jsonl")
