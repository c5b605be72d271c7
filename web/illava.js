// iLLaVA frontend: the readout of what Merge Config's settings buy on the chosen model, inactive knobs
// hidden, and text / stats / counts shown on the nodes after they run (kept across reloads), in both
// the LiteGraph canvas and the Vue node renderer.
import { api } from "../../scripts/api.js";
import { app } from "../../scripts/app.js";
import { ComfyWidgets } from "../../scripts/widgets.js";
import { NO_MODEL_TEXT, REFERENCE, customStart, readoutQuery } from "./budget.js";
import { DISPLAYS, DISPLAY_MIN_HEIGHT, failureTexts, parseLocator, rememberShown, rememberedTexts, textsFor } from "./display.js";
import { LOADER, chosenModel, modelInfoCache } from "./model_info.js";
import { HAS_RULES, hiddenWidgets } from "./visibility.js";
import { growToFit, showOnly } from "./widgets.js";

const CONFIG = "iLLaVA_MergeConfig";
const BUDGET_DISPLAY = { name: "illava_budget", label: "what it buys", placeholder: "the work and estimated speedup appear here" };
// Widgets whose choice hides or shows others (combos: they fire no callback while a workflow loads).
const CONTROLS = ["preset", "sampling", "style"];
// Wide enough for a few words per line in the display boxes.
const MIN_WIDTH = 360;

// A read-only text box that never enters the saved workflow or the queued prompt.
function addDisplay(node, { name, label, placeholder }) {
  const widget = ComfyWidgets.STRING(node, name, ["STRING", { multiline: true, placeholder }], app).widget;
  widget.label = label;
  widget.serialize = false;
  widget.options = { ...(widget.options ?? {}), serialize: false, read_only: true, getMinHeight: () => DISPLAY_MIN_HEIGHT };
  if (widget.element) {
    widget.element.readOnly = true;
    widget.element.placeholder = placeholder;
    widget.element.style.opacity = "0.85";
  }
  return widget;
}

function widgetValues(node) {
  return Object.fromEntries((node.widgets ?? []).map((w) => [w.name, w.value]));
}

function applyVisibility(node, options) {
  showOnly(node, hiddenWidgets(node.comfyClass, widgetValues(node)), options);
}

const modelInfo = modelInfoCache(async (name) => {
  const response = await api.fetchApi(`/illava/model_info?model=${encodeURIComponent(name)}`);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error ?? `the server has no iLLaVA model info route (HTTP ${response.status})`);
  return body;
});

async function fetchReadout(query) {
  try {
    const response = await api.fetchApi(`/illava/readout?${query}`);
    const body = await response.json().catch(() => ({}));
    if (!response.ok) return `no readout: ${body.error ?? `the server has no iLLaVA readout route (HTTP ${response.status})`}`;
    return body.text;
  } catch (error) {
    return `no readout: ${error.message}`;
  }
}

// The server's readout for the node's settings and chosen model; only the latest answer is shown.
async function refreshBudget(node) {
  const display = node.widgets?.find((w) => w.name === BUDGET_DISPLAY.name);
  if (!display || !node.graph) return;
  const name = chosenModel(node, node.graph);
  const show = (text) => {
    display.value = text;
    node.setDirtyCanvas?.(true, false);
  };
  if (!name) return show(NO_MODEL_TEXT);
  // Custom starts from the model's depths: have them at hand when the user switches to it.
  modelInfo.get(name);
  const asked = (node.illavaReadoutAsked = (node.illavaReadoutAsked ?? 0) + 1);
  const text = await fetchReadout(readoutQuery(widgetValues(node), name));
  if (asked === node.illavaReadoutAsked) show(text);
}

// Every Merge Config's readout, after the model or the links that lead to it change.
function refreshAllBudgets() {
  for (const node of app.graph?.nodes ?? app.graph?._nodes ?? []) {
    if (node.comfyClass === CONFIG) refreshBudget(node);
  }
}

// Switching to custom fills the knobs with what the previous choice meant for the chosen model.
function startCustom(node, previousPreset) {
  const name = node.graph ? chosenModel(node, node.graph) : null;
  const model = (name ? modelInfo.peek(name)?.model : null) ?? REFERENCE;
  for (const [field, value] of Object.entries(customStart(previousPreset, model))) {
    const widget = node.widgets?.find((w) => w.name === field);
    if (widget) widget.value = value;
  }
}

