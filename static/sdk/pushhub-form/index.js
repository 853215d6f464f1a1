/**
 * <pushhub-form bindsubmit="onTap" data-id="{{item.id}}"> ...any content... </pushhub-form>
 *
 * Wraps its content in <form report-submit> with an invisible full-size submit button on top, so
 * every tap yields a formId. The formId goes to PushHub.shared() (the first `new PushHub(...)`,
 * normally made in app.js). The host page gets the tap back as a `submit` event whose detail is
 * {formId, value}; data-* attributes on <pushhub-form> are in e.currentTarget.dataset.
 * Inner bindtap handlers do not fire (the button covers them): bind `submit` on pushhub-form instead.
 */
const PushHub = require('../pushhub.js');

Component({
  externalClasses: ['custom-class'],

  properties: {
    // true: no overlay, the content receives taps normally and no formId is collected
    disabled: { type: Boolean, value: false },
    // 'formid' (default) or 'prepay': how the id is reported (prepay is rare for forms)
    kind: { type: String, value: 'formid' },
  },

  methods: {
    onSubmit(e) {
      const detail = (e && e.detail) || {};
      const formId = detail.formId;
      try {
        const pushhub = PushHub.shared();
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
    },
  },
});
