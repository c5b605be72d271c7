"""Fitting an image's area into a pixel range, for models whose processors take no pixel limits."""

from __future__ import annotations

import math

from PIL import Image

from ...config import Resolution


def fit_area(image: Image.Image, resolution: Resolution) -> Image.Image:
    """``image`` scaled, aspect kept, so that its area lies in ``resolution``'s range (unchanged when it does)."""
    area = image.width * image.height
    if resolution.max_pixels and area > resolution.max_pixels:
        scale, rounding = math.sqrt(resolution.max_pixels / area), math.floor
    elif resolution.min_pixels and area < resolution.min_pixels:
        scale, rounding = math.sqrt(resolution.min_pixels / area), math.ceil
    else:
        return image
    size = (max(1, rounding(image.width * scale)), max(1, rounding(image.height * scale)))
    return image.resize(size, Image.Resampling.BICUBIC)
