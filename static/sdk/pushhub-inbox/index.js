/**
 * <pushhub-inbox height="100vh" bindunread="onUnread" />
 *
 * The signed-in user's messages from PushHub's in-app inbox, newest first: the template's title, its field
 * names with the values sent, the time, and a red dot while unread. A tap marks the message read and opens its
 * page (wx.navigateTo; a tab bar page with wx.switchTab; failing both, wx.reLaunch). Pull down to refresh,
 * scroll to the bottom for older messages; "Mark all read" at the top. The SDK is PushHub.shared() (the first
 * `new PushHub(...)`, normally made in app.js), or getApp().pushhub / getApp().globalData.pushhub.
 * Text is Chinese or English: `lang` ('zh' | 'en'), else the WeChat language (wx.getAppBaseInfo).
 * Events: `unread` {unread} whenever the count is known (for a badge), `open` {message} on a tap (before
 * navigating), `error` {error} when a page could not be loaded. Methods (via selectComponent): refresh(), loadMore().
 */
const PushHub = require('../pushhub.js');

/**
 * @typedef {{name: string, value: string}} InboxField
 * @typedef {{id: string, title: string, fields: InboxField[], page: string, sent_at: string, read: boolean, time: string}} InboxItem
 * @typedef {{cursor: string | null, loading: Promise<void> | null, seq: number}} LoadState
 */

/** Per component instance: the next page's cursor and the load in flight (not rendered, so not in data). */
/** @type {WeakMap<object, LoadState>} */
const LOADS = new WeakMap();

/** @param {object} component @returns {LoadState} */
function loads(component) {
  let state = LOADS.get(component);
  if (!state) {
    state = { cursor: null, loading: null, seq: 0 };
    LOADS.set(component, state);
  }
  return state;
}

const TEXT = {
  zh: {
    title: '消息',
    markAll: '全部已读',
    empty: '暂无消息',
    disabled: '消息中心未开启',
    error: '加载失败，点击重试',
    loading: '加载中…',
    end: '没有更多消息了',
    open: '查看详情',
  },
  en: {
    title: 'Messages',
    markAll: 'Mark all read',
    empty: 'No messages yet',
    disabled: 'The inbox is turned off',
    error: 'Could not load messages. Tap to retry',
    loading: 'Loading…',
    end: 'No more messages',
    open: 'View details',
  },
};

/** The global `wx` of the mini-program, or null (never throws). */
function globalWx() {
  try {
    // eslint-disable-next-line no-undef
    return typeof wx !== 'undefined' && wx ? wx : null;
  } catch (err) {
    return null;
  }
}

/**
 * 'zh' or 'en': the `lang` property when it says, else WeChat's language (zh_CN, zh_TW, zh_HK → zh).
 * @param {unknown} lang
 * @returns {'zh' | 'en'}
 */
function chooseLanguage(lang) {
  if (typeof lang === 'string' && /^zh/i.test(lang)) return 'zh';
  if (typeof lang === 'string' && /^en/i.test(lang)) return 'en';
  const w = globalWx();
  let language = '';
  try {
    if (w && typeof w.getAppBaseInfo === 'function') language = (w.getAppBaseInfo() || {}).language || '';
    else if (w && typeof w.getSystemInfoSync === 'function') language = (w.getSystemInfoSync() || {}).language || '';
  } catch (err) {
    language = '';
  }
  return /^zh/i.test(String(language)) ? 'zh' : 'en';
}

/**
 * The app's PushHub, as pushhub-form finds it: PushHub.shared(), else getApp().pushhub or
 * getApp().globalData.pushhub (uni-app and Taro bundle their own copy of the SDK).
 * @returns {any}
 */
function findPushHub() {
  const shared = PushHub.shared();
  if (shared) return shared;
  /** @type {any} */
  let app = null;
  try {
    app = typeof getApp === 'function' ? getApp() : null;
  } catch (err) {
    app = null;
  }
  const candidates = app ? [app.pushhub, app.globalData && app.globalData.pushhub] : [];
  for (let i = 0; i < candidates.length; i++) {
    const c = candidates[i];
    if (c && typeof c.inbox === 'function' && typeof c.markRead === 'function') return c;
  }
  return null;
}

/** @param {number} n */
function pad(n) {
  return n < 10 ? '0' + n : String(n);
}

/**
 * A message's time as a list shows it: HH:mm today, MM-DD HH:mm this year, YYYY-MM-DD before.
 * @param {string} iso
 * @param {Date} now
 */
function formatTime(iso, now) {
  const t = new Date(iso);
  if (isNaN(t.getTime())) return '';
  const hm = pad(t.getHours()) + ':' + pad(t.getMinutes());
  if (t.toDateString() === now.toDateString()) return hm;
  const md = pad(t.getMonth() + 1) + '-' + pad(t.getDate());
  if (t.getFullYear() === now.getFullYear()) return md + ' ' + hm;
  return t.getFullYear() + '-' + md;
}

/**
 * The message as the list renders it (the server's, plus its display time).
 * @param {any} message
 * @param {Date} now
 * @returns {InboxItem}
 */
function view(message, now) {
  return {
    id: String(message.id),
    title: String(message.title || ''),
    fields: Array.isArray(message.fields) ? message.fields : [],
    page: typeof message.page === 'string' ? message.page : '',
    sent_at: message.sent_at,
    read: !!message.read,
    time: formatTime(message.sent_at, now),
  };
}

/**
 * Opens a message's page: navigateTo, then (a tab bar page, or a full page stack) switchTab without the
 * query (WeChat refuses one there), then reLaunch. A page of the app's own, never a URL.
 * @param {string} page
 */
