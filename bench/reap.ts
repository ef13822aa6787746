// What reaping a SIGKILLed daemon costs the process that waits for it (the supervisor, for the
// daemons it starts), side by side, for what the supervisor may do with the dying process's
// exiting threads (supervisor/recovery.ts):
//   as-is     leaves them as they are
//   idled     moves them to SCHED_IDLE as it sees them exiting, and leaves them so (what the
//             supervisor did from ea1d9f4 until this benchmark showed the cost)
//   restored  the same, idles the parked ones too at the decision, and moves them all back to
//             SCHED_NORMAL when the teardown hangs up the daemon's end of a pipe (here its
//             stdout; the supervisor watches its control socket), or TEARDOWN_IDLE_MAX_MS
//             after the decision (what it does now)
// `npm run bench -- reap`: 40 rounds per side, the sides alternated. Root, for SCHED_IDLE on
// another process's threads.
//
// Twice: on an otherwise idle machine, and with one busy-looping process per CPU (as during a
// failover, when the new owner, the applications and the supervisor all want the CPU). Each
// round starts a Node process holding 64 MB of heap, looks at its threads once (as the
// supervisor does while an owner lives: the /proc entries it reads stay cached), SIGKILLs it,
// looks at its threads every millisecond until all are exiting (restored: until each is
// exiting or parked, as the supervisor decides), and waits for Node's child_process to reap
// it. Measured per round: the parent's system CPU time from the kill to the reap
// (process.cpuUsage; the reap's wait4 runs in this thread) and the wall time.
// Writes bench/results/reap.json.
import { spawn, type ChildProcess } from 'node:child_process';
import { cpus } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { restoreThreads, scanThreads, TEARDOWN_IDLE_MAX_MS, yieldExitingThreads } from '../supervisor/recovery.ts';
import { summarize, summarizeRounded, writeResult, cpuStalls } from './lib.ts';

type Side = 'as-is' | 'idled' | 'restored';
const SIDES: Side[] = ['as-is', 'idled', 'restored'];

const DAEMON = 'globalThis.k=[];for(let i=0;i<64;i++)k.push(Buffer.alloc(1<<20,1).toString("latin1"));console.log("ready");setInterval(()=>{},1e6)';

async function round(side: Side): Promise<{ systemMs: number; wallMs: number; idled: number }> {
  const child = spawn(process.execPath, ['-e', DAEMON], { stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const hungUp = new Promise<void>((resolve) => child.stdout!.once('end', () => resolve()));
  await new Promise((resolve, reject) => {
    child.stdout!.once('data', resolve);
    child.once('error', reject);
  });
  const pid = child.pid!;
  scanThreads(pid);
  const cpu0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  child.kill('SIGKILL');
  const idled = new Set<number>();
  let done = false;
  void exited.then(() => (done = true));
  for (let i = 0; i < 1000 && !done; i++) {
    const scan = scanThreads(pid);
    if (side !== 'as-is') for (const tid of yieldExitingThreads(scan.exiting)) idled.add(tid);
    if (side === 'restored' && scan.others === 0) {
      for (const tid of yieldExitingThreads(scan.parked)) idled.add(tid);
      break;
    }
    if (scan.others + scan.parked.length === 0) break;
    await sleep(1);
  }
  if (side === 'restored') {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([hungUp, exited, new Promise<void>((r) => (timer = setTimeout(r, TEARDOWN_IDLE_MAX_MS)))]);
    clearTimeout(timer);
    if (!done) restoreThreads(idled);
  }
  await exited;
  const wallMs = Number(process.hrtime.bigint() - t0) / 1e6;
  const systemMs = process.cpuUsage(cpu0).system / 1000;
  return { systemMs, wallMs, idled: idled.size };
}

const ROUNDS = 40;

/** Rounds of every side, alternated; prints and returns the figures per side. */
async function measure(rounds: number, phase: string): Promise<Record<string, unknown>> {
  const samples = Object.fromEntries(SIDES.map((side) => [side, { systemMs: [] as number[], wallMs: [] as number[], idled: [] as number[] }])) as Record<Side, { systemMs: number[]; wallMs: number[]; idled: number[] }>;
  for (let i = 0; i < rounds; i++) {
    // Each side in each position of the round in turn.
    for (let k = 0; k < SIDES.length; k++) {
      const side = SIDES[(i + k) % SIDES.length]!;
      const r = await round(side);
      samples[side].systemMs.push(r.systemMs);
      samples[side].wallMs.push(r.wallMs);
      samples[side].idled.push(r.idled);
    }
    process.stdout.write(`\rreap (${phase}): ${i + 1}/${rounds} rounds per side`);
  }
  process.stdout.write('\n');
  const figures: Record<string, unknown> = {};
  for (const side of SIDES) {
    const s = samples[side];
    const sys = summarizeRounded(s.systemMs);
    const wall = summarizeRounded(s.wallMs);
    figures[side] = { parentSystemMs: sys, killToReapedMs: wall, threadsIdledMedian: summarize(s.idled).median };
    console.log(`  ${side.padEnd(8)} parent system CPU ms: median ${sys.median} p99 ${sys.p99} max ${sys.max}; kill -> reaped ms: median ${wall.median} p99 ${wall.p99} max ${wall.max}`);
  }
  return figures;
}

export async function run(rounds = ROUNDS): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('reap: run as root (SCHED_IDLE on another process needs CAP_SYS_NICE)');
  const cpuStallsBefore = await cpuStalls();
  const idle = await measure(rounds, 'idle machine');
  // Each loop ends by itself once this process is gone (its parent changes).
  const spin = 'const p = process.ppid; for (let i = 1; (i & 0xfffff) !== 0 || process.ppid === p; i++);';
  const load: ChildProcess[] = cpus().map(() => spawn(process.execPath, ['-e', spin], { stdio: 'ignore' }));
  let loaded: Record<string, unknown>;
  try {
    loaded = await measure(rounds, `${load.length} busy loops`);
  } finally {
    for (const p of load) p.kill('SIGKILL');
  }
  writeResult('reap', { rounds, cpuStallsBefore, idleMachine: idle, busyLoops: { count: load.length, ...loaded }, cpuStallsAfter: await cpuStalls() });
}
