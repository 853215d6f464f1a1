'use strict';
// pushhub-inbox under WeChat's component test tool, miniprogram-simulate (j-component + miniprogram-exparser,
// templates compiled by wcc), on a jsdom document: a host page uses <pushhub-inbox> as the README shows; the SDK
// talks to the fake server (tests/js/fake-wx.js, held to the server's contract) through the wx it was given,
// while navigation and the language come from the mini-program's global wx (simulate's mock, stubbed here).
const { describe, it, before, after, beforeEach, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const { SDK_DIR, missing } = require('./tooling.js');
const { APPID, SERVER, createFakeWx, serveDefaults, settle, inboxMessages } = require('./fake-wx.js');
const { installDom } = require('./simulate-dom.js');

const skip = missing('miniprogram-simulate', 'jsdom');

describe('pushhub-inbox under miniprogram-simulate', { skip }, () => {
  let simulate;
  let restoreDom;
  let inboxComponentId;
  let fakeWx;
  let PushHub;
  let navigation; // [api, url] of every wx.navigateTo / switchTab / reLaunch the component made
  let saved;
  const instances = [];

  before(() => {
    restoreDom = installDom();
    simulate = require('miniprogram-simulate');
    PushHub = require(path.join(SDK_DIR, 'pushhub.js'));
    inboxComponentId = simulate.load(path.join(SDK_DIR, 'pushhub-inbox/index'), 'pushhub-inbox');
    saved = {};
    for (const name of ['navigateTo', 'switchTab', 'reLaunch', 'getAppBaseInfo']) saved[name] = globalThis.wx[name];
  });

  after(() => {
    Object.assign(globalThis.wx, saved);
    restoreDom();
  });

  beforeEach(() => {
    fakeWx = serveDefaults(createFakeWx());
    navigation = [];
    // A tab bar page refuses navigateTo (WeChat: "can not navigateTo a tabbar page"): pages/tab/* here.
    globalThis.wx.navigateTo = (o) => {
      navigation.push(['navigateTo', o.url]);
      if (o.url.startsWith('/pages/tab/')) o.fail && o.fail({ errMsg: 'navigateTo:fail can not navigateTo a tabbar page' });
      else o.success && o.success({ errMsg: 'navigateTo:ok' });
    };
    globalThis.wx.switchTab = (o) => {
      navigation.push(['switchTab', o.url]);
      o.success && o.success({ errMsg: 'switchTab:ok' });
    };
    globalThis.wx.reLaunch = (o) => navigation.push(['reLaunch', o.url]);
    globalThis.wx.getAppBaseInfo = () => ({ language: 'zh_CN' });
  });

  afterEach(() => {
    instances.splice(0).forEach((p) => p.destroy());
    assert.deepEqual(fakeWx.violations, []);
  });

  function makePushHub() {
    const p = new PushHub({ appid: APPID, server: SERVER, wx: fakeWx, flushInterval: 60000 });
    instances.push(p);
    return p;
  }

  /** A page with <pushhub-inbox>, rendered and attached; its loads settled. */
  async function renderPage(attrs = '') {
    const events = { unread: [], open: [], error: [] };
    const pageId = simulate.load({
      template: `<pushhub-inbox id="inbox" page-size="3" ${attrs} bindunread="onUnread" bindopen="onOpen" binderror="onError" />`,
      usingComponents: { 'pushhub-inbox': inboxComponentId },
      methods: {
        onUnread(e) {
          events.unread.push(e.detail.unread);
        },
        onOpen(e) {
          events.open.push(e.detail.message.id);
        },
        onError(e) {
          events.error.push(e.detail.error.code);
        },
      },
    });
    const root = simulate.render(pageId);
    root.attach(document.createElement('parent-wrapper'));
    await settle();
    const inbox = root.querySelector('#inbox');
    return { root, inbox, events };
  }

  const items = (inbox) => inbox.querySelectorAll('.pushhub-inbox__item');
  const text = (node) => node.dom.textContent.replace(/\s+/g, ' ').trim();
  // Inside a rendered node: j-component's querySelector only looks into components, so use its DOM (wcc
  // prefixes the component's classes with its tag).
  const inside = (node, cls) => node.dom.querySelector('.pushhub-inbox--' + cls);
  /** The texts of a node's leaves, in order, joined by spaces. */
  const words = (node) => Array.from(node.dom.querySelectorAll('*'))
    .filter((e) => !e.children.length && e.textContent.trim())
    .map((e) => e.textContent.trim())
    .join(' ');

  it('renders the messages newest first: title, field names and values, time, unread dots and count', async () => {
    makePushHub();
    fakeWx.inboxMessages = inboxMessages(2);
    fakeWx.inboxMessages[1].read = true;
    const { inbox, events } = await renderPage();

    const rows = items(inbox);
    assert.equal(rows.length, 2);
    assert.match(words(rows[0]), /^订单发货 2 \d\d:\d\d 订单号 A2 商品 键盘 查看详情$/);
    assert.match(words(rows[1]), /^订单发货 1 /);
    // The unread one has the dot; the read one has none and the read style.
    assert.ok(inside(rows[0], 'pushhub-inbox__dot'));
    assert.equal(inside(rows[1], 'pushhub-inbox__dot'), null);
    assert.match(rows[1].dom.className, /pushhub-inbox__item--read/);
    assert.doesNotMatch(rows[0].dom.className, /pushhub-inbox__item--read/);
    assert.equal(text(inbox.querySelector('.pushhub-inbox__count')), '1');
    assert.deepEqual(events.unread, [1]);
    assert.equal(fakeWx.requestsTo('inbox', 'GET')[0].query.limit, '3');
  });

  it('a tap marks that message read and opens its page; a tab bar page through switchTab', async () => {
    makePushHub();
    fakeWx.inboxMessages = inboxMessages(2);
    fakeWx.inboxMessages[0].page = 'pages/tab/orders?id=2';
    const { inbox, events } = await renderPage();

    items(inbox)[1].dispatchEvent('tap');
    await settle();
    assert.deepEqual(fakeWx.requestsTo('inbox/read', 'POST').map((r) => r.data), [{ ids: ['1'] }]);
    assert.deepEqual(navigation, [['navigateTo', '/pages/order/index?id=1']]);
    assert.equal(inside(items(inbox)[1], 'pushhub-inbox__dot'), null);
    assert.ok(inside(items(inbox)[0], 'pushhub-inbox__dot'));
    assert.equal(text(inbox.querySelector('.pushhub-inbox__count')), '1');
    assert.deepEqual(events.open, ['1']);

    items(inbox)[0].dispatchEvent('tap');
    await settle();
    assert.deepEqual(navigation.slice(1), [
      ['navigateTo', '/pages/tab/orders?id=2'],
      ['switchTab', '/pages/tab/orders'], // switchTab takes no query
    ]);
    assert.equal(inbox.querySelector('.pushhub-inbox__count'), undefined);
    assert.deepEqual(events.unread, [2, 1, 0]);

    // A read message opens again without another mark.
    items(inbox)[1].dispatchEvent('tap');
    await settle();
    assert.equal(fakeWx.requestsTo('inbox/read', 'POST').length, 2);
    assert.equal(navigation.length, 4);
  });

  it('scrolling to the bottom loads the next page, then says there are no more', async () => {
    makePushHub();
    fakeWx.inboxMessages = inboxMessages(5);
    const { inbox } = await renderPage();
    assert.equal(items(inbox).length, 3);

    inbox.querySelector('.pushhub-inbox__list').dispatchEvent('scrolltolower');
    await settle();
    const ids = items(inbox).map((row) => inside(row, 'pushhub-inbox__name').textContent);
    assert.deepEqual(ids, ['订单发货 5', '订单发货 4', '订单发货 3', '订单发货 2', '订单发货 1']);
    assert.equal(text(inbox.querySelector('.pushhub-inbox__footer')), '没有更多消息了');

    // At the end, another scroll asks nothing.
    inbox.querySelector('.pushhub-inbox__list').dispatchEvent('scrolltolower');
    await settle();
    assert.equal(fakeWx.requestsTo('inbox', 'GET').length, 2);
  });

  it('pulling down reloads the first page', async () => {
    makePushHub();
    fakeWx.inboxMessages = inboxMessages(1);
    const { inbox } = await renderPage();
    fakeWx.inboxMessages = inboxMessages(2);
    inbox.querySelector('.pushhub-inbox__list').dispatchEvent('refresherrefresh');
    await settle();
    assert.equal(items(inbox).length, 2);
    assert.equal(fakeWx.requestsTo('inbox', 'GET').at(-1).query.cursor, undefined);
  });

  it('"mark all read" clears every dot and the count', async () => {
    makePushHub();
    fakeWx.inboxMessages = inboxMessages(3);
    const { inbox } = await renderPage();
    assert.equal(text(inbox.querySelector('.pushhub-inbox__all')), '全部已读');
    inbox.querySelector('.pushhub-inbox__all').dispatchEvent('tap');
    await settle();
    assert.deepEqual(fakeWx.requestsTo('inbox/read', 'POST').map((r) => r.data), [{ all: true }]);
    assert.equal(inbox.querySelectorAll('.pushhub-inbox__dot').length, 0);
    assert.equal(inbox.querySelector('.pushhub-inbox__count'), undefined);
    assert.equal(inbox.querySelector('.pushhub-inbox__all'), undefined);
  });

  it('an empty inbox says so', async () => {
    makePushHub();
    const { inbox } = await renderPage();
    assert.equal(items(inbox).length, 0);
    assert.equal(text(inbox.querySelector('.pushhub-inbox__empty')), '暂无消息');
  });

  it('a failed load shows the error and a tap retries', async () => {
    makePushHub();
    fakeWx.respond('GET', 'inbox', { status: 400, body: { error: { code: 'validation_error', message: 'x', field: 'cursor' } } },
      { status: 200, body: { results: inboxMessages(1), next: null, unread: 1 } });
    const { inbox, events } = await renderPage();
    assert.equal(text(inbox.querySelector('.pushhub-inbox__error')), '加载失败，点击重试');
    assert.deepEqual(events.error, ['validation_error']);
    inbox.querySelector('.pushhub-inbox__error').dispatchEvent('tap');
    await settle();
    assert.equal(items(inbox).length, 1);
  });

  it('an app with the inbox off shows it is off', async () => {
    makePushHub();
    fakeWx.respond('GET', 'inbox', { status: 404, body: { error: { code: 'inbox_disabled', message: 'off' } } });
    const { inbox } = await renderPage('lang="en"');
    assert.equal(text(inbox.querySelector('.pushhub-inbox__empty')), 'The inbox is turned off');
  });

  it('speaks English for an English WeChat, and as lang says', async () => {
    makePushHub();
    globalThis.wx.getAppBaseInfo = () => ({ language: 'en' });
    fakeWx.inboxMessages = inboxMessages(1);
    let page = await renderPage();
    assert.equal(text(page.inbox.querySelector('.pushhub-inbox__title')), 'Messages');
    assert.equal(text(page.inbox.querySelector('.pushhub-inbox__all')), 'Mark all read');
    page = await renderPage('lang="zh"');
    assert.equal(text(page.inbox.querySelector('.pushhub-inbox__title')), '消息');
  });
});
