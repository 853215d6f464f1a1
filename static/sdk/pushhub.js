/*!
 * PushHub mini-program SDK v1.0.0
 *
 * Plain CommonJS for WeChat mini-programs (ES2017, no build step, no dependencies).
 * Copy this file into your mini-program and require it from app.js:
 *
 *   const PushHub = require('./pushhub/pushhub.js');
 *   const pushhub = new PushHub({ appid: 'wx0123456789abcdef', server: 'https://push.example.com' });
 *
 * Contract: every asynchronous public method returns a Promise that always RESOLVES, to
 * {ok: true, data} or {ok: false, error: {code, message, ...}}. Synchronous methods never throw.
 * The SDK must never crash the host app, so every entry point is guarded.
 */
'use strict';

var VERSION = '1.0.0';
var DAY = 24 * 60 * 60 * 1000;
var SESSION_DAYS = 30; // the contract's session lifetime, used when expires_at is unusable
var FORMID_TTL = 7 * DAY; // a formId / prepay_id is worthless after 7 days
var MAX_PER_REQUEST = 100; // the server accepts 1..100 ids per call
var MAX_QUEUE = 1000; // bound on buffered ids per kind (storage is small: 1 MB per key)
var MAX_ID_LENGTH = 128;
var SUBSCRIBE_GROUP = 3; // ids per wx.requestSubscribeMessage call that WeChat accepts everywhere
var SUBSCRIBE_VALUES = { accept: 1, reject: 1, ban: 1, filter: 1 };
var ALWAYS_VALUES = { accept: 1, reject: 1, ban: 1 }; // wx.getSetting's itemSettings: the user's "always" choice
var TOP_UP_MAX = 10; // default cap: known sends per template above which the SDK stops topping up
var TOP_UP_MAX_LIMIT = 1000;
var KINDS = ['formids', 'prepay_ids'];
// Opens: the service-notification scenes (1014 a subscribe / template message, 1107 the same from the
// "service notifications" list), the query parameter the server adds to a sent message's page, and how many
// reported refs are remembered (so a ref is reported once, also across launches).
var OPEN_SCENES = { 1014: 1, 1107: 1 };
var OPEN_QUERY = 'ph';
var OPEN_REF = /^[0-9a-z]{7,16}$/;
var MAX_REMEMBERED_OPENS = 100;

var firstInstance = null;

// ---------------------------------------------------------------------------------------------
// small helpers

function ok(data) {
  return { ok: true, data: data };
}

function fail(code, message, extra) {
  var error = { code: code, message: message || code };
  if (extra) {
    Object.keys(extra).forEach(function (k) {
      if (extra[k] !== undefined) error[k] = extra[k];
    });
  }
  return { ok: false, error: error };
}

function errText(e) {
  try {
    if (e && e.message) return String(e.message);
    if (e && e.errMsg) return String(e.errMsg);
    return String(e);
  } catch (ignored) {
    return 'unknown error';
  }
}

/**
 * WeChat's own error numbers from a fail callback, as WeChat names them (miniprogram-api-typings):
 * wx.login and wx.request give {errMsg, errno} (base library >= 2.24.0), wx.requestSubscribeMessage
 * gives {errMsg, errCode}. Only numbers are passed on; a field WeChat did not send is left out.
 */
function wxNumbers(err, names) {
  var out = {};
  names.forEach(function (name) {
    var v = err && typeof err === 'object' ? err[name] : undefined;
    if (typeof v === 'number' && isFinite(v)) out[name] = v;
  });
  return out;
}

function globalWx() {
  try {
    // eslint-disable-next-line no-undef
    if (typeof wx !== 'undefined' && wx) return wx;
  } catch (ignored) {
    // a hostile environment; fall through
  }
  return null;
}

// uni-app's and Taro's API objects (passed as options.wx) return a promise from calls that also take
// callbacks, and Taro's rejects on failure even when a fail callback handled it: mark it handled, so the
// host app gets no unhandled rejection from the SDK.
function settleQuietly(returned) {
  try {
    if (returned && typeof returned.then === 'function') returned.then(null, function () {});
  } catch (ignored) {
    // an odd thenable must not break the call
  }
}

function toInt(value, fallback, min, max) {
  var n = Number(value);
  if (value === undefined || value === null || value === '' || !isFinite(n)) return fallback;
  n = Math.floor(n);
  if (n < min) return min;
  if (n > max) return max;
  return n;
}

function parseBody(raw) {
  if (typeof raw === 'string') {
    try {
      return raw ? JSON.parse(raw) : null;
    } catch (ignored) {
      return raw;
    }
  }
  return raw === undefined ? null : raw;
}

function headerValue(headers, name) {
  if (!headers || typeof headers !== 'object') return undefined;
  var want = name.toLowerCase();
  var keys = Object.keys(headers);
  for (var i = 0; i < keys.length; i++) {
    if (keys[i].toLowerCase() === want) return headers[keys[i]];
  }
  return undefined;
}

function randomId() {
  var s = '';
  for (var i = 0; i < 4; i++) s += Math.floor(Math.random() * 0x100000000).toString(16);
  return s;
}

function statusCode(status) {
  if (status === 401) return 'not_authenticated';
  if (status === 403) return 'permission_denied';
  if (status === 404) return 'not_found';
  if (status === 429) return 'rate_limited';
  if (status >= 500) return 'server_error';
  return 'http_error';
}

/**
 * options.topUp / options.topUpMax, checked: {ids, max, error}. A mistake disables the top-up only (with a
 * console error): the rest of the SDK does not depend on it.
 */
function topUpOptions(topUp, topUpMax) {
  var out = { ids: [], max: TOP_UP_MAX, error: '' };
  if (topUp !== undefined && topUp !== null) {
    var valid = Array.isArray(topUp) && topUp.every(function (id) { return typeof id === 'string' && id.trim(); });
    if (!valid) {
      out.error = 'options.topUp must be an array of subscribe template ids';
      return out;
    }
    topUp.forEach(function (id) {
      if (out.ids.indexOf(id.trim()) === -1) out.ids.push(id.trim());
    });
  }
  if (topUpMax !== undefined && topUpMax !== null) {
    if (typeof topUpMax !== 'number' || Math.floor(topUpMax) !== topUpMax || topUpMax < 1 || topUpMax > TOP_UP_MAX_LIMIT) {
      out.error = 'options.topUpMax must be a whole number from 1 to ' + TOP_UP_MAX_LIMIT;
      out.ids = [];
      return out;
    }
    out.max = topUpMax;
  }
  return out;
}

/** wx.getSetting's subscriptionsSetting as {mainSwitch, items}, or null when it is not there (never guess). */
function subscriptionSetting(res) {
  var s = res && res.subscriptionsSetting;
  if (!s || typeof s !== 'object') return null;
  var items = {};
  var given = s.itemSettings && typeof s.itemSettings === 'object' ? s.itemSettings : {};
  Object.keys(given).forEach(function (id) {
    if (typeof given[id] === 'string' && ALWAYS_VALUES[given[id]]) items[id] = given[id];
  });
  return { mainSwitch: s.mainSwitch !== false, items: items };
}

// ---------------------------------------------------------------------------------------------
// the client

