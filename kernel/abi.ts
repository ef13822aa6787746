/**
 * FUSE kernel ABI, protocol 7.45 (Linux 6.18), as TypeScript: constants, struct sizes and
 * pure little-endian encoders/decoders for the x86_64 layout of `include/uapi/linux/fuse.h`.
 * No I/O. 64-bit fields (`unique`, `nodeid`, `fh`, offsets) are bigints.
 */

/** Major protocol version; the kernel rejects an INIT reply with any other major. */
export const FUSE_KERNEL_VERSION = 7;
/** Minor protocol version this ABI describes (7.45: COPY_FILE_RANGE_64, NOTIFY_PRUNE). */
export const FUSE_KERNEL_MINOR_VERSION = 45;
/** First minor with passthrough: `max_stack_depth`, `FUSE_PASSTHROUGH`, `backing_id`, NOTIFY_RESEND. */
export const FUSE_MIN_PASSTHROUGH_MINOR = 40;
/** First minor with `total_extlen` in `fuse_in_header` (request extensions). */
export const FUSE_MIN_EXTLEN_MINOR = 38;
/** First minor whose INIT request carries `flags2` (`FUSE_INIT_EXT`, 64-byte `fuse_init_in`). */
export const FUSE_MIN_INIT_EXT_MINOR = 36;
/** Node id of the filesystem root. */
export const FUSE_ROOT_ID = 1n;
/** Reads of `/dev/fuse` into a buffer smaller than this fail with EINVAL. */
export const FUSE_MIN_READ_BUFFER = 8192;
/** Kernel `FILESYSTEM_MAX_STACK_DEPTH`: INIT replies with a larger `max_stack_depth` get no passthrough. */
export const FILESYSTEM_MAX_STACK_DEPTH = 2;
/** The kernel rejects names longer than this in a readdir reply (`FUSE_NAME_MAX`). */
export const FUSE_NAME_MAX = 1024;
/** Page size the kernel counts `max_pages`/`max_readahead` in (x86_64). */
export const FUSE_PAGE_SIZE = 4096;
/** Bit 63 of `unique`: the request is a resend (after `FUSE_NOTIFY_RESEND`); the reply echoes it. */
export const FUSE_UNIQUE_RESEND = 1n << 63n;
/** Bit 0 of `unique`: set on INTERRUPT requests (ordinary requests have even ids). */
export const FUSE_INT_REQ_BIT = 1n;
/** `fuse_in_header.uid/gid` value when an idmapped mount cannot map the caller. */
export const FUSE_INVALID_UIDGID = 0xffffffff;

/** `enum fuse_opcode`. */
export const Opcode = {
  LOOKUP: 1,
  FORGET: 2,
  GETATTR: 3,
  SETATTR: 4,
  READLINK: 5,
  SYMLINK: 6,
  MKNOD: 8,
  MKDIR: 9,
  UNLINK: 10,
  RMDIR: 11,
  RENAME: 12,
  LINK: 13,
  OPEN: 14,
  READ: 15,
  WRITE: 16,
  STATFS: 17,
  RELEASE: 18,
  FSYNC: 20,
  SETXATTR: 21,
  GETXATTR: 22,
  LISTXATTR: 23,
  REMOVEXATTR: 24,
  FLUSH: 25,
  INIT: 26,
  OPENDIR: 27,
  READDIR: 28,
  RELEASEDIR: 29,
  FSYNCDIR: 30,
  GETLK: 31,
  SETLK: 32,
  SETLKW: 33,
  ACCESS: 34,
  CREATE: 35,
  INTERRUPT: 36,
  BMAP: 37,
  DESTROY: 38,
  IOCTL: 39,
  POLL: 40,
  NOTIFY_REPLY: 41,
  BATCH_FORGET: 42,
  FALLOCATE: 43,
  READDIRPLUS: 44,
  RENAME2: 45,
  LSEEK: 46,
  COPY_FILE_RANGE: 47,
  SETUPMAPPING: 48,
  REMOVEMAPPING: 49,
  SYNCFS: 50,
  TMPFILE: 51,
  STATX: 52,
  COPY_FILE_RANGE_64: 53,
  CUSE_INIT: 4096,
} as const;
/** A FUSE opcode name. */
export type OpcodeName = keyof typeof Opcode;
/** A FUSE opcode number. */
export type OpcodeNumber = (typeof Opcode)[OpcodeName];

/** `CUSE_INIT << 8`: reserved so a byte-swapped CUSE_INIT is recognisable. */
export const CUSE_INIT_BSWAP_RESERVED = 1048576;
/** `FUSE_INIT << 24`: reserved so a byte-swapped FUSE_INIT is recognisable. */
export const FUSE_INIT_BSWAP_RESERVED = 436207616;

