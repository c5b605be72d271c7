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

// Which read-only display widgets each node type gets, the label shown, and which ui key fills each.
export const DISPLAYS = {
  iLLaVA_EncodeImage: [{ name: "illava_counts", label: "tokens", key: "text" }],
  iLLaVA_EncodeVideo: [{ name: "illava_counts", label: "tokens", key: "text" }],
  iLLaVA_Generate: [
    { name: "illava_text", label: "answer", key: "text" },
    { name: "illava_stats", label: "stats", key: "stats" },
  ],
  iLLaVA_Calibrate: [{ name: "illava_profile", label: "profile", key: "text" }],
};
