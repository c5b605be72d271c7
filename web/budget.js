// Token-budget arithmetic for the Merge Config readout. Pure: no DOM, no ComfyUI imports, so
// `node --test tests/web/` can check it and the browser can load it as a plain module.

// Mirrors illava/config.py PRESETS (layers written for Qwen2.5-VL-7B) and their scaling to other depths;
// a Python test checks they agree.
export const PRESETS = {
  off: { stage1_layers: [], stage1_keep: 1.0, stage2_layers: [], stage2_keep: 1.0 },
  "paper-image": { stage1_layers: [13, 14, 15, 16], stage1_keep: 0.5, stage2_layers: [6, 7, 8], stage2_keep: 0.73 },
  "paper-video": { stage1_layers: [4, 5, 6, 7], stage1_keep: 0.25, stage2_layers: [2], stage2_keep: 0.2 },
  fast: { stage1_layers: [8], stage1_keep: 0.33, stage2_layers: [4], stage2_keep: 0.33 },
};

export const PRESET_LABELS = { off: "off", "paper image": "paper-image", "paper video": "paper-video", fast: "fast" };

// The depths the presets are written for, and the readout's model until the server describes the chosen one.
export const REFERENCE = { name: "Qwen2.5-VL-7B", vitDepth: 32, llmDepth: 28, stage2Choices: null, profile: null };

// A /illava/model_info answer as the readout's model ({name, family, vitDepth, llmDepth, stage2Choices, profile}).
export function modelFromInfo(info) {
  return {
    name: info.model,
    family: info.family ?? info.model_type,
    vitDepth: info.vit_depth,
    llmDepth: info.llm_depth,
    stage2Choices: info.stage2_choices ?? null,
    profile: info.profile ?? null,
  };
}

// Python's round(): halves go to the even neighbour (exact on the integer fraction numerator / denominator).
function roundHalfEven(numerator, denominator) {
  const floor = Math.floor(numerator / denominator);
  const twice = 2 * (numerator - floor * denominator);
  if (twice !== denominator) return twice < denominator ? floor : floor + 1;
  return floor % 2 === 0 ? floor : floor + 1;
}

// Same as illava.config.scale_layer: the same relative depth of a `depth`-deep stack, from 1 to depth - 1.
export function scaleLayer(layer, depth, reference) {
  return Math.min(depth - 1, Math.max(1, roundHalfEven(layer * depth, reference)));
}

// Same as illava.config.nearest_stage2_layer: the nearest allowed layer, the earlier on a tie.
export function nearestStage2Layer(layer, choices) {
  if (!choices?.length) return layer;
  return choices.reduce((best, c) => {
    const [d, bestD] = [Math.abs(c - layer), Math.abs(best - layer)];
    return d < bestD || (d === bestD && c < best) ? c : best;
  });
}

const sortedUnique = (layers) => [...new Set(layers)].sort((a, b) => a - b);

// Same as illava.config.scale_layers: a preset moved to `model`'s depths and allowed stage-2 layers.
export function scaleLayers(config, model) {
  const scale = (layers, depth, reference) =>
    depth === reference ? layers : sortedUnique(layers.map((l) => scaleLayer(l, depth, reference)));
  const stage2 = scale(config.stage2_layers, model.llmDepth, REFERENCE.llmDepth);
  return {
    ...config,
    stage1_layers: scale(config.stage1_layers, model.vitDepth, REFERENCE.vitDepth),
    stage2_layers: sortedUnique(stage2.map((l) => nearestStage2Layer(l, model.stage2Choices))),
  };
}

// Same rule and words as MergeConfig.check_depths: a layer the model does not have names its field.
export function checkDepths(config, model) {
  const stacks = [
    ["stage1_layers", config.stage1_layers, model.vitDepth, "vision encoder", model.vitDepth],
    ["stage2_layers", config.stage2_layers, model.llmDepth - 1, "language model", model.llmDepth],
  ];
  for (const [field, layers, last, what, depth] of stacks) {
    const bad = layers.find((layer) => layer < 1 || layer > last);
    if (bad !== undefined) {
      throw new Error(`${field} contains ${bad}, but ${model.name}'s ${what} has ${depth} layers: use layers from 1 to ${last}`);
    }
  }
}

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

