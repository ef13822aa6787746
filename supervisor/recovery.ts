// The recovery sequence of DESIGN.md section 3, up to the hand-over: fence the previous
// owner, clean backing ids, replay in-flight requests. The order matters: two readers on one
// connection corrupt it, and probing for unreported ids is only safe while nobody can
// allocate new ones.
import { readdirSync } from 'node:fs';
import { cpuAffinity, errnoValue, pidfdSendSignal, readGeneratedFile, readLinkInto, sameFileTable, setCpuAffinity, setIdleScheduling, setNormalScheduling, NativeError } from '../native/index.ts';
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
 * is already exiting or parked (scanThreads) needs no wait. Returns whether a kill was needed.
 */
export async function fenceOwner(owner: Owner, timeoutMs: number): Promise<boolean> {
  if (owner.exited) return false;
  // Disconnected, and no thread of it will run user code again: the pidfd would only report
  // the rest of its exit, which for the last thread includes freeing the process's memory
  // (milliseconds for a daemon of some size).
  if (owner.connection === null && owner.fenced === true) return false;
  // A crashed owner's socket reaches EOF before its pidfd turns readable: it is dying, not
  // hung. SIGKILL is harmless then, but it was not a fence.
  const dying = isDying(owner.pid);
  if (dying && owner.connection === null && threadsFenced(owner.pid)) return false;
  let killed = !dying;
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

/** SIGKILL's bit in a mask of signals (bit n - 1 for signal n). */
const SIGKILL_BIT = 1 << 8;

/**
 * Where the /proc files of a look are read: a stat line is under 1 KiB, a stack at most 64
 * frames of about 60 bytes. Read into it natively (readGeneratedFile), 11 threads' stat
 * files took 2.5 times less than with fs.readFileSync, their stacks 1.8 times less; a look
 * runs while applications wait.
 */
const procScratch = Buffer.alloc(8192);

/** The target of an fd link to an io_uring instance. */
const IO_URING_LINK = Buffer.from('anon_inode:[io_uring]');

const ENOENT = errnoValue('ENOENT');
const ESRCH = errnoValue('ESRCH');

/** The text of a /proc file (its first 8 KiB), or the negative errno it could not be read with. */
function readProcText(path: string): string | number {
  const n = readGeneratedFile(path, procScratch);
  return n < 0 ? n : procScratch.toString('latin1', 0, n);
}

/**
 * From a /proc stat line: the state (field 3), the task flags (field 9), the thread's own
 * pending signals (field 31, the low 31 bits; a signal sent to the process as a whole is not
 * in it until a thread takes it) and the CPU it last ran on (field 39). After "pid (comm) "
 * come state, ppid, pgrp, session, tty_nr, tpgid, flags, ..., signal as the 29th and
 * processor as the 37th.
 */
export function statFields(stat: string): { state: string; flags: number; pending: number; cpu: number } {
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return { state: fields[0]!, flags: Number(fields[6]), pending: Number(fields[28]), cpu: Number(fields[36]) };
}

/**
 * Whether no thread of process `pid` can read or write /dev/fuse any more (or it is gone):
 * each thread is exiting or parked (scanThreads). An io_uring worker thread (PF_IO_WORKER)
 * may still act for the process, so one that lives makes this false; so does any /proc entry
 * that cannot be read but exists.
 */
export function threadsFenced(pid: number): boolean {
  return scanThreads(pid).others === 0;
}

/** One look at a process's threads (scanThreads). */
export interface ThreadScan {
  /** Threads that are exiting (PF_EXITING, not an io_uring worker). */
  exiting: number[];
  /**
   * Threads not exiting yet, but SIGKILLed and switched out in a wait outside the FUSE device.
   * Complete only when `others` is 0: a look that finds another thread stops checking.
   */
  parked: number[];
  /**
   * Threads neither exiting nor found parked: running, an io_uring worker, elsewhere,
   * unreadable, or not checked because another one was found first.
   */
  others: number;
  /**
   * Of the others, those with SIGKILL pending that are runnable (state R: on a CPU, or
   * waiting for one), with the CPU they last ran on.
   */
  runnable: { tid: number; cpu: number }[];
}

/**
 * Sorts the threads of process `pid` into exiting, parked and other ones. A process that is
 * gone has none; one whose thread list cannot be read counts one other.
 *
 * Exiting: a thread sets PF_EXITING when it enters do_exit(), and never returns to user
 * space from there. Parked: it has SIGKILL pending, has not run since it was switched out in
 * a wait that the signal ends (parkedAt), and no parked thread's fd table holds an io_uring
 * instance (ringInFileTables). Neither can start a read, write or ioctl on /dev/fuse, and
 * neither is inside one, even though the process's fds are closed only later (after its
 * last thread has freed the memory). Most threads of a SIGKILLed process are parked or exiting when the first
 * thread exit is reported (about 0.2 ms after the signal); waiting for all of them to be
 * exiting took 1-3 ms more on a 2-CPU machine, as the last ones waited for a CPU.
 *
 * The look reads each thread's stat file first; then, only while no thread is found to be
 * neither, the stacks of those with SIGKILL pending; then, only if all of them are parked,
 * the links of their fds. A look that finds another thread has failed whatever the rest
 * would show, and it is repeated until one succeeds: on the failover bench a Node daemon's 39
 * fd links took 0.28 ms at the take-over and a stack 23 µs, against 18 µs for a stat file.
 *
 * A thread's files are read as /proc/<tid>/..., not /proc/<pid>/task/<tid>/...: the dentries
 * a read leaves in the dcache then hang under /proc/<tid>, which only that thread's own exit
 * drops. Under /proc/<pid>/task they were also walked by the parent's reap of the process
 * (proc_flush_pid, shrink_dcache_parent), which loops while the last thread, preempted by
 * that very parent, holds them on its own dispose list: reaping a SIGKILLed 64 MB Node
 * process under load took the parent 82-139 ms of CPU (median; bench/reap.ts, threads left
 * idled) with the task paths, 0.07 ms with these.
 */
export function scanThreads(pid: number): ThreadScan {
  let tids: string[];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch (err) {
    return { exiting: [], parked: [], others: (err as NodeJS.ErrnoException).code === 'ENOENT' ? 0 : 1, runnable: [] };
  }
  const exiting: number[] = [];
  const killed: { tid: number; cpu: number; runnable: boolean }[] = [];
  let others = 0;
  for (const tid of tids) {
    const text = readProcText(`/proc/${tid}/stat`);
    if (typeof text === 'number') {
      if (text !== -ENOENT && text !== -ESRCH) others++; // else reaped meanwhile
      continue;
    }
    const stat = statFields(text);
    if ((stat.flags & PF_IO_WORKER) !== 0) others++;
    else if ((stat.flags & PF_EXITING) !== 0) exiting.push(Number(tid));
    else if ((stat.pending & SIGKILL_BIT) !== 0) killed.push({ tid: Number(tid), cpu: stat.cpu, runnable: stat.state === 'R' });
    else others++;
  }
  const parked: number[] = [];
  const runnable: { tid: number; cpu: number }[] = [];
  for (const t of killed) {
    if (others === 0 && parkedAt(readStack(`/proc/${t.tid}/stack`))) {
      parked.push(t.tid);
      continue;
    }
    others++;
    if (t.runnable) runnable.push({ tid: t.tid, cpu: t.cpu });
  }
  if (others === 0 && parked.length > 0 && ringInFileTables(parked)) {
    // io_uring may yet run a read for any of them: none is parked after all.
    for (const t of killed) if (t.runnable) runnable.push({ tid: t.tid, cpu: t.cpu });
    return { exiting, parked: [], others: parked.length, runnable };
  }
  return { exiting, parked, others, runnable };
}

/** A line of /proc/<tid>/stack: "[<0>] function+0x1d/0x40", innermost first. */
const STACK_FRAME = /^\[<[0-9a-fx]+>\] ([A-Za-z0-9_]+)[A-Za-z0-9_.]*\+/;

/**
 * Where a thread can be switched out that a fatal signal ends: the innermost function of its
 * kernel stack is one of these. Waits in futex, epoll, poll/select (poll_schedule_timeout)
 * and nanosleep return an error when a fatal signal is pending (the thread then exits on its
 * way back to user space), and exit_to_user_mode_loop is that way back, where pending
 * signals are handled. None of them is inside the FUSE device. Names from Linux 5.10 to 6.18,
 * without the compiler's suffixes (".constprop.0").
 */
const PARKING_FUNCTIONS = new Set([
  'futex_do_wait',
  'futex_wait_queue',
  'futex_wait_queue_me',
  'do_epoll_wait',
  'ep_poll',
  'poll_schedule_timeout',
  'do_nanosleep',
  'hrtimer_nanosleep',
  'exit_to_user_mode_loop',
]);

/**
 * Whether the fd table of thread `tid` (of a process id: its leader's) has an io_uring
 * instance open, or cannot be listed. On its way out, a SIGKILLed thread runs its pending
 * task work before it exits, and io_uring retries reads there (one of /dev/fuse among them,
 * possibly). do_exit() cancels a thread's io_uring requests before the thread sets
 * PF_EXITING, so an exiting thread is safe either way; but it drops its fd table soon after,
 * so the table of a thread that has exited lists empty (ringInFileTables).
 */
export function usesIoUring(tid: number): boolean {
  try {
    for (const fd of readdirSync(`/proc/${tid}/fd`)) {
      try {
        const n = readLinkInto(`/proc/${tid}/fd/${fd}`, procScratch);
        if (n === IO_URING_LINK.length && procScratch.subarray(0, n).equals(IO_URING_LINK)) return true;
      } catch {
        // closed meanwhile
      }
    }
    return false;
  } catch {
    return true;
  }
}

/**
 * Whether an fd table of threads `tids` holds an io_uring instance, or cannot be listed
 * (usesIoUring). Each table is listed once: the threads of a process share one, unless a
 * thread unshared it (kcmp tells; where it cannot, each thread's is listed). Listed through a
 * thread that has one: /proc/<pid>/fd is the thread group leader's table, and a leader that
 * has exited has none, which lists empty while its other threads still hold every fd.
 */
export function ringInFileTables(tids: readonly number[]): boolean {
  const listed: number[] = [];
  for (const tid of tids) {
    if (listed.some((other) => sharesFileTable(other, tid))) continue;
    if (usesIoUring(tid)) return true;
    listed.push(tid);
  }
  return false;
}

function sharesFileTable(a: number, b: number): boolean {
  try {
    return sameFileTable(a, b);
  } catch {
    return false; // gone, or no kcmp: list b's table too
  }
}

/** The text of a thread's /proc stack file, '' where it cannot be read. */
function readStack(path: string): string {
  const text = readProcText(path);
  return typeof text === 'number' ? '' : text;
}

/**
 * Whether a thread whose kernel stack is `stack` (the text of /proc/<tid>/stack)
 * is switched out in one of PARKING_FUNCTIONS, with no frame in FUSE code. The stack is the
 * one saved when the thread was last switched out, which is where it resumes; the kernel's
 * unwinder shows nothing for a thread that is on a CPU. With SIGKILL pending, such a thread
 * exits without running user code and without entering the FUSE device: it is parked. The
 * file takes CAP_SYS_ADMIN and ptrace access to the thread: without CAP_SYS_PTRACE, only to
 * a dumpable daemon of this uid with no capability this process lacks (and under Yama's
 * ptrace_scope 1, one it started). Unreadable, it shows no thread as parked.
 */
export function parkedAt(stack: string): boolean {
  const frames = stack.split('\n').map((line) => STACK_FRAME.exec(line)?.[1]).filter((f) => f !== undefined);
  return frames.length > 0 && PARKING_FUNCTIONS.has(frames[0]!) && !frames.some((f) => f.startsWith('fuse_'));
}

/**
 * Moves exiting or parked threads `tids` (scanThreads) to SCHED_IDLE; returns the ones it
 * moved. Such a thread never returns to user space, and what is left of its exit is kernel
 * work nobody waits for: the last thread of a process frees its memory (milliseconds for a
 * Node daemon), and only then closes its fds. On a kernel without forced preemption that work
 * keeps its CPU while whatever wakes there (the supervisor, the new owner, the applications
 * it answers) waits, possibly until the load balancer moves it. A thread gone meanwhile is
 * skipped. Move them back (restoreThreads) before the process is reaped: see there.
 */
export function yieldExitingThreads(tids: readonly number[]): number[] {
  return setEachThread(tids, setIdleScheduling);
}

/**
 * Lets each of `runnable` (scanThreads) that last ran on CPU `cpu` run only on the other CPUs
 * it may use, which moves it there at once; returns the moved threads with the affinity they
 * had, for restoreThreads. A SIGKILLed thread exits only once it runs. Where the calling
 * thread is the real-time supervisor looking at the dying owner, one preempted on its CPU
 * waits behind it, and the kernel does not always pull it to an idle CPU: on the failover
 * bench such a thread stayed queued for 2.5-3 ms next to an idle CPU while the hand-over
 * waited for it (a sched trace: bench/results/failover-ab-stop21.json). A thread gone
 * meanwhile, or of another uid without CAP_SYS_NICE, or without that CPU or another one, is
 * skipped.
 */
export function moveOffCpu(runnable: readonly { tid: number; cpu: number }[], cpu: number): Map<number, Buffer> {
  const moved = new Map<number, Buffer>();
  for (const t of runnable) {
    if (t.cpu !== cpu) continue;
    try {
      const before = cpuAffinity(t.tid);
      const bit = 1 << (cpu & 7);
      if ((before[cpu >> 3]! & bit) === 0) continue;
      const others = Buffer.from(before);
      others[cpu >> 3] = others[cpu >> 3]! & ~bit;
      if (others.every((b) => b === 0)) continue;
      setCpuAffinity(t.tid, others);
      moved.set(t.tid, before);
    } catch {
      // ESRCH or EPERM, as in setEachThread.
    }
  }
  return moved;
}

/**
 * How long after a dying owner turns out not to be fenced (it exited or disconnected first,
 * or a thread stayed in user space or in FUSE code) its idled threads go back to
 * SCHED_NORMAL (restoreThreads), ms.
 */
export const RESTORE_IDLED_AFTER_MS = 1;

/**
 * How long at most a fenced owner's threads stay on SCHED_IDLE, ms. They go back when the
 * teardown closes the process's files, after freeing its memory (4-9 ms after the kill for a
 * Node daemon on the 2-vCPU test VM, with a CPU to spare); a teardown that the load starves
 * meanwhile gets its share back after this.
 */
export const TEARDOWN_IDLE_MAX_MS = 20;

/**
 * Moves threads `tids` that yieldExitingThreads idled back to SCHED_NORMAL, and gives the
 * threads moveOffCpu moved (`affinities`) their CPUs back; returns how many of `tids` were
 * still there. The last thread of a process signals its parent and then, still exiting,
 * drops its /proc entries; the parent's wait4() meanwhile drops the process's, and waits in a
 * loop for any dentry of them that the thread holds. Left SCHED_IDLE, that thread hardly runs
 * while the parent spins on its CPU: reaping took the parent up to 390 ms of CPU on the
 * failover bench (bench/reap.ts measures it). scanThreads no longer leaves such dentries
 * where both walk; a teardown starved under load still holds the process's memory. Call it
 * while the process is not reaped, so that the thread ids are still its own.
 */
export function restoreThreads(tids: Iterable<number>, affinities?: ReadonlyMap<number, Buffer>): number {
  if (affinities) setEachThread(affinities.keys(), (tid) => setCpuAffinity(tid, affinities.get(tid)!));
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
 * Whether process `pid` is dying (or gone): its main thread is exiting or has SIGKILL
 * pending. Only asked while its pidfd has not reported the exit, so the pid still names the
 * owner.
 */
export function isDying(pid: number): boolean {
  const text = readProcText(`/proc/${pid}/stat`);
  if (typeof text === 'number') return true;
  const stat = statFields(text);
  return (stat.flags & PF_EXITING) !== 0 || (stat.pending & SIGKILL_BIT) !== 0;
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
