'use strict';
// inbox() and markRead() against the fake wx held to the server's contract (GET inbox, POST inbox/read).
const { describe, it, beforeEach, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const { APPID, SERVER, useHarness, inboxMessages } = require('./fake-wx.js');

const h = useHarness({ beforeEach, afterEach });

describe('inbox()', () => {
  it('gets the first page with the session and gives back the page, its unread count and the next cursor', async () => {
    h.wx.inboxMessages = inboxMessages(25);
    const r = await h.make().inbox();
    assert.equal(r.ok, true, JSON.stringify(r));
    assert.equal(r.data.results.length, 20);
    assert.deepEqual(r.data.results[0], h.wx.inboxMessages[0]);
    assert.equal(r.data.unread, 25);
    assert.match(r.data.next, /^https:\/\/push\.example\.com\/sdk\/v1\/wx0123456789abcdef\/inbox\?cursor=/);
    assert.equal(typeof r.data.cursor, 'string');
    const [req] = h.wx.requestsTo('inbox', 'GET');
    assert.equal(req.url, SERVER + '/sdk/v1/' + APPID + '/inbox');
    assert.match(req.header.Authorization, /^Session sess-1$/);
  });

  it('follows pages by cursor or by the next URL, without duplicates or gaps, to the last (cursor null)', async () => {
    h.wx.inboxMessages = inboxMessages(7);
    const ph = h.make();
    const seen = [];
    let r = await ph.inbox({ limit: 3 });
    seen.push(...r.data.results.map((m) => m.id));
    r = await ph.inbox({ cursor: r.data.cursor, limit: 3 }); // the bare cursor
    seen.push(...r.data.results.map((m) => m.id));
    r = await ph.inbox({ cursor: r.data.next, limit: 3 }); // the next URL as it came
    seen.push(...r.data.results.map((m) => m.id));
    assert.deepEqual(seen, ['7', '6', '5', '4', '3', '2', '1']);
    assert.equal(r.data.next, null);
    assert.equal(r.data.cursor, null);
    const queries = h.wx.requestsTo('inbox', 'GET').map((q) => q.query);
    assert.equal(queries[0].cursor, undefined);
    assert.equal(queries[1].cursor, Buffer.from('3').toString('base64url'));
    assert.equal(queries[2].cursor, Buffer.from('6').toString('base64url'));
    assert.deepEqual(queries.map((q) => q.limit), ['3', '3', '3']);
  });

  it('clamps limit to 1..100', async () => {
    const ph = h.make();
    await ph.inbox({ limit: 500 });
    await ph.inbox({ limit: 0 });
    assert.deepEqual(h.wx.requestsTo('inbox', 'GET').map((q) => q.query.limit), ['100', '1']);
  });

  it('an empty inbox', async () => {
    assert.deepEqual(await h.make().inbox(), { ok: true, data: { results: [], next: null, unread: 0, cursor: null } });
  });

  it('refuses a cursor that is not a string without calling the server', async () => {
    const r = await h.make().inbox({ cursor: 42 });
    assert.equal(r.error.code, 'invalid_argument');
    assert.equal(h.wx.requests.length, 0);
  });

  it('passes inbox_disabled on (404) without the deployment warning a wrong server gets', async (t) => {
    const warn = t.mock.method(console, 'warn', () => {});
    h.wx.respond('GET', 'inbox', {
      status: 404,
      body: { error: { code: 'inbox_disabled', message: 'This mini-program has the in-app inbox turned off.' } },
    });
    const r = await h.make().inbox();
    assert.equal(r.ok, false);
    assert.equal(r.error.code, 'inbox_disabled');
    assert.equal(r.error.status, 404);
    assert.equal(warn.mock.callCount(), 0);
  });

  it('a bad cursor answered 400 comes back with its field', async () => {
    const r = await h.make().inbox({ cursor: '!!' });
    assert.equal(r.error.code, 'validation_error');
    assert.equal(r.error.field, 'cursor');
  });

  it('logs in again once when the session was refused', async () => {
    h.wx.respond('GET', 'inbox',
      { status: 401, body: { error: { code: 'not_authenticated', message: 'Invalid session token.' } } },
      { status: 200, body: { results: [], next: null, unread: 0 } });
    const r = await h.make().inbox();
    assert.equal(r.ok, true);
    assert.equal(h.wx.requestsTo('login').length, 2);
  });
});

describe('markRead()', () => {
  it('marks ids read and answers the unread count', async () => {
    h.wx.inboxMessages = inboxMessages(3);
    const r = await h.make().markRead(['3', 2]);
    assert.deepEqual(r, { ok: true, data: { unread: 1 } });
    assert.deepEqual(h.wx.requestsTo('inbox/read', 'POST')[0].data, { ids: ['3', '2'] });
    assert.deepEqual(h.wx.inboxMessages.map((m) => m.read), [true, true, false]);
  });

  it("markRead('all') sends {all: true}", async () => {
    h.wx.inboxMessages = inboxMessages(4);
    const r = await h.make().markRead('all');
    assert.deepEqual(r, { ok: true, data: { unread: 0 } });
    assert.deepEqual(h.wx.requestsTo('inbox/read', 'POST')[0].data, { all: true });
  });

  it('takes one id as well as a list', async () => {
    h.wx.inboxMessages = inboxMessages(2);
    assert.deepEqual(await h.make().markRead('1'), { ok: true, data: { unread: 1 } });
    assert.deepEqual(h.wx.requestsTo('inbox/read', 'POST')[0].data, { ids: ['1'] });
  });

  for (const [what, bad] of [
    ['nothing', undefined],
    ['an object', { ids: [1] }],
    ['a word', 'some'],
    ['a negative id', [-1]],
    ['a fraction', [1.5]],
    ['null in the list', [null]],
    ['more than 500 ids', Array.from({ length: 501 }, (_, i) => i + 1)],
  ]) {
    it(`refuses ${what} without calling the server`, async () => {
      const r = await h.make().markRead(bad);
      assert.equal(r.ok, false);
      assert.equal(r.error.code, 'invalid_argument');
      assert.equal(h.wx.requests.length, 0);
    });
  }
});
