// As in DevTools' TypeScript template: the app's globalData / custom fields, for getApp<IAppOption>().
interface IAppOption {
  pushhub: import('pushhub-miniprogram-sdk');
  globalData: Record<string, never>;
}
