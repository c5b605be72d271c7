"""Train the offline demo model: a small Qwen2.5-VL from scratch on illava.lab.scenes questions.

    python scripts/train_demo.py --out demo_model --max-minutes 45

The model is transformers' own Qwen2_5_VLForConditionalGeneration built from a config, with a
word-level tokenizer over the question vocabulary plus Qwen's special tokens, saved (bfloat16
safetensors) with its processor and chat template so that ``illava.load`` reads it like any real
checkpoint. Training has two phases: the vision tower alone learns to name the shape and colour at
each object's token (``--vision-steps``), then the whole model learns the answers, with two
attention heads told where each question's objects are (``--attention-weight``), the layers before
them taught to write each visual token's place into it (``--place-weight``), the state after them
to hold where one pointed object lies from the other (``--contrast-weight``), the attention
that stage 2 and FastV rank visual tokens with kept on the objects (``--scoring-weight``), and the
input of the pointed layer made to hold the objects each question names at its answer
(``--query-weight``) and each object's shape and colour at its centre token (``--name-weight``). Inputs
are prepared with the library's own image and video preprocessing, so training sees exactly what
``illava.encode`` feeds the model. A checkpoint is written every ``--save-every`` steps and at the
end; the log goes to stdout.
"""

from __future__ import annotations

import argparse
import copy
import math
import re
import shutil
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from illava.lab import scenes  # noqa: E402
from illava.lab.evaluate import MAX_FRAMES, VIDEO_FPS  # noqa: E402
from illava.testing.models import CHAT_TEMPLATE, SPECIAL_TOKENS  # noqa: E402
from illava.video import load_video  # noqa: E402
from illava.backbones.qwen.video import preprocess as preprocess_video  # noqa: E402

IMAGE_MIN_PIXELS, IMAGE_MAX_PIXELS = 56 * 56, 224 * 224
VIDEO_MIN_PIXELS, VIDEO_MAX_PIXELS = 56 * 56, 160 * 160
KIND_WEIGHTS = {"image": 0.45, "video": 0.4, "multi": 0.15}
UNKNOWN = "<unk>"
PAD = "<|endoftext|>"


def build_tokenizer():
    """A word-level fast tokenizer: Qwen's special tokens, then every word the scenes can use."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {PAD: 0}
    for token in SPECIAL_TOKENS + [UNKNOWN]:
        vocab[token] = len(vocab)
    for word in scenes.vocabulary():
        vocab.setdefault(word, len(vocab))
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNKNOWN))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.decoder = decoders.WordPiece(prefix="##")
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token=UNKNOWN, pad_token=PAD, eos_token="<|im_end|>", model_max_length=32768
    )
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS})
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_processor(tokenizer):
    """Qwen2.5-VL's processor with pixel limits that keep images at most 64 tokens and video frames small."""
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessorPil, Qwen2VLVideoProcessor

    return Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessorPil(min_pixels=IMAGE_MIN_PIXELS, max_pixels=IMAGE_MAX_PIXELS),
        video_processor=Qwen2VLVideoProcessor(min_pixels=VIDEO_MIN_PIXELS, max_pixels=VIDEO_MAX_PIXELS),
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
    )


