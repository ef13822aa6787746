import { ioctl, ioctlResult, writeFd, NativeError, errnoName, errnoValue } from '../native/index.ts';
import {
  FUSE_DEV_IOC_BACKING_OPEN,
  FUSE_DEV_IOC_BACKING_CLOSE,
  FUSE_DEV_IOC_BACKING_CLOSE_ALL,
  notifyResendMessage,
} from './abi.ts';
import { FuseKernelError } from './errors.ts';
import { assertFuseDevice, classifyFd } from './device.ts';

const backingMap = Buffer.alloc(16);
const backingIdArg = Buffer.alloc(4);

/** Turns a failed FUSE ioctl into a `FuseKernelError` that says which fd was wrong. */
function explainIoctlFailure(err: unknown, op: string, fuseFd: number, backingFd?: number): FuseKernelError {
  if (!(err instanceof NativeError)) throw err;
  assertFuseDevice(fuseFd, 'FUSE fd');
  if (backingFd !== undefined && classifyFd(backingFd) === 'closed') {
    return new FuseKernelError('ERR_BAD_FD', `${op}: backing fd ${backingFd} is not an open file descriptor`, 'EBADF', { cause: err });
  }
  switch (err.code) {
    case 'EPERM':
      return new FuseKernelError(
        'ERR_PASSTHROUGH_NOT_READY',
        `${op}: the kernel refused (EPERM): the FUSE connection is not mounted, passthrough was not negotiated in INIT, or the caller lacks CAP_SYS_ADMIN`,
        err.code,
        { cause: err },
      );
    case 'ENOENT':
      return new FuseKernelError('ERR_UNKNOWN_BACKING_ID', `${op}: no such backing id on this connection`, err.code, { cause: err });
    case 'EINVAL':
    case 'ELOOP':
    case 'EOPNOTSUPP':
      return new FuseKernelError('ERR_BACKING_REFUSED', `${op}: the kernel refused the backing file (${err.code})`, err.code, { cause: err });
    default:
      return new FuseKernelError('ERR_KERNEL', `${op}: ${err.code}`, err.code, { cause: err });
  }
}

/**
 * `FUSE_DEV_IOC_BACKING_OPEN`: registers `backingFd` as a passthrough backing file of the
 * connection behind `fuseFd` and returns its backing id (allocated cyclically from 1). The
 * kernel takes its own reference to the file: both fds stay owned by the caller on every
 * path. Throws `FuseKernelError`.
 */
export function backingOpen(fuseFd: number, backingFd: number): number {
  backingMap.fill(0);
  backingMap.writeInt32LE(backingFd, 0);
  try {
    return ioctl(fuseFd, FUSE_DEV_IOC_BACKING_OPEN, backingMap);
  } catch (err) {
    throw explainIoctlFailure(err, 'backing open', fuseFd, backingFd);
  }
}

/**
 * `FUSE_DEV_IOC_BACKING_CLOSE`: drops the connection's reference to backing `id`. Files
 * already opened with it keep their own reference. Throws `FuseKernelError`
 * (`ERR_UNKNOWN_BACKING_ID` for an id that is not open).
 */
export function backingClose(fuseFd: number, id: number): void {
  backingIdArg.writeUInt32LE(id >>> 0, 0);
  try {
    ioctl(fuseFd, FUSE_DEV_IOC_BACKING_CLOSE, backingIdArg);
  } catch (err) {
    throw explainIoctlFailure(err, `backing close ${id}`, fuseFd);
  }
}

const ENOENT = errnoValue('ENOENT');

/**
 * `FUSE_DEV_IOC_BACKING_CLOSE` of an id that may not be open: true when it was (and is now
 * closed), false when the connection has no such id (ENOENT), without making an exception
 * for that answer: recovery probes dozens of unallocated ids. Other failures throw
 * `FuseKernelError` as `backingClose` does.
 */
export function backingCloseIfOpen(fuseFd: number, id: number): boolean {
  backingIdArg.writeUInt32LE(id >>> 0, 0);
  const r = ioctlResult(fuseFd, FUSE_DEV_IOC_BACKING_CLOSE, backingIdArg);
  if (r >= 0) return true;
  if (r === -ENOENT) return false;
  throw explainIoctlFailure(new NativeError('ioctl', -r, `backing close ${id} on fd ${fuseFd}`), `backing close ${id}`, fuseFd);
}

/** Outcome of `backingCloseAll`. */
export type CloseAllResult =
  /** Every backing id of the connection was dropped. */
  | { status: 'closed' }
  /** This kernel has no `FUSE_DEV_IOC_BACKING_CLOSE_ALL` (`ENOTTY`): use the journal strategy. */
  | { status: 'unsupported' }
  /** The kernel has the ioctl but refused: no passthrough on the connection, not mounted, or no CAP_SYS_ADMIN. */
  | { status: 'not-permitted'; errno: string }
  /** Any other failure. */
  | { status: 'failed'; errno: string };

/**
 * `FUSE_DEV_IOC_BACKING_CLOSE_ALL` (patch series "fuse: improve crash recovery for backing
 * files"): drops every backing id of the connection at once. Never throws for a kernel
 * answer; throws `FuseKernelError` when `fuseFd` is not a `/dev/fuse` fd.
 */
export function backingCloseAll(fuseFd: number): CloseAllResult {
  try {
    ioctl(fuseFd, FUSE_DEV_IOC_BACKING_CLOSE_ALL, 0);
    return { status: 'closed' };
  } catch (err) {
    if (!(err instanceof NativeError)) throw err;
    assertFuseDevice(fuseFd, 'FUSE fd');
    if (err.code === 'ENOTTY') return { status: 'unsupported' };
    if (err.code === 'EPERM') return { status: 'not-permitted', errno: err.code };
    return { status: 'failed', errno: err.code };
  }
}

/**
 * Writes `FUSE_NOTIFY_RESEND`: the kernel requeues every request that was read from the
 * connection but not answered; they come back with bit 63 of `unique` set. Needs a kernel
 * with `FUSE_HAS_RESEND` (>= 6.9). Throws `FuseKernelError`.
 */
export function notifyResend(fuseFd: number): void {
  const msg = notifyResendMessage();
  const n = writeFd(fuseFd, msg);
  if (n === msg.length) return;
  if (n >= 0) throw new FuseKernelError('ERR_NOTIFY_FAILED', `notify resend: short write (${n} of ${msg.length})`, 'EIO');
  assertFuseDevice(fuseFd, 'FUSE fd');
  const errno = errnoName(-n);
  throw new FuseKernelError('ERR_NOTIFY_FAILED', `notify resend: ${errno}${errno === 'EINVAL' ? ' (kernel without FUSE_NOTIFY_RESEND?)' : ''}`, errno);
}