/**
 * @param {object} options
 * @param {string} options.appid           the mini-program's appid (wx + 16 hex)
 * @param {string} options.server          PushHub base URL, e.g. https://push.example.com
 * @param {boolean} [options.debug]        log what the SDK does (console.log)
 * @param {number} [options.batchSize=20]  upload when this many ids are buffered (1..100)
 * @param {number} [options.flushInterval=5000] upload buffered ids at most this many ms later
 * @param {number} [options.maxRetries=3]  retries after the first attempt (network, 5xx, 429)
 * @param {number} [options.retryDelay=1000] base of the exponential backoff, ms
 * @param {number} [options.maxRetryAfter=60000] a 429 asking to wait longer than this is not waited for
 * @param {number} [options.timeout=10000] wx.request timeout, ms
 * @param {string[]} [options.topUp]      subscribe template ids to top up silently in the user's taps
 * @param {number} [options.topUpMax=10]  no top-up for a template once the user has this many sends of it
 */
function PushHub(options) {
  if (!(this instanceof PushHub)) return new PushHub(options);
  this._timer = null;
  this._session = null;
  this._loginPromise = null;
  this._pending = { formids: [], prepay_ids: [] };
  this._inflight = { formids: [], prepay_ids: [] };
  this._flushTail = Promise.resolve();
  this._flushWaiting = null;
  this._destroyed = false;
  this._hideHandler = null;
  this._warned404 = false;
  this._showHandler = null;
  // Silent top-up (see the section of that name below).
  this._setting = null; // {mainSwitch, items: {TID: 'accept'|'reject'|'ban'}} from wx.getSetting; null: unknown
  this._settingSeq = 0;
  this._knownCredits = null; // {TID: sends}: me's subscribe_credits plus what reports added since; null: unknown
  this._longTerm = []; // me's optional long_term: templates this user is a standing subscriber of
  this._meInFlight = null;
  this._tapUsed = false; // the SDK called wx.requestSubscribeMessage in the current tap (synchronous turn)
  this._opensInFlight = {}; // ref -> the report's promise (launch and show of one open share it)
  this._openShowHandler = null;
  try {
    this._configure(options || {});
  } catch (e) {
    this._configError = 'invalid options: ' + errText(e);
  }
  if (this._configError) {
    try {
      if (typeof console !== 'undefined') console.error('[pushhub] ' + this._configError);
    } catch (ignored) {
      // nothing to do
    }
    return;
  }
  if (!firstInstance) firstInstance = this;
  this._restoreQueue();
  this._listenAppHide();
  this._startTopUp();
  this._startOpens();
}

PushHub.VERSION = VERSION;

/** The first PushHub instance created (and not destroyed); null if there is none. */
PushHub.shared = function () {
  return firstInstance;
};

var proto = PushHub.prototype;

