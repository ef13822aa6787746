import { readFd, writeFd, setNonBlocking, watchFd, errnoName } from '../native/index.ts';
import {
  FUSE_IN_HEADER_SIZE,
  FUSE_OUT_HEADER_SIZE,
  FUSE_KERNEL_MINOR_VERSION,
  FUSE_KERNEL_VERSION,
  FUSE_MIN_PASSTHROUGH_MINOR,
  InitFlags,
  Opcode,
  decodeInHeader,
  decodeInitIn,
  encodeInitOut,
  encodeOutHeader,
  type InitIn,
} from './abi.ts';
import { FuseKernelError } from './errors.ts';

/**
 * Resolves true once `fd` is readable, false after `timeoutMs`. The poll handle is closed on
 * both paths.
 */
export function waitReadable(fd: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const handle = watchFd(fd, { readable: true }, () => finish(true));
    const timer = setTimeout(() => finish(false), timeoutMs);
    function finish(ok: boolean): void {
      clearTimeout(timer);
      handle.close();
      resolve(ok);
    }
  });
}

/** What `answerInit` agreed with the kernel. */
export interface InitAgreement {
  /** What the kernel offered. */
  offered: InitIn;
  /** Protocol minor both sides speak. */
  minor: number;
  /** Flags granted in the reply (combined flags | flags2 << 32). */
  flags: bigint;
}

/** Read buffer for /dev/fuse: the kernel refuses reads shorter than max_write + 4 KiB with EINVAL. */
export const FUSE_READ_BUFFER = 128 * 1024 + 4096;

/**
 * Waits for the FUSE_INIT that mounting queued on `fuseFd` and answers it, granting
 * `wanted & offered` (passthrough only from minor 40 on, with max_stack_depth 1). Sets the
 * fd non-blocking. For probes and tests that need an initialised connection without a FUSE
 * server; daemons use client/fuse. Throws `FuseKernelError` (`ERR_KERNEL`).
 */
export async function answerInit(fuseFd: number, wanted: bigint, timeoutMs = 5000): Promise<InitAgreement> {
  setNonBlocking(fuseFd, true);
  if (!(await waitReadable(fuseFd, timeoutMs))) {
    throw new FuseKernelError('ERR_KERNEL', `the kernel sent no FUSE_INIT within ${timeoutMs} ms`, 'ETIMEDOUT');
  }
  const buf = Buffer.alloc(FUSE_READ_BUFFER);
  const n = readFd(fuseFd, buf);
  if (n < FUSE_IN_HEADER_SIZE) {
    throw new FuseKernelError('ERR_KERNEL', `reading FUSE_INIT failed (${n < 0 ? errnoName(-n) : `${n} bytes`})`, n < 0 ? errnoName(-n) : 'EIO');
  }
  const header = decodeInHeader(buf.subarray(0, n));
  if (header.opcode !== Opcode.INIT) {
    throw new FuseKernelError('ERR_KERNEL', `first request was opcode ${header.opcode}, not FUSE_INIT`, 'EPROTO');
  }
  const offered = decodeInitIn(buf.subarray(FUSE_IN_HEADER_SIZE, n));
  const minor = Math.min(offered.minor, FUSE_KERNEL_MINOR_VERSION);
  let flags = offered.flags & wanted;
  if (minor < FUSE_MIN_PASSTHROUGH_MINOR) flags &= ~InitFlags.PASSTHROUGH;
  // The kernel reads flags2 (every bit above 31) only when the reply carries INIT_EXT.
  if (flags > 0xffffffffn) flags |= offered.flags & InitFlags.INIT_EXT;
  const body = encodeInitOut({
    major: FUSE_KERNEL_VERSION,
    minor,
    maxReadahead: offered.maxReadahead,
    flags,
    maxBackground: 16,
    congestionThreshold: 12,
    maxWrite: 128 * 1024,
    timeGran: 1,
    maxPages: 32,
    mapAlignment: 0,
    maxStackDepth: (flags & InitFlags.PASSTHROUGH) !== 0n ? 1 : 0,
    requestTimeout: 0,
  });
  const reply = Buffer.concat([encodeOutHeader(FUSE_OUT_HEADER_SIZE + body.length, 0, header.unique), body]);
  const w = writeFd(fuseFd, reply);
  if (w !== reply.length) {
    throw new FuseKernelError('ERR_KERNEL', `the kernel refused the FUSE_INIT reply (${w < 0 ? errnoName(-w) : `short write ${w}`})`, w < 0 ? errnoName(-w) : 'EIO');
  }
  return { offered, minor, flags };
}
