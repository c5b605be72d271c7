"""Train the offline demo model: a small Qwen2.5-VL from scratch on illava.lab.scenes questions.

    python scripts/train_demo --out demo_model --max-minutes 45

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
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from training import train  # noqa: E402


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
        help="the LLM's rotary base; 100 lets a head find objects by place but slowed learning shape (docs/demo-model.md)",
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
        "faster per step, but the model learned worse in the same time (docs/demo-model.md)",
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
