import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { runDoctor, type DoctorReport } from '../../kernel/doctor.ts';
import { fdSnapshot, newFds } from './helpers/connection.ts';

const cli = new URL('../../bin/fusekeeper.js', import.meta.url).pathname;

function doctorMounts(): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter((l) => l.includes('fusekeeper-doctor'));
}

function doctorTempDirs(): string[] {
  return readdirSync(tmpdir()).filter((d) => d.startsWith('fusekeeper-doctor-'));
}

test('fusekeeper doctor --json reports what this kernel can do, in the stable shape', () => {
  const before = doctorTempDirs();
  const out = execFileSync(cli, ['doctor', '--json'], { encoding: 'utf8' });
  const report = JSON.parse(out) as DoctorReport;
  assert.deepEqual(Object.keys(report).sort(), ['fuse', 'kernel', 'privileged', 'problems', 'strategy']);
  assert.deepEqual(Object.keys(report.fuse).sort(), ['closeAll', 'passthrough', 'protocol', 'resend']);
  assert.equal(report.privileged, true);
  assert.match(report.fuse.protocol ?? '', /^7\.\d+$/);
  assert.equal(report.fuse.passthrough, true);
  assert.equal(report.fuse.resend, true);
  if (report.fuse.closeAll) {
    assert.equal(report.strategy, 'close-all');
  } else {
    assert.equal(report.strategy, 'journal');
    assert.ok(report.problems.some((p) => p.code === 'NO_CLOSE_ALL' && p.severity === 'info'));
  }
  assert.ok(report.problems.every((p) => p.severity !== 'error'), JSON.stringify(report.problems));
  assert.deepEqual(doctorMounts(), []);
  assert.deepEqual(doctorTempDirs(), before);
});

test('the doctor leaves no mount and no fd behind in its own process', async () => {
  const before = fdSnapshot();
  const report = await runDoctor();
  assert.equal(report.fuse.passthrough, true);
  assert.deepEqual(newFds(before), []);
  assert.deepEqual(doctorMounts(), []);
});

test('fusekeeper doctor prints a readable table and its help tells the truth', () => {
  const table = execFileSync(cli, ['doctor'], { encoding: 'utf8' });
  assert.match(table, /^kernel\s+\S+/m);
  assert.match(table, /^cleanup strategy\s+(journal|close-all)$/m);
  const help = execFileSync(cli, ['doctor', '--help'], { encoding: 'utf8' });
  assert.match(help, /usage: fusekeeper doctor \[--json\]/);
});
