import assert from "node:assert/strict";
import { test } from "node:test";

import { DISPLAYS, outputTexts, parseLocator } from "../../web/display.js";

test("generate ui lists are joined into the shown text", () => {
  assert.deepEqual(outputTexts({ text: ["a", "b"], stats: ["s"] }), { text: "a\n\nb", stats: "s" });
  assert.deepEqual(outputTexts({ text: "plain" }), { text: "plain" });
  assert.deepEqual(outputTexts(undefined), {});
  assert.deepEqual(outputTexts({ images: [] }), {});
});

test("locator ids resolve to a node id and an optional subgraph", () => {
  assert.deepEqual(parseLocator("12"), { subgraphId: null, nodeId: "12" });
  assert.deepEqual(parseLocator(7), { subgraphId: null, nodeId: "7" });
  assert.deepEqual(parseLocator("a1b2-c3:5"), { subgraphId: "a1b2-c3", nodeId: "5" });
});

test("display widgets belong to iLLaVA nodes, have unique names per node and a label", () => {
  for (const [type, displays] of Object.entries(DISPLAYS)) {
    assert.match(type, /^iLLaVA_/);
    const names = displays.map((d) => d.name);
    assert.equal(new Set(names).size, names.length, type);
    for (const display of displays) assert.ok(display.label, `${type}.${display.name} has no label`);
  }
  assert.deepEqual(DISPLAYS.iLLaVA_Generate.map((d) => d.key), ["text", "stats"]);
});
