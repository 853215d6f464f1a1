'use strict';
const { describe, it, beforeEach, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const { APPID, useHarness, settle, formIds } = require('./fake-wx.js');

const h = useHarness({ beforeEach, afterEach });
const QUEUE_KEY = 'pushhub:queue:' + APPID;
const DAY = 86400000;

/** The lists of `kind` in each upload (every upload is POST formids; a request without that kind is skipped). */
function sentFormIds(fake, kind = 'formids') {
  return fake.requestsTo('formids').map((r) => r.data[kind]).filter(Boolean);
}

function storedIds(fake, kind = 'formids') {
  const q = fake.storage.get(QUEUE_KEY);
  return q ? q[kind].map((e) => e.v) : [];
}

describe('collecting formIds', () => {
  it('uploads as soon as batchSize (20) ids are buffered', async (t) => {
    t.mock.timers.enable({ apis: ['setTimeout'] });
    const ph = h.make();
    const ids = formIds(20);
    ids.slice(0, 19).forEach((id) => assert.equal(ph.collect(id), true));
    await settle();
    assert.equal(h.wx.requestsTo('formids').length, 0);
    ph.collect(ids[19]);
    await settle();
    assert.deepEqual(sentFormIds(h.wx), [ids]);
    assert.equal(h.wx.storage.has(QUEUE_KEY), false);
  });

  it('honours a custom batchSize', async (t) => {
    t.mock.timers.enable({ apis: ['setTimeout'] });
    const ph = h.make({ batchSize: 3 });
    formIds(2).forEach((id) => ph.collect(id));
    await settle();
    assert.equal(h.wx.requestsTo('formids').length, 0);
    // the 3rd id starts an upload; it drains everything buffered by then, 3 per request
    formIds(7).forEach((id) => ph.collect(id));
    await settle();
    assert.deepEqual(sentFormIds(h.wx).map((b) => b.length), [3, 3, 1]);
  });

  it('uploads a partial batch after flushInterval', async (t) => {
    t.mock.timers.enable({ apis: ['setTimeout'] });
    const ph = h.make();
    ph.collect('a1');
    ph.collect('a2');
    t.mock.timers.tick(4999);
    await settle();
    assert.equal(h.wx.requestsTo('formids').length, 0);
    t.mock.timers.tick(1);
    await settle();
    assert.deepEqual(sentFormIds(h.wx), [['a1', 'a2']]);
  });

  it('honours a custom flushInterval', async (t) => {
    t.mock.timers.enable({ apis: ['setTimeout'] });
    const ph = h.make({ flushInterval: 1000 });
    ph.collect('a1');
    t.mock.timers.tick(1000);
    await settle();
    assert.deepEqual(sentFormIds(h.wx), [['a1']]);
  });

  it('does not keep timers running when idle', async (t) => {
    t.mock.timers.enable({ apis: ['setTimeout'] });
    const ph = h.make();
    ph.collect('a1');
    t.mock.timers.tick(5000);
    await settle();
    assert.equal(ph._timer, null);
    const before = h.wx.requests.length;
    for (let i = 0; i < 100; i++) {
      t.mock.timers.tick(60000);
      await settle(2);
    }
    assert.equal(h.wx.requests.length, before);
    assert.equal(ph._timer, null);
  });

  it('uploads on wx.onAppHide', async (t) => {
    t.mock.timers.enable({ apis: ['setTimeout'] });
    const ph = h.make();
    ph.collect('a1');
    assert.equal(h.wx.hideHandlers.length, 1);
    h.wx.hide();
    await settle();
    assert.deepEqual(sentFormIds(h.wx), [['a1']]);
  });

  it('does nothing on app hide when the buffer is empty', async () => {
    h.make();
    h.wx.hide();
    await settle();
    assert.equal(h.wx.requests.length, 0);
  });

  it('ignores the developer tools mock formId, empty and non-string values', async () => {
    const ph = h.make({ debug: false });
    for (const v of [undefined, null, '', '   ', 'the formId is a mock one', 'requestFormId:fail timeout',
      42, {}, [], 'x'.repeat(500)]) {
      assert.equal(ph.collect(v), false, String(v));
    }
    const r = await ph.flush();
    assert.deepEqual(r, { ok: true, data: { sent: 0, accepted: 0, duplicates: 0, rejected: [], dropped: 0, pending: 0 } });
    assert.equal(h.wx.requests.length, 0);
    assert.equal(h.wx.loginCalls, 0);
  });

  it('logs ignored values in debug mode', async (t) => {
    const log = t.mock.method(console, 'log', () => {});
    const ph = h.make({ debug: true });
    ph.collect('the formId is a mock one');
    assert.ok(log.mock.calls.some((c) => c.arguments.join(' ').includes('mock')));
  });

  it('deduplicates within the buffer', async () => {
    const ph = h.make();
    assert.equal(ph.collect('a1'), true);
    assert.equal(ph.collect('a1'), false);
    assert.equal(ph.collect(' a1 '), false);
    ph.collect('a2');
    await ph.flush();
    assert.deepEqual(sentFormIds(h.wx), [['a1', 'a2']]);
  });

  it('deduplicates against an upload in flight', async (t) => {
    t.mock.timers.enable({ apis: ['setTimeout'] }); // the hung request's guard timer
    h.wx.respond('POST', 'formids', { hang: true });
    const ph = h.make();
    ph.collect('a1');
    ph.flush();
    await settle();
    assert.equal(h.wx.requestsTo('formids').length, 1);
    assert.equal(ph.collect('a1'), false);
  });

  it('flush() resolves with the server counts', async () => {
    h.wx.respond('POST', 'formids', {
      status: 200, body: { accepted: 1, duplicates: 1, rejected: [{ formid: 'bad', reason: 'malformed' }] },
    });
    const ph = h.make();
    ['a1', 'a2', 'bad'].forEach((id) => ph.collect(id));
    const r = await ph.flush();
    assert.deepEqual(r, {
      ok: true,
      data: { sent: 3, accepted: 1, duplicates: 1, rejected: [{ formid: 'bad', reason: 'malformed' }], dropped: 0, pending: 0 },
    });
  });

  it('keeps ids of a failed upload in the buffer and in storage, and sends them later', async () => {
    h.wx.respond('POST', 'formids', { status: 503, body: { error: { code: 'unavailable', message: 'down' } } });
    const ph = h.make();
    ph.collect('a1');
    ph.collect('a2');
    const r = await ph.flush();
    assert.equal(r.ok, false);
    assert.equal(r.error.code, 'unavailable');
    assert.deepEqual(storedIds(h.wx), ['a1', 'a2']);
    assert.equal(h.wx.requestsTo('formids').length, 4); // first try + 3 retries

    h.wx.respond('POST', 'formids', { status: 200, body: { accepted: 3, duplicates: 0, rejected: [] } });
    ph.collect('a3');
    const r2 = await ph.flush();
    assert.equal(r2.ok, true);
    assert.deepEqual(sentFormIds(h.wx).at(-1), ['a1', 'a2', 'a3']);
    assert.equal(h.wx.storage.has(QUEUE_KEY), false);
  });

  it('persists the buffer at once so an app kill loses nothing, and restores it on start', async (t) => {
    t.mock.timers.enable({ apis: ['setTimeout'] });
    const first = h.make();
    first.collect('a1');
    first.collectPrepayId('p1');
    assert.deepEqual(storedIds(h.wx), ['a1']);
    assert.deepEqual(storedIds(h.wx, 'prepay_ids'), ['p1']);
    first.destroy(); // "killed" before its timer fired

    const second = h.make();
    assert.equal(second.collect('a1'), false); // restored, so a duplicate
    t.mock.timers.tick(5000);
    await settle();
    assert.deepEqual(h.wx.requestsTo('formids').map((r) => r.data), [{ formids: ['a1'], prepay_ids: ['p1'] }]);
    assert.equal(h.wx.storage.has(QUEUE_KEY), false);
  });

  it('keeps ids that were in flight when the app was killed', async (t) => {
    t.mock.timers.enable({ apis: ['setTimeout'] }); // the hung request's guard timer
    h.wx.respond('POST', 'formids', { hang: true });
    const ph = h.make();
    ph.collect('a1');
    ph.flush();
    await settle();
    ph.collect('a2');
    assert.deepEqual(storedIds(h.wx).sort(), ['a1', 'a2']);
  });

  it('drops restored ids older than 7 days', async () => {
    const now = Date.now();
    h.wx.storage.set(QUEUE_KEY, {
      formids: [{ v: 'old', t: now - 8 * DAY }, { v: 'fresh', t: now - DAY }, { v: '' }, null, 'junk'],
      prepay_ids: 'not a list',
    });
    const ph = h.make();
    await ph.flush();
    assert.deepEqual(sentFormIds(h.wx), [['fresh']]);
  });

  it('survives garbage in storage', async () => {
    h.wx.storage.set(QUEUE_KEY, 'garbage');
    h.wx.storage.set('pushhub:session:' + APPID, 12);
    const ph = h.make();
    assert.equal((await ph.me()).ok, true);
  });

  it('never sends more than 100 ids per request', async () => {
    const ph = h.make({ batchSize: 500 }); // clamped to 100
    const ids = formIds(250);
    ids.forEach((id) => ph.collect(id)); // the 100th id starts an upload
    await ph.flush();
    const batches = sentFormIds(h.wx);
    assert.deepEqual(batches.map((b) => b.length), [100, 100, 50]);
    assert.deepEqual(batches.flat(), ids);
  });

  it('sends prepay_ids to POST formids as prepay_ids, in the same request as formIds', async () => {
    const ph = h.make();
    assert.equal(ph.collectPrepayId('wx20141027200939'), true);
    ph.collect('f1');
    const r = await ph.flush();
    assert.deepEqual(r, { ok: true, data: { sent: 2, accepted: 2, duplicates: 0, rejected: [], dropped: 0, pending: 0 } });
    assert.deepEqual(h.wx.requests.filter((q) => q.path !== 'login').map((q) => [q.method, q.path, q.data]), [
      ['POST', 'formids', { formids: ['f1'], prepay_ids: ['wx20141027200939'] }],
    ]);
  });

  it('sends a request with prepay_ids only when no formId is buffered', async () => {
    const ph = h.make();
    ph.collectPrepayId('p1');
    assert.equal((await ph.flush()).ok, true);
    assert.deepEqual(h.wx.requestsTo('formids').map((q) => q.data), [{ prepay_ids: ['p1'] }]);
  });

  it('splits each kind into lists of at most batchSize, both kinds per request', async () => {
    const ph = h.make({ batchSize: 2 });
    ['p1', 'p2', 'p3'].forEach((id) => ph.collectPrepayId(id));
    ph.collect('f1');
    await ph.flush();
    await settle();
    assert.deepEqual(h.wx.requestsTo('formids').map((q) => q.data), [
      { formids: ['f1'], prepay_ids: ['p1', 'p2'] },
      { prepay_ids: ['p3'] },
    ]);
  });

  it('keeps both kinds of a failed upload and sends them together later', async () => {
    h.wx.respond('POST', 'formids', { status: 503, body: { error: { code: 'unavailable', message: 'down' } } });
    const ph = h.make({ maxRetries: 0 });
    ph.collect('f1');
    ph.collectPrepayId('p1');
    const r = await ph.flush();
    assert.deepEqual(r.data, { sent: 0, accepted: 0, duplicates: 0, rejected: [], dropped: 0, pending: 2 });
    assert.deepEqual(storedIds(h.wx), ['f1']);
    assert.deepEqual(storedIds(h.wx, 'prepay_ids'), ['p1']);
    h.wx.respond('POST', 'formids', { status: 200, body: { accepted: 2, duplicates: 0, rejected: [] } });
    assert.equal((await ph.flush()).ok, true);
    assert.deepEqual(h.wx.requestsTo('formids').at(-1).data, { formids: ['f1'], prepay_ids: ['p1'] });
    assert.equal(h.wx.storage.has(QUEUE_KEY), false);
  });

  it('keeps the ids when the upload route answers 404, and says so in the result and on the console', async (t) => {
    const warn = t.mock.method(console, 'warn', () => {});
    const log = t.mock.method(console, 'log', () => {});
    // What PushHub answers for a route it does not have (e.g. an SDK newer than the server).
    h.wx.respond('POST', 'formids', { status: 404, body: { error: { code: 'not_found', message: 'Not found.' } } });
    const ph = h.make({ debug: true });
    ph.collect('f1');
    ph.collectPrepayId('p1');
    const r = await ph.flush();
    assert.deepEqual(r, {
      ok: false,
      error: { code: 'not_found', message: 'Not found.', status: 404 },
      data: { sent: 0, accepted: 0, duplicates: 0, rejected: [], dropped: 0, pending: 2 },
    });
    assert.equal(h.wx.requestsTo('formids').length, 1); // not retried at once...
    assert.deepEqual(storedIds(h.wx), ['f1']); // ...but kept
    assert.deepEqual(storedIds(h.wx, 'prepay_ids'), ['p1']);
    assert.equal(warn.mock.callCount(), 1);
    assert.match(warn.mock.calls[0].arguments[0],
      /POST https:\/\/push\.example\.com\/sdk\/v1\/wx0123456789abcdef\/formids answered 404 \(not_found: Not found\.\)/);
    assert.ok(log.mock.calls.some((c) => /upload failed \(not_found, HTTP 404\), 2 ids kept/.test(c.arguments.join(' '))));

    await ph.flush(); // still 404: one warning per instance is enough
    assert.equal(warn.mock.callCount(), 1);
    h.wx.respond('POST', 'formids', { status: 200, body: { accepted: 2, duplicates: 0, rejected: [] } });
    const later = await ph.flush(); // the server is fixed: nothing was lost
    assert.equal(later.data.sent, 2);
    assert.deepEqual(h.wx.requestsTo('formids').at(-1).data, { formids: ['f1'], prepay_ids: ['p1'] });
  });

  it('drops a batch the server refuses with a 4xx instead of retrying it forever', async () => {
    h.wx.respond('POST', 'formids', { status: 400, body: { error: { code: 'validation_error', message: 'no' } } });
    const ph = h.make();
    ph.collect('a1');
    ph.collectPrepayId('p1');
    const r = await ph.flush();
    assert.equal(r.ok, false);
    assert.equal(r.error.code, 'validation_error');
    assert.equal(r.data.dropped, 2);
    assert.equal(r.data.pending, 0);
    assert.equal(h.wx.requestsTo('formids').length, 1);
    assert.equal(h.wx.storage.has(QUEUE_KEY), false);
  });

  it('keeps the buffer when login fails', async (t) => {
    const warn = t.mock.method(console, 'warn', () => {});
    h.wx.respond('POST', 'login', { status: 404, body: { error: { code: 'not_found', message: 'No such mini-program.' } } });
    const ph = h.make();
    ph.collect('a1');
    const r = await ph.flush();
    assert.equal(r.ok, false);
    assert.equal(r.error.code, 'not_found');
    assert.equal(r.data.pending, 1);
    assert.deepEqual(storedIds(h.wx), ['a1']);
    assert.match(warn.mock.calls[0].arguments[0], /\/login answered 404 \(not_found: No such mini-program\.\)/);
  });

  it('serialises concurrent flushes', async () => {
    const ph = h.make();
    ph.collect('a1');
    const [r1, r2, r3] = await Promise.all([ph.flush(), ph.flush(), ph.flush()]);
    [r1, r2, r3].forEach((r) => assert.equal(r.ok, true));
    assert.deepEqual(sentFormIds(h.wx), [['a1']]);
    assert.equal(h.wx.loginCalls, 1);
  });

  it('uploads ids collected while an upload is running', async () => {
    const ph = h.make();
    ph.collect('a1');
    const p = ph.flush();
    ph.collect('a2');
    await p;
    await settle();
    assert.deepEqual(sentFormIds(h.wx).flat(), ['a1', 'a2']);
  });
});
