import type {
  PushHubError,
  PushHubFormProperties,
  PushHubFormSubmitDetail,
  PushHubFormSubmitEvent,
  PushHubResult,
} from 'pushhub-miniprogram-sdk';
import { PushHub as NamedPushHub } from 'pushhub-miniprogram-sdk';

const app = getApp<IAppOption>();

/** What a page shows for any failed call: every code the README lists is a valid case label. */
function explain(error: PushHubError): string {
  switch (error.code) {
    case 'invalid_config':
    case 'invalid_argument':
    case 'no_instance':
    case 'internal_error':
      return 'bug: ' + error.message;
    case 'wx_unavailable':
    case 'wx_error':
      return 'not in a mini-program?';
    case 'network_error':
    case 'server_error':
    case 'wechat_unreachable':
      return 'try later';
    case 'rate_limited':
      return 'wait ' + String(error.retryAfter ?? 60) + ' s';
    case 'login_failed':
      return 'wx.login failed (errno ' + String(error.errno) + ')';
    case 'subscribe_failed':
      return 'WeChat refused the dialog (errCode ' + String(error.errCode) + ')';
    case 'validation_error':
      return 'bad input: ' + (error.field ?? '?');
    default:
      return error.code + ' (HTTP ' + String(error.status) + ')';
  }
}

function show<T>(r: PushHubResult<T, unknown>): string {
  return r.ok ? JSON.stringify(r.data) : explain(r.error);
}

const formProps: PushHubFormProperties = { disabled: false, kind: 'prepay' };

Page({
  data: { credits: 0, pushOn: true, message: '', form: formProps },

  // Opened from a sent message: the SDK reports it by itself; a page may say so too, with its query as is.
  onLoad(query: Record<string, string | undefined>) {
    void app.pushhub.reportOpen(query).then((r) => {
      if (r.ok && r.data.opened) console.log('opened', r.data.repeated === true);
    });
    if (query.ph) void app.pushhub.reportOpen(query.ph);
  },

  async onShow() {
    const r = await app.pushhub.me();
    if (r.ok) {
      const nextExpiry: string | null = r.data.next_expiry;
      this.setData({ credits: r.data.formid_credits, pushOn: r.data.push_enabled, message: nextExpiry ?? '' });
    } else {
      this.setData({ message: explain(r.error) });
    }
  },

  // <pushhub-form bindsubmit="onBuy" data-id="{{item.id}}">, typed with WeChat's own event type...
  onBuy(e: WechatMiniprogram.CustomEvent<PushHubFormSubmitDetail, Record<string, never>, { id: string }>) {
    const formId: string | undefined = e.detail.formId;
    console.log('buy', e.currentTarget.dataset.id, formId, e.detail.value);
  },

  // ...or with the SDK's structural one.
  onBuyToo(e: PushHubFormSubmitEvent<{ id: string }>) {
    console.log(e.currentTarget.dataset.id, e.detail.formId);
  },

  // A plain <form report-submit bindsubmit="onForm">: WeChat types formId as unknown; collect() takes it.
  onForm(e: WechatMiniprogram.FormSubmit) {
    const buffered: boolean = app.pushhub.collect(e.detail.formId);
    console.log(buffered);
  },

  onPaid(prepayId: string) {
    app.pushhub.collectPrepayId(prepayId);
  },

  onTapNotify() {
    app.pushhub.subscribe(['TEMPLATE_ID_1', 'TEMPLATE_ID_2']).then((r) => {
      if (r.ok) {
        const answer = r.data.results['TEMPLATE_ID_1'];
        if (answer === 'accept') console.log('credited', r.data.credited['TEMPLATE_ID_1'] ?? 0);
        console.log(r.data.ignored, r.data.unrequested, r.data.error?.code);
      } else {
        console.log(explain(r.error), r.data?.results);
      }
    });
    void app.pushhub.subscribe('TEMPLATE_ID_3');
  },

  // A plain bindtap handler wrapped for the silent top-up (options.topUp): WeChat's event type goes through.
  onPlainTap: app.pushhub.tap(function (e: WechatMiniprogram.TouchEvent<Record<string, never>, { id: string }>) {
    console.log('tapped', e.currentTarget.dataset.id);
  }),

  async onTapAndTopUp() {
    const r = await app.pushhub.tap();
    if (r.ok) console.log(r.data.requested, r.data.credited, r.data.skipped['TEMPLATE_ID_1'] === 'at_cap');
    else console.log(explain(r.error), r.data?.requested);
    const me = await app.pushhub.me();
    if (me.ok) {
      const status = me.data.templates['TEMPLATE_ID_1'];
      const runningDry = !!status && status.left === 0 && !status.long_term && !status.top_up;
      console.log(runningDry, status?.always === 'accept', me.data.main_switch, me.data.long_term ?? []);
    }
  },

  async onSignedIn(alias: string, userHash: string) {
    const r = await app.pushhub.identify(alias, userHash);
    if (r.ok) console.log('bound to', r.data.alias);
    else if (r.error.code === 'invalid_user_hash') console.log('ask the server for a fresh hash');
    await app.pushhub.identify(null);
  },

  async onTogglePush() {
    const r = await app.pushhub.setPushEnabled(!this.data.pushOn);
    if (r.ok) this.setData({ pushOn: r.data.push_enabled });
  },

  async onLogin() {
    const r = await app.pushhub.login({ force: true });
    if (r.ok) console.log(r.data.openid, r.data.expires_at);
    const f = await app.pushhub.flush();
    if (f.ok) console.log(f.data.sent, f.data.accepted, f.data.duplicates, f.data.dropped, f.data.rejected[0]?.reason);
    else console.log(explain(f.error), f.data?.sent);
    console.log(show(r), show(f));
  },

  onUnload() {
    // Named import and require-style access name the same class.
    const other: NamedPushHub = app.pushhub;
    console.log(other === NamedPushHub.shared());
  },
});
