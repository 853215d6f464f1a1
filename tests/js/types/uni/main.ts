// uni-app: App.vue's <script lang="ts"> and a page's tap handler, with uni-app's typings (@dcloudio/types).
import PushHub from 'pushhub-miniprogram-sdk';

// `uni` (promise-returning methods that also take success/fail callbacks) stands in for `wx`.
const pushhub = new PushHub({ appid: 'wx0123456789abcdef', server: 'https://push.example.com', wx: uni });

// App.vue: globalData ends up on the mini-program's App, where pushhub-form finds the instance.
export default {
  globalData: { pushhub },
  onHide() {
    void pushhub.flush();
  },
};

export async function onTapNotify(): Promise<string> {
  const r = await pushhub.subscribe(['TEMPLATE_ID']);
  return r.ok ? Object.keys(r.data.credited).join(',') : r.error.code;
}
