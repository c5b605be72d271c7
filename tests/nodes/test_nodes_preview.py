"""Preview Retained Tokens: maps large enough to read, each captioned with its stage and counts."""

from __future__ import annotations

import numpy as np

from nodes_harness import run_node, widget_defaults


def test_each_map_is_enlarged_and_captioned_with_the_tokens_its_stage_kept(mappings, lvlm, images, monkeypatch):
    from illava_pack.illava.viz import MIN_SIDE
    from illava_pack.nodes import preview as preview_module

    captions = []
    draw = preview_module.labelled_map
    monkeypatch.setattr(preview_module, "labelled_map", lambda frame, codes, caption: captions.append(caption) or draw(frame, codes, caption))
    config_node = mappings["iLLaVA_MergeConfig"]
    (config,), _ = run_node(config_node, **{**widget_defaults(config_node), "preset": "paper image"})
    (visuals,), _ = run_node(mappings["iLLaVA_EncodeImage"], lvlm=lvlm, image=images[:1], config=config)
    generate = mappings["iLLaVA_Generate"]
    (_, _, _, trace), _ = run_node(
        generate, **{**widget_defaults(generate), "lvlm": lvlm, "visuals": visuals, "max_new_tokens": 2}
    )
    (maps,), _ = run_node(mappings["iLLaVA_PreviewTokens"], visuals=visuals, trace=trace)
    item, preview = visuals.items[0], visuals.items[0].preview[0]
    assert maps.shape[0] == 2
    factor = -(-MIN_SIDE // min(preview.shape[:2]))
    assert maps.shape[2] == preview.shape[1] * factor
    assert maps.shape[1] > preview.shape[0] * factor + 10, "a caption strip above the map"
    first, second = (np.asarray(m[: maps.shape[1] - preview.shape[0] * factor]) for m in maps)
    assert (first < 0.4).any() and not np.array_equal(first, second), "the two stages are captioned differently"
    stage2_kept = int(np.isin(trace[0].stage2, (1, 2)).sum())  # KEPT and RECYCLED
    assert stage2_kept < item.tokens_kept < item.tokens_full
    assert captions == [
        f"stage 1 (vision encoder): {item.tokens_kept} / {item.tokens_full} tokens kept",
        f"after stage 2 (LLM): {stage2_kept} / {item.tokens_full} tokens kept",
    ]
