import assert from "node:assert/strict";
import { test } from "node:test";

import {
  DISPLAYS, MAX_KEPT_CHARS, SHOWN_PROPERTY, failureTexts, outputTexts, parseLocator, rememberShown, rememberedTexts, textsFor,
} from "../../web/display.js";

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

test("display widgets belong to iLLaVA nodes, have unique names, a label and a human placeholder", () => {
  for (const [type, displays] of Object.entries(DISPLAYS)) {
    assert.match(type, /^iLLaVA_/);
    const names = displays.map((d) => d.name);
    assert.equal(new Set(names).size, names.length, type);
    for (const display of displays) {
      assert.ok(display.label && !display.label.includes("_"), `${type}.${display.name} needs a human label`);
      assert.match(display.placeholder, /^[a-z ]+ appears? here after a run$/, `${type}.${display.name}`);
    }
  }
  assert.deepEqual(DISPLAYS.iLLaVA_Generate.map((d) => d.key), ["text", "stats"]);
  assert.deepEqual(DISPLAYS.iLLaVA_Caption.map((d) => d.name), ["illava_text", "illava_stats"]);
});

test("an executed (or cached) ui fills only the displays it has text for", () => {
  assert.deepEqual(textsFor("iLLaVA_Caption", { text: ["a cat"], stats: ["s"] }), { illava_text: "a cat", illava_stats: "s" });
  assert.deepEqual(textsFor("iLLaVA_EncodeImage", { text: ["1 image: 999 -> 330"] }), { illava_counts: "1 image: 999 -> 330" });
  assert.deepEqual(textsFor("iLLaVA_Generate", {}), {});
  assert.deepEqual(textsFor("NotOurs", { text: ["x"] }), {});
});

test("shown texts are remembered in the node properties and come back after a reload", () => {
  let properties = { "Node name for S&R": "iLLaVA_Generate" };
  properties = rememberShown(properties, { illava_text: "a cat", illava_stats: "s1" });
  properties = rememberShown(properties, { illava_stats: "s2" });
  assert.equal(properties["Node name for S&R"], "iLLaVA_Generate");
  const reloaded = JSON.parse(JSON.stringify(properties)); // as saved in the workflow
  assert.deepEqual(rememberedTexts("iLLaVA_Generate", reloaded), { illava_text: "a cat", illava_stats: "s2" });
  assert.deepEqual(rememberedTexts("iLLaVA_Generate", {}), {});
  assert.deepEqual(rememberedTexts("iLLaVA_Generate", { [SHOWN_PROPERTY]: { illava_text: 3, other: "x" } }), {});
});

test("a very long text is cut before it is kept", () => {
  const kept = rememberShown({}, { illava_text: "x".repeat(MAX_KEPT_CHARS + 10) })[SHOWN_PROPERTY].illava_text;
  assert.ok(kept.length < MAX_KEPT_CHARS + 10 && kept.endsWith("[cut]"));
});

test("a failed run replaces the earlier result with the error, in every display of the node", () => {
  const error = "iLLaVA Caption Folder: folder 'x' is not a folder";
  assert.deepEqual(failureTexts("iLLaVA_CaptionFolder", `${error}\n`), { illava_summary: `The last run failed: ${error}` });
  assert.deepEqual(failureTexts("iLLaVA_Generate", ""), { illava_text: "The last run failed: see the error report", illava_stats: "" });
  assert.deepEqual(failureTexts("NotOurs", error), {});
  const remembered = rememberShown({ [SHOWN_PROPERTY]: { illava_text: "old answer", illava_stats: "old stats" } }, failureTexts("iLLaVA_Generate", error));
  assert.deepEqual(rememberedTexts("iLLaVA_Generate", remembered), { illava_text: `The last run failed: ${error}`, illava_stats: "" });
});
