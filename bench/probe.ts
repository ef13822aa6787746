// The 1 ms application probe (bench/drivers/probe.c) for bench/chaos.ts and
// bench/failover.ts: compiled with cc, started as its own process against files in a
// mount, its records read back and attributed to crashes. Blackout of a crash = the longest
// stat()/open() of the probe among the iterations that began in that crash's window.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';

export const PROBE_SOURCE = new URL('./drivers/probe.c', import.meta.url).pathname;
const RECORD = 32;
export const PROBE_OPS = ['none', 'stat', 'open', 'read', 'close'] as const;

/** One probe iteration. Times in nanoseconds; `start` is CLOCK_MONOTONIC (process.hrtime.bigint()). */
export interface ProbeRecord {
  start: bigint;
  stat: number;
  open: number;
  read: number;
  close: number;
  /** errno of the first call that failed, 0 if none. */
  err: number;
  /** Which call failed (index into PROBE_OPS). */
  op: number;
}

/** Compiles the probe into `dir`; returns the binary's path. Throws with cc's output. */
export function buildProbe(dir: string): string {
  const bin = join(dir, 'probe');
  const r = spawnSync('cc', ['-O2', '-Wall', '-o', bin, PROBE_SOURCE], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`cc ${PROBE_SOURCE} failed (scripts/install-deps.sh installs gcc): ${r.error?.message ?? ''}${r.stderr}`);
  return bin;
}

/** Creates `n` probe files p0..p<n-1> of `size` bytes in `dir` (through the mount). */
export function makeProbeFiles(dir: string, n = 16, size = 4096): void {
  mkdirSync(dir, { recursive: true });
  for (let i = 0; i < n; i++) writeFileSync(join(dir, `p${i}`), Buffer.alloc(size, 0x61 + (i % 26)));
}

export interface Probe {
  child: ChildProcess;
  /** SIGTERM, wait for the exit (it finishes the iteration it is in), and read every record. */
  stop(): Promise<ProbeRecord[]>;
  /** Records written so far (flushed every 64 iterations). */
  records(): ProbeRecord[];
}

export function startProbe(bin: string, dir: string, out: string, opts: { files?: number; intervalUs?: number } = {}): Probe {
  const child = spawn(bin, [dir, String(opts.files ?? 16), String(opts.intervalUs ?? 1000), out], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (c: string) => (stderr += c));
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => child.once('exit', (code, signal) => r({ code, signal })));
  const read = (): ProbeRecord[] => {
    try {
      return parseProbeRecords(readFileSync(out));
    } catch {
      return [];
    }
  };
  return {
    child,
    records: read,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      const e = await exit;
      if (e.code !== 0) throw new Error(`probe exited ${e.signal ?? e.code}: ${stderr}`);
      return read();
    },
  };
}

export function parseProbeRecords(buf: Buffer): ProbeRecord[] {
  const out: ProbeRecord[] = [];
  for (let o = 0; o + RECORD <= buf.length; o += RECORD) {
    out.push({
      start: buf.readBigInt64LE(o),
      stat: buf.readUInt32LE(o + 8),
      open: buf.readUInt32LE(o + 12),
      read: buf.readUInt32LE(o + 16),
      close: buf.readUInt32LE(o + 20),
      err: buf.readInt32LE(o + 24),
      op: buf.readUInt32LE(o + 28),
    });
  }
  return out;
}

/** The longest stat() or open() of a record, ns. */
export const metaLatency = (r: ProbeRecord): number => Math.max(r.stat, r.open);
/** The longest call of a record, ns. */
export const anyLatency = (r: ProbeRecord): number => Math.max(r.stat, r.open, r.read, r.close);

/**
 * Blackout per crash: for crash i at `crashes[i]` (hrtime ns), the longest stat()/open() of
 * iterations that began in [crashes[i] - slack, crashes[i+1] - slack) (the last window ends
 * at `end`; `maxWindowNs` shortens every window to that long after its crash). Records must
 * be in start order (the probe writes them so).
 */
export function blackouts(records: ProbeRecord[], crashes: bigint[], end: bigint, slackNs = 20_000_000n, maxWindowNs?: bigint): { ns: number; samples: number }[] {
  const out: { ns: number; samples: number }[] = crashes.map(() => ({ ns: 0, samples: 0 }));
  let k = 0;
  for (const r of records) {
    while (k < crashes.length && r.start >= (k + 1 < crashes.length ? crashes[k + 1]! : end) - slackNs) k++;
    if (k >= crashes.length) break;
    if (r.start < crashes[k]! - slackNs) continue;
    // With `maxWindowNs`, only iterations that began within that long after the crash.
    if (maxWindowNs !== undefined && r.start > crashes[k]! + maxWindowNs) continue;
    const o = out[k]!;
    o.samples++;
    o.ns = Math.max(o.ns, metaLatency(r));
  }
  return out;
}

/**
 * Blackout per crash (`ns`: the longest call of any kind, since a crash can catch the probe
 * in its read or close as well; `statOpenNs`: stat()/open() only), the strict way: the probe is one sequential process, so after a crash
 * at t the first iteration that begins 1 ms or more after t is sure to need the new daemon
 * (the killed one may still finish writing a reply it had begun), and the ones before it may
 * wait for it too. The blackout is the longest stat()/open()
 * among iterations that began from `slackNs` before t up to the end of that first iteration:
 * the wait the application saw, without whatever slowness came later (a new spare starting).
 */
export function blackoutsToResume(records: ProbeRecord[], crashes: bigint[], slackNs = 20_000_000n, settleNs = 1_000_000n): { ns: number; statOpenNs: number; resumedAfterNs: number }[] {
  const total = (r: ProbeRecord): bigint => BigInt(r.stat) + BigInt(r.open) + BigInt(r.read) + BigInt(r.close);
  return crashes.map((t) => {
    // A reply the daemon was writing when SIGKILL came still lands: the first iteration that
    // needs the new daemon is the first begun `settleNs` (1 ms) after the kill.
    let i = records.findIndex((r) => r.start >= t + settleNs);
    if (i < 0) return { ns: NaN, statOpenNs: NaN, resumedAfterNs: NaN };
    const resumed = records[i]!.start + total(records[i]!);
    let ns = 0;
    let statOpenNs = 0;
    const take = (r: ProbeRecord): void => {
      ns = Math.max(ns, anyLatency(r));
      statOpenNs = Math.max(statOpenNs, metaLatency(r));
    };
    for (let j = i; j >= 0 && records[j]!.start >= t - slackNs; j--) take(records[j]!);
    for (; i < records.length && records[i]!.start <= resumed; i++) take(records[i]!);
    return { ns, statOpenNs, resumedAfterNs: Number(resumed - t) };
  });
}
