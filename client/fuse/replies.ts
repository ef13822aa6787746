/**
 * FUSE reply encoding: each builder returns one Buffer (out header + body) of exactly the
 * reply's length, ready for a single write to `/dev/fuse`. Pure.
 */
import {
  FUSE_ATTR_OUT_SIZE,
  FUSE_BMAP_OUT_SIZE,
  FUSE_COPY_FILE_RANGE_OUT_SIZE,
  FUSE_ENTRY_OUT_SIZE,
  FUSE_GETXATTR_OUT_SIZE,
  FUSE_INIT_OUT_SIZE,
  FUSE_LK_OUT_SIZE,
  FUSE_LSEEK_OUT_SIZE,
  FUSE_NAME_MAX,
  FUSE_NAME_OFFSET,
  FUSE_OPEN_OUT_SIZE,
  FUSE_OUT_HEADER_SIZE,
  FUSE_POLL_OUT_SIZE,
  FUSE_STATFS_OUT_SIZE,
  FUSE_UNIQUE_RESEND,
  FUSE_WRITE_OUT_SIZE,
  Opcode,
  decodeOutHeader,
  direntAlign,
  u64,
  writeAttr,
  writeInitOut,
  writeOutHeader,
  type Attr,
  type InitOut,
  type U64,
} from '../../kernel/abi.ts';
import { opcodeName } from './opcodes.ts';

/** `struct fuse_entry_out`: the answer to LOOKUP, MKNOD, MKDIR, SYMLINK, LINK (and part of CREATE). */
export interface EntryOut {
  /** Node id the kernel will use for this inode; 0 caches a negative lookup for `entryValid`. */
  nodeid: U64;
  /** Inode generation; `nodeid:generation` must be unique for the filesystem's lifetime. */
  generation?: U64;
  /** Name cache timeout, seconds. */
  entryValid: U64;
  /** Attribute cache timeout, seconds. */
  attrValid: U64;
  /** Name cache timeout, nanoseconds part. */
  entryValidNsec?: number;
  /** Attribute cache timeout, nanoseconds part. */
  attrValidNsec?: number;
  /** Attributes of the inode. */
  attr: Attr;
}

/** `struct fuse_attr_out`: the answer to GETATTR and SETATTR. */
export interface AttrOut {
  /** Attribute cache timeout, seconds. */
  attrValid: U64;
  /** Attribute cache timeout, nanoseconds part. */
  attrValidNsec?: number;
  /** The attributes. */
  attr: Attr;
}

/** `struct fuse_open_out`: the answer to OPEN and OPENDIR (and part of CREATE). */
export interface OpenOut {
  /** File handle the kernel passes back in later requests on this open file. */
  fh: U64;
  /** FOPEN_* flags. */
  openFlags: number;
  /** Backing id from BACKING_OPEN, used with `FOPEN_PASSTHROUGH`; 0 otherwise. */
  backingId?: number;
}

/** `struct fuse_kstatfs`: the answer to STATFS. */
export interface StatfsOut {
  blocks: U64;
  bfree: U64;
  bavail: U64;
  files: U64;
  ffree: U64;
  bsize: number;
  namelen: number;
  frsize: number;
}

/** `struct fuse_file_lock` in a GETLK answer. */
export interface LockOut {
  start: U64;
  end: U64;
  type: number;
  pid: number;
}

/** Largest errno the kernel accepts in a reply (`oh.error <= -512` is rejected with EINVAL). */
const MAX_REPLY_ERRNO = 511;
const EIO = 5;

/** Allocates a reply of `bodySize` body bytes with its out header written. */
function alloc(unique: bigint, bodySize: number): Buffer {
  const buf = Buffer.alloc(FUSE_OUT_HEADER_SIZE + bodySize);
  writeOutHeader(buf, 0, buf.length, 0, unique);
  return buf;
}

/**
 * Error reply: out header only, `error = -errno`. `errno` may be given positive or negative;
 * 0 is a plain success. Values the kernel would reject (|errno| > 511, not an integer) become EIO,
 * so the caller never leaves the application hanging.
 */
