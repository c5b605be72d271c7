"""caption_folder: batched captions equal one-at-a-time ones, resumable runs, bad files reported, the CLI,
and batch sizes from a memory budget."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import illava
from helpers import random_image
from illava.__main__ import main
from illava.captioning.memory import batch_size_for, item_bytes, kv_bytes, stage2_bytes
from illava.captioning.batch import CaptionSpec, caption_batch
from illava.captioning.plan import by_size, entry_for, scan
from illava.captioning.folder import Summary, caption_folder

OPTIONS = illava.GenerationOptions(max_new_tokens=3)
MERGED = illava.MergeConfig(stage1_layers=(1,), stage1_keep=0.5, stage2_layers=(1,), stage2_keep=0.5)
SIZES = ((56, 56), (112, 84), (56, 112), (140, 112), (60, 70))


def _images(folder: Path, sizes=SIZES, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, (width, height) in enumerate(sizes):
        random_image(seed + i, height, width).save(folder / f"img{i:02}.png")
    return folder


def _spec(config: illava.MergeConfig) -> CaptionSpec:
    prompt = illava.caption_prompt("short caption")
    return CaptionSpec(prompts={"image": prompt}, configs={"image": config}, options=OPTIONS)


def _records(path: Path) -> dict[str, dict]:
    return {record["path"]: record for record in map(json.loads, path.read_text().splitlines())}


def test_a_batch_that_runs_out_of_memory_is_freed_before_its_items_are_retried(qwen25, tmp_path, monkeypatch):
    import weakref

    import torch

    from illava.captioning import batch as module

    real, held, calls = module.generate_batch, [], []

    def out_of_memory_once(lvlm, requests, *args, **kwargs):
        calls.append(len(requests))
        if len(calls) == 1:
            activations = torch.ones(1024, 1024)  # what the failed batch held, reachable from its traceback
            held.append(weakref.ref(activations))
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 3.70 GiB")
        assert held[0]() is None, "the failed batch's memory is still held while its items are retried"
        return real(lvlm, requests, *args, **kwargs)

    monkeypatch.setattr(module, "generate_batch", out_of_memory_once)
    entries = by_size(scan(_images(tmp_path, SIZES[:2]))[0])
    results = caption_batch(qwen25, entries, _spec(illava.MergeConfig()))
    assert calls == [2, 1, 1] and all(r.error is None and r.ids for r in results)


@pytest.mark.parametrize("config", [illava.MergeConfig(), MERGED], ids=["off", "merged"])
def test_batched_captions_equal_one_at_a_time(qwen25, tmp_path, config):
    entries = by_size(scan(_images(tmp_path))[0])
    batched = caption_batch(qwen25, entries, _spec(config))
    alone = [caption_batch(qwen25, [entry], _spec(config))[0] for entry in entries]
    assert [r.ids for r in batched] == [r.ids for r in alone]
    assert [r.tokens for r in batched] == [r.tokens for r in alone]
    assert all(r.error is None and len(r.ids) == OPTIONS.max_new_tokens for r in batched)


def test_batched_captions_equal_one_at_a_time_on_the_demo_model(tmp_path):
    from illava.lab.demo_model import demo_model_folder
    from illava.lab import scenes

    lvlm = illava.load(demo_model_folder(), device="cpu", dtype="fp32")
    tmp_path.mkdir(exist_ok=True)
    for i in range(3):
        Image.fromarray(scenes.sample("test", "image", i).images[0]).save(tmp_path / f"scene{i}.png")
    config = illava.auto_config(lvlm, 0.33)
    spec = CaptionSpec(prompts={"image": scenes.DESCRIBE_QUESTION}, configs={"image": config},
                       options=illava.GenerationOptions(max_new_tokens=8))
    entries = scan(tmp_path)[0]
    batched = caption_batch(lvlm, entries, spec)
    alone = [caption_batch(lvlm, [entry], spec)[0] for entry in entries]
    assert [r.ids for r in batched] == [r.ids for r in alone]
    assert all(r.caption for r in batched)


def test_jsonl_and_txt_give_the_same_captions_in_any_batch_size(qwen25, tmp_path):
    folder = _images(tmp_path / "in")
    one = caption_folder(qwen25, folder, jsonl=tmp_path / "one.jsonl", options=OPTIONS, batch_size=1)
    four = caption_folder(qwen25, folder, out=tmp_path / "txt", options=OPTIONS, batch_size=4)
    assert one.done == four.done == len(SIZES) and not one.failed
    records = _records(tmp_path / "one.jsonl")
    assert set(records) == {f"img{i:02}.png" for i in range(len(SIZES))}
    for name, record in records.items():
        assert (tmp_path / "txt" / name).with_suffix(".txt").read_text() == record["caption"] + "\n"
        assert record["tokens"]["new"] > 0 and record["prompt"] == illava.caption_prompt("detailed caption")
        assert set(record["timing"]) == {"vit_s", "prefill_s", "decode_s", "batch_size"}
    assert not list(folder.glob("*.txt"))


def test_a_stopped_run_restarts_with_only_the_unfinished_items(qwen25, tmp_path):
    folder = _images(tmp_path / "in", SIZES[:4] * 2)
    seen = []
    first = caption_folder(qwen25, folder, options=OPTIONS, batch_size=3, should_stop=lambda: True, progress=seen.append)
    assert first.done == 3 and first.stopped and "run it again" in first.text()
    assert seen[-1].done == 3 and seen[-1].total == 8 and seen[-1].eta_s > 0
    kept = {path: path.stat().st_mtime_ns for path in folder.glob("*.txt")}
    assert len(kept) == 3
    second = caption_folder(qwen25, folder, options=OPTIONS, batch_size=3)
    assert (second.done, second.skipped, second.stopped) == (5, 3, None)
    assert all(path.stat().st_mtime_ns == mtime for path, mtime in kept.items())
    assert len(list(folder.glob("*.txt"))) == 8 and not list(folder.glob(".*"))


def test_a_run_killed_while_writing_leaves_no_partial_file(qwen25, tmp_path, monkeypatch):
    folder = _images(tmp_path / "in")
    replace = os.replace
    calls = []

    def dies_on_the_fourth(source, target):
        calls.append(target)
        if len(calls) == 4:
            raise KeyboardInterrupt
        replace(source, target)

    monkeypatch.setattr(os, "replace", dies_on_the_fourth)
    summary = caption_folder(qwen25, folder, out=tmp_path / "out", options=OPTIONS, batch_size=4)
    monkeypatch.setattr(os, "replace", replace)
    assert summary.done == 3 and summary.stopped.startswith("Interrupted")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(Path(t).name for t in calls[:3])
    again = caption_folder(qwen25, folder, out=tmp_path / "out", options=OPTIONS, batch_size=4)
    assert (again.done, again.skipped) == (len(SIZES) - 3, 3)


def test_a_jsonl_cut_mid_line_is_repaired_and_resumed(qwen25, tmp_path):
    folder = _images(tmp_path / "in")
    out = tmp_path / "captions.jsonl"
    caption_folder(qwen25, folder, jsonl=out, options=OPTIONS, batch_size=2)
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:2]) + lines[2][:20])
    summary = caption_folder(qwen25, folder, jsonl=out, options=OPTIONS, batch_size=2)
    assert (summary.done, summary.skipped) == (len(SIZES) - 2, 2)
    assert len(_records(out)) == len(SIZES)


def _bad_folder(folder: Path) -> tuple[set[str], set[str]]:
    """40 inputs: good ones, 16-bit, RGBA, 1x1, palette, greyscale, and 5 broken; and 3 other files."""
    _images(folder, [(48 + 8 * (i % 4), 48 + 8 * (i // 4 % 3)) for i in range(30)])
    Image.fromarray((np.arange(56 * 56).reshape(56, 56) * 20).astype(np.uint16)).save(folder / "deep16.png")
    Image.fromarray(np.full((56, 64, 4), 90, np.uint8), "RGBA").save(folder / "alpha.png")
    Image.fromarray(np.full((1, 1, 3), 200, np.uint8)).save(folder / "tiny1x1.png")
    random_image(7, 60, 60).convert("P").save(folder / "palette.gif")
    random_image(8, 60, 60).convert("L").save(folder / "grey.jpg")
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg" * 10)
    (folder / "empty.png").write_bytes(b"")
    (folder / "text.webp").write_text("just text")
    data = (folder / "img00.png").read_bytes()
    (folder / "truncated.png").write_bytes(data[: len(data) // 2])
    (folder / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64)
    for name in ("notes.md", "data.csv", "model.safetensors"):
        (folder / name).write_text("x")
    return {"corrupt.jpg", "empty.png", "text.webp", "truncated.png", "broken.mp4"}, {"deep16.png", "alpha.png"}


def test_bad_files_are_named_and_the_run_goes_on(qwen25, tmp_path):
    folder = tmp_path / "in"
    broken, fine = _bad_folder(folder)
    summary = caption_folder(qwen25, folder, jsonl=tmp_path / "c.jsonl", options=illava.GenerationOptions(max_new_tokens=1), batch_size=8)
    failed = dict(summary.failed)
    assert summary.found == 40 and summary.passed_over == ["data.csv", "model.safetensors", "notes.md"]
    assert set(failed) - {"tiny1x1.png"} == broken
    assert not any(str(folder) in reason or "image 0" in reason for reason in failed.values()), failed
    assert failed["text.webp"] == "the file is not a readable image (unknown format, or corrupt)"
    assert summary.done + len(failed) == 40
    records = _records(tmp_path / "c.jsonl")
    assert fine <= set(records)
    if "tiny1x1.png" in failed:
        assert "1x1" in failed["tiny1x1.png"]
    errors = {line["path"]: line["error"] for line in map(json.loads, (tmp_path / "c.errors.jsonl").read_text().splitlines())}
    assert errors == failed and all(errors.values())
    assert summary.errors_path == str(tmp_path / "c.errors.jsonl")
    assert all(name in summary.text() for name in broken)
    assert "3 files that are neither images nor videos were passed over (data.csv, model.safetensors, notes.md)" in summary.text()


def test_the_summary_counts_in_words_and_names_a_few_passed_over_files():
    one = Summary(found=1, done=0, skipped=1, passed_over=["notes.md"], output="here")
    assert one.text().startswith("Captioned 0 of 1 input in")
    assert "1 already captioned was skipped" in one.text()
    assert "1 file that is neither an image nor a video was passed over (notes.md)" in one.text()
    many = Summary(found=2, passed_over=[f"f{i}.md" for i in range(8)], output="here")
    assert "8 files that are neither images nor videos were passed over (f0.md, f1.md, f2.md, f3.md, f4.md and 3 more)" in many.text()


def test_16_bit_images_keep_their_levels(tmp_path):
    from illava.media import to_pil_images

    Image.fromarray(np.full((8, 8), 32768, np.uint16)).save(tmp_path / "deep.png")
    assert np.asarray(to_pil_images([tmp_path / "deep.png"])[0]).max() == 128
    assert entry_for("a/b.PNG").kind == "image" and entry_for("c.MP4").kind == "video"


def test_the_cli_captions_a_folder_and_says_what_it_did(model_dirs, tmp_path, capsys):
    folder = _images(tmp_path / "in" / "sub", SIZES[:3])
    _images(tmp_path / "in", SIZES[3:4], seed=9)
    code = main(["caption-folder", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--model", model_dirs["qwen2_5_vl"],
                 "--recursive", "--max-new-tokens", "2", "--batch-size", "2", "--preset", "off", "--device", "cpu"])
    assert code == 0
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.txt")) == [
        "img00.txt", "sub/img00.txt", "sub/img01.txt", "sub/img02.txt"]
    assert "Captioned 4 of 4 inputs" in capsys.readouterr().out
    (folder / "junk.png").write_bytes(b"junk")
    code = main(["caption-folder", str(folder), "--jsonl", str(tmp_path / "c.jsonl"), "--model", model_dirs["qwen2_5_vl"],
                 "--max-new-tokens", "2", "--memory-budget", "0.01", "--style", "tags", "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 0 and "1 failed: junk.png" in captured.out and "captioning" in captured.err
    assert len(_records(tmp_path / "c.jsonl")) == 3


@pytest.mark.parametrize("argv, named", [
    (["--batch-size", "0"], "--batch-size"),
    (["--memory-budget", "-1"], "--memory-budget"),
    (["--out", "o", "--jsonl", "j"], "--jsonl"),
    (["--style", "video-summary"], "--style"),
    (["--prompt", "hi", "--style", "tags"], "--prompt"),
])
def test_cli_errors_name_the_flag(model_dirs, tmp_path, capsys, argv, named):
    _images(tmp_path, SIZES[:1])
    try:
        code = main(["caption-folder", str(tmp_path), "--model", model_dirs["qwen2_5_vl"], *argv])
    except SystemExit as exit:
        code = exit.code
    assert code == 2 and named in capsys.readouterr().err


def test_merged_prompts_fit_larger_batches(qwen25):
    off = illava.MergeConfig()
    budget = 4 * item_bytes(qwen25, off, 400, 300, 64)
    assert batch_size_for(qwen25, off, budget, 400, 300, 64) == 4
    # Stage 2 alone leaves the prompt as long but caches less from its layer on; stage 1 shortens the prompt.
    stage2 = illava.MergeConfig(stage2_layers=(1,), stage2_keep=0.2)
    assert kv_bytes(qwen25, stage2, 400, 300, 64) < kv_bytes(qwen25, off, 400, 300, 64)
    assert batch_size_for(qwen25, stage2, budget, 400, 300, 64) >= 4
    assert batch_size_for(qwen25, MERGED, budget, 250, 150, 64) > 4


def test_the_batch_estimate_counts_stage2s_transient_and_the_padded_mask(qwen25):
    off, stage2 = illava.MergeConfig(), illava.MergeConfig(stage2_layers=(1,), stage2_keep=0.2)
    assert stage2_bytes(qwen25, off, 400) == 0 < stage2_bytes(qwen25, stage2, 400)
    for config in (off, stage2):
        beyond_cache = item_bytes(qwen25, config, 400, 300, 64) - kv_bytes(qwen25, config, 400, 300, 64)
        assert beyond_cache >= max(stage2_bytes(qwen25, config, 400), 1) + 400**2
    # SparseVLM ranks with one attention row per rater, at most one per text token of the prompt.
    sparse = stage2.with_(method="sparsevlm")
    assert stage2_bytes(qwen25, sparse, 400, 100) > stage2_bytes(qwen25, stage2, 400, 100)
    assert item_bytes(qwen25, sparse, 400, 300, 64) >= kv_bytes(qwen25, sparse, 400, 300, 64) + stage2_bytes(qwen25, sparse, 400, 100)


@pytest.mark.parametrize("config", [illava.MergeConfig(), illava.MergeConfig(stage2_layers=(1,), stage2_keep=0.25)], ids=["off", "stage2"])
def test_the_kv_estimate_matches_the_cache_a_batch_leaves(qwen25, tmp_path, monkeypatch, config):
    entries = scan(_images(tmp_path, SIZES[3:4] * 2))[0]
    caches = []
    generate = qwen25.model.generate

    def keeping_the_cache(*args, **kwargs):
        out = generate(*args, **kwargs)
        caches.append(out.past_key_values)
        return out

    monkeypatch.setattr(qwen25.model, "generate", keeping_the_cache)
    results = caption_batch(qwen25, entries, _spec(config))
    cache = caches[0]
    measured = sum(layer.keys.numel() * layer.keys.element_size() + layer.values.numel() * layer.values.element_size()
                   for layer in cache.layers)
    tokens = results[0].tokens
    estimate = len(entries) * kv_bytes(qwen25, config, tokens["prompt"], tokens["llm_input"], OPTIONS.max_new_tokens)
    # The cache holds every token but the last generated one.
    assert 0.9 * estimate <= measured <= estimate


def test_a_caption_file_gets_the_mode_the_umask_asks_for(tmp_path):
    from illava.captioning.outputs import write_atomically

    previous = os.umask(0o022)
    try:
        write_atomically(tmp_path / "a.txt", "a caption")
    finally:
        os.umask(previous)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "a.txt").read_text() == "a caption" and [p.name for p in tmp_path.iterdir()] == ["a.txt"]
