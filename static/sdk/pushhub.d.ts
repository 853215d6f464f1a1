/**
 * TypeScript declarations of the PushHub mini-program SDK (pushhub.js) and its `pushhub-form` component.
 *
 * Self-contained: they need no other typings. They are checked (tests/js/types.test.js) against WeChat's
 * official `miniprogram-api-typings`, uni-app's `@dcloudio/types` and Taro's `@tarojs/taro` typings.
 *
 *   import PushHub from 'pushhub-miniprogram-sdk';   // or: const PushHub = require('pushhub-miniprogram-sdk')
 *   import type { PushHubResult, PushHubFormSubmitDetail } from 'pushhub-miniprogram-sdk';
 *   const pushhub = new PushHub({ appid: 'wx0123456789abcdef', server: 'https://push.example.com' });
 *
 * The module is CommonJS (`module.exports = PushHub`, with `.default` and `.PushHub` pointing at it too),
 * hence `export =` below: default imports, named imports and require() all type-check, with or without
 * esModuleInterop.
 *
 * Every asynchronous method returns a Promise that always RESOLVES, to `{ok: true, data}` or
 * `{ok: false, error: {code, message, ...}}`: check `r.ok`, never catch. Synchronous methods never throw.
 */

// --- the client ---------------------------------------------------------------------------------------------

declare class PushHub {
  /** Configuration errors do not throw: they are logged and every call answers `invalid_config`. */
  constructor(options: PushHub.PushHubOptions);
  /** The SDK's version, e.g. '1.0.0'. */
  static readonly VERSION: string;
  /** The first PushHub created in this copy of the SDK (and not destroyed), or null. */
  static shared(): PushHub | null;

  /**
   * Buffers a formId (`e.detail.formId` of a `<form report-submit>`). Synchronous; true if it was buffered.
   * Anything but a usable string (empty, the developer tools' mock formId, a duplicate, too long) is
   * ignored and answers false, as does a client with an invalid configuration or after destroy().
   */
  collect(formId: unknown): boolean;
  /** Buffers a WeChat Pay prepay_id (3 pushes in 7 days). Synchronous; true if it was buffered. */
  collectPrepayId(prepayId: unknown): boolean;
  /** Uploads everything buffered now. On failure `data` holds what was uploaded before it. */
  flush(): Promise<PushHub.PushHubResult<PushHub.PushHubFlushData, PushHub.PushHubFlushData>>;
  /** Logs in (reusing a cached session unless `{force: true}`). Normally not needed: calls log in as needed. */
  login(options?: { force?: boolean }): Promise<PushHub.PushHubResult<PushHub.PushHubLoginData>>;
  /** This user's credits and push setting. */
  me(): Promise<PushHub.PushHubResult<PushHub.PushHubMeData>>;
  /** Turns this app's pushes off (false) or on (true) for the current user. */
  setPushEnabled(enabled: boolean): Promise<PushHub.PushHubResult<PushHub.PushHubSettingsData>>;
  /**
   * Binds this user to your own user id (`alias`, 1–128 printable characters). `userHash` is the lowercase hex
   * HMAC-SHA256 of the alias keyed with the app's identity secret, computed by your server; a wrong one answers
   * `invalid_user_hash` (403) and changes nothing.
   */
  identify(alias: string, userHash: string): Promise<PushHub.PushHubResult<PushHub.PushHubIdentifyData>>;
  /** Unbinds this user's alias (no hash needed). */
  identify(alias: null): Promise<PushHub.PushHubResult<PushHub.PushHubIdentifyData>>;
  /**
   * Asks the user to subscribe to template ids (call it directly in a tap handler) and reports the answers.
   * On a failure after some answers, `data` holds them.
   */
  subscribe(
    tmplIds: string | readonly string[]
  ): Promise<PushHub.PushHubResult<PushHub.PushHubSubscribeData, PushHub.PushHubSubscribeData>>;
  /**
   * The silent top-up (options.topUp), now: call it from a tap handler (after your own subscribe(), if any).
   * Asks wx.requestSubscribeMessage, without a dialog, only for listed templates the user always accepts.
   * Works unbound too (then on PushHub.shared()); never throws.
   */
  tap(): Promise<PushHub.PushHubResult<PushHub.PushHubTopUpData, PushHub.PushHubTopUpData>>;
  /** A tap handler running yours (same `this` and arguments, its return value), then the top-up. */
  tap<H extends (this: any, ...args: any[]) => any>(handler: H): H;
  /**
   * Reports that the user opened the mini-program from a sent message: the page's `ph` query parameter, or the
   * page's query object (`onLoad(query) { pushhub.reportOpen(query) }`). The SDK already reports by itself on
   * launch and show from scenes 1014 and 1107; each ref is reported once.
   */
  reportOpen(
    refOrQuery: string | Record<string, string | undefined>
  ): Promise<PushHub.PushHubResult<PushHub.PushHubOpenData>>;
  /**
   * One page of the signed-in user's in-app inbox, newest first. `cursor`: the previous page's `next` (or
   * `cursor`); `limit` 1..100 (default 20). An app with the inbox off answers `inbox_disabled`.
   */
  inbox(options?: {
    cursor?: string | null;
    limit?: number;
  }): Promise<PushHub.PushHubResult<PushHub.PushHubInboxPage>>;
  /** Marks messages read: their ids (as inbox() gives them, up to 500) or 'all'. Others' ids are ignored. */
  markRead(
    ids: 'all' | string | number | readonly (string | number)[]
  ): Promise<PushHub.PushHubResult<PushHub.PushHubUnreadData>>;
  /** Stops timers and listeners; buffered ids stay in storage for the next instance. */
  destroy(): void;
}

