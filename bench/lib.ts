// Shared helpers for benchmarks: timing loops, percentiles, and writing results.
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { release, cpus } from 'node:os';

/** Nanoseconds per iteration of `fn`, best of `rounds` rounds of `iterations` calls. */
export function nsPerOp(fn: () => void, iterations: number, rounds = 5): number {
  for (let i = 0; i < Math.min(iterations, 1000); i++) fn();
  let best = Infinity;
  for (let r = 0; r < rounds; r++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < iterations; i++) fn();
    best = Math.min(best, Number(process.hrtime.bigint() - t0) / iterations);
  }
  return best;
}

/**
 * min/median/p99/max of a sample. The median of an even count is the mean of the middle two;
 * p99 is the nearest-rank percentile: the smallest value that at least 99% of the sample do
 * not exceed (of 100 values the second largest, of 1000 the eleventh largest).
 */
export function summarize(samples: number[]): { n: number; min: number; median: number; p99: number; max: number } {
  const s = [...samples].sort((a, b) => a - b);
  const n = s.length;
  if (n === 0) return { n, min: NaN, median: NaN, p99: NaN, max: NaN };
  const median = n % 2 === 1 ? s[(n - 1) / 2]! : (s[n / 2 - 1]! + s[n / 2]!) / 2;
  return { n, min: s[0]!, median, p99: s[Math.ceil(0.99 * n) - 1]!, max: s[n - 1]! };
}

/** `summarize`, every figure but `n` rounded to `decimals` places (for results files and tables). */
export function summarizeRounded(samples: number[], decimals = 2): Record<'n' | 'min' | 'median' | 'p99' | 'max', number> {
  const scale = 10 ** decimals;
  const s = summarize(samples);
  return { n: s.n, min: Math.round(s.min * scale) / scale, median: Math.round(s.median * scale) / scale, p99: Math.round(s.p99 * scale) / scale, max: Math.round(s.max * scale) / scale };
}

/**
 * Writes `bench/results/<name>.json` (or into $FUSEKEEPER_BENCH_RESULTS: a benchmark run in
 * the VM, whose checkout is read-only) with the machine's description and prints where.
 */
export function writeResult(name: string, figures: Record<string, unknown>): string {
  const dir = process.env.FUSEKEEPER_BENCH_RESULTS ?? join(dirname(fileURLToPath(import.meta.url)), 'results');
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `${name}.json`);
  const doc = {
    benchmark: name,
    date: new Date().toISOString(),
    machine: { kernel: release(), cpu: cpus()[0]?.model ?? 'unknown', cores: cpus().length, node: process.version },
    figures,
  };
  writeFileSync(file, `${JSON.stringify(doc, null, 2)}\n`);
  console.log(`wrote ${file}`);
  return file;
}

const STALL_SPINNER = `
const { parentPort, workerData } = require('node:worker_threads');
const gaps = [];
const end = process.hrtime.bigint() + BigInt(workerData.ms) * 1000000n;
let last = process.hrtime.bigint();
for (;;) {
  const now = process.hrtime.bigint();
  if (now - last > 200000n) gaps.push(Number(now - last) / 1e6);
  last = now;
  if (now > end) break;
}
parentPort.postMessage(gaps);
`;

/**
 * The machine's CPU time so far from /proc/stat's `cpu` line, summed over its CPUs, in
 * USER_HZ ticks (10 ms): `steal` is the time a hypervisor that reports it (KVM's steal clock)
 * ran something else while a virtual CPU of this machine had work to do; `total` is every
 * column (user to steal) added up.
 */
export function cpuTicks(): { steal: number; total: number } {
  const cols = /^cpu +(.*)$/m.exec(readFileSync('/proc/stat', 'latin1'))![1]!.trim().split(/ +/).map(Number);
  // user nice system idle iowait irq softirq steal [guest guest_nice: already in user, nice]
  return { steal: cols[7] ?? 0, total: cols.slice(0, 8).reduce((a, b) => a + b, 0) };
}

/**
 * How much of the CPU this machine really gives: one thread per core spins for `ms`
 * reading the clock, and every gap of more than 0.2 ms is time that thread did not run
 * (the hypervisor took the virtual CPU away, or the kernel ran something else). With every
 * core busy, a VM whose host caps its CPU time shows it here as stalls of milliseconds; a
 * blackout measured in milliseconds includes any that fall in it.
 */
export async function cpuStalls(ms = 2000): Promise<{ cores: number; stalledPct: number; stalls: number; medianMs: number; p90Ms: number; maxMs: number }> {
  const { Worker } = await import('node:worker_threads');
  const runs = await Promise.all(
    cpus().map(
      () =>
        new Promise<number[]>((resolve, reject) => {
          const w = new Worker(STALL_SPINNER, { eval: true, workerData: { ms } });
          w.once('message', resolve);
          w.once('error', reject);
        }),
    ),
  );
  const gaps = runs.flat().sort((a, b) => a - b);
  const total = gaps.reduce((a, b) => a + b, 0);
  const r2 = (x: number): number => Math.round(x * 100) / 100;
  return {
    cores: runs.length,
    stalledPct: r2((100 * total) / (ms * runs.length)),
    stalls: gaps.length,
    medianMs: r2(gaps[Math.floor(gaps.length / 2)] ?? 0),
    p90Ms: r2(gaps[Math.floor(gaps.length * 0.9)] ?? 0),
    maxMs: r2(gaps.at(-1) ?? 0),
  };
}
