import { sys, lastErrno } from './libc.ts';
import { NativeError } from './errors.ts';

/** mount(2) flags used by this project. */
export const MS = { RDONLY: 1, NOSUID: 2, NODEV: 4, NOEXEC: 8, NOATIME: 1024 } as const;
/** umount2(2) flags. */
export const MNT = { FORCE: 1, DETACH: 2, EXPIRE: 4, NOFOLLOW: 8 } as const;

/** mount(2). Throws `NativeError` (nothing is mounted). */
export function mountFs(source: string, target: string, fstype: string, flags: number, data: string): void {
  if (sys.mount(source, target, fstype, flags, data) !== 0) throw new NativeError('mount', lastErrno(), `${fstype} on ${target}`);
}

/** umount2(2). Throws `NativeError` (`EINVAL` when `target` is not a mountpoint). */
export function unmountFs(target: string, flags = 0): void {
  if (sys.umount2(target, flags) !== 0) throw new NativeError('umount2', lastErrno(), target);
}
