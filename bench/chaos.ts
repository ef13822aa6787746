// Crash-loop harness: mirrorfs under the supervisor over a 512 MiB tmpfs, real workloads
// running throughout, the daemon killed again and again. `npm run chaos -- --crashes N`.
//
//   supervisor   `fusekeeper serve` (the compiled CLI), one session `chaos`
//   daemons      `fusekeeper-mirrorfs SRC MNT --socket S --name chaos --standby`; the first
//                creates the session, the next ones wait as warm standbys, queued in spawn
//                order, so daemon k becomes the owner of generation k (--depth 0: no spare,
//                each daemon is started after its predecessor died: cold restarts)
//   workloads    fio --verify=crc32c, buffered and O_DIRECT (through passthrough), in a loop;
//                stress-ng file stressors (hdd --verify, rename, dir, dentry, link, symlink,
//                fallocate, xattr) for the whole run; fs_mark (create, write, fsync) in a
//                loop, its files deleted with rm -rf between runs; the probe
//                (bench/drivers/probe.c): stat, open, read, close of a file every 1 ms,
//                latency and errno of each call logged
//   crashes      each owner is killed once: SIGKILL at a random moment 0..300 ms after it
//                took the session over (so some die while still resuming), or, for about a
//                third of them, by the test-only fault hooks of client/fuse/fault.ts armed
//                in that daemon's environment: after executing mkdir/create/unlink/rename
//                and before replying, or between FUSE_DEV_IOC_BACKING_OPEN and the journal
//                report. A hook that has not fired within 5 s is replaced by a SIGKILL.
//
// At the end: workloads stopped and checked, every file deleted through the mount, tmpfs
// usage compared with the empty tmpfs (a leaked backing id pins a deleted file), the session
// released, the supervisor's fds compared with its fds before the session existed.
// Writes bench/results/chaos.json. Needs root, /dev/fuse, cc, fio, stress-ng, fs_mark
// (scripts/install-deps.sh) and the compiled CLI (`npm run prepare`).
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, rmSync, statfsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { loadavg } from 'node:os';
import { connectSupervisor, type SupervisorClient } from '../client/supervisor.ts';
import type { SessionStatus } from '../supervisor/session.ts';
import { startSupervisor, waitUntil, unmountUnder, hermeticEnv, grantRealtimeRuntime, ROOT, type SupervisorProcess } from '../test/kernel/helpers/supervisor.ts';
import { buildProbe, makeProbeFiles, startProbe, blackouts, blackoutsToResume, anyLatency, metaLatency, PROBE_OPS } from './probe.ts';
import { summarizeRounded, writeResult } from './lib.ts';
import { setXattr, NativeError } from '../native/index.ts';
import { mulberry32 } from '../test/unit/fixtures/prng.ts';

const MIRRORFS = join(ROOT, 'bin/fusekeeper-mirrorfs.js');
const FAULTS = ['after-exec:mkdir', 'after-exec:create', 'after-exec:unlink', 'after-exec:rename', 'after-backing-open'] as const;
type CrashKind = 'sigkill' | (typeof FAULTS)[number];
const SESSION = 'chaos';

const { values: args } = parseArgs({
  options: {
    crashes: { type: 'string', default: '1000' },
    seed: { type: 'string' },
    depth: { type: 'string', default: '2' },
    'fault-share': { type: 'string', default: '0.3' },
    'max-kill-delay': { type: 'string', default: '300' },
    'tmpfs-mib': { type: 'string', default: '512' },
    'max-minutes': { type: 'string', default: '0' },
    'supervisor-node-options': { type: 'string' },
    'metadata-on-main': { type: 'boolean', default: false },
    quiet: { type: 'boolean', default: false },
    verbose: { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h' },
  },
});
if (args.help) {
  console.log(`usage: npm run chaos -- [--crashes N] [--seed S] [--depth D] [--fault-share F] [--max-kill-delay MS] [--max-minutes M]

  --crashes N         daemon crashes to cause (default 1000)
  --seed S            random seed (default: time); the run is not fully deterministic (timing)
  --depth D           warm standbys kept waiting (default 2; 0 = cold restarts)
  --fault-share F     share of crashes by fault hook rather than SIGKILL (default 0.3)
  --max-kill-delay MS SIGKILL lands 0..MS after the hand-over (default 300)
  --max-minutes M     stop crashing after M minutes even if N is not reached (0 = no limit)
  --supervisor-node-options O   NODE_OPTIONS for the supervisor only (e.g. --max-old-space-size=64)
  --metadata-on-main  start fusekeeper-mirrorfs with --metadata-on-main (its lookups, stats
                      and opens on its main thread instead of libuv's thread pool)
Writes bench/results/chaos.json.`);
  process.exit(0);
}
const CRASHES = Number(args.crashes);
const DEPTH = Number(args.depth);
const FAULT_SHARE = Number(args['fault-share']);
const MAX_KILL_DELAY = Number(args['max-kill-delay']);
const MAX_MS = Number(args['max-minutes']) * 60_000;
const SEED = Number(args.seed ?? Date.now() % 2 ** 31);
const random = mulberry32(SEED);

function requireTools(): void {
  if (process.getuid?.() !== 0) throw new Error('chaos: needs root (mounts FUSE and tmpfs)');
  if (!existsSync(join(ROOT, 'dist/bundle/fusekeeper-mirrorfs.mjs'))) throw new Error('chaos: the compiled CLI is missing: run `npm run prepare`');
  for (const tool of ['fio', 'stress-ng', 'fs_mark', 'cc']) {
    if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0) throw new Error(`chaos: ${tool} is missing (run scripts/install-deps.sh)`);
  }
}

