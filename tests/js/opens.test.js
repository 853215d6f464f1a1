'use strict';
// Opens: the SDK reports the ph=<ref> of the message the mini-program was opened from (scenes 1014 and 1107),
// by itself on launch (wx.getLaunchOptionsSync) and on show (wx.onAppShow), once per ref; reportOpen() for
// pages. The query the app sees is never changed.
const { describe, it, beforeEach, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const { APPID, useHarness, settle } = require('./fake-wx.js');

const h = useHarness({ beforeEach, afterEach });
const REF = 'k3v9q2a1b';
const OTHER_REF = 'p0p0p0p0c';

function fromMessage(ref, scene = 1014, extra = {}) {
  return { scene, path: 'pages/order/index', query: { id: '1', ph: ref, ...extra } };
}

function opensSent() {
  return h.wx.requestsTo('opens', 'POST').map((r) => r.data.ref);
}

describe('opens reported by themselves', () => {
  it('reports the ref of a launch from a subscribe message (scene 1014), after logging in', async () => {
    h.wx.launchOptions = fromMessage(REF);
    h.make();
    await settle();
    assert.deepEqual(opensSent(), [REF]);
    const [login] = h.wx.requestsTo('login');
    const [open] = h.wx.requestsTo('opens');
    assert.ok(h.wx.requests.indexOf(login) < h.wx.requests.indexOf(open), 'the session comes first');
    assert.equal(open.header.Authorization, 'Session sess-1');
  });

  it('reports a launch from the service-notification list (scene 1107)', async () => {
    h.wx.launchOptions = fromMessage(REF, 1107);
    h.make();
    await settle();
    assert.deepEqual(opensSent(), [REF]);
  });

  it('reports an open on show, when the app was in the background', async () => {
    h.make();
    await settle();
    assert.deepEqual(opensSent(), []);
    h.wx.show(fromMessage(REF));
    await settle();
    assert.deepEqual(opensSent(), [REF]);
  });

  it('reports nothing for other scenes, or without ph', async () => {
    h.wx.launchOptions = fromMessage(REF, 1001); // the home screen, with a stray ph
    h.make();
    h.wx.show(fromMessage(REF, 1089)); // the recent list
    h.wx.show(fromMessage(REF, 1007)); // a shared card
    h.wx.show({ scene: 1014, path: 'pages/order/index', query: { id: '1' } }); // a message of an untracked template
    h.wx.show({ scene: 1014, path: 'pages/order/index' });
    h.wx.show();
    await settle();
    assert.deepEqual(opensSent(), []);
    assert.deepEqual(h.wx.requestsTo('login'), [], 'no login either');
  });

  it('reports nothing for a ph that cannot be a ref', async () => {
    h.make();
    for (const ph of ['', 'short', 'UPPERCASE1', 'has space1', 'x'.repeat(17), '{"a":1}']) h.wx.show(fromMessage(ph));
    h.wx.show({ scene: 1014, query: { ph: ['abcdefg1'] } });
    h.wx.show({ scene: 1014, query: 'ph=abcdefg1' });
    h.wx.show(null);
    await settle();
    assert.deepEqual(opensSent(), []);
  });

  it('reports a cold start once though launch and show both carry it', async () => {
    h.wx.launchOptions = fromMessage(REF);
    h.make();
    h.wx.show(fromMessage(REF)); // WeChat's onAppShow right after the launch, same entry
    await settle();
    h.wx.show(fromMessage(REF)); // and later again (back from the background, same query)
    await settle();
    assert.deepEqual(opensSent(), [REF]);
  });

  it('reports each ref once, also across launches', async () => {
    h.wx.launchOptions = fromMessage(REF);
    const first = h.make();
    await settle();
    first.destroy();
    h.make(); // the next launch of the same app, with the same entry (storage is kept)
    h.wx.show(fromMessage(OTHER_REF, 1107));
    await settle();
    assert.deepEqual(opensSent(), [REF, OTHER_REF]);
    assert.deepEqual(h.wx.storage.get('pushhub:opens:' + APPID), [REF, OTHER_REF]);
  });

  it('remembers the last 100 refs only', async () => {
    const refs = Array.from({ length: 105 }, (_, i) => 'ref' + String(i).padStart(5, '0'));
    h.make();
    for (const ref of refs) {
      h.wx.show(fromMessage(ref));
      await settle(5);
    }
    await settle();
    const kept = h.wx.storage.get('pushhub:opens:' + APPID);
    assert.equal(kept.length, 100);
    assert.deepEqual(kept, refs.slice(5));
    h.wx.show(fromMessage(refs[0])); // forgotten: reported again (the server counts it once anyway)
    await settle();
    assert.equal(opensSent().filter((r) => r === refs[0]).length, 2);
  });

  it('leaves the query the app sees as it was', async () => {
    const entry = fromMessage(REF);
    h.wx.launchOptions = () => entry;
    const shown = fromMessage(OTHER_REF);
    const appSees = [];
    h.wx.onAppShow((e) => appSees.push(e)); // the app's own handler, registered first
    h.make();
    h.wx.showHandlers.forEach((handler) => handler(shown));
    await settle();
    assert.deepEqual(entry.query, { id: '1', ph: REF });
    assert.deepEqual(shown.query, { id: '1', ph: OTHER_REF });
    assert.deepEqual(appSees[0].query, { id: '1', ph: OTHER_REF });
  });

  it('works when the SDK is created long after the launch', async () => {
    h.wx.launchOptions = fromMessage(REF);
    await settle(); // the app ran a while before creating the SDK
    h.make();
    await settle();
    assert.deepEqual(opensSent(), [REF]);
  });

  it('retries a transient failure, and not a 404', async () => {
    h.wx.respond(
      'POST',
      'opens',
      { network: 'timeout' },
      { status: 503, body: 'busy' },
      { status: 200, body: { opened: true } }
    );
    h.wx.launchOptions = fromMessage(REF);
    h.make();
    await settle(60);
    assert.deepEqual(opensSent(), [REF, REF, REF]);
    assert.deepEqual(h.wx.storage.get('pushhub:opens:' + APPID), [REF]);

    h.wx.respond('POST', 'opens', {
      status: 404,
      body: { error: { code: 'not_found', message: 'No such message for this user.' } },
    });
    h.wx.show(fromMessage(OTHER_REF));
    await settle(60);
    h.wx.show(fromMessage(OTHER_REF));
    await settle(60);
    assert.deepEqual(opensSent(), [REF, REF, REF, OTHER_REF], 'a 404 is final: sent once, never again');
  });

  it('keeps a ref whose report failed for good after the retries, for a later show', async () => {
    h.wx.respond('POST', 'opens', { network: 'offline' });
    h.wx.launchOptions = fromMessage(REF);
    h.make({ maxRetries: 1 });
    await settle(60);
    assert.deepEqual(opensSent(), [REF, REF]);
    assert.equal(h.wx.storage.has('pushhub:opens:' + APPID), false);
    h.wx.respond('POST', 'opens', { status: 200, body: { opened: true } });
    h.wx.show(fromMessage(REF));
    await settle(60);
    assert.deepEqual(opensSent(), [REF, REF, REF]);
  });

  it('stops listening after destroy()', async () => {
    const ph = h.make();
    ph.destroy();
    h.wx.show(fromMessage(REF));
    await settle();
    assert.deepEqual(opensSent(), []);
  });

  it('survives a wx whose getLaunchOptionsSync throws', async () => {
    h.wx.launchOptions = () => {
      throw new Error('not in this base library');
    };
    const ph = h.make();
    h.wx.show(fromMessage(REF));
    await settle();
    assert.deepEqual(opensSent(), [REF]);
    assert.equal((await ph.me()).ok, true);
  });
});

describe('reportOpen()', () => {
  it('takes a page query, or its ph', async () => {
    const ph = h.make();
    assert.deepEqual(await ph.reportOpen({ id: '1', ph: REF }), { ok: true, data: { opened: true } });
    assert.deepEqual(await ph.reportOpen(OTHER_REF), { ok: true, data: { opened: true } });
    assert.deepEqual(opensSent(), [REF, OTHER_REF]);
  });

  it('answers a repeat without a request', async () => {
    const ph = h.make();
    await ph.reportOpen(REF);
    assert.deepEqual(await ph.reportOpen({ ph: REF }), { ok: true, data: { opened: true, repeated: true } });
    assert.deepEqual(opensSent(), [REF]);
  });

  it('shares the request of an open being reported', async () => {
    h.wx.launchOptions = fromMessage(REF);
    const ph = h.make();
    const [a, b] = await Promise.all([ph.reportOpen(REF), ph.reportOpen({ ph: REF })]);
    assert.equal(a.ok && b.ok, true);
    assert.deepEqual(opensSent(), [REF]);
  });

  it('a page opened without ph is no error', async () => {
    const ph = h.make();
    assert.deepEqual(await ph.reportOpen({ id: '1' }), { ok: true, data: { opened: false } });
    assert.deepEqual(h.wx.requests, []);
  });

  it('refuses what cannot be a ref', async () => {
    const ph = h.make();
    for (const bad of [undefined, null, 42, '', 'NOT-A-REF', { ph: 7 }, { ph: 'x y z 1 2' }]) {
      const r = await ph.reportOpen(bad);
      assert.equal(r.ok, false, JSON.stringify(bad));
      assert.equal(r.error.code, 'invalid_argument');
    }
    assert.deepEqual(h.wx.requests, []);
  });

  it('passes not_found through', async () => {
    h.wx.respond('POST', 'opens', {
      status: 404,
      body: { error: { code: 'not_found', message: 'No such message for this user.' } },
    });
    const ph = h.make();
    const r = await ph.reportOpen(REF);
    assert.equal(r.ok, false);
    assert.deepEqual([r.error.code, r.error.status], ['not_found', 404]);
    const again = await ph.reportOpen(REF); // answered from storage: the same refusal, no request
    assert.deepEqual([again.ok, again.error.code, again.error.status], [false, 'not_found', 404]);
    assert.deepEqual(opensSent(), [REF]);
    assert.deepEqual(h.wx.storage.get('pushhub:opens:' + APPID), ['!' + REF]);
  });
});
