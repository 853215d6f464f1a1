'use strict';
// Opens under WeChat's own component test tool, miniprogram-simulate: the SDK reads the launch entry from the
// tool's wx.getLaunchOptionsSync (the same object the tool's mini-program sees) and listens with wx.onAppShow;
// a page built as a component reports its own open from its query, the way the README shows, and renders the
// query unchanged. Requests go to the fake PushHub (fake-wx.js); nothing may go through the tool's wx.request.
const { describe, it, before, after, beforeEach, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const { SDK_DIR, missing } = require('./tooling.js');
const { APPID, SERVER, createFakeWx, serveDefaults, settle } = require('./fake-wx.js');
const { installDom } = require('./simulate-dom.js');

const skip = missing('miniprogram-simulate', 'jsdom');
const REF = 'k3v9q2a1b';
const OTHER_REF = 'p0p0p0p0c';

describe('opens under miniprogram-simulate', { skip }, () => {
  let simulate;
  let restoreDom;
  let toolWx;
  let launch; // the tool's launch options object: getLaunchOptionsSync returns this very object
  let savedLaunch;
  let toolRequests;
  let fakeWx;
  let shows;
  let PushHub;
  const instances = [];

  before(() => {
    restoreDom = installDom();
    simulate = require('miniprogram-simulate'); // sets global.wx to the tool's wx
    toolWx = globalThis.wx;
    launch = toolWx.getLaunchOptionsSync();
    savedLaunch = JSON.parse(JSON.stringify(launch));
    toolRequests = [];
    const original = toolWx.request;
    toolWx.request = (opts) => {
      toolRequests.push(opts);
      return original(opts);
    };
    PushHub = require(path.join(SDK_DIR, 'pushhub.js'));
  });

  after(() => {
    Object.keys(launch).forEach((k) => delete launch[k]);
    Object.assign(launch, savedLaunch);
    restoreDom();
  });

  beforeEach(() => {
    fakeWx = serveDefaults(createFakeWx());
    shows = [];
    toolRequests.length = 0;
    Object.keys(launch).forEach((k) => delete launch[k]);
    Object.assign(launch, JSON.parse(JSON.stringify(savedLaunch)));
  });

  afterEach(() => {
    instances.splice(0).forEach((p) => p.destroy());
    assert.deepEqual(fakeWx.violations, []);
    assert.equal(toolRequests.length, 0, 'nothing went through the tool\'s wx.request');
  });

  /**
   * The tool's wx, as the SDK gets it: its own launch options and everything else it has; the network,
   * login and storage of the fake PushHub (the tool's are inert), and onAppShow recorded so a test can show
   * the app (the tool's is a no-op).
   */
  function wxOfTheTool() {
    const w = Object.create(toolWx);
    w.request = fakeWx.request;
    w.login = fakeWx.login;
    w.getStorageSync = fakeWx.getStorageSync;
    w.setStorageSync = fakeWx.setStorageSync;
    w.removeStorageSync = fakeWx.removeStorageSync;
    w.onAppShow = (fn) => shows.push(fn);
    w.offAppShow = (fn) => {
      shows = shows.filter((s) => s !== fn);
    };
    return w;
  }

  function makePushHub() {
    const p = new PushHub({ appid: APPID, server: SERVER, wx: wxOfTheTool() });
    instances.push(p);
    return p;
  }

  function show(entry) {
    shows.slice().forEach((fn) => fn(entry));
  }

  const opensSent = () => fakeWx.requestsTo('opens', 'POST').map((r) => r.data.ref);

  it('the tool launches from the home screen (scene 1001): nothing is reported, nobody logs in', async () => {
    assert.equal(toolWx.getLaunchOptionsSync().scene, 1001);
    makePushHub();
    await settle();
    assert.deepEqual(fakeWx.requests, []);
  });

  it('a launch from a subscribe message (1014) with ph is reported once', async () => {
    Object.assign(launch, { scene: 1014, path: 'pages/order/index', query: { id: '7', ph: REF } });
    makePushHub();
    show({ scene: 1014, path: 'pages/order/index', query: { id: '7', ph: REF } }); // the cold start's show
    await settle();
    assert.deepEqual(opensSent(), [REF]);
    assert.deepEqual(toolWx.getLaunchOptionsSync().query, { id: '7', ph: REF }, 'the launch entry is unchanged');
  });

  it('a launch from a message without ph (opens not tracked) reports nothing', async () => {
    Object.assign(launch, { scene: 1014, path: 'pages/order/index', query: { id: '7' } });
    makePushHub();
    await settle();
    assert.deepEqual(fakeWx.requests, []);
  });

  it('shows: from the notification list (1107) with ph reported, other scenes and no ph not, a repeat once', async () => {
    makePushHub();
    show({ scene: 1107, path: 'pages/order/index', query: { ph: REF } });
    show({ scene: 1089, path: 'pages/order/index', query: { ph: OTHER_REF } }); // the recent list
    show({ scene: 1107, path: 'pages/order/index', query: {} });
    await settle();
    show({ scene: 1014, path: 'pages/order/index', query: { ph: REF } }); // the same message again
    await settle();
    assert.deepEqual(opensSent(), [REF]);
  });

  it('a page reports its own open from onLoad(query) and renders its query unchanged', async () => {
    const pushhub = makePushHub();
    const reported = [];
    // A page as a component (j-component renders components): onLoad's query as a property, as the README's
    // `onLoad(query) { pushhub.reportOpen(query) }` does it.
    const pageId = simulate.load({
      template: '<view class="order">{{query.id}}</view><view class="ph">{{query.ph}}</view><view class="opened">{{opened}}</view>',
      properties: { query: { type: Object, value: {} } },
      data: { opened: 'no' },
      lifetimes: {
        attached() {
          reported.push(
            pushhub.reportOpen(this.data.query).then((r) => {
              this.setData({ opened: r.ok && r.data.opened ? 'yes' : 'no' });
              return r;
            })
          );
        },
      },
    });
    const page = simulate.render(pageId, { query: { id: '7', ph: REF } });
    page.attach(document.createElement('parent-wrapper'));
    const [first] = await Promise.all(reported);
    await settle();
    assert.deepEqual(first, { ok: true, data: { opened: true } });
    assert.equal(page.querySelector('.opened').dom.textContent, 'yes');
    assert.equal(page.querySelector('.order').dom.textContent, '7');
    assert.equal(page.querySelector('.ph').dom.textContent, REF);

    const again = simulate.render(pageId, { query: { id: '7', ph: REF } }); // the page opened again
    again.attach(document.createElement('parent-wrapper'));
    const [, second] = await Promise.all(reported);
    assert.deepEqual(second, { ok: true, data: { opened: true, repeated: true } });

    const plain = simulate.render(pageId, { query: { id: '8' } }); // opened from a menu: no ph
    plain.attach(document.createElement('parent-wrapper'));
    const [, , third] = await Promise.all(reported);
    assert.deepEqual(third, { ok: true, data: { opened: false } });
    assert.deepEqual(opensSent(), [REF]);
  });
});
