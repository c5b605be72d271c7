"""Video through decord: sampling, exactness when off, per-frame stage 1 and cross-frame stage 2."""

import copy

import numpy as np
import pytest
import torch
from transformers.video_utils import VideoMetadata

import illava
from helpers import write_video
from illava import GenerationOptions, MergeConfig
from illava.backbones.qwen.video import preprocess
from illava.video import load_video, sample_indices
from illava.viz import trace_figure


def test_sampling_by_fps_and_max_frames():
    assert sample_indices(100, 10.0, 2.0, 32).tolist() == [2, 7, 12, 17, 22, 27, 32, 37, 42, 47, 52, 57, 62, 67, 72, 77, 82, 87, 92, 97]
    assert len(sample_indices(100, 10.0, 2.0, 8)) == 8
    assert sample_indices(3, 30.0, 2.0, 32).tolist() == [1], "a clip shorter than a sample period still gives a frame"
    assert sample_indices(5, 1.0, 30.0, 32).tolist() == [0, 1, 2, 3, 4], "never more frames than the clip has"
    with pytest.raises(ValueError, match="the video has no frames"):
        sample_indices(0, 10.0, 2.0, 8)
    with pytest.raises(ValueError, match="fps must be > 0"):
        sample_indices(10, 10.0, 0.0, 8)


def test_decord_reads_the_sampled_frames(video_file):
    frames = load_video(video_file, fps=4, max_frames=32)
    assert frames.pixels.shape == (8, 112, 140, 3) and frames.pixels.dtype == np.uint8
    assert frames.fps == pytest.approx(4.0)
    assert frames.pixels[0, 35, 20, 0] > 200 and frames.pixels[0, 35, 20, 2] < 80  # the yellow square
    assert len(load_video(video_file, fps=4, max_frames=3).pixels) == 3


def test_bad_video_files_are_named(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_video(tmp_path / "missing.mp4")
    with pytest.raises(ValueError, match="is a folder: give the path of a video file"):
        load_video(tmp_path)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="is empty"):
        load_video(empty)
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    with pytest.raises(ValueError, match="could not read .* as a video"):
        load_video(corrupt)


def test_frame_stacks_and_comfy_video_objects(video_file):
    stack = torch.rand(12, 56, 84, 3)
    frames = load_video(stack, fps=2, max_frames=32, source_fps=4)
    assert frames.pixels.shape == (6, 56, 84, 3)

    class Components:
        images = stack
        frame_rate = 4.0

    class VideoInput:
        """Like ComfyUI's base VIDEO type: serves a stream by re-encoding its frames."""

        def get_stream_source(self):
            raise AssertionError("an in-memory video must not be re-encoded")

        def get_components(self):
            raise NotImplementedError

        get_components.__isabstractmethod__ = True

    class VideoFromFile(VideoInput):
        def get_stream_source(self):
            return video_file

        def get_components(self):
            raise AssertionError("a file-backed video is decoded from its file, sampled frames only")

    class VideoFromComponents(VideoInput):
        def get_components(self):
            return Components()

    assert load_video(VideoFromFile(), fps=4).pixels.shape == (8, 112, 140, 3)
    assert load_video(VideoFromComponents(), fps=2).pixels.shape == (6, 56, 84, 3)
    with pytest.raises(ValueError, match="NaN"):
        load_video(torch.full((4, 8, 8, 3), float("nan")), source_fps=2)


def test_chunked_preprocessing_equals_one_call_even_with_the_pixel_cap(qwen25, video_file):
    processor = copy.deepcopy(qwen25.processor.video_processor)
    processor.max_video_tokens = 40  # small enough that the per-frame cap binds for this clip
    frames = load_video(video_file, fps=4, max_frames=32)
    whole = processor(videos=[frames.pixels], return_tensors="pt", do_sample_frames=False, cap_pixels_per_frame=True)
    chunked = preprocess(processor, frames, chunk_frames=2)
    assert torch.equal(chunked["video_grid_thw"], whole["video_grid_thw"])
    assert torch.equal(chunked["pixel_values_videos"], whole["pixel_values_videos"])
    uncapped = qwen25.processor.video_processor(videos=[frames.pixels], return_tensors="pt", do_sample_frames=False)
    assert uncapped["video_grid_thw"].prod() > whole["video_grid_thw"].prod()


