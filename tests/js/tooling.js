'use strict';
// The dev tooling of tests/js/package.json (miniprogram-simulate, typescript, ...): installed by `make test-js`
// (npm ci --prefix tests/js). Tests that need it skip with this message where it is missing.

const path = require('node:path');

const DIR = __dirname;
const ROOT = path.resolve(DIR, '../..');
const SDK_DIR = path.join(ROOT, 'static/sdk');

/** undefined when every named package resolves from tests/js, else a skip reason. */
function missing(...packages) {
  const absent = packages.filter((name) => {
    try {
      require.resolve(name + '/package.json', { paths: [DIR] });
      return false;
    } catch (err) {
      return true;
    }
  });
  if (!absent.length) return undefined;
  return absent.join(', ') + ' not installed: run `npm ci --prefix tests/js` (make test-js does)';
}

module.exports = { DIR, ROOT, SDK_DIR, missing };
