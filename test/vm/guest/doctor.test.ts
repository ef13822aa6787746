// Inside the VM: `fusekeeper doctor --json`, run from the checkout as an operator would, sees the
// kernel change and picks the matching cleanup strategy.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import type { DoctorReport } from '../../../kernel/doctor.ts';
import { patched, skipOutsideVm } from './env.ts';

const cli = new URL('../../../bin/fusekeeper.js', import.meta.url).pathname;

test(`doctor --json: ${patched ? 'closeAll true, strategy close-all' : 'closeAll false, strategy journal'}`, { skip: skipOutsideVm }, (t) => {
  const out = execFileSync(process.execPath, [cli, 'doctor', '--json'], { encoding: 'utf8', timeout: 120_000 });
  const report = JSON.parse(out) as DoctorReport;
  t.diagnostic(`doctor: kernel ${report.kernel}, fuse ${JSON.stringify(report.fuse)}, strategy ${report.strategy}`);
  assert.match(report.kernel, patched ? /-fusekeeper-patched$/ : /-fusekeeper-unpatched$/);
  assert.equal(report.privileged, true);
  assert.equal(report.fuse.passthrough, true);
  assert.equal(report.fuse.resend, true);
  assert.equal(report.fuse.closeAll, patched);
  assert.equal(report.strategy, patched ? 'close-all' : 'journal');
  assert.equal(report.problems.some((p) => p.code === 'NO_CLOSE_ALL'), !patched);
  assert.ok(report.problems.every((p) => p.severity !== 'error'), JSON.stringify(report.problems));
});