declare namespace PushHub {
  // `import PushHub from '...'` and `import { PushHub } from '...'` (the module also sets these at run time).
  export { PushHub as default, PushHub };

  // --- results ------------------------------------------------------------------------------------------------

  /** Error codes the SDK produces itself (see README "Error codes"). */
  export type PushHubSdkErrorCode =
    | 'invalid_config'
    | 'invalid_argument'
    | 'wx_unavailable'
    | 'wx_error'
    | 'network_error'
    | 'login_failed'
    | 'subscribe_failed'
    | 'bad_response'
    | 'no_instance'
    | 'internal_error';

  /** Codes the SDK gives an HTTP error answer whose body carries no `error.code` of its own. */
  export type PushHubHttpErrorCode =
    | 'not_authenticated'
    | 'permission_denied'
    | 'not_found'
    | 'rate_limited'
    | 'server_error'
    | 'http_error';

  /** Codes PushHub's server answers under /sdk/v1 (passed through as they are, with `status`). */
  export type PushHubServerErrorCode =
    | 'invalid_json'
    | 'validation_error'
    | 'invalid_code'
    | 'not_authenticated'
    | 'permission_denied'
    | 'not_found'
    | 'method_not_allowed'
    | 'conflict'
    | 'idempotency_mismatch'
    | 'payload_too_large'
    | 'rate_limited'
    | 'wechat_error'
    | 'wechat_unreachable'
    | 'inbox_disabled';

  /** Any error code; a newer server may answer codes not listed here, so compare with known ones. */
  export type PushHubErrorCode =
    | PushHubSdkErrorCode
    | PushHubHttpErrorCode
    | PushHubServerErrorCode
    | (string & {});

  export interface PushHubError {
    code: PushHubErrorCode;
    /** Human-readable; for logs, not for matching. */
    message: string;
    /** The HTTP status, when the error is an answer of the server. */
    status?: number;
    /** The input at fault, when the server names one (e.g. `validation_error` on `formids`). */
    field?: string;
    /** `rate_limited`: seconds the server asked to wait (its `Retry-After`). */
    retryAfter?: number;
    /** `subscribe_failed`: WeChat's errCode from wx.requestSubscribeMessage's fail callback (e.g. 20004). */
    errCode?: number;
    /** `login_failed` / `network_error`: WeChat's errno from wx.login's or wx.request's fail callback, when WeChat gives one. */
    errno?: number;
  }

