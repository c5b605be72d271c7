"""InternVL: stage 1 inside InternViT in whole pixel-shuffle groups."""

from .adapter import InternVLBackbone

__all__ = ["InternVLBackbone"]