def build_model(tokenizer, args: argparse.Namespace):
    """A freshly initialised Qwen2_5_VLForConditionalGeneration sized by ``args``."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    im_end = ids["<|im_end|>"]
    head_dim = args.hidden // args.heads
    rotary = head_dim // 2
    temporal = rotary // 4
    spatial = rotary - temporal
    text_config = dict(
        vocab_size=len(tokenizer),
        hidden_size=args.hidden,
        intermediate_size=args.hidden * 3,
        num_hidden_layers=args.llm_depth,
        num_attention_heads=args.heads,
        num_key_value_heads=max(1, args.heads // 2),
        rope_parameters={
            "rope_type": "default",
            "rope_theta": args.rope_theta,
            "mrope_section": [1] * rotary if args.interleave_rope else [temporal, spatial // 2, spatial - spatial // 2],
        },
        max_position_embeddings=4096,
        bos_token_id=0,
        eos_token_id=im_end,
        pad_token_id=0,
    )
    vision_config = dict(
        depth=args.vit_depth,
        hidden_size=args.vit_width,
        intermediate_size=args.vit_width * 4,
        num_heads=max(1, args.vit_width // 64),
        out_hidden_size=args.hidden,
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
        window_size=112,
        fullatt_block_indexes=list(range(1, args.vit_depth, 2)),
        tokens_per_second=2,
    )
    config = Qwen2_5_VLConfig(
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    config.eos_token_id = im_end
    config.pad_token_id = 0
    model = Qwen2_5_VLForConditionalGeneration(config)
    model.generation_config.eos_token_id = im_end
    model.generation_config.pad_token_id = 0
    model.generation_config.bos_token_id = 0
    return model


@dataclass
class Example:
    """One training sequence: its visuals, the objects drawn in each image or frame, and its (family, question, answer) turns."""

    images: tuple[np.ndarray, ...]
    frames: tuple[np.ndarray, ...]
    turns: list[tuple[str, str, str]]
    pictures: tuple[tuple[scenes.Shape, ...], ...]

    @classmethod
    def from_sample(cls, sample: scenes.Sample) -> "Example":
        return cls(sample.images, sample.frames, [(sample.family, sample.question, sample.answer)], sample.shapes)

    @classmethod
    def conversation(cls, index: int, turns: int, difficulty: float = 1.0) -> "Example":
        chat = scenes.conversation(index, turns, difficulty=difficulty)
        return cls((chat.image,), (), chat.turns, (chat.shapes,))


def encode_example(processor, example: Example) -> dict:
    """Token ids, loss labels, pixel inputs and attention targets of one example.

    Pixels are prepared as ``illava.encode`` prepares them; every answer (and its end-of-turn
    token) is a target, everything else is context. ``targets`` holds, per answer and pointed
    head, the indices (among the example's visual tokens) of the tokens over the objects that head
    should look at (``pointed_names``).
    """
    merge = processor.image_processor.merge_size
    visual, expanded, out = [], [], {"images": None, "video": None}
    # Per visual token group (an image, or a video's temporal patch): its size and the objects drawn in it.
    groups: list[tuple[int, int, int, int, list[scenes.Shape]]] = []
    times: list[float | None] = []
    if example.images:
        processed = processor.image_processor(images=[Image.fromarray(i) for i in example.images], return_tensors="pt")
        out["images"] = (processed["pixel_values"], processed["image_grid_thw"])
        for pixels, shapes, (_, grid_h, grid_w) in zip(example.images, example.pictures, processed["image_grid_thw"].tolist()):
            visual.append({"type": "image"})
            expanded.append(grid_h * grid_w // merge**2)
            groups.append((pixels.shape[1], pixels.shape[0], grid_h // merge, grid_w // merge, list(shapes)))
            times.append(None)
    if example.frames:
        frames = load_video(np.stack(example.frames), VIDEO_FPS, MAX_FRAMES, VIDEO_FPS)
        processed = preprocess_video(processor.video_processor, frames)
        temporal = processor.video_processor.temporal_patch_size
        out["video"] = (processed["pixel_values_videos"], processed["video_grid_thw"], temporal / frames.fps)
        visual.append({"type": "video"})
        grid_t, grid_h, grid_w = processed["video_grid_thw"][0].tolist()
        expanded.append(grid_t * grid_h * grid_w // merge**2)
        height, width = example.frames[0].shape[:2]
        for patch in range(grid_t):
            indices = frames.indices[patch * temporal : (patch + 1) * temporal] or frames.indices[-1:]
            shapes = [shape for index in indices for shape in example.pictures[index]]
            groups.append((width, height, grid_h // merge, grid_w // merge, shapes))
            times.append((patch + 0.5) / grid_t)
    out["input_ids"], out["labels"], out["families"] = chat_ids(processor, visual, expanded, example.turns)
    out["targets"] = [
        tuple(referred_tokens(groups, pointer) for pointer in pointed_names(family, question, answer, example.pictures))
        for family, question, answer in example.turns
    ]
    out["places"] = token_places(groups, times)
    out["named"] = [question_objects(question) for _, question, _ in example.turns]
    out["identities"] = token_identities(groups)
    return out


@dataclass(frozen=True)
class Pointer:
    """What one pointed head reads: the objects named, in every visual group or in the first or last showing them."""

    names: frozenset[str]
    moment: str = "all"


def pointed_names(
    family: str, question: str, answer: str, pictures: Sequence[Sequence[scenes.Shape]]
) -> tuple[Pointer, Pointer]:
    """What each of the two pointed heads should look at when answering a question.

    The first looks at what the question is about and the second is left free, except where the
    answer compares two places. In a position question ("is the red star left of the blue
    circle?") the first looks at the object named first and the second at the other; in a motion
    question the first looks at the moving object in the first temporal patch and the second in
    the last. With each visual token's place written into its hidden state (``PlaceProbe``), the
    answer is then a comparison of what the two heads read.
    """
    names = scenes.referred_names(family, question, answer, pictures)
    if family == "position":
        named_first, named_second = sorted(names, key=question.index)
        return Pointer(frozenset({named_first})), Pointer(frozenset({named_second}))
    if family == "motion":
        return Pointer(frozenset(names), "first"), Pointer(frozenset(names), "last")
    return Pointer(frozenset(names)), Pointer(frozenset())


def cell_centres(width: int, height: int, rows: int, cols: int) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Pixel centres (x, y), each (rows, cols), of the image cells that merged visual tokens cover, and the cell size."""
    cell_w, cell_h = width / cols, height / rows
    ys, xs = np.mgrid[0:rows, 0:cols]
    return (xs + 0.5) * cell_w, (ys + 0.5) * cell_h, cell_w, cell_h


def centre_cell(shape: scenes.Shape, cell_w: float, cell_h: float, rows: int, cols: int) -> tuple[int, int]:
    """(row, col) of the cell that holds ``shape``'s centre."""
    return min(int(shape.y / cell_h), rows - 1), min(int(shape.x / cell_w), cols - 1)


def answer_starts(labels: torch.Tensor) -> torch.Tensor:
    """Where each answer begins: True at the positions whose next label is an answer's first token."""
    return (labels[:, 1:] != -100) & (labels[:, :-1] == -100)


def pointed_answers(labels: torch.Tensor, targets: list[list]):
    """(row, position, pointed) for every answer: the position that predicts it and its entry in ``targets``.

    ``targets`` holds one entry per answer of each row: the tokens each head should read, or any other per-answer label.
    """
    first = answer_starts(labels)
    for row, answers in enumerate(targets):
        for position, pointed in zip(first[row].nonzero().flatten().tolist(), answers):
            yield row, position, pointed


def referred_tokens(groups, pointer: Pointer) -> np.ndarray | None:
    """Indices of the visual tokens whose cell centre lies inside a pointed object (and of each one's centre cell).

    ``pointer.moment`` "first" or "last" keeps only the first or last group (a video's temporal
    patch) in which a pointed object is drawn.
    """
    showing = [index for index, group in enumerate(groups) if any(shape.name in pointer.names for shape in group[4])]
    if pointer.moment != "all":
        showing = showing[:1] if pointer.moment == "first" else showing[-1:]
    found, offset = [], 0
    for index, (width, height, rows, cols, shapes) in enumerate(groups):
        centre_x, centre_y, cell_w, cell_h = cell_centres(width, height, rows, cols)
        inside = np.zeros((rows, cols), dtype=bool)
        for shape in shapes if index in showing else ():
            if shape.name in pointer.names:
                inside |= np.hypot(centre_x - shape.x, centre_y - shape.y) < shape.radius
                inside[centre_cell(shape, cell_w, cell_h, rows, cols)] = True
        found.append(offset + np.flatnonzero(inside))
        offset += rows * cols
    tokens = np.concatenate(found) if found else np.zeros(0, dtype=np.int64)
    return tokens if len(tokens) else None


def place_contrast(places: torch.Tensor, pointed: tuple[np.ndarray | None, ...]) -> torch.Tensor | None:
    """Where the first head's objects lie relative to the second's: (x, y) of one mean place minus the other's.

    None unless both heads are pointed (position and motion questions).
    """
    if any(tokens is None for tokens in pointed):
        return None
    first, second = (places[torch.from_numpy(tokens), :2].mean(0) for tokens in pointed)
    return first - second


def question_objects(question: str) -> tuple[int, int, int, int]:
    """(colour, shape) classes of the first two objects ``question`` names, in order.

    A noun phrase is a colour, a shape or both ("the red star", "the star", "red objects");
    ``len(scenes.COLOURS)`` or ``len(scenes.SHAPES)`` stands for a part (or an object) it does not name.
    """
    colours, shapes = list(scenes.COLOURS), list(scenes.SHAPES)
    singular = {plural: kind for kind, plural in scenes.PLURALS.items()}
    objects: list[list[int]] = []
    open_phrase: list[int] | None = None
    for word in re.findall(r"[a-z]+", question.lower()):
        if word in colours:
            open_phrase = [colours.index(word), len(shapes)]
            objects.append(open_phrase)
        elif word in shapes or word in singular:
            kind = shapes.index(singular.get(word, word))
            if open_phrase is None:
                objects.append([len(colours), kind])
            else:
                open_phrase[1] = kind
            open_phrase = None
        else:
            open_phrase = None
    objects += [[len(colours), len(shapes)]] * 2
    (first_colour, first_shape), (second_colour, second_shape) = objects[:2]
    return first_colour, first_shape, second_colour, second_shape


def token_identities(groups) -> torch.Tensor:
    """Per visual token, the (shape, colour) class of the object centred in its cell, -100 where none is."""
    colours, found = list(scenes.COLOURS), []
    for width, height, rows, cols, shapes in groups:
        _, _, cell_w, cell_h = cell_centres(width, height, rows, cols)
        labels = np.full((rows, cols, 2), -100)
        for shape in shapes:
            labels[centre_cell(shape, cell_w, cell_h, rows, cols)] = (scenes.SHAPES.index(shape.kind), colours.index(shape.colour))
        found.append(labels.reshape(-1, 2))
    return torch.from_numpy(np.concatenate(found))


def token_places(groups, times: Sequence[float | None]) -> torch.Tensor:
    """Each visual token's place, from -1 to 1: (x, y, time), time NaN in a still image.

    ``times`` holds each group's time as a fraction of the clip (None for an image).
    """
    places = []
    for (_, _, rows, cols, _), fraction in zip(groups, times):
        ys, xs = np.mgrid[0:rows, 0:cols]
        when = np.full((rows, cols), np.nan if fraction is None else 2 * fraction - 1)
        places.append(np.stack([2 * (xs + 0.5) / cols - 1, 2 * (ys + 0.5) / rows - 1, when], -1).reshape(-1, 3))
    return torch.from_numpy(np.concatenate(places)).float()


def chat_ids(processor, visual: list[dict], expanded: list[int], turns) -> tuple[list[int], list[int], list[str]]:
    """The chat template's ids for a conversation, labels on the answers, and the family of each answer."""
    tokenizer = processor.tokenizer
    pattern = re.compile(f"{re.escape(processor.image_token)}|{re.escape(processor.video_token)}")
    counts = iter(expanded)
    messages, rendered = [], ""
    ids, labels, families = [], [], []
    for family, question, answer in turns:
        content = (visual if not messages else []) + [{"type": "text", "text": question}]
        messages.append({"role": "user", "content": content})
        prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        context = pattern.sub(lambda match: match.group(0) * next(counts), prompt[len(rendered) :])
        context_ids = tokenizer(context, add_special_tokens=False)["input_ids"]
        answer_ids = tokenizer(answer + "<|im_end|>", add_special_tokens=False)["input_ids"]
        ids += context_ids + answer_ids
        labels += [-100] * len(context_ids) + answer_ids
        families.append(family)
        messages.append({"role": "assistant", "content": answer})
        rendered = prompt + answer + "<|im_end|>"
    return ids, labels, families


def collate(encoded: list[dict], model_config) -> dict:
    """Right-padded ids, labels and masks plus the concatenated pixel inputs of a batch."""
    width = max(len(e["input_ids"]) for e in encoded)
    input_ids = torch.zeros((len(encoded), width), dtype=torch.long)
    labels = torch.full((len(encoded), width), -100, dtype=torch.long)
    attention_mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for row, e in enumerate(encoded):
        length = len(e["input_ids"])
        input_ids[row, :length] = torch.tensor(e["input_ids"])
        labels[row, :length] = torch.tensor(e["labels"])
        attention_mask[row, :length] = 1
    token_types = (input_ids == model_config.image_token_id).long() + 2 * (input_ids == model_config.video_token_id).long()
    batch = {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask, "mm_token_type_ids": token_types}
    batch["families"] = [family for e in encoded for family in e["families"]]
    batch["targets"] = [e["targets"] for e in encoded]
    batch["places"] = [e["places"] for e in encoded]
    batch["named"] = [e["named"] for e in encoded]
    batch["identities"] = [e["identities"] for e in encoded]
    images = [e["images"] for e in encoded if e["images"] is not None]
    if images:
        batch["pixel_values"] = torch.cat([pixels for pixels, _ in images])
        batch["image_grid_thw"] = torch.cat([grid for _, grid in images])
    videos = [e["video"] for e in encoded if e["video"] is not None]
    if videos:
        batch["pixel_values_videos"] = torch.cat([pixels for pixels, _, _ in videos])
        batch["video_grid_thw"] = torch.cat([grid for _, grid, _ in videos])
        batch["second_per_grid_ts"] = torch.tensor([seconds for _, _, seconds in videos])
    return batch


class TrainingBatches:
    """An endless, seeded stream of collated training batches (built in-process: a loader worker halved throughput here).

    Set ``progress`` (0 to 1) as training goes: image scenes follow a curriculum from one large
    object to the full task over the first ``curriculum`` of training, and the first
    ``images_first`` of it shows images only.
    """

    def __init__(self, processor, model_config, args: argparse.Namespace) -> None:
        self.processor, self.model_config, self.args = processor, model_config, args
        self.progress = 0.0

    def __iter__(self):
        args = self.args
        rng = np.random.default_rng(args.seed)
        kinds, weights = list(KIND_WEIGHTS), list(KIND_WEIGHTS.values())
        index = 0
        while True:
            # One kind per batch: videos are about twice as long as images, and mixing them wastes half
            # of every batch on padding.
            kind = "image" if self.progress < args.images_first else str(rng.choice(kinds, p=weights))
            difficulty = min(1.0, self.progress / args.curriculum) if args.curriculum > 0 else 1.0
            if kind == "image":
                examples = [Example.conversation(index + i, args.turns, difficulty) for i in range(args.batch)]
            else:
                examples = [Example.from_sample(scenes.sample("train", kind, index + i)) for i in range(args.batch)]
            encoded = [encode_example(self.processor, example) for example in examples]
            index += args.batch
            yield collate(encoded, self.model_config)


class VisionTargets:
    """Seeded scenes with a label per merged visual token, for the vision tower's warm-up.

    The token under each object's centre is labelled with the object's shape and colour, tokens
    clear of every object with "background", and the rest (object edges) are not scored. Naming
    the object at its centre token makes the tower combine the patches around it: shape is told by
    edges that lie in other patches.
    """

    def __init__(self, processor, seed: int) -> None:
        self.processor = processor
        self.rng = np.random.default_rng((seed, 7))
        self.merge = processor.image_processor.merge_size

    def batch(self, size: int) -> tuple[dict, torch.Tensor, torch.Tensor]:
        images, shapes_per_image = [], []
        for _ in range(size):
            height, width = scenes.IMAGE_SIZES[int(self.rng.integers(len(scenes.IMAGE_SIZES)))]
            count = int(self.rng.integers(1, scenes.MAX_OBJECTS + 1))
            shapes = scenes.random_shapes(self.rng, height, width, count, scenes.OBJECT_RADIUS)
            images.append(Image.fromarray(scenes.render(scenes.background(self.rng, height, width), shapes)))
            shapes_per_image.append(shapes)
        processed = self.processor.image_processor(images=images, return_tensors="pt")
        shape_labels, colour_labels = [], []
        for image, shapes, (_, grid_h, grid_w) in zip(images, shapes_per_image, processed["image_grid_thw"].tolist()):
            rows, cols = grid_h // self.merge, grid_w // self.merge
            kinds, colours = self._token_labels(image.width, image.height, rows, cols, shapes)
            shape_labels.append(kinds)
            colour_labels.append(colours)
        return processed, torch.cat(shape_labels), torch.cat(colour_labels)

    @staticmethod
    def _token_labels(width: int, height: int, rows: int, cols: int, shapes) -> tuple[torch.Tensor, torch.Tensor]:
        centre_x, centre_y, cell_w, cell_h = cell_centres(width, height, rows, cols)
        clear = np.ones((rows, cols), dtype=bool)
        for shape in shapes:
            reach = shape.radius + math.hypot(cell_w, cell_h) / 2
            clear &= np.hypot(centre_x - shape.x, centre_y - shape.y) > reach
        clear = torch.from_numpy(clear.reshape(-1))
        identities = token_identities([(width, height, rows, cols, shapes)])
        centred = identities[:, 0] >= 0
        kinds = torch.where(centred, identities[:, 0], torch.where(clear, len(scenes.SHAPES), -100))
        colours = torch.where(centred, identities[:, 1], torch.where(clear, len(scenes.COLOURS), -100))
        return kinds, colours


def warm_up_vision(model, processor, args: argparse.Namespace) -> None:
    """Train the vision tower (and merger) alone for ``args.vision_steps`` steps on per-token labels.

    Learned only through the answers, the tower stayed blind to shape for thousands of steps; with
    its tokens labelled directly it learns shape in a few hundred, and the language model then only
    has to learn where to look. The two linear heads are discarded afterwards.
    """
    if args.vision_steps <= 0:
        return
    vision = model.model.visual
    width = model.config.vision_config.out_hidden_size
    shape_head = torch.nn.Linear(width, len(scenes.SHAPES) + 1)
    colour_head = torch.nn.Linear(width, len(scenes.COLOURS) + 1)
    parameters = [*vision.parameters(), *shape_head.parameters(), *colour_head.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=args.lr, betas=(0.9, 0.98), weight_decay=0.1)
    targets = VisionTargets(processor, args.seed)
    start, hits = time.perf_counter(), []
    vision.train()
    for step in range(1, args.vision_steps + 1):
        for group in optimizer.param_groups:
            group["lr"] = args.lr * learning_rate_factor(step / args.vision_steps, args.warmup, args.lr_floor)
        processed, kinds, colours = targets.batch(args.batch)
        features = vision(processed["pixel_values"], grid_thw=processed["image_grid_thw"]).pooler_output
        shape_logits, colour_logits = shape_head(features), colour_head(features)
        # Objects and background are scored apart: background tokens outnumber object centres ten to one.
        objects, background = kinds.ge(0) & kinds.lt(len(scenes.SHAPES)), kinds.eq(len(scenes.SHAPES))
        loss = sum(
            torch.nn.functional.cross_entropy(logits[where], labels[where])
            for logits, labels in ((shape_logits, kinds), (colour_logits, colours))
            for where in (objects, background)
        )
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        hits.append(shape_logits.argmax(-1)[objects].eq(kinds[objects]).float().mean().item())
        if step % args.log_every == 0:
            print(
                f"vision step {step} loss {loss.item():.3f} object shape accuracy {np.mean(hits):.2f} "
                f"{(time.perf_counter() - start) / 60:.1f} min",
                flush=True,
            )
            hits = []


def llm_layer(model, layer: int):
    """LLM decoder layer ``layer`` of ``model``; an out-of-range index is an error that names the valid ones."""
    layers = model.model.language_model.layers
    if not 0 <= layer < len(layers):
        raise ValueError(f"--attention-layer must be an LLM layer from 0 to {len(layers) - 1}, got {layer}")
    return layers[layer]


def visual_positions(batch: dict) -> list[torch.Tensor]:
    """Per row of a collated batch, the sequence positions of its visual tokens, in order."""
    return [types.nonzero().flatten() for types in batch["mm_token_type_ids"]]


class KeptAttentionInputs:
    """Keeps the inputs of one LLM layer's attention from each forward, for a loss to read or to recompute heads from.

    Recomputed rather than read back so that training can keep SDPA, which returns no attention weights.
    """

    def __init__(self, model, layer: int) -> None:
        self.attention = llm_layer(model, layer).self_attn
        self.inputs: dict = {}
        self.attention.register_forward_pre_hook(self._keep_inputs, with_kwargs=True)

    def _keep_inputs(self, module, args, kwargs) -> None:
        self.inputs = {"hidden_states": kwargs["hidden_states"], "position_embeddings": kwargs["position_embeddings"]}

    def take_inputs(self) -> dict:
        """The inputs kept from the last forward, dropped here at once: the saved checkpoint deep-copies the model, this
        hook's owner with it."""
        inputs, self.inputs = self.inputs, {}
        return inputs

    def rotated_heads(self, heads: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotated queries of the first ``heads`` heads and keys of the key/value heads they read, from the last forward.

        Both are (rows, heads, length, dim).
        """
        from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import apply_rotary_pos_emb

        inputs = self.take_inputs()
        attention, hidden = self.attention, inputs["hidden_states"]
        rows, length, _ = hidden.shape
        kv_heads = -(-heads // attention.num_key_value_groups)
        query = attention.q_proj(hidden)[..., : heads * attention.head_dim].view(rows, length, heads, -1).transpose(1, 2)
        key = attention.k_proj(hidden)[..., : kv_heads * attention.head_dim].view(rows, length, kv_heads, -1).transpose(1, 2)
        return apply_rotary_pos_emb(query, key, *inputs["position_embeddings"])


class AnswerAttention(KeptAttentionInputs):
    """A loss that points two LLM attention heads, at each answer's prompt position, at the objects asked about.

    Learned only through the answers, the language model reads what each visual token shows (a
    linear probe of the tokens finds shape and colour) but did not learn, in 45 minutes, to find
    the token a question is about. This names it: the first two heads of ``layer`` (which share
    one key/value head), attending from the position that predicts an answer's first token, are
    each scored by the negative log of the attention they pay the tokens ``pointed_names`` gives
    them. Only training uses it; the model is unchanged.
    """

    heads = 2

    def __init__(self, model, layer: int) -> None:
        super().__init__(model, layer)
        if self.attention.num_key_value_groups < self.heads:
            raise ValueError(f"the pointed heads must share a key/value head: use --heads at least {self.heads}")

    def loss(self, batch: dict, targets: list[list[tuple[np.ndarray | None, ...]]]) -> torch.Tensor | None:
        """Mean negative log attention on the pointed tokens over every head and answer given any, from the last forward."""
        attention = self.attention
        # The pointed heads and the key/value head they read.
        query, key = self.rotated_heads(self.heads)
        visual = visual_positions(batch)
        terms = []
        for row, position, pointed in pointed_answers(batch["labels"], targets):
            for head, tokens in enumerate(pointed):
                if tokens is None:
                    continue
                scores = key[row, 0, : position + 1] @ query[row, head, position] * attention.scaling
                terms.append(-torch.logsumexp(scores.log_softmax(-1)[visual[row][torch.from_numpy(tokens)]], 0))
        return torch.stack(terms).mean() if terms else None


class ScoringAttention(KeptAttentionInputs):
    """A loss that keeps the attention stage 2 and FastV rank visual tokens with on the objects asked about.

    Both score each visual token by the head-averaged attention the last prompt token (the
    position that predicts the answer) pays it in the layer before they prune. A run with
    ``ContrastProbe`` answered where things are, but that attention had moved off the objects, and
    merging kept fewer of their tokens than random drop. This scores it: at each answer position in
    ``layer``, the negative log of the share of the head-averaged attention on visual tokens that
    falls on the tokens any pointed head should read. Attention to the text is left free; only
    training uses it.
    """

    def loss(self, batch: dict, targets: list[list[tuple[np.ndarray | None, ...]]]) -> torch.Tensor | None:
        """Mean over answers of -log(share of the visual attention on the pointed tokens), from the last forward."""
        attention = self.attention
        query, key = self.rotated_heads(attention.config.num_attention_heads)
        key = key.repeat_interleave(attention.num_key_value_groups, dim=1)
        visual = visual_positions(batch)
        terms = []
        for row, position, pointed in pointed_answers(batch["labels"], targets):
            tokens = [torch.from_numpy(found) for found in pointed if found is not None]
            if not tokens:
                continue
            scores = key[row, :, : position + 1] @ query[row, :, position, :, None] * attention.scaling
            on_visual = scores.squeeze(-1).softmax(-1)[:, visual[row]].mean(0)
            asked = torch.cat(tokens).unique()
            terms.append(on_visual.sum().log() - on_visual[asked].sum().log())
        return torch.stack(terms).mean() if terms else None


class PlaceProbe(KeptAttentionInputs):
    """A loss that makes the first LLM layers write each visual token's place into its hidden state.

    Nothing in Qwen2.5-VL gives a visual token its absolute place: the ViT's rotary positions are
    relative, and the LLM's only bias attention. The layers before ``layer`` can work it out (how
    strongly a token attends to the fixed prompt before the image depends on their rotary offset,
    and causal attention on how many tokens precede it), but did not learn to from the answers
    alone. This linear probe reads (x, y, time) from the hidden states ``layer``'s attention sees,
    and its squared error trains them to hold it, so that a head that finds an object also reads
    where it is. The probe is discarded; the model is unchanged.
    """

    def __init__(self, model, layer: int) -> None:
        super().__init__(model, layer)
        self.head = torch.nn.Linear(model.config.text_config.hidden_size, 3)

    def loss(self, batch: dict, places: list[torch.Tensor]) -> torch.Tensor:
        """Mean squared error of the probe's places over every known coordinate of every visual token, last forward."""
        hidden = self.take_inputs()["hidden_states"]
        errors = []
        for row, (visual, place) in enumerate(zip(visual_positions(batch), places)):
            known = ~place.isnan()
            errors.append((self.head(hidden[row, visual]).float() - place)[known])
        return torch.cat(errors).square().mean()


class ClassProbe(KeptAttentionInputs):
    """A linear probe of ``layer``'s attention input that reads several class labels, one block of logits each."""

    def __init__(self, model, layer: int, sizes: list[int]) -> None:
        super().__init__(model, layer)
        self.sizes = sizes
        self.head = torch.nn.Linear(model.config.text_config.hidden_size, sum(sizes))

    def cross_entropy(self, states: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean over the label blocks of the probe's cross-entropy on ``states`` (N, hidden) against ``labels`` (N, blocks)."""
        logits = self.head(states).float().split(self.sizes, dim=-1)
        return sum(torch.nn.functional.cross_entropy(part, labels[:, i]) for i, part in enumerate(logits)) / len(logits)


class QueryProbe(ClassProbe):
    """A loss that makes the first LLM layers carry the objects a question names to the position that answers it.

    The pointed heads of ``layer`` find an object by matching their query, at the answer
    position, to what the visual tokens show. In runs that never learned to find objects, that
    position's state held the question's colour word only about as well as chance allowed (a
    linear probe read it 58% right, 98% in the shipped model). This linear probe reads the colour
    and shape of the first two objects the question names (``question_objects``) from the state
    ``layer``'s attention sees there, and its cross-entropy trains the layers before to deliver
    them. The probe is discarded.
    """

    def __init__(self, model, layer: int) -> None:
        super().__init__(model, layer, [len(scenes.COLOURS) + 1, len(scenes.SHAPES) + 1] * 2)

    def loss(self, batch: dict, named: list[list[tuple[int, int, int, int]]]) -> torch.Tensor:
        """Mean cross-entropy of the probe over the four named parts of every answer's question, last forward."""
        hidden = self.take_inputs()["hidden_states"]
        answers = list(pointed_answers(batch["labels"], named))
        states = torch.stack([hidden[row, position] for row, position, _ in answers])
        return self.cross_entropy(states, torch.tensor([parts for _, _, parts in answers]))


class NameProbe(ClassProbe):
    """A loss that keeps each object's shape and colour in the state of its centre token up to ``layer``.

    The vision warm-up teaches the tower to name the object at each centre token, but with the
    whole model training on answers that knowledge faded: in runs that never learned to find
    objects, a linear probe of ``layer``'s input read the shape at the centre token 77-88% right
    (97% in the shipped model), and a head cannot find a star whose tokens no longer say star.
    This linear probe keeps reading it there, and its cross-entropy trains the tower and the
    layers before ``layer`` to keep it. The probe is discarded.
    """

    def __init__(self, model, layer: int) -> None:
        super().__init__(model, layer, [len(scenes.SHAPES), len(scenes.COLOURS)])

    def loss(self, batch: dict, identities: list[torch.Tensor]) -> torch.Tensor:
        """Mean cross-entropy of the probe's shape and colour over every object centre token, last forward."""
        hidden = self.take_inputs()["hidden_states"]
        states = torch.cat([hidden[row, visual] for row, visual in enumerate(visual_positions(batch))])
        labels = torch.cat(identities)
        centred = labels[:, 0] >= 0
        return self.cross_entropy(states[centred], labels[centred])


class ContrastProbe:
    """A loss that makes the answer's state, after the pointed layer, hold where one pointed object lies from the other.

    The two pointed heads find the two objects a position or motion question compares, and the
    states they read hold each object's place (``PlaceProbe``), yet without this the state at the
    answer position after that layer held almost none of the difference. This linear probe reads
    the (x, y) difference of the places the two heads should read (``place_contrast``) from the
    output of ``layer`` at the position that predicts the answer, and its squared error trains the
    heads, their values and the output projection to deliver it. The probe is discarded.
    """

    def __init__(self, model, layer: int) -> None:
        self.head = torch.nn.Linear(model.config.text_config.hidden_size, 2)
        self.output: torch.Tensor | None = None
        llm_layer(model, layer).register_forward_hook(self._keep_output)

    def _keep_output(self, module, args, output) -> None:
        self.output = output[0] if isinstance(output, tuple) else output

    def loss(self, batch: dict, targets: list[list[tuple]], places: list[torch.Tensor]) -> torch.Tensor | None:
        """Mean squared error of the probe over every answer that compares two places, from the last forward."""
        # Dropped at once, as KeptAttentionInputs' inputs are.
        output, self.output = self.output, None
        errors = []
        for row, position, pointed in pointed_answers(batch["labels"], targets):
            contrast = place_contrast(places[row], pointed)
            if contrast is not None:
                errors.append(self.head(output[row, position]).float() - contrast)
        return torch.stack(errors).square().mean() if errors else None


def save(model, processor, out: Path) -> None:
    """Write a bfloat16 copy of ``model`` with ``processor`` to ``out``, replacing it only once complete."""
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    copy.deepcopy(model).to(torch.bfloat16).save_pretrained(staging, safe_serialization=True)
    processor.save_pretrained(staging)
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)


def learning_rate_factor(progress: float, warmup: float, floor: float) -> float:
    """Linear warm-up over the first ``warmup`` of training, then cosine decay to ``floor``."""
    if progress < warmup:
        return max(progress / warmup, 0.01)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, (progress - warmup) / (1 - warmup))))


