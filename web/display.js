// Pure helpers for showing node outputs (no DOM, no ComfyUI imports; tested with node --test).

// The ui dict of an executed iLLaVA node -> the strings to show ({} when there is nothing).
export function outputTexts(output) {
  const join = (value) => (Array.isArray(value) ? value.join("\n\n") : value ?? undefined);
  const shown = {};
  const text = join(output?.text);
  const stats = join(output?.stats);
  if (text !== undefined) shown.text = text;
  if (stats !== undefined) shown.stats = stats;
  return shown;
}

// A node locator id is "<nodeId>" on the root graph or "<subgraphUuid>:<nodeId>" inside a subgraph.
export function parseLocator(locatorId) {
  const text = String(locatorId);
  const cut = text.lastIndexOf(":");
  if (cut < 0) return { subgraphId: null, nodeId: text };
  return { subgraphId: text.slice(0, cut), nodeId: text.slice(cut + 1) };
}

const COUNTS = { name: "illava_counts", label: "token counts", key: "text", placeholder: "token counts appear here after a run" };
const ANSWER = [
  { name: "illava_text", label: "answer", key: "text", placeholder: "the answer appears here after a run" },
  { name: "illava_stats", label: "stats", key: "stats", placeholder: "tokens kept and timings appear here after a run" },
];

// Which read-only display widgets each node type gets: the label and the placeholder shown (human words,
// not the widget name), and which ui key fills each.
export const DISPLAYS = {
  iLLaVA_LoadLVLM: [{ name: "illava_model", label: "loaded model", key: "text", placeholder: "depths and memory appear here after a run" }],
  iLLaVA_EncodeImage: [COUNTS],
  iLLaVA_EncodeVideo: [COUNTS],
  iLLaVA_Generate: ANSWER,
  iLLaVA_Caption: ANSWER,
  iLLaVA_CaptionFolder: [{ name: "illava_summary", label: "summary", key: "text", placeholder: "the summary appears here after a run" }],
  iLLaVA_Calibrate: [
    { name: "illava_profile", label: "profile", key: "text", placeholder: "the calibrated profile appears here after a run" },
  ],
};

// Display boxes are at least this tall (px, about four lines), so a node at its default size is readable.
export const DISPLAY_MIN_HEIGHT = 80;

// The node property that keeps the last shown texts, so a reloaded workflow shows them again.
export const SHOWN_PROPERTY = "illava_shown";
// Longer texts are cut so that a saved workflow stays small.
export const MAX_KEPT_CHARS = 20000;

// `properties` with the texts just shown ({display name: text}) remembered beside earlier ones.
export function rememberShown(properties, shown) {
  const clipped = Object.fromEntries(
    Object.entries(shown).map(([name, text]) => [name, text.length > MAX_KEPT_CHARS ? `${text.slice(0, MAX_KEPT_CHARS)}\n[cut]` : text]),
  );
  return { ...properties, [SHOWN_PROPERTY]: { ...(properties?.[SHOWN_PROPERTY] ?? {}), ...clipped } };
}

// The remembered texts of the displays of `nodeType` ({display name: text}); unknown or odd entries are ignored.
export function rememberedTexts(nodeType, properties) {
  const kept = properties?.[SHOWN_PROPERTY] ?? {};
  const names = (DISPLAYS[nodeType] ?? []).map((d) => d.name);
  return Object.fromEntries(names.filter((n) => typeof kept[n] === "string").map((n) => [n, kept[n]]));
}

// The texts to show for an executed node's ui ({display name: text}): only the displays the ui fills.
export function textsFor(nodeType, output) {
  const texts = outputTexts(output);
  return Object.fromEntries((DISPLAYS[nodeType] ?? []).filter((d) => texts[d.key] !== undefined).map((d) => [d.name, texts[d.key]]));
}

// The texts to show after a run of the node failed ({display name: text}): the error in the first display,
// the others emptied, so that an earlier run's result is not taken for this one's.
export function failureTexts(nodeType, message) {
  const reason = String(message ?? "").trim() || "see the error report";
  return Object.fromEntries((DISPLAYS[nodeType] ?? []).map((d, i) => [d.name, i === 0 ? `The last run failed: ${reason}` : ""]));
}