/** `enum fuse_notify_code`: the `error` field of an out header whose `unique` is 0. */
export const NotifyCode = {
  POLL: 1,
  INVAL_INODE: 2,
  INVAL_ENTRY: 3,
  STORE: 4,
  RETRIEVE: 5,
  DELETE: 6,
  RESEND: 7,
  INC_EPOCH: 8,
  PRUNE: 9,
} as const;

/**
 * INIT flags over the combined 64-bit space: bits 0..31 travel in `flags`, bits 32..63 in
 * `flags2` (which both sides only use when `INIT_EXT` is set).
 */
export const InitFlags = {
  ASYNC_READ: 1n << 0n,
  POSIX_LOCKS: 1n << 1n,
  FILE_OPS: 1n << 2n,
  ATOMIC_O_TRUNC: 1n << 3n,
  EXPORT_SUPPORT: 1n << 4n,
  BIG_WRITES: 1n << 5n,
  DONT_MASK: 1n << 6n,
  SPLICE_WRITE: 1n << 7n,
  SPLICE_MOVE: 1n << 8n,
  SPLICE_READ: 1n << 9n,
  FLOCK_LOCKS: 1n << 10n,
  HAS_IOCTL_DIR: 1n << 11n,
  AUTO_INVAL_DATA: 1n << 12n,
  DO_READDIRPLUS: 1n << 13n,
  READDIRPLUS_AUTO: 1n << 14n,
  ASYNC_DIO: 1n << 15n,
  WRITEBACK_CACHE: 1n << 16n,
  NO_OPEN_SUPPORT: 1n << 17n,
  PARALLEL_DIROPS: 1n << 18n,
  HANDLE_KILLPRIV: 1n << 19n,
  POSIX_ACL: 1n << 20n,
  ABORT_ERROR: 1n << 21n,
  MAX_PAGES: 1n << 22n,
  CACHE_SYMLINKS: 1n << 23n,
  NO_OPENDIR_SUPPORT: 1n << 24n,
  EXPLICIT_INVAL_DATA: 1n << 25n,
  MAP_ALIGNMENT: 1n << 26n,
  SUBMOUNTS: 1n << 27n,
  HANDLE_KILLPRIV_V2: 1n << 28n,
  SETXATTR_EXT: 1n << 29n,
  INIT_EXT: 1n << 30n,
  INIT_RESERVED: 1n << 31n,
  SECURITY_CTX: 1n << 32n,
  HAS_INODE_DAX: 1n << 33n,
  CREATE_SUPP_GROUP: 1n << 34n,
  HAS_EXPIRE_ONLY: 1n << 35n,
  DIRECT_IO_ALLOW_MMAP: 1n << 36n,
  PASSTHROUGH: 1n << 37n,
  NO_EXPORT_SUPPORT: 1n << 38n,
  HAS_RESEND: 1n << 39n,
  ALLOW_IDMAP: 1n << 40n,
  OVER_IO_URING: 1n << 41n,
  REQUEST_TIMEOUT: 1n << 42n,
} as const;
/** Name of an INIT flag. */
export type InitFlagName = keyof typeof InitFlags;

/** Names of the INIT flags set in `flags` (combined 64-bit), lowest bit first; unknown bits as `bit<N>`. */
export function initFlagNames(flags: bigint): string[] {
  const names: string[] = [];
  for (let bit = 0n; bit < 64n; bit++) {
    const mask = 1n << bit;
    if ((flags & mask) === 0n) continue;
    const name = (Object.keys(InitFlags) as InitFlagName[]).find((k) => InitFlags[k] === mask);
    names.push(name ?? `bit${bit}`);
  }
  return names;
}

/** `CUSE_UNRESTRICTED_IOCTL`: CUSE INIT flag. */
export const CUSE_UNRESTRICTED_IOCTL = 1 << 0;

