// The recovery sequence of DESIGN.md section 3, up to the hand-over: fence the previous
// owner, clean backing ids, replay in-flight requests. The order matters: two readers on one
// connection corrupt it, and probing for unreported ids is only safe while nobody can
// allocate new ones.
import { readdirSync, readFileSync } from 'node:fs';
import { pidfdSendSignal, setIdleScheduling, setNormalScheduling, NativeError } from '../native/index.ts';
import { notifyResend } from '../kernel/backing.ts';
import { FuseKernelError } from '../kernel/errors.ts';
import { closeAllBacking, probeUnreported, type CleanupReport } from './cleanup.ts';
import type { Owner, Session } from './session.ts';

/** A recovery step that failed; `step` names it for logs and the ERROR reply. */
export class RecoveryError extends Error {
  readonly code = 'ERR_RECOVERY';
  constructor(
    readonly step: 'fence' | 'cleanup' | 'resend',
    message: string,
  ) {
    super(`${step}: ${message}`);
    this.name = 'RecoveryError';
  }
}

/**
 * Makes sure the owner's process reads nothing more from /dev/fuse: kills it if it still
 * lives (hung, disconnected or draining too long) and waits until its pidfd reports the exit
 * (the kernel closes a process's fds before that). A disconnected owner whose every thread
 * is already exiting needs no wait. Returns whether a kill was needed.
 */
export async function fenceOwner(owner: Owner, timeoutMs: number): Promise<boolean> {
  if (owner.exited) return false;
  // A crashed owner's socket reaches EOF before its pidfd turns readable: it is dying, not
  // hung. SIGKILL is harmless then, but it was not a fence.
  const exiting = isExiting(owner.pid);
  // Disconnected, and no thread of it will run user code again: the pidfd would only report
  // the rest of its exit, which for the last thread includes freeing the process's memory
  // (milliseconds for a daemon of some size).
  if (exiting && owner.connection === null && threadsExiting(owner.pid)) return false;
  let killed = !exiting;
  try {
    pidfdSendSignal(owner.pidfd, 'SIGKILL');
  } catch (err) {
    // ESRCH: it exited on its own meanwhile.
    if (!(err instanceof NativeError && err.code === 'ESRCH')) throw new RecoveryError('fence', (err as Error).message);
    killed = false;
  }
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<boolean>((r) => (timer = setTimeout(() => r(true), timeoutMs)));
  const late = await Promise.race([owner.exit.then(() => false), timedOut]);
  clearTimeout(timer);
  if (late) {
    throw new RecoveryError('fence', `owner ${owner.pid} did not exit within ${timeoutMs} ms of SIGKILL`);
  }
  return killed;
}

/** Bits of the kernel's task flags word (field 9 of /proc/<pid>/stat, include/linux/sched.h). */
const PF_EXITING = 0x4;
const PF_IO_WORKER = 0x10;

/** The task flags in a /proc stat line: after "pid (comm) ": state, ppid, pgrp, session, tty_nr, tpgid, flags. */
function statFlags(stat: string): number {
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[6]);
}

/**
 * Whether every thread of process `pid` is exiting (or gone). A thread sets PF_EXITING when
 * it enters do_exit(), which it only does between system calls, and never returns to user
 * space from there: with every thread exiting, no read or write on /dev/fuse is in progress
 * or can start, even though the fds are closed only later (after the last thread has freed
 * the memory). An io_uring worker thread (PF_IO_WORKER) may still act for the process, so
 * one that lives makes this false; so does any /proc entry that cannot be read but exists.
 */
export function threadsExiting(pid: number): boolean {
  return scanThreads(pid).others === 0;
}

/** One look at a process's threads (scanThreads). */
export interface ThreadScan {
  /** Threads that are exiting (PF_EXITING, not an io_uring worker). */
  exiting: number[];
  /** Threads not known to be exiting: running, an io_uring worker, or unreadable. */
  others: number;
}

/**
 * Sorts the threads of process `pid` into exiting ones and the rest, reading /proc once. A
 * process that is gone has neither; one whose thread list cannot be read counts one other.
 */
