// Failover benchmark: how long applications wait when a daemon dies. `npm run failover`
// (or `npm run bench -- failover`); `--rounds N` (default 100), `--only a,b`; `--raw` also
// writes each scenario's rounds (failover-<scenario>-rounds.json).
//
// Blackout of one crash = the longest stat()/open() seen by the 1 ms probe
// (bench/drivers/probe.c, a separate process) among its iterations that began from 20 ms
// before the SIGKILL to 1 s after it (or to 20 ms before the next crash). Reported as
// min/median/p99/max over the rounds, side by side, each scenario with its own supervisor
// (`fusekeeper serve`, the compiled CLI):
//
//   cold       mirrorfs as a managed daemon without a spare, restarted by the supervisor at
//              once (backoffMs 0): a Node process starts, loads, connects, resumes
//   warm       mirrorfs as a managed daemon with `standby: true`: the spare waits connected
//              and takes over; the supervisor starts the next spare 100 ms later
//   bare*      the bare hand-over: a minimal pre-connected standby (bench/drivers/bare-owner.ts,
//              no filesystem state to restore, request path rehearsed) takes over from a
//              SIGKILLed one of its kind: fence + backing-id cleanup + FUSE_NOTIFY_RESEND + fd
//              pass + ADOPT (not waited for), nothing else. The harness starts the next
//              standby after the blackout window, as the supervisor does for warm spares.
//              Variants: 64 and 256 sessions held by the same supervisor; 10k and 100k real
//              journaled backing ids to clean up (none adopted: the supervisor closes them all)
//   *-at-eof   warm and bare with the supervisor's process events off (`exitEvents: false`):
//              a death is noticed when the daemon's fds close, after its memory is freed
//
// Also per scenario: the supervisor's own recovery time (lastRecovery.durationUs), its looks
// at the dying owner's threads (how many, and their time), the kill -> the owner's first
// thread exit (the kernel's event time) -> the supervisor's first look -> the start of its
// recovery, the time from the kill to the supervisor's hand-over log line, for bare the
// kill -> standby holds the session -> standby serves -> its first request times (the
// standby's CLOCK_MONOTONIC stamps), for mirrorfs the kill -> it holds the session -> its
// first answer and the steps between (its own log), its save of the session state after
// each hand-over, and the supervisor's RSS. The supervisor saves session state in a tmpfs, as
// under the systemd unit (`--state disk|none` otherwise). Writes bench/results/failover.json.
// Root, /dev/fuse, cc, `npm run prepare`.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { loadavg } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { connectSupervisor, type SupervisorClient } from '../client/supervisor.ts';
import { pidfdOpen, watchFd, closeFd } from '../native/index.ts';
import type { SessionStatus } from '../supervisor/session.ts';
import { startSupervisor, waitUntil, mountSpec, tempDir, hermeticEnv, grantRealtimeRuntime, ROOT, type SupervisorProcess } from '../test/kernel/helpers/supervisor.ts';
import { buildProbe, makeProbeFiles, startProbe, blackouts, blackoutsToResume, type ProbeRecord } from './probe.ts';
import { cpuStalls, cpuTicks, summarizeRounded, writeResult } from './lib.ts';
import { EAGER_COMPILE_FLAGS } from '../bin/warm-code.js';

const MIRRORFS = join(ROOT, 'bin/fusekeeper-mirrorfs.js');
const BARE_SOURCE = join(ROOT, 'bench/drivers/bare-owner.ts');

/**
 * How to start the bare owner: bundled into one plain .mjs with esbuild (which tsx brings
 * along) so that it is a small Node process without a TypeScript loader, as a daemon would
 * be (a smaller process is also torn down faster after SIGKILL); with tsx if that fails.
 */
function bareCommand(): string[] {
  // Inside the package, so that the bundle's `import 'koffi'` resolves to node_modules/koffi.
  const cache = join(ROOT, 'node_modules/.cache/fusekeeper-bench');
  mkdirSync(cache, { recursive: true });
  const out = join(cache, 'bare-owner.mjs');
  const esbuild = join(ROOT, 'node_modules/.bin/esbuild');
  const r = existsSync(esbuild) ? spawnSync(esbuild, [BARE_SOURCE, '--bundle', '--platform=node', '--format=esm', '--external:koffi', `--outfile=${out}`, '--log-level=error'], { encoding: 'utf8' }) : null;
  // As a standby should: its take-over path compiled before it waits.
  const eager = [...EAGER_COMPILE_FLAGS];
  if (r?.status === 0) {
    return [...eager, out];
  }
  return [...eager, '--import', 'tsx', BARE_SOURCE];
}
const SESSION = 'failover';
const WINDOW_NS = 1_000_000_000n;