/** Keeps the last `max` characters of a stream. */
function tail(max = 16_384): { push(s: string): void; text(): string } {
  let t = '';
  return {
    push(s) {
      t += s;
      if (t.length > 2 * max) t = t.slice(-max);
    },
    text: () => t.slice(-max),
  };
}

// ---------------------------------------------------------------------------------------------
// Daemons

interface Daemon {
  /** 1-based spawn number: the generation it will own. */
  n: number;
  kind: CrashKind;
  pid: number;
  child: ChildProcess;
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  exited: boolean;
  /** Its `mirrorfs.ready` line appeared: it serves. */
  ready: Promise<void>;
  isReady: boolean;
  /** Its `mirrorfs.resumed` line appeared (a daemon that took the session over logs it after `mirrorfs.ready`). */
  resumed: Promise<void>;
  /** It waits as a standby, or owns the session. */
  settled: boolean;
  stderr(): string;
}

function spawnDaemon(n: number, kind: CrashKind, source: string, mountpoint: string, socket: string, standby: boolean): Daemon {
  const env = hermeticEnv();
  if (kind !== 'sigkill') env.FUSEKEEPER_FAULT = kind;
  const child = spawn(process.execPath, [MIRRORFS, source, mountpoint, '--socket', socket, '--name', SESSION, ...(standby ? ['--standby'] : []), ...(args['metadata-on-main'] ? ['--metadata-on-main'] : [])], { stdio: ['ignore', 'ignore', 'pipe'], env });
  const err = tail();
  let readyResolve!: () => void;
  let resumedResolve!: () => void;
  let resumedSeen = false;
  const d: Daemon = {
    n,
    kind,
    pid: child.pid!,
    child,
    exited: false,
    exit: new Promise((r) =>
      child.once('exit', (code, signal) => {
        d.exited = true;
        r({ code, signal });
      }),
    ),
    ready: new Promise((r) => (readyResolve = r)),
    isReady: false,
    resumed: new Promise((r) => (resumedResolve = r)),
    settled: false,
    stderr: err.text,
  };
  let seen = '';
  child.stderr!.setEncoding('utf8').on('data', (c: string) => {
    err.push(c);
    if (resumedSeen) return;
    seen = (seen + c).slice(-4096);
    if (!d.isReady && seen.includes('"event":"mirrorfs.ready"')) {
      d.isReady = true;
      readyResolve();
    }
    if (seen.includes('"event":"mirrorfs.resumed"')) {
      resumedSeen = true;
      resumedResolve();
    }
  });
  return d;
}

// ---------------------------------------------------------------------------------------------
// Workloads

interface WorkloadResult {
  name: string;
  runs: number;
  failures: { run: number; code: number | null; signal: string | null; output: string }[];
  verifyFailures: number;
}

interface Workload {
  result: WorkloadResult;
  /** Asks it to stop after the current run (or at once, for stress-ng); resolves when done. */
  stop(): Promise<WorkloadResult>;
}

/** Process groups of workload runs in progress. */
const workloadPids = new Set<number>();

/** Set when a run is aborted: workload loops start no new run. */
let abandon = false;

