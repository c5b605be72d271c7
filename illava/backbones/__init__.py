"""Backbone adapters, one sub-package per model family, registered by ``model_type``.

Every sub-package but ``common`` is a family and is imported here, which registers its adapters: a new family
is a new folder, with no list to edit.
"""

import importlib
import pkgutil

from .base import (
    Backbone,
    EncodedVision,
    ItemLayout,
    backbone_for,
    family_names,
    min_transformers,
    oldest_releases,
    supported_model_types,
    transformers_shortfall,
)



def import_families() -> None:
    """Import every sub-package of this one but ``common``, each registering its family's adapters."""
    for family in pkgutil.iter_modules(__path__):
        if family.ispkg and family.name != "common":
            importlib.import_module(f"{__name__}.{family.name}")


import_families()

__all__ = [
    "Backbone",
    "EncodedVision",
    "ItemLayout",
    "backbone_for",
    "family_names",
    "min_transformers",
    "oldest_releases",
    "supported_model_types",
    "transformers_shortfall",
]
