// Token-budget arithmetic for the Merge Config readout. Pure: no DOM, no ComfyUI imports, so
// `node --test tests/web/` can check it and the browser can load it as a plain module.

// Mirrors illava/config.py PRESETS (layers written for Qwen2.5-VL-7B); a Python test checks they agree.
export const PRESETS = {
  off: { stage1_layers: [], stage1_keep: 1.0, stage2_layers: [], stage2_keep: 1.0 },
  "paper-image": { stage1_layers: [13, 14, 15, 16], stage1_keep: 0.5, stage2_layers: [6, 7, 8], stage2_keep: 0.73 },
  "paper-video": { stage1_layers: [4, 5, 6, 7], stage1_keep: 0.25, stage2_layers: [2], stage2_keep: 0.2 },
  fast: { stage1_layers: [8], stage1_keep: 0.33, stage2_layers: [4], stage2_keep: 0.33 },
};

export const PRESET_LABELS = { off: "off", "paper image": "paper-image", "paper video": "paper-video", fast: "fast" };

export const REFERENCE = { name: "Qwen2.5-VL-7B", vitDepth: 32, llmDepth: 28 };

// A 1024 x 768 image on Qwen2.5-VL: 28-pixel cells (14-pixel patches merged 2 x 2), 27 x 37 tokens.
export const TYPICAL_IMAGE = { width: 1024, height: 768, cell: 28, textTokens: 60 };

export function typicalTokens(image = TYPICAL_IMAGE) {
  const rows = Math.max(1, Math.round(image.height / image.cell));
  const cols = Math.max(1, Math.round(image.width / image.cell));
  return rows * cols;
}

// Same rules as illava.config._layer_tuple: numbers split on commas, spaces or dashes, >= 1, increasing.
export function parseLayers(field, text) {
  const parts = String(text ?? "").replace(/[,-]/g, " ").split(/\s+/).filter(Boolean);
  const layers = [];
  for (const part of parts) {
    if (!/^\d+$/.test(part)) throw new Error(`${field} must be layer numbers like '3' or '12,16', got '${text}'`);
    const layer = Number(part);
    if (layer < 1) throw new Error(`${field} must hold integers >= 1, got ${layer}`);
    if (layers.length && layer <= layers[layers.length - 1]) throw new Error(`${field} must be strictly increasing without repeats`);
    layers.push(layer);
  }
  return layers;
}

function checkKeep(field, value) {
  const keep = Number(value);
  if (!Number.isFinite(keep) || keep <= 0 || keep > 1) throw new Error(`${field} must be in (0, 1], got ${value}`);
  return keep;
}

// The merge settings the node's widgets describe: a named preset, or the knobs when preset = custom.
export function configFromWidgets(values) {
  const name = PRESET_LABELS[values.preset];
  if (name) return PRESETS[name];
  if (values.preset !== "custom") throw new Error(`preset must be one of auto, off, paper image, paper video, fast, custom`);
  return {
    stage1_layers: parseLayers("stage1_layers", values.stage1_layers),
    stage1_keep: checkKeep("stage1_keep", values.stage1_keep),
    stage2_layers: parseLayers("stage2_layers", values.stage2_layers),
    stage2_keep: checkKeep("stage2_keep", values.stage2_keep),
  };
}

// Tokens through each of `depth` layers when `layers` cut `start` down to `start * keep`, spread
// geometrically as in illava (each cut keeps keep ** (1 / n)); the layer named runs on the reduced set.
export function widths(start, keep, layers, depth) {
  const out = [];
  let cuts = 0;
  for (let layer = 0; layer < depth; layer++) {
    while (cuts < layers.length && layers[cuts] <= layer) cuts++;
    out.push(layers.length ? start * keep ** (cuts / layers.length) : start);
  }
  return out;
}

const sum = (values) => values.reduce((a, b) => a + b, 0);

// Tokens after each stage for the typical image, and the share of compute the merging saves.
export function tokenBudget(config, image = TYPICAL_IMAGE, reference = REFERENCE) {
  const full = typicalTokens(image);
  const s1 = config.stage1_layers.length ? config.stage1_keep : 1;
  const s2 = config.stage2_layers.length ? config.stage2_keep : 1;
  const afterStage1 = Math.max(1, Math.round(full * s1));
  const afterStage2 = Math.max(1, Math.round(afterStage1 * s2));
  const llmDepth = Math.max(reference.llmDepth, ...config.stage2_layers.map((l) => l + 1));
  const vitDepth = Math.max(reference.vitDepth, ...config.stage1_layers.map((l) => l + 1));
  const text = image.textTokens;
  const llm = sum(widths(afterStage1, s2, config.stage2_layers, llmDepth).map((v) => v + text));
  const vit = sum(widths(4 * full, s1, config.stage1_layers, vitDepth));
  return {
    full,
    afterStage1,
    afterStage2,
    prefillSaved: 1 - llm / (llmDepth * (full + text)),
    vitSaved: 1 - vit / (vitDepth * 4 * full),
  };
}

const percent = (share) => `${Math.round(100 * share)}%`;

// What auto means before a run: the budget's share of a typical image's tokens, settings per model.
export function autoText(values, image = TYPICAL_IMAGE) {
  const share = Number(values.budget);
  if (!Number.isFinite(share) || share <= 0 || share > 1) return `invalid: budget must be in (0, 1], got ${values.budget}`;
  const full = typicalTokens(image);
  return [
    `auto: ${percent(share)} of the visual tokens reach the later LLM layers`,
    `(typical ${image.width}x${image.height} image: ${full} -> ${Math.max(1, Math.round(full * share))}),`,
    "placed as calibrated for the loaded model, else as the paper preset: Encode says which",
  ].join("\n");
}

// The text shown under the Merge Config widgets.
export function budgetText(values) {
  if (values.preset === "auto") return autoText(values);
  let budget;
  try {
    budget = tokenBudget(configFromWidgets(values));
  } catch (error) {
    return `invalid: ${error.message}`;
  }
  return [
    `typical ${TYPICAL_IMAGE.width}x${TYPICAL_IMAGE.height} image, ${REFERENCE.name} depths:`,
    `${budget.full} visual tokens -> ${budget.afterStage1} after stage 1 -> ${budget.afterStage2} after stage 2`,
    `LLM prefill compute saved: ${percent(budget.prefillSaved)} | vision encoder: ${percent(budget.vitSaved)}`,
  ].join("\n");
}
