import { constants } from 'node:os';
import { sys, lastErrno } from './libc.ts';
import { NativeError } from './errors.ts';
import { pollNow, POLL } from './fd.ts';

const SYS_pidfd_send_signal = 424;
const SYS_pidfd_open = 434;

/**
 * A pidfd for `pid` (close-on-exec by kernel default). It becomes readable when the process
 * exits, and keeps naming that process even after its pid is reused. The caller owns it.
 * Throws `NativeError` (`ESRCH` when no such process).
 */
export function pidfdOpen(pid: number): number {
  const fd = Number(sys.syscall(SYS_pidfd_open, 'long', pid, 'long', 0));
  if (fd < 0) throw new NativeError('pidfd_open', lastErrno(), String(pid));
  return fd;
}

/**
 * Sends `signal` to the process behind `pidfd`; never reaches a process that merely reuses
 * the pid. Throws `NativeError` (`ESRCH` once the process has exited).
 */
export function pidfdSendSignal(pidfd: number, signal: NodeJS.Signals | number): void {
  const signo = typeof signal === 'number' ? signal : constants.signals[signal];
  if (Number(sys.syscall(SYS_pidfd_send_signal, 'long', pidfd, 'long', signo, 'void *', null, 'long', 0)) !== 0) {
    throw new NativeError('pidfd_send_signal', lastErrno(), `${signal} via pidfd ${pidfd}`);
  }
}

/**
 * Whether the process behind `pidfd` has exited: a pidfd is readable from then on, reaped or
 * not (the kernel marks it when the process's last thread notifies its parent).
 */
export function pidfdExited(pidfd: number): boolean {
  return (pollNow(pidfd, POLL.IN) & POLL.IN) !== 0;
}

/** include/uapi/linux/sched.h */
const SCHED_NORMAL = 0;
const SCHED_FIFO = 1;
const SCHED_IDLE = 5;
/** Or-ed into a policy: threads and processes the thread creates from then on get SCHED_NORMAL. */
const SCHED_RESET_ON_FORK = 0x40000000;
/** struct sched_param: sched_priority, 0 for every policy but the real-time ones. */
const NO_PRIORITY = Buffer.alloc(4);

/**
 * Moves thread `tid` to the SCHED_IDLE policy: it runs only when no other task wants the CPU,
 * and any task waking on its CPU preempts it (on a kernel without forced preemption, at its
 * next rescheduling point). Throws `NativeError` (`ESRCH` once the thread is gone, `EPERM`
 * without CAP_SYS_NICE over it).
 */
export function setIdleScheduling(tid: number): void {
  if (sys.sched_setscheduler(tid, SCHED_IDLE, NO_PRIORITY) !== 0) throw new NativeError('sched_setscheduler', lastErrno(), `SCHED_IDLE for thread ${tid}`);
}

/**
 * Moves thread `tid` (0: the calling thread) back to SCHED_NORMAL, from SCHED_IDLE
 * (setIdleScheduling) or SCHED_FIFO (setRealtimeScheduling). Throws `NativeError` (`ESRCH`
 * once the thread is gone, `EPERM` without CAP_SYS_NICE over it).
 */
export function setNormalScheduling(tid: number): void {
  if (sys.sched_setscheduler(tid, SCHED_NORMAL, NO_PRIORITY) !== 0) throw new NativeError('sched_setscheduler', lastErrno(), `SCHED_NORMAL for thread ${tid}`);
}

/**
 * Moves the calling thread to SCHED_FIFO at `priority` (1-99), with SCHED_RESET_ON_FORK: the
 * threads and processes it starts from then on run with SCHED_NORMAL. A real-time thread
 * that wakes takes the CPU from any SCHED_NORMAL one at once (on a kernel without forced
 * preemption, at its next rescheduling point); the kernel caps real-time tasks at
 * kernel.sched_rt_runtime_us per second (95% by default). Throws `NativeError`: `EPERM`
 * without CAP_SYS_NICE (or under systemd's RestrictRealtime=), or where the kernel has
 * CONFIG_RT_GROUP_SCHED and the thread's cgroup has no real-time runtime.
 */
