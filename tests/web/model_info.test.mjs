import assert from "node:assert/strict";
import { test } from "node:test";

import { chosenModel, modelInfoCache } from "../../web/model_info.js";

// A LiteGraph-shaped graph: nodes with typed inputs/outputs, links in a Map.
function graph(nodes, links) {
  const byId = new Map(nodes.map((n) => [n.id, n]));
  return { nodes, links: new Map(links.map((l) => [l.id, l])), getNodeById: (id) => byId.get(id) ?? null };
}
const loader = (id, model) => ({ id, type: "iLLaVA_LoadLVLM", widgets: [{ name: "model", value: model }], outputs: [{ links: [] }] });
const config = (id, links) => ({ id, type: "iLLaVA_MergeConfig", outputs: [{ name: "config", links }] });
const user = (id, type, lvlmLink) => ({ id, type, inputs: [{ name: "lvlm", link: lvlmLink }, { name: "config", link: null }] });

test("the model is read from the Load LVLM feeding the nodes the config feeds", () => {
  const g = graph(
    [loader(1, "small"), loader(2, "big"), config(3, [10]), user(4, "iLLaVA_EncodeImage", 11)],
    [{ id: 10, origin_id: 3, target_id: 4 }, { id: 11, origin_id: 2, target_id: 4 }],
  );
  assert.equal(chosenModel(g.getNodeById(3), g), "big");
});

test("an unlinked config falls back to the only Load LVLM, and says nothing when there are several", () => {
  const one = graph([loader(1, "small"), config(3, [])], []);
  assert.equal(chosenModel(one.getNodeById(3), one), "small");
  const two = graph([loader(1, "small"), loader(2, "big"), config(3, [])], []);
  assert.equal(chosenModel(two.getNodeById(3), two), null);
  const none = graph([config(3, [])], []);
  assert.equal(chosenModel(none.getNodeById(3), none), null);
});

test("a config feeding two models is ambiguous", () => {
  const g = graph(
    [loader(1, "small"), loader(2, "big"), config(3, [10, 12]), user(4, "iLLaVA_Generate", 11), user(5, "iLLaVA_Generate", 13)],
    [
      { id: 10, origin_id: 3, target_id: 4 }, { id: 11, origin_id: 1, target_id: 4 },
      { id: 12, origin_id: 3, target_id: 5 }, { id: 13, origin_id: 2, target_id: 5 },
    ],
  );
  assert.equal(chosenModel(g.getNodeById(3), g), null);
});

test("model info is asked once per model and errors are answers too", async () => {
  const asked = [];
  const cache = modelInfoCache(async (name) => {
    asked.push(name);
    if (name === "gone") throw new Error("no model folder named gone");
    return { model: name, family: "qwen2_5_vl", vit_depth: 32, llm_depth: 36, stage2_choices: null, profile: null };
  });
  const [first, second] = await Promise.all([cache.get("small"), cache.get("small")]);
  assert.equal(first, second);
  assert.deepEqual(first.model, { name: "small", family: "qwen2_5_vl", vitDepth: 32, llmDepth: 36, stage2Choices: null, profile: null });
  assert.equal(cache.peek("small"), first);
  assert.deepEqual(await cache.get("gone"), { error: "no model folder named gone" });
  await cache.get("small");
  assert.deepEqual(asked, ["small", "gone"]);
});
