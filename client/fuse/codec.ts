/**
 * The FUSE codec: opcode table, request parsing, reply building and INIT negotiation, all pure
 * functions over Buffers. The `/dev/fuse` loop is a thin shell around it.
 */
import {
  FILESYSTEM_MAX_STACK_DEPTH,
  FUSE_KERNEL_MINOR_VERSION,
  FUSE_KERNEL_VERSION,
  FUSE_MIN_PASSTHROUGH_MINOR,
  FUSE_PAGE_SIZE,
  InitFlags,
  type InitIn,
  type InitOut,
} from '../../kernel/abi.ts';

export * from './opcodes.ts';
export * from './requests.ts';
export * from './replies.ts';

/**
 * Oldest minor this codec speaks: from 7.23 on, every request layout it decodes and the 64-byte
 * INIT reply are what the kernel expects (older kernels use compat sizes it does not produce).
 */
export const FUSE_MIN_SUPPORTED_MINOR = 23;

/** Kernel `FUSE_DEFAULT_MAX_PAGES_PER_REQ`: pages per request when the INIT reply lacks `FUSE_MAX_PAGES`. */
export const FUSE_DEFAULT_MAX_PAGES_PER_REQ = 32;

const EPROTO = 71;

/** What the daemon asks for in INIT. */
export interface InitWanted {
  /** Flags the daemon wants (combined 64-bit); only those the kernel offers are granted. */
  flags: bigint;
  /**
   * Largest WRITE the daemon accepts, bytes (raised to at least 4096). The kernel then refuses
   * `/dev/fuse` reads into buffers smaller than 40 + 40 + maxWrite bytes (and 8 KiB) with EINVAL.
   */
  maxWrite: number;
  /** Readahead limit, bytes; default and upper bound: the kernel's. */
  maxReadahead?: number;
  /** Stacking depth for passthrough (1..2). Default 1 when PASSTHROUGH is wanted; 0 refuses passthrough. */
  maxStackDepth?: number;
  /** Max background requests; 0 (default) keeps the kernel's. */
  maxBackground?: number;
  /** Congestion threshold; 0 (default) keeps the kernel's. */
  congestionThreshold?: number;
  /** Timestamp granularity in ns; default 1. */
  timeGran?: number;
  /** Request timeout in seconds, sent only when REQUEST_TIMEOUT is granted; default 0 (none). */
  requestTimeout?: number;
}

/** Outcome of `negotiateInit`. */
export type InitNegotiation =
  | {
      ok: true;
      /** Body of the INIT reply (send with `replyInit`). */
      initOut: InitOut;
      /** Minor both sides speak from now on. */
      minor: number;
      /** Flags in force on the connection (combined 64-bit). */
      flags: bigint;
      /** Passthrough is enabled: OPEN may answer FOPEN_PASSTHROUGH with a backing id. */
      passthrough: boolean;
      /**
       * The kernel spoke a newer major: `initOut` only states ours and the kernel will send another
       * INIT; the connection is not set up yet.
       */
      awaitReinit: boolean;
    }
  | {
      ok: false;
      /** Errno to answer the INIT with (EPROTO). */
      errno: number;
      /** Why, for the log. */
      reason: string;
    };

function u16(v: number): number {
  return Math.min(0xffff, Math.max(0, Math.trunc(v)));
}

function zeroInitOut(minor: number): InitOut {
  return {
    major: FUSE_KERNEL_VERSION,
    minor,
    maxReadahead: 0,
    flags: 0n,
    maxBackground: 0,
    congestionThreshold: 0,
    maxWrite: 0,
    timeGran: 0,
    maxPages: 0,
    mapAlignment: 0,
    maxStackDepth: 0,
    requestTimeout: 0,
  };
}

