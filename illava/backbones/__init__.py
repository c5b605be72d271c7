"""Backbone adapters, one sub-package per model family, registered by ``model_type``."""

from . import internvl, llava_onevision, minicpmv, qwen  # noqa: F401  (importing registers the adapters)
from .base import (
    Backbone,
    EncodedVision,
    ItemLayout,
    backbone_for,
    min_transformers,
    supported_model_types,
    transformers_shortfall,
)

__all__ = [
    "Backbone",
    "EncodedVision",
    "ItemLayout",
    "backbone_for",
    "min_transformers",
    "supported_model_types",
    "transformers_shortfall",
]
