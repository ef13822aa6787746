// The kernel facts the fast fence relies on (supervisor/recovery.ts): a dead process that is
// not yet reaped is PF_EXITING and lists no fd in any thread; a live one lists its fds.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fdsDropped, isExiting } from '../../supervisor/recovery.ts';
import { waitUntil } from './helpers/supervisor.ts';

test('a live process is not exiting and still has fds', async (t) => {
  const child = spawn('sleep', ['30'], { stdio: 'ignore' });
  t.after(() => child.kill('SIGKILL'));
  await new Promise((r) => child.once('spawn', r));
  assert.equal(isExiting(child.pid!), false);
  assert.equal(fdsDropped(child.pid!), false);
});

test('a zombie (exited, not reaped) is exiting and has no fd in any thread', async (t) => {
  // `sleep 30` never waits for its child, so the short sleep stays a zombie until sh's exec'd
  // process exits.
  const parent = spawn('sh', ['-c', 'sleep 0.05 & echo $!; exec sleep 30'], { stdio: ['ignore', 'pipe', 'ignore'] });
  t.after(() => parent.kill('SIGKILL'));
  const zombie = Number(await new Promise<string>((r) => parent.stdout!.once('data', (d: Buffer) => r(d.toString()))));
  await waitUntil(() => /^State:\s+Z/m.test(readStatus(zombie)), 'the child to become a zombie', 5000, 5);
  assert.equal(isExiting(zombie), true);
  assert.equal(fdsDropped(zombie), true);
});

test('a pid that names no process counts as gone', () => {
  // pid_max is at most 2^22 on 64-bit Linux.
  assert.equal(fdsDropped(0x7fffffff), true);
  assert.equal(isExiting(0x7fffffff), true);
});

function readStatus(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return '';
  }
}
