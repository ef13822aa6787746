// The crash loop (bench/chaos.ts) inside the VM tier's kernels: `npm run chaos:vm -- [--kernel
// patched|unpatched] [chaos options]` (default: patched, 100 crashes). The kernel is the VM
// tier's cached build of linux-source-6.12 (built if missing, ~5 min), booted under qemu
// with the host's root as the guest's root, so the guest has the same fio, stress-ng and
// fs_mark; the checkout is read-only there, so the result comes back through the VM's results
// share and is written to bench/results/chaos-vm-<kernel>.json. On the patched kernel the
// supervisor cleans up with FUSE_DEV_IOC_BACKING_CLOSE_ALL, on the unpatched one with the journal.
// Root, qemu-system-x86 and `npm run prepare`; TCG emulation makes every step slower than here:
// each spare compiles its code eagerly and rehearses its take-over before it waits, so a crash
// takes about 30 s of the guest's time (0.03 crashes/s on 2026-12-06; `--timeout-minutes`,
// default 90, bounds the whole run).
import { copyFileSync, existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { buildKernels, VARIANTS } from '../test/vm/build-kernel.mjs';
import { GUEST_RESULTS, runInVm } from '../test/vm/run.mjs';
import { ROOT } from '../test/kernel/helpers/supervisor.ts';

const { values, positionals } = parseArgs({
  options: { kernel: { type: 'string', default: 'patched' }, crashes: { type: 'string', default: '100' }, 'timeout-minutes': { type: 'string', default: '90' } },
  allowPositionals: true,
  strict: false,
});
const variant = String(values.kernel);
if (!VARIANTS.includes(variant)) {
  console.error(`chaos:vm: --kernel must be one of ${VARIANTS.join(', ')}`);
  process.exit(2);
}
const timeoutMinutes = Number(values['timeout-minutes']);
if (!(timeoutMinutes > 0)) {
  console.error(`chaos:vm: --timeout-minutes must be a positive number, got ${JSON.stringify(values['timeout-minutes'])}`);
  process.exit(2);
}
if (!existsSync(join(ROOT, 'dist/bundle/fusekeeper-mirrorfs.mjs'))) {
  console.error('chaos:vm: run `npm run prepare` first');
  process.exit(2);
}
// Options this wrapper does not know go to bench/chaos.ts unchanged.
const passOn = process.argv.slice(2).filter((a, i, all) => !['--kernel', '--crashes', '--timeout-minutes'].includes(a) && !['--kernel', '--crashes', '--timeout-minutes'].includes(all[i - 1] ?? ''));
const images = await buildKernels([variant]);
const r = await runInVm({
  kernel: images[variant]!,
  command: [process.execPath, '--import', 'tsx', join(ROOT, 'bench/chaos.ts'), '--crashes', String(values.crashes), ...passOn, ...positionals],
  cwd: ROOT,
  env: { FUSEKEEPER_BENCH_RESULTS: GUEST_RESULTS },
  label: `chaos:${variant}`,
  timeoutMs: timeoutMinutes * 60_000,
  keepResults: true,
});
try {
  const out = join(r.resultsDir, 'chaos.json');
  if (!existsSync(out)) {
    console.error(`chaos:vm: the guest wrote no result (exit ${r.status}${r.timedOut ? ', timed out' : ''})`);
    process.exit(1);
  }
  mkdirSync(join(ROOT, 'bench/results'), { recursive: true });
  const dest = join(ROOT, `bench/results/chaos-vm-${variant}.json`);
  copyFileSync(out, dest);
  const f = (JSON.parse(readFileSync(dest, 'utf8')) as { figures: { crashes: number; applicationErrors: number; verifyFailures: number; leakedBackingReferences: { leakedBytes: number } } }).figures;
  console.log(
    `chaos:vm: ${variant} kernel: ${f.crashes} crashes, ${f.applicationErrors} application errors, ${f.verifyFailures} verify failures, ` +
      `${f.leakedBackingReferences.leakedBytes} leaked bytes; guest exit ${r.status} (${r.status === 0 ? 'PASS' : 'FAIL'}); wrote ${dest}`,
  );
  process.exit(r.status === 0 ? 0 : 1);
} finally {
  rmSync(r.resultsDir, { recursive: true, force: true });
}
