import pino, { type Logger } from 'pino';

/**
 * The supervisor's logger: JSON lines on stdout, written synchronously (journald reads
 * stdout; a crash loses no line). One structured event per state change, named by `event`.
 */
export function createLogger(level: string = process.env.FUSEKEEPER_LOG_LEVEL ?? 'info'): Logger {
  return pino({ level, base: { service: 'fusekeeper' } }, pino.destination({ dest: 1, sync: true }));
}

/** A logger that drops everything, for embedding and tests. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}

export type { Logger };
