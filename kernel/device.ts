import { fstatFd, devMajor, devMinor, S_IFMT, S_IFCHR, NativeError, openFd, O } from '../native/index.ts';
import { FuseKernelError } from './errors.ts';

/** Major and minor number of the `/dev/fuse` character device. */
export const FUSE_DEVICE = { major: 10, minor: 229 } as const;

/** What an fd turned out to be. */
export type FdKind = 'fuse-device' | 'closed' | 'other';

/** Classifies `fd` with fstat(2): a `/dev/fuse` device (10:229), a closed fd, or anything else. */
export function classifyFd(fd: number): FdKind {
  try {
    const st = fstatFd(fd);
    const isFuse = (st.mode & S_IFMT) === S_IFCHR && devMajor(st.rdev) === FUSE_DEVICE.major && devMinor(st.rdev) === FUSE_DEVICE.minor;
    return isFuse ? 'fuse-device' : 'other';
  } catch (err) {
    if (err instanceof NativeError && err.code === 'EBADF') return 'closed';
    throw err;
  }
}

/** Throws `FuseKernelError` unless `fd` is an open `/dev/fuse` device. */
export function assertFuseDevice(fd: number, what = 'fd'): void {
  const kind = classifyFd(fd);
  if (kind === 'closed') throw new FuseKernelError('ERR_BAD_FD', `${what} ${fd} is not an open file descriptor`, 'EBADF');
  if (kind === 'other') throw new FuseKernelError('ERR_NOT_FUSE_DEVICE', `${what} ${fd} is not a /dev/fuse device (10:229)`, 'ENOTTY');
}

/** Opens `/dev/fuse` read-write, close-on-exec. The caller owns the fd. Throws `NativeError`. */
export function openFuseDevice(): number {
  return openFd('/dev/fuse', O.RDWR);
}
