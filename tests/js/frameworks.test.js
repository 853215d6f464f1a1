'use strict';
// The SDK as uni-app and Taro mp-weixin builds run it: no global `wx` (the host API is passed as the `wx`
// option), or the framework's own API object — `uni`, `Taro` — passed instead.
//
// The stand-ins wrap the fake wx the way the frameworks wrap the real one:
// - Taro (@tarojs/shared processApis, mp-weixin): login, requestSubscribeMessage and request are promisified
//   and ALSO call the success/fail callbacks they are given; the promise they return rejects on failure even
//   when a fail callback was given. Storage and app events pass straight through. (Types: Taro's typings say
//   the same, login(option?): Promise<...>, request(option): RequestTask extends Promise; tsc checks `Taro`
//   against the SDK's option type in types.test.js.)
// - uni-app (promisify in uni-mp-weixin): with a success/fail/complete callback the call is passed through as
//   it is (callback style, no promise); without one it returns a promise.
const { describe, it, beforeEach, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const { APPID, SERVER, createFakeWx, serveDefaults, settle } = require('./fake-wx.js');

const PushHub = require('../../static/sdk/pushhub.js');

const ASYNC_APIS = ['request', 'login', 'requestSubscribeMessage'];
const PASS_THROUGH = ['getStorageSync', 'setStorageSync', 'removeStorageSync', 'onAppHide', 'offAppHide'];

function taroLike(w) {
  const taro = {};
  for (const key of ASYNC_APIS) {
    taro[key] = (options = {}) => {
      const obj = Object.assign({}, options);
      return new Promise((resolve, reject) => {
        obj.success = (res) => {
          if (options.success) options.success(res);
          resolve(res);
        };
        obj.fail = (res) => {
          if (options.fail) options.fail(res);
          reject(res);
        };
        w[key](obj);
      });
    };
  }
  for (const key of PASS_THROUGH) taro[key] = (...args) => w[key](...args);
  return taro;
}

function uniLike(w) {
  const uni = {};
  for (const key of ASYNC_APIS) {
    uni[key] = (options = {}) => {
      if (options.success || options.fail || options.complete) return w[key](options);
      return new Promise((resolve, reject) => {
        w[key](Object.assign({}, options, { success: resolve, fail: reject }));
      });
    };
  }
  for (const key of PASS_THROUGH) uni[key] = (...args) => w[key](...args);
  return uni;
}

const HOSTS = [
  ['wx passed in, no global wx', (w) => w],
  ['uni-app: uni', uniLike],
  ['Taro: Taro', taroLike],
];

for (const [name, wrap] of HOSTS) {
  describe('host API: ' + name, () => {
    let fake;
    let host;
    let instances;
    let unhandled;
    const onUnhandled = (reason) => unhandled.push(reason);

    beforeEach(() => {
      assert.equal(typeof globalThis.wx, 'undefined', 'no global wx in these tests');
      fake = serveDefaults(createFakeWx());
      host = wrap(fake);
      instances = [];
      unhandled = [];
      process.on('unhandledRejection', onUnhandled);
    });

    afterEach(async () => {
      instances.forEach((p) => p.destroy());
      await settle();
      process.off('unhandledRejection', onUnhandled);
      // A fake held to the server's schema (issue 14 part A) records what PushHub would have refused.
      assert.deepEqual(fake.violations || [], []);
    });

    function make(options = {}) {
      const p = new PushHub({ appid: APPID, server: SERVER, wx: host, flushInterval: 60000, sleep: () => Promise.resolve(), ...options });
      instances.push(p);
      return p;
    }

    it('every method works through it: login, collect + flush, me, setPushEnabled, subscribe, storage, app hide', async () => {
      const ph = make();
      assert.equal(ph.collect('f1'), true);
      const f = await ph.flush();
      assert.equal(f.ok, true);
      assert.deepEqual([f.data.sent, f.data.accepted, f.data.dropped], [1, 1, 0]);
      assert.deepEqual(fake.requestsTo('formids', 'POST')[0].data, { formids: ['f1'] });
      assert.equal((await ph.login()).ok, true);
      assert.equal((await ph.me()).data.openid, 'openid-1');
      assert.deepEqual(await ph.setPushEnabled(false), { ok: true, data: { push_enabled: false } });
      const s = await ph.subscribe(['T1']);
      assert.deepEqual(s.data.results, { T1: 'accept' });
      assert.equal(fake.loginCalls, 1, 'one wx.login, the session cached');
      assert.ok(fake.storage.get('pushhub:session:' + APPID).session, 'session stored through the host');
      ph.collect('f2');
      fake.hide(); // onAppHide registered through the host: flushes
      await settle();
      assert.deepEqual(fake.requestsTo('formids', 'POST').map((r) => r.data), [{ formids: ['f1'] }, { formids: ['f2'] }]);
      assert.deepEqual(unhandled, []);
    });

    it('failures resolve as results and leave no unhandled promise rejection', async () => {
      const ph = make({ maxRetries: 0 });
      fake.respond('POST', 'formids', { network: 'timeout' });
      ph.collect('f1');
      const r = await ph.flush();
      assert.equal(r.ok, false);
      assert.equal(r.error.code, 'network_error');

      fake.loginQueue.push({ fail: { errMsg: 'login:fail', errno: 1 } });
      const l = await ph.login({ force: true });
      assert.equal(l.ok, false);
      assert.equal(l.error.code, 'login_failed');

      fake.subscribeQueue.push({ fail: { errMsg: 'requestSubscribeMessage:fail', errCode: 20004 } });
      const s = await ph.subscribe(['T1']);
      assert.equal(s.ok, false);
      assert.equal(s.error.code, 'subscribe_failed');

      await settle();
      assert.deepEqual(unhandled, []);
    });
  });
}
