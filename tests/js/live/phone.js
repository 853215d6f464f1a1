'use strict';
// A phone for tests/test_sdk_js_live.py: the real SDK (static/sdk/pushhub.js) with a `wx` whose wx.request is
// real HTTP (Node's fetch) to a running PushHub, and whose WeChat side (wx.login's code, the formIds of
// <form report-submit>, payments' prepay_ids, the wx.requestSubscribeMessage dialog) is played by the WeChat
// sandbox's control API (pushhub/wechat/sandbox/README.md), for one sandbox user.
//
//   node tests/js/live/phone.js < plan.json > report.json
//
// plan: {server, appid, control (…/sandbox/wechat/_control/apps/{appid}), control_token?, openid, options?,
//        steps: [step]}
// step: {op: 'form_taps', count}        the sandbox issues `count` formIds, each goes to pushhub.collect()
//       {op: 'payments', count}         the same with prepay_ids and collectPrepayId()
//       {op: 'collect', values}         raw values to collect() (what a page might hand over)
//       {op: 'subscribe', tmplIds, answer}  pushhub.subscribe(); the user answers `answer` (default accept)
//       {op: 'identify', alias, user_hash}  pushhub.identify(alias, user_hash) (alias null: unbind)
//       {op: 'tap'}                     a tap whose handler calls pushhub.tap() (the silent top-up)
//       {op: 'flush'} | {op: 'me'} | {op: 'login'}
//       {op: 'show', entry}             the app comes to the foreground with wx.onAppShow's `entry` ({scene, path, query})
//       {op: 'report_open', query}      a page's onLoad(query) calling pushhub.reportOpen(query)
//       {op: 'wait_opens', count}       waits until `count` POST opens have been answered (the SDK reports by itself)
// plan.launch: wx.getLaunchOptionsSync()'s answer (how this phone launched the mini-program); absent: the home
// screen (scene 1001).
// plan.setting: wx.getSetting's subscriptionsSetting on this phone (which templates the user always accepts);
// absent: the user never ticked "always".
// report: {steps: [what each step returned], requests: [{method, path, status, body}], queue, opens (the reported
//          refs in storage), warnings, logs}
// Not a test file (node --test tests/js/ does not pick it up): the Python test asserts on the report.

const path = require('node:path');
const PushHub = require(path.join(__dirname, '../../../static/sdk/pushhub.js'));

async function readStdin() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return JSON.parse(Buffer.concat(chunks).toString('utf8'));
}

