'use strict';
// A scriptable stand-in for the parts of WeChat's `wx` global the SDK uses. No network, no timers:
// callbacks are delivered on the microtask queue, so tests can use mock.timers for setTimeout.
//
// The fake server knows only what the real one documents: tests/js/sdk-contract.json, generated from
// PushHub's OpenAPI schema by `python -m tests.sdk_contract` (tests/test_sdk_contract.py and `make test-js`
// fail when it is stale).
// - Scripting (respond) an operation the server does not have throws; so does scripting a status it does
//   not document for that operation, or a body it would not send, unless the answer says `offContract: true`
//   (a proxy's page, a deliberately broken server). 5xx, network errors and hangs are always allowed: they
//   come from the road, not from PushHub.
// - When the SDK calls an operation the server does not have, or sends a body it would refuse, the fake
//   answers what PushHub answers (404, 405, 400) and records it in `violations`; a header the operation does
//   not document is recorded and answered normally (PushHub ignores it; the SDK must not rely on it).
// - useHarness fails the test on any violation unless the test sets `h.wx.expectViolations = true` and
//   checks `h.wx.violations` itself.

const APPID = 'wx0123456789abcdef';
const SERVER = 'https://push.example.com';
const CONTRACT = require('./sdk-contract.json');

function clone(v) {
  return v === undefined ? undefined : JSON.parse(JSON.stringify(v));
}

