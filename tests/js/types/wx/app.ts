import PushHub from 'pushhub-miniprogram-sdk';

// The global `wx` is used by default; passing it explicitly must type-check too.
const pushhub = new PushHub({
  appid: 'wx0123456789abcdef',
  server: 'https://push.example.com',
  debug: true,
  batchSize: 20,
  flushInterval: 5000,
  maxRetries: 3,
  timeout: 10000,
  topUp: ['TEMPLATE_ID_1', 'TEMPLATE_ID_2'],
  topUpMax: 10,
  wx,
});

App<IAppOption>({
  pushhub,
  globalData: {},
  onLaunch() {
    const version: string = PushHub.VERSION;
    const shared: PushHub | null = PushHub.shared();
    console.log(version, shared === this.pushhub);
  },
  onHide() {
    void this.pushhub.flush();
  },
});
