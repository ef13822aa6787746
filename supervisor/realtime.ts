// The supervisor's main thread on SCHED_FIFO (config realtimePriority; docs/systemd.md, "The
// supervisor's CPU"), for as long as it stays mostly idle. A crash wakes the supervisor while
// the dying daemon's threads still hold the CPUs; a SCHED_NORMAL thread waits behind them,
// a real-time one runs at once. But the main thread also carries every daemon's journal
// frames (two per backing id), and real-time work preempts everything else on its CPU: so a
// main thread that keeps a CPU busy goes back to SCHED_NORMAL until it is idle again, and so
// does one that has just handed a session over, so that the new owner starts serving first.
// The new owner's main thread meanwhile gets real-time priority for a while (RealtimeLender).
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { closeFd, pidfdExited, pidfdOpen, setNormalScheduling, setRealtimeScheduling, setThreadRealtime, threadCpuTimeNs, threadScheduling } from '../native/index.ts';
import type { Logger } from './log.ts';

/** How often the main thread's CPU time is looked at, ms. */
export const REALTIME_WINDOW_MS = 100;

/** The largest share of a CPU the main thread may use in a window and stay real-time. */
export const REALTIME_MAX_SHARE = 0.25;

/**
 * Whether the main thread should be real-time after a window in which it used `share` of a
 * CPU: it stays while at most `limit`, and comes back once under half of it.
 */
export function staysRealtime(isRealtime: boolean, share: number, limit: number): boolean {
  return isRealtime ? share <= limit : share < limit / 2;
}

/**
 * The share of a CPU the main thread may use on SCHED_FIFO, from the cgroup it runs in:
 * where the kernel has CONFIG_RT_GROUP_SCHED (cgroup v1 `cpu.rt_runtime_us`), the cgroup's
 * real-time tasks stop running altogether, for the rest of `cpu.rt_period_us`, once they have
 * used its runtime. Half of that runtime at most, then. `cgroupFile` is /proc/self/cgroup.
 */
export function realtimeShareLimit(cgroupFile: string, read: (path: string) => string = (p) => readFileSync(p, 'utf8')): number {
  const cgroup = cpuCgroupV1(cgroupFile);
  if (!cgroup) return REALTIME_MAX_SHARE;
  const dir = `${cgroup.hierarchy}${cgroup.path}`.replace(/\/$/, '');
  let runtime: number;
  let period: number;
  try {
    runtime = Number(read(`${dir}/cpu.rt_runtime_us`).trim());
    period = Number(read(`${dir}/cpu.rt_period_us`).trim());
  } catch {
    return REALTIME_MAX_SHARE;
  }
  if (!(runtime > 0 && period > 0)) return REALTIME_MAX_SHARE; // -1: no limit; 0: refused anyway
  return Math.min(REALTIME_MAX_SHARE, runtime / period / 2);
}

/**
 * From /proc/<pid>/cgroup: where a process sits in the cgroup v1 cpu controller (the
 * hierarchy's directory under /sys/fs/cgroup, named after its controllers, and the path in
 * it), or null under cgroup v2 only.
 */
export function cpuCgroupV1(cgroupFile: string): { hierarchy: string; path: string } | null {
  const m = /^\d+:((?:[^:]*,)?cpu(?:,[^:]*)?):(.*)$/m.exec(cgroupFile);
  return m ? { hierarchy: `/sys/fs/cgroup/${m[1]!}`, path: m[2]! } : null;
}

/** The main thread's real-time scheduling. */
export interface RealtimeScheduling {
  /** What `fusekeeper status` shows under `realtime`. */
  status(): string;
  /**
   * A session was just handed to a new owner, which is about to start serving on some CPU,
   * and the supervisor's work that follows (the new owner's ADOPT, its first journal frames)
   * must not preempt it: SCHED_NORMAL until the end of a window from now on in which it was
   * not busy.
   */
  handedOver(): void;
  /**
   * An owner is dying, or a session is being recovered: real-time again now if paused for
   * being busy, so that the looks, the recovery and the send, a millisecond or two until
   * handedOver(), are not preempted. The windows decide as usual after that.
   */
  recovering(): void;
  stop(): void;
}

/** Scheduling that never changes: off, or refused. */
function fixed(status: string): RealtimeScheduling {
  return { status: () => status, handedOver: () => {}, recovering: () => {}, stop: () => {} };
}

/** No real-time scheduling (a Supervisor that was given none: embedding, tests). */
export const REALTIME_OFF: RealtimeScheduling = fixed('off');

