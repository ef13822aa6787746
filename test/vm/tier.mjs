#!/usr/bin/env node
// The VM tier (`npm run test:vm`, part of `npm test`): builds (or finds cached) the patched and
// the unpatched kernel of the same linux-source-6.12, boots each under qemu and runs the guest
// test files inside, from this checkout, with FUSEKEEPER_VM_KERNEL=patched|unpatched. Prints
// which kernels ran, the result of every scenario per kernel, and the timings. Exit status 0
// only when every scenario passed on both kernels.
//
// Expects dist/ to be built (scripts/test.mjs builds it first; `doctor` runs bin/fusekeeper.js).
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BuildError, buildKernels, stage, VARIANTS } from './build-kernel.mjs';
import { GUEST_RESULTS, runInVm } from './run.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

/**
 * The test files run inside the guest, on both kernels, one at a time (paths relative to the
 * checkout). Add the supervisor's crash/recovery scenarios here: they get
 * FUSEKEEPER_VM_KERNEL=patched|unpatched (test/vm/guest/env.ts) and should expect the
 * close-all strategy on the patched kernel and journal on the unpatched one.
 */
export const GUEST_TESTS = [
  'test/vm/guest/doctor.test.ts',
  'test/vm/guest/backing.test.ts',
  // The supervisor's crash/recovery scenarios, on each strategy.
  'test/kernel/recovery.test.ts',
  // What the fence and the process events connector rely on, on 6.12 as on the host.
  'test/kernel/fence.test.ts',
];

/**
 * Guest tests run on one kernel only. The crash-loop harness runs here (`npm run chaos:vm`,
 * close-all strategy by default); 2 crashes of it take about 4.5 minutes of TCG, most of it
 * starting and stopping the workloads and spares. Its journal strategy runs on the host.
 */
const GUEST_TESTS_BY_KERNEL = { patched: ['test/vm/guest/chaos.test.ts'], unpatched: [] };

/** Per-kernel time limit for boot + all guest tests: they take 6 min on a quiet host, 10 on a busy one (TCG). */
const GUEST_TIMEOUT_MS = Number(process.env.FUSEKEEPER_VM_TIMEOUT ?? 30 * 60) * 1000;

function guestUptime(consoleText, marker) {
  const m = new RegExp(`${marker} (?:at )?([0-9.]+)s`).exec(consoleText);
  return m ? Number(m[1]) : null;
}

function readResults(file) {
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
}

async function runKernel(variant, image) {
  const command = [
    process.execPath, '--import', 'tsx', '--test', '--test-concurrency=1',
    '--test-reporter=spec', '--test-reporter-destination=stdout',
    `--test-reporter=${join(root, 'test/vm/guest/reporter.mjs')}`, `--test-reporter-destination=${GUEST_RESULTS}/results.jsonl`,
    ...GUEST_TESTS,
    ...GUEST_TESTS_BY_KERNEL[variant],
  ];
  stage(`${variant}: booting ${relative(root, image).startsWith('..') ? image : relative(root, image)} with ${GUEST_TESTS.length + GUEST_TESTS_BY_KERNEL[variant].length} guest test files ...`);
  const r = await runInVm({
    kernel: image,
    command,
    cwd: root,
    env: { FUSEKEEPER_VM_KERNEL: variant, ...(process.env.CI ? { CI: process.env.CI } : {}) },
    label: variant,
    timeoutMs: GUEST_TIMEOUT_MS,
    keepResults: true,
  });
  const results = readResults(join(r.resultsDir, 'results.jsonl'));
  const release = /init up at [0-9.]+s of guest uptime, kernel (\S+)/.exec(r.console)?.[1] ?? '?';
  const cmdStart = guestUptime(r.console, 'running the command');
  const cmdEnd = guestUptime(r.console, `command exited -?\\d+`);
  rmSync(r.resultsDir, { recursive: true, force: true });
  const timing = {
    boot: r.bootSeconds,
    tests: cmdStart !== null && cmdEnd !== null ? cmdEnd - cmdStart : null,
    total: r.seconds,
  };
  stage(`${variant}: guest exited ${r.status}${r.timedOut ? ' (TIMEOUT)' : ''}: init up after ${timing.boot?.toFixed(1) ?? '?'}s, guest tests ${timing.tests?.toFixed(1) ?? '?'}s, qemu total ${timing.total.toFixed(1)}s`);
  return { variant, image, release, status: r.status, timedOut: r.timedOut, results, timing };
}

async function main() {
  if (!existsSync(join(root, 'dist/bundle/fusekeeper.mjs'))) {
    console.error('vm: dist/ is not built: run `npm run prepare` (npm test does) first');
    return 1;
  }
  stage(`VM tier: kernels ${VARIANTS.join(' + ')} from one linux-source-6.12; guest tests: ${GUEST_TESTS.join(', ')}; on one kernel only: ${JSON.stringify(GUEST_TESTS_BY_KERNEL)}`);
  let images;
  try {
    images = await buildKernels(VARIANTS);
  } catch (err) {
    if (err instanceof BuildError) {
      console.error(`vm: BUILD FAILED: ${err.message}`);
      return 1;
    }
    throw err;
  }
  const runs = [];
  for (const v of VARIANTS) runs.push(await runKernel(v, images[v]));

  let failed = false;
  console.log('\nvm: ===== VM tier results =====');
  for (const run of runs) {
    console.log(`vm: kernel ${run.variant}: ${run.release} (${run.image})`);
    console.log(`vm:   boot ${run.timing.boot?.toFixed(1) ?? '?'}s, guest tests ${run.timing.tests?.toFixed(1) ?? '?'}s, total ${run.timing.total.toFixed(1)}s, guest exit ${run.status}${run.timedOut ? ' TIMEOUT' : ''}`);
    const tests = run.results.filter((e) => e.kind === 'test');
    for (const e of tests) {
      const file = relative(root, e.file ?? '');
      console.log(`vm:   ${e.result.toUpperCase().padEnd(4)}  ${'  '.repeat(e.nesting ?? 0)}${e.name}  [${file}${e.ms !== undefined ? `, ${(e.ms / 1000).toFixed(1)}s` : ''}]`);
      if (e.error) console.log(`vm:         ${e.error.split('\n').join('\nvm:         ')}`);
    }
    for (const d of run.results.filter((e) => e.kind === 'diagnostic')) console.log(`vm:   note  ${d.message}`);
    const bad = tests.filter((e) => e.result === 'fail');
    const passed = tests.filter((e) => e.result === 'pass');
    if (run.status !== 0 || bad.length > 0 || passed.length === 0) {
      failed = true;
      console.log(`vm:   => kernel ${run.variant} FAILED (${bad.length} failing, ${passed.length} passing, guest exit ${run.status})`);
    } else {
      console.log(`vm:   => kernel ${run.variant} passed (${passed.length} scenarios${tests.length > passed.length ? `, ${tests.length - passed.length} skipped` : ''})`);
    }
  }
  stage(failed ? 'VM tier FAILED' : 'VM tier passed on both kernels');
  return failed ? 1 : 0;
}

main().then((code) => process.exit(code), (err) => {
  console.error(err);
  process.exit(1);
});