function openPage(page) {
  const w = globalWx();
  if (!w || !page) return;
  const url = page.charAt(0) === '/' ? page : '/' + page;
  const reLaunch = () => {
    if (typeof w.reLaunch === 'function') w.reLaunch({ url });
  };
  const switchTab = () => {
    if (typeof w.switchTab === 'function') w.switchTab({ url: url.split('?')[0], fail: reLaunch });
    else reLaunch();
  };
  try {
    if (typeof w.navigateTo === 'function') w.navigateTo({ url, fail: switchTab });
    else switchTab();
  } catch (err) {
    // navigation must never break the host page
  }
}

Component({
  externalClasses: ['custom-class'],

  properties: {
    // 'zh' or 'en'; empty: WeChat's language
    lang: { type: String, value: '' },
    // messages per page (1..100)
    pageSize: { type: Number, value: 20 },
    // the list's height (the scroll area): any CSS length
    height: { type: String, value: '100vh' },
  },

  data: {
    text: TEXT.en,
    messages: /** @type {InboxItem[]} */ ([]),
    unread: 0,
    // 'loading' | 'more' (a next page exists) | 'end' | 'empty' | 'error' | 'disabled'
    state: 'loading',
    refreshing: false,
  },

  observers: {
    lang(lang) {
      this.setData({ text: TEXT[chooseLanguage(lang)] });
    },
  },

  lifetimes: {
    attached() {
      LOADS.delete(this);
      this.setData({ text: TEXT[chooseLanguage(this.data.lang)] });
      this.refresh();
    },
  },

  methods: {
    /** Loads the first page again (pull-down, or the host's own refresh). Resolves when it is shown. */
    refresh() {
      return this._load(true);
    },

    /** Loads the next page, if there is one and nothing is loading. */
    loadMore() {
      if (this.data.state !== 'more') return Promise.resolve();
      return this._load(false);
    },

    /** @param {boolean} reset */
    _load(reset) {
      const own = loads(this);
      if (own.loading && !reset) return own.loading;
      const pushhub = findPushHub();
      if (!pushhub) {
        if (typeof console !== 'undefined') console.warn('[pushhub] pushhub-inbox: create a PushHub instance in app.js first');
        this.setData({ state: 'error', refreshing: false });
        return Promise.resolve();
      }
      const seq = (own.seq += 1);
      if (!reset || !this.data.messages.length) this.setData({ state: 'loading' });
      /** @type {{limit: number, cursor?: string}} */
      const opts = { limit: this.data.pageSize };
      if (!reset && own.cursor) opts.cursor = own.cursor;
      /** @type {Promise<void>} */
      const loading = Promise.resolve(pushhub.inbox(opts)).then((/** @type {any} */ r) => {
        if (seq !== own.seq) return; // a refresh started meanwhile: its answer wins
        own.loading = null;
        if (!r || !r.ok) {
          const error = (r && r.error) || { code: 'internal_error', message: 'no answer' };
          this.setData({ state: error.code === 'inbox_disabled' ? 'disabled' : 'error', refreshing: false });
          this.triggerEvent('error', { error });
          return;
        }
        const now = new Date();
        /** @type {InboxItem[]} */
        const page = r.data.results.map((/** @type {any} */ m) => view(m, now));
        const messages = reset ? page : this.data.messages.concat(page.filter((m) => !this._has(m.id)));
        own.cursor = r.data.cursor;
        this.setData({
          messages,
          unread: r.data.unread,
          state: !messages.length ? 'empty' : r.data.cursor ? 'more' : 'end',
          refreshing: false,
        });
        this.triggerEvent('unread', { unread: r.data.unread });
      });
      own.loading = loading;
      return loading;
    },

    /** @param {string} id */
    _has(id) {
      return this.data.messages.some((m) => m.id === id);
    },

    /**
     * Marks the message read at once on screen, tells the server, then opens its page.
     * @param {{currentTarget?: {dataset?: Record<string, unknown>}}} e
     */
    onTapMessage(e) {
      const id = e && e.currentTarget && e.currentTarget.dataset ? String(e.currentTarget.dataset.id) : '';
      const index = this.data.messages.findIndex((m) => m.id === id);
      if (index === -1) return;
      const message = this.data.messages[index];
      this.triggerEvent('open', { message });
      if (!message.read) {
        this.setData({
          ['messages[' + index + '].read']: true,
          unread: Math.max(0, this.data.unread - 1),
        });
        const pushhub = findPushHub();
        if (pushhub) {
          Promise.resolve(pushhub.markRead([id])).then((/** @type {any} */ r) => {
            if (r && r.ok) {
              this.setData({ unread: r.data.unread });
              this.triggerEvent('unread', { unread: r.data.unread });
            }
          });
        }
      }
      openPage(message.page);
    },

    onMarkAll() {
      const pushhub = findPushHub();
      if (!pushhub) return Promise.resolve();
      const messages = this.data.messages.map((m) => Object.assign({}, m, { read: true }));
      this.setData({ messages, unread: 0 });
      return Promise.resolve(pushhub.markRead('all')).then((/** @type {any} */ r) => {
        if (r && r.ok) {
          this.setData({ unread: r.data.unread });
          this.triggerEvent('unread', { unread: r.data.unread });
        }
      });
    },

    onRefresh() {
      this.setData({ refreshing: true });
      return this.refresh();
    },

    onReachBottom() {
      return this.loadMore();
    },

    onRetry() {
      return this.data.messages.length ? this._load(false) : this.refresh();
    },
  },
});