proto._configure = function (o) {
  var appid = typeof o.appid === 'string' ? o.appid.trim() : '';
  var server = typeof o.server === 'string' ? o.server.trim().replace(/\/+$/, '') : '';
  if (!appid || /[\s/?#]/.test(appid)) {
    this._configError = 'options.appid must be your mini-program appid';
  } else if (!/^https?:\/\/[^\s/]+/.test(server)) {
    this._configError = 'options.server must be the PushHub URL, e.g. https://push.example.com';
  }
  this._appid = appid;
  this._server = server;
  this._debug = !!o.debug;
  this._batchSize = toInt(o.batchSize, 20, 1, MAX_PER_REQUEST);
  this._flushInterval = toInt(o.flushInterval, 5000, 0, 24 * 60 * 60 * 1000);
  this._maxRetries = toInt(o.maxRetries, 3, 0, 10);
  this._retryDelay = toInt(o.retryDelay, 1000, 0, 60000);
  this._maxRetryAfter = toInt(o.maxRetryAfter, 60000, 0, 24 * 60 * 60 * 1000);
  this._timeout = toInt(o.timeout, 10000, 1000, 120000);
  var topUp = topUpOptions(o.topUp, o.topUpMax);
  this._topUp = topUp.ids;
  this._topUpMax = topUp.max;
  this._topUpError = topUp.error;
  // Seams for tests and unusual hosts; not needed in a mini-program.
  this._wxOverride = o.wx || null;
  this._now = typeof o.now === 'function' ? o.now : function () { return Date.now(); };
  this._random = typeof o.random === 'function' ? o.random : Math.random;
  this._sleep = typeof o.sleep === 'function' ? o.sleep : function (ms) {
    return new Promise(function (resolve) { setTimeout(resolve, ms); });
  };
  this._sessionKey = 'pushhub:session:' + appid;
  this._queueKey = 'pushhub:queue:' + appid;
  this._opensKey = 'pushhub:opens:' + appid;
};

proto._wx = function () {
  return this._wxOverride || globalWx();
};

proto._log = function () {
  if (!this._debug) return;
  try {
    var args = Array.prototype.slice.call(arguments);
    args.unshift('[pushhub]');
    console.log.apply(console, args);
  } catch (ignored) {
    // logging must never fail the caller
  }
};

/**
 * A 404 from one of the SDK's own routes is a deployment mistake (options.server or appid wrong, a proxy
 * in the way, a server older than this SDK, the app unknown to PushHub): said once per instance on the
 * console, debug or not, since nothing else would show it until the pushes are missing.
 */
proto._warnNotFound = function (method, path, error) {
  this._log(method, path, 'answered 404:', error.code, error.message);
  if (this._warned404) return;
  this._warned404 = true;
  try {
    console.warn('[pushhub] ' + method + ' ' + this._url(path) + ' answered 404 (' + error.code + ': ' +
      error.message + '). Check options.server and options.appid, that this app is registered in PushHub ' +
      'and that the server is as recent as this SDK (' + VERSION + '). Buffered formIds and prepay_ids are kept.');
  } catch (ignored) {
    // logging must never fail the caller
  }
};

/** Runs fn and turns anything it does (value, rejection, throw) into a resolving result. */
proto._guard = function (fn) {
  var self = this;
  return new Promise(function (resolve) {
    if (self._configError) {
      resolve(fail('invalid_config', self._configError));
      return;
    }
    var p;
    try {
      p = fn.call(self);
    } catch (e) {
      self._log('internal error', e);
      resolve(fail('internal_error', errText(e)));
      return;
    }
    Promise.resolve(p).then(
      function (r) {
        resolve(r && typeof r.ok === 'boolean' ? publicResult(r) : ok(r));
      },
      function (e) {
        self._log('internal error', e);
        resolve(fail('internal_error', errText(e)));
      }
    );
  });
};

// Internal results carry bookkeeping (retryable, stage, status); the host sees {ok, data|error}.
function publicResult(r) {
  if (r.ok) return { ok: true, data: r.data };
  var out = { ok: false, error: r.error || { code: 'internal_error', message: 'unknown error' } };
  if (r.data !== undefined) out.data = r.data;
  return out;
}

// ---------------------------------------------------------------------------------------------
// storage

proto._read = function (key) {
  try {
    var w = this._wx();
    if (!w || typeof w.getStorageSync !== 'function') return null;
    var v = w.getStorageSync(key);
    return v === '' || v === undefined ? null : v;
  } catch (e) {
    this._log('getStorageSync failed', key, errText(e));
    return null;
  }
};

proto._write = function (key, value) {
  try {
    var w = this._wx();
    if (!w) return;
    if (value === null) {
      if (typeof w.removeStorageSync === 'function') w.removeStorageSync(key);
    } else if (typeof w.setStorageSync === 'function') {
      w.setStorageSync(key, value);
    }
  } catch (e) {
    this._log('storage write failed', key, errText(e));
  }
};

// ---------------------------------------------------------------------------------------------
// HTTP

proto._url = function (path) {
  return this._server + '/sdk/v1/' + encodeURIComponent(this._appid) + '/' + path;
};

/** One wx.request, settled exactly once (also if WeChat never calls back). */
proto._rawRequest = function (method, path, data, header) {
  var self = this;
  return new Promise(function (resolve) {
    var w = self._wx();
    if (!w || typeof w.request !== 'function') {
      resolve({ kind: 'fatal', code: 'wx_unavailable', message: 'wx.request is not available' });
      return;
    }
    var done = false;
    var guardTimer = null;
    var finish = function (r) {
      if (done) return;
      done = true;
      if (guardTimer !== null) clearTimeout(guardTimer);
      resolve(r);
    };
    guardTimer = setTimeout(function () {
      finish({ kind: 'network', message: 'request timed out' });
    }, self._timeout + 2000);
    var req = {
      url: self._url(path),
      method: method,
      header: header,
      timeout: self._timeout,
      dataType: 'json',
      success: function (res) {
        try {
          finish({
            kind: 'http',
            status: Number(res && res.statusCode) || 0,
            body: parseBody(res && res.data),
            headers: (res && res.header) || {},
          });
        } catch (e) {
          finish({ kind: 'network', message: errText(e) });
        }
      },
      fail: function (err) {
        finish({ kind: 'network', message: (err && err.errMsg) || 'request:fail', wx: wxNumbers(err, ['errno']) });
      },
    };
    if (data !== undefined) req.data = data;
    try {
      settleQuietly(w.request(req));
    } catch (e) {
      finish({ kind: 'fatal', code: 'wx_error', message: errText(e) });
    }
  });
};

/** Turns a raw answer into {ok, data} / {ok:false, error, status, retryable, retryAfterMs}. */
proto._classify = function (r) {
  if (r.kind === 'fatal') return { ok: false, retryable: false, error: { code: r.code, message: r.message } };
  if (r.kind === 'network') {
    var net = fail('network_error', r.message, r.wx).error;
    return { ok: false, retryable: true, transient: true, error: net };
  }
  var status = r.status;
  if (status >= 200 && status < 300) return { ok: true, status: status, data: r.body };
  var body = r.body;
  var e = body && typeof body === 'object' && body.error && typeof body.error === 'object' ? body.error : null;
  var error = {
    code: (e && typeof e.code === 'string' && e.code) || statusCode(status),
    message: (e && typeof e.message === 'string' && e.message) || 'HTTP ' + status,
    status: status,
  };
  if (e && e.field) error.field = e.field;
  var out = { ok: false, status: status, error: error, retryable: status === 429 || status >= 500 || status === 0 };
  out.transient = out.retryable;
  if (status === 429) {
    var ra = this._retryAfterMs(headerValue(r.headers, 'Retry-After'));
    if (ra !== null) {
      out.retryAfterMs = ra;
      error.retryAfter = Math.ceil(ra / 1000);
    }
  }
  return out;
};

proto._retryAfterMs = function (value) {
  if (value === undefined || value === null || value === '') return null;
  var n = Number(value);
  if (isFinite(n)) return Math.max(0, n * 1000);
  var t = Date.parse(String(value));
  if (isFinite(t)) return Math.max(0, t - this._now());
  return null;
};

/** Exponential backoff with jitter: attempt 0 waits 0.5..1 x base, attempt 1 1..2 x base, ... */
proto._backoff = function (attempt) {
  var exp = Math.min(30000, this._retryDelay * Math.pow(2, attempt));
  return Math.round(exp / 2 + this._random() * (exp / 2));
};

/** A request with retries for network errors, 5xx and 429; other answers are returned as they are. */
proto._send = function (method, path, data, header) {
  var self = this;
  var headers = { 'content-type': 'application/json' };
  Object.keys(header || {}).forEach(function (k) { headers[k] = header[k]; });
  var attempt = 0;
  var loop = function () {
    return self._rawRequest(method, path, data, headers).then(function (raw) {
      var r = self._classify(raw);
      // POST opens answers 404 for a message that is not this user's, and an app with the inbox off answers
      // inbox_disabled: answers, not a misconfiguration.
      if (r.status === 404 && path !== 'opens' && r.error.code !== 'inbox_disabled') self._warnNotFound(method, path, r.error);
      if (r.ok || !r.retryable || attempt >= self._maxRetries) return r;
      var delay;
      if (r.retryAfterMs !== undefined) {
        if (r.retryAfterMs > self._maxRetryAfter) return r; // not worth keeping the user's app busy
        delay = Math.round(r.retryAfterMs + self._random() * Math.min(1000, self._retryDelay));
      } else {
        delay = self._backoff(attempt);
      }
      attempt += 1;
      self._log(method, path, 'failed (' + r.error.code + '), retry', attempt, 'in', delay, 'ms');
      return Promise.resolve(self._sleep(delay)).then(loop, loop);
    });
  };
  return loop();
};

// ---------------------------------------------------------------------------------------------
// session

proto._sessionUsable = function (s) {
  return !!(s && typeof s.session === 'string' && s.session && s.server === this._server &&
    typeof s.refreshAt === 'number' && this._now() < s.refreshAt);
};

/** The cached session (memory, then storage) or a fresh login. */
proto._ensureSession = function () {
  if (this._sessionUsable(this._session)) return Promise.resolve(ok(this._session));
  var stored = this._read(this._sessionKey);
  if (this._sessionUsable(stored)) {
    this._session = stored;
    return Promise.resolve(ok(stored));
  }
  return this._login();
};

/** Concurrent callers share one in-flight login. */
proto._login = function () {
  var self = this;
  if (!this._loginPromise) {
    this._loginPromise = this._doLogin().then(
      function (r) {
        self._loginPromise = null;
        return r;
      },
      function (e) {
        self._loginPromise = null;
        return fail('internal_error', errText(e));
      }
    );
  }
  return this._loginPromise;
};

proto._wxLogin = function () {
  var self = this;
  return new Promise(function (resolve) {
    var w = self._wx();
    if (!w || typeof w.login !== 'function') {
      resolve(fail('wx_unavailable', 'wx.login is not available'));
      return;
    }
    var done = false;
    var finish = function (r) {
      if (done) return;
      done = true;
      clearTimeout(guardTimer);
      resolve(r);
    };
    var guardTimer = setTimeout(function () {
      finish(fail('login_failed', 'wx.login timed out'));
    }, self._timeout + 2000);
    var returned;
    try {
      returned = w.login({
        timeout: self._timeout,
        success: function (res) {
          if (res && typeof res.code === 'string' && res.code) finish(ok(res.code));
          else finish(fail('login_failed', (res && res.errMsg) || 'wx.login returned no code'));
        },
        fail: function (err) {
          finish(fail('login_failed', (err && err.errMsg) || 'wx.login:fail', wxNumbers(err, ['errno'])));
        },
      });
    } catch (e) {
      finish(fail('wx_error', errText(e)));
    }
    settleQuietly(returned);
  });
};

proto._doLogin = function () {
  var self = this;
  var attempt = function (n) {
    return self._wxLogin().then(function (c) {
      if (!c.ok) return c;
      return self._send('POST', 'login', { code: c.data }).then(function (r) {
        if (r.ok) return self._storeSession(r.data);
        if (n === 0 && r.error && r.error.code === 'invalid_code') {
          self._log('login code refused, asking wx.login for a fresh one');
          return attempt(1);
        }
        r.stage = 'login';
        return r;
      });
    });
  };
  return attempt(0);
};

proto._storeSession = function (body) {
  if (!body || typeof body !== 'object' || typeof body.session !== 'string' || !body.session) {
    return fail('bad_response', 'login answer has no session');
  }
  var now = this._now();
  var exp = Date.parse(body.expires_at);
  // A device clock far off (or an odd answer) must not make every call log in again.
  if (!isFinite(exp) || exp <= now) exp = now + SESSION_DAYS * DAY;
  var record = {
    session: body.session,
    openid: typeof body.openid === 'string' ? body.openid : '',
    expires_at: typeof body.expires_at === 'string' ? body.expires_at : new Date(exp).toISOString(),
    refreshAt: exp - Math.min(DAY, (exp - now) / 2), // renew ~1 day before expiry
    server: this._server,
  };
  this._session = record;
  this._write(this._sessionKey, record);
  this._log('logged in as', record.openid);
  // The top-up's cap needs this user's counts: the first session is the first chance to read them.
  if (this._topUp.length && !this._topUpError && !this._knownCredits && !this._meInFlight) this._fetchMe();
  return ok(record);
};

proto._dropSession = function (token) {
  if (this._session && this._session.session === token) this._session = null;
  var stored = this._read(this._sessionKey);
  if (stored && stored.session === token) this._write(this._sessionKey, null);
};

/** A call with `Authorization: Session`; a 401 drops the session, logs in again and repeats once. */
proto._authed = function (method, path, data, header) {
  var self = this;
  var call = function (repeat) {
    return self._ensureSession().then(function (s) {
      if (!s.ok) {
        s.stage = 'login';
        return s;
      }
      var h = { Authorization: 'Session ' + s.data.session };
      Object.keys(header || {}).forEach(function (k) { h[k] = header[k]; });
      return self._send(method, path, data, h).then(function (r) {
        if (!r.ok && r.status === 401 && !repeat) {
          self._log(path, 'answered 401, logging in again');
          self._dropSession(s.data.session);
          return call(true);
        }
        return r;
      });
    });
  };
  return call(false);
};

// ---------------------------------------------------------------------------------------------
// formId / prepay_id buffer

proto._count = function () {
  return this._pending.formids.length + this._pending.prepay_ids.length;
};

proto._contains = function (kind, id) {
  var lists = [this._pending[kind], this._inflight[kind]];
  for (var i = 0; i < lists.length; i++) {
    for (var j = 0; j < lists[i].length; j++) if (lists[i][j].v === id) return true;
  }
  return false;
};

proto._persistQueue = function () {
  var out = {};
  var any = false;
  var self = this;
  KINDS.forEach(function (kind) {
    out[kind] = self._inflight[kind].concat(self._pending[kind]);
    if (out[kind].length) any = true;
  });
  this._write(this._queueKey, any ? out : null);
};

proto._restoreQueue = function () {
  var saved = this._read(this._queueKey);
  if (!saved || typeof saved !== 'object') return;
  var now = this._now();
  var self = this;
  KINDS.forEach(function (kind) {
    var list = Array.isArray(saved[kind]) ? saved[kind] : [];
    list.forEach(function (e) {
      if (!e || typeof e.v !== 'string' || !e.v || self._contains(kind, e.v)) return;
      var t = typeof e.t === 'number' && isFinite(e.t) ? e.t : now;
      if (now - t >= FORMID_TTL) return; // expired while waiting
      self._pending[kind].push({ v: e.v, t: t });
    });
    if (self._pending[kind].length > MAX_QUEUE) self._pending[kind].splice(0, self._pending[kind].length - MAX_QUEUE);
  });
  if (this._count()) {
    this._log('restored', this._count(), 'unsent ids from storage');
    this._persistQueue();
    this._schedule();
  }
};

proto._listenAppHide = function () {
  var self = this;
  try {
    var w = this._wx();
    if (!w || typeof w.onAppHide !== 'function') return;
    this._hideHandler = function () {
      try {
        if (self._destroyed) return;
        self._persistQueue();
        if (self._count()) self.flush();
      } catch (ignored) {
        // never throw into WeChat's event loop
      }
    };
    w.onAppHide(this._hideHandler);
  } catch (e) {
    this._log('wx.onAppHide failed', errText(e));
  }
};

proto._schedule = function () {
  if (this._timer !== null || this._destroyed || !this._count()) return;
  var self = this;
  try {
    this._timer = setTimeout(function () {
      self._timer = null;
      self.flush();
    }, this._flushInterval);
  } catch (e) {
    this._timer = null;
  }
};

proto._clearTimer = function () {
  if (this._timer !== null) {
    try {
      clearTimeout(this._timer);
    } catch (ignored) {
      // nothing to do
    }
    this._timer = null;
  }
};

proto._enqueue = function (kind, value) {
  try {
    if (this._configError || this._destroyed) return false;
    if (typeof value !== 'string') {
      this._log('ignored a', kind, 'value that is not a string:', value);
      return false;
    }
    var id = value.trim();
    if (!id) {
      this._log('ignored an empty', kind, 'value');
      return false;
    }
    if (id.indexOf('mock one') !== -1) {
      this._log('ignored the developer tools\' mock formId (test on a phone to collect real ones)');
      return false;
    }
    if (id.indexOf('requestFormId:fail') === 0 || id.length > MAX_ID_LENGTH) {
      this._log('ignored an invalid', kind, 'value:', id);
      return false;
    }
    if (this._contains(kind, id)) {
      this._log('ignored a duplicate', kind, 'value');
      return false;
    }
    this._pending[kind].push({ v: id, t: this._now() });
    var total = this._pending[kind].length + this._inflight[kind].length;
    if (total > MAX_QUEUE) this._pending[kind].splice(0, total - MAX_QUEUE); // drop the oldest
    this._persistQueue();
    this._log('collected', kind, id, '(' + this._count() + ' buffered)');
    if (this._count() >= this._batchSize) this.flush();
    else this._schedule();
    return true;
  } catch (e) {
    this._log('collect failed', errText(e));
    return false;
  }
};

/** Flushes are serialised; callers arriving while one waits to start share it. */
proto._flushSerial = function () {
  var self = this;
  if (this._flushWaiting) return this._flushWaiting;
  var p = this._flushTail.then(function () {
    self._flushWaiting = null;
    return self._doFlush().then(null, function (e) {
      return fail('internal_error', errText(e));
    });
  });
  this._flushWaiting = p;
  this._flushTail = p;
  return p;
};

// An upload refused for what it is (400/403/413...) will be refused again: drop it. Not a 404: the
// ids are fine, the URL is not (wrong options.server or appid, a proxy, a server older than this SDK),
// so they stay buffered, and the flush result and a console warning say so.
function isPermanent(r) {
  return r.stage !== 'login' && !r.transient && typeof r.status === 'number' && r.status >= 400 &&
    r.status < 500 && r.status !== 401 && r.status !== 404 && r.status !== 408 && r.status !== 429;
}

/** Takes up to `size` ids of each kind off the buffer; they are in flight until _settle(). */
proto._takeChunk = function (size) {
  var self = this;
  var chunk = { count: 0, body: {}, entries: {} };
  KINDS.forEach(function (kind) {
    var entries = self._pending[kind].splice(0, size);
    self._inflight[kind] = entries;
    chunk.entries[kind] = entries;
    if (entries.length) {
      chunk.body[kind] = entries.map(function (e) { return e.v; });
      chunk.count += entries.length;
    }
  });
  return chunk;
};

/** Ends a chunk's flight: forgotten (sent or dropped) or put back in front of the buffer. */
proto._settle = function (chunk, keep) {
  var self = this;
  KINDS.forEach(function (kind) {
    self._inflight[kind] = [];
    if (!keep) return;
    var back = chunk.entries[kind].filter(function (e) { return !self._contains(kind, e.v); });
    self._pending[kind] = back.concat(self._pending[kind]);
  });
  this._persistQueue();
};

proto._doFlush = function () {
  var self = this;
  this._clearTimer();
  var total = { sent: 0, accepted: 0, duplicates: 0, rejected: [], dropped: 0, pending: 0 };
  var lastError = null;
  var result = function (error) {
    total.pending = self._count();
    return error ? { ok: false, error: error, data: total } : ok(total);
  };

  // Both kinds go to POST formids, in one request: {formids?: [...], prepay_ids?: [...]}, 1..100 each.
  var step = function () {
    if (!self._count()) return result(lastError);
    var chunk = self._takeChunk(Math.min(self._batchSize, MAX_PER_REQUEST));
    self._log('uploading', chunk.count, 'ids', JSON.stringify(Object.keys(chunk.body)));
    return self._authed('POST', 'formids', chunk.body).then(function (r) {
      if (r.ok) {
        self._settle(chunk, false);
        var d = r.data && typeof r.data === 'object' ? r.data : {};
        total.sent += chunk.count;
        total.accepted += Number(d.accepted) || 0;
        total.duplicates += Number(d.duplicates) || 0;
        if (Array.isArray(d.rejected)) total.rejected = total.rejected.concat(d.rejected);
        return step();
      }
      if (isPermanent(r)) {
        self._settle(chunk, false);
        self._log('server refused', chunk.count, 'ids (' + r.error.code + ': ' + r.error.message + '), dropping them');
        total.dropped += chunk.count;
        lastError = r.error;
        return step();
      }
      // Transient (network, 5xx, 429, login) or a 404: put the chunk back in front, keep it on disk,
      // stop for now; the next flush (timer, batch, app hide or next launch) sends it.
      self._settle(chunk, true);
      self._log('upload failed (' + r.error.code + (r.status ? ', HTTP ' + r.status : '') + '),',
        self._count(), 'ids kept for later');
      return result(r.error);
    });
  };
  return Promise.resolve().then(step);
};

// ---------------------------------------------------------------------------------------------
// silent top-up
//
// When a user ticked "always" (总是保持以上选择) with accept for a template, wx.requestSubscribeMessage shows
// no dialog for it and still adds one send. For the templates listed in options.topUp, the SDK makes such a
// call inside the user's own taps (tap(), pushhub-form), so users who always accept do not run dry. It must
// never show a dialog the user did not ask for, so it asks only for what wx.getSetting says is accepted
// always (and the main switch is not off), never when it does not know, at most once per tap, and not for
// templates this user holds topUpMax sends of or subscribes to long-term (those are never used up).

proto._startTopUp = function () {
  if (this._topUpError) {
    try {
      console.error('[pushhub] ' + this._topUpError + ': silent top-up is off');
    } catch (ignored) {
      // nothing to do
    }
    return;
  }
  if (!this._topUp.length) return;
  this._refreshSetting();
  this._listenAppShow();
  if (this._hasSession()) this._fetchMe(); // the counts; without a session they come after the first login
};

/** The user may change the setting in WeChat's settings while the app is in the background. */
proto._listenAppShow = function () {
  var self = this;
  try {
    var w = this._wx();
    if (!w || typeof w.onAppShow !== 'function') return;
    this._showHandler = function () {
      try {
        if (!self._destroyed) self._refreshSetting();
      } catch (ignored) {
        // never throw into WeChat's event loop
      }
    };
    w.onAppShow(this._showHandler);
  } catch (e) {
    this._log('wx.onAppShow failed', errText(e));
  }
};

/**
 * Reads wx.getSetting({withSubscriptions: true}) into this._setting; resolves to it. A failure (or no
 * getSetting, or no answer) leaves it null: no top-up until a later read succeeds. The latest read wins.
 */
proto._refreshSetting = function () {
  var self = this;
  var seq = ++this._settingSeq;
  return new Promise(function (resolve) {
    var done = false;
    var guardTimer = null;
    var finish = function (setting) {
      if (done) return;
      done = true;
      if (guardTimer !== null) clearTimeout(guardTimer);
      if (seq === self._settingSeq) self._setting = setting;
      resolve(self._setting);
    };
    var w = self._wx();
    if (!w || typeof w.getSetting !== 'function') {
      finish(null);
      return;
    }
    guardTimer = setTimeout(function () {
      self._log('wx.getSetting gave no answer');
      finish(null);
    }, self._timeout);
    try {
      settleQuietly(w.getSetting({
        withSubscriptions: true,
        success: function (res) {
          finish(subscriptionSetting(res));
        },
        fail: function (err) {
          self._log('wx.getSetting failed:', (err && err.errMsg) || 'getSetting:fail');
          finish(null);
        },
      }));
    } catch (e) {
      self._log('wx.getSetting threw', errText(e));
      finish(null);
    }
  });
};

proto._hasSession = function () {
  return this._sessionUsable(this._session) || this._sessionUsable(this._read(this._sessionKey));
};

/** GET me, shared by concurrent callers; a success refreshes the counts the top-up's cap uses. */
proto._fetchMe = function () {
  var self = this;
  if (this._meInFlight) return this._meInFlight;
  var p = this._authed('GET', 'me').then(function (r) {
    self._meInFlight = null;
    if (r.ok && r.data && typeof r.data === 'object') self._learnCredits(r.data);
    return r;
  }, function (e) {
    self._meInFlight = null;
    return fail('internal_error', errText(e));
  });
  this._meInFlight = p;
  return p;
};

proto._learnCredits = function (body) {
  var credits = {};
  var given = body.subscribe_credits && typeof body.subscribe_credits === 'object' ? body.subscribe_credits : {};
  Object.keys(given).forEach(function (id) {
    var n = Number(given[id]);
    credits[id] = isFinite(n) && n > 0 ? n : 0;
  });
  this._knownCredits = credits;
  // Optional: a server without long-term subscriptions does not send it.
  this._longTerm = Array.isArray(body.long_term)
    ? body.long_term.filter(function (id) { return typeof id === 'string'; })
    : [];
};

/**
 * An answer from wx.requestSubscribeMessage: keeps the remembered setting and counts right until the
 * next wx.getSetting and me. Anything but accept for a template remembered as always accepted means the
 * user changed it: remember the new choice (a filter answer is no choice: forget it).
 */
proto._rememberAnswers = function (results) {
  var setting = this._setting;
  if (!setting) return;
  Object.keys(results).forEach(function (id) {
    if (setting.items[id] !== 'accept' || results[id] === 'accept') return;
    if (ALWAYS_VALUES[results[id]]) setting.items[id] = results[id];
    else delete setting.items[id];
  });
};

/**
 * What a report added, in the counts: an accept the server did not ignore is one more send, credited by
 * the report (credit_source "sdk") or soon by WeChat's own event (credit_source "events", where the
 * report credits nothing); counting it either way keeps the cap from being overrun.
 */
proto._countAnswers = function (results, credited, ignored) {
  var credits = this._knownCredits;
  if (!credits) return;
  Object.keys(results).forEach(function (id) {
    if (results[id] !== 'accept' || ignored.indexOf(id) !== -1) return;
    var n = Number(credited[id]);
    credits[id] = (credits[id] || 0) + (isFinite(n) && n > 0 ? n : 1);
  });
};

/**
 * Why a topUp template is not asked for now ('' when it is due): the first of these that holds.
 * Asking without a reason to believe the user always accepts would show the user a dialog: never.
 */
proto._topUpBlocker = function (id, loggedIn) {
  var setting = this._setting;
  var credits = this._knownCredits;
  var blockers = [
    ['long_term', this._longTerm.indexOf(id) !== -1], // sends do not use it up: nothing to top up
    ['not_logged_in', !loggedIn],
    ['setting_unknown', !setting],
    ['main_switch_off', setting && !setting.mainSwitch],
    ['not_always', setting && setting.items[id] !== 'accept'],
    ['credits_unknown', !credits],
    ['at_cap', credits && (credits[id] || 0) >= this._topUpMax],
  ];
  for (var i = 0; i < blockers.length; i++) if (blockers[i][1]) return blockers[i][0];
  return '';
};

/**
 * The topUp templates due now ({due, skipped: {TID: reason}}), the emptiest first: one call takes
 * SUBSCRIBE_GROUP ids, the rest wait for the next tap.
 */
proto._planTopUp = function () {
  var self = this;
  var loggedIn = this._hasSession();
  var due = [];
  var skipped = {};
  this._topUp.forEach(function (id) {
    var why = self._topUpBlocker(id, loggedIn);
    if (why) skipped[id] = why;
    else due.push(id);
  });
  var credits = this._knownCredits || {};
  var order = this._topUp;
  due.sort(function (a, b) {
    return (credits[a] || 0) - (credits[b] || 0) || order.indexOf(a) - order.indexOf(b);
  });
  return { due: due, skipped: skipped };
};

/**
 * The top-up itself; its wx.requestSubscribeMessage call (if any) is made synchronously, i.e. inside the
 * caller's tap. data: {requested, results, credited, ignored, skipped}.
 */
proto._topUpNow = function () {
  var self = this;
  if (this._topUpError) return fail('invalid_config', this._topUpError);
  var plan = this._planTopUp();
  var data = { requested: [], results: {}, credited: {}, ignored: [], skipped: plan.skipped };
  if (this._topUp.length && !this._knownCredits && this._hasSession()) {
    this._fetchMe(); // the counts were not loaded (or failed to): have them for the next tap
  }
  if (this._tapUsed) {
    // One wx.requestSubscribeMessage per tap: a second one may be refused, or cost the developer's dialog.
    plan.due.forEach(function (id) { data.skipped[id] = 'tap_used'; });
    return ok(data);
  }
  plan.due.slice(SUBSCRIBE_GROUP).forEach(function (id) { data.skipped[id] = 'next_tap'; });
  data.requested = plan.due.slice(0, SUBSCRIBE_GROUP);
  if (!data.requested.length) return ok(data);
  var w = this._wx();
  if (!w || typeof w.requestSubscribeMessage !== 'function') {
    return fail('wx_unavailable', 'wx.requestSubscribeMessage is not available');
  }
  this._log('topping up', data.requested.join(', '));
  return this._askSubscribe(w, data.requested).then(function (r) {
    if (!r.ok) return { ok: false, error: r.error, data: data };
    data.results = r.data;
    if (!Object.keys(r.data).length) return ok(data);
    return self._reportSubscriptions(r.data).then(function (reported) {
      if (!reported.ok) return { ok: false, error: reported.error, data: data };
      data.credited = reported.data.credited;
      data.ignored = reported.data.ignored;
      return ok(data);
    });
  });
};

/** me()'s per-template view: {TID: {left, always, long_term, top_up}}. */
proto._describeTemplates = function () {
  var self = this;
  var credits = this._knownCredits || {};
  var items = this._setting ? this._setting.items : {};
  var ids = [];
  [Object.keys(credits), this._topUp, this._longTerm, Object.keys(items)].forEach(function (list) {
    list.forEach(function (id) {
      if (ids.indexOf(id) === -1) ids.push(id);
    });
  });
  var loggedIn = this._hasSession();
  var out = {};
  ids.forEach(function (id) {
    out[id] = {
      left: credits[id] || 0,
      always: items[id] || null,
      long_term: self._longTerm.indexOf(id) !== -1,
      top_up: !self._topUpError && self._topUp.indexOf(id) !== -1 && !self._topUpBlocker(id, loggedIn),
    };
  });
  return out;
};

// ---------------------------------------------------------------------------------------------
// opens
//
// A message PushHub sends opens a page whose query carries ph=<ref> (unless the template does not track
// opens). When the mini-program is launched or shown from a service notification (scenes 1014 and 1107)
// with that query, the SDK reports the ref (POST opens) by itself: from wx.getLaunchOptionsSync() when it
// starts (also when it is created after the launch) and from wx.onAppShow. Each ref is reported once: the
// last MAX_REMEMBERED_OPENS reported refs are kept in storage. The query is only read, never changed.

/** The ref in an entry's query ({scene, query}) when the entry is an open from a sent message, else ''. */
function openRefOf(entry) {
  if (!entry || typeof entry !== 'object' || !OPEN_SCENES[Number(entry.scene)]) return '';
  var query = entry.query;
  var ref = query && typeof query === 'object' ? query[OPEN_QUERY] : undefined;
  return typeof ref === 'string' && OPEN_REF.test(ref) ? ref : '';
}

proto._startOpens = function () {
  var self = this;
  var w = this._wx();
  if (!w) return;
  try {
    if (typeof w.getLaunchOptionsSync === 'function') this._openFromEntry(w.getLaunchOptionsSync(), 'launch');
  } catch (e) {
    this._log('wx.getLaunchOptionsSync failed', errText(e));
  }
  try {
    if (typeof w.onAppShow !== 'function') return;
    this._openShowHandler = function (entry) {
      try {
        if (!self._destroyed) self._openFromEntry(entry, 'show');
      } catch (ignored) {
        // never throw into WeChat's event loop
      }
    };
    w.onAppShow(this._openShowHandler);
  } catch (e) {
    this._log('wx.onAppShow failed', errText(e));
  }
};

proto._openFromEntry = function (entry, how) {
  var ref = openRefOf(entry);
  if (!ref) return;
  this._log('opened from a message (' + how + ', scene ' + entry.scene + '), ref', ref);
  this._reportOpen(ref);
};

// Stored as the ref (counted) or '!' + ref (refused for good: 404 or 400), the oldest first.
proto._reportedOpens = function () {
  var stored = this._read(this._opensKey);
  return Array.isArray(stored) ? stored.filter(function (entry) { return typeof entry === 'string'; }) : [];
};

proto._rememberOpen = function (ref, refused) {
  var entries = this._reportedOpens().filter(function (e) { return e !== ref && e !== '!' + ref; });
  entries.push(refused ? '!' + ref : ref);
  if (entries.length > MAX_REMEMBERED_OPENS) entries.splice(0, entries.length - MAX_REMEMBERED_OPENS);
  this._write(this._opensKey, entries);
};

/**
 * POST opens, once per ref: a ref reported before is answered from storage, without a call. The call waits
 * for the session like every call (a login first if there is none) and is retried like every call (network,
 * 5xx, 429); a final answer (200; 404: not this user's message; 400) is remembered and never sent again. A
 * report that still fails after the retries is not remembered: the next launch or show with it tries again.
 */
proto._reportOpen = function (ref) {
  var self = this;
  var before = this._reportedOpens();
  if (before.indexOf(ref) !== -1) return Promise.resolve(ok({ opened: true, repeated: true }));
  if (before.indexOf('!' + ref) !== -1) {
    return Promise.resolve(fail('not_found', 'This message is not this user\'s (reported before).', { status: 404 }));
  }
  if (this._opensInFlight[ref]) return this._opensInFlight[ref];
  var p = this._authed('POST', 'opens', { ref: ref }).then(function (r) {
    delete self._opensInFlight[ref];
    var refused = !r.ok && r.stage !== 'login' && (r.status === 404 || r.status === 400);
    if (r.ok || refused) self._rememberOpen(ref, refused);
    if (!r.ok) self._log('open', ref, 'not reported (' + r.error.code + ')');
    return r.ok ? ok({ opened: true }) : r;
  }, function (e) {
    delete self._opensInFlight[ref];
    return fail('internal_error', errText(e));
  });
  this._opensInFlight[ref] = p;
  return p;
};

// ---------------------------------------------------------------------------------------------
// public API

/** Buffers a formId (e.detail.formId of a `<form report-submit>`). Returns true if it was buffered. */
proto.collect = function (formId) {
  return this._enqueue('formids', formId);
};

/** Buffers a payment's prepay_id (3 pushes in 7 days). Returns true if it was buffered. */
proto.collectPrepayId = function (prepayId) {
  return this._enqueue('prepay_ids', prepayId);
};

/**
 * Uploads everything buffered now (formIds and prepay_ids together, to POST formids).
 * data: {sent, accepted, duplicates, rejected, dropped, pending}: `dropped` ids were refused by the
 * server for what they are and are gone; `pending` ids are still buffered (a failure that may pass, a 404,
 * or ids collected meanwhile) and go with a later flush.
 */
proto.flush = function () {
  return this._guard(function () {
    return this._flushSerial();
  });
};

/** Logs in (reusing a cached session unless {force: true}). data: {openid, expires_at}. */
proto.login = function (opts) {
  return this._guard(function () {
    var force = !!(opts && opts.force);
    if (force) {
      this._session = null;
      this._write(this._sessionKey, null);
    }
    var p = force ? this._login() : this._ensureSession();
    return p.then(function (r) {
      if (!r.ok) return r;
      return ok({ openid: r.data.openid, expires_at: r.data.expires_at });
    });
  });
};

/**
 * This user's credits and push setting: the server's {openid, push_enabled, formid_credits, subscribe_credits,
 * next_expiry, ...}, plus what the phone knows: main_switch (wx.getSetting's, null if unknown) and
 * templates: {TID: {left, always, long_term, top_up}}, so the app can ask for a subscription when it is needed.
 */
proto.me = function () {
  return this._guard(function () {
    var self = this;
    return Promise.all([this._fetchMe(), this._refreshSetting()]).then(function (both) {
      var r = both[0];
      if (!r.ok) return r;
      var data = {};
      Object.keys(r.data).forEach(function (k) { data[k] = r.data[k]; });
      data.main_switch = self._setting ? self._setting.mainSwitch : null;
      data.templates = self._describeTemplates();
      return ok(data);
    });
  });
};

/** Turns this app's pushes off (false) or on (true) for the current user. data: {push_enabled}. */
proto.setPushEnabled = function (enabled) {
  return this._guard(function () {
    if (typeof enabled !== 'boolean') return fail('invalid_argument', 'setPushEnabled expects true or false');
    return this._authed('POST', 'settings', { push_enabled: enabled });
  });
};

/**
 * Binds this user to your own user id (alias), so your servers can send to it by alias. `userHash` is what
 * your server computed: lowercase hex HMAC-SHA256 of the alias with the app's identity secret (the secret
 * never goes into the mini-program). identify(null) unbinds. data: {alias}.
 */
proto.identify = function (alias, userHash) {
  return this._guard(function () {
    if (alias === null) return this._authed('POST', 'identify', { alias: null });
    if (typeof alias !== 'string' || !alias) {
      return fail('invalid_argument', 'identify expects your user id (a string), or null to unbind');
    }
    if (typeof userHash !== 'string' || !userHash) {
      return fail('invalid_argument', 'identify expects the user_hash your server computed for this alias');
    }
    return this._authed('POST', 'identify', { alias: alias, user_hash: userHash });
  });
};

/**
 * Asks the user to subscribe to template ids and reports the answers.
 * Call it from a tap handler: WeChat only shows the dialog in response to a tap, and each
 * wx.requestSubscribeMessage call takes at most 3 ids. The first call is made synchronously
 * (inside your tap); more than 3 ids need more calls, which WeChat may refuse without a new tap.
 * data: {results: {TEMPLATE_ID: 'accept'|...}, credited, ignored, unrequested: [ids never asked]}.
 */
proto.subscribe = function (tmplIds) {
  return this._guard(function () {
    var list = [];
    var input = typeof tmplIds === 'string' ? [tmplIds] : tmplIds;
    if (Array.isArray(input)) {
      input.forEach(function (id) {
        if (typeof id === 'string' && id.trim() && list.indexOf(id.trim()) === -1) list.push(id.trim());
      });
    }
    if (!list.length) return fail('invalid_argument', 'subscribe expects an array of template ids');
    var w = this._wx();
    if (!w || typeof w.requestSubscribeMessage !== 'function') {
      return fail('wx_unavailable', 'wx.requestSubscribeMessage is not available');
    }
    var groups = [];
    for (var i = 0; i < list.length; i += SUBSCRIBE_GROUP) groups.push(list.slice(i, i + SUBSCRIBE_GROUP));
    return this._subscribeGroups(w, groups);
  });
};

/**
 * One wx.requestSubscribeMessage. It marks the current tap as used (cleared once the tap's synchronous turn
 * ends) and, with top-up on, reads wx.getSetting again afterwards: the user may have ticked "always".
 */
proto._askSubscribe = function (w, ids) {
  var self = this;
  this._tapUsed = true;
  Promise.resolve().then(function () { self._tapUsed = false; });
  return new Promise(function (resolve) {
    var returned;
    try {
      returned = w.requestSubscribeMessage({
        tmplIds: ids,
        success: function (res) {
          var results = {};
          ids.forEach(function (id) {
            var v = res && res[id];
            if (typeof v === 'string' && SUBSCRIBE_VALUES[v]) results[id] = v;
          });
          self._rememberAnswers(results);
          resolve(ok(results));
        },
        fail: function (err) {
          resolve(fail('subscribe_failed', (err && err.errMsg) || 'requestSubscribeMessage:fail',
            wxNumbers(err, ['errCode'])));
        },
      });
    } catch (e) {
      resolve(fail('wx_error', errText(e)));
    }
    settleQuietly(returned);
  }).then(function (r) {
    if (self._topUp.length && !self._topUpError) self._refreshSetting();
    return r;
  });
};

proto._subscribeGroups = function (w, groups) {
  var self = this;
  var results = {};
  var unrequested = [];
  var wxError = null;
  var index = 0;

  var next = function () {
    if (index >= groups.length) return report();
    var ids = groups[index];
    // For index 0 this runs synchronously inside subscribe(), i.e. still inside the user's tap.
    return self._askSubscribe(w, ids).then(function (r) {
      if (r.ok) {
        Object.keys(r.data).forEach(function (k) { results[k] = r.data[k]; });
        index += 1;
        return next();
      }
      wxError = r.error;
      for (var i = index; i < groups.length; i++) unrequested = unrequested.concat(groups[i]);
      self._log('requestSubscribeMessage failed:', r.error.message);
      return report();
    });
  };

  var report = function () {
    if (wxError && index === 0) return { ok: false, error: wxError }; // nothing answered: no server call
    var data = { results: results, credited: {}, ignored: [], unrequested: unrequested };
    if (wxError) data.error = wxError;
    if (!Object.keys(results).length) return ok(data);
    return self._reportSubscriptions(results).then(function (r) {
      if (!r.ok) return { ok: false, error: r.error, data: data };
      data.credited = r.data.credited;
      data.ignored = r.data.ignored;
      return ok(data);
    });
  };

  return next();
};

/** POST subscriptions (retried like every call); data: {credited, ignored}. Keeps the top-up's counts. */
proto._reportSubscriptions = function (results) {
  var self = this;
  // One key per report so a server that honours Idempotency-Key does not credit a retry twice.
  return this._authed('POST', 'subscriptions', { results: results }, { 'Idempotency-Key': randomId() })
    .then(function (r) {
      if (!r.ok) return r;
      var d = r.data && typeof r.data === 'object' ? r.data : {};
      var credited = d.credited && typeof d.credited === 'object' ? d.credited : {};
      var ignored = Array.isArray(d.ignored) ? d.ignored : [];
      self._countAnswers(results, credited, ignored);
      return ok({ credited: credited, ignored: ignored });
    });
};

/**
 * The silent top-up, in a tap. tap() tops up now (call it from your tap handler; resolves to {requested,
 * results, credited, ignored, skipped}); tap(handler) returns a tap handler that runs yours first, then the
 * top-up unless your handler already asked through subscribe() (one wx.requestSubscribeMessage per tap).
 * Never throws; without options.topUp, a session or the counts it does nothing.
 */
proto.tap = function (handler) {
  var bound = this instanceof PushHub ? this : null; // unbound (tap passed around as a function): the shared one
  if (typeof handler === 'function') {
    return function () {
      try {
        return handler.apply(this, arguments);
      } finally {
        var target = bound || firstInstance;
        if (target) target.tap();
      }
    };
  }
  // Anything else (a tap event, when tap is itself the handler) is no argument of ours.
  var self = bound || firstInstance;
  if (!self) return Promise.resolve(fail('no_instance', 'create a PushHub instance in app.js first'));
  return self._guard(function () {
    return self._topUpNow();
  });
};

/**
 * Reports that the user opened the mini-program from a sent message, for pages that want to say so
 * themselves (the SDK already does on launch and show from scenes 1014 and 1107). `ref` is the page's `ph`
 * query parameter, or the page's query object itself: onLoad(query) { pushhub.reportOpen(query) }. A page
 * opened without `ph` is no error: data {opened: false}. Each ref is reported once; data: {opened: true}
 * (and repeated: true when it was reported before).
 */
proto.reportOpen = function (ref) {
  return this._guard(function () {
    if (ref && typeof ref === 'object') {
      if (ref[OPEN_QUERY] === undefined) return ok({ opened: false });
      ref = ref[OPEN_QUERY];
    }
    if (typeof ref !== 'string' || !OPEN_REF.test(ref)) {
      return fail('invalid_argument', 'reportOpen expects the page\'s ph query parameter (or its query object)');
    }
    return this._reportOpen(ref);
  });
};

// ---------------------------------------------------------------------------------------------
// the in-app inbox

var INBOX_MAX_LIMIT = 100; // the server's largest page
var MAX_READ_IDS = 500; // ids per markRead call the server takes

/** The cursor to ask for: a page's `next` (a URL carrying ?cursor=) or the cursor itself; '' for the first page. */
function inboxCursor(value) {
  if (value === undefined || value === null || value === '') return '';
  if (typeof value !== 'string') return null;
  var m = /[?&]cursor=([^&#]*)/.exec(value);
  if (m) {
    try {
      return decodeURIComponent(m[1]);
    } catch (ignored) {
      return null;
    }
  }
  return /^https?:\/\//.test(value) ? '' : value;
}

/**
 * One page of the signed-in user's messages, newest first. opts: {cursor, limit}: `cursor` is the previous
 * page's `next` (or its `cursor`); `limit` 1..100 (the server's default is 20).
 * data: {results: [{id, title, fields: [{name, value}], page, sent_at, read}], next, unread, cursor}:
 * `cursor` is the next page's (null on the last page). An app with the inbox off: error inbox_disabled.
 */
proto.inbox = function (opts) {
  return this._guard(function () {
    var o = opts && typeof opts === 'object' ? opts : {};
    var cursor = inboxCursor(o.cursor);
    if (cursor === null) return fail('invalid_argument', 'inbox expects {cursor}: the previous page\'s next');
    var query = [];
    if (cursor) query.push('cursor=' + encodeURIComponent(cursor));
    if (o.limit !== undefined && o.limit !== null) {
      query.push('limit=' + toInt(o.limit, 20, 1, INBOX_MAX_LIMIT));
    }
    return this._authed('GET', 'inbox' + (query.length ? '?' + query.join('&') : '')).then(function (r) {
      if (!r.ok) return r;
      var d = r.data && typeof r.data === 'object' ? r.data : {};
      var next = typeof d.next === 'string' && d.next ? d.next : null;
      return ok({
        results: Array.isArray(d.results) ? d.results : [],
        next: next,
        unread: typeof d.unread === 'number' ? d.unread : 0,
        cursor: next ? inboxCursor(next) || null : null,
      });
    });
  });
};

/**
 * Marks messages read: markRead([id, ...]) (the ids inbox() gave, up to 500) or markRead('all').
 * Ids that are not this user's are ignored by the server. data: {unread}.
 */
proto.markRead = function (ids) {
  return this._guard(function () {
    if (ids === 'all') return this._authed('POST', 'inbox/read', { all: true });
    var list = typeof ids === 'string' || typeof ids === 'number' ? [ids] : ids;
    var valid = Array.isArray(list) && list.length <= MAX_READ_IDS && list.every(function (id) {
      return (typeof id === 'string' && /^[0-9]+$/.test(id)) || (typeof id === 'number' && Math.floor(id) === id && id > 0);
    });
    if (!valid) {
      return fail('invalid_argument', 'markRead expects message ids (up to ' + MAX_READ_IDS + ') or \'all\'');
    }
    return this._authed('POST', 'inbox/read', { ids: list.map(String) });
  });
};

/** Stops timers and listeners (the buffer stays in storage). Mostly for tests and hot reload. */
proto.destroy = function () {
  this._destroyed = true;
  if (firstInstance === this) firstInstance = null;
  this._clearTimer();
  try {
    var w = this._wx();
    if (this._hideHandler && w && typeof w.offAppHide === 'function') w.offAppHide(this._hideHandler);
    if (this._showHandler && w && typeof w.offAppShow === 'function') w.offAppShow(this._showHandler);
    if (this._openShowHandler && w && typeof w.offAppShow === 'function') w.offAppShow(this._openShowHandler);
  } catch (ignored) {
    // a broken wx must not make destroy() throw
  }
  this._hideHandler = null;
  this._showHandler = null;
  this._openShowHandler = null;
};

module.exports = PushHub;
module.exports.PushHub = PushHub;
module.exports.default = PushHub;
