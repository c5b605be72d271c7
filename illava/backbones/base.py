"""The backbone contract: every hook the core calls, and the registry that picks an adapter by ``model_type``.

The core (``encoding``, ``prompt``, ``generation``, ``stage2``) knows no model: it asks the
adapter for the processor's inputs, the encoder's (stage-1 reduced) features, each item's token map
and prompt text, the extra arguments the model's ``generate`` takes, and the attention scores
stage 2 ranks tokens by. Adding a model family means adding a sub-package here that implements
these hooks and calls ``register``.
"""

from __future__ import annotations

import abc

import functools
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..config import MergeConfig, Resolution
from .common.decoder_scoring import decoder_query_scores


@dataclass(frozen=True)
class ItemShape:
    """What the cost model reads of an image or video: its token map and token counts.

    grid: (views, rows, columns) of the item's LLM-token map; a view is a tile, a slice, a frame or
    a temporal patch group, as the model cuts the item.
    tokens_full: LLM tokens of the item without merging (extra tokens such as image newlines included).
    patches: tokens entering the vision encoder.
    """

    grid: tuple[int, int, int]
    tokens_full: int
    patches: int


@dataclass(frozen=True)
class ItemLayout(ItemShape):
    """One encoded image's or video's shape, and how to draw its preview, the same for every backbone.

    draw: turns the pixel values of the item's call, as the processor made them, into its preview
    (``draw(pixels, mean=..., std=...)``, the processor's normalisation undone).
    pixels, normalisation: those pixel values on the host and the processor's (mean, std), bound by
    ``encode``. The preview is drawn only when
    something reads it, so an encode copies no pixels off the device and pays for no picture.
    Adapters subclass it to carry what their own prompt text needs.
    """

    draw: Callable[[torch.Tensor], np.ndarray] | None = field(default=None, kw_only=True, repr=False, compare=False)
    pixels: torch.Tensor | None = field(default=None, kw_only=True, repr=False, compare=False)
    normalisation: tuple[list[float], list[float]] | None = field(default=None, kw_only=True, repr=False, compare=False)

    @functools.cached_property
    def preview(self) -> np.ndarray:
        """(views, h, w, 3) uint8: each view as the encoder saw it."""
        if self.draw is None or self.pixels is None or self.normalisation is None:
            raise ValueError("this layout carries no pixels to draw a preview from")
        mean, std = self.normalisation
        return self.draw(self.pixels, mean=mean, std=std)


@dataclass(frozen=True)
class EncodedVision:
    """Vision encoder output for each image or video of one call, in input order.

    features: (n_kept_i, llm_hidden) LLM-ready tokens, in the order the prompt takes them.
    kept_groups: (n_kept_i,) raster index of each token in the item's token map (-1 for extra
    tokens such as image newlines).
    stage1_status: (views * rows * columns,) int8 status code of every cell of the token map after stage 1.
    layouts: per item, its token map, counts and how to draw its preview.
    layer_features: per layer that adds visual features inside the text model (Qwen3-VL's DeepStack),
    that layer's features of each item, aligned with ``features``; empty for models without them.
    """

    features: tuple[torch.Tensor, ...]
    kept_groups: tuple[torch.Tensor, ...]
    stage1_status: tuple[torch.Tensor, ...]
    layouts: tuple[ItemLayout, ...]
    layer_features: tuple[tuple[torch.Tensor, ...], ...] = ()


@dataclass
class LayerFeatures:
    """Visual features a text model adds to its visual tokens after each of its first layers (DeepStack).

    visual_mask: (batch, n) where the visual tokens are; features: per layer, (visual tokens, hidden).
    Stage 2 reduces both as it reduces the tokens.
    """

    visual_mask: torch.Tensor | None
    features: list[torch.Tensor]


