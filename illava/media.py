"""Image inputs: PIL images, numpy arrays, ComfyUI IMAGE tensors and file paths, as RGB PIL images."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

# Qwen's image processor refuses anything more elongated than this.
MAX_ASPECT = 200


def to_pil_images(images: Any) -> list[Image.Image]:
    """Turn one image or a collection of images into a list of RGB PIL images.

    Accepts PIL images, file paths, HxWxC uint8/float arrays, and (B, H, W, C) float tensors in 0..1
    (ComfyUI's IMAGE). Raises ValueError naming what is wrong with an input.
    """
    if isinstance(images, (torch.Tensor, np.ndarray)) and images.ndim == 4:
        out = [_one_image(frame, f"image {i}") for i, frame in enumerate(images)]
    else:
        if isinstance(images, (Image.Image, str, Path, np.ndarray, torch.Tensor)):
            images = [images]
        out = [_one_image(image, f"image {i}") for i, image in enumerate(_as_list(images))]
    if not out:
        raise ValueError("no images given: pass at least one image")
    for i, image in enumerate(out):
        width, height = image.size
        if max(width, height) > MAX_ASPECT * min(width, height):
            raise ValueError(
                f"image {i} is {width}x{height} pixels: the model accepts aspect ratios up to {MAX_ASPECT}:1; "
                "crop or pad it first"
            )
    return out


def _as_list(images: Any) -> list:
    if isinstance(images, (list, tuple)):
        return list(images)
    raise ValueError(f"images must be an image or a list of images, got unsupported type {type(images).__name__}")


def _one_image(image: Any, name: str) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, (str, Path)):
        path = Path(image)
        if not path.is_file():
            raise ValueError(f"{name}: file {str(path)!r} does not exist")
        try:
            with Image.open(path) as opened:
                if opened.mode.startswith("I"):
                    # 16-bit (and 32-bit integer) greyscale: PIL's convert clips at 255, so scale it instead.
                    return _array_image(np.clip(np.asarray(opened), 0, 65535).astype(np.uint16), name)
                return opened.convert("RGB")
        except OSError as error:
            # PIL's "cannot identify image file '<path>'" says no more than this, and the path is named already.
            detail = "unknown format, or corrupt" if isinstance(error, UnidentifiedImageError) else str(error)
            raise ValueError(f"{name}: {str(path)!r} is not a readable image ({detail})") from None
    if isinstance(image, torch.Tensor):
        return _tensor_image(image, name)
    if isinstance(image, np.ndarray):
        return _array_image(image, name)
    raise ValueError(f"{name}: unsupported type {type(image).__name__}; use a PIL image, a path, an array or a tensor")


def _tensor_image(image: torch.Tensor, name: str) -> Image.Image:
    return _array_image(image.detach().float().cpu().numpy(), name)


def _array_image(array: np.ndarray, name: str) -> Image.Image:
    return Image.fromarray(rgb_uint8(array, name), "RGB")


def rgb_uint8(array: np.ndarray, name: str) -> np.ndarray:
    """An H x W (x 1, 3 or 4) array of 8-bit, 16-bit or 0..1 float values as H x W x 3 uint8.

    Raises ValueError naming ``name`` for other shapes, empty images and NaN or infinite values.
    """
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        raise ValueError(f"{name}: expected an H x W x C array with 1, 3 or 4 channels, got shape {tuple(array.shape)}")
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise ValueError(f"{name}: image has no pixels (shape {tuple(array.shape)})")
    if array.dtype != np.uint8:
        values = array.astype(np.float32)
        if not np.isfinite(values).all():
            raise ValueError(f"{name}: image contains NaN or infinite values")
        scale = 255.0 if values.max(initial=0.0) <= 1.0 else 1.0
        if array.dtype == np.uint16:
            scale = 255.0 / 65535.0
        array = np.clip(values * scale + 0.5, 0, 255).astype(np.uint8)
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    return np.ascontiguousarray(array[..., :3])
