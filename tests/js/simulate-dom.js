'use strict';
// What the miniprogram-simulate tests (simulate.test.js, topup.test.js) share: the DOM globals WeChat's component
// test tool expects, and a j-component node as a plain tree. Not a test file.

/** The DOM globals miniprogram-simulate and j-component expect (jest's jsdom environment provides them). */
function installDom() {
  const { JSDOM } = require('jsdom');
  const dom = new JSDOM('<!doctype html><html><head></head><body></body></html>', { url: 'https://servicewechat.com/' });
  const names = ['document', 'Node', 'Element', 'HTMLElement', 'Event', 'CustomEvent', 'MutationObserver', 'getComputedStyle'];
  const saved = { window: globalThis.window };
  globalThis.window = dom.window;
  for (const name of names) {
    saved[name] = globalThis[name];
    globalThis[name] = typeof dom.window[name] === 'function' && name === 'getComputedStyle'
      ? dom.window.getComputedStyle.bind(dom.window)
      : dom.window[name];
  }
  return () => {
    for (const [name, value] of Object.entries(saved)) {
      if (value === undefined) delete globalThis[name];
      else globalThis[name] = value;
    }
    dom.window.close();
  };
}

/** The tree of a j-component node as plain {tag, attrs, children}. */
function tree(json) {
  return {
    tag: json.tagName,
    attrs: Object.fromEntries((json.attrs || []).map((a) => [a.name, a.value])),
    children: (json.children || []).filter((c) => c && c.tagName).map(tree),
  };
}

function find(node, predicate, out = []) {
  if (predicate(node)) out.push(node);
  node.children.forEach((c) => find(c, predicate, out));
  return out;
}

module.exports = { installDom, tree, find };
