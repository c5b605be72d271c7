"""Backbone adapters, one per architecture, registered by ``model_type``."""

from . import internvl, llava_onevision, minicpmv, qwen, qwen3_vl  # noqa: F401  (importing registers the adapters)
from .base import Backbone, EncodedVision, backbone_for, supported_model_types

__all__ = ["Backbone", "EncodedVision", "backbone_for", "supported_model_types"]
