import { NativeError } from '../native/index.ts';

/** Stable codes of `FuseKernelError`. */
export type FuseKernelErrorCode =
  /** The fd is not open. */
  | 'ERR_BAD_FD'
  /** The fd is open but is not a `/dev/fuse` device (10:229). */
  | 'ERR_NOT_FUSE_DEVICE'
  /** `/dev/fuse` fd with no mounted connection, passthrough not negotiated, or no CAP_SYS_ADMIN (all `EPERM`). */
  | 'ERR_PASSTHROUGH_NOT_READY'
  /** The backing id is not open on this connection (`ENOENT`). */
  | 'ERR_UNKNOWN_BACKING_ID'
  /** The kernel refused the backing file (`EINVAL`: a directory, too deep a stack, ...). */
  | 'ERR_BACKING_REFUSED'
  /** The connection is gone (`ENODEV`) or the kernel does not know the notification (`EINVAL`). */
  | 'ERR_NOTIFY_FAILED'
  /** Mounting or unmounting failed. */
  | 'ERR_MOUNT'
  /** Anything else; `errno` says what. */
  | 'ERR_KERNEL';

/** A FUSE kernel operation failed. `code` is stable; `errno` is the kernel's answer. */
export class FuseKernelError extends Error {
  readonly code: FuseKernelErrorCode;
  readonly errno: string;

  constructor(code: FuseKernelErrorCode, message: string, errno: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'FuseKernelError';
    this.code = code;
    this.errno = errno;
  }
}

/** The errno name of a `NativeError`, rethrowing anything else. */
export function nativeErrno(err: unknown): string {
  if (err instanceof NativeError) return err.code;
  throw err;
}
