import PushHub from 'pushhub-miniprogram-sdk';

const pushhub = new PushHub({ appid: 'wx0123456789abcdef' });
void pushhub.setPushEnabled('off');
void pushhub.me().then((r) => r.data.formid_credits);
new PushHub({ appid: 'wx0123456789abcdef', server: 'https://push.example.com', wx: { request: 'nope' } });