async function control(plan, method, suffix, body) {
  const response = await fetch(plan.control + '/' + suffix, {
    method,
    headers: Object.assign({ 'content-type': 'application/json' }, plan.control_token ? { 'X-Sandbox-Token': plan.control_token } : {}),
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  if (response.status >= 300) throw new Error('sandbox ' + method + ' ' + suffix + ' answered ' + response.status + ': ' + text);
  return JSON.parse(text);
}

function makeWx(plan, report) {
  const storage = new Map();
  const copy = (v) => (v === undefined ? undefined : JSON.parse(JSON.stringify(v)));
  const user = 'users/' + plan.openid;
  return {
    storage,
    request(opts) {
      let url = opts.url;
      const method = opts.method || 'GET';
      const init = { method, headers: opts.header || {}, signal: AbortSignal.timeout(opts.timeout || 60000) };
      if (opts.data !== undefined) {
        if (method === 'GET') url += '?' + new URLSearchParams(opts.data).toString();
        else init.body = typeof opts.data === 'string' ? opts.data : JSON.stringify(opts.data);
      }
      const entry = { method, path: new URL(url).pathname, status: null, body: opts.data === undefined ? null : copy(opts.data) };
      report.requests.push(entry);
      fetch(url, init).then(async (response) => {
        const text = await response.text();
        let data = text;
        try {
          data = JSON.parse(text); // dataType 'json': WeChat parses the body when it can
        } catch (ignored) {
          // left as text, as WeChat does
        }
        entry.status = response.status;
        opts.success({ statusCode: response.status, data, header: Object.fromEntries(response.headers), errMsg: 'request:ok' });
      }, (err) => {
        entry.error = String(err && err.message);
        opts.fail({ errMsg: 'request:fail ' + entry.error });
      });
      return { abort() {} };
    },
    login(opts) {
      control(plan, 'POST', user + '/login-code').then(
        (r) => opts.success({ code: r.code, errMsg: 'login:ok' }),
        (err) => opts.fail({ errMsg: 'login:fail ' + err.message })
      );
    },
    requestSubscribeMessage(opts) {
      const results = {};
      opts.tmplIds.forEach((id) => { results[id] = plan.answer || 'accept'; });
      // The sandbox answers as WeChat's dialog does: {errMsg: 'requestSubscribeMessage:ok', ID: answer, ...}
      control(plan, 'POST', user + '/subscriptions', { results }).then(
        (r) => opts.success(r),
        (err) => opts.fail({ errMsg: 'requestSubscribeMessage:fail ' + err.message })
      );
    },
    getSetting(opts) {
      const subscriptionsSetting = plan.setting || { mainSwitch: true };
      queueMicrotask(() => opts.success({ errMsg: 'getSetting:ok', authSetting: {}, subscriptionsSetting }));
    },
    showHandlers: [],
    getLaunchOptionsSync: () => copy(plan.launch || { scene: 1001, path: 'pages/index/index', query: {} }),
    onAppShow(fn) {
      this.showHandlers.push(fn);
    },
    offAppShow(fn) {
      this.showHandlers = this.showHandlers.filter((h) => h !== fn);
    },
    getStorageSync: (key) => (storage.has(key) ? copy(storage.get(key)) : ''),
    setStorageSync: (key, value) => storage.set(key, copy(value)),
    removeStorageSync: (key) => storage.delete(key),
    onAppHide() {},
    offAppHide() {},
  };
}

function copy(v) {
  return v === undefined ? undefined : JSON.parse(JSON.stringify(v));
}

async function main() {
  const plan = await readStdin();
  const report = { steps: [], requests: [], queue: null, warnings: [], logs: [] };
  console.warn = (...args) => report.warnings.push(args.join(' '));
  console.log = (...args) => report.logs.push(args.join(' '));
  const wx = makeWx(plan, report);
  const pushhub = new PushHub({ appid: plan.appid, server: plan.server, wx, flushInterval: 600000, ...(plan.options || {}) });
  const user = 'users/' + plan.openid;
  for (const step of plan.steps) {
    if (step.op === 'form_taps' || step.op === 'payments') {
      const kind = step.op === 'form_taps' ? 'formid' : 'prepay';
      const ids = (await control(plan, 'POST', user + '/formids', { count: step.count, kind })).formids;
      const collected = ids.map((id) => (kind === 'formid' ? pushhub.collect(id) : pushhub.collectPrepayId(id)));
      report.steps.push({ op: step.op, ids, collected });
    } else if (step.op === 'collect') {
      report.steps.push({ op: step.op, collected: step.values.map((v) => pushhub.collect(v)) });
    } else if (step.op === 'subscribe') {
      plan.answer = step.answer;
      report.steps.push({ op: step.op, result: await pushhub.subscribe(step.tmplIds) });
    } else if (step.op === 'identify') {
      const args = step.alias === null ? [null] : [step.alias, step.user_hash];
      report.steps.push({ op: step.op, result: await pushhub.identify(...args) });
    } else if (step.op === 'tap') {
      plan.answer = 'accept'; // an "always accept" template answers accept, without a dialog
      report.steps.push({ op: step.op, result: await pushhub.tap() });
    } else if (step.op === 'show') {
      wx.showHandlers.slice().forEach((h) => h(copy(step.entry)));
      report.steps.push({ op: step.op });
    } else if (step.op === 'report_open') {
      report.steps.push({ op: step.op, result: await pushhub.reportOpen(step.query) });
    } else if (step.op === 'wait_opens') {
      const answered = () => report.requests.filter((r) => r.path.endsWith('/opens') && (r.status !== null || r.error));
      const deadline = Date.now() + 15000;
      while (answered().length < step.count && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      report.steps.push({ op: step.op, answered: answered().length });
    } else if (step.op === 'inbox') {
      report.steps.push({ op: step.op, result: await pushhub.inbox(step.options) });
    } else if (step.op === 'markRead') {
      // ids: 'all', a list, or 'listed' (every id the last inbox step gave)
      const listed = report.steps.filter((s) => s.op === 'inbox').map((s) => s.result.data.results.map((m) => m.id));
      const ids = step.ids === 'listed' ? listed[listed.length - 1] : step.ids;
      report.steps.push({ op: step.op, ids, result: await pushhub.markRead(ids) });
    } else if (['flush', 'me', 'login'].includes(step.op)) {
      report.steps.push({ op: step.op, result: await pushhub[step.op]() });
    } else {
      throw new Error('unknown step ' + JSON.stringify(step));
    }
  }
  const queue = wx.storage.get('pushhub:queue:' + plan.appid);
  report.queue = queue === undefined ? null : queue;
  const opens = wx.storage.get('pushhub:opens:' + plan.appid);
  report.opens = opens === undefined ? null : opens;
  pushhub.destroy();
  process.stdout.write(JSON.stringify(report));
}

main().then(
  () => process.exit(0),
  (err) => {
    process.stderr.write(String((err && err.stack) || err) + '\n');
    process.exit(1);
  }
);