/**
 * Moves the calling (main) thread to SCHED_FIFO `priority`, the threads and processes it
 * starts keeping SCHED_NORMAL, and looks at its CPU time every REALTIME_WINDOW_MS
 * (staysRealtime). Refused (EPERM: no CAP_SYS_NICE, RestrictRealtime=, or a cgroup without
 * real-time runtime), it logs `supervisor.realtime_refused` once and stays SCHED_NORMAL.
 */
export function startRealtime(priority: number, log: Logger): RealtimeScheduling {
  if (priority === 0) return fixed('off in the configuration');
  try {
    setRealtimeScheduling(priority);
  } catch (err) {
    const why = (err as Error).message;
    log.warn({ event: 'supervisor.realtime_refused', err: why }, `running without real-time priority (${why}): a crash may be noticed milliseconds later on a busy machine; see docs/systemd.md`);
    return fixed(why);
  }
  let limit = REALTIME_MAX_SHARE;
  try {
    limit = realtimeShareLimit(readFileSync('/proc/self/cgroup', 'utf8'));
  } catch {
    // no /proc/self/cgroup: no cgroup limit to respect
  }
  try {
    return new RealtimeMainThread(priority, limit, log);
  } catch (err) {
    // Without its own CPU time the guard cannot work: no real-time priority then.
    const why = `cannot watch the main thread's CPU time: ${(err as Error).message}`;
    try {
      setNormalScheduling(0);
    } catch {
      // it stays as it is; the warning says why
    }
    log.warn({ event: 'supervisor.realtime_refused', err: why }, `running without real-time priority (${why})`);
    return fixed(why);
  }
}

class RealtimeMainThread implements RealtimeScheduling {
  readonly #priority: number;
  readonly #limit: number;
  readonly #log: Logger;
  #isRealtime = true;
  /** Stepped down at a hand-over: the next window decides as if it had stayed real-time. */
  #afterHandover = false;
  #paused = 0;
  #refusedOnce = false;
  #lastCpuNs: number;
  #lastAt: bigint;
  #timer: NodeJS.Timeout;

  constructor(priority: number, limit: number, log: Logger) {
    this.#priority = priority;
    this.#limit = limit;
    this.#log = log;
    this.#lastCpuNs = threadCpuTimeNs();
    this.#lastAt = process.hrtime.bigint();
    this.#timer = this.#startWindows();
  }

  status(): string {
    return this.#isRealtime ? `SCHED_FIFO ${this.#priority}` : `SCHED_NORMAL for now (SCHED_FIFO ${this.#priority} when idle)`;
  }

