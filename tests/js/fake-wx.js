'use strict';
// A scriptable stand-in for the parts of WeChat's `wx` global the SDK uses. No network, no timers:
// callbacks are delivered on the microtask queue, so tests can use mock.timers for setTimeout.

const APPID = 'wx0123456789abcdef';
const SERVER = 'https://push.example.com';

function clone(v) {
  return v === undefined ? undefined : JSON.parse(JSON.stringify(v));
}

function createFakeWx() {
  const fake = {
    requests: [], // {url, path, method, data, header}
    storage: new Map(),
    loginCalls: 0,
    loginQueue: [], // {code} | {fail: {errMsg, errno}} | {hang: true}
    subscribeCalls: [], // {tmplIds}
    subscribeQueue: [], // {success: {...}} | {fail: {errMsg, errCode}} | function(tmplIds)
    hideHandlers: [],
    routes: new Map(), // "METHOD path" -> {responses: [], index}
  };

  /**
   * Scripts answers for METHOD path (path relative to /sdk/v1/{appid}/, e.g. 'formids').
   * Each answer: {status, body, headers} | {network: 'errMsg', errno?} | {hang: true} | function(req) -> answer.
   * Answers are used in order; the last one repeats.
   */
  fake.respond = function (method, path, ...answers) {
    fake.routes.set(method + ' ' + path, { answers, index: 0 });
    return fake;
  };

  fake.requestsTo = function (path, method) {
    return fake.requests.filter((r) => r.path === path && (!method || r.method === method));
  };

  fake.request = function (opts) {
    const m = /^https?:\/\/[^/]+\/sdk\/v1\/[^/]+\/(.*)$/.exec(opts.url);
    const path = m ? m[1] : opts.url;
    const req = { url: opts.url, path, method: opts.method || 'GET', data: clone(opts.data), header: clone(opts.header) || {} };
    fake.requests.push(req);
    const route = fake.routes.get(req.method + ' ' + path);
    let answer;
    if (!route) {
      answer = { status: 404, body: { error: { code: 'not_found', message: 'no route ' + path } } };
    } else {
      answer = route.answers[Math.min(route.index, route.answers.length - 1)];
      route.index += 1;
    }
    if (typeof answer === 'function') answer = answer(req);
    queueMicrotask(() => {
      if (answer.hang) return;
      if (answer.network) {
        const err = { errMsg: 'request:fail ' + answer.network };
        if (answer.errno !== undefined) err.errno = answer.errno;
        opts.fail && opts.fail(err);
        return;
      }
      opts.success && opts.success({ statusCode: answer.status || 200, data: clone(answer.body), header: answer.headers || {} });
    });
    return { abort() {} };
  };

  fake.login = function (opts) {
    fake.loginCalls += 1;
    const n = fake.loginCalls;
    const next = fake.loginQueue.length ? fake.loginQueue.shift() : { code: 'code-' + n };
    queueMicrotask(() => {
      if (next.hang) return;
      if (next.fail) opts.fail && opts.fail(next.fail);
      else opts.success && opts.success({ errMsg: 'login:ok', code: next.code });
    });
  };

  fake.requestSubscribeMessage = function (opts) {
    fake.subscribeCalls.push({ tmplIds: opts.tmplIds.slice() });
    let next = fake.subscribeQueue.length ? fake.subscribeQueue.shift() : null;
    if (typeof next === 'function') next = next(opts.tmplIds);
    if (!next) {
      const res = { errMsg: 'requestSubscribeMessage:ok' };
      opts.tmplIds.forEach((id) => { res[id] = 'accept'; });
      next = { success: res };
    }
    queueMicrotask(() => {
      if (next.fail) opts.fail && opts.fail(next.fail);
      else opts.success && opts.success(next.success);
    });
  };

  // Storage behaves like WeChat's: values are copied, a missing key reads as ''.
  fake.getStorageSync = function (key) {
    return fake.storage.has(key) ? clone(fake.storage.get(key)) : '';
  };
  fake.setStorageSync = function (key, value) {
    fake.storage.set(key, clone(value));
  };
  fake.removeStorageSync = function (key) {
    fake.storage.delete(key);
  };

  fake.onAppHide = function (fn) {
    fake.hideHandlers.push(fn);
  };
  fake.offAppHide = function (fn) {
    fake.hideHandlers = fake.hideHandlers.filter((h) => h !== fn);
  };
  fake.hide = function () {
    fake.hideHandlers.slice().forEach((h) => h({}));
  };

  return fake;
}

/** A PushHub server that answers every SDK endpoint successfully. */
function serveDefaults(fake, now = Date.now()) {
  let sessions = 0;
  fake.respond('POST', 'login', () => {
    sessions += 1;
    return {
      status: 200,
      body: { session: 'sess-' + sessions, openid: 'openid-1', expires_at: new Date(now + 30 * 86400000).toISOString() },
    };
  });
  fake.respond('POST', 'formids', (req) => ({
    status: 200,
    body: { accepted: (req.data.formids || []).length + (req.data.prepay_ids || []).length, duplicates: 0, rejected: [] },
  }));
  fake.respond('POST', 'subscriptions', (req) => {
    const credited = {};
    Object.keys(req.data.results).forEach((k) => {
      if (req.data.results[k] === 'accept') credited[k] = 1;
    });
    return { status: 200, body: { credited, ignored: [] } };
  });
  fake.respond('GET', 'me', () => ({
    status: 200,
    body: { openid: 'openid-1', push_enabled: true, formid_credits: 3, subscribe_credits: { T1: 2 }, next_expiry: null },
  }));
  fake.respond('POST', 'settings', (req) => ({ status: 200, body: { push_enabled: req.data.push_enabled } }));
  return fake;
}

/** Lets every pending callback and promise chain run (setImmediate is not faked by the tests). */
async function settle(rounds = 30) {
  for (let i = 0; i < rounds; i++) await new Promise((resolve) => setImmediate(resolve));
}

/** Formats a list of distinct fake formIds. */
function formIds(n, prefix = 'f') {
  return Array.from({ length: n }, (_, i) => prefix + String(i).padStart(4, '0'));
}

/**
 * Per-test setup for a test file: a fresh fake `wx` global serving defaults before each test, and
 * every PushHub made through h.make() destroyed after it. h.make() records backoff sleeps in
 * h.sleeps and resolves them at once (pass {sleep: undefined} to use the SDK's real setTimeout sleep).
 */
function useHarness(hooks) {
  const PushHub = require('../../static/sdk/pushhub.js');
  const h = { PushHub, wx: null, instances: [], sleeps: [] };
  hooks.beforeEach(() => {
    h.wx = serveDefaults(createFakeWx());
    globalThis.wx = h.wx;
    h.instances = [];
    h.sleeps = [];
  });
  hooks.afterEach(() => {
    h.instances.forEach((p) => p.destroy());
    delete globalThis.wx;
  });
  h.make = (opts = {}) => {
    const p = new PushHub({
      appid: APPID,
      server: SERVER,
      sleep: (ms) => {
        h.sleeps.push(ms);
        return Promise.resolve();
      },
      ...opts,
    });
    h.instances.push(p);
    return p;
  };
  return h;
}

module.exports = { APPID, SERVER, createFakeWx, serveDefaults, settle, formIds, clone, useHarness };
