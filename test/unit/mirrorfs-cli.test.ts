// fusekeeper-mirrorfs argument handling that needs no mount: the help text and the
// supervised-mode options. (Runs the compiled CLI, like cli.test.ts.)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const cli = new URL('../../bin/fusekeeper-mirrorfs.js', import.meta.url).pathname;
const run = (...args: string[]) => spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8' });

test('--help describes standalone and supervised mode', () => {
  const r = run('--help');
  assert.equal(r.status, 0);
  assert.match(r.stdout, /--socket PATH/);
  assert.match(r.stdout, /--name NAME/);
  assert.match(r.stdout, /WITHOUT unmounting/);
  assert.match(r.stdout, /fusekeeper release NAME/);
  assert.match(r.stdout, /--metadata-on-main/);
});

test('--name needs --socket, and must be a valid session name', () => {
  const alone = run('/tmp', '/mnt', '--name', 'x');
  assert.equal(alone.status, 2);
  assert.match(alone.stderr, /--name needs --socket/);
  const bad = run('/tmp', '/mnt', '--socket', '/nonexistent.sock', '--name=bad/name');
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /invalid session name/);
});

test('a supervisor that is not there is one line and exit 1', () => {
  const dir = mkdtempSync(join(tmpdir(), 'fusekeeper-cli-'));
  try {
    mkdirSync(join(dir, 'src'));
    mkdirSync(join(dir, 'mnt'));
    const r = run(join(dir, 'src'), join(dir, 'mnt'), '--socket', join(dir, 'nobody-listens.sock'));
    assert.equal(r.status, 1);
    assert.match(r.stderr, /^fusekeeper-mirrorfs: no supervisor is listening on /);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