interface Scenario {
  name: string;
  kind: 'cold' | 'warm' | 'bare';
  sessions?: number;
  ids?: number;
  /** false: the supervisor does not listen to process events and notices a death at EOF. */
  exitEvents?: false;
}

const SCENARIOS: Scenario[] = [
  { name: 'cold', kind: 'cold' },
  { name: 'warm', kind: 'warm' },
  { name: 'bare', kind: 'bare' },
  { name: 'bare-64-sessions', kind: 'bare', sessions: 64 },
  { name: 'bare-256-sessions', kind: 'bare', sessions: 256 },
  { name: 'bare-10k-ids', kind: 'bare', ids: 10_000 },
  { name: 'bare-100k-ids', kind: 'bare', ids: 100_000 },
  { name: 'warm-256-sessions', kind: 'warm', sessions: 256 },
  { name: 'warm-at-eof', kind: 'warm', exitEvents: false },
  { name: 'bare-at-eof', kind: 'bare', exitEvents: false },
];

let abortRun!: (err: Error) => void;
/** Rejects on SIGINT/SIGTERM, so that a run in progress stops and cleans up. */
const aborted = new Promise<never>((_, reject) => (abortRun = reject));
aborted.catch(() => {});
const guard = <T>(p: Promise<T>): Promise<T> => Promise.race([p, aborted]);

const round2 = (x: number): number => Math.round(x * 100) / 100;
const stats = (xs: number[]): Record<string, number> => summarizeRounded(xs);
/** The values that were measured (a death noticed otherwise than by thread exits has no first-exit time). */
const known = (xs: (number | undefined)[]): number[] => xs.filter((x): x is number => x !== undefined);
const ms = (ns: number | bigint): number => Number(ns) / 1e6;

function rssOf(pid: number): { rssMiB: number; peakMiB: number } {
  const st = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (k: string): number => Number(new RegExp(`${k}:\\s+(\\d+) kB`).exec(st)?.[1] ?? NaN);
  return { rssMiB: round2(kb('VmRSS') / 1024), peakMiB: round2(kb('VmHWM') / 1024) };
}

/** A child printing JSON lines; `next(pred)` resolves with the first line (not yet taken) matching. */
function jsonChild(cmd: string, args: string[]): { child: ChildProcess; lines: Record<string, unknown>[]; wait(pred: (o: Record<string, unknown>) => boolean, what: string, timeoutMs?: number): Promise<Record<string, unknown>>; stderr(): string } {
  const child = spawn(cmd, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: hermeticEnv() });
  const lines: Record<string, unknown>[] = [];
  let partial = '';
  let err = '';
  child.stdout!.setEncoding('utf8').on('data', (c: string) => {
    const parts = (partial + c).split('\n');
    partial = parts.pop()!;
    for (const p of parts) {
      try {
        lines.push(JSON.parse(p) as Record<string, unknown>);
      } catch {
        // not ours
      }
    }
  });
  child.stderr!.setEncoding('utf8').on('data', (c: string) => (err = (err + c).slice(-8000)));
  return {
    child,
    lines,
    stderr: () => err,
    wait: (pred, what, timeoutMs = 60_000) =>
      waitUntil(() => {
        if (child.exitCode !== null || child.signalCode !== null) {
          const l = lines.find(pred);
          if (l) return l;
          throw new Error(`${what}: the process exited (${child.signalCode ?? child.exitCode}): ${err}`);
        }
        return lines.find(pred);
      }, what, timeoutMs, 2),
  };
}

