// timerfd_create(2): a timer whose expiry makes an fd readable. libuv's timers count whole
// milliseconds (a 1 ms setTimeout fires 1-2 ms later); a timerfd polled on the same event
// loop fires within microseconds of its time.
import { sys, lastErrno, pollFd, type PollHandle } from './libc.ts';
import { NativeError, errnoValue } from './errors.ts';

const CLOCK_MONOTONIC = 1;
const CLOCK_THREAD_CPUTIME_ID = 3;
const TFD_NONBLOCK = 0o4000;
const TFD_CLOEXEC = 0o2000000;
const NS_PER_S = 1_000_000_000;

/**
 * A one-shot timer on the event loop with nanosecond resolution. `arm` (re)starts it;
 * `callback` runs once per expiry; `close` releases the fd. Like a ref'ed setTimeout, an
 * armed timer keeps the loop alive; a disarmed one does not.
 */
export class FineTimer {
  readonly #fd: number;
  readonly #poll: PollHandle;
  readonly #spec = Buffer.alloc(32);
  readonly #count = Buffer.alloc(8);
  #closed = false;

  /** Throws `NativeError` (EMFILE, ENOMEM) if the timerfd cannot be created. */
  constructor(callback: () => void) {
    const fd = sys.timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC) as number;
    if (fd < 0) throw new NativeError('timerfd_create', lastErrno());
    this.#fd = fd;
    this.#poll = pollFd(fd, { readable: true }, () => {
      // Reading clears the expiry; EAGAIN means it was disarmed or re-armed since.
      if (Number(sys.read(fd, this.#count, 8)) !== 8) return;
      callback();
    });
    this.#poll.unref();
  }

  /** Fires `callback` once, `delayNs` from now (at least 1 ns); replaces an earlier arming. */
  arm(delayNs: number): void {
    const ns = Math.max(1, Math.round(delayNs));
    this.#set(ns);
    this.#poll.ref();
  }

  /** Cancels a pending expiry. */
  disarm(): void {
    this.#set(0);
    this.#poll.unref();
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#poll.close();
    sys.close(this.#fd);
  }

  #set(ns: number): void {
    if (this.#closed) throw new NativeError('timerfd_settime', errnoValue('EBADF'), 'timer closed');
    // struct itimerspec: it_interval (zero: one-shot), then it_value; a zero it_value disarms.
    this.#spec.fill(0);
    this.#spec.writeBigInt64LE(BigInt(Math.floor(ns / NS_PER_S)), 16);
    this.#spec.writeBigInt64LE(BigInt(ns % NS_PER_S), 24);
    if (sys.timerfd_settime(this.#fd, 0, this.#spec, null) !== 0) throw new NativeError('timerfd_settime', lastErrno());
  }
}

const cpuTimeSpec = Buffer.alloc(16);

/** The calling thread's CPU time, ns (clock_gettime(CLOCK_THREAD_CPUTIME_ID)). Throws `NativeError`. */
export function threadCpuTimeNs(): number {
  if (sys.clock_gettime(CLOCK_THREAD_CPUTIME_ID, cpuTimeSpec) !== 0) throw new NativeError('clock_gettime', lastErrno(), 'CLOCK_THREAD_CPUTIME_ID');
  return Number(cpuTimeSpec.readBigInt64LE(0)) * NS_PER_S + Number(cpuTimeSpec.readBigInt64LE(8));
}
