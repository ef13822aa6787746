import pino, { type LogFn, type Logger } from 'pino';

/**
 * Log calls made while a logger is held (holdLogsThisTurn): each is formatted and written when
 * the hold ends, in order, with the time it was made at. Held calls are written on exit too;
 * only a SIGKILL within that turn loses them.
 */
class LogHold {
  #calls: { logger: Logger; method: LogFn; args: Parameters<LogFn>; at: number }[] | null = null;
  /** While a held call is written: the time it was made at (the logger's timestamp). */
  replayingAt: number | undefined;

  constructor() {
    process.once('exit', () => this.#release());
  }

  /** Keeps the call for later, if held; false if it is to be written now. */
  take(logger: Logger, method: LogFn, args: Parameters<LogFn>): boolean {
    if (!this.#calls) return false;
    // pino reads a merging object's fields when it formats the line; the copy keeps the values
    // of the moment (of the top level: nested objects logged while held must not change).
    const [first, ...rest] = args as unknown[];
    const own = first !== null && typeof first === 'object' && !(first instanceof Error) ? { ...first } : first;
    this.#calls.push({ logger, method, args: [own, ...rest] as Parameters<LogFn>, at: Date.now() });
    return true;
  }

  hold(): void {
    if (this.#calls) return;
    this.#calls = [];
    setImmediate(() => this.#release());
  }

  #release(): void {
    const calls = this.#calls;
    this.#calls = null;
    for (const c of calls ?? []) {
      this.replayingAt = c.at;
      try {
        c.method.apply(c.logger, c.args);
      } finally {
        this.replayingAt = undefined;
      }
    }
  }
}

const holds = new WeakMap<Logger, LogHold>();

/**
 * The supervisor's logger: JSON lines on stdout, written synchronously (journald reads
 * stdout). One structured event per state change, named by `event`.
 */
export function createLogger(level: string = process.env.FUSEKEEPER_LOG_LEVEL ?? 'info'): Logger {
  const hold = new LogHold();
  const log = pino(
    {
      level,
      base: { service: 'fusekeeper' },
      // pino's own epoch time, or the time a held call was made at.
      timestamp: () => `,"time":${hold.replayingAt ?? Date.now()}`,
      hooks: {
        logMethod(args, method) {
          if (!hold.take(this, method, args)) method.apply(this, args);
        },
      },
    },
    pino.destination({ dest: 1, sync: true }),
  );
  holds.set(log, hold);
  return log;
}

/**
 * Holds `log`'s calls until the current turn of the event loop ends (its check phase), when
 * their lines are formatted and written in order, with the times they were logged at. For a
 * hand-over, which should reach the new owner first:
 * - writing a line wakes whoever reads the log (journald, a terminal), and on a preempt=none
 *   kernel with two CPUs that reader was seen taking the supervisor's CPU for 8-9 ms between
 *   the owner's death and the ACQUIRED frame;
 * - formatting the owner's disconnection took 100 µs of that path on the failover bench
 *   (median; 600 at the first crash after start-up), more than the fence, the replay and the
 *   new owner's bookkeeping together.
 * No effect on a logger that createLogger did not make.
 */
export function holdLogsThisTurn(log: Logger): void {
  holds.get(log)?.hold();
}

/** A logger that drops everything, for embedding and tests. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}

export type { Logger };