/** `fuse_open_out.open_flags` (FOPEN_*). */
export const FOPEN = {
  DIRECT_IO: 1 << 0,
  KEEP_CACHE: 1 << 1,
  NONSEEKABLE: 1 << 2,
  CACHE_DIR: 1 << 3,
  STREAM: 1 << 4,
  NOFLUSH: 1 << 5,
  PARALLEL_DIRECT_WRITES: 1 << 6,
  /** Reads and writes go to the file registered as `backing_id`, bypassing the daemon. */
  PASSTHROUGH: 1 << 7,
} as const;
/** `FOPEN_DIRECT_IO`: bypass the page cache for this open file. */
export const FOPEN_DIRECT_IO = FOPEN.DIRECT_IO;
/** `FOPEN_KEEP_CACHE`: keep the page cache across this open. */
export const FOPEN_KEEP_CACHE = FOPEN.KEEP_CACHE;
/** `FOPEN_NONSEEKABLE`: the file is not seekable. */
export const FOPEN_NONSEEKABLE = FOPEN.NONSEEKABLE;
/** `FOPEN_CACHE_DIR`: allow caching this directory. */
export const FOPEN_CACHE_DIR = FOPEN.CACHE_DIR;
/** `FOPEN_STREAM`: stream-like file, no position. */
export const FOPEN_STREAM = FOPEN.STREAM;
/** `FOPEN_NOFLUSH`: no FLUSH on close unless writeback cache is on. */
export const FOPEN_NOFLUSH = FOPEN.NOFLUSH;
/** `FOPEN_PARALLEL_DIRECT_WRITES`: concurrent direct writes on one inode. */
export const FOPEN_PARALLEL_DIRECT_WRITES = FOPEN.PARALLEL_DIRECT_WRITES;
/** `FOPEN_PASSTHROUGH`: passthrough I/O through `fuse_open_out.backing_id`. */
export const FOPEN_PASSTHROUGH = FOPEN.PASSTHROUGH;

/** `fuse_setattr_in.valid` bits (FATTR_*). */
export const FATTR = {
  MODE: 1 << 0,
  UID: 1 << 1,
  GID: 1 << 2,
  SIZE: 1 << 3,
  ATIME: 1 << 4,
  MTIME: 1 << 5,
  FH: 1 << 6,
  ATIME_NOW: 1 << 7,
  MTIME_NOW: 1 << 8,
  LOCKOWNER: 1 << 9,
  CTIME: 1 << 10,
  KILL_SUIDGID: 1 << 11,
} as const;

/** `fuse_release_in.release_flags`: flush before release. */
export const FUSE_RELEASE_FLUSH = 1 << 0;
/** `fuse_release_in.release_flags`: drop BSD locks on release. */
export const FUSE_RELEASE_FLOCK_UNLOCK = 1 << 1;
/** `fuse_getattr_in.getattr_flags`: `fh` is valid. */
export const FUSE_GETATTR_FH = 1 << 0;
/** `fuse_lk_in.lk_flags`: BSD (flock) lock rather than POSIX. */
export const FUSE_LK_FLOCK = 1 << 0;
/** `fuse_write_in.write_flags`: delayed write from the page cache, `fh` is guessed. */
export const FUSE_WRITE_CACHE = 1 << 0;
/** `fuse_write_in.write_flags`: `lock_owner` is valid. */
export const FUSE_WRITE_LOCKOWNER = 1 << 1;
/** `fuse_write_in.write_flags`: kill suid/sgid bits. */
export const FUSE_WRITE_KILL_SUIDGID = 1 << 2;
/** `fuse_read_in.read_flags`: `lock_owner` is valid. */
export const FUSE_READ_LOCKOWNER = 1 << 1;
/** `fuse_fsync_in.fsync_flags`: sync data only. */
export const FUSE_FSYNC_FDATASYNC = 1 << 0;
/** `fuse_attr.flags`: the object is a submount root. */
export const FUSE_ATTR_SUBMOUNT = 1 << 0;
/** `fuse_attr.flags`: DAX for this inode (per-inode DAX mode). */
export const FUSE_ATTR_DAX = 1 << 1;
/** `fuse_open_in.open_flags`/`fuse_create_in.open_flags`: kill suid/sgid if executable. */
export const FUSE_OPEN_KILL_SUIDGID = 1 << 0;
/** `fuse_setxattr_in.setxattr_flags`: clear SGID when setting `system.posix_acl_access`. */
export const FUSE_SETXATTR_ACL_KILL_SGID = 1 << 0;
/** `fuse_poll_in.flags`: the kernel wants a POLL notification. */
export const FUSE_POLL_SCHEDULE_NOTIFY = 1 << 0;
/** `fuse_notify_inval_entry_out.flags`: only expire the dentry. */
export const FUSE_EXPIRE_ONLY = 1 << 0;
/** Extension type of the supplementary-groups request extension. */
export const FUSE_EXT_GROUPS = 32;
/** Highest extension type reserved for security-context headers. */
export const FUSE_MAX_NR_SECCTX = 31;

/** `renameat2` flag: fail if the target exists. */
export const RENAME_NOREPLACE = 1 << 0;
/** `renameat2` flag: atomically exchange source and target. */
export const RENAME_EXCHANGE = 1 << 1;
/** `renameat2` flag: leave a whiteout at the source. */
export const RENAME_WHITEOUT = 1 << 2;

const IOC_NONE = 0;
const IOC_WRITE = 1;
const IOC_READ = 2;
/** `_IOC(dir, type, nr, size)` of the asm-generic ioctl encoding (x86_64). */
function ioc(dir: number, type: number, nr: number, size: number): number {
  return ((dir << 30) | (size << 16) | (type << 8) | nr) >>> 0;
}

