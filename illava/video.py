"""Video inputs: decord-decoded files, ComfyUI VIDEO objects and frame stacks, sampled by fps.

Only the sampled frames are ever decoded, into one uint8 array; everything downstream works from it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .media import rgb_uint8

DEFAULT_FPS = 2.0
DEFAULT_MAX_FRAMES = 32
DECODE_CHUNK = 8


@dataclass(frozen=True)
class Frames:
    """Sampled frames (T, H, W, 3) uint8, the rate they were sampled at, and where they came from."""

    pixels: np.ndarray
    fps: float
    indices: tuple[int, ...]
    source_fps: float
    source_frames: int

    def metadata(self) -> dict:
        """The fields of transformers' ``VideoMetadata`` for these frames."""
        return {"total_num_frames": self.source_frames, "fps": self.source_fps, "frames_indices": list(self.indices)}

    @property
    def timestamps(self) -> tuple[float, ...]:
        """Seconds into the source video of each sampled frame."""
        return tuple(i / self.source_fps for i in self.indices)


def sample_indices(total: int, source_fps: float, fps: float, max_frames: int) -> np.ndarray:
    """Evenly spaced frame indices: ``fps`` per second of video, at most ``max_frames``, at least one."""
    if total < 1:
        raise ValueError("the video has no frames: check that the file is a complete video")
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    if max_frames < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")
    duration = total / source_fps if source_fps > 0 else total / DEFAULT_FPS
    count = max(1, min(max_frames, total, math.floor(duration * fps + 1e-6) or 1))
    return np.minimum(((np.arange(count) + 0.5) * total / count).astype(np.int64), total - 1)


def load_video(source: Any, fps: float = DEFAULT_FPS, max_frames: int = DEFAULT_MAX_FRAMES, source_fps: float | None = None) -> Frames:
    """Sample frames from a file path, a ComfyUI VIDEO, or a (T, H, W, C) frame stack.

    ``source_fps`` gives the frame rate of a frame stack (it has none of its own; default 24).
    """
    if isinstance(source, (str, Path)):
        return _from_file(Path(source), fps, max_frames)
    if hasattr(source, "get_components") or hasattr(source, "get_stream_source"):
        return _from_comfy_video(source, fps, max_frames)
    if isinstance(source, (np.ndarray, torch.Tensor)) or isinstance(source, (list, tuple)):
        return _from_stack(source, fps, max_frames, source_fps or 24.0)
    raise ValueError(
        f"unsupported video input {type(source).__name__}: give a file path, a ComfyUI VIDEO or a frame stack"
    )


def _decord():
    try:
        import decord
    except ImportError:
        raise ValueError(
            "reading video files needs decord: pip install decord (or decord2 where no decord wheel exists)"
        ) from None
    return decord


def _from_file(path: Path, fps: float, max_frames: int) -> Frames:
    if path.is_dir():
        raise ValueError(f"{str(path)!r} is a folder: give the path of a video file")
    if not path.is_file():
        raise ValueError(f"video file {str(path)!r} does not exist")
    if path.stat().st_size == 0:
        raise ValueError(f"{str(path)!r} is empty (0 bytes): give a complete video file")
    decord = _decord()
    try:
        reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
        total = len(reader)
        source_fps = float(reader.get_avg_fps() or 0.0)
    except Exception as error:  # noqa: BLE001 - decord raises its own error types for broken files
        raise ValueError(f"could not read {str(path)!r} as a video ({str(error).splitlines()[0][:200]})") from None
    return _sampled(reader, total, source_fps, fps, max_frames, str(path))


def _sampled(reader, total: int, source_fps: float, fps: float, max_frames: int, name: str) -> Frames:
    indices = sample_indices(total, source_fps, fps, max_frames)
    pixels = None
    try:
        # Decoding a few frames at a time into one array keeps a single full copy of the clip.
        for start in range(0, len(indices), DECODE_CHUNK):
            batch = reader.get_batch(indices[start : start + DECODE_CHUNK].tolist()).asnumpy()
            if pixels is None:
                pixels = np.empty((len(indices), *batch.shape[1:]), dtype=np.uint8)
            pixels[start : start + len(batch)] = batch
    except Exception as error:  # noqa: BLE001
        raise ValueError(f"could not decode frames of {name} ({str(error).splitlines()[0][:200]})") from None
    rate = source_fps if source_fps > 0 else DEFAULT_FPS
    sampled_fps = len(indices) / (total / rate)
    return Frames(pixels, sampled_fps, tuple(int(i) for i in indices), rate, total)


def _from_comfy_video(video: Any, fps: float, max_frames: int) -> Frames:
    """A file-backed VIDEO is decoded from its file (sampled frames only); others from their frames."""
    if _file_backed(video):
        source = video.get_stream_source()
        if isinstance(source, (str, Path)) and Path(source).is_file() and _has_decord():
            return _from_file(Path(source), fps, max_frames)
    components = video.get_components()
    return _from_stack(components.images, fps, max_frames, float(components.frame_rate))


def _file_backed(video: Any) -> bool:
    """True when the class that serves the stream also decodes it, i.e. the stream is the source file.

    ComfyUI's base VIDEO type serves in-memory videos by re-encoding every frame; only subclasses
    backed by a file override that.
    """
    for cls in type(video).__mro__:
        if "get_stream_source" in vars(cls):
            decode = vars(cls).get("get_components")
            return decode is not None and not getattr(decode, "__isabstractmethod__", False)
    return False


def _has_decord() -> bool:
    try:
        _decord()
    except ValueError:
        return False
    return True


def _from_stack(frames: Any, fps: float, max_frames: int, source_fps: float) -> Frames:
    total = len(frames)
    indices = sample_indices(total, source_fps, fps, max_frames)
    picked = [_frame_uint8(frames[int(i)], int(i)) for i in indices]
    shapes = {frame.shape for frame in picked}
    if len(shapes) != 1:
        raise ValueError(f"all frames of a video must have one size, got {sorted(shapes)}")
    sampled_fps = len(indices) / (total / source_fps)
    return Frames(np.stack(picked), sampled_fps, tuple(int(i) for i in indices), source_fps, total)


def _frame_uint8(frame: Any, index: int) -> np.ndarray:
    if isinstance(frame, torch.Tensor):
        frame = frame.detach().cpu().numpy()
    return rgb_uint8(np.asarray(frame), f"frame {index}")