/**
 * Answers the kernel's INIT. Same major: speak min(kernel minor, 45), grant `wanted & offered`
 * plus INIT_EXT (without it the kernel ignores `flags2`), and MAX_PAGES when offered and
 * `maxWrite` needs more than the kernel's default 32 pages. PASSTHROUGH needs minor >= 40, an
 * offer and a stack depth; the kernel refuses it next to WRITEBACK_CACHE, so WRITEBACK_CACHE is
 * dropped when passthrough is granted. Kernel major > 7: reply with our major only and wait for
 * a new INIT. Major < 7 or minor < 23: EPROTO. u16 fields are clamped to 65535.
 */
export function negotiateInit(initIn: InitIn, wanted: InitWanted): InitNegotiation {
  if (initIn.major < FUSE_KERNEL_VERSION) {
    return { ok: false, errno: EPROTO, reason: `kernel protocol ${initIn.major}.${initIn.minor} is older than major ${FUSE_KERNEL_VERSION}` };
  }
  if (initIn.major > FUSE_KERNEL_VERSION) {
    return { ok: true, initOut: zeroInitOut(FUSE_KERNEL_MINOR_VERSION), minor: FUSE_KERNEL_MINOR_VERSION, flags: 0n, passthrough: false, awaitReinit: true };
  }
  const minor = Math.min(initIn.minor, FUSE_KERNEL_MINOR_VERSION);
  if (minor < FUSE_MIN_SUPPORTED_MINOR) {
    return { ok: false, errno: EPROTO, reason: `kernel protocol 7.${initIn.minor} is older than 7.${FUSE_MIN_SUPPORTED_MINOR}` };
  }
  const maxWrite = Math.max(FUSE_PAGE_SIZE, Math.trunc(wanted.maxWrite));
  const maxPages = Math.min(0xffff, Math.ceil(maxWrite / FUSE_PAGE_SIZE));
  const offered = initIn.flags;
  let flags = wanted.flags & offered;
  if ((offered & InitFlags.INIT_EXT) !== 0n) flags |= InitFlags.INIT_EXT;
  // max_pages also caps READ sizes, so it is only raised above the kernel default, never lowered.
  if ((offered & InitFlags.MAX_PAGES) !== 0n && maxPages > FUSE_DEFAULT_MAX_PAGES_PER_REQ) flags |= InitFlags.MAX_PAGES;

  const depthWanted = wanted.maxStackDepth ?? ((wanted.flags & InitFlags.PASSTHROUGH) !== 0n ? 1 : 0);
  const maxStackDepth = Math.min(Math.max(0, Math.trunc(depthWanted)), FILESYSTEM_MAX_STACK_DEPTH);
  const passthrough =
    (flags & InitFlags.PASSTHROUGH) !== 0n && (flags & InitFlags.INIT_EXT) !== 0n && minor >= FUSE_MIN_PASSTHROUGH_MINOR && maxStackDepth > 0;
  if (passthrough) flags &= ~InitFlags.WRITEBACK_CACHE;
  else flags &= ~InitFlags.PASSTHROUGH;
  // flags2 travels only with INIT_EXT; without it no bit above 31 can be granted.
  if ((flags & InitFlags.INIT_EXT) === 0n) flags &= 0xffffffffn;

  const maxReadahead = Math.min(initIn.maxReadahead, wanted.maxReadahead ?? initIn.maxReadahead);
  const initOut: InitOut = {
    major: FUSE_KERNEL_VERSION,
    minor,
    maxReadahead: Math.max(0, maxReadahead),
    flags,
    maxBackground: u16(wanted.maxBackground ?? 0),
    congestionThreshold: u16(wanted.congestionThreshold ?? 0),
    maxWrite,
    timeGran: wanted.timeGran ?? 1,
    maxPages,
    mapAlignment: 0,
    maxStackDepth: passthrough ? maxStackDepth : 0,
    requestTimeout: (flags & InitFlags.REQUEST_TIMEOUT) !== 0n ? u16(wanted.requestTimeout ?? 0) : 0,
  };
  return { ok: true, initOut, minor, flags, passthrough, awaitReinit: false };
}
