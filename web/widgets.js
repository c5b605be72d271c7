// Hiding widgets and fitting the node, as the current ComfyUI frontend lays nodes out.

const SAVED_SIZE = Symbol("illava.computeSize");

// `hidden` stops the frontend drawing the widget, its clicks and its DOM element (LGraphNode.isWidgetVisible);
// a computeSize of [0, -4] also gives it no height where the layout still counts hidden widgets (-4 cancels
// the gap added between widgets). The widget keeps its value and is still saved and queued.
// Returns whether anything changed.
export function setHidden(widget, hidden) {
  if (Boolean(widget.hidden) === hidden) return false;
  widget.hidden = hidden;
  if (hidden) {
    widget[SAVED_SIZE] = { own: Object.hasOwn(widget, "computeSize"), computeSize: widget.computeSize };
    widget.computeSize = () => [0, -4];
  } else {
    const saved = widget[SAVED_SIZE];
    if (saved?.own) widget.computeSize = saved.computeSize;
    else delete widget.computeSize;
  }
  return true;
}

// Hide exactly the widgets named in `hiddenNames`. When that changes the node's height, the node grows or
// shrinks by the difference, so space the user gave it is kept; `growOnly` (a loaded workflow, whose saved
// size already fits) never shrinks it.
export function showOnly(node, hiddenNames, { growOnly = false } = {}) {
  const before = node.computeSize()[1];
  let changed = false;
  for (const widget of node.widgets ?? []) changed = setHidden(widget, hiddenNames.includes(widget.name)) || changed;
  if (!changed) return;
  const [width, after] = node.computeSize();
  const height = growOnly ? Math.max(node.size[1], after) : Math.max(after, node.size[1] + after - before);
  node.setSize([Math.max(node.size[0], width), height]);
  node.setDirtyCanvas?.(true, true);
}

// Grow the node (never shrink it) to what its widgets need, at least `minWidth` wide.
export function growToFit(node, minWidth = 0) {
  const [width, height] = node.computeSize();
  node.setSize([Math.max(node.size[0], width, minWidth), Math.max(node.size[1], height)]);
}
