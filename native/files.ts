// File operations Node's fs module does not offer: mknod, renameat2 flags, xattrs,
// fallocate, SEEK_DATA/SEEK_HOLE, copy_file_range, file handles and nanosecond timestamps;
// and reads of small files and links into a caller's buffer, without the allocations and
// extra calls of fs.readFileSync (an fstat) and fs.readlinkSync. All but readGeneratedFile
// (which returns the errno) throw `NativeError`; none takes ownership of an fd.
import { sys, lastErrno } from './libc.ts';
import { NativeError, errnoValue } from './errors.ts';
import { O, readFd } from './fd.ts';

const AT_FDCWD = -100;

function check(ok: boolean, syscall: string, detail: string): void {
  if (!ok) throw new NativeError(syscall, lastErrno(), detail);
}

/** mknod(2): device nodes, FIFOs, sockets and regular files. `dev` in glibc encoding. */
export function mknod(path: string, mode: number, dev: number | bigint): void {
  check(sys.mknod(path, mode, BigInt(dev)) === 0, 'mknod', path);
}

/** renameat2(2) with RENAME_NOREPLACE (1), RENAME_EXCHANGE (2) or RENAME_WHITEOUT (4). */
export function rename2(from: string, to: string, flags: number): void {
  check(sys.renameat2(AT_FDCWD, from, AT_FDCWD, to, flags) === 0, 'renameat2', `${from} -> ${to}`);
}

/** lgetxattr(2): the value's size when `size` is 0, else the value (ERANGE when larger than `size`). */
export function getXattr(path: string, name: string, size: number): number | Buffer {
  const buf = size > 0 ? Buffer.alloc(size) : null;
  const n = Number(sys.lgetxattr(path, name, buf, size));
  check(n >= 0, 'lgetxattr', `${name} of ${path}`);
  return buf ? buf.subarray(0, n) : n;
}

/** lsetxattr(2); `flags` XATTR_CREATE (1) / XATTR_REPLACE (2). */
export function setXattr(path: string, name: string, value: Buffer, flags: number): void {
  check(sys.lsetxattr(path, name, value, value.length, flags) === 0, 'lsetxattr', `${name} of ${path}`);
}

/** llistxattr(2): the list's size when `size` is 0, else the NUL-separated names. */
export function listXattr(path: string, size: number): number | Buffer {
  const buf = size > 0 ? Buffer.alloc(size) : null;
  const n = Number(sys.llistxattr(path, buf, size));
  check(n >= 0, 'llistxattr', path);
  return buf ? buf.subarray(0, n) : n;
}

/** lremovexattr(2). */
export function removeXattr(path: string, name: string): void {
  check(sys.lremovexattr(path, name) === 0, 'lremovexattr', `${name} of ${path}`);
}

/** fallocate(2). */
export function fallocate(fd: number, mode: number, offset: bigint, length: bigint): void {
  check(sys.fallocate(fd, mode, offset, length) === 0, 'fallocate', String(fd));
}

/** lseek(2), for SEEK_DATA (3) and SEEK_HOLE (4) among others. */
export function lseek(fd: number, offset: bigint, whence: number): bigint {
  const r = BigInt(sys.lseek(fd, offset, whence));
  check(r >= 0n, 'lseek', String(fd));
  return r;
}

/** copy_file_range(2) at explicit offsets; returns bytes copied. */
export function copyFileRange(fdIn: number, offIn: bigint, fdOut: number, offOut: bigint, len: number, flags = 0): number {
  const inOff = [offIn];
  const outOff = [offOut];
  const n = Number(sys.copy_file_range(fdIn, inOff, fdOut, outOff, len, flags));
  check(n >= 0, 'copy_file_range', `${fdIn} -> ${fdOut}`);
  return n;
}

/** A timestamp for `setTimes`: seconds + nanoseconds, or "now", or "leave as is". */
export type TimeSpec = { sec: bigint; nsec: number } | 'now' | 'omit';

const UTIME_NOW = (1 << 30) - 1;
const UTIME_OMIT = (1 << 30) - 2;
const AT_SYMLINK_NOFOLLOW = 0x100;

