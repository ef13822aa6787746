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

/**
 * ioctl(2) that reports failure as a value: the result (>= 0), or minus the errno. For hot
 * loops where failing is an expected answer (probing for backing ids): no exception is made.
 */
export function ioctlResult(fd: number, request: number, arg: Buffer | number): number {
  const r = (typeof arg === 'number' ? sys.ioctlInt(fd, request, arg) : sys.ioctlPtr(fd, request, arg)) as number;
  return r < 0 ? -lastErrno() : r;
}

const F_GETFD = 1;
const F_SETFD = 2;
const FD_CLOEXEC = 1;

/**
 * Sets FD_CLOEXEC on `fd` (for fds inherited without it, e.g. systemd's LISTEN_FDS, which
 * would otherwise leak into every child process). Throws `NativeError`.
 */
export function setCloseOnExec(fd: number): void {
  const flags = sys.fcntl(fd, F_GETFD, 'int', 0) as number;
  if (flags < 0) throw new NativeError('fcntl(F_GETFD)', lastErrno(), String(fd));
  if ((flags & FD_CLOEXEC) === 0 && (sys.fcntl(fd, F_SETFD, 'int', flags | FD_CLOEXEC) as number) < 0) {
    throw new NativeError('fcntl(F_SETFD)', lastErrno(), String(fd));
  }
}

const SYS_kcmp = 312;
const KCMP_FILE = 0;
const KCMP_FILES = 2;

/**
 * Whether two fds of this process refer to the same open file description (kcmp(2)
 * KCMP_FILE): true for dup()s and for an fd received over SCM_RIGHTS from a process that
 * got it from here, false for two separate open()s of the same file. Throws `NativeError`
 * (`ENOSYS` on a kernel without CONFIG_KCMP, `EBADF`).
 */
export function sameOpenFile(fdA: number, fdB: number): boolean {
  const r = Number(sys.syscall(SYS_kcmp, 'long', process.pid, 'long', process.pid, 'long', KCMP_FILE, 'long', fdA, 'long', fdB));
  if (r < 0) throw new NativeError('kcmp', lastErrno(), `${fdA} ${fdB}`);
  return r === 0;
}

/**
 * Whether threads `tidA` and `tidB` (of any process) share one fd table (kcmp(2)
 * KCMP_FILES): true for the threads of a process unless one of them unshared its table
 * (unshare(CLONE_FILES), clone without CLONE_FILES). A thread past exit_files() has none and
 * shares it with no one. Throws `NativeError` (`ENOSYS` without CONFIG_KCMP, `ESRCH` for a
 * thread that is gone, `EPERM` without ptrace access to both).
 */
export function sameFileTable(tidA: number, tidB: number): boolean {
  const r = Number(sys.syscall(SYS_kcmp, 'long', tidA, 'long', tidB, 'long', KCMP_FILES, 'long', 0, 'long', 0));
  if (r < 0) throw new NativeError('kcmp', lastErrno(), `${tidA} ${tidB}`);
  return r === 0;
}

/** poll(2) event bits. */
export const POLL = { IN: 0x001, OUT: 0x004, ERR: 0x008, HUP: 0x010, NVAL: 0x020 } as const;

/**
 * The poll(2) events `fd` reports right now (no waiting), e.g. `POLL.ERR` for a /dev/fuse
 * fd whose connection is gone. `POLL.NVAL` for a closed fd. Throws `NativeError`.
 */
export function pollNow(fd: number, events: number = POLL.IN | POLL.OUT): number {
  const pfd = Buffer.alloc(8);
  pfd.writeInt32LE(fd, 0);
  pfd.writeInt16LE(events, 4);
  for (;;) {
    const n = sys.poll(pfd, 1, 0) as number;
    if (n >= 0) return n === 0 ? 0 : pfd.readUInt16LE(6);
    if (lastErrno() !== 4 /* EINTR */) throw new NativeError('poll', lastErrno());
  }
}