  handedOver(): void {
    clearInterval(this.#timer);
    this.#lastCpuNs = threadCpuTimeNs();
    this.#lastAt = process.hrtime.bigint();
    this.#timer = this.#startWindows();
    // Stepped down for being busy already: the windows decide as before.
    if (!this.#isRealtime) return;
    this.#switch(false, 'a session was handed over');
    this.#afterHandover = !this.#isRealtime;
  }

  recovering(): void {
    // Paused for being busy, the main thread would stay so while a steady load (a probe's
    // 2000 journal frames a second: 15-20% of a CPU) stays between the two thresholds, and
    // the recovery could then wait a scheduler tick (4 ms at HZ=250) behind another thread.
    if (!this.#isRealtime) this.#switch(true, 'an owner is dying or being replaced');
  }

  stop(): void {
    clearInterval(this.#timer);
  }

  #startWindows(): NodeJS.Timeout {
    const timer = setInterval(() => this.#endWindow(), REALTIME_WINDOW_MS);
    timer.unref();
    return timer;
  }

  #endWindow(): void {
    const now = process.hrtime.bigint();
    const cpuNs = threadCpuTimeNs();
    const share = (cpuNs - this.#lastCpuNs) / Number(now - this.#lastAt);
    [this.#lastCpuNs, this.#lastAt] = [cpuNs, now];
    const next = staysRealtime(this.#isRealtime || this.#afterHandover, share, this.#limit);
    this.#afterHandover = false;
    if (next === this.#isRealtime) return;
    const pct = Math.round(share * 100);
    this.#switch(next, next ? `idle again (${pct}% of a CPU)` : `busy (${pct}% of a CPU in ${REALTIME_WINDOW_MS} ms, more than ${Math.round(this.#limit * 100)}%)`, pct);
  }

  #switch(toRealtime: boolean, why: string, usedPct?: number): void {
    try {
      if (toRealtime) setRealtimeScheduling(this.#priority);
      else setNormalScheduling(0);
    } catch (err) {
      // Once: a refusal that lasts (the cgroup's runtime taken away) would recur every window.
      if (!this.#refusedOnce) this.#log.warn({ event: 'supervisor.realtime_refused', err: (err as Error).message }, `cannot change the main thread's scheduling: ${(err as Error).message}`);
      this.#refusedOnce = true;
      return;
    }
    this.#isRealtime = toRealtime;
    const busy = !toRealtime && usedPct !== undefined;
    if (busy) this.#paused++;
    const fields = { event: toRealtime ? 'supervisor.realtime_resumed' : 'supervisor.realtime_paused', why, usedPct, limitPct: Math.round(this.#limit * 100), busyPauses: this.#paused };
    // The first pause for being busy says so; the rest (every hand-over, every change of a
    // busy supervisor) would only flood the log.
    const level = busy && this.#paused === 1 ? 'info' : 'debug';
    this.#log[level](fields, `main thread ${why}: ${toRealtime ? `back to SCHED_FIFO ${this.#priority}` : 'SCHED_NORMAL until it is idle again'}`);
  }
}

/** Real-time priority lent to one new owner's main thread (RealtimeLender.lend). */
export interface RealtimeLoan {
  /** Takes the priority back `ms` from now (at once for 0). */
  endAfter(ms: number): void;
  /** Takes it back now. */
  end(): void;
}

/**
 * Lends SCHED_FIFO to the main thread of a process taking a session over, from the hand-over's
 * last frame until a while after it (config takeoverRealtimeMs; docs/systemd.md,
 * "The new owner's first milliseconds"). What that thread does then decides how long
 * applications wait: it receives ACQUIRED, restores its state, and answers the replayed
 * requests, while the dying owner's memory teardown, V8's compiler threads and everything
 * else on the machine want the same CPUs. A SCHED_NORMAL thread that wakes there may wait a
 * whole scheduler tick before the kernel moves it to an idle CPU; a real-time one runs at once.
 * At most one loan per CPU but one is out at a time, so that busy borrowers never hold every
 * CPU (none on a single CPU); a thread that does not run SCHED_NORMAL is left as it is, and one
 * whose policy changed during the loan is not changed back.
 */
export class RealtimeLender {
  readonly #loans = new Set<RealtimeLoan>();
  readonly #maxLoans: number;

  /** `cpus`: how many CPUs the supervisor may use (its borrowers share them). */
  constructor(cpus = availableParallelism()) {
    this.#maxLoans = Math.max(0, cpus - 1);
  }

  /** Loans out now. */
  get outstanding(): number {
    return this.#loans.size;
  }

  /**
   * Moves process `pid`'s main thread (its thread id is the pid) to SCHED_FIFO `priority`
   * with SCHED_RESET_ON_FORK; returns the loan, or why it did not (for the log). Never throws.
   */
  lend(pid: number, priority: number): RealtimeLoan | string {
    if (priority === 0) return 'realtimePriority is 0';
    if (this.#loans.size >= this.#maxLoans) return this.#maxLoans === 0 ? 'the supervisor has one CPU' : `${this.#loans.size} other new owners have it (one per CPU but one)`;
    let pidfd = -1;
    try {
      // Names the process even after its pid is reused: the loan is taken back only from it.
      pidfd = pidfdOpen(pid);
      const before = threadScheduling(pid);
      if (before.policy !== 'SCHED_NORMAL') {
        closeFd(pidfd);
        return `left alone: it runs ${before.policy}`;
      }
      setThreadRealtime(pid, priority);
    } catch (err) {
      if (pidfd >= 0) closeFd(pidfd);
      return (err as Error).message;
    }
    let timer: NodeJS.Timeout | null = null;
    const loan: RealtimeLoan = {
      endAfter: (ms) => {
        if (timer || !this.#loans.has(loan)) return;
        if (ms <= 0) return loan.end();
        timer = setTimeout(() => loan.end(), ms);
        timer.unref();
      },
      end: () => {
        if (!this.#loans.delete(loan)) return;
        if (timer) clearTimeout(timer);
        try {
          const now = threadScheduling(pid);
          if (!pidfdExited(pidfd) && now.policy === 'SCHED_FIFO' && now.priority === priority) setNormalScheduling(pid);
        } catch {
          // ESRCH: gone. EPERM: the process changed its credentials meanwhile; its thread keeps the policy.
        }
        closeFd(pidfd);
      },
    };
    this.#loans.add(loan);
    return loan;
  }

  /** Takes every loan back (the supervisor stops). */
  stop(): void {
    for (const loan of [...this.#loans]) loan.end();
  }
}