export function replyError(unique: bigint, errno: number): Buffer {
  let e = Math.abs(errno);
  if (!Number.isInteger(e) || e > MAX_REPLY_ERRNO) e = EIO;
  const buf = Buffer.alloc(FUSE_OUT_HEADER_SIZE);
  writeOutHeader(buf, 0, FUSE_OUT_HEADER_SIZE, e === 0 ? 0 : -e, unique);
  return buf;
}

/** Success without a body (UNLINK, RMDIR, RENAME, RELEASE, FLUSH, FSYNC, SETXATTR, ACCESS, DESTROY, ...). */
export function replyEmpty(unique: bigint): Buffer {
  return alloc(unique, 0);
}

/** Writes the 128-byte `struct fuse_entry_out` at `offset` of `target`. */
export function writeEntryOut(target: Buffer, offset: number, e: EntryOut): void {
  target.writeBigUInt64LE(u64(e.nodeid), offset);
  target.writeBigUInt64LE(u64(e.generation ?? 0), offset + 8);
  target.writeBigUInt64LE(u64(e.entryValid), offset + 16);
  target.writeBigUInt64LE(u64(e.attrValid), offset + 24);
  target.writeUInt32LE((e.entryValidNsec ?? 0) >>> 0, offset + 32);
  target.writeUInt32LE((e.attrValidNsec ?? 0) >>> 0, offset + 36);
  writeAttr(target, offset + 40, e.attr);
}

function writeOpenOut(target: Buffer, offset: number, o: OpenOut): void {
  target.writeBigUInt64LE(u64(o.fh), offset);
  target.writeUInt32LE(o.openFlags >>> 0, offset + 8);
  target.writeInt32LE((o.backingId ?? 0) | 0, offset + 12);
}

/** Entry reply (LOOKUP, MKNOD, MKDIR, SYMLINK, LINK). A non-zero nodeid counts as one lookup the kernel will FORGET. */
export function replyEntry(unique: bigint, entry: EntryOut): Buffer {
  const buf = alloc(unique, FUSE_ENTRY_OUT_SIZE);
  writeEntryOut(buf, FUSE_OUT_HEADER_SIZE, entry);
  return buf;
}

/** Attribute reply (GETATTR, SETATTR). */
export function replyAttr(unique: bigint, out: AttrOut): Buffer {
  const buf = alloc(unique, FUSE_ATTR_OUT_SIZE);
  const o = FUSE_OUT_HEADER_SIZE;
  buf.writeBigUInt64LE(u64(out.attrValid), o);
  buf.writeUInt32LE((out.attrValidNsec ?? 0) >>> 0, o + 8);
  writeAttr(buf, o + 16, out.attr);
  return buf;
}

/** Open reply (OPEN, OPENDIR): `fh`, FOPEN_* flags and, for passthrough, the backing id at body offset 12. */
export function replyOpen(unique: bigint, open: OpenOut): Buffer {
  const buf = alloc(unique, FUSE_OPEN_OUT_SIZE);
  writeOpenOut(buf, FUSE_OUT_HEADER_SIZE, open);
  return buf;
}

/** CREATE/TMPFILE reply: `fuse_entry_out` followed by `fuse_open_out`. */
export function replyCreate(unique: bigint, entry: EntryOut, open: OpenOut): Buffer {
  const buf = alloc(unique, FUSE_ENTRY_OUT_SIZE + FUSE_OPEN_OUT_SIZE);
  writeEntryOut(buf, FUSE_OUT_HEADER_SIZE, entry);
  writeOpenOut(buf, FUSE_OUT_HEADER_SIZE + FUSE_ENTRY_OUT_SIZE, open);
  return buf;
}

/** WRITE (and COPY_FILE_RANGE) reply: bytes written, `struct fuse_write_out`. */
export function replyWrite(unique: bigint, size: number): Buffer {
  const buf = alloc(unique, FUSE_WRITE_OUT_SIZE);
  buf.writeUInt32LE(size >>> 0, FUSE_OUT_HEADER_SIZE);
  return buf;
}

/** COPY_FILE_RANGE_64 reply: bytes copied as u64, `struct fuse_copy_file_range_out`. */
export function replyCopyFileRange64(unique: bigint, bytesCopied: U64): Buffer {
  const buf = alloc(unique, FUSE_COPY_FILE_RANGE_OUT_SIZE);
  buf.writeBigUInt64LE(u64(bytesCopied), FUSE_OUT_HEADER_SIZE);
  return buf;
}

