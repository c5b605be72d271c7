"""Stage 1 inside MiniCPM-V 4.6's vision encoder: every slice is reduced on its own, in whole LLM-token blocks.

The encoder is SigLIP in NaViT form: each slice (the downsized source image or one high-resolution
slice, or a video frame) is one full-attention segment of a packed sequence; learned position
embeddings are added once, before the first layer, and there are no rotary positions, so removing
patches mid-encoder is selecting rows and recounting the segments. After layer ``insert_layer_id``
the window merger fuses every 2x2 window of patches into one token, and after the encoder the
model's merger fuses 2x2 of those into one LLM token ("16x"; "4x" skips the window merger). An LLM
token therefore stands for a block of 4x4 (or 2x2) patches, and stage 1 keeps or drops whole
blocks: the window merger and the final merger then still fuse true neighbours, in the model's own
order, and the LLM gets one token per kept block.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ...config import MergeConfig
from ...merge import KEPT
from ...methods import EncoderScorer, encoder_scorer
from ..common.group_reduction import reduce_groups
from ..common.ragged import run_ragged
from ..common.tiles import prenorm_layer_scores


@dataclass
class Slice:
    """One slice's current rows: unit grid (rows, columns), the raster ids of the units present and
    the block side in units (4 patches, or 2 once windows are merged; 2 in "4x" mode)."""

    rows: int
    columns: int
    ids: torch.Tensor
    block: int

    @property
    def blocks_across(self) -> int:
        return self.columns // self.block

    def block_of(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(block raster id, place in the block in raster order) of each unit id."""
        row, column = ids // self.columns, ids % self.columns
        block = (row // self.block) * self.blocks_across + column // self.block
        return block, (row % self.block) * self.block + column % self.block


class BlockReducer:
    """Reduce each slice's LLM-token blocks with ``config.method`` (iLLaVA: keep the best blocks, fold the
    rest into recycled ones). A block's score is the attention its units receive; its features, for
    similarity and recycling, are its units' hidden states in raster order."""

    def __init__(self, blocks: list[int], config: MergeConfig, device: torch.device = torch.device("cpu")) -> None:
        self.config = config
        # Bookkeeping lives beside the hidden states: a host copy would stop the device at every slice.
        self.status = [torch.full((n,), KEPT, dtype=torch.int8, device=device) for n in blocks]
        # ToMe's token sizes: how many original blocks each current block stands for.
        self.sizes = [torch.ones(n, device=device) for n in blocks]
        self.targets = config.stage1_schedule.steps(blocks)

    def __call__(
        self, step: int, index: int, part: Slice, scores: torch.Tensor, hidden: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Reduce one slice: positions (into its rows) of the rows that go on, and their new states."""
        block, place = part.block_of(part.ids)
        target = self.targets[step - 1][index]
        units = part.block * part.block
        return reduce_groups(hidden, scores, block, place, units, target, self.sizes[index], self.status[index], self.config)


class SliceEncoder:
    """Runs MiniCPM-V 4.6's vision tower over packed slices, reducing before each stage-1 layer.

    A stage layer equal to the encoder depth reduces the output. Without ``scored`` (methods that
    ignore attention) the reducer gets zero scores.
    """

    def __init__(self, model, config: MergeConfig, scored: bool) -> None:
        self.tower = model.model.vision_tower
        self.merger = model.model.merger
        self.window = model.config.downsample_mode != "4x"
        self.insert_layer = model.config.insert_layer_id if self.window else -1
        self.config = config
        self.scored = scored

    def __call__(
        self, pixel_values: torch.Tensor, target_sizes: torch.Tensor, check_interrupt: Callable[[], None] | None = None
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], BlockReducer]:
        """Per slice: the raster ids of its kept LLM-token blocks, their LLM tokens, and the reducer's record."""
        tower, config = self.tower, self.config
        sizes = [tuple(int(v) for v in row) for row in target_sizes.tolist()]
        first = 4 if self.window else 2
        parts = [Slice(h, w, torch.arange(h * w, device=pixel_values.device), first) for h, w in sizes]
        reducer = BlockReducer([(h // first) * (w // first) for h, w in sizes], config, pixel_values.device)
        hidden = tower.embeddings(pixel_values, target_sizes=target_sizes)[0]
        layers = tower.encoder.layers
        stage_layers = config.stage1_layers
        previous: tuple[torch.Tensor, list[Slice]] | None = None
        reduced = False
        segments = _Segments()
        for index in range(len(layers) + 1):
            if check_interrupt is not None:
                check_interrupt()
            if index in stage_layers:
                hidden, parts = self._reduce(stage_layers.index(index) + 1, layers[index - 1], previous, hidden, parts, reducer)
                reduced = True
            if index == len(layers):
                break
            previous = (hidden, parts)
            hidden = segments.run(layers[index], hidden, [p.ids.numel() for p in parts])
            if index == self.insert_layer:
                hidden, parts = self._merge_windows(hidden, parts, target_sizes, reduced)
        hidden = tower.post_layernorm(hidden)
        return self._project(hidden, parts, target_sizes, reduced) + (reducer,)

    def _reduce(self, step, score_layer, previous, hidden, parts: list[Slice], reducer: BlockReducer):
        """Reduce every slice; scores come from ``score_layer``, whose input was ``previous``."""
        scores = self._scores(score_layer, previous, parts, encoder_scorer(self.config.method, self.config.score_chunk))
        rows, out, start = [], [], 0
        for index, (part, score) in enumerate(zip(parts, scores)):
            n = part.ids.numel()
            keep, values = reducer(step, index, part, score, hidden[start : start + n])
            rows.append(values)
            out.append(Slice(part.rows, part.columns, part.ids[keep], part.block))
            start += n
        return torch.cat(rows), out

    def _scores(self, layer, previous, parts: list[Slice], scorer: EncoderScorer) -> list[torch.Tensor]:
        """Per slice, ``scorer``'s score of each of its current rows' blocks from the attention of ``layer`` (per row)."""
        if not self.scored:
            return [torch.zeros(p.ids.numel(), device=p.ids.device) for p in parts]
        inputs, before = previous
        pieces = list(inputs.split([old.ids.numel() for old in before]))
        received = []
        for part, old, rows in zip(parts, before, run_ragged(lambda batch: prenorm_layer_scores(layer, batch, scorer), pieces)):
            # The layer may have run before the window merger: sum its rows per block, then give each
            # current row its block's total divided among the block's current rows.
            old_block, _ = old.block_of(old.ids)
            new_block, _ = part.block_of(part.ids)
            totals = torch.zeros(old.rows * old.columns // old.block**2, device=rows.device).index_add_(0, old_block, rows)
            received.append(totals[new_block] / (part.block * part.block))
        return received

    def _merge_windows(self, hidden, parts: list[Slice], target_sizes, reduced: bool):
        """The model's window merger (2x2 patches -> one token) over the kept windows."""
        merger = self.tower.vit_merger
        if not reduced:
            merged = merger(hidden[None], target_sizes)[0]
        else:
            # Kept blocks hold whole windows; laid out as one two-row strip, window j's patches sit at
            # (0, 2j), (0, 2j+1), (1, 2j), (1, 2j+1), so the merger sees each window as the model does.
            strip, start = [], 0
            for part in parts:
                row, column = part.ids // part.columns, part.ids % part.columns
                window = (row // 2) * (part.columns // 2) + column // 2
                order = torch.argsort(window * 4 + (row % 2) * 2 + column % 2).view(-1, 2, 2)
                strip.append(order + start)
                start += part.ids.numel()
            order = torch.cat(strip).permute(1, 0, 2).reshape(-1)
            windows = order.numel() // 4
            sizes = torch.tensor([[2, 2 * windows]], device=target_sizes.device, dtype=target_sizes.dtype)
            merged = merger(hidden[order][None], sizes)[0]
        out = []
        for part in parts:
            row, column = part.ids // part.columns, part.ids % part.columns
            windows = torch.unique((row // 2) * (part.columns // 2) + column // 2)
            out.append(Slice(part.rows // 2, part.columns // 2, windows, part.block // 2))
        return merged, out

    def _project(self, hidden, parts: list[Slice], target_sizes, reduced: bool):
        """The model's merger (2x2 tokens -> one LLM token) over each slice's kept blocks."""
        if not reduced:
            sizes = target_sizes // 2 if self.window else target_sizes
            features = self.merger(hidden[None], sizes)
            return [torch.arange(f.shape[0], device=f.device) for f in features], list(features)
        mlp = self.merger.mlp[0]
        blocks, features, start = [], [], 0
        for part in parts:
            n = part.ids.numel()
            block, place = part.block_of(part.ids)
            order = torch.argsort(block * 4 + place).view(-1, 4)
            blocks.append(block[order[:, 0]])
            features.append(mlp(hidden[start : start + n][order].flatten(1)))
            start += n
        return blocks, features


class _Segments:
    """The packed slices' attention segments, uploaded once per change of their lengths rather than per
    layer; the longest is known on the host, so flash attention never reads it back from the device."""

    def __init__(self) -> None:
        self.counts: list[int] = []
        self.cu_seqlens: torch.Tensor | None = None

    def run(self, layer: torch.nn.Module, hidden: torch.Tensor, counts: list[int]) -> torch.Tensor:
        """One encoder layer over the packed slices, each its own attention segment."""
        if counts != self.counts:
            self.counts = counts
            self.cu_seqlens = torch.tensor([0, *counts], device=hidden.device).cumsum(0).to(torch.int32)
        return layer(hidden[None], attention_mask=None, cu_seqlens=self.cu_seqlens, max_seqlen=max(counts))[0]
