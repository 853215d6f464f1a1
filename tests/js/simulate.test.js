'use strict';
// pushhub-form and the SDK under WeChat's own component test tool, miniprogram-simulate (j-component +
// miniprogram-exparser, templates compiled by WeChat's wcc from miniprogram-compiler), on a jsdom document.
// A host page uses <pushhub-form> as a mini-program page would; a tap on the component becomes the form's
// submit with a formId, which must reach the SDK and be uploaded through the `wx` passed to PushHub.
//
// j-component renders WeChat's built-in components (form, button, view) as inert tags, so the one thing
// WeChat itself does — a tap on a form-type="submit" button inside <form report-submit> submits that form
// with a fresh formId — is done by submitByTap() below, after checking the button and the form are there.
const { describe, it, before, after, beforeEach, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { SDK_DIR, missing } = require('./tooling.js');
const { APPID, SERVER, createFakeWx, serveDefaults, settle } = require('./fake-wx.js');
const { installDom, tree, find } = require('./simulate-dom.js');

const skip = missing('miniprogram-simulate', 'jsdom');

/** flush() uploaded n ids, all accepted (other fields of its data are not this file's business). */
function assertFlushed(r, n) {
  assert.equal(r.ok, true, JSON.stringify(r));
  assert.deepEqual([r.data.sent, r.data.accepted, r.data.dropped], [n, n, 0]);
}

describe('pushhub-form under miniprogram-simulate', { skip }, () => {
  let simulate;
  let exparser;
  let restoreDom;
  let formComponentId;
  let simulateWxRequests;
  let fakeWx;
  let PushHub;
  const instances = [];
  let nextFormId = 0;

  before(() => {
    restoreDom = installDom();
    simulate = require('miniprogram-simulate'); // also sets global.wx to its own mock of the wx API
    exparser = require('miniprogram-exparser'); // j-component's (WeChat's) component framework
    // The SDK must use the `wx` it is given, not this global one: record anything sent through it.
    simulateWxRequests = [];
    const original = globalThis.wx.request;
    globalThis.wx.request = (opts) => {
      simulateWxRequests.push(opts);
      return original(opts);
    };
    PushHub = require(path.join(SDK_DIR, 'pushhub.js'));
    formComponentId = simulate.load(path.join(SDK_DIR, 'pushhub-form/index'), 'pushhub-form');
  });

  after(() => {
    restoreDom();
  });

  beforeEach(() => {
    fakeWx = serveDefaults(createFakeWx());
    simulateWxRequests.length = 0;
    delete globalThis.getApp;
  });

  afterEach((t) => {
    instances.splice(0).forEach((p) => p.destroy());
    delete globalThis.getApp;
    // A fake held to the server's schema (issue 14 part A) records what PushHub would have refused.
    if (!t.name.includes('prepay_id to the formids route')) assert.deepEqual(fakeWx.violations || [], []);
  });

  function makePushHub(options = {}) {
    const p = new PushHub({ appid: APPID, server: SERVER, wx: fakeWx, flushInterval: 60000, ...options });
    instances.push(p);
    return p;
  }

  /** A page using <pushhub-form> the way the README shows, rendered and attached. */
  function renderPage(data = {}, componentId = formComponentId) {
    const events = { submit: [], innerTaps: 0 };
    const pageId = simulate.load({
      template:
        '<pushhub-form id="f" data-id="42" disabled="{{off}}" kind="{{kind}}" bindsubmit="onBuy">' +
        '<view class="buy" bindtap="onInnerTap">Buy</view>' +
        '</pushhub-form>',
      usingComponents: { 'pushhub-form': componentId },
      data: { off: false, kind: 'formid', ...data },
      methods: {
        onBuy(e) {
          events.submit.push(e);
        },
        onInnerTap() {
          events.innerTaps += 1;
        },
      },
    });
    const root = simulate.render(pageId);
    root.attach(document.createElement('parent-wrapper'));
    return { root, form: root.querySelector('#f'), events };
  }

  /**
   * What WeChat does on a tap on the component: the tap lands on the topmost element, the transparent
   * form-type="submit" button, whose <form report-submit> then fires submit with a formId (a non-bubbling
   * event, as WeChat's form submit is). Returns the formId, or null when there is no overlay (disabled):
   * then the tap goes to the content itself.
   */
  async function submitByTap({ root, form }) {
    const structure = tree(form.toJSON());
    const forms = find(structure, (n) => n.tag === 'wx-form');
    assert.equal(forms.length, 1, 'one <form> inside pushhub-form');
    assert.equal(forms[0].attrs.reportSubmit, 'true', '<form report-submit="true">');
    const buttons = find(forms[0], (n) => n.tag === 'wx-button' && n.attrs.formType === 'submit');
    if (!buttons.length) {
      root.querySelector('.buy').dispatchEvent('tap');
      await settle();
      return null;
    }
    const formId = 'simulated-formid-' + ++nextFormId;
    form.querySelector('.pushhub-form__overlay').dispatchEvent('tap');
    const formNode = form.querySelector('.pushhub-form')._exparserNode;
    exparser.Event.dispatchEvent(formNode, exparser.Event.create('submit', { formId, value: {} }, { bubbles: false, composed: false }));
    await settle();
    return formId;
  }

  it('renders the content in a report-submit form under a transparent submit button', () => {
    simulate.render(formComponentId); // rendering the component itself injects its compiled wxss
    const page = renderPage();
    const { form } = page;
    const structure = tree(form.toJSON());
    const [wxForm] = find(structure, (n) => n.tag === 'wx-form');
    assert.equal(wxForm.attrs.reportSubmit, 'true');
    const wrap = wxForm.children[0];
    assert.deepEqual(wrap.children.map((c) => c.tag), ['wx-view', 'wx-button']); // the slot's <view>, then the overlay
    assert.equal(wrap.children[0].attrs.class, 'buy');
    assert.equal(wrap.children[1].attrs.formType, 'submit');
    // The component's stylesheet makes the button cover the content and stay invisible.
    const css = Array.from(document.querySelectorAll('style')).map((s) => s.textContent).join('\n');
    assert.match(css, /pushhub-form__overlay[^{]*\{[^}]*position:\s*absolute/);
    assert.match(css, /pushhub-form__overlay[^{]*\{[^}]*opacity:\s*0/);
  });

  it('a tap submits a formId: the page gets submit with its dataset, the SDK uploads it through the wx it was given', async () => {
    const pushhub = makePushHub();
    const page = renderPage();
    const { events } = page;
    const formId = await submitByTap(page);

    assert.equal(events.submit.length, 1);
    assert.deepEqual(events.submit[0].detail, { formId, value: {} });
    assert.equal(events.submit[0].currentTarget.dataset.id, '42');
    assert.equal(events.innerTaps, 0, 'the overlay takes the tap');

    const r = await pushhub.flush();
    assertFlushed(r, 1);
    assert.equal(fakeWx.requestsTo('login', 'POST').length, 1);
    const uploads = fakeWx.requestsTo('formids', 'POST');
    assert.equal(uploads.length, 1);
    assert.deepEqual(uploads[0].data, { formids: [formId] });
    assert.match(uploads[0].header.Authorization, /^Session sess-1$/);
    assert.equal(simulateWxRequests.length, 0, 'nothing went through the global wx');
  });

  it('uploads by itself once batchSize formIds are buffered', async () => {
    makePushHub({ batchSize: 3 });
    const page = renderPage();
    const ids = [await submitByTap(page), await submitByTap(page)];
    assert.equal(fakeWx.requestsTo('formids').length, 0);
    ids.push(await submitByTap(page));
    await settle();
    assert.deepEqual(fakeWx.requestsTo('formids', 'POST').map((r) => r.data), [{ formids: ids }]);
  });

  it('disabled: no overlay, the content gets the tap, nothing is collected; enabling it brings the overlay back', async () => {
    const pushhub = makePushHub();
    const page = renderPage({ off: true });
    const { root, form, events } = page;
    assert.equal(form.querySelector('.pushhub-form__overlay'), undefined);
    assert.equal(await submitByTap(page), null);
    assert.equal(events.innerTaps, 1);
    assert.equal(events.submit.length, 0);
    assertFlushed(await pushhub.flush(), 0);
    assert.equal(fakeWx.requests.length, 0);

    root.setData({ off: false });
    const formId = await submitByTap(page);
    assert.ok(formId);
    await pushhub.flush();
    assert.deepEqual(fakeWx.requestsTo('formids', 'POST').map((r) => r.data), [{ formids: [formId] }]);
  });

  // The contract (shared/API.md "SDK"): prepay_ids go to POST formids as {"prepay_ids": [...]}.
  it('kind="prepay": the id is uploaded as a prepay_id to the formids route', async () => {
    const pushhub = makePushHub();
    const page = renderPage({ kind: 'prepay' });
    const { events } = page;
    const id = await submitByTap(page);
    assert.equal(events.submit.length, 1);
    await pushhub.flush();
    assert.deepEqual(fakeWx.requests.filter((r) => r.method === 'POST' && r.path !== 'login').map((r) => [r.path, r.data]), [
      ['formids', { prepay_ids: [id] }],
    ]);
  });

  it('kind="prepay" collects the id as a prepay_id, not as a formId', async () => {
    const pushhub = makePushHub();
    const collected = [];
    pushhub.collect = (v) => collected.push(['formid', v]);
    pushhub.collectPrepayId = (v) => collected.push(['prepay', v]);
    const page = renderPage({ kind: 'prepay' });
    const id = await submitByTap(page);
    assert.deepEqual(collected, [['prepay', id]]);
  });

  describe('the component running from another copy of the SDK (uni-app wxcomponents/, Taro)', () => {
    let distDir;
    let distComponentId;

    before(() => {
      distDir = fs.mkdtempSync(path.join(os.tmpdir(), 'pushhub-dist-'));
      require(path.join(SDK_DIR, 'scripts/build.js')).build(distDir);
      distComponentId = simulate.load(path.join(distDir, 'pushhub-form/index'), 'pushhub-form');
    });

    after(() => {
      fs.rmSync(distDir, { recursive: true, force: true });
    });

    for (const [where, app] of [
      ['getApp().globalData.pushhub (uni-app App.vue globalData)', (p) => ({ globalData: { pushhub: p } })],
      ['getApp().pushhub (native App({pushhub}), Taro taroGlobalData)', (p) => ({ pushhub: p })],
    ]) {
      it('finds the app\'s instance at ' + where, async () => {
        const pushhub = makePushHub();
        globalThis.getApp = () => app(pushhub);
        const page = renderPage({}, distComponentId);
        const { events } = page;
        const formId = await submitByTap(page);
        assert.equal(events.submit.length, 1);
        await pushhub.flush();
        assert.deepEqual(fakeWx.requestsTo('formids', 'POST').map((r) => r.data), [{ formids: [formId] }]);
      });
    }

    it('without an instance anywhere, still passes the tap on and warns', async (t) => {
      const warn = t.mock.method(console, 'warn', () => {});
      globalThis.getApp = () => ({ globalData: {} });
      const page = renderPage({}, distComponentId);
      const { events } = page;
      const formId = await submitByTap(page);
      assert.deepEqual(events.submit.map((e) => e.detail), [{ formId, value: {} }]);
      assert.equal(warn.mock.callCount(), 1);
    });
  });
});
