'use strict';
const { describe, it, beforeEach, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const { APPID, SERVER, useHarness, settle } = require('./fake-wx.js');

const h = useHarness({ beforeEach, afterEach });

function assertResult(r) {
  assert.equal(typeof r, 'object');
  assert.equal(typeof r.ok, 'boolean');
  if (r.ok) assert.ok('data' in r);
  else {
    assert.equal(typeof r.error.code, 'string');
    assert.equal(typeof r.error.message, 'string');
  }
}

/** Calls every public method; every promise must resolve and nothing may throw. */
async function callEverything(ph) {
  const sync = [
    () => ph.collect('f1'), () => ph.collect(undefined), () => ph.collect({ toString() { throw new Error('x'); } }),
    () => ph.collectPrepayId('p1'), () => ph.collectPrepayId(Symbol('s')),
  ];
  for (const fn of sync) assert.doesNotThrow(fn);
  const results = await Promise.all([
    ph.flush(), ph.me(), ph.setPushEnabled(false), ph.setPushEnabled('no'), ph.login(), ph.login({ force: true }),
    ph.subscribe(['T1', 'T2', 'T3', 'T4']), ph.subscribe(null),
  ]);
  results.forEach(assertResult);
  assert.doesNotThrow(() => ph.destroy());
  return results;
}

describe('me and settings', () => {
  it('me() returns the user\'s credits', async () => {
    const r = await h.make().me();
    assert.deepEqual(r, {
      ok: true,
      data: {
        openid: 'openid-1', push_enabled: true, formid_credits: 3, subscribe_credits: { T1: 2 }, long_term: [], next_expiry: null,
        // what the phone adds: wx.getSetting's main switch and "always" choices (the fake: on, none ticked)
        main_switch: true,
        templates: { T1: { left: 2, always: null, long_term: false, top_up: false } },
      },
    });
    const req = h.wx.requestsTo('me')[0];
    assert.equal(req.method, 'GET');
    assert.equal(req.url, SERVER + '/sdk/v1/' + APPID + '/me');
  });

  it('setPushEnabled(false) posts the setting', async () => {
    const r = await h.make().setPushEnabled(false);
    assert.deepEqual(r, { ok: true, data: { push_enabled: false } });
    assert.deepEqual(h.wx.requestsTo('settings')[0].data, { push_enabled: false });
  });

  it('setPushEnabled refuses a non-boolean without calling the server', async () => {
    const r = await h.make().setPushEnabled('false');
    assert.equal(r.error.code, 'invalid_argument');
    assert.equal(h.wx.requests.length, 0);
  });

  it('strips trailing slashes from server', async () => {
    await h.make({ server: SERVER + '//' }).me();
    assert.equal(h.wx.requests[0].url, SERVER + '/sdk/v1/' + APPID + '/login');
  });

  it('PushHub.shared() is the first instance created', () => {
    const a = h.make();
    h.make();
    assert.equal(h.PushHub.shared(), a);
    a.destroy();
    assert.equal(h.PushHub.shared(), null);
  });

  it('works without new', async () => {
    const ph = h.PushHub({ appid: APPID, server: SERVER });
    h.instances.push(ph);
    assert.ok(ph instanceof h.PushHub);
    assert.equal((await ph.me()).ok, true);
  });
});

describe('never throws, never rejects', () => {
  it('with wx missing', async () => {
    delete globalThis.wx;
    const ph = h.make();
    const results = await callEverything(ph);
    assert.equal(results[1].error.code, 'wx_unavailable');
  });

  it('with wx missing at start and appearing later', async () => {
    const fake = globalThis.wx;
    delete globalThis.wx;
    const ph = h.make();
    ph.collect('f1');
    assert.equal((await ph.flush()).ok, false);
    globalThis.wx = fake;
    assert.equal((await ph.flush()).ok, true);
    assert.deepEqual(fake.requestsTo('formids')[0].data, { formids: ['f1'] });
  });

  it('with every wx function throwing', async () => {
    const boom = () => { throw new Error('boom'); };
    globalThis.wx = {
      request: boom, login: boom, getStorageSync: boom, setStorageSync: boom, removeStorageSync: boom,
      requestSubscribeMessage: boom, onAppHide: boom, offAppHide: boom,
    };
    const results = await callEverything(h.make());
    assert.equal(results[1].error.code, 'wx_error');
  });

  it('with wx being garbage', async () => {
    globalThis.wx = { request: 1, login: 'x', getStorageSync: null };
    await callEverything(h.make());
  });

  it('with callbacks receiving garbage', async () => {
    globalThis.wx = {
      request: (o) => o.success(undefined),
      login: (o) => o.success(null),
      requestSubscribeMessage: (o) => o.success(null),
      getStorageSync: () => ({ session: 5 }),
      setStorageSync() {},
    };
    await callEverything(h.make());
  });

  it('with callbacks called twice or synchronously', async () => {
    globalThis.wx = Object.assign({}, h.wx, {
      request: (o) => {
        o.success({ statusCode: 200, data: o.url.endsWith('login') ? { session: 's', openid: 'o' } : {} });
        o.fail({ errMsg: 'late' });
      },
      login: (o) => { o.success({ code: 'c' }); o.success({ code: 'd' }); },
    });
    const results = await callEverything(h.make());
    assert.equal(results[1].ok, true);
  });

  it('with invalid options', async () => {
    const errors = [];
    const original = console.error;
    console.error = (m) => errors.push(m);
    try {
      for (const opts of [undefined, null, {}, { appid: 'wx1' }, { server: SERVER }, { appid: 5, server: 5 },
        { appid: APPID, server: 'push.example.com' }]) {
        const ph = h.PushHub(opts);
        const results = await callEverything(ph);
        results.forEach((r) => assert.equal(r.ok, false));
        assert.equal(results[0].error.code, 'invalid_config');
        assert.equal(ph.collect('f1'), false);
      }
    } finally {
      console.error = original;
    }
    assert.ok(errors.length >= 7);
    assert.equal(h.PushHub.shared(), null);
  });

  it('with odd numeric options', async (t) => {
    t.mock.timers.enable({ apis: ['setTimeout'] });
    const ph = h.make({ batchSize: 'x', flushInterval: -5, maxRetries: NaN, timeout: Infinity });
    ph.collect('f1');
    t.mock.timers.tick(0);
    await settle();
    assert.equal(h.wx.requestsTo('formids').length, 1);
  });
});