interface RoundRecord {
  killAt: bigint;
  /** The killed owner and the process that took over: to find them in a trace (`--raw`). */
  ownerPid: number;
  newOwnerPid: number;
  /** Kill -> the supervisor's session.recovered line (its ms clock), ms. */
  handoverLogMs: number;
  /** How the supervisor learned of the death: its owner.disconnected reason, shortened. */
  noticedBy: string;
  supervisorUs: number;
  /** The supervisor's own account of its recovery, per step (its session.recovered stepsUs). */
  stepsUs: Record<string, number>;
  /** Its save of the session's state after the hand-over (session.recovered savedUs), µs. */
  savedUs: number | undefined;
  /** Whether the journal file sent was the one written ahead (session.recovered journalPrepared). */
  journalPrepared: boolean | undefined;
  /** The host's steal time (cpuTicks) from the kill to 50 ms after it, in 10 ms ticks. */
  stealTicksIn50Ms?: number;
  /** The generation the new owner took. */
  generation: number;
  /** The supervisor's looks at the dying owner's threads: how many, and their time in µs. */
  looks?: number;
  lookingUs?: number;
  /** Threads of the dying owner the supervisor moved off its CPU. */
  movedOffCpu?: number;
  /**
   * Kill -> the owner's first thread exit as the kernel reported it (its event's time), and
   * that -> the supervisor's first look at its threads, ms (noticed by thread exits only).
   */
  killToFirstExitMs?: number;
  firstExitToLookMs?: number;
  /** Kill -> the supervisor starts the recovery (its session.recovered startedAt), ms. */
  killToRecoveryMs?: number;
  /** Real-time priority lent to the new owner's main thread, or why not (session.recovered ownerRealtime). */
  ownerRealtime?: string;
  /** bare: kill -> the standby holds the session (ACQUIRE answered) / serves / is answered ADOPTED, ms. */
  acquiredMs?: number;
  /** bare: kill -> the owner's pidfd readable here (the kernel has torn the process down), ms. */
  goneMs?: number;
  adoptedMs?: number;
  servingMs?: number;
  /** bare: kill -> the standby's first request reached its handler (answered in that turn), ms. */
  firstRequestMs?: number;
}

/**
 * A resumed mirrorfs's own account, per generation: µs from its ACQUIRE answered to each
 * step (mirrorfs.resumed, up to serving) and to its first request read and answered
 * (mirrorfs.first_reply), and when it was answered (CLOCK_MONOTONIC ns).
 */
