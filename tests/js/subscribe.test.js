'use strict';
const { describe, it, beforeEach, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const { useHarness } = require('./fake-wx.js');

const h = useHarness({ beforeEach, afterEach });

describe('subscribe', () => {
  it('asks in groups of 3 + 2 and posts the merged results', async () => {
    h.wx.subscribeQueue.push(
      { success: { errMsg: 'requestSubscribeMessage:ok', T1: 'accept', T2: 'reject', T3: 'accept' } },
      { success: { errMsg: 'requestSubscribeMessage:ok', T4: 'ban', T5: 'filter' } });
    const ph = h.make();
    const r = await ph.subscribe(['T1', 'T2', 'T3', 'T4', 'T5']);
    assert.deepEqual(h.wx.subscribeCalls, [{ tmplIds: ['T1', 'T2', 'T3'] }, { tmplIds: ['T4', 'T5'] }]);
    const posts = h.wx.requestsTo('subscriptions');
    assert.equal(posts.length, 1);
    const results = { T1: 'accept', T2: 'reject', T3: 'accept', T4: 'ban', T5: 'filter' };
    assert.deepEqual(posts[0].data, { results });
    assert.equal(posts[0].header.Authorization, 'Session sess-1');
    assert.ok(posts[0].header['Idempotency-Key']);
    assert.deepEqual(r, {
      ok: true,
      data: { results, credited: { T1: 1, T3: 1 }, ignored: [], unrequested: [] },
    });
  });

  it('calls wx.requestSubscribeMessage synchronously, inside the tap', () => {
    const ph = h.make();
    ph.subscribe(['T1']);
    assert.equal(h.wx.subscribeCalls.length, 1);
  });

  it('passes the server\'s ignored ids through', async () => {
    h.wx.respond('POST', 'subscriptions', { status: 200, body: { credited: {}, ignored: ['T9'] } });
    const r = await h.make().subscribe(['T9']);
    assert.deepEqual(r.data.ignored, ['T9']);
  });

  it('resolves ok:false with WeChat\'s errCode and calls no server when WeChat fails', async () => {
    // requestSubscribeMessage's fail callback gets {errMsg, errCode} (RequestSubscribeMessageFailCallbackResult).
    h.wx.subscribeQueue.push({ fail: { errMsg: 'requestSubscribeMessage:fail main switch is off', errCode: 20004 } });
    const r = await h.make().subscribe(['T1', 'T2']);
    assert.deepEqual(r, {
      ok: false,
      error: { code: 'subscribe_failed', message: 'requestSubscribeMessage:fail main switch is off', errCode: 20004 },
    });
    assert.equal(h.wx.requests.length, 0);
    assert.equal(h.wx.loginCalls, 0);
  });

  it('leaves errCode out when WeChat gives none', async () => {
    h.wx.subscribeQueue.push({ fail: { errMsg: 'requestSubscribeMessage:fail cancel' } });
    const r = await h.make().subscribe(['T1']);
    assert.deepEqual(r.error, { code: 'subscribe_failed', message: 'requestSubscribeMessage:fail cancel' });
  });

  it('reports what it could when a later group fails (no new tap)', async () => {
    h.wx.subscribeQueue.push(
      { success: { errMsg: 'requestSubscribeMessage:ok', T1: 'accept', T2: 'accept', T3: 'reject' } },
      { fail: { errMsg: 'requestSubscribeMessage:fail can only be invoked by user TAP gesture.', errCode: 20003 } });
    const r = await h.make().subscribe(['T1', 'T2', 'T3', 'T4', 'T5', 'T6', 'T7']);
    assert.equal(h.wx.subscribeCalls.length, 2);
    assert.equal(r.ok, true);
    assert.deepEqual(r.data.results, { T1: 'accept', T2: 'accept', T3: 'reject' });
    assert.deepEqual(r.data.unrequested, ['T4', 'T5', 'T6', 'T7']);
    assert.equal(r.data.error.errCode, 20003);
    assert.deepEqual(h.wx.requestsTo('subscriptions')[0].data.results, r.data.results);
  });

  it('ignores errMsg and unexpected keys and values in WeChat\'s answer', async () => {
    h.wx.subscribeQueue.push({ success: { errMsg: 'requestSubscribeMessage:ok', T1: 'accept', T2: 'weird', X: 'accept' } });
    const r = await h.make().subscribe(['T1', 'T2']);
    assert.deepEqual(h.wx.requestsTo('subscriptions')[0].data, { results: { T1: 'accept' } });
    assert.deepEqual(r.data.results, { T1: 'accept' });
  });

  it('deduplicates ids and accepts a single id string', async () => {
    await h.make().subscribe('T1');
    await h.make().subscribe(['T1', 'T1', ' T2 ', '', null, 3]);
    assert.deepEqual(h.wx.subscribeCalls.map((c) => c.tmplIds), [['T1'], ['T1', 'T2']]);
  });

  it('refuses an empty or invalid list', async () => {
    for (const bad of [undefined, null, [], [''], {}, 42]) {
      const r = await h.make().subscribe(bad);
      assert.equal(r.ok, false);
      assert.equal(r.error.code, 'invalid_argument');
    }
    assert.equal(h.wx.subscribeCalls.length, 0);
  });

  it('returns the answers with ok:false when the report fails', async () => {
    h.wx.respond('POST', 'subscriptions', { status: 400, body: { error: { code: 'validation_error', message: 'bad' } } });
    const r = await h.make().subscribe(['T1']);
    assert.equal(r.ok, false);
    assert.equal(r.error.code, 'validation_error');
    assert.deepEqual(r.data.results, { T1: 'accept' });
  });

  it('keeps one Idempotency-Key across retries of the same report', async () => {
    const ok = h.wx.routes.get('POST subscriptions').answers[0];
    h.wx.respond('POST', 'subscriptions', { status: 502, body: {} }, ok);
    const r = await h.make().subscribe(['T1']);
    assert.equal(r.ok, true);
    const [a, b] = h.wx.requestsTo('subscriptions');
    assert.equal(a.header['Idempotency-Key'], b.header['Idempotency-Key']);
  });
});