/** STATFS reply, `struct fuse_statfs_out`. */
export function replyStatfs(unique: bigint, st: StatfsOut): Buffer {
  const buf = alloc(unique, FUSE_STATFS_OUT_SIZE);
  const o = FUSE_OUT_HEADER_SIZE;
  buf.writeBigUInt64LE(u64(st.blocks), o);
  buf.writeBigUInt64LE(u64(st.bfree), o + 8);
  buf.writeBigUInt64LE(u64(st.bavail), o + 16);
  buf.writeBigUInt64LE(u64(st.files), o + 24);
  buf.writeBigUInt64LE(u64(st.ffree), o + 32);
  buf.writeUInt32LE(st.bsize >>> 0, o + 40);
  buf.writeUInt32LE(st.namelen >>> 0, o + 44);
  buf.writeUInt32LE(st.frsize >>> 0, o + 48);
  return buf;
}

/** Raw-bytes reply (READ, READLINK, GETXATTR/LISTXATTR values): header then the bytes, copied once. */
export function replyData(unique: bigint, data: Uint8Array | readonly Uint8Array[]): Buffer {
  const parts: readonly Uint8Array[] = data instanceof Uint8Array ? [data] : data;
  let size = 0;
  for (const p of parts) size += p.length;
  const buf = Buffer.allocUnsafe(FUSE_OUT_HEADER_SIZE + size);
  writeOutHeader(buf, 0, buf.length, 0, unique);
  let o = FUSE_OUT_HEADER_SIZE;
  for (const p of parts) {
    buf.set(p, o);
    o += p.length;
  }
  return buf;
}

/** GETXATTR/LISTXATTR size probe reply (request size 0): `struct fuse_getxattr_out`. */
export function replyXattrSize(unique: bigint, size: number): Buffer {
  const buf = alloc(unique, FUSE_GETXATTR_OUT_SIZE);
  buf.writeUInt32LE(size >>> 0, FUSE_OUT_HEADER_SIZE);
  return buf;
}

/** LSEEK reply: the resulting offset, `struct fuse_lseek_out`. */
export function replyLseek(unique: bigint, offset: U64): Buffer {
  const buf = alloc(unique, FUSE_LSEEK_OUT_SIZE);
  buf.writeBigUInt64LE(u64(offset), FUSE_OUT_HEADER_SIZE);
  return buf;
}

/** BMAP reply, `struct fuse_bmap_out`. */
export function replyBmap(unique: bigint, block: U64): Buffer {
  const buf = alloc(unique, FUSE_BMAP_OUT_SIZE);
  buf.writeBigUInt64LE(u64(block), FUSE_OUT_HEADER_SIZE);
  return buf;
}

/** POLL reply, `struct fuse_poll_out`. */
export function replyPoll(unique: bigint, revents: number): Buffer {
  const buf = alloc(unique, FUSE_POLL_OUT_SIZE);
  buf.writeUInt32LE(revents >>> 0, FUSE_OUT_HEADER_SIZE);
  return buf;
}

/** GETLK reply, `struct fuse_lk_out`. */
export function replyLk(unique: bigint, lk: LockOut): Buffer {
  const buf = alloc(unique, FUSE_LK_OUT_SIZE);
  const o = FUSE_OUT_HEADER_SIZE;
  buf.writeBigUInt64LE(u64(lk.start), o);
  buf.writeBigUInt64LE(u64(lk.end), o + 8);
  buf.writeUInt32LE(lk.type >>> 0, o + 16);
  buf.writeUInt32LE(lk.pid >>> 0, o + 20);
  return buf;
}

/** INIT reply: the 64-byte `struct fuse_init_out`. */
export function replyInit(unique: bigint, initOut: InitOut): Buffer {
  const buf = alloc(unique, FUSE_INIT_OUT_SIZE);
  writeInitOut(buf, FUSE_OUT_HEADER_SIZE, initOut);
  return buf;
}

/** `d_type` (DT_*) of a `st_mode`: its S_IFMT bits shifted down by 12. */
export function direntType(mode: number): number {
  return (mode >>> 12) & 0xf;
}

