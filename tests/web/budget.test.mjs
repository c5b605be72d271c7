import assert from "node:assert/strict";
import { test } from "node:test";

import {
  PRESETS,
  budgetText,
  checkDepths,
  customStart,
  configFromWidgets,
  modelFromInfo,
  nearestStage2Layer,
  parseLayers,
  scaleLayer,
  tokenBudget,
  typicalTokens,
  widths,
} from "../../web/budget.js";

// A 3B-sized model as /illava/model_info describes it.
const small = modelFromInfo({
  model: "Qwen2.5-VL-3B-Instruct", family: "qwen2_5_vl", vit_depth: 32, llm_depth: 36, stage2_choices: null, profile: null,
});
const shallow = modelFromInfo({ model: "tiny", family: "qwen2_5_vl", vit_depth: 4, llm_depth: 6, stage2_choices: null, profile: null });

const custom = (changes = {}) => ({
  preset: "custom", stage1_layers: "13,14,15,16", stage1_keep: 0.5, stage2_layers: "6,7,8", stage2_keep: 0.73, ...changes,
});

test("a typical 1024x768 image is 27 x 37 tokens", () => {
  assert.equal(typicalTokens(), 999);
});

test("off keeps every token and saves nothing", () => {
  const budget = tokenBudget(PRESETS.off);
  assert.equal(budget.afterStage1, 999);
  assert.equal(budget.afterStage2, 999);
  assert.equal(budget.prefillSaved, 0);
  assert.equal(budget.vitSaved, 0);
});

test("paper image halves in the ViT, then keeps 0.73 in the LLM", () => {
  const budget = tokenBudget(configFromWidgets({ preset: "paper image" }));
  assert.equal(budget.afterStage1, 500);
  assert.equal(budget.afterStage2, 365);
  assert.ok(budget.prefillSaved > 0.4 && budget.prefillSaved < 0.7, String(budget.prefillSaved));
  assert.ok(budget.vitSaved > 0.1 && budget.vitSaved < 0.5, String(budget.vitSaved));
});

test("fast saves more than paper image", () => {
  const fast = tokenBudget(PRESETS.fast);
  const paper = tokenBudget(PRESETS["paper-image"]);
  assert.ok(fast.afterStage2 < paper.afterStage2);
  assert.ok(fast.prefillSaved > paper.prefillSaved);
});

test("named presets ignore the knobs; custom reads them", () => {
  assert.deepEqual(configFromWidgets({ ...custom({ stage1_keep: 0.9 }), preset: "fast" }), PRESETS.fast);
  const config = configFromWidgets(custom({ stage1_layers: "2 - 5", stage2_layers: "" }));
  assert.deepEqual(config.stage1_layers, [2, 5]);
  assert.deepEqual(config.stage2_layers, []);
});

test("layers are parsed like the Python side", () => {
  assert.deepEqual(parseLayers("stage1_layers", "12, 16"), [12, 16]);
  assert.throws(() => parseLayers("stage1_layers", "3,2"), /^Error: stage1_layers must be strictly increasing/);
  assert.throws(() => parseLayers("stage2_layers", "0"), /stage2_layers must hold integers >= 1/);
  assert.throws(() => parseLayers("stage2_layers", "x"), /stage2_layers must be layer numbers/);
});

test("layers spread the reduction geometrically and the named layer runs reduced", () => {
  const w = widths(100, 0.25, [1, 3], 4);
  assert.deepEqual(w.map((v) => Math.round(v)), [100, 50, 50, 25]);
});

test("the readout names the bad field instead of a number", () => {
  assert.match(budgetText(custom({ stage2_keep: 0 })), /^invalid: stage2_keep must be in \(0, 1\]/);
  assert.match(budgetText(custom({ stage1_layers: "4,4" })), /^invalid: stage1_layers/);
});

test("the readout shows both stages and the saving", () => {
  const text = budgetText({ preset: "paper image" });
  assert.match(text, /999 visual tokens -> 500 after stage 1 -> 365 after stage 2/);
  assert.match(text, /LLM prefill compute saved: \d+%/);
});

