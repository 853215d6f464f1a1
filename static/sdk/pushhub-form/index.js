/**
 * <pushhub-form bindsubmit="onTap" data-id="{{item.id}}"> ...any content... </pushhub-form>
 *
 * Wraps its content in <form report-submit> with an invisible full-size submit button on top, so
 * every tap yields a formId. The formId goes to PushHub.shared() (the first `new PushHub(...)`,
 * normally made in app.js). The host page gets the tap back as a `submit` event whose detail is
 * {formId, value}; data-* attributes on <pushhub-form> are in e.currentTarget.dataset.
 * Inner bindtap handlers do not fire (the button covers them): bind `submit` on pushhub-form instead.
 * After the host page's handler, the tap also serves the SDK's silent top-up (options.topUp), unless that
 * handler already asked for a subscription with pushhub.subscribe() (one request per tap).
 */
const PushHub = require('../pushhub.js');

/**
 * The app's PushHub. PushHub.shared() knows the instances made with this very copy of pushhub.js; when the
 * app's instance comes from another copy (uni-app and Taro bundle the app's import, while this component
 * runs from its own folder), it is found where the README says to put it: getApp().pushhub (native App(),
 * Taro's taroGlobalData) or getApp().globalData.pushhub (uni-app's App.vue globalData).
 * @returns {{collect(id: unknown): boolean, collectPrepayId(id: unknown): boolean, tap?: () => unknown} | null}
 */
function findPushHub() {
  const shared = PushHub.shared();
  if (shared) return shared;
  /** @type {any} */
  let app = null;
  try {
    app = typeof getApp === 'function' ? getApp() : null;
  } catch (err) {
    app = null; // getApp() before App() throws on some base libraries
  }
  const candidates = app ? [app.pushhub, app.globalData && app.globalData.pushhub] : [];
  for (let i = 0; i < candidates.length; i++) {
    const c = candidates[i];
    if (c && typeof c.collect === 'function' && typeof c.collectPrepayId === 'function') return c;
  }
  return null;
}

Component({
  externalClasses: ['custom-class'],

  properties: {
    // true: no overlay, the content receives taps normally and no formId is collected
    disabled: { type: Boolean, value: false },
    // 'formid' (default) or 'prepay': how the id is reported (prepay is rare for forms)
    kind: { type: String, value: 'formid' },
  },

  methods: {
    /** @param {{detail?: {formId?: unknown, value?: Record<string, unknown>}} | undefined} e */
    onSubmit(e) {
      const detail = (e && e.detail) || {};
      const formId = detail.formId;
      /** @type {ReturnType<typeof findPushHub>} */
      let pushhub = null;
      try {
        pushhub = findPushHub();
        if (pushhub) {
          if (this.data && this.data.kind === 'prepay') pushhub.collectPrepayId(formId);
          else pushhub.collect(formId);
        } else if (typeof console !== 'undefined') {
          console.warn('[pushhub] pushhub-form: create a PushHub instance in app.js first');
        }
      } catch (err) {
        // collecting must never break the host page's tap
      }
      this.triggerEvent('submit', { formId: formId, value: detail.value || {} });
      // The top-up comes after the page's handler, still inside the tap, so a dialog the page asks for goes
      // first. An instance from an older copy of the SDK has no tap().
      try {
        if (pushhub && typeof pushhub.tap === 'function') pushhub.tap();
      } catch (err) {
        // the top-up must never break the host page's tap
      }
    },
  },
});