/** One directory entry for `DirentBuilder.add`. */
export interface DirentInput {
  /** Entry name (not empty, no `/` or NUL, at most 1024 bytes). */
  name: string | Uint8Array;
  /** Offset cookie of the *next* entry: the kernel passes it back as the READDIR offset to continue after this one. */
  off: U64;
  /** Inode number; defaults to `entry.attr.ino`. */
  ino?: U64;
  /** DT_* type; defaults to the type of `entry.attr.mode`, else DT_UNKNOWN (0). */
  type?: number;
  /**
   * READDIRPLUS only: the entry's lookup result. A non-zero `nodeid` counts as one lookup the
   * kernel will FORGET; omitted (or nodeid 0), the kernel just lists the name.
   */
  entry?: EntryOut;
}

const ZERO_ATTR: Attr = {
  ino: 0n, size: 0n, blocks: 0n, atime: 0n, mtime: 0n, ctime: 0n,
  atimensec: 0, mtimensec: 0, ctimensec: 0, mode: 0, nlink: 0, uid: 0, gid: 0, rdev: 0, blksize: 0, flags: 0,
};

/**
 * Packs a READDIR (`fuse_dirent`) or READDIRPLUS (`fuse_direntplus`) reply. Records are padded
 * to 8 bytes (FUSE_DIRENT_ALIGN); `add` returns false, leaving the reply unchanged, when the
 * record would not fit in `maxSize` (the request's `size`). `finish` returns the reply.
 */
export class DirentBuilder {
  private readonly buf: Buffer;
  private used = 0;
  private entries = 0;

  /** `maxSize` is the READDIR(PLUS) request's `size`; `plus` selects the READDIRPLUS layout. */
  constructor(
    private readonly unique: bigint,
    private readonly maxSize: number,
    private readonly plus = false,
  ) {
    this.buf = Buffer.alloc(FUSE_OUT_HEADER_SIZE + Math.max(0, maxSize));
  }

  /** Body bytes packed so far. */
  get size(): number {
    return this.used;
  }

  /** Entries packed so far. */
  get count(): number {
    return this.entries;
  }

  /** Appends one entry; false when it does not fit. Throws RangeError on a name the kernel would reject (EIO). */
  add(d: DirentInput): boolean {
    const name = typeof d.name === 'string' ? Buffer.from(d.name, 'utf8') : d.name;
    if (name.length === 0 || name.length > FUSE_NAME_MAX || name.includes(0x2f) || name.includes(0)) {
      throw new RangeError(`invalid directory entry name (${name.length} bytes)`);
    }
    const head = this.plus ? FUSE_ENTRY_OUT_SIZE : 0;
    const rec = direntAlign(head + FUSE_NAME_OFFSET + name.length);
    if (this.used + rec > this.maxSize) return false;
    const at = FUSE_OUT_HEADER_SIZE + this.used;
    const ino = d.ino ?? d.entry?.attr.ino ?? 0n;
    const type = d.type ?? (d.entry ? direntType(d.entry.attr.mode) : 0);
    if (this.plus) {
      writeEntryOut(this.buf, at, d.entry ?? { nodeid: 0n, entryValid: 0n, attrValid: 0n, attr: { ...ZERO_ATTR, ino } });
    }
    const o = at + head;
    this.buf.writeBigUInt64LE(u64(ino), o);
    this.buf.writeBigUInt64LE(u64(d.off), o + 8);
    this.buf.writeUInt32LE(name.length, o + 16);
    this.buf.writeUInt32LE(type >>> 0, o + 20);
    this.buf.set(name, o + FUSE_NAME_OFFSET);
    this.used += rec;
    this.entries++;
    return true;
  }

  /** The reply: out header plus the packed records (a view of the builder's buffer, exactly that long). */
  finish(): Buffer {
    writeOutHeader(this.buf, 0, FUSE_OUT_HEADER_SIZE + this.used, 0, this.unique);
    return this.buf.subarray(0, FUSE_OUT_HEADER_SIZE + this.used);
  }
}

const ERRNO_NAMES: Readonly<Record<number, string>> = {
  1: 'EPERM', 2: 'ENOENT', 4: 'EINTR', 5: 'EIO', 9: 'EBADF', 11: 'EAGAIN', 12: 'ENOMEM', 13: 'EACCES',
  16: 'EBUSY', 17: 'EEXIST', 18: 'EXDEV', 20: 'ENOTDIR', 21: 'EISDIR', 22: 'EINVAL', 27: 'EFBIG',
  28: 'ENOSPC', 30: 'EROFS', 34: 'ERANGE', 36: 'ENAMETOOLONG', 38: 'ENOSYS', 39: 'ENOTEMPTY',
  61: 'ENODATA', 71: 'EPROTO', 95: 'EOPNOTSUPP',
};

