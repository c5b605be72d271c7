"""What a family's test fixtures provide: each family module of this package lists its own in ``FIXTURES``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Fixture:
    """How to build one architecture's tiny model folder.

    tokenizer(): the tokenizer; model_config(text_dims, vision_dims, tokenizer, initializer_range): (transformers'
    config, its model class); processor(tokenizer, min_pixels, max_pixels): the processor real checkpoints ship.
    """

    tokenizer: Callable
    model_config: Callable
    processor: Callable
