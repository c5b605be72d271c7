// iLLaVA frontend: live token budget on Merge Config, and text / stats / counts shown on the nodes
// after they run, in both the LiteGraph canvas and the Vue node renderer.
import { app } from "../../scripts/app.js";
import { ComfyWidgets } from "../../scripts/widgets.js";
import { budgetText } from "./budget.js";
import { DISPLAYS, outputTexts, parseLocator } from "./display.js";

const BUDGET_INPUTS = ["preset", "budget", "stage1_layers", "stage1_keep", "stage2_layers", "stage2_keep"];

// A read-only text box that never enters the saved workflow or the queued prompt.
function addDisplay(node, name, label) {
  const widget = ComfyWidgets.STRING(node, name, ["STRING", { multiline: true }], app).widget;
  widget.label = label;
  widget.serialize = false;
  widget.options = { ...(widget.options ?? {}), serialize: false, read_only: true };
  if (widget.element) {
    widget.element.readOnly = true;
    widget.element.style.opacity = "0.85";
  }
  return widget;
}

function widgetValues(node) {
  return Object.fromEntries((node.widgets ?? []).map((w) => [w.name, w.value]));
}

function refreshBudget(node) {
  const display = node.widgets?.find((w) => w.name === "illava_budget");
  if (display) display.value = budgetText(widgetValues(node));
  node.setDirtyCanvas?.(true, false);
}

function showOutputs(node, output) {
  const texts = outputTexts(output);
  for (const { name, key } of DISPLAYS[node.comfyClass] ?? []) {
    const widget = node.widgets?.find((w) => w.name === name);
    if (widget && texts[key] !== undefined) widget.value = texts[key];
  }
  node.setDirtyCanvas?.(true, false);
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

app.registerExtension({
  name: "illava.nodes",

  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name === "iLLaVA_MergeConfig") {
      chain(nodeType.prototype, "onNodeCreated", function () {
        addDisplay(this, "illava_budget", "token budget");
        for (const widget of this.widgets ?? []) {
          if (!BUDGET_INPUTS.includes(widget.name)) continue;
          const callback = widget.callback;
          const node = this;
          widget.callback = function (...args) {
            const result = callback?.apply(this, args);
            refreshBudget(node);
            return result;
          };
        }
        refreshBudget(this);
      });
      chain(nodeType.prototype, "onWidgetChanged", function () {
        refreshBudget(this);
      });
      chain(nodeType.prototype, "onConfigure", function () {
        refreshBudget(this);
      });
    }
    const displays = DISPLAYS[nodeData.name];
    if (displays) {
      chain(nodeType.prototype, "onNodeCreated", function () {
        for (const { name, label } of displays) addDisplay(this, name, label);
      });
      chain(nodeType.prototype, "onExecuted", function (message) {
        showOutputs(this, message);
      });
    }
  },

  // The Vue node renderer reports outputs here instead of calling onExecuted.
  onNodeOutputsUpdated(outputs) {
    for (const [locatorId, output] of Object.entries(outputs ?? {})) {
      const node = findNode(locatorId);
      if (node && DISPLAYS[node.comfyClass]) showOutputs(node, output);
    }
  },
});