// The merge settings the node's widgets describe for `model`: a named preset scaled to its depths, or
// the knobs as written when preset = custom.
export function configFromWidgets(values, model = REFERENCE) {
  const name = PRESET_LABELS[values.preset];
  if (name) return scaleLayers(PRESETS[name], model);
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

// Tokens after each stage for the typical image, and the share of compute the merging saves in `model`.
export function tokenBudget(config, image = TYPICAL_IMAGE, model = REFERENCE) {
  const full = typicalTokens(image);
  const s1 = config.stage1_layers.length ? config.stage1_keep : 1;
  const s2 = config.stage2_layers.length ? config.stage2_keep : 1;
  const afterStage1 = Math.max(1, Math.round(full * s1));
  const afterStage2 = Math.max(1, Math.round(afterStage1 * s2));
  const text = image.textTokens;
  const llm = sum(widths(afterStage1, s2, config.stage2_layers, model.llmDepth).map((v) => v + text));
  const vit = sum(widths(4 * full, s1, config.stage1_layers, model.vitDepth));
  return {
    full,
    afterStage1,
    afterStage2,
    prefillSaved: 1 - llm / (model.llmDepth * (full + text)),
    vitSaved: 1 - vit / (model.vitDepth * 4 * full),
  };
}

const percent = (share) => `${Math.round(100 * share)}%`;

const ESTIMATE = `estimate for a ${TYPICAL_IMAGE.width}x${TYPICAL_IMAGE.height} image; Encode shows the real count after a run`;

// Which model's depths the readout uses; `modelState` is {model} once the server described the chosen
// model, {error} when it could not, and null before a model is chosen.
function modelLine(modelState) {
  if (modelState?.model) {
    const m = modelState.model;
    return `${m.name}: vision encoder ${m.vitDepth} layers, LLM ${m.llmDepth}`;
  }
  const why = modelState?.error ? `no model info (${modelState.error}), so` : "until a model is chosen in Load LVLM,";
  return `${why} ${REFERENCE.name} depths`;
}

// Where auto's settings come from for the chosen model: its calibrated profile, or the paper preset.
function autoSource(modelState, share) {
  const model = modelState?.model;
  if (!model) return "placed as calibrated for the loaded model, else as the paper preset: Encode says which";
  const budgets = Object.entries(model.profile ?? {}).filter(([, list]) => list?.length);
  if (!budgets.length) return `${model.name} has no merge profile: auto uses the paper preset at ${percent(share)} (iLLaVA Calibrate fits one)`;
  const listed = budgets.map(([kind, list]) => `${kind} at ${list.map(percent).join(", ")}`).join("; ");
  return `${model.name} is calibrated for ${listed}: auto uses the entry nearest ${percent(share)}`;
}

// What auto means before a run: the budget's share of a typical image's tokens, settings per model.
export function autoText(values, modelState = null, image = TYPICAL_IMAGE) {
  const share = Number(values.budget);
  if (!Number.isFinite(share) || share <= 0 || share > 1) return `invalid: budget must be in (0, 1], got ${values.budget}`;
  const full = typicalTokens(image);
  return [
    `auto: ${percent(share)} of the visual tokens reach the later LLM layers`,
    `${full} -> ${Math.max(1, Math.round(full * share))} (${ESTIMATE})`,
    autoSource(modelState, share),
  ].join("\n");
}

const layersText = (layers) => (layers.length ? layers.join(",") : "none");

// The text shown under the Merge Config widgets, for the model described by `modelState` (see modelLine).
export function budgetText(values, modelState = null) {
  if (values.preset === "auto") return autoText(values, modelState);
  const model = modelState?.model ?? REFERENCE;
  let config;
  let budget;
  try {
    config = configFromWidgets(values, model);
    checkDepths(config, model);
    budget = tokenBudget(config, TYPICAL_IMAGE, model);
  } catch (error) {
    return `invalid: ${error.message}`;
  }
  return [
    `${modelLine(modelState)}; layers: stage 1 ${layersText(config.stage1_layers)}, stage 2 ${layersText(config.stage2_layers)}`,
    `${budget.full} visual tokens -> ${budget.afterStage1} after stage 1 -> ${budget.afterStage2} after stage 2`,
    `(${ESTIMATE})`,
    `LLM prefill compute saved: ${percent(budget.prefillSaved)} | vision encoder: ${percent(budget.vitSaved)}`,
  ].join("\n");
}

// The knobs custom starts from when the user switches to it: the settings the previous choice stands for on
// this model (paper image after auto or off), so custom never starts from layers the model does not have.
export function customStart(previousPreset, model = REFERENCE) {
  const named = PRESET_LABELS[previousPreset];
  const config = scaleLayers(PRESETS[named && named !== "off" ? named : "paper-image"], model);
  return {
    stage1_layers: config.stage1_layers.join(","),
    stage1_keep: config.stage1_keep,
    stage2_layers: config.stage2_layers.join(","),
    stage2_keep: config.stage2_keep,
  };
}
