"""The two training phases (vision warm-up, then answers with the auxiliary losses), their schedule and checkpoints."""

from __future__ import annotations

import argparse
import copy
import math
import shutil
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from illava.lab import scenes

from attention import AnswerAttention, ScoringAttention
from batches import TrainingBatches, VisionTargets
from labels import answer_starts
from model import build_model, build_processor, build_tokenizer
from probes import ContrastProbe, NameProbe, PlaceProbe, QueryProbe


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
