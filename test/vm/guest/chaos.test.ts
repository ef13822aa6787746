// Inside the VM: the crash-loop harness (bench/chaos.ts, which `npm run chaos:vm` runs here for
// 100 crashes) for a few crashes, so that the tier fails when the harness no longer runs on
// this kernel. It once died at start here, unnoticed for days: the guest has no cgroups.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { patched, skipOutsideVm } from './env.ts';

const ROOT = new URL('../../../', import.meta.url).pathname;
const CRASHES = 2;

test(`the crash-loop harness: ${CRASHES} crashes under load, with 0 application errors, verify failures, leaks or lost fds (${patched ? 'close-all' : 'journal'})`, { skip: skipOutsideVm }, (t) => {
  const results = mkdtempSync(join(tmpdir(), 'fusekeeper-chaos-'));
  t.after(() => rmSync(results, { recursive: true, force: true }));
  const r = spawnSync(process.execPath, ['--import', 'tsx', join(ROOT, 'bench/chaos.ts'), '--crashes', String(CRASHES), '--seed', '1', '--max-minutes', '8'], {
    cwd: ROOT,
    encoding: 'utf8',
    env: { ...process.env, FUSEKEEPER_BENCH_RESULTS: results },
    timeout: 12 * 60_000,
  });
  assert.equal(r.status, 0, `chaos exited ${r.status ?? r.signal}:\n${r.stdout.slice(-4000)}\n${r.stderr.slice(-4000)}`);
  const f = JSON.parse(readFileSync(join(results, 'chaos.json'), 'utf8')).figures;
  t.diagnostic(`chaos: ${f.crashes} crashes in ${f.crashPhaseSeconds} s, ${f.probeIterations} probe iterations, longest stall ${f.longestStallMs} ms`);
  assert.equal(f.crashes, CRASHES);
  assert.equal(f.recoveries, CRASHES);
  assert.equal(f.applicationErrors, 0);
  assert.equal(f.verifyFailures, 0);
  assert.equal(f.leakedBackingReferences.leakedBytes, 0);
  assert.equal(f.leakedBackingReferences.liveBackingIdsWithEverythingClosed, 0);
  assert.equal(f.supervisorFds.after, f.supervisorFds.before);
  assert.deepEqual(f.unexpected, []);
});