/** `FUSE_DEV_IOC_MAGIC`: ioctl type of `/dev/fuse`. */
export const FUSE_DEV_IOC_MAGIC = 229;
/** `_IOR(229, 0, uint32_t)`: attach this fd to the connection of the fd passed in. */
export const FUSE_DEV_IOC_CLONE = ioc(IOC_READ, FUSE_DEV_IOC_MAGIC, 0, 4);
/** `_IOW(229, 1, struct fuse_backing_map)`: register a passthrough backing file, returns its id. */
export const FUSE_DEV_IOC_BACKING_OPEN = ioc(IOC_WRITE, FUSE_DEV_IOC_MAGIC, 1, 16);
/** `_IOW(229, 2, uint32_t)`: drop one backing id. */
export const FUSE_DEV_IOC_BACKING_CLOSE = ioc(IOC_WRITE, FUSE_DEV_IOC_MAGIC, 2, 4);
/** `_IO(229, 3)`: make this connection's INIT synchronous with mount (7.45 header). */
export const FUSE_DEV_IOC_SYNC_INIT = ioc(IOC_NONE, FUSE_DEV_IOC_MAGIC, 3, 0);
/** `_IO(229, 4)`: drop every backing id of the connection; unmerged patch series, ENOTTY elsewhere. */
export const FUSE_DEV_IOC_BACKING_CLOSE_ALL = ioc(IOC_NONE, FUSE_DEV_IOC_MAGIC, 4, 0);

