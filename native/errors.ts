import { constants } from 'node:os';

const errnoNames = new Map<number, string>(
  Object.entries(constants.errno).map(([name, value]) => [value, name]),
);

/** Name of an errno value (`ENOENT`), or `E<number>` for values Node does not know. */
export function errnoName(errno: number): string {
  return errnoNames.get(errno) ?? `E${errno}`;
}

/** Numeric value of an errno name known to Node (`errnoValue('ENOTTY') === 25`). */
export function errnoValue(name: keyof typeof constants.errno): number {
  return constants.errno[name];
}

/**
 * A failed system call. `code` is the errno name (stable, e.g. `EBADF`), `errno` its
 * positive value, `syscall` the call that failed.
 */
export class NativeError extends Error {
  readonly code: string;
  readonly errno: number;
  readonly syscall: string;

  constructor(syscall: string, errno: number, detail?: string) {
    const code = errnoName(errno);
    super(`${syscall}${detail ? ` ${detail}` : ''}: ${code}`);
    this.name = 'NativeError';
    this.code = code;
    this.errno = errno;
    this.syscall = syscall;
  }
}