function timespecs(atime: TimeSpec, mtime: TimeSpec): Buffer {
  const buf = Buffer.alloc(32);
  for (const [i, t] of [atime, mtime].entries()) {
    if (t === 'now' || t === 'omit') buf.writeBigInt64LE(BigInt(t === 'now' ? UTIME_NOW : UTIME_OMIT), i * 16 + 8);
    else {
      buf.writeBigInt64LE(t.sec, i * 16);
      buf.writeBigInt64LE(BigInt(t.nsec), i * 16 + 8);
    }
  }
  return buf;
}

/**
 * utimensat(2) on `path` without following a final symlink (`fs.lutimes` rounds to
 * microseconds through a double), or futimens(2) when given an fd.
 */
export function setTimes(target: string | number, atime: TimeSpec, mtime: TimeSpec): void {
  const times = timespecs(atime, mtime);
  if (typeof target === 'number') check(sys.futimens(target, times) === 0, 'futimens', String(target));
  else check(sys.utimensat(AT_FDCWD, target, times, AT_SYMLINK_NOFOLLOW) === 0, 'utimensat', target);
}

const AT_EMPTY_PATH = 0x1000;
/** MAX_HANDLE_SZ of the kernel: the longest f_handle. */
const MAX_HANDLE_SZ = 128;
const EOPNOTSUPP = errnoValue('EOPNOTSUPP');

/**
 * name_to_handle_at(2) of the open file `fd`: the kernel's `struct file_handle` (u32
 * handle_bytes, i32 handle_type, then the opaque handle) as bytes, for `openByHandle` later,
 * or null when the filesystem cannot export handles (EOPNOTSUPP). `fd` stays the caller's.
 */
export function fileHandleOf(fd: number): Buffer | null {
  const buf = Buffer.alloc(8 + MAX_HANDLE_SZ);
  buf.writeUInt32LE(MAX_HANDLE_SZ, 0);
  const mountId = [0];
  if (sys.name_to_handle_at(fd, '', buf, mountId, AT_EMPTY_PATH) !== 0) {
    if (lastErrno() === EOPNOTSUPP) return null;
    check(false, 'name_to_handle_at', String(fd));
  }
  return buf.subarray(0, 8 + buf.readUInt32LE(0));
}

/**
 * open_by_handle_at(2): opens the file that `handle` (from `fileHandleOf`) names on the
 * filesystem `mountFd` is on, even when it has no name left but is still open somewhere.
 * Needs CAP_DAC_READ_SEARCH. The new fd is the caller's.
 */
export function openByHandle(mountFd: number, handle: Buffer, flags: number): number {
  const fd = sys.open_by_handle_at(mountFd, Buffer.from(handle), flags) as number;
  check(fd >= 0, 'open_by_handle_at', String(mountFd));
  return fd;
}

/**
 * One read(2) of the file at `path` into `buf`: the bytes read, or a negative errno (open or
 * read failed; never throws). For a file that the kernel generates whole on the first read,
 * as a /proc seq_file such as /proc/<tid>/stat or stack does into a buffer it fits: no second
 * read to find the end, and no exception for a thread that is gone. Against reading until
 * the end and throwing NativeError, 11 live threads' stat files took 166-172 instead of
 * 198-211 us, and 11 gone ones (ENOENT) 66-70 instead of 201-233 us (medians of 60, Node 20,
 * 2-CPU VM); a look at a dying owner's threads runs while applications wait.
 */
export function readGeneratedFile(path: string, buf: Buffer): number {
  const fd = sys.open(path, O.RDONLY | O.CLOEXEC, 'uint32_t', 0) as number;
  if (fd < 0) return -lastErrno();
  const n = readFd(fd, buf);
  sys.close(fd);
  return n;
}

/** readlink(2) into `buf`; returns the length of the target (truncated at `buf.length`). Throws `NativeError`. */
export function readLinkInto(path: string, buf: Buffer): number {
  const n = Number(sys.readlink(path, buf, buf.length));
  check(n >= 0, 'readlink', path);
  return n;
}