test("auto reads the budget and says where its settings come from", () => {
  const text = budgetText({ preset: "auto", budget: 0.33 });
  assert.match(text, /auto: 33% of the visual tokens/);
  assert.match(text, /999 -> 330/);
  assert.match(text, /calibrated for the loaded model/);
  assert.match(budgetText({ preset: "auto", budget: 0 }), /invalid: budget must be in \(0, 1\]/);
});

test("named presets move to the model's depths; custom layers stay as written", () => {
  assert.deepEqual(configFromWidgets({ preset: "paper image" }, small).stage2_layers, [8, 9, 10]);
  assert.deepEqual(configFromWidgets({ preset: "paper image" }, shallow).stage1_layers, [2]);
  assert.deepEqual(configFromWidgets(custom(), shallow).stage1_layers, [13, 14, 15, 16]);
});

test("scaling rounds halves to even like Python and keeps layers inside the stack", () => {
  assert.equal(scaleLayer(13, 16, 32), 6); // 6.5 -> 6, as Python's round
  assert.equal(scaleLayer(15, 16, 32), 8); // 7.5 -> 8
  assert.equal(scaleLayer(30, 6, 28), 5); // at most depth - 1
  assert.equal(scaleLayer(1, 6, 28), 1); // at least 1
  assert.equal(nearestStage2Layer(5, [3, 7]), 3); // a tie goes to the earlier layer
  assert.equal(nearestStage2Layer(6, [3, 7]), 7);
});

test("the readout uses the chosen model's depths and names it", () => {
  const text = budgetText({ preset: "paper image" }, { model: small });
  assert.match(text, /^Qwen2.5-VL-3B-Instruct: vision encoder 32 layers, LLM 36; layers: stage 1 13,14,15,16, stage 2 8,9,10/);
  assert.match(text, /estimate for a 1024x768 image; Encode shows the real count after a run/);
  const deeper = tokenBudget(configFromWidgets({ preset: "paper image" }, small), undefined, small);
  assert.notEqual(deeper.prefillSaved, tokenBudget(configFromWidgets({ preset: "paper image" })).prefillSaved);
});

test("without model info the readout says which depths it assumes", () => {
  assert.match(budgetText({ preset: "fast" }), /^until a model is chosen in Load LVLM, Qwen2.5-VL-7B depths/);
  assert.match(budgetText({ preset: "fast" }, { error: "no such model" }), /^no model info \(no such model\), so Qwen2.5-VL-7B depths/);
});

test("a custom layer past the model's depth is invalid and names the field", () => {
  assert.match(budgetText(custom({ stage1_layers: "2", stage2_layers: "6" }), { model: shallow }), /^invalid: stage2_layers contains 6, but tiny's language model has 6 layers: use layers from 1 to 5/);
  assert.match(budgetText(custom({ stage2_layers: "2" }), { model: shallow }), /^invalid: stage1_layers contains 13, but tiny's vision encoder has 4 layers/);
  assert.match(budgetText(custom({ stage1_layers: "4", stage2_layers: "5" }), { model: shallow }), /^tiny: /);
});

test("auto says whether the chosen model has a calibrated profile", () => {
  const calibrated = { model: { ...small, profile: { image: [0.5, 0.33], video: [] } } };
  assert.match(budgetText({ preset: "auto", budget: 0.33 }, calibrated), /calibrated for image at 50%, 33%: auto uses the entry nearest 33%/);
  assert.match(budgetText({ preset: "auto", budget: 0.22 }, { model: small }), /Qwen2.5-VL-3B-Instruct has no merge profile: auto uses the paper preset at 22%/);
});

test("custom starts from the previous preset moved to the model, so its layers exist there", () => {
  const start = customStart("fast", shallow);
  assert.deepEqual(start, { stage1_layers: "1", stage1_keep: 0.33, stage2_layers: "1", stage2_keep: 0.33 });
  for (const previous of ["auto", "off", "paper image", "paper video", "fast"]) {
    const values = { preset: "custom", ...customStart(previous, shallow) };
    assert.doesNotThrow(() => checkDepths(configFromWidgets(values, shallow), shallow), previous);
  }
  assert.equal(customStart("auto", shallow).stage1_layers, customStart("paper image", shallow).stage1_layers);
});
