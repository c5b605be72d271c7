// What the Merge Config readout asks the server, and where custom starts. Pure: no DOM, no ComfyUI imports,
// so `node --test tests/web/` can check it and the browser can load it as a plain module. The readout's
// numbers (work, predicted speedup, the settings auto picks) come from the library through /illava/readout:
// one cost model, never a JavaScript mirror.

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

// The widgets the server's readout reads, as a query for /illava/readout about model `name`.
export const READOUT_FIELDS = [
  "preset", "budget", "stage1_layers", "stage1_keep", "stage1_recycled", "stage2_layers", "stage2_keep",
  "stage2_recycled", "recycle_weighting", "score_chunk", "method",
];

export function readoutQuery(values, name) {
  const query = new URLSearchParams({ model: name });
  for (const field of READOUT_FIELDS) {
    if (values[field] !== undefined && values[field] !== null) query.set(field, String(values[field]));
  }
  return query.toString();
}

// Shown until the graph has one Load LVLM the settings will meet: the numbers depend on the model.
export const NO_MODEL_TEXT =
  "Choose a model in Load LVLM (linked to the node this config feeds): the work these settings leave, the estimated " +
  "speedup and the layers they land on are shown here for that model.";

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
