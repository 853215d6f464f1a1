'use strict';
const { describe, it, beforeEach, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const { APPID, useHarness, serveDefaults, createFakeWx } = require('./fake-wx.js');

const h = useHarness({ beforeEach, afterEach });
const SESSION_KEY = 'pushhub:session:' + APPID;
const DAY = 86400000;

describe('login and session', () => {
  it('logs in once with the wx.login code and reuses the session', async () => {
    const ph = h.make();
    const me1 = await ph.me();
    const me2 = await ph.me();
    assert.equal(me1.ok, true);
    assert.equal(me2.ok, true);
    assert.equal(h.wx.loginCalls, 1);
    const logins = h.wx.requestsTo('login');
    assert.equal(logins.length, 1);
    assert.deepEqual(logins[0].data, { code: 'code-1' });
    assert.equal(logins[0].header.Authorization, undefined);
    for (const r of h.wx.requestsTo('me')) assert.equal(r.header.Authorization, 'Session sess-1');
  });

  it('stores the session under a key namespaced by appid and reuses it after a restart', async () => {
    const first = h.make();
    await first.me();
    const stored = h.wx.storage.get(SESSION_KEY);
    assert.equal(stored.session, 'sess-1');
    assert.equal(stored.openid, 'openid-1');
    assert.match(stored.expires_at, /Z$/);
    first.destroy();

    const second = h.make(); // a new app launch: same storage, empty memory
    const r = await second.me();
    assert.equal(r.ok, true);
    assert.equal(h.wx.loginCalls, 1);
    assert.equal(h.wx.requestsTo('me').at(-1).header.Authorization, 'Session sess-1');
  });

  it('logs in again when the stored session is within a day of expiring', async () => {
    let now = Date.now();
    const ph = h.make({ now: () => now });
    await ph.me();
    now += 29 * DAY + 60000; // 30-day session, less than a day left
    await ph.me();
    assert.equal(h.wx.loginCalls, 2);
    assert.equal(h.wx.requestsTo('me').at(-1).header.Authorization, 'Session sess-2');
  });

  it('keeps using a session with more than a day left', async () => {
    let now = Date.now();
    const ph = h.make({ now: () => now });
    await ph.me();
    now += 28 * DAY;
    await ph.me();
    assert.equal(h.wx.loginCalls, 1);
  });

  it('ignores a stored session made for another server', async () => {
    h.wx.storage.set(SESSION_KEY, {
      session: 'other', openid: 'x', expires_at: '2999-01-01T00:00:00Z', refreshAt: Date.now() + 10 * DAY,
      server: 'https://elsewhere.example.com',
    });
    const ph = h.make();
    await ph.me();
    assert.equal(h.wx.loginCalls, 1);
  });

  it('shares one in-flight login between concurrent callers', async () => {
    const ph = h.make();
    const results = await Promise.all([ph.me(), ph.setPushEnabled(true), ph.login(), ph.me()]);
    results.forEach((r) => assert.equal(r.ok, true));
    assert.equal(h.wx.loginCalls, 1);
    assert.equal(h.wx.requestsTo('login').length, 1);
  });

  it('on 401 drops the session, logs in again and repeats the call once', async () => {
    h.wx.respond('GET', 'me',
      { status: 401, body: { error: { code: 'not_authenticated', message: 'expired' } } },
      { status: 200, body: { openid: 'openid-1', push_enabled: true, formid_credits: 0, subscribe_credits: {}, long_term: [], next_expiry: null } });
    const ph = h.make();
    const r = await ph.me();
    assert.equal(r.ok, true);
    assert.equal(h.wx.loginCalls, 2);
    const calls = h.wx.requestsTo('me');
    assert.equal(calls.length, 2);
    assert.equal(calls[0].header.Authorization, 'Session sess-1');
    assert.equal(calls[1].header.Authorization, 'Session sess-2');
    assert.equal(h.wx.storage.get(SESSION_KEY).session, 'sess-2');
  });

  it('gives up after one repeat when the new session is refused too', async () => {
    h.wx.respond('GET', 'me', { status: 401, body: { error: { code: 'not_authenticated', message: 'no' } } });
    const ph = h.make();
    const r = await ph.me();
    assert.equal(r.ok, false);
    assert.equal(r.error.code, 'not_authenticated');
    assert.equal(r.error.status, 401);
    assert.equal(h.wx.requestsTo('me').length, 2);
    assert.equal(h.wx.loginCalls, 2);
  });

  it('retries login once with a fresh code on invalid_code', async () => {
    const fake = h.wx;
    fake.respond('POST', 'login',
      { status: 400, body: { error: { code: 'invalid_code', message: 'code been used' } } },
      { status: 200, body: { session: 'good', openid: 'o', expires_at: new Date(Date.now() + 30 * DAY).toISOString() } });
    const ph = h.make();
    const r = await ph.login();
    assert.deepEqual(r, { ok: true, data: { openid: 'o', expires_at: r.data.expires_at } });
    assert.deepEqual(fake.requestsTo('login').map((q) => q.data.code), ['code-1', 'code-2']);
  });

  it('does not retry invalid_code more than once', async () => {
    h.wx.respond('POST', 'login', { status: 400, body: { error: { code: 'invalid_code', message: 'bad' } } });
    const ph = h.make();
    const r = await ph.me();
    assert.equal(r.ok, false);
    assert.equal(r.error.code, 'invalid_code');
    assert.equal(h.wx.requestsTo('login').length, 2);
    assert.equal(h.wx.requestsTo('me').length, 0);
  });

  it('reports a wx.login failure without calling the server, with WeChat\'s errno', async () => {
    // wx.login's fail callback gets {errMsg, errno} (miniprogram-api-typings LoginFailCallbackErr).
    h.wx.loginQueue.push({ fail: { errMsg: 'login:fail network error', errno: 600001 } });
    const ph = h.make();
    const r = await ph.me();
    assert.deepEqual(r, { ok: false, error: { code: 'login_failed', message: 'login:fail network error', errno: 600001 } });
    assert.equal(h.wx.requests.length, 0);
  });

  it('leaves errno out when WeChat gives none (base library < 2.24.0), and reads no errCode', async () => {
    h.wx.loginQueue.push({ fail: { errMsg: 'login:fail', errCode: -1 } });
    const r = await h.make().login();
    assert.deepEqual(r, { ok: false, error: { code: 'login_failed', message: 'login:fail' } });
  });

  it('login({force: true}) replaces a valid session', async () => {
    const ph = h.make();
    await ph.login();
    const r = await ph.login({ force: true });
    assert.equal(r.ok, true);
    assert.equal(h.wx.loginCalls, 2);
    assert.equal(h.wx.storage.get(SESSION_KEY).session, 'sess-2');
  });

  it('copes with a missing or unparseable expires_at', async () => {
    h.wx.respond('POST', 'login', { status: 200, body: { session: 's', openid: 'o' }, offContract: true });
    let now = Date.now();
    const ph = h.make({ now: () => now });
    assert.equal((await ph.me()).ok, true);
    now += 20 * DAY;
    assert.equal((await ph.me()).ok, true);
    assert.equal(h.wx.loginCalls, 1);
  });

  it('reports a login answer without a session as bad_response', async () => {
    h.wx.respond('POST', 'login', { status: 200, body: { openid: 'o' }, offContract: true });
    const r = await h.make().login();
    assert.equal(r.ok, false);
    assert.equal(r.error.code, 'bad_response');
  });

  it('keeps sessions of different appids apart', async () => {
    const other = 'wxfedcba9876543210';
    const fake = serveDefaults(createFakeWx());
    fake.respond('POST', 'login', { status: 200, body: { session: 'x', openid: 'o', expires_at: '2999-01-01T00:00:00Z' } });
    const a = h.make({ wx: fake, appid: other });
    await a.login();
    assert.ok(fake.storage.has('pushhub:session:' + other));
    assert.ok(!fake.storage.has(SESSION_KEY));
    assert.match(fake.requests[0].url, /\/sdk\/v1\/wxfedcba9876543210\/login$/);
  });
});
