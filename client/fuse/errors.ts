import { constants } from 'node:os';

/** Throw from a FUSE operation to answer the kernel with `-errno`. */
export class FuseError extends Error {
  readonly errno: number;
  constructor(errno: number | keyof typeof constants.errno, message?: string) {
    const value = typeof errno === 'number' ? errno : constants.errno[errno];
    super(message ?? `FUSE operation failed with errno ${value}`);
    this.name = 'FuseError';
    this.errno = value;
  }
}

/**
 * The errno to answer for `err`: a `FuseError`'s, a Node system error's (`err.errno` is
 * negative there, `err.code` its name), or `undefined` for anything else (a bug: EIO).
 */
export function errnoOf(err: unknown): number | undefined {
  if (err instanceof FuseError) return err.errno;
  const e = err as { code?: unknown; errno?: unknown } | null;
  if (e && typeof e.code === 'string' && e.code in constants.errno) return constants.errno[e.code as keyof typeof constants.errno];
  if (e && typeof e.errno === 'number' && e.errno !== 0) return Math.abs(e.errno);
  return undefined;
}
