'use strict';
// identify(alias, userHash): binds the tenant's own user id to this user, only with the hash the tenant's
// server computed (API.md "Audience": POST /sdk/v1/{appid}/identify).
const { describe, it, beforeEach, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const { useHarness } = require('./fake-wx.js');

const h = useHarness({ beforeEach, afterEach });

describe('identify', () => {
  it('binds the alias with the server-computed hash, in a signed-in call', async () => {
    const r = await h.make().identify('user-42', 'good-hash');
    assert.deepEqual(r, { ok: true, data: { alias: 'user-42' } });
    const [req] = h.wx.requestsTo('identify', 'POST');
    assert.deepEqual(req.data, { alias: 'user-42', user_hash: 'good-hash' });
    assert.match(req.header.Authorization, /^Session /);
  });

  it('unbinds with null, sending no hash', async () => {
    const r = await h.make().identify(null);
    assert.deepEqual(r, { ok: true, data: { alias: null } });
    assert.deepEqual(h.wx.requestsTo('identify', 'POST')[0].data, { alias: null });
  });

  it('passes the server\'s invalid_user_hash through as it is', async () => {
    const r = await h.make().identify('user-42', 'forged');
    assert.equal(r.ok, false);
    assert.equal(r.error.code, 'invalid_user_hash');
    assert.equal(r.error.status, 403);
    assert.equal(r.error.field, 'user_hash');
  });

  for (const [name, args] of [
    ['no alias', [undefined, 'good-hash']],
    ['an empty alias', ['', 'good-hash']],
    ['a number', [42, 'good-hash']],
    ['no hash', ['user-42']],
    ['an empty hash', ['user-42', '']],
  ]) {
    it(`refuses ${name} without calling the server`, async () => {
      const r = await h.make().identify(...args);
      assert.equal(r.ok, false);
      assert.equal(r.error.code, 'invalid_argument');
      assert.equal(h.wx.requestsTo('identify').length, 0);
    });
  }
});