/** `sizeof(struct fuse_in_header)`. */
export const FUSE_IN_HEADER_SIZE = 40;
/** `sizeof(struct fuse_out_header)`. */
export const FUSE_OUT_HEADER_SIZE = 16;
/** `sizeof(struct fuse_attr)`. */
export const FUSE_ATTR_SIZE = 88;
/** `sizeof(struct fuse_entry_out)`. */
export const FUSE_ENTRY_OUT_SIZE = 128;
/** `sizeof(struct fuse_attr_out)`. */
export const FUSE_ATTR_OUT_SIZE = 104;
/** `sizeof(struct fuse_open_out)`. */
export const FUSE_OPEN_OUT_SIZE = 16;
/** `sizeof(struct fuse_init_in)` since 7.36. */
export const FUSE_INIT_IN_SIZE = 64;
/** Size of `fuse_init_in` as sent by 7.6..7.35 kernels (major, minor, max_readahead, flags). */
export const FUSE_COMPAT_INIT_IN_SIZE = 16;
/** `sizeof(struct fuse_init_out)`. */
export const FUSE_INIT_OUT_SIZE = 64;
/** `sizeof(struct fuse_forget_in)`. */
export const FUSE_FORGET_IN_SIZE = 8;
/** `sizeof(struct fuse_forget_one)`. */
export const FUSE_FORGET_ONE_SIZE = 16;
/** `sizeof(struct fuse_batch_forget_in)`. */
export const FUSE_BATCH_FORGET_IN_SIZE = 8;
/** `sizeof(struct fuse_getattr_in)`. */
export const FUSE_GETATTR_IN_SIZE = 16;
/** `sizeof(struct fuse_setattr_in)`. */
export const FUSE_SETATTR_IN_SIZE = 88;
/** `sizeof(struct fuse_mknod_in)`. */
export const FUSE_MKNOD_IN_SIZE = 16;
/** `sizeof(struct fuse_mkdir_in)`. */
export const FUSE_MKDIR_IN_SIZE = 8;
/** `sizeof(struct fuse_rename_in)`. */
export const FUSE_RENAME_IN_SIZE = 8;
/** `sizeof(struct fuse_rename2_in)`. */
export const FUSE_RENAME2_IN_SIZE = 16;
/** `sizeof(struct fuse_link_in)`. */
export const FUSE_LINK_IN_SIZE = 8;
/** `sizeof(struct fuse_open_in)`. */
export const FUSE_OPEN_IN_SIZE = 8;
/** `sizeof(struct fuse_create_in)`. */
export const FUSE_CREATE_IN_SIZE = 16;
/** `sizeof(struct fuse_release_in)`. */
export const FUSE_RELEASE_IN_SIZE = 24;
/** `sizeof(struct fuse_flush_in)`. */
export const FUSE_FLUSH_IN_SIZE = 24;
/** `sizeof(struct fuse_read_in)`. */
export const FUSE_READ_IN_SIZE = 40;
/** `sizeof(struct fuse_write_in)`. */
export const FUSE_WRITE_IN_SIZE = 40;
/** `sizeof(struct fuse_write_out)`. */
export const FUSE_WRITE_OUT_SIZE = 8;
/** `sizeof(struct fuse_kstatfs)` (= `fuse_statfs_out`). */
export const FUSE_STATFS_OUT_SIZE = 80;
/** `sizeof(struct fuse_fsync_in)`. */
export const FUSE_FSYNC_IN_SIZE = 16;
/** `sizeof(struct fuse_setxattr_in)` when `FUSE_SETXATTR_EXT` was negotiated. */
export const FUSE_SETXATTR_IN_SIZE = 16;
/** `FUSE_COMPAT_SETXATTR_IN_SIZE`: `fuse_setxattr_in` without `FUSE_SETXATTR_EXT`. */
export const FUSE_COMPAT_SETXATTR_IN_SIZE = 8;
/** `sizeof(struct fuse_getxattr_in)`. */
export const FUSE_GETXATTR_IN_SIZE = 8;
/** `sizeof(struct fuse_getxattr_out)`. */
export const FUSE_GETXATTR_OUT_SIZE = 8;
/** `sizeof(struct fuse_lk_in)`. */
export const FUSE_LK_IN_SIZE = 48;
/** `sizeof(struct fuse_lk_out)`. */
export const FUSE_LK_OUT_SIZE = 24;
/** `sizeof(struct fuse_access_in)`. */
export const FUSE_ACCESS_IN_SIZE = 8;
/** `sizeof(struct fuse_interrupt_in)`. */
export const FUSE_INTERRUPT_IN_SIZE = 8;
/** `sizeof(struct fuse_bmap_in)`. */
export const FUSE_BMAP_IN_SIZE = 16;
/** `sizeof(struct fuse_bmap_out)`. */
export const FUSE_BMAP_OUT_SIZE = 8;
/** `sizeof(struct fuse_ioctl_in)`. */
export const FUSE_IOCTL_IN_SIZE = 32;
/** `sizeof(struct fuse_poll_in)`. */
export const FUSE_POLL_IN_SIZE = 24;
/** `sizeof(struct fuse_poll_out)`. */
export const FUSE_POLL_OUT_SIZE = 8;
/** `sizeof(struct fuse_notify_retrieve_in)` (NOTIFY_REPLY body before the data). */
export const FUSE_NOTIFY_RETRIEVE_IN_SIZE = 40;
/** `sizeof(struct fuse_fallocate_in)`. */
export const FUSE_FALLOCATE_IN_SIZE = 32;
/** `sizeof(struct fuse_lseek_in)`. */
export const FUSE_LSEEK_IN_SIZE = 24;
/** `sizeof(struct fuse_lseek_out)`. */
export const FUSE_LSEEK_OUT_SIZE = 8;
/** `sizeof(struct fuse_copy_file_range_in)`. */
export const FUSE_COPY_FILE_RANGE_IN_SIZE = 56;
/** `sizeof(struct fuse_copy_file_range_out)` (COPY_FILE_RANGE_64 reply). */
export const FUSE_COPY_FILE_RANGE_OUT_SIZE = 8;
/** `sizeof(struct fuse_setupmapping_in)`. */
export const FUSE_SETUPMAPPING_IN_SIZE = 40;
/** `sizeof(struct fuse_removemapping_in)`. */
export const FUSE_REMOVEMAPPING_IN_SIZE = 4;
/** `sizeof(struct fuse_syncfs_in)`. */
export const FUSE_SYNCFS_IN_SIZE = 8;
/** `sizeof(struct fuse_statx_in)`. */
export const FUSE_STATX_IN_SIZE = 24;
/** `sizeof(struct fuse_statx_out)`. */
export const FUSE_STATX_OUT_SIZE = 288;
/** `sizeof(struct cuse_init_in)`. */
export const CUSE_INIT_IN_SIZE = 16;
/** `sizeof(struct fuse_backing_map)`. */
export const FUSE_BACKING_MAP_SIZE = 16;
/** `FUSE_NAME_OFFSET`: offset of `name` in `struct fuse_dirent`. */
export const FUSE_NAME_OFFSET = 24;
/** `FUSE_NAME_OFFSET_DIRENTPLUS`: offset of `dirent.name` in `struct fuse_direntplus`. */
export const FUSE_NAME_OFFSET_DIRENTPLUS = FUSE_ENTRY_OUT_SIZE + FUSE_NAME_OFFSET;

/** `FUSE_DIRENT_ALIGN`/`FUSE_REC_ALIGN`: rounds up to the 8-byte record alignment. */
export function direntAlign(x: number): number {
  return (x + 7) & ~7;
}
/** `FUSE_DIRENT_SIZE`: bytes a `fuse_dirent` with a name of `namelen` bytes occupies. */
export function direntSize(namelen: number): number {
  return direntAlign(FUSE_NAME_OFFSET + namelen);
}
/** `FUSE_DIRENTPLUS_SIZE`: bytes a `fuse_direntplus` with a name of `namelen` bytes occupies. */
export function direntplusSize(namelen: number): number {
  return direntAlign(FUSE_NAME_OFFSET_DIRENTPLUS + namelen);
}