  export interface PushHubSuccess<T> {
    ok: true;
    data: T;
  }

  export interface PushHubFailure<D = never> {
    ok: false;
    error: PushHubError;
    /** Only `flush()`, `subscribe()` and `tap()` carry what was done before the failure. */
    data?: D;
  }

  /** What every asynchronous method resolves to. It never rejects. */
  export type PushHubResult<T, D = never> = PushHubSuccess<T> | PushHubFailure<D>;

  /** `flush()`: totals over the uploads it made. */
  export interface PushHubFlushData {
    /** ids sent in requests the server accepted */
    sent: number;
    /** new credits the server stored */
    accepted: number;
    /** ids the server already knew */
    duplicates: number;
    /** ids the server refused one by one, with its reason (`mock_formid`, `malformed`, `not_a_string`) */
    rejected: Array<{ formid: string; reason: string }>;
    /** ids dropped because the server refused their upload for good (a 4xx other than 401/404/408/429) */
    dropped: number;
    /** ids still buffered after this flush (kept for a later upload: network error, 5xx, 429, 404) */
    pending: number;
  }

  export interface PushHubLoginData {
    openid: string;
    /** UTC ISO-8601 */
    expires_at: string;
  }

  export interface PushHubMeData {
    openid: string;
    push_enabled: boolean;
    /** usable formId / prepay_id sends */
    formid_credits: number;
    /** usable sends per subscribe template id */
    subscribe_credits: Record<string, number>;
    /** UTC ISO-8601: when the soonest-expiring usable formId / prepay_id expires; null if none */
    next_expiry: string | null;
    /** template ids this user subscribes to long-term (sends do not use them up); absent on older servers */
    long_term?: string[];
    /** wx.getSetting's subscriptions main switch on this phone; null when it could not be read */
    main_switch: boolean | null;
    /**
     * Per template (those with credits, in options.topUp, long-term, or chosen "always" by the user): what is
     * left and what the user chose, so the app can ask at the right moment (left 0, not topped up).
     */
    templates: Record<string, PushHubTemplateStatus>;
  }

  export interface PushHubTemplateStatus {
    /** one-time sends left (as the server counted at this me(); 0 if none) */
    left: number;
    /** the user's "always" choice (总是保持以上选择) from wx.getSetting; null: none, or unknown */
    always: 'accept' | 'reject' | 'ban' | null;
    /** a long-term subscription: sends do not use it up, so `left` does not matter */
    long_term: boolean;
    /** the SDK will top it up silently at the next tap (listed in topUp, always accepted, below topUpMax) */
    top_up: boolean;
  }

  /** Why tap() did not ask for a topUp template. */
  export type PushHubTopUpSkipReason =
    | 'long_term'
    | 'not_logged_in'
    | 'setting_unknown'
    | 'main_switch_off'
    | 'not_always'
    | 'credits_unknown'
    | 'at_cap'
    | 'next_tap'
    | 'tap_used';

  /** `tap()`: every topUp template is either requested or skipped. */
  export interface PushHubTopUpData {
    /** template ids asked for (at most 3, all one-time, no dialog shown) */
    requested: string[];
    results: Record<string, PushHubSubscribeAnswer>;
    credited: Record<string, number>;
    ignored: string[];
    skipped: Record<string, PushHubTopUpSkipReason>;
  }

  export interface PushHubSettingsData {
    push_enabled: boolean;
  }

  export interface PushHubIdentifyData {
    /** the alias now bound to this user, or null after identify(null) */
    alias: string | null;
  }

  export interface PushHubOpenData {
    /** true: the open is counted (once per message); false: the query given had no `ph` */
    opened: boolean;
    /** true when this ref was reported before (no request was made) */
    repeated?: boolean;
  }

