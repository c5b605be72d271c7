"""Qwen2-VL, Qwen2.5-VL and Qwen3-VL: stage 1 in whole 2x2 merge groups of the ViT, M-RoPE positions kept."""

from .qwen2_vl import QwenVLBackbone
from .qwen3_vl import Qwen3VLBackbone

__all__ = ["QwenVLBackbone", "Qwen3VLBackbone"]
