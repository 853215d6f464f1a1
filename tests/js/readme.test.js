'use strict';
// static/sdk/README.md, in Chinese and in English, names every public method and explains every error code
// the SDK can produce (read from pushhub.js) or pass through from PushHub (pushhub.d.ts's server codes).
const { describe, it } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');

const SDK = path.join(__dirname, '../../static/sdk');
const readme = fs.readFileSync(path.join(SDK, 'README.md'), 'utf8');
const source = fs.readFileSync(path.join(SDK, 'pushhub.js'), 'utf8');
const declarations = fs.readFileSync(path.join(SDK, 'pushhub.d.ts'), 'utf8');
const [zh, en] = readme.split('\n## English\n');

const sdkCodes = [
  ...new Set([
    ...[...source.matchAll(/fail\('([a-z_]+)'/g)].map((m) => m[1]),
    ...[...source.matchAll(/code: '([a-z_]+)'/g)].map((m) => m[1]),
    ...[...source.matchAll(/return '([a-z_]+)';/g)].map((m) => m[1]),
  ]),
];
const serverUnion = /export type PushHubServerErrorCode =([^;]+);/.exec(declarations)[1];
const serverCodes = [...serverUnion.matchAll(/'([a-z_]+)'/g)].map((m) => m[1]);
const PushHub = require(path.join(SDK, 'pushhub.js'));
const methods = Object.keys(PushHub.prototype).filter((k) => !k.startsWith('_'));

describe('the SDK README', () => {
  it('has a Chinese and an English part', () => {
    assert.ok(zh && en);
    assert.match(zh, /## 中文/);
  });

  for (const [lang, text] of [['中文', zh], ['English', en]]) {
    it(`${lang}: every error code`, () => {
      assert.ok(sdkCodes.length >= 15, sdkCodes.join());
      assert.deepEqual([...sdkCodes, ...serverCodes].filter((c) => !text.includes('`' + c + '`')), []);
    });

    it(`${lang}: every method and what it returns`, () => {
      for (const m of [...methods, 'shared', 'VERSION']) assert.ok(text.includes('`' + m) || text.includes('.' + m), m);
    });

    it(`${lang}: both ways to install, uni-app and Taro`, () => {
      assert.match(text, /npm install pushhub-miniprogram-sdk/);
      assert.match(text, /构建 npm/);
      assert.match(text, /pushhub-miniprogram-sdk\/pushhub-form\/index/);
      assert.match(text, /\/pushhub\/pushhub-form\/index/);
      assert.match(text, /wxcomponents\/pushhub\/pushhub-form\/index/);
      assert.match(text, /components\/pushhub\/pushhub-form\/index/);
      assert.match(text, /wx: uni/);
      assert.match(text, /wx: Taro/);
    });
  }
});
