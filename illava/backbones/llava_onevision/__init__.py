"""LLaVA-OneVision: stage 1 inside SigLIP, tokens packed in the model's own anyres order."""

from .adapter import LlavaOnevisionBackbone

__all__ = ["LlavaOnevisionBackbone"]