function showTexts(node, texts) {
  for (const [name, text] of Object.entries(texts)) {
    const widget = node.widgets?.find((w) => w.name === name);
    if (widget) widget.value = text;
  }
  node.setDirtyCanvas?.(true, false);
}

// ComfyUI re-sends the cached ui of cached output nodes through `executed`; other cached nodes (Encode,
// Load LVLM) get no message, and keep the texts remembered in their properties.
function showOutputs(node, output) {
  showAndRemember(node, textsFor(node.comfyClass, output));
}

function showAndRemember(node, texts) {
  if (!Object.keys(texts).length) return;
  showTexts(node, texts);
  node.properties = rememberShown(node.properties, texts);
}

function findNode(locatorId) {
  const { subgraphId, nodeId } = parseLocator(locatorId);
  const root = app.rootGraph ?? app.graph;
  const graph = subgraphId ? root?.subgraphs?.get?.(subgraphId) : root;
  return graph?.getNodeById?.(nodeId) ?? graph?.getNodeById?.(Number(nodeId)) ?? null;
}

function chain(prototype, method, after) {
  const original = prototype[method];
  prototype[method] = function (...args) {
    const result = original?.apply(this, args);
    after.apply(this, args);
    return result;
  };
}

// Run `after` whenever the user changes one of `names` on `node`.
function onChange(node, names, after) {
  for (const widget of node.widgets ?? []) {
    if (!names.includes(widget.name)) continue;
    const callback = widget.callback;
    widget.callback = function (...args) {
      const result = callback?.apply(this, args);
      after();
      return result;
    };
  }
}

app.registerExtension({
  name: "illava.nodes",

  // A failed run sends no `executed`: the node says so instead of keeping an earlier run's result.
  setup() {
    api.addEventListener("execution_error", ({ detail }) => {
      const node = detail?.node_id == null ? null : findNode(detail.node_id);
      if (node && DISPLAYS[node.comfyClass]) showAndRemember(node, failureTexts(node.comfyClass, detail.exception_message));
    });
  },

  async beforeRegisterNodeDef(nodeType, nodeData) {
    const type = nodeData.name;
    const proto = nodeType.prototype;
    const displays = DISPLAYS[type];
    if (type === CONFIG) {
      chain(proto, "onNodeCreated", function () {
        const inputs = (this.widgets ?? []).map((w) => w.name);
        addDisplay(this, BUDGET_DISPLAY);
        growToFit(this, MIN_WIDTH);
        const preset = this.widgets?.find((w) => w.name === "preset");
        this.illavaPreset = preset?.value;
        onChange(this, ["preset"], () => {
          if (preset.value === "custom" && this.illavaPreset !== "custom") startCustom(this, this.illavaPreset);
          this.illavaPreset = preset.value;
        });
        onChange(this, inputs, () => refreshBudget(this));
      });
      // The readout needs the graph, to find the model: it exists from here on.
      chain(proto, "onAdded", function () {
        refreshBudget(this);
      });
      chain(proto, "onConfigure", function () {
        this.illavaPreset = this.widgets?.find((w) => w.name === "preset")?.value;
        refreshBudget(this);
      });
    }
    if (displays) {
      chain(proto, "onNodeCreated", function () {
        for (const display of displays) addDisplay(this, display);
        growToFit(this, MIN_WIDTH);
      });
      chain(proto, "onExecuted", function (message) {
        showOutputs(this, message);
      });
      chain(proto, "onConfigure", function () {
        showTexts(this, rememberedTexts(type, this.properties));
      });
    }
    if (HAS_RULES.has(type)) {
      chain(proto, "onNodeCreated", function () {
        onChange(this, CONTROLS, () => applyVisibility(this));
        applyVisibility(this);
      });
      chain(proto, "onConfigure", function () {
        applyVisibility(this, { growOnly: true });
      });
    }
    if (type === LOADER) {
      chain(proto, "onNodeCreated", function () {
        onChange(this, ["model"], refreshAllBudgets);
      });
    }
    if (type.startsWith("iLLaVA_")) chain(proto, "onConnectionsChange", refreshAllBudgets);
  },

  // Links and widget values are all in place only once the whole graph is loaded.
  afterConfigureGraph() {
    refreshAllBudgets();
  },

  // The Vue node renderer reports outputs here instead of calling onExecuted.
  onNodeOutputsUpdated(outputs) {
    for (const [locatorId, output] of Object.entries(outputs ?? {})) {
      const node = findNode(locatorId);
      if (node && DISPLAYS[node.comfyClass]) showOutputs(node, output);
    }
  },
});
