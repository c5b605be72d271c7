"""Short human-readable token and timing summaries shown on the nodes."""

from __future__ import annotations

from typing import Any, Sequence

from ..illava import VisualTokens


def _share(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:.0f}%" if whole else "-"


def encode_summary(visuals: VisualTokens) -> str:
    """E.g. '2 images: 512 visual tokens -> 256 after stage 1 (50%) | 2048 ViT patches | ViT 0.12 s', then the
    work the settings (both stages) leave on this input; Generate gives the speedup, which depends on its prompt."""
    counts = visuals.counts()
    full, kept = counts["llm_input_full"], counts["vit_output"]
    lines = [
        f"{_inputs(visuals)}: {full} visual tokens -> {kept} after stage 1 ({_share(kept, full)}) | "
        f"{counts['vit_input']} ViT patches | ViT {visuals.vit_s:.2f} s",
        f"this input, both stages: work {visuals.estimate.work:.2f} of merging off ({1 / visuals.estimate.work:.1f}x less)",
    ]
    if visuals.config.origin:
        lines.append(visuals.config.origin)
    return "\n".join(lines)


def _inputs(visuals: VisualTokens) -> str:
    """E.g. '2 images', '1 video (8 frame groups)'."""
    parts = []
    images = sum(item.kind == "image" for item in visuals.items)
    if images:
        parts.append(f"{images} image{'s' if images != 1 else ''}")
    for item in visuals.items:
        if item.kind == "video":
            groups = item.token_grid[0]
            parts.append(f"1 video ({groups} frame group{'s' if groups != 1 else ''})")
    return " + ".join(parts)


def generation_summary(stats: Sequence[dict[str, Any]]) -> str:
    """Token counts summed over the prompts of one Generate, with prefill and decode timing."""
    tokens = {key: sum(s["visual_tokens"][key] for s in stats) for key in stats[0]["visual_tokens"]}
    full = tokens["llm_input_full"]
    new_tokens = sum(s["new_tokens"] for s in stats)
    first = stats[0]
    decode_s = first["decode_s"]
    speed = f"{new_tokens / decode_s:.1f} tok/s" if decode_s > 0 else "- tok/s"
    work = sum(s["work"] for s in stats) / len(stats)
    predicted = sum(s["predicted_speedup"] for s in stats) / len(stats)
    return "\n".join(
        [
            f"visual tokens: {full} -> {tokens['llm_input']} after stage 1 ({_share(tokens['llm_input'], full)}) "
            f"-> {tokens['llm_after_stage2']} after stage 2 ({_share(tokens['llm_after_stage2'], full)})",
            f"work {work:.2f} of merging off | estimated ViT + prefill speedup {predicted:.1f}x "
            f"(measured time below)",
            f"prompts: {len(stats)} | prompt tokens: {sum(s['prompt_tokens'] for s in stats)} | new tokens: {new_tokens}",
            f"ViT {first['vit_s']:.2f} s | prefill {first['prefill_s']:.2f} s | decode {decode_s:.2f} s ({speed})",
        ]
    )
