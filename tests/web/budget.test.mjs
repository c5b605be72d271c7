import assert from "node:assert/strict";
import { test } from "node:test";

import {
  NO_MODEL_TEXT,
  READOUT_FIELDS,
  customStart,
  modelFromInfo,
  nearestStage2Layer,
  readoutQuery,
  scaleLayer,
  scaleLayers,
  PRESETS,
} from "../../web/budget.js";

// A 3B-sized model as /illava/model_info describes it.
const small = modelFromInfo({
  model: "Qwen2.5-VL-3B-Instruct", family: "qwen2_5_vl", vit_depth: 32, llm_depth: 36, stage2_choices: null, profile: null,
});
const shallow = modelFromInfo({ model: "tiny", family: "qwen2_5_vl", vit_depth: 4, llm_depth: 6, stage2_choices: null, profile: null });

test("the readout asks the server about the chosen model with the widgets it reads, and nothing else", () => {
  const values = { preset: "custom", budget: 0.33, stage1_layers: "1,2", stage2_keep: 0.5, seed: 7, illava_budget: "old text" };
  const query = new URLSearchParams(readoutQuery(values, "Qwen2.5-VL 3B/model"));
  assert.equal(query.get("model"), "Qwen2.5-VL 3B/model");
  assert.equal(query.get("stage1_layers"), "1,2");
  assert.equal(query.get("budget"), "0.33");
  assert.equal(query.get("seed"), null);
  assert.equal(query.get("illava_budget"), null);
  assert.ok(READOUT_FIELDS.includes("method") && READOUT_FIELDS.includes("preset"));
});

test("without a model the readout says what to choose instead of guessing numbers", () => {
  assert.match(NO_MODEL_TEXT, /^Choose a model in Load LVLM/);
  assert.doesNotMatch(NO_MODEL_TEXT, /\d/);
});

test("named presets move to the model's depths", () => {
  assert.deepEqual(scaleLayers(PRESETS["paper-image"], small).stage2_layers, [8, 9, 10]);
  assert.deepEqual(scaleLayers(PRESETS["paper-image"], shallow).stage1_layers, [2]);
});

test("scaling rounds halves to even like Python and keeps layers inside the stack", () => {
  assert.equal(scaleLayer(13, 16, 32), 6); // 6.5 -> 6, as Python's round
  assert.equal(scaleLayer(15, 16, 32), 8); // 7.5 -> 8
  assert.equal(scaleLayer(30, 6, 28), 5); // at most depth - 1
  assert.equal(scaleLayer(1, 6, 28), 1); // at least 1
  assert.equal(nearestStage2Layer(5, [3, 7]), 3); // a tie goes to the earlier layer
  assert.equal(nearestStage2Layer(6, [3, 7]), 7);
});

test("custom starts from the previous preset moved to the model, so its layers exist there", () => {
  const start = customStart("fast", shallow);
  assert.deepEqual(start, { stage1_layers: "1", stage1_keep: 0.33, stage2_layers: "1", stage2_keep: 0.33 });
  for (const previous of ["auto", "off", "paper image", "paper video", "fast"]) {
    const layers = customStart(previous, shallow);
    const stage1 = layers.stage1_layers.split(",").filter(Boolean).map(Number);
    const stage2 = layers.stage2_layers.split(",").filter(Boolean).map(Number);
    assert.ok(stage1.every((l) => l >= 1 && l <= shallow.vitDepth), previous);
    assert.ok(stage2.every((l) => l >= 1 && l < shallow.llmDepth), previous);
  }
  assert.equal(customStart("auto", shallow).stage1_layers, customStart("paper image", shallow).stage1_layers);
});
