'use strict';
// `npm pack` in static/sdk produces the package a mini-program developer installs: this packs it (prepack
// builds miniprogram_dist), reads the tarball, installs it offline into a scratch project and uses it the
// ways developers do:
// - WeChat DevTools' "构建 npm": a package with a `miniprogram` field has that folder copied to
//   miniprogram_npm/<name>/; require('<name>') is its index.js, usingComponents '<name>/pushhub-form/index'
//   the component (developers.weixin.qq.com, 小程序 npm 支持: 发布 npm 包 / 构建 npm);
// - Node/bundlers (uni-app, Taro): require(), ESM import (default and named), the default-import interop of
//   TypeScript, Babel and webpack, and tsc resolving the package's `types`.
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { execFileSync, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { DIR, SDK_DIR } = require('./tooling.js');

const npmWorks = spawnSync('npm', ['--version'], { encoding: 'utf8' }).status === 0;
const skip = npmWorks ? undefined : 'npm not found: cannot pack the SDK';
const PKG = JSON.parse(fs.readFileSync(path.join(SDK_DIR, 'package.json'), 'utf8'));

function npm(args, cwd) {
  return execFileSync('npm', args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

describe('the npm package (static/sdk)', { skip }, () => {
  let tmp;
  let packed; // npm pack --json's entry
  let project; // scratch project with the tarball installed
  let installed; // its node_modules/<name>

  before(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'pushhub-pack-'));
    [packed] = JSON.parse(npm(['pack', '--json', '--pack-destination', tmp], SDK_DIR));
    project = path.join(tmp, 'app');
    fs.mkdirSync(project);
    fs.writeFileSync(path.join(project, 'package.json'), JSON.stringify({ name: 'scratch-app', private: true }));
    npm(['install', '--offline', '--no-audit', '--no-fund', '--loglevel=error', path.join(tmp, packed.filename)], project);
    installed = path.join(project, 'node_modules', PKG.name);
  });

  after(() => {
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  it('has a valid, descriptive name and no dependencies', () => {
    assert.equal(PKG.name, 'pushhub-miniprogram-sdk');
    assert.match(PKG.name, /^[a-z0-9][a-z0-9._-]*$/); // npm: lowercase, URL-safe, no scope
    assert.ok(PKG.name.length <= 214);
    assert.equal(PKG.dependencies, undefined);
    assert.equal(PKG.devDependencies, undefined);
    assert.equal(PKG.version, require(path.join(SDK_DIR, 'pushhub.js')).VERSION);
  });

  it('the tarball holds the built miniprogram_dist, the declarations and the README, nothing else', () => {
    assert.equal(packed.name, PKG.name);
    assert.deepEqual(packed.files.map((f) => f.path).sort(), [
      'README.md',
      'miniprogram_dist/index.js',
      'miniprogram_dist/pushhub-form/index.js',
      'miniprogram_dist/pushhub-form/index.json',
      'miniprogram_dist/pushhub-form/index.wxml',
      'miniprogram_dist/pushhub-form/index.wxss',
      'miniprogram_dist/pushhub-inbox/index.js',
      'miniprogram_dist/pushhub-inbox/index.json',
      'miniprogram_dist/pushhub-inbox/index.wxml',
      'miniprogram_dist/pushhub-inbox/index.wxss',
      'miniprogram_dist/pushhub.js',
      'package.json',
      'pushhub.d.ts',
    ]);
    // The built SDK and component are the sources, unchanged.
    for (const file of ['pushhub.js', 'pushhub-form/index.js', 'pushhub-form/index.wxml', 'pushhub-inbox/index.js', 'pushhub-inbox/index.wxml', 'pushhub-inbox/index.wxss']) {
      assert.equal(fs.readFileSync(path.join(installed, 'miniprogram_dist', file), 'utf8'), fs.readFileSync(path.join(SDK_DIR, file), 'utf8'));
    }
  });

  it('package.json: miniprogram, main and types point at files in the package', () => {
    const pkg = JSON.parse(fs.readFileSync(path.join(installed, 'package.json'), 'utf8'));
    assert.equal(pkg.miniprogram, 'miniprogram_dist');
    assert.ok(fs.statSync(path.join(installed, pkg.miniprogram)).isDirectory());
    assert.ok(fs.existsSync(path.join(installed, pkg.miniprogram, 'index.js')), 'require(name) in miniprogram_npm is index.js');
    assert.ok(fs.statSync(path.join(installed, pkg.main)).isFile());
    assert.ok(fs.statSync(path.join(installed, pkg.types)).isFile());
    assert.equal(pkg.scripts.prepack, 'node scripts/build.js');
  });

  it('what DevTools\' 构建 npm makes of it: the page\'s component and the app\'s require share one SDK', () => {
    // 构建 npm copies the `miniprogram` folder to miniprogram_npm/<name>/.
    const npmDir = path.join(tmp, 'miniprogram', 'miniprogram_npm', PKG.name);
    fs.cpSync(path.join(installed, 'miniprogram_dist'), npmDir, { recursive: true });
    const json = JSON.parse(fs.readFileSync(path.join(npmDir, 'pushhub-form/index.json'), 'utf8'));
    assert.equal(json.component, true);
    for (const ext of ['js', 'wxml', 'wxss']) assert.ok(fs.existsSync(path.join(npmDir, 'pushhub-form/index.' + ext)));
    // usingComponents: 'pushhub-miniprogram-sdk/pushhub-inbox/index', requiring the same SDK copy.
    assert.equal(JSON.parse(fs.readFileSync(path.join(npmDir, 'pushhub-inbox/index.json'), 'utf8')).component, true);
    for (const ext of ['js', 'wxml', 'wxss']) assert.ok(fs.existsSync(path.join(npmDir, 'pushhub-inbox/index.' + ext)));
    assert.match(fs.readFileSync(path.join(npmDir, 'pushhub-inbox/index.js'), 'utf8'), /require\('\.\.\/pushhub\.js'\)/);

    const PushHub = require(npmDir); // app.js: require('pushhub-miniprogram-sdk')
    let definition = null;
    globalThis.Component = (def) => { definition = def; };
    try {
      require(path.join(npmDir, 'pushhub-form/index.js')); // usingComponents: 'pushhub-miniprogram-sdk/pushhub-form/index'
    } finally {
      delete globalThis.Component;
    }
    const collected = [];
    const pushhub = new PushHub({ appid: 'wx0123456789abcdef', server: 'https://push.example.com', wx: {} });
    try {
      pushhub.collect = (v) => collected.push(v);
      const events = [];
      definition.methods.onSubmit.call(
        { data: { kind: 'formid' }, triggerEvent: (name, detail) => events.push([name, detail]) },
        { detail: { formId: 'f-1', value: {} } }
      );
      assert.deepEqual(collected, ['f-1']);
      assert.deepEqual(events, [['submit', { formId: 'f-1', value: {} }]]);
    } finally {
      pushhub.destroy();
    }
  });

  it('require() gives the class; .default and .PushHub are the same class', () => {
    const out = execFileSync(process.execPath, ['-e', `
      const PushHub = require('${PKG.name}');
      console.log(JSON.stringify([typeof PushHub, PushHub.default === PushHub, PushHub.PushHub === PushHub, PushHub.VERSION,
        typeof new PushHub({ appid: 'wx0123456789abcdef', server: 'https://push.example.com', wx: {} }).collect]));
    `], { cwd: project, encoding: 'utf8' });
    assert.deepEqual(JSON.parse(out), ['function', true, true, PKG.version, 'function']);
  });

  it('ESM import: the default import and the named import are the class', () => {
    const file = path.join(project, 'check.mjs');
    fs.writeFileSync(file, `
      import PushHub, { PushHub as Named } from '${PKG.name}';
      const p = new PushHub({ appid: 'wx0123456789abcdef', server: 'https://push.example.com', wx: {} });
      console.log(JSON.stringify([typeof PushHub, Named === PushHub, typeof p.flush, PushHub.shared() === p]));
      p.destroy();
    `);
    const out = execFileSync(process.execPath, [file], { cwd: project, encoding: 'utf8' });
    assert.deepEqual(JSON.parse(out), ['function', true, 'function', true]);
  });

  it('bundlers\' default-import interop (TypeScript, Babel, webpack) gives the class', () => {
    const mod = require(path.join(installed, JSON.parse(fs.readFileSync(path.join(installed, 'package.json'), 'utf8')).main));
    const interop = {
      // tslib __importDefault (esModuleInterop)
      typescript: (m) => (m && m.__esModule ? m : { default: m }).default,
      // @babel/runtime interopRequireDefault
      babel: (m) => (m && m.__esModule ? m : { default: m }).default,
      // webpack's __webpack_require__.n getter
      webpack: (m) => (m && m.__esModule ? () => m.default : () => m)(),
      // TypeScript without esModuleInterop: require(...).default
      'typescript (no interop)': (m) => m.default,
    };
    for (const [name, get] of Object.entries(interop)) assert.equal(get(mod), mod, name);
    assert.equal(typeof mod, 'function');
  });

  it('tsc resolves the declarations through the installed package\'s "types"', { skip: fs.existsSync(path.join(DIR, 'node_modules/typescript')) ? undefined : 'typescript not installed' }, () => {
    const file = path.join(project, 'check.ts');
    fs.writeFileSync(file, `
      import PushHub from '${PKG.name}';
      import type { PushHubResult, PushHubMeData } from '${PKG.name}';
      const p: PushHub = new PushHub({ appid: 'wx0123456789abcdef', server: 'https://push.example.com' });
      const r: Promise<PushHubResult<PushHubMeData>> = p.me();
      export { r };
    `);
    fs.writeFileSync(path.join(project, 'tsconfig.json'), JSON.stringify({
      compilerOptions: { strict: true, noEmit: true, module: 'commonjs', target: 'es2017', types: [] },
      files: ['check.ts'],
    }));
    const tsc = path.join(DIR, 'node_modules/typescript/bin/tsc');
    const res = spawnSync(process.execPath, [tsc, '-p', project], { cwd: project, encoding: 'utf8' });
    assert.equal(res.stdout + res.stderr, '');
    assert.equal(res.status, 0);
  });
});
