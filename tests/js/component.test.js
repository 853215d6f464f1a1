'use strict';
const { describe, it, beforeEach, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const fs = require('node:fs');
const { useHarness } = require('./fake-wx.js');

const h = useHarness({ beforeEach, afterEach });
const DIR = path.join(__dirname, '../../static/sdk/pushhub-form');

// Loads the component's index.js with a fake Component() and returns its definition.
function loadComponent() {
  let definition = null;
  globalThis.Component = (def) => { definition = def; };
  const file = path.join(DIR, 'index.js');
  delete require.cache[require.resolve(file)];
  try {
    require(file);
  } finally {
    delete globalThis.Component;
  }
  return definition;
}

function instance(definition, data = {}) {
  const events = [];
  const props = definition.properties;
  const defaults = Object.fromEntries(Object.keys(props).map((k) => [k, props[k].value]));
  return {
    events,
    data: Object.assign(defaults, data),
    triggerEvent(name, detail, options) { events.push({ name, detail, options }); },
  };
}

describe('pushhub-form component', () => {
  it('collects the formId through PushHub.shared() and re-emits submit', async () => {
    const ph = h.make();
    const def = loadComponent();
    const self = instance(def);
    def.methods.onSubmit.call(self, { type: 'submit', detail: { formId: 'abc123', value: { name: 'x' } } });
    assert.deepEqual(self.events, [{ name: 'submit', detail: { formId: 'abc123', value: { name: 'x' } }, options: undefined }]);
    await ph.flush();
    assert.deepEqual(h.wx.requestsTo('formids')[0].data, { formids: ['abc123'] });
  });

  it('reports as prepay_id when kind is prepay', async () => {
    const ph = h.make();
    const def = loadComponent();
    def.methods.onSubmit.call(instance(def, { kind: 'prepay' }), { detail: { formId: 'p1' } });
    await ph.flush();
    assert.deepEqual(h.wx.requestsTo('formids')[0].data, { prepay_ids: ['p1'] });
  });

  it('still re-emits the tap when there is no PushHub instance or the formId is a mock', (t) => {
    t.mock.method(console, 'warn', () => {});
    const def = loadComponent();
    const self = instance(def);
    def.methods.onSubmit.call(self, { detail: { formId: 'the formId is a mock one' } });
    def.methods.onSubmit.call(self, undefined);
    assert.deepEqual(self.events.map((e) => e.name), ['submit', 'submit']);
    assert.deepEqual(self.events[1].detail, { formId: undefined, value: {} });
  });

  it('ships a form with report-submit and a submit button over the slot', () => {
    const wxml = fs.readFileSync(path.join(DIR, 'index.wxml'), 'utf8');
    assert.match(wxml, /<form[^>]*report-submit="true"[^>]*bindsubmit="onSubmit"/);
    assert.match(wxml, /<slot><\/slot>/);
    assert.match(wxml, /<button[^>]*form-type="submit"/);
    const json = JSON.parse(fs.readFileSync(path.join(DIR, 'index.json'), 'utf8'));
    assert.equal(json.component, true);
    const wxss = fs.readFileSync(path.join(DIR, 'index.wxss'), 'utf8');
    assert.match(wxss, /position:\s*absolute/);
    assert.match(wxss, /opacity:\s*0/);
  });
});
