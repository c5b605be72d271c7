"""``python -m illava eval``: accuracy retention of iLLaVA and its peers at matched work.

Every method runs in the same model on the same held-out ``illava.scenes`` questions. A budget is a
share of the work on the picture (``illava.cost``): every method runs at its own usual placement
(``methods.PLACEMENTS``) with its keep ratio solved so that its work meets the budget, and each row
reports the work it measured. Where a method's placement cannot spend so little (FastV pays for every
encoder layer and the LLM layers before it prunes), its cell says so and names its least work.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ..budget import BUDGET_SLACK, STANDARD_BUDGETS, Fitted
from ..config import MergeConfig
from ..loading import LVLM
from ..resolve import auto_config, fitted, method_at, placed, typical_estimate
from .evaluate import KindResult, evaluate, prior_accuracy

# auto: the model's merge profile at each budget (the paper preset scaled to it when it has none);
# illava-stage1 / illava-stage2: iLLaVA's placement with one stage only.
METHODS = (
    "auto", "illava", "illava-stage1", "illava-stage2", "distinct", "fastv", "visionzip", "tome", "random",
    "fastervlm", "pyramiddrop", "sparsevlm",
)
# Distinct from the scene seeds of other runs: --seed S asks questions S * SEED_STRIDE onwards.
SEED_STRIDE = 100_000


def method_config(name: str, budget: float, lvlm: LVLM, kind: str) -> Fitted:
    """The settings of harness row ``name`` at ``budget`` (a work share) for ``kind`` of input, fitted on the
    model's typical input; ``reached`` False where its placement cannot spend so little."""
    if name == "auto":
        config = auto_config(lvlm, budget, kind)
        work = typical_estimate(config, lvlm, kind).work
        return Fitted(config, work, work <= budget + BUDGET_SLACK)
    if name in ("illava-stage1", "illava-stage2"):
        full = placed("illava", lvlm.backbone, kind)
        keep = full.stage1_part() if name == "illava-stage1" else full.with_(stage1_layers=(), stage1_keep=1.0)
        return fitted(keep, budget, lvlm, kind)
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    return method_at(name, budget, lvlm, kind)


def run_harness(
    lvlm: LVLM,
    kind: str = "image",
    n: int = 200,
    seed: int = 0,
    budgets: tuple[float, ...] = STANDARD_BUDGETS,
    methods: tuple[str, ...] = METHODS,
    log=print,
    overrides: dict | None = None,
) -> dict:
    """Accuracy of the unmerged model and of every method at every budget, as the JSON report.

    ``overrides`` (MergeConfig fields) are applied to the iLLaVA configs, to compare its settings;
    the method names then carry them, e.g. ``illava[stage1_recycled=0]``.
    """
    overrides = overrides or {}
    suffix = "[" + ",".join(f"{key}={value}" for key, value in overrides.items()) + "]" if overrides else ""
    first = seed * SEED_STRIDE
    started = time.perf_counter()
    full = evaluate(lvlm, MergeConfig(), kind, n, first=first)
    prior = prior_accuracy(kind, n, first)
    log(f"full model: {full.overall.accuracy:.3f} (answer prior, no image: {prior:.3f})")
    results = []
    input_kind = "video" if kind == "video" else "image"
    for method in methods:
        for budget in budgets:
            chosen = method_config(method, budget, lvlm, input_kind)
            config, name = chosen.config, method
            if method.startswith("illava") and overrides:
                config, name = config.with_(**overrides), method + suffix
            results.append(_cell(lvlm, name, budget, chosen.reached, chosen.work, config, kind, n, first, full, log))
    return {
        "split": kind,
        "n": n,
        "seed": seed,
        "questions": [first, first + n - 1],
        "vit_depth": lvlm.backbone.vit_depth,
        "llm_depth": lvlm.backbone.llm_depth,
        "full_accuracy": full.overall.accuracy,
        "full_per_family": _families(full),
        "prior_accuracy": prior,
        "results": results,
        "seconds": round(time.perf_counter() - started, 1),
    }


def _cell(lvlm, name: str, budget: float, reached: bool, work: float, config: MergeConfig, kind: str, n: int,
          first: int, full: KindResult, log) -> dict:
    """One method at one budget: its accuracy row, or why it has none (its placement cannot spend so
    little, or this model cannot run it)."""
    if not reached:
        log(f"{name:<14} budget {budget:.2f}: cannot reach (min {work:.2f})")
        return {"method": name, "budget": budget, "accuracy": None, "config": config.to_dict(), "cannot_reach": round(work, 3)}
    try:
        scored = evaluate(lvlm, config, kind, n, first=first)
    except ValueError as error:
        # A method this model cannot run (e.g. merging where its adapter only drops) is reported as such;
        # the other methods still run.
        reason = str(error).splitlines()[0]
        log(f"{name:<14} budget {budget:.2f}: not run: {reason}")
        return {"method": name, "budget": budget, "accuracy": None, "config": config.to_dict(), "unsupported": reason}
    row = _row(name, budget, config, scored, full)
    log(f"{name:<14} budget {budget:.2f} (work {row['work']:.3f}): "
        f"accuracy {row['accuracy']:.3f}, retention {row['retention']:.3f}")
    return row


