// `fusekeeper demo`, as a new user runs it (the compiled CLI, as root): two crashes, the
// table, exit 0, and nothing left behind: no mount, no process, no temp dir.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { runCli } from './helpers/supervisor.ts';

/** Pids of processes whose command line mentions `text`. */
function processesMentioning(text: string): number[] {
  const pids: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    try {
      if (readFileSync(`/proc/${name}/cmdline`, 'utf8').includes(text)) pids.push(Number(name));
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}

test('fusekeeper demo --crashes 2: two recoveries, a table, no application error, everything cleaned up', async () => {
  const r = await runCli(['demo', '--crashes', '2'], { timeoutMs: 90_000 });
  assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
  const dir = /working in (\S+)/.exec(r.stdout)?.[1];
  assert.ok(dir, r.stdout);
  assert.match(r.stdout, /^CRASH +KILLED +NEW OWNER +GENERATION +SUPERVISOR RECOVERY +BLACKOUT$/m);
  assert.match(r.stdout, /^1 +\d+ +\d+ +2 +\d+\.\d\d ms +\d+\.\d ms$/m);
  assert.match(r.stdout, /^2 +\d+ +\d+ +3 +\d+\.\d\d ms +\d+\.\d ms$/m);
  assert.match(r.stdout, /^crashes 2, recoveries 2, application errors 0 /m);
  assert.match(r.stdout, /^cleaned up: /m);
  assert.equal(existsSync(dir), false, 'the temp dir is removed');
  assert.equal(readFileSync('/proc/self/mountinfo', 'utf8').includes(dir), false, 'nothing is left mounted');
  assert.deepEqual(processesMentioning(dir), [], 'no supervisor, daemon or reader is left running');
});

test('fusekeeper demo --help says what it does; a bad --crashes is a usage error', async () => {
  const help = await runCli(['demo', '--help']);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /usage: fusekeeper demo \[--crashes N\]/);
  assert.match(help.stdout, /SIGKILLs the serving daemon/);
  assert.match(help.stdout, /removes\s+the temp dir/);
  const bad = await runCli(['demo', '--crashes', '0']);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /--crashes must be an integer in 1\.\.100/);
});
