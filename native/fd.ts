import { sys, lastErrno } from './libc.ts';
import { NativeError } from './errors.ts';

/** open(2) flags used by this project (x86_64 values). */
export const O = {
  RDONLY: 0,
  WRONLY: 1,
  RDWR: 2,
  CREAT: 0o100,
  EXCL: 0o200,
  NOCTTY: 0o400,
  TRUNC: 0o1000,
  APPEND: 0o2000,
  NONBLOCK: 0o4000,
  DIRECTORY: 0o200000,
  NOFOLLOW: 0o400000,
  CLOEXEC: 0o2000000,
  PATH: 0o10000000,
} as const;

const F_DUPFD_CLOEXEC = 1030;
const F_GETFL = 3;
const F_SETFL = 4;

/**
 * Opens `path`. The caller owns the returned fd. Throws `NativeError` (nothing is opened).
 * `O.CLOEXEC` is always added.
 */
export function openFd(path: string, flags: number, mode = 0o644): number {
  const fd = sys.open(path, flags | O.CLOEXEC, 'uint32_t', mode) as number;
  if (fd < 0) throw new NativeError('open', lastErrno(), path);
  return fd;
}

/** Closes `fd`. Throws `NativeError` (`EBADF` for a fd that is not open). */
export function closeFd(fd: number): void {
  if (sys.close(fd) !== 0) throw new NativeError('close', lastErrno(), String(fd));
}

/** Closes every fd in `fds`, ignoring errors; for cleanup paths that must not throw. */
export function closeAll(fds: Iterable<number>): void {
  for (const fd of fds) sys.close(fd);
}

/**
 * Duplicates `fd` (close-on-exec). The caller owns the new fd; the original is untouched.
 * Throws `NativeError`.
 */
export function duplicateFd(fd: number): number {
  const copy = sys.fcntl(fd, F_DUPFD_CLOEXEC, 'int', 0) as number;
  if (copy < 0) throw new NativeError('fcntl(F_DUPFD_CLOEXEC)', lastErrno(), String(fd));
  return copy;
}

/** Sets or clears O_NONBLOCK on `fd`. Throws `NativeError`. */
export function setNonBlocking(fd: number, on: boolean): void {
  const flags = sys.fcntl(fd, F_GETFL, 'int', 0) as number;
  if (flags < 0) throw new NativeError('fcntl(F_GETFL)', lastErrno(), String(fd));
  const next = on ? flags | O.NONBLOCK : flags & ~O.NONBLOCK;
  if (next !== flags && (sys.fcntl(fd, F_SETFL, 'int', next) as number) < 0) {
    throw new NativeError('fcntl(F_SETFL)', lastErrno(), String(fd));
  }
}

/** Hot-path read(2): bytes read (0 at end of file), or a negative errno. Never throws. */
export function readFd(fd: number, buf: Buffer, length = buf.length): number {
  const n = Number(sys.read(fd, buf, length));
  return n < 0 ? -lastErrno() : n;
}

/** Hot-path write(2): bytes written, or a negative errno. Never throws. */
export function writeFd(fd: number, buf: Buffer, length = buf.length): number {
  const n = Number(sys.write(fd, buf, length));
  return n < 0 ? -lastErrno() : n;
}

/** The fields of `struct stat` this project uses. */
export interface FileStat {
  dev: bigint;
  ino: bigint;
  nlink: bigint;
  mode: number;
  uid: number;
  gid: number;
  rdev: bigint;
  size: bigint;
}

/** Size of glibc's `struct stat` on x86_64. */
export const STAT_SIZE = 144;
/** File-type bits of `st_mode`. */
export const S_IFMT = 0o170000;
/** `st_mode` type of a character device. */
export const S_IFCHR = 0o020000;

/** Decodes an x86_64 `struct stat` (layout checked by test/unit/native-layout.test.ts). */
export function decodeStat(buf: Buffer): FileStat {
  return {
    dev: buf.readBigUInt64LE(0),
    ino: buf.readBigUInt64LE(8),
    nlink: buf.readBigUInt64LE(16),
    mode: buf.readUInt32LE(24),
    uid: buf.readUInt32LE(28),
    gid: buf.readUInt32LE(32),
    rdev: buf.readBigUInt64LE(40),
    size: buf.readBigInt64LE(48),
  };
}

/** fstat(2) of `fd`. Throws `NativeError` (`EBADF` for a closed fd). */
export function fstatFd(fd: number): FileStat {
  const buf = Buffer.alloc(STAT_SIZE);
  if (sys.fstat(fd, buf) !== 0) throw new NativeError('fstat', lastErrno(), String(fd));
  return decodeStat(buf);
}

/** glibc's `major()` of a `dev_t`. */
export function devMajor(dev: bigint): number {
  return Number(((dev >> 8n) & 0xfffn) | ((dev >> 32n) & 0xfffff000n));
}

/** glibc's `minor()` of a `dev_t`. */
export function devMinor(dev: bigint): number {
  return Number((dev & 0xffn) | ((dev >> 12n) & 0xffffff00n));
}

/**
 * ioctl(2) with a pointer argument (`arg` is a Buffer the kernel reads and/or writes) or an
 * integer argument. Returns the ioctl's non-negative result. Throws `NativeError`; the
 * fds involved stay owned by the caller on every path.
 */
export function ioctl(fd: number, request: number, arg: Buffer | number): number {
  const r = (typeof arg === 'number' ? sys.ioctlInt(fd, request, arg) : sys.ioctlPtr(fd, request, arg)) as number;
  if (r < 0) throw new NativeError('ioctl', lastErrno(), `0x${request.toString(16)} on fd ${fd}`);
  return r;
}
