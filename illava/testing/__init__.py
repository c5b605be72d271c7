"""Test fixtures: tiny random-weight models of every supported architecture, saved as real model folders.

Nothing here is used by the core library; tests, the benchmark and the demo build their models with it.
"""

from .models import build_model_folder, fixtures, processor_for

__all__ = ["build_model_folder", "fixtures", "processor_for"]
