"""Encode Video from a file path, a frame batch and a ComfyUI-style VIDEO object, then Generate and Preview."""

from __future__ import annotations

import pytest
import torch

from helpers import write_video
from nodes_harness import run_node, widget_defaults


@pytest.fixture(scope="module")
def video_path(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("video") / "clip.mp4", frames=16, height=112, width=112, fps=8)


def encode_video(mappings, lvlm, **inputs):
    node = mappings["iLLaVA_EncodeVideo"]
    values = {**widget_defaults(node), "lvlm": lvlm, "fps": 4.0, **inputs}
    return run_node(node, **values)


def paper_video(mappings):
    node = mappings["iLLaVA_MergeConfig"]
    (choice,), _ = run_node(node, **{**widget_defaults(node), "preset": "paper video"})
    return choice


def test_a_file_path_encodes_per_frame_group_and_previews_every_group(mappings, lvlm, video_path):
    (visuals,), ui = encode_video(mappings, lvlm, path=video_path, config=paper_video(mappings))
    item = visuals.items[0]
    assert item.kind == "video" and item.token_grid[0] == 4
    assert "1 video (4 frame groups)" in ui["text"][0]
    assert item.tokens_kept < item.tokens_full
    generate = mappings["iLLaVA_Generate"]
    (text, texts, stats, trace), _ = run_node(
        generate, **{**widget_defaults(generate), "lvlm": lvlm, "visuals": visuals, "max_new_tokens": 3, "config": paper_video(mappings)}
    )
    assert "after stage 2" in stats
    (maps,), preview_ui = run_node(mappings["iLLaVA_PreviewTokens"], visuals=visuals, trace=trace)
    assert maps.shape[0] == 1, "one strip: the frame groups side by side, a row per stage"
    assert len(preview_ui["images"]) == 1


def test_frames_and_video_objects_give_the_same_tokens_as_the_file(mappings, lvlm, video_path):
    from illava_pack.illava.video import load_video

    (from_file,), _ = encode_video(mappings, lvlm, path=video_path)
    decoded = load_video(video_path, fps=8, max_frames=64)
    frames = torch.from_numpy(decoded.pixels).float() / 255.0
    (from_frames,), _ = encode_video(mappings, lvlm, frames=frames, frames_fps=8.0)
    assert from_frames.items[0].token_grid == from_file.items[0].token_grid

    class Components:
        images = frames
        frame_rate = 8.0

    class InMemoryVideo:
        def get_components(self):
            return Components()

    (from_object,), _ = encode_video(mappings, lvlm, video=InMemoryVideo())
    assert torch.equal(from_object.items[0].features, from_frames.items[0].features)


def test_no_source_or_two_sources_name_the_fix(mappings, lvlm, video_path):
    with pytest.raises(ValueError, match="^Connect a VIDEO"):
        encode_video(mappings, lvlm)
    with pytest.raises(ValueError, match="^Connect only one of video, frames and path"):
        encode_video(mappings, lvlm, path=video_path, frames=torch.rand(4, 32, 32, 3))
    with pytest.raises(ValueError, match="could not read .* as a video|is empty|does not exist"):
        encode_video(mappings, lvlm, path=video_path + ".missing")