class Backbone(abc.ABC):
    """Thin adapter around one transformers model class: where its parts are, how to feed and score it.

    The hooks a family must write are abstract (an adapter missing one cannot be made); the others have
    defaults that fit a model whose processor puts one placeholder per visual feature in the prompt and whose
    decoder is Llama-style.
    """

    #: The text model takes (t, h, w) M-RoPE positions; False for plain 1D rotary positions.
    mrope = False
    #: True: the prompt holds a placeholder for every token of the item's full token map, positions are
    #: computed for that prompt, and the placeholders of tokens stage 1 removed are then taken out with
    #: their positions, so every kept token keeps its true M-RoPE position. False: the prompt holds one
    #: placeholder per kept feature.
    prompt_holds_full_grid = False

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model

    @property
    def config(self):
        return self.model.config

    # --- sizes -------------------------------------------------------------------------------

    @property
    @abc.abstractmethod
    def language_model(self) -> torch.nn.Module:
        """The text model whose ``forward`` stage 2 stands in for (it has ``layers``, ``norm``, ``rotary_emb``)."""

    @property
    def llm_depth(self) -> int:
        """Decoder layers of the text model."""
        return len(self.language_model.layers)

    @property
    @abc.abstractmethod
    def vit_depth(self) -> int:
        """Vision encoder layers that run (and that stage 1 can reduce before; the depth itself means its output)."""

    @property
    @abc.abstractmethod
    def vision_layers(self) -> torch.nn.ModuleList:
        """The vision encoder's layers in order (the first ``vit_depth`` of them run)."""

    @property
    def stage2_choices(self) -> tuple[int, ...] | None:
        """The LLM layers stage 2 can prune before, when only some can (None: any layer from 1).

        Scores come from the attention map of the layer before, so in a hybrid model only the layers
        right after a full-attention one qualify.
        """
        linear = self.linear_attention_layers
        if not linear:
            return None
        return tuple(i + 1 for i in range(self.llm_depth - 1) if i not in linear)

    @property
    def vision_width(self) -> int:
        """The vision encoder's hidden width (its attention's query/key width, for the cost model)."""
        vision = self.config.vision_config
        return getattr(vision, "embed_dim", None) or vision.hidden_size

    @property
    def text_width(self) -> int:
        """The text model's hidden width (for the cost model's attention and LM-head terms)."""
        return self.language_model.config.hidden_size

    @property
    def vocab_size(self) -> int:
        """Rows of the LM head (for the cost model's decoding FLOPs)."""
        return self.language_model.config.vocab_size

    def vision_window(self, layer: int) -> int | None:
        """Patches each patch of encoder layer ``layer`` attends over when the layer attends in windows
        (None: over its whole view)."""
        return None

    @abc.abstractmethod
    def typical_shapes(self, kind: str, processor=None) -> tuple[ItemShape, ...]:
        """The shapes of a typical input of ``kind``: a 1024x768 image, or a 16-frame 448x448 video, cut as
        ``processor`` (the model's own; its class defaults when None) cuts it. ``auto``, the method
        placements and the readouts fit their budgets on it; every run reports its work on its own input."""

    @property
    def context_length(self) -> int:
        """Prompt plus generated tokens the text model holds."""
        return self.model.config.text_config.max_position_embeddings

    @property
    def linear_attention_layers(self) -> frozenset[int]:
        """Text-model layers with linear (recurrent) attention: they take a 2D padding mask and have no
        attention map to score with."""
        types = getattr(self.language_model.config, "layer_types", None) or ()
        return frozenset(i for i, kind in enumerate(types) if kind == "linear_attention")

    # --- vision: processor inputs and the encoder ---------------------------------------------

    @abc.abstractmethod
    def image_inputs(
        self, processor, images: list, resolution: Resolution = Resolution()
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(pixel values, grid) of the PIL images of one prompt, each encoded within ``resolution``'s pixel
        range as this model's processor can honour it; the grid is the adapter's own, handed back to
        ``encode_vision`` and ``stock_encode`` as it is."""

    @abc.abstractmethod
    def smallest_image_pixels(self, processor) -> int:
        """The fewest pixels this model encodes an image with (one merge group, or one tile for tiling
        models); a ``max_pixels`` below it cannot be honoured."""

    def check_resolution(self, processor, resolution: Resolution) -> None:
        """Raise ValueError when ``resolution.max_pixels`` is below the smallest image the model encodes."""
        smallest = self.smallest_image_pixels(processor)
        if resolution.max_pixels and resolution.max_pixels < smallest:
            side = math.isqrt(smallest)
            raise ValueError(
                f"max_pixels {resolution.max_pixels} is below the smallest image this model encodes "
                f"({side}x{side} = {smallest} pixels): raise max_pixels, or set 0 for the model's default"
            )

    @abc.abstractmethod
    def video_inputs(self, processor, frames) -> tuple[torch.Tensor, torch.Tensor]:
        """(pixel values, grid) of one clip's sampled ``video.Frames``."""

    @abc.abstractmethod
    def stock_encode(self, pixel_values: torch.Tensor, grid: torch.Tensor, kind: str) -> EncodedVision:
        """The model's own vision encoder, untouched (stage 1 off); ``kind`` is "image" or "video"."""

    @abc.abstractmethod
    def encode_vision(
        self,
        pixel_values: torch.Tensor,
        grid: torch.Tensor,
        config: MergeConfig,
        check_interrupt: Callable[[], None] | None = None,
    ) -> EncodedVision:
        """The vision encoder with stage 1 as ``config`` sets it; ``check_interrupt`` is called between layers."""

    # --- the prompt --------------------------------------------------------------------------

    def item_placeholders(self, processor, item, index: int) -> str:
        """The prompt text that stands for a visual item; ``index`` counts the prompt's earlier items of its
        kind. By default one image or video placeholder per kept feature."""
        token = processor.image_token if item.kind == "image" else processor.video_token
        return token * item.tokens_kept

    def token_types(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(batch, n) 0 for text, 1 for image and 2 for video placeholders (a model without a video token
        reads its frames as images)."""
        config = self.model.config
        types = (input_ids == config.image_token_id).long()
        video_id = getattr(config, "video_token_id", None)
        if video_id is not None:
            types += 2 * (input_ids == video_id).long()
        return types

    def prompt_kwargs(self, items: Sequence, device: torch.device) -> dict[str, Any]:
        """Extra model arguments the positions of a prompt holding ``items`` depend on."""
        return {}

    def position_ids(self, input_ids: torch.Tensor, model_kwargs: dict) -> torch.Tensor | None:
        """The positions ``generate`` would build for the prompt; None where it builds 1D positions itself."""
        return None

    def feature_kinds(self, items: Sequence) -> dict[str, list]:
        """The ``mm_encoder_outputs`` entry that takes each visual item's features, items in prompt order."""
        return {kind: [item for item in items if item.kind == kind] for kind in ("image", "video")}

    def encoder_output(self, features: tuple[torch.Tensor, ...], layer_features: tuple[tuple[torch.Tensor, ...], ...]):
        """What ``generate`` takes as ``mm_encoder_outputs[kind]`` for these items' features."""
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        return BaseModelOutputWithPooling(pooler_output=features)

    def generate_inputs(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """The subset of ``prompt.build_inputs``' result that the model's ``generate`` accepts."""
        return inputs

    # --- the language model (stage 2) -------------------------------------------------------

    def query_scores(
        self,
        layer: torch.nn.Module,
        hidden: torch.Tensor,
        rotary: tuple[torch.Tensor, torch.Tensor],
        key_mask: torch.Tensor,
        slots: torch.Tensor,
        keys: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(batch, m, n) head-averaged attention the tokens at ``slots`` (batch, m) pay every token in ``layer``,
        each up to its own slot.

        hidden: the layer's input; key_mask: (batch, n) False for padding; keys: its rotated keys when the
        KV cache already holds them.
        """
        return decoder_query_scores(layer, hidden, rotary, key_mask, slots, keys)

    def pop_layer_features(self, text_kwargs: dict[str, Any]) -> LayerFeatures | None:
        """Take the per-layer visual features (DeepStack) out of the text model's forward arguments; None
        for models without them."""
        return None

    def add_layer_features(self, hidden: torch.Tensor, visual_mask: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """``hidden`` after a layer, with one layer's ``LayerFeatures`` added to its visual tokens."""
        raise NotImplementedError("a family whose pop_layer_features returns features adds them here")


_REGISTRY: dict[str, type[Backbone]] = {}
# Per model type: its family's name and the oldest transformers release whose classes serve it.
_REQUIREMENTS: dict[str, tuple[str, str]] = {}


def register(model_type: str, adapter: type[Backbone], name: str, min_transformers: str) -> None:
    """Serve models whose ``config.model_type`` is ``model_type`` with ``adapter``.

    ``name`` is the family as users know it; ``min_transformers`` the oldest transformers release
    under which the tests pass for it (exactness and merged decoding).
    """
    _REGISTRY[model_type] = adapter
    _REQUIREMENTS[model_type] = (name, min_transformers)


def min_transformers(model_type: str) -> str:
    """The oldest transformers release that serves ``model_type``."""
    return _REQUIREMENTS[model_type][1]


def oldest_releases() -> list[tuple[str, list[str]]]:
    """Each family's oldest transformers release, lowest first, with the families (their sub-package names,
    which their tests carry) that it is the oldest for: what the oldest-versions test run installs in turn."""
    from packaging.version import Version

    oldest: dict[str, str] = {}
    for model_type, adapter in _REGISTRY.items():
        family = adapter.__module__.split(".backbones.")[1].split(".")[0]
        needed = _REQUIREMENTS[model_type][1]
        if family not in oldest or Version(needed) > Version(oldest[family]):
            oldest[family] = needed
    releases = sorted(set(oldest.values()), key=Version)
    return [(release, sorted(f for f, needed in oldest.items() if needed == release)) for release in releases]


def installed_transformers() -> str:
    """The version of the transformers in use."""
    import transformers

    return transformers.__version__


def transformers_shortfall(model_type: str) -> str | None:
    """Why the installed transformers cannot serve ``model_type`` (too old), or None when it can."""
    from packaging.version import Version

    name, needed = _REQUIREMENTS[model_type]
    installed = installed_transformers()
    if Version(installed) >= Version(needed):
        return None
    return (
        f"{name} needs transformers >= {needed} (installed: {installed}): "
        f"upgrade with pip install -U 'transformers>={needed},<6'"
    )


def supported_model_types() -> list[str]:
    return sorted(_REGISTRY)


def family_names() -> list[str]:
    """The supported families as users know them (Qwen2.5-VL, InternVL, ...), in registration order."""
    return list(dict.fromkeys(name for name, _ in _REQUIREMENTS.values()))


def backbone_for(model: torch.nn.Module) -> Backbone:
    """The adapter for a loaded model; a ValueError naming the supported types for any other."""
    model_type = getattr(model.config, "model_type", None)
    if model_type not in _REGISTRY:
        raise ValueError(
            f"model type {model_type!r} is not supported by iLLaVA; supported: {', '.join(supported_model_types())}"
        )
    return _REGISTRY[model_type](model)
