import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';

const cli = new URL('../../bin/fusekeeper.js', import.meta.url).pathname;
const run = (...args: string[]) => spawnSync(cli, args, { encoding: 'utf8' });

test('fusekeeper --help lists every command; an unknown command or option is a usage error', () => {
  const help = run('--help');
  assert.equal(help.status, 0);
  assert.match(help.stdout, /fusekeeper doctor \[--json\]/);
  const unknown = run('frobnicate');
  assert.equal(unknown.status, 2);
  assert.match(unknown.stderr, /unknown command "frobnicate"/);
  const badOption = run('doctor', '--bogus');
  assert.equal(badOption.status, 2);
  assert.match(badOption.stderr, /Unknown option '--bogus'/);
  assert.equal(run().status, 2);
});

test('fusekeeper --version prints the package version', () => {
  const r = run('--version');
  assert.equal(r.status, 0);
  assert.match(r.stdout.trim(), /^\d+\.\d+\.\d+$/);
});
