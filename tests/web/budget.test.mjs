import assert from "node:assert/strict";
import { test } from "node:test";

import { PRESETS, budgetText, configFromWidgets, parseLayers, tokenBudget, typicalTokens, widths } from "../../web/budget.js";

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
