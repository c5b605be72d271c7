"""Backbone adapters, one sub-package per model family, registered by ``model_type``."""

from . import internvl, llava_onevision, minicpmv, qwen  # noqa: F401  (importing registers the adapters)
from .base import Backbone, EncodedVision, ItemLayout, backbone_for, supported_model_types

__all__ = ["Backbone", "EncodedVision", "ItemLayout", "backbone_for", "supported_model_types"]