def train(args: argparse.Namespace) -> None:
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    tokenizer = build_tokenizer()
    processor = build_processor(tokenizer)
    model = build_model(tokenizer, args)
    parameters = sum(p.numel() for p in model.parameters())
    print(f"parameters: {parameters / 1e6:.2f} M (bfloat16 file about {parameters * 2 / 1e6:.1f} MB)", flush=True)
    warm_up_start = time.perf_counter()
    warm_up_vision(model, processor, args)
    budget = args.max_minutes * 60 - (time.perf_counter() - warm_up_start)
    pointing = AnswerAttention(model, args.attention_layer) if args.attention_weight > 0 else None
    placing = PlaceProbe(model, args.attention_layer) if args.place_weight > 0 else None
    contrasting = ContrastProbe(model, args.attention_layer) if args.contrast_weight > 0 else None
    scoring = ScoringAttention(model, args.scoring_layer) if args.scoring_weight > 0 else None
    querying = QueryProbe(model, args.attention_layer) if args.query_weight > 0 else None
    naming = NameProbe(model, args.attention_layer) if args.name_weight > 0 else None
    probes = [probe.head for probe in (placing, contrasting, querying, naming) if probe]
    parameters = [*model.parameters(), *(p for probe in probes for p in probe.parameters())]
    optimizer = torch.optim.AdamW(parameters, lr=args.lr, betas=(0.9, 0.98), weight_decay=0.1)
    stream = TrainingBatches(processor, model.config, args)
    batches = iter(stream)
    start = time.perf_counter()
    step, progress = 0, 0.0
    losses, extra_losses, tally = [], defaultdict(list), defaultdict(lambda: [0, 0])
    while progress < 1.0:
        progress = max(step / args.steps, (time.perf_counter() - start) / budget)
        for group in optimizer.param_groups:
            group["lr"] = args.lr * learning_rate_factor(progress, args.warmup, args.lr_floor)
        stream.progress = progress
        batch = next(batches)
        families, targets, places = batch.pop("families"), batch.pop("targets"), batch.pop("places")
        named, identities = batch.pop("named"), batch.pop("identities")
        model.train()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            output = model(**batch)
            extras = {
                "attention": (args.attention_weight, pointing.loss(batch, targets) if pointing else None),
                "place": (args.place_weight, placing.loss(batch, places) if placing else None),
                "contrast": (args.contrast_weight, contrasting.loss(batch, targets, places) if contrasting else None),
                "scoring": (args.scoring_weight, scoring.loss(batch, targets) if scoring else None),
                "query": (args.query_weight, querying.loss(batch, named) if querying else None),
                "name": (args.name_weight, naming.loss(batch, identities) if naming else None),
            }
        loss = output.loss
        for name, (weight, extra) in extras.items():
            if extra is not None:
                loss = loss + weight * extra
                extra_losses[name].append(extra.item())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        losses.append(output.loss.item())
        # Each answer's first token is scored, by family: the end-of-turn token after it is trivially right.
        labels = batch["labels"]
        first = answer_starts(labels)
        right = (output.logits[:, :-1].argmax(-1) == labels[:, 1:])[first].tolist()
        for family, hit in zip(families, right):
            tally[family][0] += hit
            tally[family][1] += 1
        if step % args.log_every == 0:
            elapsed = time.perf_counter() - start
            accuracy = " ".join(f"{family}={hits / total:.2f}" for family, (hits, total) in sorted(tally.items()))
            print(
                f"step {step} loss {np.mean(losses):.4f} "
                + "".join(f"{name} loss {np.mean(extra_losses[name] or [0]):.3f} " for name in extras)
                + f"lr {optimizer.param_groups[0]['lr']:.2e} {elapsed / step:.2f} s/step {elapsed / 60:.1f} min | {accuracy}",
                flush=True,
            )
            losses, extra_losses, tally = [], defaultdict(list), defaultdict(lambda: [0, 0])
        if step % args.save_every == 0:
            save(model, processor, Path(args.out))
            print(f"saved {args.out} at step {step}", flush=True)
    save(model, processor, Path(args.out))
    print(f"done: {step} steps, {step * args.batch} samples, {(time.perf_counter() - start) / 60:.1f} min; saved {args.out}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="demo_model")
    parser.add_argument("--steps", type=int, default=4000, help="schedule length in steps")
    parser.add_argument(
        "--max-minutes", type=float, default=45.0,
        help="wall-time budget: the schedule follows whichever of steps and time runs out first",
    )
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--curriculum", type=float, default=0.35, help="fraction of training over which image scenes reach full difficulty")
    parser.add_argument("--images-first", type=float, default=0.25, help="fraction of training that shows images only")
    parser.add_argument("--turns", type=int, default=6, help="questions per training image (one conversation)")
    parser.add_argument(
        "--vision-steps", type=int, default=1500,
        help="steps that train the vision tower alone on per-token shape and colour labels before the answers (0: none)",
    )
    parser.add_argument(
        "--lr-floor", type=float, default=0.3,
        help="the learning rate decays to this fraction of --lr; the model is still learning when time runs out",
    )
    parser.add_argument(
        "--attention-weight", type=float, default=1.0,
        help="weight of the loss that points two LLM attention heads at the objects each question is about (0: none)",
    )
    parser.add_argument("--attention-layer", type=int, default=2, help="the LLM layer whose first two heads are pointed")
    parser.add_argument(
        "--place-weight", type=float, default=1.0,
        help="weight of the loss that makes the LLM layers before --attention-layer write each visual token's place "
        "into its hidden state (0: none)",
    )
    parser.add_argument(
        "--contrast-weight", type=float, default=0.3,
        help="weight of the loss that makes the answer's state after --attention-layer hold where the object one "
        "pointed head reads lies from the other's, in position and motion questions (0: none)",
    )
    parser.add_argument(
        "--scoring-weight", type=float, default=1.0,
        help="weight of the loss that keeps --scoring-layer's head-averaged attention from the answer position, which "
        "stage 2 and FastV rank visual tokens with, on the objects asked about (0: none)",
    )
    parser.add_argument(
        "--query-weight", type=float, default=1.0,
        help="weight of the loss that makes the LLM layers before --attention-layer carry the objects each question "
        "names to the position that answers it (0: none)",
    )
    parser.add_argument(
        "--name-weight", type=float, default=1.0,
        help="weight of the loss that keeps each object's shape and colour in its centre token's state up to "
        "--attention-layer through the answer training (0: none)",
    )
    parser.add_argument(
        "--scoring-layer", type=int, default=0,
        help="the LLM layer before the one the harness prunes at (stage 2 and FastV prune before layer 1 of 4)",
    )
    parser.add_argument(
        "--rope-theta", type=float, default=1e4,
        help="the LLM's rotary base; 100 lets a head find objects by place but slowed learning shape (README, Accuracy)",
    )
    parser.add_argument(
        "--interleave-rope", action=argparse.BooleanOptionalAction, default=True,
        help="give time, height and width every third rotary frequency (as Qwen3-VL does) instead of Qwen2.5-VL's "
        "three bands, in which width gets only the slowest frequencies",
    )
    parser.add_argument("--warmup", type=float, default=0.05, help="fraction of training spent warming up")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=None,
        help="torch threads (default: one per core); sharing the cores with other work slows training several times",
    )
    parser.add_argument(
        "--bf16", action=argparse.BooleanOptionalAction, default=False,
        help="bfloat16 autocast: 2.7x slower on a CPU without native bfloat16; on one with it (AVX512-BF16, AMX) 1.25x "
        "faster per step, but the model learned worse in the same time (README, Accuracy)",
    )
    parser.add_argument("--vit-depth", type=int, default=4)
    parser.add_argument("--vit-width", type=int, default=128)
    parser.add_argument("--llm-depth", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--log-every", type=int, default=20)
    parser.add_argument("--save-every", type=int, default=150)
    train(parser.parse_args())


if __name__ == "__main__":
    main()