/** A 64-bit field: bigint, or a number that is a safe integer. Negative values wrap (two's complement). */
export type U64 = bigint | number;
/** Two's-complement 64-bit view of `v`, for `writeBigUInt64LE`. */
export function u64(v: U64): bigint {
  return BigInt.asUintN(64, typeof v === 'bigint' ? v : BigInt(Math.trunc(v)));
}

/** `struct fuse_in_header`. */
export interface InHeader {
  /** Total request length including this header. */
  len: number;
  /** `enum fuse_opcode`. */
  opcode: number;
  /** Request id, echoed by the reply; bit 63 marks a resend, bit 0 an INTERRUPT. */
  unique: bigint;
  /** Node the request is about (0 when none). */
  nodeid: bigint;
  /** Caller's fsuid. */
  uid: number;
  /** Caller's fsgid. */
  gid: number;
  /** Caller's tgid (0 for kernel-internal requests). */
  pid: number;
  /** Length of the request extensions at the end of the message, in 8-byte units (7.38+). */
  totalExtlen: number;
}

/** Decodes `struct fuse_in_header` from the first 40 bytes of `buf` (RangeError when shorter). */
export function decodeInHeader(buf: Buffer): InHeader {
  if (buf.length < FUSE_IN_HEADER_SIZE) throw new RangeError(`fuse_in_header needs ${FUSE_IN_HEADER_SIZE} bytes, got ${buf.length}`);
  return {
    len: buf.readUInt32LE(0),
    opcode: buf.readUInt32LE(4),
    unique: buf.readBigUInt64LE(8),
    nodeid: buf.readBigUInt64LE(16),
    uid: buf.readUInt32LE(24),
    gid: buf.readUInt32LE(28),
    pid: buf.readUInt32LE(32),
    totalExtlen: buf.readUInt16LE(36),
  };
}

/** Writes `struct fuse_out_header` at `offset` of `target`. `error` is 0 or a negative errno (or a notify code when `unique` is 0). */
export function writeOutHeader(target: Buffer, offset: number, len: number, error: number, unique: bigint): void {
  target.writeUInt32LE(len >>> 0, offset);
  target.writeInt32LE(error | 0, offset + 4);
  target.writeBigUInt64LE(u64(unique), offset + 8);
}

/** Encodes `struct fuse_out_header` (16 bytes). `len` is the total reply length including the header. */
export function encodeOutHeader(len: number, error: number, unique: bigint): Buffer {
  const buf = Buffer.alloc(FUSE_OUT_HEADER_SIZE);
  writeOutHeader(buf, 0, len, error, unique);
  return buf;
}

/** Decoded `struct fuse_out_header`. */
export interface OutHeader {
  /** Total reply length. */
  len: number;
  /** 0, a negative errno, or a notify code when `unique` is 0. */
  error: number;
  /** Id of the request answered; 0 for a notification. */
  unique: bigint;
}

/** Decodes `struct fuse_out_header` from the first 16 bytes of `buf` (RangeError when shorter). */
export function decodeOutHeader(buf: Buffer): OutHeader {
  if (buf.length < FUSE_OUT_HEADER_SIZE) throw new RangeError(`fuse_out_header needs ${FUSE_OUT_HEADER_SIZE} bytes, got ${buf.length}`);
  return { len: buf.readUInt32LE(0), error: buf.readInt32LE(4), unique: buf.readBigUInt64LE(8) };
}

/**
 * `FUSE_NOTIFY_RESEND` (7.40+, `FUSE_HAS_RESEND`): written to `/dev/fuse`, requeues every request
 * that was read but not answered; they come back with `FUSE_UNIQUE_RESEND` set in `unique`.
 */
export function notifyResendMessage(): Buffer {
  return encodeOutHeader(FUSE_OUT_HEADER_SIZE, NotifyCode.RESEND, 0n);
}

/** `struct fuse_init_in` as the daemon sees it. */
export interface InitIn {
  /** Kernel's major protocol version. */
  major: number;
  /** Kernel's minor protocol version. */
  minor: number;
  /** Kernel's readahead limit in bytes. */
  maxReadahead: number;
  /** Offered flags, combined `flags | flags2 << 32` (`flags2` only with `INIT_EXT`). */
  flags: bigint;
}

