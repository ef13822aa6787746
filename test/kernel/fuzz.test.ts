// A short control-protocol fuzz run against a live `fusekeeper serve` (issue 7, item 4; the
// full run is `npm run fuzz`, 100k frames). Same generator and checks as the benchmark
// (helpers/fuzz.ts): every frame is answered or dropped in time, the supervisor never exits,
// hands back exactly the state owners sent, ends with its baseline fds and no mounts left.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { formatReport, runFuzz } from './helpers/fuzz.ts';

const COUNT = 3000;
const SEED = 20261125;

test(`control-protocol fuzzing: ${COUNT} frames (seed ${SEED}) leave the supervisor alive, answering, with its baseline fds`, { timeout: 120_000 }, async () => {
  const r = await runFuzz({ count: COUNT, seed: SEED, concurrency: 16, deadlineMs: 5000, healthEveryMs: 500, cliStatusEveryMs: 2000 });
  const summary = formatReport(r);
  assert.deepEqual(r.failures, [], `${summary}\n(temp dir kept: ${r.tempDir})`);
  assert.equal(r.messagesSent, COUNT);
  assert.equal(r.supervisor.aliveAtEnd, true);
  assert.equal(r.hangs.length, 0);
  assert.deepEqual(r.fds.leaked, []);
  assert.deepEqual(r.leftoverMounts, []);
  // The run covered what it is meant to cover.
  for (const category of ['valid', 'mutated', 'out-of-order', 'fd-attach']) assert.ok((r.byCategory[category] ?? 0) > 0, `no ${category} frames:\n${summary}`);
  assert.ok(r.errorsByCode.EPROTO! > 0 && r.disconnects.byServer > 0 && r.disconnects.abruptByClient > 0, summary);
  assert.ok(r.sessions.created > 0 && r.sessions.resumed > 0, `no session was created and resumed:\n${summary}`);
  assert.ok(r.health.statusChecks > 0, summary);
});
