'use strict';
// The fake server is held to PushHub's contract (tests/js/sdk-contract.json, generated from the server's
// OpenAPI schema; tests/test_sdk_contract.py fails when it is stale), and the SDK calls nothing else.
const { describe, it, beforeEach, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const { APPID, SERVER, CONTRACT, useHarness, createFakeWx, settle } = require('./fake-wx.js');

const h = useHarness({ beforeEach, afterEach });

/** Calls the fake's wx.request directly, as the SDK would, and returns what it answered. */
function call(fake, method, path, data, header = { 'content-type': 'application/json' }) {
  return new Promise((resolve) => {
    fake.request({ url: SERVER + '/sdk/v1/' + APPID + '/' + path, method, data, header, success: resolve, fail: resolve });
  });
}

describe('the fake server keeps to the contract', () => {
  it('was generated from the OpenAPI schema, not written by hand', () => {
    assert.match(CONTRACT.generated, /python -m tests\.sdk_contract/);
    assert.equal(CONTRACT.prefix, '/sdk/v1/{appid}/');
  });

  it('refuses to script a route PushHub does not have (POST prepay_ids, issue 14)', () => {
    const fake = createFakeWx();
    assert.throws(() => fake.respond('POST', 'prepay_ids', { status: 200, body: {} }),
      /POST prepay_ids is not an operation of the PushHub server/);
    assert.throws(() => fake.respond('GET', 'formids', { status: 200, body: {} }), /not an operation/);
  });

  it('refuses a status PushHub does not document for the operation, unless marked offContract', () => {
    const fake = createFakeWx();
    assert.throws(() => fake.respond('POST', 'settings', { status: 409, body: { error: { code: 'x', message: 'y' } } }),
      /does not document HTTP 409 for POST settings/);
    fake.respond('POST', 'settings', { status: 409, body: 'proxy page', offContract: true });
    // the road's failures are always possible
    fake.respond('POST', 'settings', { status: 502, body: '' }, { network: 'timeout' }, { hang: true });
  });

  it('refuses bodies PushHub would not send', () => {
    const fake = createFakeWx();
    const me = { openid: 'o', push_enabled: true, formid_credits: 0, subscribe_credits: {}, long_term: [], next_expiry: null };
    fake.respond('GET', 'me', { status: 200, body: me });
    assert.throws(() => fake.respond('GET', 'me', { status: 200, body: { ...me, formid_count: 1 } }),
      /fields the contract does not have: formid_count/);
    assert.throws(() => fake.respond('GET', 'me', { status: 200, body: { openid: 'o' } }), /missing/);
    assert.throws(() => fake.respond('GET', 'me', { status: 404, body: { code: 'not_found' } }), /missing error/);
    assert.throws(() => fake.respond('GET', 'me', { status: 404, body: { error: { code: 'not_found' } } }),
      /error must be \{code, message\}/);
  });

  it('answers a call to an unknown route as PushHub does, and records it', async () => {
    const res = await call(h.wx, 'POST', 'prepay_ids', { prepay_ids: ['p1'] });
    assert.deepEqual(res.statusCode, 404);
    assert.deepEqual(res.data, { error: { code: 'not_found', message: 'Not found.' } });
    const wrongMethod = await call(h.wx, 'GET', 'formids');
    assert.equal(wrongMethod.statusCode, 405);
    assert.deepEqual(h.wx.violations, [
      'POST prepay_ids is not a route of PushHub',
      'GET formids is not an operation of PushHub',
    ]);
    h.wx.expectViolations = true;
  });

  it('answers 400 to a body PushHub would refuse, and records it and any undocumented header', async () => {
    const typo = await call(h.wx, 'POST', 'formids', { formids: ['f1'], prepayIds: ['p1'] });
    assert.equal(typo.statusCode, 400);
    assert.equal(typo.data.error.code, 'validation_error');
    await call(h.wx, 'POST', 'login', {});
    const login = await call(h.wx, 'POST', 'login', { code: 'c' }, { 'content-type': 'application/json', Authorization: 'Session x' });
    assert.equal(login.statusCode, 200); // ignored by the server, but the SDK must not rely on it
    await call(h.wx, 'POST', 'settings', { push_enabled: true }, { 'content-type': 'application/json', 'X-Whatever': '1' });
    assert.deepEqual(h.wx.violations, [
      'POST formids body: fields the contract does not have: prepayIds',
      'POST login body: missing code',
      'POST login does not take header authorization',
      'POST settings does not take header x-whatever',
    ]);
    h.wx.expectViolations = true;
  });

  it('answers 400 to a query parameter the operation does not document', async () => {
    const bad = await call(h.wx, 'GET', 'inbox?cursor=c&page=2', undefined, { 'content-type': 'application/json', Authorization: 'Session s' });
    assert.equal(bad.statusCode, 400);
    assert.deepEqual(h.wx.violations, ['GET inbox takes no query parameter page']);
    h.wx.expectViolations = true;
  });

  it('records a scripted function answer the server could not give', async () => {
    h.wx.respond('GET', 'me', () => ({ status: 200, body: { openid: 'o' } }));
    await call(h.wx, 'GET', 'me', undefined, { 'content-type': 'application/json', Authorization: 'Session s' });
    assert.match(h.wx.violations[0], /scripted answer: HTTP 200 body of GET me: missing/);
    h.wx.expectViolations = true;
  });
});

describe('the SDK calls the server\'s operations and nothing else', () => {
  it('uses every SDK operation of the contract, each as documented', async () => {
    const ph = h.make();
    ph.collect('f1');
    ph.collectPrepayId('p1');
    assert.equal((await ph.flush()).ok, true);
    assert.equal((await ph.subscribe(['T1'])).ok, true);
    assert.equal((await ph.me()).ok, true);
    assert.equal((await ph.setPushEnabled(false)).ok, true);
    assert.equal((await ph.identify('user-42', 'good-hash')).ok, true);
    assert.equal((await ph.reportOpen('abcdef1')).ok, true);
    assert.equal((await ph.inbox({ limit: 5 })).ok, true);
    assert.equal((await ph.markRead('all')).ok, true);
    await settle();
    const called = [...new Set(h.wx.requests.map((r) => r.method + ' ' + r.path))].sort();
    assert.deepEqual(called, Object.keys(CONTRACT.operations).sort());
    assert.deepEqual(h.wx.violations, []);
  });
});