function isObject(v) {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/** The contract's operation for "METHOD path", or undefined. */
function operation(method, path) {
  return CONTRACT.operations[method + ' ' + path];
}

/** What is wrong with a body against a documented shape ({properties, required, additional?}); '' if nothing. */
function shapeProblem(shape, body, closed) {
  if (!isObject(body)) return 'the body is not a JSON object';
  const missing = shape.required.filter((k) => !(k in body));
  if (missing.length) return 'missing ' + missing.join(', ');
  const extra = Object.keys(body).filter((k) => !shape.properties.includes(k));
  if (closed && extra.length) return 'fields the contract does not have: ' + extra.join(', ');
  if (shape.properties.length === 1 && shape.properties[0] === 'error') {
    const e = body.error;
    if (!isObject(e) || typeof e.code !== 'string' || typeof e.message !== 'string') {
      return 'error must be {code, message} strings';
    }
  }
  return '';
}

/** Why the server could never give this scripted answer to METHOD path; '' when it could. */
function answerProblem(method, path, answer) {
  if (!answer || typeof answer !== 'object' || answer.offContract || answer.network || answer.hang) return '';
  const status = answer.status || 200;
  if (status >= 500) return '';
  const shape = operation(method, path).responses[String(status)];
  if (shape === undefined) {
    return 'PushHub does not document HTTP ' + status + ' for ' + method + ' ' + path +
      ' (it documents ' + Object.keys(operation(method, path).responses).join(', ') + ')';
  }
  if (shape === null) return '';
  const problem = shapeProblem(shape, answer.body, true);
  return problem ? 'HTTP ' + status + ' body of ' + method + ' ' + path + ': ' + problem : '';
}

/** Why the server would refuse this request as sent (status + body of its answer), or null. */
function requestProblem(req) {
  const op = operation(req.method, req.path);
  if (!op) {
    const known = Object.keys(CONTRACT.operations).some((k) => k.endsWith(' ' + req.path));
    return known
      ? { status: 405, code: 'method_not_allowed', why: req.method + ' ' + req.path + ' is not an operation of PushHub' }
      : { status: 404, code: 'not_found', why: req.method + ' ' + req.path + ' is not a route of PushHub' };
  }
  const strayQuery = Object.keys(req.query).filter((q) => !(op.query || []).includes(q));
  if (strayQuery.length) {
    return { status: 400, code: 'validation_error', why: req.method + ' ' + req.path + ' takes no query parameter ' + strayQuery.join(', ') };
  }
  const headers = Object.keys(req.header).map((h) => h.toLowerCase());
  const allowed = ['content-type'].concat(op.session ? ['authorization'] : [], op.headers.map((h) => h.toLowerCase()));
  const stray = headers.filter((h) => !allowed.includes(h));
  if (stray.length) {
    // PushHub ignores it, but an SDK that sends it expects something the server does not do.
    return { status: null, why: req.method + ' ' + req.path + ' does not take header ' + stray.join(', ') };
  }
  if (op.request) {
    const problem = shapeProblem(op.request, req.data, !op.request.additional);
    if (problem) return { status: 400, code: 'validation_error', why: req.method + ' ' + req.path + ' body: ' + problem };
  } else if (req.data !== undefined) {
    return { status: 400, code: 'validation_error', why: req.method + ' ' + req.path + ' takes no body' };
  }
  return null;
}

function createFakeWx() {
  const fake = {
    requests: [], // {url, path, query, method, data, header}
    storage: new Map(),
    loginCalls: 0,
    loginQueue: [], // {code} | {fail: {errMsg, errno}} | {hang: true}
    subscribeCalls: [], // {tmplIds}
    subscribeQueue: [], // {success: {...}} | {fail: {errMsg, errCode}} | function(tmplIds)
    hideHandlers: [],
    showHandlers: [],
    // wx.getSetting's answer: {success: {subscriptionsSetting: {...}}} | {fail: {errMsg}} | {hang: true};
    // null: a device where the user never ticked "always" (mainSwitch on, no itemSettings).
    setting: null,
    getSettingCalls: [], // the options of each call, without callbacks
    // wx.getLaunchOptionsSync's answer (how the mini-program was launched); a function may throw.
    launchOptions: { scene: 1001, path: 'pages/index/index', query: {} },
    routes: new Map(), // "METHOD path" -> {responses: [], index}
    violations: [], // what the SDK sent that PushHub would refuse, or scripted answers it could never give
    expectViolations: false,
  };

  /**
   * Scripts answers for METHOD path (path relative to /sdk/v1/{appid}/, e.g. 'formids').
   * Each answer: {status, body, headers} | {network: 'errMsg', errno?} | {hang: true} | function(req) -> answer.
   * Answers are used in order; the last one repeats. Only operations of tests/js/sdk-contract.json can be
   * scripted, with statuses and bodies it documents (see the top of this file).
   */
  fake.respond = function (method, path, ...answers) {
    if (!operation(method, path)) {
      throw new Error('fake-wx: ' + method + ' ' + path + ' is not an operation of the PushHub server ' +
        '(tests/js/sdk-contract.json has ' + Object.keys(CONTRACT.operations).join(', ') + ')');
    }
    answers.forEach((answer) => {
      const problem = answerProblem(method, path, answer);
      if (problem) throw new Error('fake-wx: ' + problem + ' (mark a deliberate one offContract: true)');
    });
    fake.routes.set(method + ' ' + path, { answers, index: 0 });
    return fake;
  };

  fake.requestsTo = function (path, method) {
    return fake.requests.filter((r) => r.path === path && (!method || r.method === method));
  };

  fake.request = function (opts) {
    const m = /^https?:\/\/[^/]+\/sdk\/v1\/[^/]+\/([^?#]*)(?:\?([^#]*))?$/.exec(opts.url);
    const path = m ? m[1] : opts.url;
    // The query string, decoded (an operation's documented query parameters: sdk-contract.json `query`).
    const query = m && m[2] ? Object.fromEntries(new URLSearchParams(m[2])) : {};
    const req = { url: opts.url, path, query, method: opts.method || 'GET', data: clone(opts.data), header: clone(opts.header) || {} };
    fake.requests.push(req);
    const refused = requestProblem(req);
    const route = fake.routes.get(req.method + ' ' + path);
    let answer;
    if (refused) fake.violations.push(refused.why);
    if (refused && refused.status) {
      // What PushHub answers (ApiNotFoundMiddleware, DRF): the SDK must cope, and the test must hear of it.
      const messages = { 404: 'Not found.', 405: 'Method "' + req.method + '" not allowed.', 400: refused.why };
      answer = { status: refused.status, body: { error: { code: refused.code, message: messages[refused.status] } } };
    } else if (!route) {
      answer = { status: 500, body: '<h1>Server Error (500)</h1>' };
      fake.violations.push(req.method + ' ' + path + ' was called but the test scripted no answer for it');
    } else {
      answer = route.answers[Math.min(route.index, route.answers.length - 1)];
      route.index += 1;
    }
    if (typeof answer === 'function') {
      answer = answer(req);
      const problem = answerProblem(req.method, path, answer);
      if (problem) fake.violations.push('scripted answer: ' + problem);
    }
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

  fake.getSetting = function (opts) {
    fake.getSettingCalls.push({ withSubscriptions: opts.withSubscriptions });
    const next = clone(fake.setting) || { success: { subscriptionsSetting: { mainSwitch: true } } };
    const res = next.success && Object.assign({ errMsg: 'getSetting:ok', authSetting: {} }, next.success);
    queueMicrotask(() => {
      if (next.hang) return;
      if (next.fail) opts.fail && opts.fail(next.fail);
      // Without withSubscriptions WeChat leaves subscriptionsSetting out.
      else if (!opts.withSubscriptions) opts.success && opts.success({ errMsg: res.errMsg, authSetting: {} });
      else opts.success && opts.success(res);
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
  fake.onAppShow = function (fn) {
    fake.showHandlers.push(fn);
  };
  fake.offAppShow = function (fn) {
    fake.showHandlers = fake.showHandlers.filter((h) => h !== fn);
  };
  fake.getLaunchOptionsSync = function () {
    return typeof fake.launchOptions === 'function' ? fake.launchOptions() : clone(fake.launchOptions);
  };
  /** The app comes to the foreground: from the home screen by default, or with the given entry. */
  fake.show = function (entry) {
    const shown = entry || { scene: 1001, path: 'pages/index/index', query: {} };
    fake.showHandlers.slice().forEach((h) => h(clone(shown)));
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
    body: { openid: 'openid-1', push_enabled: true, formid_credits: 3, subscribe_credits: { T1: 2 }, long_term: [], next_expiry: null },
  }));
  fake.respond('POST', 'settings', (req) => ({ status: 200, body: { push_enabled: req.data.push_enabled } }));
  fake.respond('POST', 'opens', () => ({ status: 200, body: { opened: true } }));
  // The server checks user_hash (HMAC of the alias with the app's identity secret); here 'good-hash' passes.
  fake.respond('POST', 'identify', (req) => {
    if (req.data.alias !== null && req.data.user_hash !== 'good-hash') {
      return {
        status: 403,
        body: { error: { code: 'invalid_user_hash', message: 'user_hash is not the HMAC of this alias.', field: 'user_hash' } },
      };
    }
    return { status: 200, body: { alias: req.data.alias } };
  });
  // The in-app inbox: fake.inboxMessages (newest first, as the server orders them), paged like the server
  // (its `next` a URL carrying an opaque cursor, here the offset); marks apply to the user's ids only.
  fake.inboxMessages = [];
  fake.respond('GET', 'inbox', (req) => {
    const limit = Math.min(Number(req.query.limit) || 20, 100);
    const decoded = req.query.cursor ? Buffer.from(req.query.cursor, 'base64url').toString() : '0';
    const start = Number(decoded);
    if (!/^[0-9]+$/.test(decoded)) {
      return { status: 400, body: { error: { code: 'validation_error', message: 'bad cursor', field: 'cursor' } } };
    }
    const results = fake.inboxMessages.slice(start, start + limit);
    const more = start + limit < fake.inboxMessages.length;
    const cursor = Buffer.from(String(start + limit)).toString('base64url');
    return {
      status: 200,
      body: {
        results: clone(results),
        next: more ? SERVER + '/sdk/v1/' + APPID + '/inbox?cursor=' + cursor + '&limit=' + limit : null,
        unread: fake.inboxMessages.filter((m) => !m.read).length,
      },
    };
  });
  fake.respond('POST', 'inbox/read', (req) => {
    fake.inboxMessages.forEach((m) => {
      if (req.data.all === true || (req.data.ids || []).map(String).includes(m.id)) m.read = true;
    });
    return { status: 200, body: { unread: fake.inboxMessages.filter((m) => !m.read).length } };
  });
  return fake;
}

/** n inbox messages as the server shows them, newest first (ids n..1, one hour apart from `now`). */
function inboxMessages(n, now = Date.now()) {
  return Array.from({ length: n }, (_, i) => ({
    id: String(n - i),
    title: '订单发货 ' + (n - i),
    fields: [{ name: '订单号', value: 'A' + (n - i) }, { name: '商品', value: '键盘' }],
    page: 'pages/order/index?id=' + (n - i),
    sent_at: new Date(now - i * 3600000).toISOString().replace(/\.\d+Z$/, 'Z'),
    read: false,
  }));
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
    if (h.wx.violations.length && !h.wx.expectViolations) {
      throw new Error('the SDK and the fake left the PushHub contract (tests/js/sdk-contract.json):\n  ' +
        h.wx.violations.join('\n  '));
    }
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

module.exports = { APPID, SERVER, CONTRACT, createFakeWx, serveDefaults, settle, formIds, clone, useHarness, inboxMessages };
