// Misuses the declarations must reject: each line below a @ts-expect-error has to fail to compile, or tsc
// reports the directive itself as unused. (tests/js/types.test.js also compiles bad/ and expects failure.)
import PushHub from 'pushhub-miniprogram-sdk';
import type { PushHubFormProperties, PushHubWx } from 'pushhub-miniprogram-sdk';

const server = 'https://push.example.com';
const appid = 'wx0123456789abcdef';

// @ts-expect-error appid is required
new PushHub({ server });
// @ts-expect-error batchSize is a number
new PushHub({ appid, server, batchSize: '20' });
// @ts-expect-error no such option
new PushHub({ appid, server, retries: 3 });
// @ts-expect-error a wx stand-in's request takes an options object
new PushHub({ appid, server, wx: { request(url: number) { return url; } } });

const ph = new PushHub({ appid, server });
// @ts-expect-error setPushEnabled takes a boolean
void ph.setPushEnabled('no');
// @ts-expect-error identify needs the user_hash with an alias
void ph.identify('user-42');
// @ts-expect-error no such method
ph.collectFormId('x');
// @ts-expect-error reportOpen takes the ph string or the page's query
void ph.reportOpen(42);
// @ts-expect-error subscribe takes template ids
void ph.subscribe(42);
// @ts-expect-error login's option is {force}
void ph.login({ forced: true });

void ph.me().then((r) => {
  // @ts-expect-error a result is narrowed on r.ok before data is read
  console.log(r.data.openid);
  if (!r.ok) {
    // @ts-expect-error an error carries no data unless the method says so
    console.log(r.data.openid);
  }
});
void ph.flush().then((r) => {
  // @ts-expect-error flush's partial data may be missing
  if (!r.ok) console.log(r.data.sent);
});

// @ts-expect-error kind is 'formid' or 'prepay'
const props: PushHubFormProperties = { kind: 'prepay_id' };
// @ts-expect-error the host API's methods are methods, not flags
const host: PushHubWx = { login: true };
console.log(props, host);