/** SIGKILLs every workload process group still running (an aborted run). */
function killWorkloads(): void {
  abandon = true;
  for (const pid of workloadPids) {
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
}

let abortRun!: (err: Error) => void;
/** Rejects when the run is interrupted (SIGINT/SIGTERM). */
const aborted = new Promise<never>((_, reject) => (abortRun = reject));
aborted.catch(() => {});
/** `p`, unless the run is interrupted first. */
const guard = <T>(p: Promise<T>): Promise<T> => Promise.race([p, aborted]);

function run(cmd: string, argv: string[], opts: { cwd?: string; onSpawn?: (c: ChildProcess) => void } = {}): Promise<{ code: number | null; signal: NodeJS.Signals | null; output: string }> {
  return new Promise((resolve) => {
    let child: ChildProcess;
    try {
      // Its own process group, so that an aborted run can kill it with every child it made.
      child = spawn(cmd, argv, { cwd: opts.cwd, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
      workloadPids.add(child.pid!);
      child.once('exit', () => workloadPids.delete(child.pid!));
    } catch (err) {
      resolve({ code: -1, signal: null, output: `cannot spawn ${cmd}: ${(err as Error).message}` });
      return;
    }
    opts.onSpawn?.(child);
    const out = tail(32_768);
    child.stdout!.setEncoding('utf8').on('data', (c: string) => out.push(c));
    child.stderr!.setEncoding('utf8').on('data', (c: string) => out.push(c));
    child.once('error', (e) => out.push(`spawn error: ${e.message}`));
    child.once('close', (code, signal) => resolve({ code, signal, output: out.text() }));
  });
}

/** Runs `once()` again and again until stopped; a run that fails is recorded. */
function loop(name: string, once: () => Promise<{ code: number | null; signal: NodeJS.Signals | null; output: string }>, isVerifyFailure: (output: string) => number): Workload {
  const result: WorkloadResult = { name, runs: 0, failures: [], verifyFailures: 0 };
  let stopping = false;
  const done = (async () => {
    while (!stopping && !abandon) {
      const r = await once();
      if (abandon) break;
      result.runs++;
      if (r.code !== 0) {
        result.failures.push({ run: result.runs, code: r.code, signal: r.signal, output: r.output.slice(-6000) });
        result.verifyFailures += isVerifyFailure(r.output);
        await sleep(1000); // no spinning on a failure that repeats at once
      }
    }
  })();
  return {
    result,
    async stop() {
      stopping = true;
      await done;
      return result;
    },
  };
}

const verifyLines = (output: string): number => output.split('\n').filter((l) => /verif/i.test(l) && /(fail|bad|mismatch|error)/i.test(l)).length;

function fioLoop(name: string, dir: string, direct: boolean): Workload {
  mkdirSync(dir, { recursive: true });
  const job = direct
    ? ['--name=direct', '--rw=randwrite', '--bs=64k', '--direct=1', '--size=16m']
    : ['--name=buffered', '--rw=randwrite', '--bs=4k', '--direct=0', '--size=16m'];
  const argv = ['--ioengine=psync', `--directory=${dir}`, '--verify=crc32c', '--do_verify=1', '--verify_fatal=1', '--verify_state_save=0', '--output-format=normal', ...job];
  return loop(name, () => run('fio', argv, { cwd: dir }), verifyLines);
}

function fsmarkLoop(dir: string): Workload {
  mkdirSync(dir, { recursive: true });
  return loop(
    'fs_mark',
    async () => {
      // fs_mark wants a directory name under 40 bytes: relative to its working directory.
      const r = await run('fs_mark', ['-d', 'run', '-s', '4096', '-n', '100', '-L', '2', '-S', '1', '-t', '1'], { cwd: dir });
      if (r.code !== 0) return r;
      // Delete what it made, through the mount (unlink under crashes too).
      return run('rm', ['-rf', join(dir, 'run')]);
    },
    () => 0,
  );
}

/** Whether files in `dir` take a user.* xattr. */
function hasUserXattrs(dir: string): boolean {
  const probe = join(dir, '.xattr-probe');
  writeFileSync(probe, '');
  try {
    setXattr(probe, 'user.fusekeeper', Buffer.from('1'), 0);
    return true;
  } catch (err) {
    if (err instanceof NativeError && (err.code === 'EOPNOTSUPP' || err.code === 'ENOTSUP')) return false;
    throw err;
  } finally {
    rmSync(probe);
  }
}

/**
 * One stress-ng for the whole run; SIGINT ends it (exit 0 when no stressor failed). The xattr
 * stressor only where the source filesystem keeps user xattrs (tmpfs needs CONFIG_TMPFS_XATTR):
 * elsewhere mirrorfs answers EOPNOTSUPP, as it should, and stress-ng counts that a failure.
 */
function stressNg(dir: string, xattrs: boolean): Workload {
  mkdirSync(dir, { recursive: true });
  const result: WorkloadResult = { name: 'stress-ng', runs: 0, failures: [], verifyFailures: 0 };
  let child: ChildProcess | undefined;
  const stressors = ['--hdd', '1', '--hdd-bytes', '8m', '--rename', '1', '--dir', '1', '--dentry', '1', '--link', '1', '--symlink', '1', '--fallocate', '1', ...(xattrs ? ['--xattr', '1'] : [])];
  const done = run('stress-ng', ['--temp-path', dir, ...stressors, '--verify', '--timeout', '0', '--metrics-brief'], { onSpawn: (c) => (child = c) }).then((r) => {
    result.runs = 1;
    const failed = r.output.split('\n').filter((l) => /\b(fail|error):/.test(l));
    if (r.code !== 0 || failed.length > 0) {
      result.failures.push({ run: 1, code: r.code, signal: r.signal, output: r.output.slice(-20000) });
      result.verifyFailures += verifyLines(r.output);
    }
    return result;
  });
  return {
    result,
    async stop() {
      child?.kill('SIGINT');
      return done;
    },
  };
}

// ---------------------------------------------------------------------------------------------

interface CrashRecord {
  n: number;
  kind: CrashKind | 'fault-timeout';
  /** hrtime ns of the kill (SIGKILL) or of the exit being seen (fault hooks). */
  at: bigint;
  /** The next owner was already waiting as a standby. */
  warm: boolean;
  /** Crash -> the supervisor logged the hand-over of generation n + 1 (log timestamps, ms). */
  recoveredMs: number;
  /** Crash -> the next owner printed mirrorfs.ready (serving), ms. */
  servingMs: number;
  supervisorUs: number;
  /** The supervisor's recovery steps (session.recovered stepsUs). */
  stepsUs: Record<string, number>;
  /** Checkpoint keys handed over, and how the checkpoint travelled (frames or a memfd). */
  checkpointKeys: number;
  checkpointSentAs: string;
  /** The new owner's own account (mirrorfs.resumed resumeUs): ACQUIRE answered -> each step, ms. */
  resumeMs: Record<string, number>;
  probed: number;
  fenced: boolean;
  diedBeforeReady: boolean;
}

/** The resumeUs of the last mirrorfs.resumed line in a daemon's output, in ms. */
function resumeSteps(output: string): Record<string, number> {
  const at = output.lastIndexOf('{"event":"mirrorfs.resumed"');
  if (at < 0) return {};
  try {
    const end = output.indexOf('\n', at);
    const e = JSON.parse(output.slice(at, end < 0 ? undefined : end)) as { resumeUs: Record<string, number> };
    return Object.fromEntries(Object.entries(e.resumeUs).map(([k, v]) => [k, v / 1000]));
  } catch {
    return {};
  }
}

/** n/min/median/p99/max, rounded to 0.01. */
function stats(xs: number[]): Record<string, number> {
  return summarizeRounded(xs);
}

/** stats() of each step over the records that have it. */
function stepStats(records: Record<string, number>[]): Record<string, Record<string, number>> {
  const keys = [...new Set(records.flatMap((r) => Object.keys(r)))];
  return Object.fromEntries(keys.map((k) => [k, stats(records.filter((r) => k in r).map((r) => r[k]!))]));
}

async function main(): Promise<void> {
  requireTools();
  const started = Date.now();
  const loadBefore = loadavg();
  // The supervisor's default real-time priority, also where CONFIG_RT_GROUP_SCHED limits it.
  const runtime = grantRealtimeRuntime();
  const sup = await startSupervisor({ env: { FUSEKEEPER_LOG_LEVEL: 'info', ...(args['supervisor-node-options'] ? { NODE_OPTIONS: args['supervisor-node-options'] } : {}) } }).catch((err: unknown) => {
    runtime.restore();
    throw err;
  });
  const dir = sup.dir;
  const source = join(dir, 'src');
  const mountpoint = join(dir, 'mnt');
  mkdirSync(source);
  mkdirSync(mountpoint);
  const daemons: Daemon[] = [];
  const workloads: Workload[] = [];
  let probe: ReturnType<typeof startProbe> | undefined;
  let admin: SupervisorClient | undefined;
  let tmpfsMounted = false;
  let userXattrs = false;
  const stopSignal = (): void => {
    console.error('chaos: interrupted; cleaning up');
    interrupted = true;
    abortRun(new Error('interrupted'));
  };
  let finished = false;
  let interrupted = false;
  process.on('SIGINT', stopSignal);
  process.on('SIGTERM', stopSignal);
  try {
    const mnt = spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${Number(args['tmpfs-mib'])}m`, 'fusekeeper-chaos', source], { encoding: 'utf8' });
    if (mnt.status !== 0) throw new Error(`mount tmpfs: ${mnt.stderr}`);
    tmpfsMounted = true;
    userXattrs = hasUserXattrs(source);
    const usedBytes = (): number => {
      const st = statfsSync(source);
      return (st.blocks - st.bfree) * st.bsize;
    };
    const tmpfsBefore = usedBytes();
    const probeBin = buildProbe(dir);
    admin = await connectSupervisor({ socket: sup.socket, role: 'cli', reconnect: false, heartbeatMs: 0 });
    const status = async (): Promise<SessionStatus | undefined> => ((await admin!.status()) as { sessions: SessionStatus[] }).sessions.find((s) => s.name === SESSION);
    const fdsBefore = sup.fds();
    if (args.verbose) {
      let shown = 0;
      const t = setInterval(() => {
        const ev = sup.events();
        for (; shown < ev.length; shown++) process.stdout.write(`  supervisor: ${JSON.stringify(ev[shown])}\n`);
      }, 200);
      t.unref();
    }

    // Crash plan: kinds[g] is how the owner of generation g dies. No two fault crashes in a row.
    const kinds: CrashKind[] = [];
    const kindOf = (g: number): CrashKind => {
      if (kinds.length === 0) kinds.push('sigkill'); // index 0 unused
      while (kinds.length <= g) {
        const prev = kinds.at(-1);
        // The owner after the last crash must not die of a fault hook: it serves to the end.
        const g2 = kinds.length;
        kinds.push(g2 > 1 && g2 <= CRASHES && prev === 'sigkill' && random() < FAULT_SHARE ? FAULTS[Math.floor(random() * FAULTS.length)]! : 'sigkill');
      }
      return kinds[g]!;
    };
    let spawned = 0;
    // Every daemon acquires as a standby, as the supervisor's managed daemons do: with a live
    // owner it waits (a cold restart may come before the supervisor saw the old one die).
    const spawnNext = (): Daemon => {
      spawned++;
      const d = spawnDaemon(spawned, kindOf(spawned), source, mountpoint, sup.socket, true);
      daemons.push(d);
      if (args.verbose) {
        void d.exit.then((e) => process.stdout.write(`chaos: daemon ${d.n} (${d.pid}, ${d.kind}) exited ${e.signal ?? e.code}\n${e.signal === 'SIGKILL' ? '' : d.stderr().slice(-3000)}\n`));
      }
      return d;
    };
    const unexpected: string[] = [];
    /**
     * Waits until daemon `d` waits in the supervisor as a standby, or owns the session (it
     * came when nobody did). Daemons are started one at a time, each once the previous one
     * settled, so the supervisor's FIFO of standbys makes daemon k the owner of generation k.
     */
    const settle = async (d: Daemon): Promise<void> => {
      const mine = (e: Record<string, unknown>): boolean => e.session === SESSION && (e.standby === d.pid || e.owner === d.pid);
      const ok = await Promise.race([
        sup.waitEvent('standby.waiting', mine, 120_000).then(() => true),
        sup.waitEvent('session.recovered', mine, 120_000).then(() => true),
        sup.waitEvent('session.created', mine, 120_000).then(() => true),
        d.exit.then(() => false),
      ]);
      if (!ok) throw new Error(`daemon ${d.pid} (number ${d.n}) exited before it waited or served: ${d.stderr().slice(-3000)}`);
      d.settled = true;
    };
    /** The current generation; its owner is daemons[generation - 1]. */
    let generation = 1;
    let ownerDead = false;
    let spawning: Promise<void> | null = null;
    /** Warm: DEPTH daemons beyond the owner. Cold: the next daemon once the owner is dead. */
    const wanted = (): number => (DEPTH > 0 ? generation + DEPTH : generation + (ownerDead ? 1 : 0));
    const topUp = (): Promise<void> => {
      if (spawning) return spawning;
      const p = (async () => {
        while (spawned < wanted() && !interrupted) await settle(spawnNext());
      })();
      spawning = p;
      // Cleared once settled (not inside the function: it may complete synchronously).
      const clear = (): void => {
        if (spawning === p) spawning = null;
      };
      p.then(clear, clear);
      return p;
    };

    await guard(topUp());
    let owner = daemons[0]!;
    await guard(Promise.race([owner.ready, owner.exit.then(() => Promise.reject(new Error(`first daemon exited: ${owner.stderr()}`)))]));
    // Workload dirs and probe files, through the mount.
    makeProbeFiles(join(mountpoint, 'probe'));

    probe = startProbe(probeBin, join(mountpoint, 'probe'), join(dir, 'probe.bin'));
    workloads.push(fioLoop('fio-buffered', join(mountpoint, 'fio-buffered'), false));
    workloads.push(fioLoop('fio-direct', join(mountpoint, 'fio-direct'), true));
    workloads.push(stressNg(join(mountpoint, 'stress'), userXattrs));
    workloads.push(fsmarkLoop(join(mountpoint, 'fsmark')));
    await sleep(2000);

    const crashes: CrashRecord[] = [];
    const t0 = Date.now();
    // The supervisor's RSS over the run (MiB), every 5 s.
    const rssSamples: number[] = [];
    const rssTimer = setInterval(() => {
      const m = /VmRSS:\s+(\d+) kB/.exec(spawnSync('cat', [`/proc/${sup.pid}/status`], { encoding: 'utf8' }).stdout ?? '');
      if (m) rssSamples.push(Math.round(Number(m[1]) / 102.4) / 10);
    }, 5000);
    rssTimer.unref();
    let takenOverAt = Date.now();
    for (let i = 1; i <= CRASHES && !interrupted; i++) {
      if (MAX_MS > 0 && Date.now() - t0 > MAX_MS) break;
      if (owner.n !== i) throw new Error(`bookkeeping: owner is daemon ${owner.n}, expected ${i}`);
      // Warm: the next owner waits before the crash (a fault hook may fire before it does).
      if (DEPTH > 0 && owner.kind === 'sigkill') {
        await guard(topUp());
        if (!daemons[i]?.settled) throw new Error(`daemon ${i + 1} did not settle: ${unexpected.join('; ')}`);
      }
      let kind: CrashRecord['kind'] = owner.kind;
      let at: bigint;
      if (owner.kind === 'sigkill') {
        const delay = random() * MAX_KILL_DELAY - (Date.now() - takenOverAt);
        if (delay > 0) await guard(sleep(delay));
        at = process.hrtime.bigint();
        if (!owner.exited) owner.child.kill('SIGKILL');
      } else {
        const fired = await guard(Promise.race([owner.exit.then(() => true), sleep(5000).then(() => false)]));
        at = process.hrtime.bigint();
        if (!fired) {
          kind = 'fault-timeout';
          owner.child.kill('SIGKILL');
        }
      }
      const atWall = Date.now();
      const warm = daemons[i]?.settled === true;
      const ex = await guard(owner.exit);
      if (ex.signal !== 'SIGKILL') unexpected.push(`daemon ${owner.pid} (generation ${i}) exited ${ex.signal ?? `with code ${ex.code}`}: ${owner.stderr().slice(-2000)}`);
      const diedBeforeReady = !owner.isReady;
      ownerDead = true;
      const spawn = topUp(); // cold: starts the next daemon now
      spawn.catch((e: Error) => unexpected.push(e.message));
      const next = daemons[i]!;
      const recovered = await guard(sup.waitEvent('session.recovered', (e) => e.session === SESSION && e.generation === i + 1, 120_000));
      takenOverAt = Date.now();
      generation = i + 1;
      ownerDead = false;
      if (recovered.owner !== next.pid) throw new Error(`generation ${i + 1} went to ${String(recovered.owner)}, expected daemon ${next.pid}`);
      if (DEPTH > 0) topUp().catch((e: Error) => unexpected.push(e.message));
      const readyOrDead = await guard(Promise.race([next.ready.then(() => true), next.exit.then(() => false)]));
      // Its resume line may come in a later chunk of its stderr than the ready line.
      const resumeMs = readyOrDead ? await guard(Promise.race([next.resumed.then(() => resumeSteps(next.stderr())), next.exit.then(() => ({})), sleep(2000).then(() => ({}))])) : {};
      const cleanup = recovered.cleanup as { probed: number };
      crashes.push({
        n: i,
        kind,
        at,
        warm,
        recoveredMs: (recovered.time as number) - atWall,
        servingMs: readyOrDead ? Date.now() - atWall : NaN,
        supervisorUs: recovered.durationUs as number,
        stepsUs: (recovered.stepsUs ?? {}) as Record<string, number>,
        checkpointKeys: recovered.checkpointKeys as number,
        checkpointSentAs: (recovered.sentAs as { checkpoint?: string } | undefined)?.checkpoint ?? 'unknown',
        resumeMs,
        probed: cleanup.probed,
        fenced: recovered.fenced === true,
        diedBeforeReady,
      });
      owner = next;
      if (args.verbose) process.stdout.write(`chaos: crash ${i} ${kind}${warm ? '' : ' (cold)'}: hand-over after ${crashes.at(-1)!.recoveredMs} ms, serving after ${crashes.at(-1)!.servingMs} ms\n`);
      if (!args.quiet && (i % 25 === 0 || i === CRASHES)) {
        const rate = i / ((Date.now() - t0) / 1000);
        const errs = probe.records().filter((r) => r.err !== 0).length + workloads.reduce((n, w) => n + w.result.failures.length, 0);
        process.stdout.write(`chaos: ${i}/${CRASHES} crashes, ${rate.toFixed(2)}/s, application errors so far ${errs}, unexpected ${unexpected.length}\n`);
      }
    }
    const crashEnd = process.hrtime.bigint();
    clearInterval(rssTimer);
    const crashMs = Date.now() - t0;
    // Let the last owner serve a while, then stop the workloads (each finishes its run).
    await sleep(1000);
    const results = await Promise.all(workloads.map((w) => w.stop()));
    const records = await probe.stop();
    probe = undefined;
    const end = process.hrtime.bigint();

    // Every application closed its files: no backing id may be left.
    const live = await waitUntil(async () => {
      const s = await status();
      return s && s.liveBackingIds === 0 ? s : undefined;
    }, 'no live backing ids once every file is closed', 10_000).catch(async () => (await status())!);
    const rm = spawnSync('rm', ['-rf', ...['probe', 'fio-buffered', 'fio-direct', 'stress', 'fsmark'].map((d) => join(mountpoint, d))], { encoding: 'utf8' });
    const tmpfsAfter = await waitUntil(() => usedBytes() <= tmpfsBefore, 'tmpfs usage back to its baseline', 10_000)
      .then(() => usedBytes())
      .catch(() => usedBytes());
    const final = (await status())!;
    await admin.release(SESSION);
    for (const d of daemons) if (!d.exited) d.child.kill('SIGKILL');
    await Promise.all(daemons.map((d) => d.exit));
    const fdsAfter = await waitUntil(() => {
      const now = sup.fds();
      return now.size === fdsBefore.size ? now : undefined;
    }, 'supervisor fds back to baseline', 10_000).catch(() => sup.fds());
    const supStatus = spawnSync('cat', [`/proc/${sup.pid}/status`], { encoding: 'utf8' }).stdout;
    const rss = (k: string): number => Number(new RegExp(`${k}:\\s+(\\d+) kB`).exec(supStatus)?.[1] ?? NaN) / 1024;

    // Figures.
    const probeErrors = records.filter((r) => r.err !== 0);
    const errnoCounts: Record<string, number> = {};
    for (const r of probeErrors) errnoCounts[`${PROBE_OPS[r.op]}:${r.err}`] = (errnoCounts[`${PROBE_OPS[r.op]}:${r.err}`] ?? 0) + 1;
    const perCrash = blackoutsToResume(records, crashes.map((c) => c.at));
    const perWindow = blackouts(records, crashes.map((c) => c.at), crashEnd);
    const ms = (ns: number): number => Math.round(ns / 1e4) / 100;
    const longest = records.reduce((a, r) => (anyLatency(r) > anyLatency(a) ? r : a), records[0]!);
    const kindsCount: Record<string, number> = {};
    for (const c of crashes) kindsCount[c.kind] = (kindsCount[c.kind] ?? 0) + 1;
    const recoveredEvents = sup.events().filter((e) => e.event === 'session.recovered' && e.session === SESSION).length;
    const workloadFailures = results.reduce((n, r) => n + r.failures.length, 0);
    const verifyFailures = results.reduce((n, r) => n + r.verifyFailures, 0);
    const leakedBytes = tmpfsAfter - tmpfsBefore;
    const figures = {
      seed: SEED,
      mirrorfsMetadataCalls: args['metadata-on-main'] ? 'main' : 'pool',
      crashesWanted: CRASHES,
      crashes: crashes.length,
      crashKinds: kindsCount,
      recoveries: recoveredEvents,
      finalGeneration: final.generation,
      warmStandbyDepth: DEPTH,
      xattrStressor: userXattrs,
      takenOverWarm: crashes.filter((c) => c.warm).length,
      diedBeforeServing: crashes.filter((c) => c.diedBeforeReady).length,
      crashPhaseSeconds: Math.round(crashMs / 100) / 10,
      crashesPerSecond: Math.round((crashes.length / (crashMs / 1000)) * 100) / 100,
      applicationErrors: probeErrors.length + workloadFailures,
      probeErrors: probeErrors.length,
      probeErrnos: errnoCounts,
      probeIterations: records.length,
      workloads: results.map((r) => ({ name: r.name, runs: r.runs, failures: r.failures.length, verifyFailures: r.verifyFailures })),
      workloadFailures: results.flatMap((r) => r.failures.map((f) => ({ workload: r.name, ...f }))),
      verifyFailures,
      leakedBackingReferences: {
        tmpfsUsedBytesBefore: tmpfsBefore,
        tmpfsUsedBytesAfterDeletingEverything: tmpfsAfter,
        leakedBytes,
        liveBackingIdsWithEverythingClosed: live.liveBackingIds,
        rmExit: rm.status,
      },
      supervisorFds: { before: fdsBefore.size, after: fdsAfter.size, beforeTargets: [...fdsBefore.values()].sort(), afterTargets: [...fdsAfter.values()].sort() },
      supervisorScheduling: (await sup.waitEvent('supervisor.listening')).realtime,
      supervisorRssMiB: { current: Math.round(rss('VmRSS') * 10) / 10, peak: Math.round(rss('VmHWM') * 10) / 10, anonymous: Math.round(rss('RssAnon') * 10) / 10, file: Math.round(rss('RssFile') * 10) / 10, every5s: rssSamples },
      longestStallMs: ms(anyLatency(longest)),
      longestStallCall: longest ? PROBE_OPS[[longest.stat, longest.open, longest.read, longest.close].indexOf(anyLatency(longest)) + 1] : null,
      blackoutMs: {
        definition: 'per crash: the longest call (stat, open, read or close) of the 1 ms probe (one call at a time) among iterations that began from 20 ms before the crash until the first iteration begun 1 ms or more after it completed',
        ...stats(perCrash.filter((b) => !Number.isNaN(b.ns)).map((b) => ms(b.ns))),
      },
      longestWaitBetweenCrashesMs: { definition: 'per crash: the longest stat()/open() among iterations that began from 20 ms before it to 20 ms before the next crash', ...stats(perWindow.map((b) => ms(b.ns))) },
      probeMetaLatencyMs: stats(records.map((r) => ms(metaLatency(r)))),
      crashToHandoverMs: stats(crashes.map((c) => c.recoveredMs)),
      crashToServingMs: stats(crashes.filter((c) => !Number.isNaN(c.servingMs)).map((c) => c.servingMs)),
      supervisorRecoveryUs: stats(crashes.map((c) => c.supervisorUs)),
      supervisorStepsUs: stepStats(crashes.map((c) => c.stepsUs)),
      checkpointKeysHandedOver: stats(crashes.map((c) => c.checkpointKeys)),
      checkpointSentAs: Object.fromEntries([...new Set(crashes.map((c) => c.checkpointSentAs))].map((k) => [k, crashes.filter((c) => c.checkpointSentAs === k).length])),
      newOwnerAcquiredToMs: stepStats(crashes.map((c) => c.resumeMs)),
      unreportedIdsProbedAndClosed: crashes.reduce((n, c) => n + c.probed, 0),
      fencedLiveOwners: crashes.filter((c) => c.fenced).length,
      unexpected,
      loadAverage: { before: loadBefore.map((x) => Math.round(x * 100) / 100), after: loadavg().map((x) => Math.round(x * 100) / 100) },
      wallSeconds: Math.round((Date.now() - started) / 1000),
    };
    writeResult('chaos', figures);
    const verdict = figures.applicationErrors === 0 && verifyFailures === 0 && leakedBytes <= 0 && live.liveBackingIds === 0 && fdsAfter.size === fdsBefore.size && unexpected.length === 0 && recoveredEvents === crashes.length;
    console.log(`
chaos: ${crashes.length} crashes (${Object.entries(kindsCount).map(([k, v]) => `${k} ${v}`).join(', ')}) in ${figures.crashPhaseSeconds} s (${figures.crashesPerSecond}/s), seed ${SEED}
  recoveries                 ${recoveredEvents} (final generation ${final.generation})
  application errors         ${figures.applicationErrors} (probe ${probeErrors.length} of ${records.length} iterations${probeErrors.length ? ` ${JSON.stringify(errnoCounts)}` : ''}; workload runs failed ${workloadFailures})
  verify failures            ${verifyFailures}
  leaked backing references  ${leakedBytes} bytes of tmpfs (used ${tmpfsBefore} before, ${tmpfsAfter} after deleting everything); live backing ids with everything closed: ${live.liveBackingIds}
  supervisor fds             ${fdsBefore.size} before, ${fdsAfter.size} after; RSS ${figures.supervisorRssMiB.current} MiB (peak ${figures.supervisorRssMiB.peak})
  longest stall              ${figures.longestStallMs} ms (${figures.longestStallCall})
  blackout per crash (ms)    ${JSON.stringify(figures.blackoutMs).replace(/"definition":"[^"]*",/, '')}
  workloads                  ${results.map((r) => `${r.name} ${r.runs} runs/${r.failures.length} failed`).join(', ')}
  unexpected                 ${unexpected.length}${unexpected.length ? `\n    ${unexpected.slice(0, 5).join('\n    ')}` : ''}
  verdict                    ${verdict ? 'PASS' : 'FAIL'}`);
    process.exitCode = verdict ? 0 : 1;
    finished = true;
  } finally {
    if (!finished) {
      // Aborted or failed: nothing may wait for a daemon any more. Daemons first (they hold
      // the connection too), then everything that may be blocked in the mount.
      for (const d of daemons) if (!d.exited) d.child.kill('SIGKILL');
      probe?.child.kill('SIGKILL');
      probe = undefined;
      killWorkloads();
    }
    process.off('SIGINT', stopSignal);
    process.off('SIGTERM', stopSignal);
    if (probe) await probe.stop().catch(() => []);
    for (const w of workloads) await Promise.race([w.stop(), sleep(30_000)]);
    try {
      await admin?.release(SESSION);
    } catch {
      // released already
    }
    admin?.close();
    for (const d of daemons) if (!d.exited) d.child.kill('SIGKILL');
    await Promise.all(daemons.map((d) => d.exit));
    await sup.cleanup();
    runtime.restore();
    if (tmpfsMounted) spawnSync('umount', ['-l', source]);
    unmountUnder(dir);
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
