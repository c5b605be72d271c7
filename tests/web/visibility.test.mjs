import assert from "node:assert/strict";
import { test } from "node:test";

import { CUSTOM_KNOBS, SAMPLING_KNOBS, hiddenWidgets } from "../../web/visibility.js";

const mergeConfig = (preset) => ({
  preset, budget: 0.33, ...Object.fromEntries(CUSTOM_KNOBS.map((name) => [name, "x"])),
});
const generate = (sampling, style) => ({
  sampling, prompt: "Describe.", max_new_tokens: 64, ...(style ? { style } : {}), ...Object.fromEntries(SAMPLING_KNOBS.map((n) => [n, 1])),
});

test("merge config shows the knobs only for custom and the budget only for auto and the methods", () => {
  assert.deepEqual(hiddenWidgets("iLLaVA_MergeConfig", mergeConfig("custom")), ["budget"]);
  assert.deepEqual(hiddenWidgets("iLLaVA_MergeConfig", mergeConfig("auto")), CUSTOM_KNOBS);
  assert.deepEqual(hiddenWidgets("iLLaVA_MergeConfig", mergeConfig("fast")).sort(), [...CUSTOM_KNOBS, "budget"].sort());
  // A method as the preset is placed for the budget, like auto.
  assert.deepEqual(hiddenWidgets("iLLaVA_MergeConfig", mergeConfig("sparsevlm")), CUSTOM_KNOBS);
});

test("sampling knobs show only when sampling, on Generate and Caption", () => {
  for (const type of ["iLLaVA_Generate", "iLLaVA_Caption"]) {
    assert.deepEqual(hiddenWidgets(type, generate("greedy", "question")), SAMPLING_KNOBS);
    assert.deepEqual(hiddenWidgets(type, generate("sample", "question")), []);
  }
});

test("the prompt shows for the styles that read it, and always without a style widget", () => {
  assert.deepEqual(hiddenWidgets("iLLaVA_Caption", generate("sample", "detailed caption")), ["prompt"]);
  assert.deepEqual(hiddenWidgets("iLLaVA_Generate", generate("sample", "custom")), []);
  assert.deepEqual(hiddenWidgets("iLLaVA_Generate", generate("sample")), []);
  assert.deepEqual(hiddenWidgets("iLLaVA_CaptionFolder", { style: "tags", prompt: "" }), ["prompt"]);
  assert.deepEqual(hiddenWidgets("iLLaVA_CaptionFolder", { style: "custom", prompt: "" }), []);
});

test("widgets a node lacks are never named, and other nodes hide nothing", () => {
  assert.deepEqual(hiddenWidgets("iLLaVA_MergeConfig", { preset: "auto" }), []);
  assert.deepEqual(hiddenWidgets("iLLaVA_EncodeImage", { preset: "auto", budget: 1 }), []);
});
