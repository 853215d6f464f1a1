'use strict';
// The silent top-up (options.topUp) under WeChat's component test tool, miniprogram-simulate: a page with a
// <pushhub-form> and a plain bindtap handler wrapped in pushhub.tap(), tapped as a user would, with a fake
// wx.getSetting saying what the user chose "always" for. The rule under test: wx.requestSubscribeMessage is
// called only for templates listed in topUp that getSetting says the user always accepts (main switch not off),
// below the cap, not long-term, at most once per tap, inside the tap, and never when anything is unknown.
const { describe, it, before, after, beforeEach, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const { SDK_DIR, missing } = require('./tooling.js');
const { APPID, SERVER, createFakeWx, serveDefaults, settle } = require('./fake-wx.js');
const { installDom } = require('./simulate-dom.js');

const skip = missing('miniprogram-simulate', 'jsdom');

/** getSetting's answer when the user ticked "always" with these choices. */
function always(itemSettings, mainSwitch = true) {
  return { success: { subscriptionsSetting: { mainSwitch, itemSettings } } };
}

/** GET me's answer with these subscribe credits and long-term subscriptions. */
function meAnswer(subscribeCredits, longTerm) {
  const body = { openid: 'openid-1', push_enabled: true, formid_credits: 0, subscribe_credits: subscribeCredits, next_expiry: null };
  return { status: 200, body: { ...body, long_term: longTerm || [] } };
}

describe('silent top-up under miniprogram-simulate', { skip }, () => {
  let simulate;
  let exparser;
  let restoreDom;
  let formComponentId;
  let PushHub;
  let fakeWx;
  const instances = [];
  let nextFormId = 0;

  before(() => {
    restoreDom = installDom();
    simulate = require('miniprogram-simulate');
    exparser = require('miniprogram-exparser');
    PushHub = require(path.join(SDK_DIR, 'pushhub.js'));
    formComponentId = simulate.load(path.join(SDK_DIR, 'pushhub-form/index'), 'pushhub-form');
  });

  after(() => restoreDom());

  beforeEach(() => {
    fakeWx = serveDefaults(createFakeWx());
    fakeWx.setting = always({ T1: 'accept', T2: 'accept' });
    fakeWx.respond('GET', 'me', meAnswer({ T1: 1 }));
  });

  afterEach(() => {
    instances.splice(0).forEach((p) => p.destroy());
    assert.deepEqual(fakeWx.violations, []);
  });

  /** A PushHub with top-up on; `ready` logs in and learns the counts and the setting first (me()). */
  async function makePushHub(options = {}, { ready = true } = {}) {
    const p = new PushHub({ appid: APPID, server: SERVER, wx: fakeWx, flushInterval: 60000, topUp: ['T1', 'T2'], ...options });
    instances.push(p);
    if (ready) assert.equal((await p.me()).ok, true);
    await settle();
    fakeWx.subscribeCalls.length = 0;
    fakeWx.requests.length = 0;
    return p;
  }

  /**
   * A page with <pushhub-form bindsubmit="onBuy"> and <view class="plain" bindtap="onPlain">, where onPlain is
   * the page's handler wrapped in pushhub.tap() as the README shows. `onBuy` / `onPlain` run the given bodies.
   */
  function renderPage(pushhub, { onBuy = () => {}, onPlain = () => {} } = {}) {
    const events = { submit: [], plain: [] };
    const pageId = simulate.load({
      template:
        '<pushhub-form id="f" bindsubmit="onBuy"><view class="buy">Buy</view></pushhub-form>' +
        '<view class="plain" data-id="7" bindtap="onPlain">Plain</view>',
      usingComponents: { 'pushhub-form': formComponentId },
      methods: {
        onBuy(e) {
          events.submit.push(e);
          onBuy.call(this, e);
        },
        onPlain: pushhub.tap(function (e) {
          events.plain.push({ e, self: this });
          onPlain.call(this, e);
        }),
      },
    });
    const root = simulate.render(pageId);
    root.attach(document.createElement('parent-wrapper'));
    return { root, form: root.querySelector('#f'), events };
  }

  /** A tap on the pushhub-form: its overlay button submits the report-submit form (see simulate.test.js). */
  function tapForm({ form }) {
    form.querySelector('.pushhub-form__overlay').dispatchEvent('tap');
    const formNode = form.querySelector('.pushhub-form')._exparserNode;
    const formId = 'simulated-formid-' + ++nextFormId;
    exparser.Event.dispatchEvent(formNode, exparser.Event.create('submit', { formId, value: {} }, { bubbles: false, composed: false }));
  }

  /** A tap on the plain view; j-component delivers it asynchronously, so this waits for it. */
  async function tapPlain({ root }) {
    root.querySelector('.plain').dispatchEvent('tap');
    await settle();
  }

  const reports = () => fakeWx.requestsTo('subscriptions', 'POST').map((r) => r.data.results);

  it('always accepted: a form tap asks for the listed ids silently, inside the tap, and reports the answers', async () => {
    const pushhub = await makePushHub();
    const page = renderPage(pushhub);
    tapForm(page);
    // Synchronously, still inside the tap, after the page's own handler.
    assert.equal(page.events.submit.length, 1);
    assert.deepEqual(fakeWx.subscribeCalls, [{ tmplIds: ['T2', 'T1'] }]); // the emptiest first (T2: 0, T1: 1)
    await settle();
    assert.deepEqual(reports(), [{ T1: 'accept', T2: 'accept' }]);
    assert.ok(fakeWx.requestsTo('subscriptions')[0].header['Idempotency-Key']);
    assert.deepEqual(fakeWx.requestsTo('formids'), []); // the formId waits for its batch as before
    const me = await pushhub.me();
    assert.deepEqual(me.data.templates.T1, { left: 1, always: 'accept', long_term: false, top_up: true });
  });

  it('pushhub.tap(handler) on a plain bindtap: the handler gets the event and the page, then the top-up', async () => {
    const pushhub = await makePushHub();
    const order = [];
    const page = renderPage(pushhub, { onPlain: () => order.push(['handler', fakeWx.subscribeCalls.length]) });
    await tapPlain(page);
    assert.deepEqual(order, [['handler', 0]]); // the page's handler first: a dialog it asks for goes first
    assert.equal(page.events.plain.length, 1);
    assert.equal(page.events.plain[0].e.currentTarget.dataset.id, '7');
    assert.equal(typeof page.events.plain[0].self.setData, 'function', 'this is the page');
    assert.deepEqual(fakeWx.subscribeCalls.map((c) => c.tmplIds), [['T2', 'T1']]);
    await settle();
    assert.deepEqual(reports(), [{ T1: 'accept', T2: 'accept' }]);
  });

  it('tap() called inside a handler resolves to what it asked, the answers and what was credited', async () => {
    const pushhub = await makePushHub({ topUp: ['T1', 'T2', 'T3'] });
    // The handler-less form, as in `onTap(e) { pushhub.tap(); ... }`.
    const result = await pushhub.tap();
    assert.deepEqual(result, {
      ok: true,
      data: {
        requested: ['T2', 'T1'],
        results: { T2: 'accept', T1: 'accept' },
        credited: { T2: 1, T1: 1 },
        ignored: [],
        skipped: { T3: 'not_always' },
      },
    });
  });

  for (const [what, setting] of [
    ['the user always rejects', always({ T1: 'reject', T2: 'ban' })],
    ['the main switch is off', always({ T1: 'accept', T2: 'accept' }, false)],
    ['the user never ticked "always"', always(undefined)],
    ['getSetting fails', { fail: { errMsg: 'getSetting:fail' } }],
  ]) {
    it(`no call when ${what}: neither a form tap nor a bindtap`, async () => {
      fakeWx.setting = setting;
      const pushhub = await makePushHub();
      const page = renderPage(pushhub);
      tapForm(page);
      await tapPlain(page);
      await settle();
      assert.deepEqual(fakeWx.subscribeCalls, []);
      assert.deepEqual(reports(), []);
      assert.equal(page.events.submit.length + page.events.plain.length, 2, 'the page still gets its taps');
    });
  }

  it('no call for templates not listed in topUp, even when always accepted', async () => {
    fakeWx.setting = always({ T1: 'accept', T9: 'accept' });
    const pushhub = await makePushHub({ topUp: ['T2'] });
    const page = renderPage(pushhub);
    tapForm(page);
    await settle();
    assert.deepEqual(fakeWx.subscribeCalls, []);
    assert.deepEqual((await pushhub.tap()).data.skipped, { T2: 'not_always' });
  });

  it('no call at the cap (default 10; topUpMax), and the cap counts what the reports credited', async () => {
    fakeWx.respond('GET', 'me', meAnswer({ T1: 10, T2: 2 }));
    const pushhub = await makePushHub({ topUpMax: 3 });
    const page = renderPage(pushhub);
    await tapPlain(page); // T2: 2 → 3; T1 is over 3
    await settle();
    assert.deepEqual(fakeWx.subscribeCalls.map((c) => c.tmplIds), [['T2']]);
    await tapPlain(page); // T2 is now at 3 too: nothing to ask
    await settle();
    assert.deepEqual(fakeWx.subscribeCalls.map((c) => c.tmplIds), [['T2']]);
    assert.deepEqual((await pushhub.tap()).data.skipped, { T1: 'at_cap', T2: 'at_cap' });

    const byDefault = await makePushHub();
    fakeWx.respond('GET', 'me', meAnswer({ T1: 9, T2: 10 }));
    await byDefault.me();
    fakeWx.subscribeCalls.length = 0;
    assert.deepEqual((await byDefault.tap()).data.requested, ['T1']); // 9 → 10
    assert.deepEqual((await byDefault.tap()).data.skipped, { T1: 'at_cap', T2: 'at_cap' });
    assert.equal(fakeWx.subscribeCalls.length, 1);
  });

  it('never a long-term template (me\'s optional long_term), and never mixed with one-time ids', async () => {
    fakeWx.respond('GET', 'me', meAnswer({ T1: 0 }, ['T2']));
    const pushhub = await makePushHub();
    const page = renderPage(pushhub);
    tapForm(page);
    await settle();
    assert.deepEqual(fakeWx.subscribeCalls.map((c) => c.tmplIds), [['T1']]);
    const me = await pushhub.me();
    assert.deepEqual(me.data.templates.T2, { left: 0, always: 'accept', long_term: true, top_up: false });
  });

  it('at most once per tap: one tap one call, two taps two calls, a tap whose handler subscribes none of its own', async () => {
    const pushhub = await makePushHub();
    // The page's handler also calls pushhub.tap() itself (inside the wrapped one): still one call for the tap.
    const page = renderPage(pushhub, { onPlain: () => pushhub.tap(), onBuy: () => pushhub.subscribe(['T3']) });
    await tapPlain(page);
    assert.equal(fakeWx.subscribeCalls.length, 1);
    await tapPlain(page);
    assert.equal(fakeWx.subscribeCalls.length, 2);
    assert.equal(reports().length, 2);
    fakeWx.subscribeCalls.length = 0;

    // The page's own subscribe() dialog in its submit handler takes the tap: no top-up after it.
    tapForm(page);
    await settle();
    assert.deepEqual(fakeWx.subscribeCalls.map((c) => c.tmplIds), [['T3']]);
  });

  it('two top-ups in one synchronous turn make one call; the second reports tap_used', async () => {
    const pushhub = await makePushHub();
    const first = pushhub.tap();
    const second = pushhub.tap();
    assert.equal(fakeWx.subscribeCalls.length, 1);
    assert.deepEqual((await second).data, {
      requested: [], results: {}, credited: {}, ignored: [], skipped: { T1: 'tap_used', T2: 'tap_used' },
    });
    assert.equal((await first).data.requested.length, 2);
  });

  it('at most 3 ids per call, the emptiest first; the rest wait for the next tap', async () => {
    fakeWx.setting = always({ A: 'accept', B: 'accept', C: 'accept', D: 'accept' });
    fakeWx.respond('GET', 'me', meAnswer({ A: 3, B: 0, C: 2, D: 1 }));
    const pushhub = await makePushHub({ topUp: ['A', 'B', 'C', 'D'] });
    const r = await pushhub.tap();
    assert.deepEqual(r.data.requested, ['B', 'D', 'C']);
    assert.deepEqual(r.data.skipped, { A: 'next_tap' });
    assert.deepEqual(fakeWx.subscribeCalls, [{ tmplIds: ['B', 'D', 'C'] }]);
  });

  it('reads getSetting at start and after each call it makes; a later failure stops the top-up', async () => {
    const pushhub = await makePushHub();
    const reads = fakeWx.getSettingCalls.length;
    assert.ok(reads >= 1);
    assert.ok(fakeWx.getSettingCalls.every((c) => c.withSubscriptions === true));
    fakeWx.setting = { fail: { errMsg: 'getSetting:fail' } };
    await pushhub.tap(); // asks (the setting read before said accept), then reads getSetting again: it fails
    await settle();
    assert.equal(fakeWx.getSettingCalls.length, reads + 1);
    assert.equal(fakeWx.subscribeCalls.length, 1);
    const r = await pushhub.tap();
    assert.deepEqual(r.data.skipped, { T1: 'setting_unknown', T2: 'setting_unknown' });
    assert.equal(fakeWx.subscribeCalls.length, 1);

    // The user ticks "always" back while the app is in the background: read again when it shows.
    fakeWx.setting = always({ T1: 'accept' });
    fakeWx.show();
    await settle();
    assert.deepEqual((await pushhub.tap()).data.requested, ['T1']);
  });

  it('a reject answer for a template remembered as always accepted stops its top-up at once', async () => {
    const pushhub = await makePushHub({ timeout: 1000 });
    fakeWx.setting = { hang: true }; // WeChat has not answered the re-read yet
    fakeWx.subscribeQueue.push({ success: { errMsg: 'requestSubscribeMessage:ok', T1: 'accept', T2: 'reject' } });
    await pushhub.tap();
    const r = await pushhub.tap();
    assert.deepEqual(r.data.requested, ['T1']);
    assert.equal(r.data.skipped.T2, 'not_always');
  });

  it('not logged in, no counts yet: no call, no throw; the handler still runs and the counts are fetched', async () => {
    const pushhub = await makePushHub({}, { ready: false });
    const page = renderPage(pushhub);
    await tapPlain(page);
    tapForm(page);
    await settle();
    assert.deepEqual(fakeWx.subscribeCalls, []);
    assert.equal(page.events.plain.length, 1);
    assert.deepEqual((await pushhub.tap()).data.skipped, { T1: 'not_logged_in', T2: 'not_logged_in' });
    // The first login (here a flush of the form's formId) reads the counts by itself: the next tap tops up.
    await pushhub.flush();
    await settle();
    assert.equal(fakeWx.requestsTo('me').length, 1);
    assert.deepEqual((await pushhub.tap()).data.requested, ['T2', 'T1']);
  });

  it('without any PushHub, or with a bad topUp option: no throw, no call, handlers run', async (t) => {
    const error = t.mock.method(console, 'error', () => {});
    const orphan = PushHub.prototype.tap; // tap passed around unbound, before any new PushHub()
    assert.equal(PushHub.shared(), null);
    assert.deepEqual(await orphan(), { ok: false, error: { code: 'no_instance', message: 'create a PushHub instance in app.js first' } });
    let ran = 0;
    orphan(() => { ran += 1; })({ type: 'tap' });
    assert.equal(ran, 1);

    for (const bad of [{ topUp: 'T1' }, { topUp: ['T1', ''] }, { topUpMax: 0 }, { topUpMax: 2.5 }, { topUpMax: '10' }]) {
      const pushhub = await makePushHub(bad);
      const r = await pushhub.tap();
      assert.equal(r.ok, false);
      assert.equal(r.error.code, 'invalid_config');
      const page = renderPage(pushhub);
      tapForm(page);
      await tapPlain(page);
      await settle();
      assert.equal(page.events.plain.length, 1);
    }
    assert.equal(error.mock.callCount(), 5);
    assert.deepEqual(fakeWx.subscribeCalls, []);
  });
});
