'use strict';
// The SDK's TypeScript declarations (static/sdk/pushhub.d.ts) under tsc 5 with `strict`:
// - against WeChat's official typings (miniprogram-api-typings): the declarations themselves, a typed native
//   app + page using PushHub with the official App/Page/wx/event types, misuses that must not compile
//   (@ts-expect-error), and the component's own JS (checkJs against the official Component());
// - against uni-app's (@dcloudio/types) and Taro's (@tarojs/taro) typings: `uni` / `Taro` as the `wx` option;
// - a wrong usage tsc must reject, so the check is known to be able to fail;
// - and nothing public in pushhub.js is missing from the declarations (methods, options, error codes).
const { describe, it } = require('node:test');
const assert = require('node:assert/strict');
const { execFile } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const { DIR, SDK_DIR, missing } = require('./tooling.js');

const skip = missing('typescript', 'miniprogram-api-typings', '@dcloudio/types', '@tarojs/taro');
const TYPES = path.join(DIR, 'types');

/** Runs tsc -p CONFIG from tests/js: {code, output}. */
function tsc(config) {
  const bin = path.join(DIR, 'node_modules/typescript/bin/tsc');
  return new Promise((resolve) => {
    execFile(process.execPath, [bin, '-p', path.join(TYPES, config), '--pretty', 'false'], { cwd: DIR }, (err, stdout, stderr) => {
      resolve({ code: err ? err.code : 0, output: (stdout + stderr).trim() });
    });
  });
}

describe('TypeScript declarations', { skip, concurrency: true }, () => {
  it('tsc is TypeScript 5', () => {
    const { version } = require('typescript/package.json');
    assert.match(version, /^5\./);
  });

  for (const [config, what] of [
    ['tsconfig.json', 'a native app and page against WeChat\'s official typings, the misuses rejected, the component\'s JS'],
    ['tsconfig.uni.json', 'uni-app: uni as the wx option, imported as a bundler resolves it'],
    ['tsconfig.taro.json', 'Taro: Taro as the wx option, imported as a bundler resolves it'],
  ]) {
    it(`${config}: no error (${what})`, async () => {
      const { code, output } = await tsc(config);
      assert.equal(output, '');
      assert.equal(code, 0);
    });
  }

  it('rejects a wrong usage (bad/): the check can fail', async () => {
    const { code, output } = await tsc('bad');
    assert.equal(code, 2, output);
    const errors = output.split('\n').filter((l) => / error TS\d+/.test(l)).map((l) => {
      const m = /wrong-usage\.ts\((\d+),\d+\): error (TS\d+)/.exec(l);
      return m ? `${m[1]} ${m[2]}` : l;
    });
    assert.deepEqual(errors, [
      '3 TS2345', // no server
      '4 TS2345', // setPushEnabled('off')
      '5 TS18048', // r.data before narrowing on r.ok
      '6 TS2322', // a wx whose request is not a function
    ]);
  });
});

describe('the declarations cover pushhub.js', { skip: missing('typescript') }, () => {
  const source = fs.readFileSync(path.join(SDK_DIR, 'pushhub.js'), 'utf8');

  function declarations() {
    const ts = require('typescript');
    const file = ts.createSourceFile('pushhub.d.ts', fs.readFileSync(path.join(SDK_DIR, 'pushhub.d.ts'), 'utf8'), ts.ScriptTarget.Latest, true);
    const out = { methods: [], statics: [], interfaces: {}, unions: {} };
    const visit = (node) => {
      if (ts.isClassDeclaration(node) && node.name.text === 'PushHub') {
        for (const m of node.members) {
          if (!m.name) continue;
          const isStatic = (ts.getModifiers(m) || []).some((x) => x.kind === ts.SyntaxKind.StaticKeyword);
          (isStatic ? out.statics : out.methods).push(m.name.text);
        }
      }
      if (ts.isInterfaceDeclaration(node)) out.interfaces[node.name.text] = node.members.map((m) => m.name.text);
      if (ts.isTypeAliasDeclaration(node) && ts.isUnionTypeNode(node.type)) {
        out.unions[node.name.text] = node.type.types
          .filter((t) => ts.isLiteralTypeNode(t) && ts.isStringLiteral(t.literal))
          .map((t) => t.literal.text);
      }
      ts.forEachChild(node, visit);
    };
    visit(file);
    return out;
  }

  it('every public method and static', () => {
    const PushHub = require(path.join(SDK_DIR, 'pushhub.js'));
    const d = declarations();
    const publicMethods = Object.keys(PushHub.prototype).filter((k) => !k.startsWith('_')).sort();
    // An overloaded method (identify(alias, hash) / identify(null)) is declared once per signature.
    assert.deepEqual([...new Set(d.methods.filter((m) => m !== 'constructor'))].sort(), publicMethods);
    const statics = Object.keys(PushHub).filter((k) => !['default', 'PushHub'].includes(k)).sort();
    assert.deepEqual(d.statics.sort(), statics);
  });

  it('every option read by the constructor', () => {
    const body = source.slice(source.indexOf('proto._configure = function (o)'), source.indexOf('proto._wx = function'));
    const options = [...new Set([...body.matchAll(/\bo\.([a-zA-Z]+)/g)].map((m) => m[1]))].sort();
    assert.ok(options.length >= 10, options.join());
    assert.deepEqual(declarations().interfaces.PushHubOptions.slice().sort(), options);
  });

  it('every error code the SDK produces', () => {
    const d = declarations();
    const produced = new Set([
      ...[...source.matchAll(/fail\('([a-z_]+)'/g)].map((m) => m[1]),
      ...[...source.matchAll(/code: '([a-z_]+)'/g)].map((m) => m[1]),
      ...[...source.matchAll(/return '([a-z_]+)';/g)].map((m) => m[1]), // statusCode()
    ]);
    const declared = new Set([...d.unions.PushHubSdkErrorCode, ...d.unions.PushHubHttpErrorCode]);
    assert.deepEqual([...produced].filter((c) => !declared.has(c)), []);
    assert.deepEqual([...declared].filter((c) => !produced.has(c)), []);
  });
});