  /** A message of the in-app inbox: the template's title and field names with the values sent. */
  export interface PushHubInboxMessage {
    id: string;
    title: string;
    /** in the template's order; `name` is the template's name for the field (its key when it has none) */
    fields: { name: string; value: string }[];
    /** the mini-program page the message opens (no ph=: opening it from the inbox is not an open) */
    page: string;
    /** UTC ISO-8601 */
    sent_at: string;
    read: boolean;
  }

  export interface PushHubInboxPage {
    results: PushHubInboxMessage[];
    /** the next page's URL, or null on the last page */
    next: string | null;
    /** the next page's cursor (for inbox({cursor})), or null on the last page */
    cursor: string | null;
    /** the user's unread messages, all pages */
    unread: number;
  }

  export interface PushHubUnreadData {
    unread: number;
  }

  /** The user's answer per template, as wx.requestSubscribeMessage gives it. */
  export type PushHubSubscribeAnswer = 'accept' | 'reject' | 'ban' | 'filter';

  export interface PushHubSubscribeData {
    /** template id → the user's answer */
    results: Record<string, PushHubSubscribeAnswer>;
    /** template id → sends credited by PushHub (empty when the app's credit_source is 'events') */
    credited: Record<string, number>;
    /** template ids PushHub does not know as this app's subscribe templates */
    ignored: string[];
    /** template ids never shown to the user (WeChat refused a later dialog: see `error`) */
    unrequested: string[];
    /** Why the later groups were not asked (only when some were). */
    error?: PushHubError;
  }

  // --- the host API (`wx`, or uni-app's `uni`, or Taro's `Taro`) ----------------------------------------------

  /**
   * The part of WeChat's `wx` the SDK calls. `wx` itself fits, and so do uni-app's `uni` and Taro's `Taro`
   * (their methods also accept success/fail callbacks). Missing methods make the matching calls fail with
   * `wx_unavailable` instead of throwing.
   */
  export interface PushHubWx {
    request?(option: {
      url: string;
      method?: 'GET' | 'POST';
      header?: Record<string, string>;
      data?: Record<string, unknown>;
      timeout?: number;
      dataType?: 'json';
      success?(result: { statusCode: number; data: unknown; header: unknown }): void;
      fail?(error: { errMsg: string }): void;
    }): unknown;
    login?(option: {
      timeout?: number;
      success?(result: { code: string; errMsg: string }): void;
      fail?(error: { errMsg: string; errno?: number }): void;
    }): unknown;
    requestSubscribeMessage?(option: {
      tmplIds: string[];
      /** `result[TEMPLATE_ID]` is the user's answer ('accept', 'reject', 'ban' or 'filter'). */
      success?(result: { errMsg: string }): void;
      fail?(error: { errMsg: string; errCode?: number }): void;
    }): unknown;
    getStorageSync?(key: string): unknown;
    setStorageSync?(key: string, data: any): void;
    removeStorageSync?(key: string): void;
    onAppHide?(listener: (result: any) => void): void;
    offAppHide?(listener: (result: any) => void): void;
    /** Read for the silent top-up: `subscriptionsSetting` says which templates the user always accepts. */
    getSetting?(option: {
      withSubscriptions?: boolean;
      success?(result: {
        subscriptionsSetting?: { mainSwitch?: boolean; itemSettings?: Record<string, string> };
      }): void;
      fail?(error: { errMsg: string }): void;
    }): unknown;
    onAppShow?(listener: (result: any) => void): void;
    offAppShow?(listener: (result: any) => void): void;
    /** Read for opens: how the mini-program was launched (scene 1014/1107 with the message page's `ph`). */
    getLaunchOptionsSync?(): { scene: number; query: Record<string, string> };
  }

  // --- options