/**
 * Decodes the body of a FUSE_INIT request (the bytes after the in header). Kernels before 7.36
 * send the 16-byte layout; `flags2` is read only when `INIT_EXT` is offered and the body holds
 * it. Bodies shorter than 8 bytes throw RangeError; 8..15 bytes (pre-7.6) give 0 readahead/flags.
 */
export function decodeInitIn(body: Buffer): InitIn {
  if (body.length < 8) throw new RangeError(`fuse_init_in needs at least 8 bytes, got ${body.length}`);
  const major = body.readUInt32LE(0);
  const minor = body.readUInt32LE(4);
  if (body.length < FUSE_COMPAT_INIT_IN_SIZE) return { major, minor, maxReadahead: 0, flags: 0n };
  const maxReadahead = body.readUInt32LE(8);
  let flags = BigInt(body.readUInt32LE(12));
  if ((flags & InitFlags.INIT_EXT) !== 0n && body.length >= 20) {
    flags |= BigInt(body.readUInt32LE(16)) << 32n;
  }
  return { major, minor, maxReadahead, flags };
}

/** Fields of `struct fuse_init_out`. */
export interface InitOut {
  /** Daemon's major version; must be 7 or the kernel fails the connection. */
  major: number;
  /** Minor version both sides speak (the smaller of the two). */
  minor: number;
  /** Readahead limit in bytes (the kernel takes the minimum with its own). */
  maxReadahead: number;
  /** Granted flags, combined; bits 32..63 go to `flags2` (the kernel reads it only with `INIT_EXT`). */
  flags: bigint;
  /** Max background requests (u16; 0 keeps the kernel default). */
  maxBackground: number;
  /** Congestion threshold (u16; 0 keeps the kernel default). */
  congestionThreshold: number;
  /** Largest WRITE the kernel sends, in bytes (at least 4096). */
  maxWrite: number;
  /** Timestamp granularity in ns (1 = full precision). */
  timeGran: number;
  /** Max pages per request (u16), honoured with `FUSE_MAX_PAGES`. */
  maxPages: number;
  /** log2 of the DAX mapping alignment (u16), honoured with `FUSE_MAP_ALIGNMENT`. */
  mapAlignment: number;
  /** Filesystem stacking depth, 1..2, required for `FUSE_PASSTHROUGH`. */
  maxStackDepth: number;
  /** Request timeout in seconds (u16), honoured with `FUSE_REQUEST_TIMEOUT`. */
  requestTimeout: number;
}

/** Writes the 64-byte `struct fuse_init_out` at `offset` of `target` (unused tail zeroed). */
export function writeInitOut(target: Buffer, offset: number, o: InitOut): void {
  target.fill(0, offset, offset + FUSE_INIT_OUT_SIZE);
  const flags = BigInt.asUintN(64, o.flags);
  target.writeUInt32LE(o.major >>> 0, offset + 0);
  target.writeUInt32LE(o.minor >>> 0, offset + 4);
  target.writeUInt32LE(o.maxReadahead >>> 0, offset + 8);
  target.writeUInt32LE(Number(flags & 0xffffffffn), offset + 12);
  target.writeUInt16LE(o.maxBackground & 0xffff, offset + 16);
  target.writeUInt16LE(o.congestionThreshold & 0xffff, offset + 18);
  target.writeUInt32LE(o.maxWrite >>> 0, offset + 20);
  target.writeUInt32LE(o.timeGran >>> 0, offset + 24);
  target.writeUInt16LE(o.maxPages & 0xffff, offset + 28);
  target.writeUInt16LE(o.mapAlignment & 0xffff, offset + 30);
  target.writeUInt32LE(Number(flags >> 32n), offset + 32);
  target.writeUInt32LE(o.maxStackDepth >>> 0, offset + 36);
  target.writeUInt16LE(o.requestTimeout & 0xffff, offset + 40);
}

/** Encodes `struct fuse_init_out` (64 bytes, body only), splitting `flags` into `flags`/`flags2`. */
export function encodeInitOut(o: InitOut): Buffer {
  const buf = Buffer.alloc(FUSE_INIT_OUT_SIZE);
  writeInitOut(buf, 0, o);
  return buf;
}

/** Decodes a 64-byte `struct fuse_init_out` body, combining `flags`/`flags2` (RangeError when shorter). */
export function decodeInitOut(buf: Buffer): InitOut {
  if (buf.length < FUSE_INIT_OUT_SIZE) throw new RangeError(`fuse_init_out needs ${FUSE_INIT_OUT_SIZE} bytes, got ${buf.length}`);
  return {
    major: buf.readUInt32LE(0),
    minor: buf.readUInt32LE(4),
    maxReadahead: buf.readUInt32LE(8),
    flags: BigInt(buf.readUInt32LE(12)) | (BigInt(buf.readUInt32LE(32)) << 32n),
    maxBackground: buf.readUInt16LE(16),
    congestionThreshold: buf.readUInt16LE(18),
    maxWrite: buf.readUInt32LE(20),
    timeGran: buf.readUInt32LE(24),
    maxPages: buf.readUInt16LE(28),
    mapAlignment: buf.readUInt16LE(30),
    maxStackDepth: buf.readUInt32LE(36),
    requestTimeout: buf.readUInt16LE(40),
  };
}

