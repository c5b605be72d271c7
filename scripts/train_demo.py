"""Train the offline demo model: a small Qwen2.5-VL from scratch on illava.scenes questions.

    python scripts/train_demo.py --out demo_model --max-minutes 40

The model is transformers' own Qwen2_5_VLForConditionalGeneration built from a config, with a
word-level tokenizer over the question vocabulary plus Qwen's special tokens, saved (bfloat16
safetensors) with its processor and chat template so that ``illava.load`` reads it like any real
checkpoint. Inputs are prepared with the library's own image and video preprocessing, so training
sees exactly what ``illava.encode`` feeds the model. A checkpoint is written every ``--save-every``
steps and at the end; the log goes to stdout.
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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from illava import scenes  # noqa: E402
from illava.evaluate import MAX_FRAMES, VIDEO_FPS  # noqa: E402
from illava.synthetic import CHAT_TEMPLATE, SPECIAL_TOKENS  # noqa: E402
from illava.video import load_video  # noqa: E402
from illava.video import preprocess as preprocess_video  # noqa: E402

IMAGE_MIN_PIXELS, IMAGE_MAX_PIXELS = 56 * 56, 224 * 224
VIDEO_MIN_PIXELS, VIDEO_MAX_PIXELS = 56 * 56, 160 * 160
KIND_WEIGHTS = {"image": 0.5, "video": 0.3, "multi": 0.2}
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
    text_config = dict(
        vocab_size=len(tokenizer),
        hidden_size=args.hidden,
        intermediate_size=args.hidden * 3,
        num_hidden_layers=args.llm_depth,
        num_attention_heads=args.heads,
        num_key_value_heads=max(1, args.heads // 2),
        rope_parameters={
            "rope_type": "default",
            "rope_theta": 1e4,
            "mrope_section": [temporal, (rotary - temporal) // 2, rotary - temporal - (rotary - temporal) // 2],
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


def objects_per_token(layouts, height: int, width: int, grid_h: int, grid_w: int, merge: int) -> np.ndarray:
    """(tokens, OBJECT_LABELS) bool: which (colour, shape) objects cover part of each merged visual token.

    ``layouts`` are the frames (one for an image) that one temporal patch group spans; tokens are in
    the order the vision merger emits them (row-major over the merged grid).
    """
    samples = 4
    present = np.zeros((grid_h // merge, grid_w // merge, scenes.OBJECT_LABELS + 1), dtype=bool)
    onehot = np.eye(scenes.OBJECT_LABELS + 1, dtype=bool)
    for layout in layouts:
        labels = Image.fromarray(scenes.label_map(height, width, layout))
        small = np.asarray(labels.resize((grid_w * samples, grid_h * samples), Image.NEAREST))
        blocks = onehot[small.reshape(grid_h // merge, merge * samples, grid_w // merge, merge * samples)]
        present |= blocks.any(axis=(1, 3))
    return present[..., 1:].reshape(-1, scenes.OBJECT_LABELS)


@dataclass
class Example:
    """One training sequence: visuals, the shapes in each of them, and its (family, question, answer) turns."""

    images: tuple[np.ndarray, ...]
    frames: tuple[np.ndarray, ...]
    layouts: tuple[tuple[scenes.Shape, ...], ...]
    turns: list[tuple[str, str, str]]

    @classmethod
    def from_sample(cls, sample: scenes.Sample) -> "Example":
        return cls(sample.images, sample.frames, sample.layouts, [(sample.family, sample.question, sample.answer)])

    @classmethod
    def conversation(cls, index: int, turns: int) -> "Example":
        image, shapes, asked = scenes.conversation(index, turns)
        return cls((image,), (), (shapes,), asked)


def encode_example(processor, example: Example) -> dict:
    """Token ids, loss labels, pixel inputs and per-token object targets of one example.

    Pixels are prepared as ``illava.encode`` prepares them; every answer (and its end-of-turn
    token) is a target, everything else is context.
    """
    merge_size = processor.image_processor.merge_size
    merge = merge_size**2
    visual, expanded, out, objects = [], [], {"images": None, "video": None}, []
    if example.images:
        processed = processor.image_processor(images=[Image.fromarray(i) for i in example.images], return_tensors="pt")
        out["images"] = (processed["pixel_values"], processed["image_grid_thw"])
        for image, layout, grid in zip(example.images, example.layouts, processed["image_grid_thw"].tolist()):
            visual.append({"type": "image"})
            expanded.append(math.prod(grid) // merge)
            objects.append(objects_per_token([layout], *image.shape[:2], grid[1], grid[2], merge_size))
    if example.frames:
        frames = load_video(np.stack(example.frames), VIDEO_FPS, MAX_FRAMES, VIDEO_FPS)
        processed = preprocess_video(processor.video_processor, frames)
        temporal = processor.video_processor.temporal_patch_size
        out["video"] = (processed["pixel_values_videos"], processed["video_grid_thw"], temporal / frames.fps)
        visual.append({"type": "video"})
        grid = processed["video_grid_thw"][0].tolist()
        expanded.append(math.prod(grid) // merge)
        height, width = example.frames[0].shape[:2]
        for group in range(grid[0]):
            spanned = [example.layouts[i] for i in frames.indices[group * temporal : (group + 1) * temporal]]
            objects.append(objects_per_token(spanned, height, width, grid[1], grid[2], merge_size))
    out["objects"] = torch.from_numpy(np.concatenate(objects)).float()
    out["input_ids"], out["labels"], out["families"] = chat_ids(processor, visual, expanded, example.turns)
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
    batch["objects"] = torch.cat([e["objects"] for e in encoded])
    batch["families"] = [family for e in encoded for family in e["families"]]
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
    """An endless, seeded stream of collated training batches (built in-process: a loader worker halved throughput here)."""

    def __init__(self, processor, model_config, batch: int, seed: int, turns: int) -> None:
        self.processor, self.model_config, self.batch, self.seed, self.turns = processor, model_config, batch, seed, turns

    def __iter__(self):
        rng = np.random.default_rng(self.seed)
        kinds, weights = list(KIND_WEIGHTS), list(KIND_WEIGHTS.values())
        index = 0
        while True:
            # One kind per batch: videos are about twice as long as images, and mixing them wastes half
            # of every batch on padding.
            kind = str(rng.choice(kinds, p=weights))
            if kind == "image":
                examples = [Example.conversation(index + i, self.turns) for i in range(self.batch)]
            else:
                examples = [Example.from_sample(scenes.sample("train", kind, index + i)) for i in range(self.batch)]
            encoded = [encode_example(self.processor, example) for example in examples]
            index += self.batch
            yield collate(encoded, self.model_config)


def save(model, processor, out: Path) -> None:
    """Write a bfloat16 copy of ``model`` with ``processor`` to ``out``, replacing it only once complete."""
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    copy.deepcopy(model).to(torch.bfloat16).save_pretrained(staging, safe_serialization=True)
    processor.save_pretrained(staging)
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)


def learning_rate_factor(progress: float, warmup: float) -> float:
    """Linear warm-up over the first ``warmup`` of training, then cosine decay to 5%."""
    if progress < warmup:
        return max(progress / warmup, 0.01)
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, (progress - warmup) / (1 - warmup))))


def train(args: argparse.Namespace) -> None:
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    tokenizer = build_tokenizer()
    processor = build_processor(tokenizer)
    model = build_model(tokenizer, args)
    parameters = sum(p.numel() for p in model.parameters())
    print(f"parameters: {parameters / 1e6:.2f} M (bfloat16 file about {parameters * 2 / 1e6:.1f} MB)", flush=True)
    # A linear probe on the vision merger's output, trained to name the objects under each visual
    # token and thrown away afterwards: it hands the encoder a dense signal from the first step,
    # where the answer loss alone reached it too weakly and the visual features collapsed.
    probe = torch.nn.Linear(args.hidden, scenes.OBJECT_LABELS)
    merged: list[torch.Tensor] = []
    model.model.visual.register_forward_hook(lambda module, inputs, output: merged.append(output.pooler_output))
    trained = list(model.parameters()) + list(probe.parameters())
    optimizer = torch.optim.AdamW(trained, lr=args.lr, betas=(0.9, 0.98), weight_decay=0.1)
    batches = iter(TrainingBatches(processor, model.config, args.batch, args.seed, args.turns))
    budget = args.max_minutes * 60
    start = time.perf_counter()
    step, progress = 0, 0.0
    losses, object_losses, tally = [], [], defaultdict(lambda: [0, 0])
    while progress < 1.0:
        progress = max(step / args.steps, (time.perf_counter() - start) / budget)
        for group in optimizer.param_groups:
            group["lr"] = args.lr * learning_rate_factor(progress, args.warmup)
        batch = next(batches)
        objects, families = batch.pop("objects"), batch.pop("families")
        model.train()
        merged.clear()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            output = model(**batch)
            object_loss = torch.nn.functional.binary_cross_entropy_with_logits(probe(torch.cat(merged)).float(), objects)
        (output.loss + args.object_weight * object_loss).backward()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        losses.append(output.loss.item())
        object_losses.append(object_loss.item())
        # Each answer's first token is scored, by family: the end-of-turn token after it is trivially right.
        labels = batch["labels"]
        first = (labels[:, 1:] != -100) & (labels[:, :-1] == -100)
        right = (output.logits[:, :-1].argmax(-1) == labels[:, 1:])[first].tolist()
        for family, hit in zip(families, right):
            tally[family][0] += hit
            tally[family][1] += 1
        if step % args.log_every == 0:
            elapsed = time.perf_counter() - start
            accuracy = " ".join(f"{family}={hits / total:.2f}" for family, (hits, total) in sorted(tally.items()))
            print(
                f"step {step} loss {np.mean(losses):.4f} object loss {np.mean(object_losses):.4f} "
                f"lr {optimizer.param_groups[0]['lr']:.2e} {elapsed / step:.2f} s/step {elapsed / 60:.1f} min | {accuracy}",
                flush=True,
            )
            losses, object_losses, tally = [], [], defaultdict(lambda: [0, 0])
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
    parser.add_argument("--lr", type=float, default=6e-4)
    parser.add_argument("--turns", type=int, default=4, help="questions per training image (one conversation)")
    parser.add_argument("--object-weight", type=float, default=1.0, help="weight of the per-token object probe loss")
    parser.add_argument("--warmup", type=float, default=0.05, help="fraction of training spent warming up")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=1,
        help="torch threads; 1 because two threads on a shared two-core machine ran several times slower",
    )
    parser.add_argument(
        "--bf16", action=argparse.BooleanOptionalAction, default=False,
        help="bfloat16 autocast; off because it measured about 9x slower than fp32 on this CPU",
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
