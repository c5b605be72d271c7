// Which widgets a node shows for its current values. Pure (no DOM, no ComfyUI imports; tested with
// node --test): the knobs a choice ignores are hidden, but they stay inputs and keep their values.

import { PRESET_LABELS } from "./budget.js";

// Merge Config knobs that only preset = "custom" reads.
export const CUSTOM_KNOBS = [
  "stage1_layers", "stage1_keep", "stage1_recycled", "stage2_layers", "stage2_keep", "stage2_recycled",
  "recycle_weighting", "score_chunk", "method",
];
// Generate / Caption knobs that only sampling = "sample" reads.
export const SAMPLING_KNOBS = ["temperature", "top_p", "top_k", "seed"];
// Caption styles that read the prompt text (mirrors illava/captioning.py, checked by a Python test).
export const PROMPT_STYLES = ["question", "custom"];

// The rules per node type: widget -> whether it shows, given the node's widget values.
const RULES = {
  iLLaVA_MergeConfig: {
    ...Object.fromEntries(CUSTOM_KNOBS.map((name) => [name, (v) => v.preset === "custom"])),
    // auto and the methods spend a budget; the fixed presets and custom do not.
    budget: (v) => v.preset !== "custom" && !(v.preset in PRESET_LABELS),
  },
  iLLaVA_Generate: generationRules(),
  iLLaVA_Caption: generationRules(),
  iLLaVA_CaptionFolder: { prompt: generationRules().prompt },
};

function generationRules() {
  return {
    ...Object.fromEntries(SAMPLING_KNOBS.map((name) => [name, (v) => v.sampling === "sample"])),
    // A node without a style widget (a workflow saved before styles) always reads its prompt.
    prompt: (v) => v.style === undefined || PROMPT_STYLES.includes(v.style),
  };
}

// The names of the widgets of a `nodeType` node to hide for `values` ({widget name: value}).
export function hiddenWidgets(nodeType, values) {
  const rules = RULES[nodeType] ?? {};
  return Object.keys(rules).filter((name) => name in values && !rules[name](values));
}

export const HAS_RULES = new Set(Object.keys(RULES));