function mirrorfsResumeSteps(stderr: string): Map<number, MirrorfsResume> {
  const byGeneration = new Map<number, MirrorfsResume>();
  for (const line of stderr.split('\n')) {
    const at = line.search(/\{"event":"mirrorfs\.(resumed|first_reply)"/);
    if (at < 0) continue;
    try {
      const e = JSON.parse(line.slice(at)) as { generation: number; acquiredAt?: string; resumeUs: Record<string, number> };
      const g = byGeneration.get(e.generation) ?? { resumeUs: {} };
      Object.assign(g.resumeUs, e.resumeUs);
      if (e.acquiredAt !== undefined) g.acquiredAt = BigInt(e.acquiredAt);
      byGeneration.set(e.generation, g);
    } catch {
      // cut line
    }
  }
  return byGeneration;
}

interface MirrorfsResume {
  acquiredAt?: bigint;
  resumeUs: Record<string, number>;
}

function mirrorfsResume(steps: Map<number, MirrorfsResume>, rounds: ({ acquiredMs: number; firstReplyMs?: number } | undefined)[]): Record<string, unknown> {
  const perStep: Record<string, number[]> = {};
  for (const g of steps.values()) for (const [k, v] of Object.entries(g.resumeUs)) (perStep[k] ??= []).push(v / 1000);
  const known = rounds.filter((r) => r !== undefined);
  const firstReplies = known.flatMap((r) => (r.firstReplyMs === undefined ? [] : [r.firstReplyMs]));
  return {
    mirrorfsAcquiredToMs: Object.fromEntries(Object.entries(perStep).map(([k, v]) => [k, stats(v)])),
    ...(known.length > 0 ? { killToMirrorfsAcquiredMs: stats(known.map((r) => r.acquiredMs)) } : {}),
    ...(firstReplies.length > 0 ? { killToMirrorfsFirstReplyMs: stats(firstReplies) } : {}),
  };
}

/** How many times each value occurs in `values`, in the order first seen. */
function countEach(values: string[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const v of values) counts[v] = (counts[v] ?? 0) + 1;
  return counts;
}

async function sessionStatus(admin: SupervisorClient): Promise<SessionStatus | undefined> {
  return ((await admin.status()) as { sessions: SessionStatus[] }).sessions.find((s) => s.name === SESSION);
}

/** Where the supervisor saves session state (--state). */
type StatePlace = 'tmpfs' | 'disk' | 'none';
const STATE_PLACES: readonly StatePlace[] = ['tmpfs', 'disk', 'none'];

async function runScenario(sc: Scenario, rounds: number, probeBin: string, raw: boolean, realtime: { realtimePriority?: number; takeoverRealtimeMs?: number }, mirrorfsArgs: string[], statePlace: StatePlace): Promise<Record<string, unknown>> {
  const dir = tempDir('fusekeeper-failover-');
  const mountpoint = join(dir, 'mnt');
  mkdirSync(mountpoint);
  const children: ChildProcess[] = [];
  let sup: SupervisorProcess | undefined;
  let admin: SupervisorClient | undefined;
  let probe: ReturnType<typeof startProbe> | undefined;
  let tmpfs: string | undefined;
  let stateTmpfs: string | undefined;
  try {
    const stateDir = join(dir, 'state');
    if (statePlace !== 'none') mkdirSync(stateDir);
    if (statePlace === 'tmpfs') {
      if (spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=64m,mode=0700', 'fusekeeper-failover-state', stateDir]).status !== 0) throw new Error('mount tmpfs for the state failed');
      stateTmpfs = stateDir;
    }
    const stateEnv = statePlace === 'none' ? {} : { env: { FUSEKEEPER_STATE_DIR: stateDir } };
    const bareCmd = bareCommand();
    const spec = mountSpec(mountpoint, { fsName: 'failover', subtype: 'failover' });
    let probeDir: string;
    if (sc.kind === 'bare') {
      sup = await startSupervisor({ dir, ...stateEnv, config: { exitEvents: sc.exitEvents ?? true, ...realtime } });
      probeDir = mountpoint;
    } else {
      const source = join(dir, 'src');
      makeProbeFiles(join(source, 'probe'));
      sup = await startSupervisor({
        dir,
        ...stateEnv,
        config: {
          exitEvents: sc.exitEvents ?? true,
          ...realtime,
          daemons: [
            {
              name: SESSION,
              command: [process.execPath, MIRRORFS, source, mountpoint, ...mirrorfsArgs],
              standby: sc.kind === 'warm',
              backoffMs: sc.kind === 'warm' ? 100 : 0,
              maxBackoffMs: sc.kind === 'warm' ? 100 : 0,
              crashLoopCount: 1_000_000,
              crashLoopWindowMs: 1,
            },
          ],
        },
      });
      probeDir = join(mountpoint, 'probe');
    }
    admin = await connectSupervisor({ socket: sup.socket, role: 'cli', reconnect: false, heartbeatMs: 0 });
    if (sc.sessions && sc.sessions > 1) {
      const hold = jsonChild(process.execPath, [...bareCmd, JSON.stringify({ socket: sup.socket, name: 'held', mount: spec, hold: { count: sc.sessions - 1, dir: join(dir, 'held') } })]);
      children.push(hold.child);
      await hold.wait((o) => o.event === 'holding', 'the extra sessions', 120_000);
    }
    let backing: { dir: string; count: number; delayMs: number } | undefined;
    if (sc.ids) {
      tmpfs = join(dir, 'backing');
      mkdirSync(tmpfs);
      if (spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=64m,nr_inodes=200k', 'fusekeeper-failover', tmpfs]).status !== 0) throw new Error('mount tmpfs failed');
      for (let i = 0; i < sc.ids; i++) writeFileSync(join(tmpfs, String(i)), '');
      backing = { dir: tmpfs, count: sc.ids, delayMs: 1500 };
    }

    // Bare: the harness starts each owner; daemon k owns generation k.
    const bare: ReturnType<typeof jsonChild>[] = [];
    const spawnBare = (): ReturnType<typeof jsonChild> => {
      const b = jsonChild(process.execPath, [...bareCmd, JSON.stringify({ socket: sup!.socket, name: SESSION, mount: spec, backing })]);
      children.push(b.child);
      bare.push(b);
      return b;
    };
    const standbyWaits = (pid: number): Promise<unknown> => sup!.waitEvent('standby.waiting', (e) => e.session === SESSION && e.standby === pid, 60_000);
    /** The owner and generation, from the supervisor's log (STATUS drops per-session detail past ~200 sessions). */
    const lastHandover = (): number => {
      const ev = sup!.events();
      for (let i = ev.length - 1; i >= 0; i--) if (ev[i]!.session === SESSION && (ev[i]!.event === 'session.recovered' || ev[i]!.event === 'session.created')) return i;
      return -1;
    };
    const currentOwner = (): { gen: number; ownerPid: number } => {
      const e = sup!.events()[lastHandover()]!;
      return { gen: e.event === 'session.created' ? 1 : (e.generation as number), ownerPid: e.owner as number };
    };
    const ready = async (): Promise<void> => {
      if (sc.kind === 'bare') {
        const owner = bare.at(-2)!;
        if (sc.ids) {
          await owner.wait((o) => o.event === 'registered', 'the owner to register its backing ids', 120_000);
          await waitUntil(async () => (await sessionStatus(admin!))?.liveBackingIds === sc.ids, `${sc.ids} journaled ids`, 120_000, 20);
        }
        await standbyWaits(bare.at(-1)!.child.pid!);
      } else {
        await waitUntil(() => {
          const at = lastHandover();
          if (at < 0) return false;
          return sc.kind === 'cold' || sup!.events().slice(at).some((e) => e.event === 'standby.waiting' && e.session === SESSION);
        }, 'the owner (and spare) to be in place', 60_000, 10);
      }
    };
    if (sc.kind === 'bare') {
      const first = spawnBare();
      await first.wait((o) => o.event === 'serving', 'the first bare owner');
      spawnBare();
    }
    await ready();
    probe = startProbe(probeBin, probeDir, join(dir, 'probe.bin'));
    await sleep(1000);

    const records: RoundRecord[] = [];
    const ticksBefore = cpuTicks();
    for (let r = 0; r < rounds; r++) {
      const { gen, ownerPid } = currentOwner();
      // Bare: watch the owner's pidfd, to tell its teardown from the hand-over.
      let goneAt: bigint | undefined;
      let pidfd = -1;
      let watch: ReturnType<typeof watchFd> | undefined;
      if (sc.kind === 'bare') {
        pidfd = pidfdOpen(ownerPid);
        watch = watchFd(pidfd, { readable: true }, () => {
          goneAt ??= process.hrtime.bigint();
        });
      }
      const logFrom = sup.lineCount();
      const stealAtKill = cpuTicks().steal;
      const stealAfter = sleep(50).then(() => cpuTicks().steal);
      const killAt = process.hrtime.bigint();
      const killWall = Date.now();
      process.kill(ownerPid, 'SIGKILL');
      const rec = await guard(sup.waitEvent('session.recovered', (e) => e.session === SESSION && e.generation === gen + 1, 60_000, logFrom));
      const gone = sup.events().filter((e) => e.event === 'owner.disconnected' && e.owner === ownerPid).at(-1);
      const noticedBy = typeof gone?.reason !== 'string' ? 'pidfd' : gone.reason.startsWith('its process is exiting') ? 'thread exits' : gone.reason === 'peer closed the connection' ? 'EOF' : gone.reason;
      const round: RoundRecord = { killAt, ownerPid, newOwnerPid: rec.owner as number, handoverLogMs: (rec.time as number) - killWall, noticedBy, supervisorUs: rec.durationUs as number, stepsUs: (rec.stepsUs ?? {}) as Record<string, number>, savedUs: rec.savedUs as number | undefined, journalPrepared: rec.journalPrepared as boolean | undefined, generation: gen + 1, looks: gone?.looks as number | undefined, lookingUs: gone?.lookingUs as number | undefined, movedOffCpu: gone?.movedOffCpu as number | undefined, ownerRealtime: rec.ownerRealtime as string | undefined };
      if (typeof rec.startedAt === 'string') round.killToRecoveryMs = ms(Number(BigInt(rec.startedAt) - killAt));
      if (typeof gone?.firstExitAt === 'string') {
        const exitAt = BigInt(gone.firstExitAt);
        round.killToFirstExitMs = ms(Number(exitAt - killAt));
        if (typeof gone.firstLookAt === 'string') round.firstExitToLookMs = ms(Number(BigInt(gone.firstLookAt) - exitAt));
      }
      if (sc.kind === 'bare') {
        const next = bare.at(-1)!;
        const s = await guard(next.wait((o) => o.event === 'serving', 'the standby to serve'));
        const a = await guard(next.wait((o) => o.event === 'adopted', 'the standby to be answered ADOPTED'));
        const f = await guard(next.wait((o) => o.event === 'first-request', 'the standby to get a request'));
        round.firstRequestMs = ms(BigInt(f.firstRequestAt as string) - killAt);
        round.acquiredMs = ms(BigInt(s.acquiredAt as string) - killAt);
        round.adoptedMs = ms(BigInt(a.adoptedAt as string) - killAt);
        round.servingMs = ms(BigInt(s.servingAt as string) - killAt);
        await waitUntil(() => goneAt !== undefined, 'the owner pidfd', 10_000, 1);
        watch!.close();
        closeFd(pidfd);
        round.goneMs = ms(goneAt! - killAt);
      }
      round.stealTicksIn50Ms = (await stealAfter) - stealAtKill;
      records.push(round);
      // Let the blackout window pass before the next crash gets ready: starting a Node
      // process takes a core for ~100 ms on this 2-core machine, and would be measured.
      await guard(sleep(Math.max(0, 1000 - Number(process.hrtime.bigint() - killAt) / 1e6)));
      if (sc.kind === 'bare') spawnBare();
      await guard(ready());
      await guard(sleep(100));
    }
    const end = process.hrtime.bigint();
    const ticksAfter = cpuTicks();
    const probeRecords: ProbeRecord[] = await probe.stop();
    probe = undefined;
    const errors = probeRecords.filter((x) => x.err !== 0).length;
    const per = blackoutsToResume(probeRecords, records.map((x) => x.killAt));
    const within1s = blackouts(probeRecords, records.map((x) => x.killAt), end, 20_000_000n, WINDOW_NS);
    const memory = rssOf(sup.pid);
    const mirrorfsSteps = sc.kind !== 'bare' ? mirrorfsResumeSteps(sup.stderr()) : new Map<number, MirrorfsResume>();
    // Kill -> the new mirrorfs holds the session, and -> its first answer, ms.
    const mirrorfsRounds = records.map((x) => {
      const m = mirrorfsSteps.get(x.generation);
      if (m?.acquiredAt === undefined) return undefined;
      const acquiredMs = ms(m.acquiredAt - x.killAt);
      return { acquiredMs, firstReplyMs: m.resumeUs.firstReply === undefined ? undefined : acquiredMs + m.resumeUs.firstReply / 1000, resumeUs: m.resumeUs };
    });
    if (raw) {
      // Per round: the supervisor's account, and the probe's iterations from 3 ms before the
      // kill to 30 ms after it as [start, stat, open, read, close] in ms from the kill. The
      // kill's CLOCK_MONOTONIC time (ns) lines a round up with `perf record -k mono` or a
      // trace_clock=mono ftrace.
      const rows = records.map((x, i) => ({
        ...x,
        killAt: undefined,
        killAtMonotonicNs: String(x.killAt),
        blackout: per[i],
        ...(mirrorfsRounds[i] ? { mirrorfs: mirrorfsRounds[i] } : {}),
        probe: probeRecords.filter((r) => r.start >= x.killAt - 3_000_000n && r.start <= x.killAt + 30_000_000n).map((r) => [ms(r.start - x.killAt), ms(r.stat), ms(r.open), ms(r.read), ms(r.close)].map(round2)),
      }));
      writeResult(`failover-${sc.name}-rounds`, { rounds: rows });
    }
    const result: Record<string, unknown> = {
      rounds: records.length,
      blackoutMs: stats(per.map((b) => ms(b.ns))),
      blackoutStatOpenMs: stats(per.map((b) => ms(b.statOpenNs))),
      killToProbeResumedMs: stats(per.map((b) => ms(b.resumedAfterNs))),
      longestWaitWithin1sMs: stats(within1s.map((b) => ms(b.ns))),
      killToHandoverLogMs: stats(records.map((x) => x.handoverLogMs)),
      ownerDeathNoticedBy: countEach(records.map((x) => x.noticedBy)),
      supervisorRecoveryUs: stats(records.map((x) => x.supervisorUs)),
      supervisorLooksAtDyingOwner: stats(records.map((x) => x.looks ?? 0)),
      supervisorLookingUs: stats(records.map((x) => x.lookingUs ?? 0)),
      killToFirstThreadExitMs: stats(known(records.map((x) => x.killToFirstExitMs))),
      firstThreadExitToSupervisorLookMs: stats(known(records.map((x) => x.firstExitToLookMs))),
      killToRecoveryStartMs: stats(known(records.map((x) => x.killToRecoveryMs))),
      roundsWithAThreadMovedOffTheSupervisorsCpu: records.filter((x) => (x.movedOffCpu ?? 0) > 0).length,
      newOwnerRealtime: countEach(records.map((x) => x.ownerRealtime ?? 'not logged')),
      supervisorStepsUs: Object.fromEntries(Object.keys(records[0]?.stepsUs ?? {}).map((k) => [k, stats(records.map((x) => x.stepsUs[k] ?? 0))])),
      supervisorStateSavedUs: stats(known(records.map((x) => x.savedUs))),
      hostSteal: {
        pctOfCpuTime: round2((100 * (ticksAfter.steal - ticksBefore.steal)) / Math.max(1, ticksAfter.total - ticksBefore.total)),
        roundsWithStealIn50Ms: records.filter((x) => (x.stealTicksIn50Ms ?? 0) > 0).length,
        // The blackout where the host took no CPU time from this VM in the 50 ms after the
        // kill (/proc/stat steal): what the code does, apart from what the host does to it.
        blackoutMsInRoundsWithoutSteal: stats(per.filter((_, i) => (records[i]!.stealTicksIn50Ms ?? 0) === 0).map((b) => ms(b.ns))),
      },
      ...(sc.kind === 'bare'
        ? {
            killToStandbyAcquiredMs: stats(records.map((x) => x.acquiredMs!)),
            killToStandbyAdoptedMs: stats(records.map((x) => x.adoptedMs!)),
            killToStandbyServingMs: stats(records.map((x) => x.servingMs!)),
            killToStandbyFirstRequestMs: stats(records.map((x) => x.firstRequestMs!)),
            killToOwnerGoneMs: stats(records.map((x) => x.goneMs!)),
            ownerGoneToStandbyAcquiredMs: stats(records.map((x) => x.acquiredMs! - x.goneMs!)),
            ownerGoneToStandbyServingMs: stats(records.map((x) => x.servingMs! - x.goneMs!)),
          }
        : {}),
      ...(sc.kind !== 'bare' ? mirrorfsResume(mirrorfsSteps, mirrorfsRounds) : {}),
      probeErrors: errors,
      probeIterations: probeRecords.length,
      sessionsHeld: (((await admin.status()) as { sessions: unknown[] }).sessions).length,
      journaledIdsPerCrash: sc.ids ?? 0,
      supervisor: memory,
      supervisorScheduling: (await sup.waitEvent('supervisor.listening')).realtime,
    };
    return result;
  } finally {
    probe?.child.kill('SIGKILL');
    admin?.close();
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    await Promise.all(children.map((c) => (c.exitCode !== null || c.signalCode !== null ? null : new Promise((r) => c.once('exit', r)))));
    await sup?.cleanup();
    for (const m of [tmpfs, stateTmpfs]) if (m && existsSync(m)) spawnSync('umount', ['-l', m]);
    spawnSync('rm', ['-rf', dir]);
  }
}

const USAGE = `usage: npm run failover -- [--rounds N] [--only SCENARIO,...] [--raw] [--realtime-priority N]
       [--takeover-realtime-ms N] [--metadata-on-main] [--state tmpfs|disk|none]

  --rounds N     crashes per scenario (default 100, or $FAILOVER_ROUNDS)
  --only LIST    run these scenarios only: ${SCENARIOS.map((s) => s.name).join(', ')}
  --raw          also write each round's supervisor account and probe iterations
                 (failover-<scenarios>-rounds.json)
  --realtime-priority N
                 the supervisor's realtimePriority (default: its own default, 1; 0 is
                 none). Where the kernel has CONFIG_RT_GROUP_SCHED and this process's
                 cgroup has no real-time runtime, the run gives it 0.5 s per second and
                 takes it back at the end
  --takeover-realtime-ms N
                 the supervisor's takeoverRealtimeMs: how long the new owner's main
                 thread keeps the real-time priority lent at its take-over (default: the
                 supervisor's default, 30; 0 lends none)
  --metadata-on-main
                 start fusekeeper-mirrorfs with --metadata-on-main: it looks up, stats
                 and opens the source's files on its main thread instead of libuv's
                 thread pool (the cold and warm scenarios)
  --state PLACE  where the supervisor saves session state: tmpfs (default, as under
                 the systemd unit, whose RuntimeDirectory= is on /run), disk (the run's
                 temporary directory: an fsync there reaches the disk) or none

Root, after \`npm run prepare\`. Writes bench/results/failover[-<scenarios>].json (the
directory is $FUSEKEEPER_BENCH_RESULTS if set).`;

export async function run(argv: string[] = []): Promise<void> {
  let values;
  try {
    ({ values } = parseArgs({ args: argv, options: { rounds: { type: 'string' }, only: { type: 'string' }, raw: { type: 'boolean' }, 'realtime-priority': { type: 'string' }, 'takeover-realtime-ms': { type: 'string' }, 'metadata-on-main': { type: 'boolean' }, state: { type: 'string' }, help: { type: 'boolean', short: 'h' } } }));
  } catch (err) {
    throw new UsageError(`failover: ${(err as Error).message}\n${USAGE}`);
  }
  if (values.help) {
    console.log(USAGE);
    return;
  }
  const rounds = Number(values.rounds ?? process.env.FAILOVER_ROUNDS ?? 100);
  if (!Number.isInteger(rounds) || rounds < 1) throw new UsageError(`failover: --rounds must be a positive integer, not ${values.rounds ?? process.env.FAILOVER_ROUNDS}`);
  const priority = values['realtime-priority'];
  if (priority !== undefined && !/^([0-9]|[1-9][0-9])$/.test(priority)) throw new UsageError(`failover: --realtime-priority must be an integer in 0..99, not ${priority}`);
  const lendMs = values['takeover-realtime-ms'];
  if (lendMs !== undefined && !/^(0|[1-9][0-9]{0,3}|10000)$/.test(lendMs)) throw new UsageError(`failover: --takeover-realtime-ms must be an integer in 0..10000, not ${lendMs}`);
  const realtime = { ...(priority === undefined ? {} : { realtimePriority: Number(priority) }), ...(lendMs === undefined ? {} : { takeoverRealtimeMs: Number(lendMs) }) };
  const mirrorfsArgs = values['metadata-on-main'] ? ['--metadata-on-main'] : [];
  const statePlace = (values.state ?? 'tmpfs') as StatePlace;
  if (!STATE_PLACES.includes(statePlace)) throw new UsageError(`failover: --state must be one of ${STATE_PLACES.join(', ')}, not ${values.state}`);
  const only = values.only?.split(',');
  const unknown = only?.filter((n) => !SCENARIOS.some((s) => s.name === n)) ?? [];
  if (unknown.length > 0) throw new UsageError(`failover: no scenario ${unknown.join(', ')}\n${USAGE}`);
  if (process.getuid?.() !== 0) throw new Error('failover: needs root');
  if (!existsSync(join(ROOT, 'dist/bundle/fusekeeper-mirrorfs.mjs'))) throw new Error('failover: run `npm run prepare` first');
  const buildDir = tempDir('fusekeeper-probe-');
  const probeBin = buildProbe(buildDir);
  const figures: Record<string, unknown> = {
    rounds,
    blackout:
      'per crash: the longest call (stat, open, read or close: the crash may catch the probe in any of them; blackoutStatOpenMs counts stat/open only) of a 1 ms probe (a separate process, one call at a time) among its iterations that began from 20 ms before the SIGKILL until the first iteration begun 1 ms or more after the SIGKILL completed: the wait the application saw. longestWaitWithin1sMs: the longest stat/open of every iteration begun up to 1 s after the SIGKILL (includes slowness after the recovery, e.g. a new spare starting)',
    mirrorfsArgs,
    supervisorState: statePlace,
    loadAverageBefore: loadavg().map(round2),
    cpuStallsBefore: await cpuStalls(),
  };
  process.stdout.write(`failover: CPU stalls with every core busy: ${JSON.stringify(figures.cpuStallsBefore)}\n`);
  const runtime = grantRealtimeRuntime();
  if (runtime.files.length > 0) process.stdout.write(`failover: real-time runtime for the supervisor until the end of the run (CONFIG_RT_GROUP_SCHED): ${runtime.files.join(', ')}\n`);
  const onSignal = (): void => abortRun(new Error('interrupted'));
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    for (const sc of SCENARIOS) {
      if (only && !only.includes(sc.name)) continue;
      const t = Date.now();
      process.stdout.write(`failover: ${sc.name} (${rounds} rounds)...\n`);
      const res = await runScenario(sc, rounds, probeBin, values.raw === true, realtime, mirrorfsArgs, statePlace);
      figures[sc.name] = { ...res, seconds: Math.round((Date.now() - t) / 1000) };
      const b = res.blackoutMs as Record<string, number>;
      const quiet = (res.hostSteal as { blackoutMsInRoundsWithoutSteal: Record<string, number> }).blackoutMsInRoundsWithoutSteal;
      process.stdout.write(`  blackout ms: min ${b.min} median ${b.median} p99 ${b.p99} max ${b.max} (in the ${quiet.n} rounds without host steal: median ${quiet.median} p99 ${quiet.p99}); supervisor ${JSON.stringify(res.supervisor)}; probe errors ${String(res.probeErrors)}\n`);
    }
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    runtime.restore();
    spawnSync('rm', ['-rf', buildDir]);
  }
  figures.loadAverageAfter = loadavg().map(round2);
  figures.cpuStallsAfter = await cpuStalls();
  const table = Object.fromEntries(
    SCENARIOS.filter((s) => figures[s.name]).map((s) => {
      const f = figures[s.name] as { blackoutMs: Record<string, number>; supervisorRecoveryUs: Record<string, number>; supervisor: { rssMiB: number } };
      return [s.name, { ...f.blackoutMs, supervisorMedianUs: f.supervisorRecoveryUs.median, rssMiB: f.supervisor.rssMiB }];
    }),
  );
  console.log('blackout (ms) per scenario:');
  console.table(table);
  writeResult(only ? `failover-${only.join('+')}` : 'failover', figures);
}

/** A bad command line: printed as one message, exit status 2. */
class UsageError extends Error {}

if (import.meta.url === `file://${process.argv[1]}`) {
  try {
    await run(process.argv.slice(2));
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    console.error(err.message);
    process.exitCode = 2;
  }
}