/** `struct fuse_attr`. Times are seconds since the epoch (signed) plus nanoseconds. */
export interface Attr {
  /** Inode number reported to `stat`. */
  ino: U64;
  /** Size in bytes. */
  size: U64;
  /** 512-byte blocks allocated. */
  blocks: U64;
  /** Access time, seconds. */
  atime: U64;
  /** Modification time, seconds. */
  mtime: U64;
  /** Status change time, seconds. */
  ctime: U64;
  /** Access time, nanoseconds. */
  atimensec: number;
  /** Modification time, nanoseconds. */
  mtimensec: number;
  /** Status change time, nanoseconds. */
  ctimensec: number;
  /** File type and permission bits. */
  mode: number;
  /** Link count. */
  nlink: number;
  /** Owner uid. */
  uid: number;
  /** Owner gid. */
  gid: number;
  /** Device number (new_encode_dev format) for device nodes. */
  rdev: number;
  /** Preferred I/O size; 0 lets the kernel pick. */
  blksize: number;
  /** FUSE_ATTR_* flags. */
  flags: number;
}

/** Writes the 88-byte `struct fuse_attr` at `offset` of `target`. */
export function writeAttr(target: Buffer, offset: number, a: Attr): void {
  target.writeBigUInt64LE(u64(a.ino), offset + 0);
  target.writeBigUInt64LE(u64(a.size), offset + 8);
  target.writeBigUInt64LE(u64(a.blocks), offset + 16);
  target.writeBigUInt64LE(u64(a.atime), offset + 24);
  target.writeBigUInt64LE(u64(a.mtime), offset + 32);
  target.writeBigUInt64LE(u64(a.ctime), offset + 40);
  target.writeUInt32LE(a.atimensec >>> 0, offset + 48);
  target.writeUInt32LE(a.mtimensec >>> 0, offset + 52);
  target.writeUInt32LE(a.ctimensec >>> 0, offset + 56);
  target.writeUInt32LE(a.mode >>> 0, offset + 60);
  target.writeUInt32LE(a.nlink >>> 0, offset + 64);
  target.writeUInt32LE(a.uid >>> 0, offset + 68);
  target.writeUInt32LE(a.gid >>> 0, offset + 72);
  target.writeUInt32LE(a.rdev >>> 0, offset + 76);
  target.writeUInt32LE(a.blksize >>> 0, offset + 80);
  target.writeUInt32LE(a.flags >>> 0, offset + 84);
}

/** Encodes `struct fuse_attr` (88 bytes). */
export function encodeAttr(a: Attr): Buffer {
  const buf = Buffer.alloc(FUSE_ATTR_SIZE);
  writeAttr(buf, 0, a);
  return buf;
}

/** Decodes `struct fuse_attr` at `offset` (64-bit fields as bigint; times signed). */
export function decodeAttr(buf: Buffer, offset = 0): Attr {
  return {
    ino: buf.readBigUInt64LE(offset + 0),
    size: buf.readBigUInt64LE(offset + 8),
    blocks: buf.readBigUInt64LE(offset + 16),
    atime: buf.readBigInt64LE(offset + 24),
    mtime: buf.readBigInt64LE(offset + 32),
    ctime: buf.readBigInt64LE(offset + 40),
    atimensec: buf.readUInt32LE(offset + 48),
    mtimensec: buf.readUInt32LE(offset + 52),
    ctimensec: buf.readUInt32LE(offset + 56),
    mode: buf.readUInt32LE(offset + 60),
    nlink: buf.readUInt32LE(offset + 64),
    uid: buf.readUInt32LE(offset + 68),
    gid: buf.readUInt32LE(offset + 72),
    rdev: buf.readUInt32LE(offset + 76),
    blksize: buf.readUInt32LE(offset + 80),
    flags: buf.readUInt32LE(offset + 84),
  };
}

/** Encodes `struct fuse_backing_map` (16 bytes: int32 fd, uint32 flags, uint64 padding) for BACKING_OPEN. */
export function encodeBackingMap(fd: number, flags = 0): Buffer {
  const buf = Buffer.alloc(FUSE_BACKING_MAP_SIZE);
  buf.writeInt32LE(fd | 0, 0);
  buf.writeUInt32LE(flags >>> 0, 4);
  return buf;
}
