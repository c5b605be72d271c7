"""Backbone adapters, one per architecture, registered by ``model_type``."""

from . import qwen  # noqa: F401  (registers the Qwen adapters)
from .base import Backbone, EncodedVision, backbone_for, supported_model_types

__all__ = ["Backbone", "EncodedVision", "backbone_for", "supported_model_types"]
