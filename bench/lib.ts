// Shared helpers for benchmarks: timing loops, percentiles, and writing results.
import { writeFileSync, mkdirSync } from 'node:fs';
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

/** min/median/p99/max of a sample. */
export function summarize(samples: number[]): { n: number; min: number; median: number; p99: number; max: number } {
  const s = [...samples].sort((a, b) => a - b);
  const at = (q: number): number => s[Math.min(s.length - 1, Math.floor(q * s.length))] ?? NaN;
  return { n: s.length, min: s[0] ?? NaN, median: at(0.5), p99: at(0.99), max: s.at(-1) ?? NaN };
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