export function scanThreads(pid: number): ThreadScan {
  let tids: string[];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch (err) {
    return { exiting: [], others: (err as NodeJS.ErrnoException).code === 'ENOENT' ? 0 : 1 };
  }
  const exiting: number[] = [];
  let others = 0;
  for (const tid of tids) {
    let flags: number;
    try {
      flags = statFlags(readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8'));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'ESRCH') continue; // reaped meanwhile
      others++;
      continue;
    }
    if ((flags & PF_EXITING) === 0 || (flags & PF_IO_WORKER) !== 0) others++;
    else exiting.push(Number(tid));
  }
  return { exiting, others };
}

/**
 * Moves exiting threads `tids` (scanThreads) to SCHED_IDLE; returns the ones it moved. An
 * exiting thread never returns to user space, and what is left of its exit is kernel work
 * nobody waits for: the last thread of a process frees its memory (milliseconds for a Node
 * daemon), and only then closes its fds. On a kernel without forced preemption that work
 * keeps its CPU while whatever wakes there (the supervisor, the new owner, the applications
 * it answers) waits, possibly until the load balancer moves it. A thread gone meanwhile is
 * skipped. Move them back (restoreThreads) once the hand-over is sent: see there.
 */
export function yieldExitingThreads(tids: readonly number[]): number[] {
  return setEachThread(tids, setIdleScheduling);
}

/**
 * Moves threads `tids` that yieldExitingThreads idled back to SCHED_NORMAL; returns how many
 * were still there. The last thread of a process signals its parent and then, still exiting,
 * drops its /proc entries; the parent's wait4() meanwhile drops the process's, and waits in a
 * loop for dentries the thread holds. Left SCHED_IDLE, that thread hardly runs while the
 * parent spins on its CPU: reaping took the parent up to 390 ms of CPU on the failover bench
 * (bench/reap.ts measures it). Call it while the process is not reaped, so that the thread
 * ids are still its own.
 */
export function restoreThreads(tids: Iterable<number>): number {
  return setEachThread(tids, setNormalScheduling).length;
}

/**
 * Applies a scheduling change to each of `tids`; returns the ones it reached. A thread that
 * has finished exiting (ESRCH) or belongs to another uid (EPERM: the unit grants no
 * CAP_SYS_NICE) is skipped: its exit goes on at its own pace either way.
 */
function setEachThread(tids: Iterable<number>, set: (tid: number) => void): number[] {
  const reached: number[] = [];
  for (const tid of tids) {
    try {
      set(tid);
      reached.push(tid);
    } catch {
      // ESRCH or EPERM, as above.
    }
  }
  return reached;
}

/**
 * Whether process `pid` is already exiting (or gone). Only asked while its pidfd has not
 * reported the exit, so the pid still names the owner.
 */
export function isExiting(pid: number): boolean {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return true;
  }
  return (statFlags(stat) & PF_EXITING) !== 0;
}

/**
 * Cleans the backing ids of an ownerless connection: CLOSE_ALL where the kernel has it
 * (the journal is then empty), otherwise the journal strategy's first half: close the ids
 * opened above the highest reported one. The journaled ids stay for the new owner to adopt;
 * the rest are closed when it answers ADOPT.
 */
export function cleanBacking(session: Session, closeAllAvailable: boolean): CleanupReport {
  try {
    if (closeAllAvailable) {
      const report = closeAllBacking(session.fd, session.journal);
      if (report) return report;
    }
    const probed = probeUnreported(session.fd, session.journal);
    return { strategy: 'journal', closed: 0, probed, alreadyGone: 0 };
  } catch (err) {
    // EPERM on a connection whose owners never negotiated passthrough: it has no backing ids.
    if (err instanceof FuseKernelError && err.code === 'ERR_PASSTHROUGH_NOT_READY' && session.journal.size === 0) {
      return { strategy: 'none', closed: 0, probed: 0, alreadyGone: 0 };
    }
    throw new RecoveryError('cleanup', (err as Error).message);
  }
}

/** FUSE_NOTIFY_RESEND: requests the dead owner read but never answered come back, bit 63 set. */
export function replayInFlight(session: Session): void {
  try {
    notifyResend(session.fd);
  } catch (err) {
    throw new RecoveryError('resend', (err as Error).message);
  }
}
