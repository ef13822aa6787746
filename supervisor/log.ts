import pino, { type Logger } from 'pino';

/**
 * stdout for the logger, written synchronously (journald reads stdout), except while held for
 * the rest of one turn of the event loop (holdLogsThisTurn). Held lines are written on exit
 * too; only a SIGKILL within that turn loses them.
 */
class StdoutDestination {
  readonly #out = pino.destination({ dest: 1, sync: true });
  #held: string[] | null = null;

  constructor() {
    process.once('exit', () => this.#release());
  }

  write(line: string): void {
    if (this.#held) this.#held.push(line);
    else this.#out.write(line);
  }

  hold(): void {
    if (this.#held) return;
    this.#held = [];
    setImmediate(() => this.#release());
  }

  flushSync(): void {
    this.#release();
    this.#out.flushSync();
  }

  #release(): void {
    const lines = this.#held;
    this.#held = null;
    if (lines?.length) this.#out.write(lines.join(''));
  }
}

/**
 * The supervisor's logger: JSON lines on stdout. One structured event per state change, named
 * by `event`.
 */
export function createLogger(level: string = process.env.FUSEKEEPER_LOG_LEVEL ?? 'info'): Logger {
  return pino({ level, base: { service: 'fusekeeper' } }, new StdoutDestination());
}

/**
 * Holds `log`'s lines until the current turn of the event loop ends (its check phase), when
 * they are written in order, with the times they were logged at. For a hand-over: writing a
 * line wakes whoever reads the log (journald, a terminal), and on a preempt=none kernel with
 * two CPUs that reader was seen taking the supervisor's CPU for 8-9 ms between the owner's
 * death and the ACQUIRED frame. No effect on a logger of another kind.
 */
export function holdLogsThisTurn(log: Logger): void {
  const out = (log as unknown as Record<symbol, unknown>)[pino.symbols.streamSym];
  if (out instanceof StdoutDestination) out.hold();
}

/** A logger that drops everything, for embedding and tests. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}

export type { Logger };
