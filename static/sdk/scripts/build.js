#!/usr/bin/env node
/*
 * Builds miniprogram_dist/, the folder WeChat DevTools' "构建 npm" copies into miniprogram_npm/ (the package.json
 * `miniprogram` field names it) and the package's `main`:
 *
 *   miniprogram_dist/index.js        require('pushhub-miniprogram-sdk') → the PushHub class
 *   miniprogram_dist/pushhub.js      the SDK, unchanged
 *   miniprogram_dist/pushhub-form/   the component: usingComponents "pushhub-miniprogram-sdk/pushhub-form/index"
 *   miniprogram_dist/pushhub-inbox/  the in-app inbox: usingComponents "pushhub-miniprogram-sdk/pushhub-inbox/index"
 *
 * Node built-ins only. `npm pack` runs it (prepack); `node scripts/build.js [OUT_DIR]` builds elsewhere.
 */
'use strict';
const fs = require('node:fs');
const path = require('node:path');

const ROOT = path.resolve(__dirname, '..');
const COMPONENTS = ['pushhub-form', 'pushhub-inbox'];
const COMPONENT_FILES = ['index.js', 'index.json', 'index.wxml', 'index.wxss'];

function build(out) {
  const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8'));
  const sdk = fs.readFileSync(path.join(ROOT, 'pushhub.js'), 'utf8');
  const m = /var VERSION = '([^']+)';/.exec(sdk);
  if (!m) throw new Error('pushhub.js declares no VERSION');
  if (m[1] !== pkg.version) throw new Error(`pushhub.js is version ${m[1]} but package.json says ${pkg.version}: bump both`);

  fs.rmSync(out, { recursive: true, force: true });
  fs.mkdirSync(out, { recursive: true });
  fs.writeFileSync(path.join(out, 'pushhub.js'), sdk);
  for (const component of COMPONENTS) {
    fs.mkdirSync(path.join(out, component), { recursive: true });
    for (const name of COMPONENT_FILES) {
      fs.copyFileSync(path.join(ROOT, component, name), path.join(out, component, name));
    }
  }
  fs.writeFileSync(
    path.join(out, 'index.js'),
    `/* ${pkg.name} ${pkg.version}: require('${pkg.name}') is the PushHub class (also .default and .PushHub). */\n` +
      "'use strict';\nmodule.exports = require('./pushhub.js');\n"
  );
  return out;
}

if (require.main === module) {
  const out = path.resolve(process.argv[2] || path.join(ROOT, 'miniprogram_dist'));
  try {
    build(out);
  } catch (err) {
    console.error('build: ' + err.message);
    process.exit(1);
  }
  console.error('built ' + (path.relative(process.cwd(), out) || '.')); // stderr: npm pack --json owns stdout
}

module.exports = { build, ROOT, COMPONENTS };
