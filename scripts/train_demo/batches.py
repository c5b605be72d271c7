"""Training data: scene examples tokenized with their labels, collated batches, and the vision warm-up's labelled scenes."""

from __future__ import annotations

import argparse
import math
import re
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from illava.backbones.qwen.video import preprocess as preprocess_video
from illava.lab import scenes
from illava.lab.evaluate import MAX_FRAMES, VIDEO_FPS
from illava.video import load_video

from labels import cell_centres, pointed_names, question_objects, referred_tokens, token_identities, token_places

KIND_WEIGHTS = {"image": 0.45, "video": 0.4, "multi": 0.15}


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