  export interface PushHubOptions {
    /** The mini-program's AppID (wx + 16 hex). */
    appid: string;
    /** PushHub's base URL, e.g. https://push.example.com (must be in the request domain whitelist). */
    server: string;
    /** Log what the SDK does (console.log). Default false. */
    debug?: boolean;
    /** Upload when this many ids are buffered, 1..100. Default 20. */
    batchSize?: number;
    /** Upload buffered ids at most this many ms after the first. Default 5000. */
    flushInterval?: number;
    /** Retries after the first attempt on network errors, 5xx and 429, 0..10. Default 3. */
    maxRetries?: number;
    /** Base of the exponential backoff, ms. Default 1000. */
    retryDelay?: number;
    /** A 429 asking to wait longer than this (ms) is not waited for. Default 60000. */
    maxRetryAfter?: number;
    /** wx.request / wx.login timeout, ms, 1000..120000. Default 10000. */
    timeout?: number;
    /** The host API to use instead of the global `wx` (uni-app: `uni`, Taro: `Taro`, tests: a stand-in). */
    wx?: PushHubWx;
    /**
     * Subscribe template ids the SDK may top up silently in the user's taps (tap(), pushhub-form): only those
     * the user chose "always accept" for, so WeChat shows no dialog. Default none.
     */
    topUp?: readonly string[];
    /** No top-up for a template once the user has this many sends of it, 1..1000. Default 10. */
    topUpMax?: number;
    /** Test seam: the clock, ms since the epoch. */
    now?: () => number;
    /** Test seam: Math.random for the backoff jitter. */
    random?: () => number;
    /** Test seam: waits ms before a retry. */
    sleep?: (ms: number) => unknown;
  }

  // --- the pushhub-form component -----------------------------------------------------------------------------

  /** Properties of `<pushhub-form>`. */
  export interface PushHubFormProperties {
    /** true: no overlay; the content gets taps as usual and no formId is collected. Default false. */
    disabled?: boolean;
    /** How the id is reported: 'formid' (default) or 'prepay' (as a prepay_id). */
    kind?: 'formid' | 'prepay';
  }

  /** Properties of `<pushhub-inbox>`. */
  export interface PushHubInboxProperties {
    /** 'zh' or 'en'; default: WeChat's language (wx.getAppBaseInfo().language). */
    lang?: 'zh' | 'en' | '';
    /** Messages per page, 1..100. Default 20. */
    pageSize?: number;
    /** The list's height, any CSS length. Default '100vh'. */
    height?: string;
  }

  /** `e.detail` of `<pushhub-inbox bindunread="...">`. */
  export interface PushHubInboxUnreadDetail {
    unread: number;
  }

  /** `e.detail` of `<pushhub-inbox bindopen="...">` (a tap on a message, before it navigates). */
  export interface PushHubInboxOpenDetail {
    message: PushHubInboxMessage & { time: string };
  }

  /** `e.detail` of `<pushhub-inbox binderror="...">`: a page could not be loaded. */
  export interface PushHubInboxErrorDetail {
    error: PushHubError;
  }

  /** `e.detail` of `<pushhub-form bindsubmit="...">`: the form's submit, passed on. */
  export interface PushHubFormSubmitDetail {
    /** The formId WeChat gave for the tap (already handed to the SDK). */
    formId: string | undefined;
    /** The form's values (`name` → value of form controls inside the component). */
    value: Record<string, unknown>;
  }

  /**
   * The `submit` event of `<pushhub-form>`; structurally a WeChat custom event, so
   * `WechatMiniprogram.CustomEvent<PushHubFormSubmitDetail>` describes it too.
   * `data-*` attributes set on `<pushhub-form>` are in `currentTarget.dataset`.
   */
  export interface PushHubFormSubmitEvent<Dataset extends Record<string, any> = Record<string, any>> {
    type: string;
    timeStamp: number;
    detail: PushHubFormSubmitDetail;
    currentTarget: { id: string; dataset: Dataset };
    target: { id: string; dataset: Record<string, any> };
  }
}

export = PushHub;
