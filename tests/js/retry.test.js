'use strict';
const { describe, it, beforeEach, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const { useHarness, settle } = require('./fake-wx.js');

const h = useHarness({ beforeEach, afterEach });
const OK_ME = {
  status: 200,
  body: { openid: 'openid-1', push_enabled: true, formid_credits: 0, subscribe_credits: {}, long_term: [], next_expiry: null },
};
const E429 = { error: { code: 'rate_limited', message: 'slow down' } };
const E503 = { status: 503, body: { error: { code: 'unavailable', message: 'down' } } };

describe('retries', () => {
  it('retries 5xx with exponential backoff and jitter', async () => {
    h.wx.respond('GET', 'me', E503, { status: 500, body: 'oops' }, E503, OK_ME);
    const ph = h.make();
    const r = await ph.me();
    assert.equal(r.ok, true);
    assert.equal(h.wx.requestsTo('me').length, 4);
    assert.equal(h.sleeps.length, 3);
    // attempt n waits between 0.5 and 1 x (1000 ms * 2^n)
    h.sleeps.forEach((ms, n) => {
      const exp = 1000 * 2 ** n;
      assert.ok(ms >= exp / 2 && ms <= exp, `sleep ${n} was ${ms}`);
    });
  });

  it('jitters with the random source', async () => {
    h.wx.respond('GET', 'me', E503, E503, OK_ME);
    const ph = h.make({ random: () => 0, retryDelay: 200 });
    await ph.me();
    assert.deepEqual(h.sleeps, [100, 200]);
  });

  it('retries network failures', async () => {
    h.wx.respond('GET', 'me', { network: 'timeout' }, { network: 'ssl' }, OK_ME);
    const r = await h.make().me();
    assert.equal(r.ok, true);
    assert.equal(h.sleeps.length, 2);
  });

  it('stops after maxRetries and reports the last error', async () => {
    h.wx.respond('GET', 'me', { network: 'offline' });
    const r = await h.make({ maxRetries: 2 }).me();
    assert.equal(r.ok, false);
    assert.equal(r.error.code, 'network_error');
    assert.match(r.error.message, /offline/);
    assert.equal(h.wx.requestsTo('me').length, 3);
  });

  it('passes wx.request\'s errno on with network_error', async () => {
    // wx.request's fail callback gets {errMsg, errno} (miniprogram-api-typings RequestFailCallbackErr).
    h.wx.respond('GET', 'me', { network: 'timeout', errno: 5 });
    const r = await h.make({ maxRetries: 0 }).me();
    assert.deepEqual(r, { ok: false, error: { code: 'network_error', message: 'request:fail timeout', errno: 5 } });
  });

  it('does not retry with maxRetries 0', async () => {
    h.wx.respond('GET', 'me', E503);
    const r = await h.make({ maxRetries: 0 }).me();
    assert.equal(r.error.code, 'unavailable');
    assert.equal(h.wx.requestsTo('me').length, 1);
  });

  it('waits Retry-After seconds on 429', async () => {
    h.wx.respond('GET', 'me',
      { status: 429, headers: { 'Retry-After': '7' }, body: { error: { code: 'rate_limited', message: 'slow down' } } },
      { status: 429, headers: { 'retry-after': '2' }, body: { error: { code: 'rate_limited', message: 'slow down' } } },
      OK_ME);
    const r = await h.make().me();
    assert.equal(r.ok, true);
    assert.equal(h.sleeps.length, 2);
    assert.ok(h.sleeps[0] >= 7000 && h.sleeps[0] <= 8000, String(h.sleeps[0]));
    assert.ok(h.sleeps[1] >= 2000 && h.sleeps[1] <= 3000, String(h.sleeps[1]));
  });

  it('backs off on 429 without Retry-After', async () => {
    h.wx.respond('GET', 'me', { status: 429, body: E429 }, OK_ME);
    const r = await h.make({ random: () => 1 }).me();
    assert.equal(r.ok, true);
    assert.deepEqual(h.sleeps, [1000]);
  });

  it('does not wait for a Retry-After longer than maxRetryAfter', async () => {
    h.wx.respond('GET', 'me', { status: 429, headers: { 'Retry-After': '3600' }, body: E429 });
    const r = await h.make().me();
    assert.equal(r.ok, false);
    assert.equal(r.error.code, 'rate_limited');
    assert.equal(r.error.retryAfter, 3600);
    assert.equal(h.sleeps.length, 0);
  });

  for (const status of [400, 403, 404, 413]) {
    it(`does not retry ${status}`, async (t) => {
      t.mock.method(console, 'warn', () => {}); // the 404 warning
      h.wx.respond('POST', 'settings', { status, body: { error: { code: 'nope', message: 'refused', field: 'push_enabled' } } });
      const r = await h.make().setPushEnabled(false);
      assert.deepEqual(r, { ok: false, error: { code: 'nope', message: 'refused', status, field: 'push_enabled' } });
      assert.equal(h.wx.requestsTo('settings').length, 1);
      assert.equal(h.sleeps.length, 0);
    });
  }

  it('does not retry 409', async () => {
    const mismatch = { error: { code: 'idempotency_mismatch', message: 'key reused' } };
    h.wx.respond('POST', 'subscriptions', { status: 409, body: mismatch });
    const r = await h.make().subscribe(['T1']);
    assert.deepEqual(r.error, { code: 'idempotency_mismatch', message: 'key reused', status: 409 });
    assert.equal(h.wx.requestsTo('subscriptions').length, 1);
    assert.equal(h.sleeps.length, 0);
  });

  it('names errors without a JSON body by status', async () => {
    // not PushHub's answer: a proxy's page in front of it
    h.wx.respond('GET', 'me', { status: 418, body: '<html>teapot</html>', offContract: true });
    const r = await h.make().me();
    assert.deepEqual(r.error, { code: 'http_error', message: 'HTTP 418', status: 418 });
  });

  it('retries the login request on 5xx too', async () => {
    const good = h.wx.routes.get('POST login').answers[0];
    h.wx.respond('POST', 'login', E503, good);
    const r = await h.make().login();
    assert.equal(r.ok, true);
    assert.equal(h.wx.loginCalls, 1);
  });

  it('really sleeps with setTimeout by default', async (t) => {
    t.mock.timers.enable({ apis: ['setTimeout'] });
    h.wx.respond('GET', 'me', E503, OK_ME);
    const ph = h.make({ sleep: undefined, random: () => 0 });
    let done = null;
    ph.me().then((r) => { done = r; });
    await settle();
    assert.equal(h.wx.requestsTo('me').length, 1);
    t.mock.timers.tick(499);
    await settle();
    assert.equal(h.wx.requestsTo('me').length, 1);
    t.mock.timers.tick(1);
    await settle();
    assert.equal(h.wx.requestsTo('me').length, 2);
    assert.equal(done.ok, true);
  });

  it('gives up on a request WeChat never answers', async (t) => {
    t.mock.timers.enable({ apis: ['setTimeout'] });
    h.wx.respond('GET', 'me', { hang: true });
    const ph = h.make({ maxRetries: 0, timeout: 5000 });
    let done = null;
    ph.me().then((r) => { done = r; });
    await settle();
    t.mock.timers.tick(7000);
    await settle();
    assert.equal(done.ok, false);
    assert.equal(done.error.code, 'network_error');
  });
});
