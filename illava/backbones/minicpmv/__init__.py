"""MiniCPM-V 4.6: stage 1 inside its SigLIP encoder in whole LLM-token blocks; a hybrid Qwen3.5 LLM."""

from .adapter import MiniCPMVBackbone

__all__ = ["MiniCPMVBackbone"]