/**
 * One-line debug rendering of a reply (`--debug`). With the request's `opcode`, successful
 * replies show their main fields. Never throws, whatever the bytes.
 */
export function describeReply(buf: Buffer, opcode?: number): string {
  if (buf.length < FUSE_OUT_HEADER_SIZE) return `reply malformed (${buf.length} bytes)`;
  const h = decodeOutHeader(buf);
  if (h.unique === 0n) return `notify code=${h.error} len=${h.len}`;
  const what = opcode === undefined ? 'reply' : `${opcodeName(opcode)} reply`;
  const id = `unique=${h.unique & ~FUSE_UNIQUE_RESEND}${(h.unique & FUSE_UNIQUE_RESEND) !== 0n ? ' (resend)' : ''}`;
  if (h.error !== 0) return `${what} ${id} error=${h.error} (${ERRNO_NAMES[-h.error] ?? 'errno ' + -h.error})`;
  const body = buf.subarray(FUSE_OUT_HEADER_SIZE);
  const fields = opcode === undefined ? '' : describeReplyBody(opcode, body);
  return `${what} ${id} len=${h.len}${fields ? ' ' + fields : ''}`;
}

function describeReplyBody(opcode: number, b: Buffer): string {
  const has = (n: number): boolean => b.length >= n;
  switch (opcode) {
    case Opcode.LOOKUP:
    case Opcode.MKNOD:
    case Opcode.MKDIR:
    case Opcode.SYMLINK:
    case Opcode.LINK:
      return has(FUSE_ENTRY_OUT_SIZE) ? entryFields(b, 0) : `body=${b.length}B`;
    case Opcode.CREATE:
    case Opcode.TMPFILE:
      return has(FUSE_ENTRY_OUT_SIZE + FUSE_OPEN_OUT_SIZE) ? `${entryFields(b, 0)} ${openFields(b, FUSE_ENTRY_OUT_SIZE)}` : `body=${b.length}B`;
    case Opcode.GETATTR:
    case Opcode.SETATTR:
      return has(FUSE_ATTR_OUT_SIZE) ? `ino=${b.readBigUInt64LE(16)} size=${b.readBigUInt64LE(24)} mode=0${b.readUInt32LE(16 + 60).toString(8)}` : `body=${b.length}B`;
    case Opcode.OPEN:
    case Opcode.OPENDIR:
      return has(FUSE_OPEN_OUT_SIZE) ? openFields(b, 0) : `body=${b.length}B`;
    case Opcode.WRITE:
    case Opcode.COPY_FILE_RANGE:
      return has(FUSE_WRITE_OUT_SIZE) ? `size=${b.readUInt32LE(0)}` : `body=${b.length}B`;
    case Opcode.COPY_FILE_RANGE_64:
    case Opcode.LSEEK:
      return has(8) ? `${opcode === Opcode.LSEEK ? 'offset' : 'size'}=${b.readBigUInt64LE(0)}` : `body=${b.length}B`;
    case Opcode.INIT:
      return has(FUSE_INIT_OUT_SIZE)
        ? `version=${b.readUInt32LE(0)}.${b.readUInt32LE(4)} flags=0x${((BigInt(b.readUInt32LE(32)) << 32n) | BigInt(b.readUInt32LE(12))).toString(16)} max_write=${b.readUInt32LE(20)} max_stack_depth=${b.readUInt32LE(36)}`
        : `body=${b.length}B`;
    default:
      return `body=${b.length}B`;
  }
}

function entryFields(b: Buffer, o: number): string {
  return `nodeid=${b.readBigUInt64LE(o)} generation=${b.readBigUInt64LE(o + 8)} mode=0${b.readUInt32LE(o + 40 + 60).toString(8)}`;
}

function openFields(b: Buffer, o: number): string {
  return `fh=${b.readBigUInt64LE(o)} open_flags=0x${b.readUInt32LE(o + 8).toString(16)} backing_id=${b.readInt32LE(o + 12)}`;
}
