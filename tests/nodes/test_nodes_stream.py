"""Generate streams the answer under the node as it is written."""

from __future__ import annotations

from nodes_harness import run_node, widget_defaults


def test_generate_streams_the_text_it_returns(mappings, lvlm, images, monkeypatch):
    from illava_pack.nodes import comfy_compat
    from illava_pack.nodes import run as run_module

    sent = []
    monkeypatch.setattr(comfy_compat, "send_progress_text", lambda text, node_id: sent.append((node_id, text)))
    monkeypatch.setattr(run_module, "PROGRESS_TEXT_INTERVAL_S", 0.0)
    (visuals,), _ = run_node(mappings["iLLaVA_EncodeImage"], lvlm=lvlm, image=images[:1])
    node = mappings["iLLaVA_Generate"]
    inputs = {**widget_defaults(node), "lvlm": lvlm, "visuals": visuals, "max_new_tokens": 5, "unique_id": "7"}
    (text, _, _, _), _ = run_node(node, **inputs)
    streamed = [message for node_id, message in sent if node_id == "7" and message.startswith("[")]
    assert len(streamed) >= 1
    last = streamed[-1]
    assert last.split("] ", 1)[1] == text