def _row(method: str, budget: float, config: MergeConfig, scored: KindResult, full: KindResult) -> dict:
    accuracy = scored.overall.accuracy
    return {
        "method": method,
        "budget": budget,
        "accuracy": accuracy,
        "retention": accuracy / full.overall.accuracy if full.overall.accuracy else 0.0,
        "per_family": _families(scored),
        "work": sum(scored.work) / len(scored.work),
        "token_fraction": sum(scored.kept_fraction) / len(scored.kept_fraction),
        "config": config.to_dict(),
    }


def _families(result: KindResult) -> dict[str, float]:
    return {family: score.accuracy for family, score in sorted(result.families.items())}


def markdown_table(report: dict) -> str:
    """Accuracy (retention) per method and budget, best per budget in bold."""
    budgets = sorted({row["budget"] for row in report["results"]}, reverse=True)
    methods = list(dict.fromkeys(row["method"] for row in report["results"]))
    cell = {(row["method"], row["budget"]): row for row in report["results"]}
    best = {b: max((cell[m, b]["accuracy"] or 0.0) for m in methods if (m, b) in cell) for b in budgets}
    head = "| method | " + " | ".join(f"work {b:.2f}" for b in budgets) + " |"
    lines = [
        f"{report['split']} split, {report['n']} held-out questions; full model {report['full_accuracy']:.1%} "
        f"(most common answer per question type: {report['prior_accuracy']:.1%}); each cell: accuracy (retention) "
        f"at the work measured on the questions, [in brackets]",
        "",
        head,
        "|" + "---|" * (len(budgets) + 1),
    ]
    for method in methods:
        cells = []
        for b in budgets:
            row = cell.get((method, b))
            if row is None or row["accuracy"] is None:
                cells.append(_missing(row))
                continue
            text = f"{row['accuracy']:.1%} ({row['retention']:.2f}) [{row['work']:.2f}]"
            cells.append(f"**{text}**" if row["accuracy"] == best[b] else text)
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _missing(row: dict | None) -> str:
    if row is None:
        return ""
    if "cannot_reach" in row:
        return f"cannot reach (min {row['cannot_reach']:.2f})"
    return "not supported"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``eval`` command's options."""
    parser.add_argument("--model", default=None, help="model folder (default: the demo model shipped with the pack)")
    parser.add_argument("--split", default="image", choices=("image", "video", "multi"), help="which kind of question")
    parser.add_argument("--seed", type=int, default=0, help="which held-out questions: S picks questions S*100000 onwards")
    parser.add_argument("--n", type=int, default=200, help="questions per method and budget")
    parser.add_argument("--budgets", type=float, nargs="+", default=list(STANDARD_BUDGETS), help="shares of the work on the picture that remain")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--set", nargs="+", default=[], metavar="FIELD=VALUE",
                        help="MergeConfig fields for the iLLaVA rows, e.g. recycle_weighting=paper stage1_recycled=0")
    parser.add_argument("--json", default=None, help="write the report here (a .md table is written beside it)")


def parse_overrides(items: list[str]) -> dict:
    """``FIELD=VALUE`` strings as MergeConfig fields (integers where the value is one), checked."""
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set takes FIELD=VALUE, got {item!r}")
        overrides[key] = int(value) if value.lstrip("-").isdigit() else value
    MergeConfig.from_dict({**MergeConfig().to_dict(), **overrides})  # names the bad field, if any
    return overrides


def run(args: argparse.Namespace) -> int:
    """``python -m illava eval``: print progress and the table; write JSON and Markdown when asked."""
    from .demo_model import demo_model_folder
    from ..loading import load

    for budget in args.budgets:
        if not 0.0 < budget <= 1.0:
            raise ValueError(f"--budgets must be work shares in (0, 1], got {budget}")
    if args.n < 1:
        raise ValueError(f"--n must be at least 1, got {args.n}")
    overrides = parse_overrides(args.set)
    model = args.model or demo_model_folder()
    lvlm = load(model, device=args.device, dtype=args.dtype)
    report = run_harness(lvlm, args.split, args.n, args.seed, tuple(args.budgets), tuple(args.methods), overrides=overrides)
    report["model"] = str(model)
    table = markdown_table(report)
    print("\n" + table)
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=1) + "\n")
        path.with_suffix(".md").write_text(table)
        print(f"wrote {path} and {path.with_suffix('.md')}")
    return 0
