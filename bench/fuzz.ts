// Control-protocol fuzzing (issue 7, item 4): a fixed count of generated frames (valid,
// mutated, truncated, oversized, out-of-order, with random fd attachments, abrupt disconnects)
// against a live `fusekeeper serve`, then: 0 crashes, 0 hangs, supervisor fds back to the
// baseline, no mounts left. The generator and the checks are test/kernel/helpers/fuzz.ts.
//
// Run: npm run fuzz -- [--count N] [--seed S] [--concurrency C] [--deadline-ms MS] [--no-sessions] [--keep]
//      npm run bench -- fuzz        (defaults: 100000 frames, seed 1)
// Needs root, /dev/fuse and a build (npm run prepare).
import { parseArgs } from 'node:util';
import { pathToFileURL } from 'node:url';
import { formatReport, runFuzz, type FuzzOptions } from '../test/kernel/helpers/fuzz.ts';
import { writeResult } from './lib.ts';

const DEFAULTS = { count: 100_000, seed: 1, concurrency: 16, deadlineMs: 5000 };

function options(argv: string[]): FuzzOptions & { keepTemp: boolean } {
  const { values } = parseArgs({
    args: argv,
    options: {
      count: { type: 'string' },
      seed: { type: 'string' },
      concurrency: { type: 'string' },
      'deadline-ms': { type: 'string' },
      'no-sessions': { type: 'boolean' },
      keep: { type: 'boolean' },
    },
    allowPositionals: false,
  });
  const int = (v: string | undefined, d: number, what: string): number => {
    if (v === undefined) return d;
    const n = Number(v);
    if (!Number.isInteger(n) || n < 0) throw new Error(`--${what} expects a non-negative integer, got ${v}`);
    return n;
  };
  return {
    count: int(values.count, DEFAULTS.count, 'count'),
    seed: int(values.seed, DEFAULTS.seed, 'seed'),
    concurrency: Math.max(1, int(values.concurrency, DEFAULTS.concurrency, 'concurrency')),
    deadlineMs: Math.max(100, int(values['deadline-ms'], DEFAULTS.deadlineMs, 'deadline-ms')),
    sessions: !values['no-sessions'],
    keepTemp: values.keep ?? false,
  };
}

/** Runs the fuzzer, prints the summary, writes bench/results/fuzz.json; resolves false on failure. */
export async function fuzz(argv: string[] = []): Promise<boolean> {
  const opts = options(argv);
  console.log(`fuzz: ${opts.count} frames, seed ${opts.seed}, ${opts.concurrency} connections at once, deadline ${opts.deadlineMs} ms per frame`);
  const r = await runFuzz({ ...opts, progress: (line) => console.log(line) });
  console.log(formatReport(r));
  writeResult('fuzz', {
    unit: 'frames sent to a live supervisor; durations in ms',
    seed: r.seed,
    concurrency: r.concurrency,
    deadlineMs: r.deadlineMs,
    messagesSent: r.messagesSent,
    durationMs: r.durationMs,
    msgsPerSec: r.msgsPerSec,
    supervisorCrashes: r.supervisor.aliveAtEnd ? 0 : 1,
    hangs: r.hangs.length,
    leakedFds: r.fds.leaked.length,
    leftoverMounts: r.leftoverMounts.length,
    passed: r.failures.length === 0,
    failures: r.failures,
    byCategory: r.byCategory,
    byKind: r.byKind,
    messagesWithFds: r.messagesWithFds,
    fdsAttached: r.fdsAttached,
    fdsAttachedByKind: r.fdsAttachedByKind,
    outcomes: r.outcomes,
    framesReceived: r.framesReceived,
    errorsByCode: r.errorsByCode,
    connections: r.connections,
    disconnects: r.disconnects,
    sessions: r.sessions,
    health: { statusChecks: r.health.statusChecks, cliChecks: r.health.cliChecks, failures: r.health.failures },
    supervisor: {
      aliveAtEnd: r.supervisor.aliveAtEnd,
      exitCode: r.supervisor.exitCode,
      fatalLines: r.supervisor.fatalLines,
      internalErrors: r.supervisor.internalErrors,
      errorEvents: r.supervisor.errorEvents,
      logLines: r.supervisor.logLines,
    },
    fds: r.fds,
    anomalies: Object.fromEntries(Object.entries(r.anomalies).map(([k, v]) => [k, v.count])),
  });
  if (r.failures.length > 0) console.log(`kept ${r.tempDir} (socket, config, supervisor.log)`);
  return r.failures.length === 0;
}

/** `npm run bench -- fuzz`: the defaults. */
export async function run(): Promise<void> {
  if (!(await fuzz([]))) process.exitCode = 1;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  if (!(await fuzz(process.argv.slice(2)))) process.exitCode = 1;
}
