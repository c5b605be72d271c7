// Which model a Merge Config will meet, and what the server says of it. Pure: works on LiteGraph-shaped
// objects (graph.getNodeById, graph.links, node.inputs/outputs) and a given fetch, so node --test covers it.
import { modelFromInfo } from "./budget.js";

export const LOADER = "iLLaVA_LoadLVLM";

function link(graph, id) {
  return graph.links?.get?.(id) ?? graph.links?.[id] ?? null;
}

function allNodes(graph) {
  return graph.nodes ?? graph._nodes ?? [];
}

// The Load LVLM nodes whose lvlm reaches the nodes `configNode`'s config output feeds (Encode, Generate...).
function linkedLoaders(configNode, graph) {
  const loaders = [];
  for (const output of configNode.outputs ?? []) {
    for (const id of output.links ?? []) {
      const target = graph.getNodeById(link(graph, id)?.target_id);
      const lvlm = target?.inputs?.find((input) => input.name === "lvlm");
      const source = lvlm?.link != null ? graph.getNodeById(link(graph, lvlm.link)?.origin_id) : null;
      if (source?.type === LOADER) loaders.push(source);
    }
  }
  return loaders;
}

// The model name chosen in the Load LVLM that `configNode`'s settings will be used with: through the
// links, else the graph's only Load LVLM; null when there is none or it is ambiguous.
export function chosenModel(configNode, graph) {
  const modelOf = (node) => node.widgets?.find((w) => w.name === "model")?.value;
  const linked = [...new Set(linkedLoaders(configNode, graph).map(modelOf))];
  if (linked.length === 1) return linked[0] ?? null;
  if (linked.length > 1) return null;
  const loaders = allNodes(graph).filter((node) => node.type === LOADER);
  return loaders.length === 1 ? modelOf(loaders[0]) ?? null : null;
}

// Model info per model name, asked once: `fetchInfo(name)` resolves to the route's JSON or throws an Error
// whose message the readout shows. Answers are {model} (see budget.modelFromInfo) or {error}.
export function modelInfoCache(fetchInfo) {
  const answers = new Map();
  const pending = new Map();
  return {
    peek: (name) => answers.get(name),
    get(name) {
      if (answers.has(name)) return Promise.resolve(answers.get(name));
      if (!pending.has(name)) {
        const asked = Promise.resolve()
          .then(() => fetchInfo(name))
          .then((info) => ({ model: modelFromInfo(info) }), (error) => ({ error: error.message }))
          .then((answer) => {
            answers.set(name, answer);
            pending.delete(name);
            return answer;
          });
        pending.set(name, asked);
      }
      return pending.get(name);
    },
  };
}