export function setRealtimeScheduling(priority: number): void {
  setThreadRealtime(0, priority);
}

/**
 * Moves thread `tid` (0: the calling thread) to SCHED_FIFO at `priority`, with
 * SCHED_RESET_ON_FORK, as setRealtimeScheduling. Throws `NativeError`: `ESRCH` once the
 * thread is gone, `EPERM` without CAP_SYS_NICE over it or where its cgroup has no real-time
 * runtime (CONFIG_RT_GROUP_SCHED).
 */
export function setThreadRealtime(tid: number, priority: number): void {
  const param = Buffer.alloc(4);
  param.writeInt32LE(priority);
  if (sys.sched_setscheduler(tid, SCHED_FIFO | SCHED_RESET_ON_FORK, param) !== 0) throw new NativeError('sched_setscheduler', lastErrno(), `SCHED_FIFO ${priority} for thread ${tid}`);
}

/** Scheduling policies by number (include/uapi/linux/sched.h). */
const POLICY_NAMES: Record<number, string> = { 0: 'SCHED_NORMAL', 1: 'SCHED_FIFO', 2: 'SCHED_RR', 3: 'SCHED_BATCH', 5: 'SCHED_IDLE', 6: 'SCHED_DEADLINE' };

/** A thread's scheduling policy and real-time priority (0 for the other policies). */
export interface ThreadScheduling {
  /** SCHED_NORMAL, SCHED_FIFO, SCHED_RR, SCHED_BATCH, SCHED_IDLE, SCHED_DEADLINE, or `policy N`. */
  policy: string;
  priority: number;
}

/**
 * Thread `tid`'s scheduling policy and priority (sched_getscheduler(2), sched_getparam(2)).
 * Throws `NativeError` (`ESRCH` once the thread is gone).
 */
export function threadScheduling(tid: number): ThreadScheduling {
  const policy = sys.sched_getscheduler(tid) as number;
  if (policy < 0) throw new NativeError('sched_getscheduler', lastErrno(), `thread ${tid}`);
  const param = Buffer.alloc(4);
  if ((sys.sched_getparam(tid, param) as number) !== 0) throw new NativeError('sched_getparam', lastErrno(), `thread ${tid}`);
  const base = policy & ~SCHED_RESET_ON_FORK;
  return { policy: POLICY_NAMES[base] ?? `policy ${base}`, priority: param.readInt32LE(0) };
}

/** The CPU the calling thread is running on (sched_getcpu(3)). */
export function currentCpu(): number {
  const cpu = sys.sched_getcpu() as number;
  if (cpu < 0) throw new NativeError('sched_getcpu', lastErrno());
  return cpu;
}

/** Bytes of a CPU mask: glibc's cpu_set_t, 1024 CPUs. */
const CPU_MASK_BYTES = 128;

/**
 * The CPUs thread `tid` may run on, as a mask (bit n for CPU n; sched_getaffinity(2)).
 * Throws `NativeError` (`ESRCH` once the thread is gone).
 */
export function cpuAffinity(tid: number): Buffer {
  const mask = Buffer.alloc(CPU_MASK_BYTES);
  if ((sys.sched_getaffinity(tid, mask.length, mask) as number) < 0) throw new NativeError('sched_getaffinity', lastErrno(), `thread ${tid}`);
  return mask;
}

/**
 * Lets thread `tid` run only on the CPUs of `mask` (sched_setaffinity(2)); a thread waiting on
 * another CPU is moved at once. Throws `NativeError` (`ESRCH` once the thread is gone,
 * `EPERM` without CAP_SYS_NICE over it, `EINVAL` if no CPU of the mask is usable).
 */
export function setCpuAffinity(tid: number, mask: Buffer): void {
  if ((sys.sched_setaffinity(tid, mask.length, mask) as number) !== 0) throw new NativeError('sched_setaffinity', lastErrno(), `thread ${tid}`);
}