def _vanilla_video(lvlm, frames, prompt, images=()):
    processor = lvlm.processor
    content = [{"type": "image"} for _ in images] + [{"type": "video"}, {"type": "text", "text": prompt}]
    text = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
    metadata = VideoMetadata(**frames.metadata())
    inputs = processor(
        text=[text], images=list(images) or None, videos=[frames.pixels], video_metadata=[metadata],
        return_tensors="pt", do_sample_frames=False, cap_pixels_per_frame=True,
    )
    out = lvlm.model.generate(**inputs, max_new_tokens=5, do_sample=False, return_dict_in_generate=True, output_logits=True)
    return torch.stack(out.logits, dim=1)[0]


@pytest.mark.parametrize("frame_count", [8, 7], ids=["even", "odd-padded"])
def test_video_with_merging_off_equals_vanilla(lvlm, video_file, frame_count):
    frames = load_video(video_file, fps=4, max_frames=frame_count)
    assert len(frames.pixels) == frame_count
    expected = _vanilla_video(lvlm, frames, "What moves?")
    visuals = illava.encode(lvlm, video=video_file, fps=4, max_frames=frame_count)
    result = illava.generate(lvlm, visuals, "What moves?", options=GenerationOptions(max_new_tokens=5), return_logits=True)
    assert torch.equal(result.logits[0], expected[: len(result.logits[0])])
    assert visuals.items[0].token_grid[0] == 4


def test_images_and_a_video_in_one_prompt_equal_vanilla(qwen25, video_file, images):
    frames = load_video(video_file, fps=4, max_frames=8)
    expected = _vanilla_video(qwen25, frames, "Does the picture appear in the video?", images=[images[0]])
    visuals = illava.encode(qwen25, images[0], video=video_file, fps=4, max_frames=8)
    assert [item.kind for item in visuals.items] == ["image", "video"]
    result = illava.generate(qwen25, visuals, "Does the picture appear in the video?",
                             options=GenerationOptions(max_new_tokens=5), return_logits=True)
    assert torch.equal(result.logits[0], expected[: len(result.logits[0])])


def test_stage1_runs_per_frame_group_and_stage2_across_frames(lvlm, tmp_path):
    path = write_video(tmp_path / "long.mp4", frames=40, height=168, width=168)
    config = MergeConfig(stage1_layers=(2,), stage1_keep=0.5, stage2_layers=(2,), stage2_keep=0.3)
    visuals = illava.encode(lvlm, video=path, config=config, fps=4, max_frames=16)
    item = visuals.items[0]
    t, h, w = item.trace.grid
    assert t == 8 and item.preview.shape[0] == t
    per_group = np.isin(item.trace.stage1, [1, 2]).reshape(t, -1).sum(-1)
    assert per_group.tolist() == [round(h * w * 0.5)] * t, "stage 1 keeps the same share of every frame group"
    result = illava.generate(lvlm, visuals, "Where does the square go?", config, GenerationOptions(max_new_tokens=2))
    tokens = result.stats[0]["visual_tokens"]
    assert tokens["llm_after_stage2"] == round(item.tokens_kept * 0.3)
    kept2 = np.isin(result.traces[0][0].stage2, [1, 2]).reshape(t, -1).sum(-1)
    assert kept2.sum() == tokens["llm_after_stage2"]
    figure = trace_figure(result.traces[0][0], item.preview)
    assert figure.ndim == 3 and figure.shape[0] > item.preview.shape[1] * 3


MEMORY_SCRIPT = """
import resource, sys
import numpy as np
from transformers import AutoProcessor
from illava.backbones.qwen.video import preprocess
from illava.video import load_video
processor = AutoProcessor.from_pretrained(sys.argv[1]).video_processor
preprocess(processor, load_video(sys.argv[2], fps=8, max_frames=4))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
frames = load_video(sys.argv[2], fps=8, max_frames=64)
out = preprocess(processor, frames)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(frames.pixels.nbytes, out["pixel_values_videos"].numel() * 4, (after - before) * 1024)
"""


def test_encoding_64_frames_holds_one_copy_of_the_decoded_clip(model_dirs, tmp_path):
    """Only the sampled frames are decoded, once; preprocessing works a few frames at a time.

    The peak may hold the decoded clip, the model input built from it and a few chunks' float
    intermediates; preprocessing the whole clip in one call (about 500 MB here) goes past that.
    """
    import subprocess
    import sys

    path = write_video(tmp_path / "big.mp4", frames=64, height=448, width=448, fps=8)
    done = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, model_dirs["qwen2_5_vl"], path], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    decoded, model_input, growth = (int(v) for v in done.stdout.split())
    assert decoded == 64 * 448 * 448 * 3
    budget = decoded + model_input + decoded * 4
    assert growth < budget, f"peak grew {growth / 1e6:.0f} MB; budget {budget / 1e6:.0f} MB"
