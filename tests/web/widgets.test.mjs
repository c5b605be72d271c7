import assert from "node:assert/strict";
import { test } from "node:test";

import { setHidden, showOnly } from "../../web/widgets.js";

class Widget {
  constructor(name, value) {
    Object.assign(this, { name, value });
  }
  computeSize() {
    return [100, 20];
  }
}

// A node whose height is the sum of its widgets' heights plus 4 each, as LiteGraph lays them out.
function node(widgets, size = [200, 0]) {
  const n = {
    widgets,
    size,
    computeSize: () => [150, widgets.reduce((h, w) => h + w.computeSize()[1] + 4, 0)],
    setSize(s) {
      n.size = s;
    },
  };
  return n;
}

test("a hidden widget takes no height, keeps its value, and gets its own size back when shown", () => {
  const widget = new Widget("seed", 42);
  assert.equal(setHidden(widget, true), true);
  assert.equal(widget.hidden, true);
  assert.deepEqual(widget.computeSize(), [0, -4]);
  assert.equal(setHidden(widget, true), false);
  setHidden(widget, false);
  assert.equal(widget.hidden, false);
  assert.equal(Object.hasOwn(widget, "computeSize"), false);
  assert.deepEqual(widget.computeSize(), [100, 20]);
  assert.equal(widget.value, 42);
});

test("hiding shrinks the node by what it hid and keeps space the user added", () => {
  const widgets = ["a", "b", "c"].map((n) => new Widget(n, 1));
  const n = node(widgets, [300, 172]); // 72 needed, 100 added by the user
  showOnly(n, ["b", "c"]);
  assert.deepEqual(n.size, [300, 124]);
  showOnly(n, []);
  assert.deepEqual(n.size, [300, 172]);
});

test("a loaded workflow's saved size is never shrunk", () => {
  const n = node(["a", "b"].map((name) => new Widget(name, 1)), [300, 48]);
  showOnly(n, ["b"], { growOnly: true });
  assert.deepEqual(n.size, [300, 48]);
});
