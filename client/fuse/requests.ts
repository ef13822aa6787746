/**
 * FUSE request decoding: one `/dev/fuse` read (one whole request) in, a typed request or a
 * framing error out. Pure; never throws.
 */
import {
  FUSE_COMPAT_SETXATTR_IN_SIZE,
  FUSE_FORGET_ONE_SIZE,
  FUSE_IN_HEADER_SIZE,
  FUSE_INIT_IN_SIZE,
  FUSE_KERNEL_MINOR_VERSION,
  FUSE_MIN_EXTLEN_MINOR,
  FUSE_SETXATTR_IN_SIZE,
  FUSE_UNIQUE_RESEND,
  InitFlags,
  Opcode,
  decodeInitIn,
  type InitIn,
} from '../../kernel/abi.ts';
import { opcodeInfo, opcodeName } from './opcodes.ts';

/** Stable codes of `FramingError`. */
export type FramingErrorCode =
  /** Fewer than 40 bytes: no complete `fuse_in_header`. */
  | 'SHORT_HEADER'
  /** `fuse_in_header.len` differs from the number of bytes read. */
  | 'LENGTH_MISMATCH'
  /** `total_extlen` claims more extension bytes than the request holds. */
  | 'BAD_EXTLEN'
  /** The body is shorter than the opcode's fixed argument, or than the data it announces. */
  | 'SHORT_BODY'
  /** A name the opcode carries is missing its terminating NUL. */
  | 'MISSING_NAME'
  /** The decoder failed on input it should have rejected earlier (a codec bug). */
  | 'MALFORMED';

/** A request that cannot be decoded. Log and drop it, or answer EIO when `unique` is known. */
export class FramingError extends Error {
  /** What is wrong, stable across versions. */
  readonly code: FramingErrorCode;
  /** The request's `unique`, when the header was readable far enough. */
  readonly unique: bigint | undefined;
  /** The request's opcode, when the header was readable far enough. */
  readonly opcode: number | undefined;

  constructor(code: FramingErrorCode, message: string, unique?: bigint, opcode?: number) {
    super(message);
    this.name = 'FramingError';
    this.code = code;
    this.unique = unique;
    this.opcode = opcode;
  }
}

/** Fields of `fuse_in_header` common to every request. */
export interface RequestHeader {
  /** Request id; the reply must echo it unchanged (resend bit included). */
  unique: bigint;
  /** Node the request is about (0 when none). */
  nodeid: bigint;
  /** Caller's fsuid. */
  uid: number;
  /** Caller's fsgid. */
  gid: number;
  /** Caller's tgid. */
  pid: number;
  /** Raw opcode. */
  opcode: number;
  /** Total request length. */
  len: number;
  /** Request extensions (security context, supplementary groups) from the end of the request; empty when none. */
  extensions: Buffer;
}

/** A name as the kernel sent it: bytes (exact, for filesystem calls) and a UTF-8 decoding (for display and logic). */
export interface Named {
  /** UTF-8 decoding of `nameBytes` (lossy for names that are not UTF-8). */
  name: string;
  /** The name without its NUL, a view into the request buffer. */
  nameBytes: Buffer;
}

interface Base<Op extends string> {
  op: Op;
  header: RequestHeader;
}

/** FUSE_LOOKUP: look `name` up in directory `header.nodeid`. */
export interface LookupRequest extends Base<'lookup'>, Named {}
/** FUSE_FORGET: drop `nlookup` lookups of `header.nodeid`. Never answered. */
export interface ForgetRequest extends Base<'forget'> {
  nlookup: bigint;
}
/** One entry of BATCH_FORGET. */
export interface ForgetOne {
  nodeid: bigint;
  nlookup: bigint;
}
/** FUSE_BATCH_FORGET: several forgets at once. Never answered. */
export interface BatchForgetRequest extends Base<'batch_forget'> {
  forgets: ForgetOne[];
}
/** FUSE_GETATTR. `fh` is valid when `getattrFlags & FUSE_GETATTR_FH`. */
export interface GetattrRequest extends Base<'getattr'> {
  getattrFlags: number;
  fh: bigint;
}
/** FUSE_SETATTR: change the attributes selected by `valid` (FATTR_*). */
export interface SetattrRequest extends Base<'setattr'> {
  valid: number;
  fh: bigint;
  size: bigint;
  lockOwner: bigint;
  atime: bigint;
  mtime: bigint;
  ctime: bigint;
  atimensec: number;
  mtimensec: number;
  ctimensec: number;
  mode: number;
  uid: number;
  gid: number;
}
/** FUSE_READLINK. */
export interface ReadlinkRequest extends Base<'readlink'> {}
/** FUSE_SYMLINK: create `name` in `header.nodeid` pointing at `target`. */
export interface SymlinkRequest extends Base<'symlink'>, Named {
  target: string;
  targetBytes: Buffer;
}
/** FUSE_MKNOD. */
export interface MknodRequest extends Base<'mknod'>, Named {
  mode: number;
  rdev: number;
  umask: number;
}
/** FUSE_MKDIR. */
export interface MkdirRequest extends Base<'mkdir'>, Named {
  mode: number;
  umask: number;
}
/** FUSE_UNLINK. */
export interface UnlinkRequest extends Base<'unlink'>, Named {}
/** FUSE_RMDIR. */
export interface RmdirRequest extends Base<'rmdir'>, Named {}
/** FUSE_RENAME (no flags) and FUSE_RENAME2 (RENAME_NOREPLACE/EXCHANGE/WHITEOUT in `flags`). */
export interface RenameRequest extends Base<'rename' | 'rename2'>, Named {
  newdir: bigint;
  flags: number;
  newname: string;
  newnameBytes: Buffer;
}
/** FUSE_LINK: make `newname` in `header.nodeid` a link to `oldnodeid`. */
export interface LinkRequest extends Base<'link'> {
  oldnodeid: bigint;
  newname: string;
  newnameBytes: Buffer;
}
/** FUSE_OPEN / FUSE_OPENDIR. `flags` are open(2) flags; `openFlags` FUSE_OPEN_*. */
export interface OpenRequest extends Base<'open' | 'opendir'> {
  flags: number;
  openFlags: number;
}
/** FUSE_READ / FUSE_READDIR / FUSE_READDIRPLUS. */
export interface ReadRequest extends Base<'read' | 'readdir' | 'readdirplus'> {
  fh: bigint;
  offset: bigint;
  size: number;
  readFlags: number;
  lockOwner: bigint;
  flags: number;
}
/** FUSE_WRITE. `data` is a view into the request buffer of exactly `size` bytes. */
export interface WriteRequest extends Base<'write'> {
  fh: bigint;
  offset: bigint;
  size: number;
  writeFlags: number;
  lockOwner: bigint;
  flags: number;
  data: Buffer;
}
/** FUSE_STATFS. */
export interface StatfsRequest extends Base<'statfs'> {}
/** FUSE_RELEASE / FUSE_RELEASEDIR. */
export interface ReleaseRequest extends Base<'release' | 'releasedir'> {
  fh: bigint;
  flags: number;
  releaseFlags: number;
  lockOwner: bigint;
}
/** FUSE_FSYNC / FUSE_FSYNCDIR. */
export interface FsyncRequest extends Base<'fsync' | 'fsyncdir'> {
  fh: bigint;
  fsyncFlags: number;
}
/** FUSE_SETXATTR. `value` is a view of `size` bytes; `setxattrFlags` is 0 without `FUSE_SETXATTR_EXT`. */
export interface SetxattrRequest extends Base<'setxattr'>, Named {
  size: number;
  flags: number;
  setxattrFlags: number;
  value: Buffer;
}
/** FUSE_GETXATTR. `size` 0 asks for the value's size only. */
export interface GetxattrRequest extends Base<'getxattr'>, Named {
  size: number;
}
/** FUSE_LISTXATTR. `size` 0 asks for the list's size only. */
export interface ListxattrRequest extends Base<'listxattr'> {
  size: number;
}
/** FUSE_REMOVEXATTR. */
export interface RemovexattrRequest extends Base<'removexattr'>, Named {}
/** FUSE_FLUSH. */
export interface FlushRequest extends Base<'flush'> {
  fh: bigint;
  lockOwner: bigint;
}
/** FUSE_INIT. */
export interface InitRequest extends Base<'init'> {
  init: InitIn;
}
/** `struct fuse_file_lock`. */
export interface FileLock {
  start: bigint;
  end: bigint;
  type: number;
  pid: number;
}
/** FUSE_GETLK / FUSE_SETLK / FUSE_SETLKW. */
export interface LockRequest extends Base<'getlk' | 'setlk' | 'setlkw'> {
  fh: bigint;
  owner: bigint;
  lk: FileLock;
  lkFlags: number;
}
/** FUSE_ACCESS. */
export interface AccessRequest extends Base<'access'> {
  mask: number;
}
/** FUSE_CREATE / FUSE_TMPFILE. */
export interface CreateRequest extends Base<'create' | 'tmpfile'>, Named {
  flags: number;
  mode: number;
  umask: number;
  openFlags: number;
}
/** FUSE_INTERRUPT of request `targetUnique`. Answer nothing, or ENOSYS/EAGAIN with `header.unique`. */
export interface InterruptRequest extends Base<'interrupt'> {
  targetUnique: bigint;
}
/** FUSE_BMAP. */
export interface BmapRequest extends Base<'bmap'> {
  block: bigint;
  blocksize: number;
}
/** FUSE_DESTROY: the connection is being torn down. */
export interface DestroyRequest extends Base<'destroy'> {}
/** FUSE_POLL. */
export interface PollRequest extends Base<'poll'> {
  fh: bigint;
  kh: bigint;
  flags: number;
  events: number;
}
/** FUSE_FALLOCATE. */
export interface FallocateRequest extends Base<'fallocate'> {
  fh: bigint;
  offset: bigint;
  length: bigint;
  mode: number;
}
/** FUSE_LSEEK (SEEK_DATA/SEEK_HOLE). */
export interface LseekRequest extends Base<'lseek'> {
  fh: bigint;
  offset: bigint;
  whence: number;
}
/** FUSE_COPY_FILE_RANGE (reply: write_out) / FUSE_COPY_FILE_RANGE_64 (reply: copy_file_range_out). */
export interface CopyFileRangeRequest extends Base<'copy_file_range' | 'copy_file_range_64'> {
  fhIn: bigint;
  offIn: bigint;
  nodeidOut: bigint;
  fhOut: bigint;
  offOut: bigint;
  len: bigint;
  flags: bigint;
}
/** FUSE_SYNCFS. */
export interface SyncfsRequest extends Base<'syncfs'> {}
/** FUSE_STATX. */
export interface StatxRequest extends Base<'statx'> {
  getattrFlags: number;
  fh: bigint;
  sxFlags: number;
  sxMask: number;
}
/** An opcode without a decoder here (IOCTL, NOTIFY_REPLY, DAX mappings, CUSE, future ones). */
export interface UnknownRequest extends Base<'unknown'> {
  /** The bytes after the in header, extensions excluded. */
  body: Buffer;
}

/** A decoded FUSE request, discriminated on `op`. */
export type FuseRequest =
  | LookupRequest
  | ForgetRequest
  | BatchForgetRequest
  | GetattrRequest
  | SetattrRequest
  | ReadlinkRequest
  | SymlinkRequest
  | MknodRequest
  | MkdirRequest
  | UnlinkRequest
  | RmdirRequest
  | RenameRequest
  | LinkRequest
  | OpenRequest
  | ReadRequest
  | WriteRequest
  | StatfsRequest
  | ReleaseRequest
  | FsyncRequest
  | SetxattrRequest
  | GetxattrRequest
  | ListxattrRequest
  | RemovexattrRequest
  | FlushRequest
  | InitRequest
  | LockRequest
  | AccessRequest
  | CreateRequest
  | InterruptRequest
  | BmapRequest
  | DestroyRequest
  | PollRequest
  | FallocateRequest
  | LseekRequest
  | CopyFileRangeRequest
  | SyncfsRequest
  | StatxRequest
  | UnknownRequest;

/** The `op` names of `FuseRequest`. */
export type FuseOp = FuseRequest['op'];

/** Outcome of `parseRequest`. */
export type ParseResult = { ok: true; request: FuseRequest } | { ok: false; error: FramingError };

/** What the connection negotiated, where it changes request layouts. */
export interface ParseOptions {
  /** Negotiated minor; `total_extlen` is honoured from 7.38. Default 45. */
  minor?: number;
  /** Negotiated INIT flags; `FUSE_SETXATTR_EXT` selects the 16-byte `fuse_setxattr_in`. Default 0. */
  flags?: bigint;
}

/** True when `unique` carries the resend bit (bit 63): the kernel requeued it after NOTIFY_RESEND. */
export function isResend(unique: bigint): boolean {
  return (unique & FUSE_UNIQUE_RESEND) !== 0n;
}

const EMPTY = Buffer.alloc(0);

/** Signals a framing error from inside a decoder; caught in `parseRequest`. */
class Reject {
  constructor(
    readonly code: FramingErrorCode,
    readonly message: string,
  ) {}
}

/** Cursor over the names following an opcode's fixed argument. */
class Names {
  pos: number;
  constructor(
    private readonly body: Buffer,
    start: number,
    private readonly what: string,
  ) {
    this.pos = start;
  }
  next(): Buffer {
    const nul = this.body.indexOf(0, this.pos);
    if (nul < 0) throw new Reject('MISSING_NAME', `${this.what}: name at body offset ${this.pos} has no terminating NUL`);
    const bytes = this.body.subarray(this.pos, nul);
    this.pos = nul + 1;
    return bytes;
  }
}

function named(bytes: Buffer): Named {
  return { name: bytes.toString('utf8'), nameBytes: bytes };
}

/**
 * Decodes one complete request as read from `/dev/fuse`. Never throws: malformed input gives
 * `{ ok: false, error }` with a `FramingError`. Opcodes without a decoder give op `unknown`
 * (answer ENOSYS unless `expectsReply` says otherwise). Names, write data and xattr values are
 * views into `buf`: copy them if `buf` is reused before the request is done.
 */
export function parseRequest(buf: Buffer, opts?: ParseOptions): ParseResult {
  let unique: bigint | undefined;
  let opcode: number | undefined;
  try {
    if (buf.length >= 16) unique = buf.readBigUInt64LE(8);
    if (buf.length >= 8) opcode = buf.readUInt32LE(4);
    if (buf.length < FUSE_IN_HEADER_SIZE) {
      return fail('SHORT_HEADER', `request of ${buf.length} bytes is shorter than fuse_in_header (${FUSE_IN_HEADER_SIZE})`, unique, opcode);
    }
    const len = buf.readUInt32LE(0);
    if (len !== buf.length) {
      return fail('LENGTH_MISMATCH', `fuse_in_header.len is ${len} but ${buf.length} bytes were read`, unique, opcode);
    }
    const minor = opts?.minor ?? FUSE_KERNEL_MINOR_VERSION;
    const extBytes = minor >= FUSE_MIN_EXTLEN_MINOR ? buf.readUInt16LE(36) * 8 : 0;
    if (FUSE_IN_HEADER_SIZE + extBytes > len) {
      return fail('BAD_EXTLEN', `total_extlen claims ${extBytes} bytes of extensions in a ${len}-byte request`, unique, opcode);
    }
    const header: RequestHeader = {
      unique: unique as bigint,
      nodeid: buf.readBigUInt64LE(16),
      uid: buf.readUInt32LE(24),
      gid: buf.readUInt32LE(28),
      pid: buf.readUInt32LE(32),
      opcode: opcode as number,
      len,
      extensions: extBytes > 0 ? buf.subarray(len - extBytes, len) : EMPTY,
    };
    const body = buf.subarray(FUSE_IN_HEADER_SIZE, len - extBytes);
    const info = opcodeInfo(header.opcode);
    if (info === undefined || !info.parsed) return { ok: true, request: { op: 'unknown', header, body } };
    let inSize = info.inSize;
    if (header.opcode === Opcode.SETXATTR && ((opts?.flags ?? 0n) & InitFlags.SETXATTR_EXT) !== 0n) inSize = FUSE_SETXATTR_IN_SIZE;
    if (body.length < inSize) {
      return fail('SHORT_BODY', `${info.name}: body of ${body.length} bytes is shorter than its ${inSize}-byte argument`, unique, opcode);
    }
    return { ok: true, request: decodeBody(header, body, inSize, info.name) };
  } catch (err) {
    if (err instanceof Reject) return fail(err.code, err.message, unique, opcode);
    return fail('MALFORMED', `decoder failure: ${err instanceof Error ? err.message : String(err)}`, unique, opcode);
  }
}

function fail(code: FramingErrorCode, message: string, unique: bigint | undefined, opcode: number | undefined): ParseResult {
  return { ok: false, error: new FramingError(code, message, unique, opcode) };
}

/** Decodes the body of a table-known opcode whose fixed argument (`inSize` bytes) is present. */
function decodeBody(header: RequestHeader, b: Buffer, inSize: number, what: string): FuseRequest {
  const names = new Names(b, inSize, what);
  switch (header.opcode) {
    case Opcode.LOOKUP:
      return { op: 'lookup', header, ...named(names.next()) };
    case Opcode.FORGET:
      return { op: 'forget', header, nlookup: b.readBigUInt64LE(0) };
    case Opcode.BATCH_FORGET: {
      const count = b.readUInt32LE(0);
      const need = inSize + count * FUSE_FORGET_ONE_SIZE;
      if (b.length < need) throw new Reject('SHORT_BODY', `${what}: ${count} entries need ${need} bytes, body has ${b.length}`);
      const forgets: ForgetOne[] = [];
      for (let i = 0, o = inSize; i < count; i++, o += FUSE_FORGET_ONE_SIZE) {
        forgets.push({ nodeid: b.readBigUInt64LE(o), nlookup: b.readBigUInt64LE(o + 8) });
      }
      return { op: 'batch_forget', header, forgets };
    }
    case Opcode.GETATTR:
      return { op: 'getattr', header, getattrFlags: b.readUInt32LE(0), fh: b.readBigUInt64LE(8) };
    case Opcode.SETATTR:
      return {
        op: 'setattr',
        header,
        valid: b.readUInt32LE(0),
        fh: b.readBigUInt64LE(8),
        size: b.readBigUInt64LE(16),
        lockOwner: b.readBigUInt64LE(24),
        atime: b.readBigInt64LE(32),
        mtime: b.readBigInt64LE(40),
        ctime: b.readBigInt64LE(48),
        atimensec: b.readUInt32LE(56),
        mtimensec: b.readUInt32LE(60),
        ctimensec: b.readUInt32LE(64),
        mode: b.readUInt32LE(68),
        uid: b.readUInt32LE(76),
        gid: b.readUInt32LE(80),
      };
    case Opcode.READLINK:
      return { op: 'readlink', header };
    case Opcode.SYMLINK: {
      // The kernel sends the new entry's name first, then the link target.
      const name = names.next();
      const target = names.next();
      return { op: 'symlink', header, ...named(name), target: target.toString('utf8'), targetBytes: target };
    }
    case Opcode.MKNOD:
      return { op: 'mknod', header, mode: b.readUInt32LE(0), rdev: b.readUInt32LE(4), umask: b.readUInt32LE(8), ...named(names.next()) };
    case Opcode.MKDIR:
      return { op: 'mkdir', header, mode: b.readUInt32LE(0), umask: b.readUInt32LE(4), ...named(names.next()) };
    case Opcode.UNLINK:
      return { op: 'unlink', header, ...named(names.next()) };
    case Opcode.RMDIR:
      return { op: 'rmdir', header, ...named(names.next()) };
    case Opcode.RENAME:
    case Opcode.RENAME2: {
      const rename2 = header.opcode === Opcode.RENAME2;
      const oldName = names.next();
      const newName = names.next();
      return {
        op: rename2 ? 'rename2' : 'rename',
        header,
        newdir: b.readBigUInt64LE(0),
        flags: rename2 ? b.readUInt32LE(8) : 0,
        ...named(oldName),
        newname: newName.toString('utf8'),
        newnameBytes: newName,
      };
    }
    case Opcode.LINK: {
      const newName = names.next();
      return { op: 'link', header, oldnodeid: b.readBigUInt64LE(0), newname: newName.toString('utf8'), newnameBytes: newName };
    }
    case Opcode.OPEN:
    case Opcode.OPENDIR:
      return { op: header.opcode === Opcode.OPEN ? 'open' : 'opendir', header, flags: b.readUInt32LE(0), openFlags: b.readUInt32LE(4) };
    case Opcode.READ:
    case Opcode.READDIR:
    case Opcode.READDIRPLUS:
      return {
        op: header.opcode === Opcode.READ ? 'read' : header.opcode === Opcode.READDIR ? 'readdir' : 'readdirplus',
        header,
        fh: b.readBigUInt64LE(0),
        offset: b.readBigUInt64LE(8),
        size: b.readUInt32LE(16),
        readFlags: b.readUInt32LE(20),
        lockOwner: b.readBigUInt64LE(24),
        flags: b.readUInt32LE(32),
      };
    case Opcode.WRITE: {
      const size = b.readUInt32LE(16);
      if (b.length - inSize < size) throw new Reject('SHORT_BODY', `${what}: announces ${size} data bytes, body has ${b.length - inSize}`);
      return {
        op: 'write',
        header,
        fh: b.readBigUInt64LE(0),
        offset: b.readBigUInt64LE(8),
        size,
        writeFlags: b.readUInt32LE(20),
        lockOwner: b.readBigUInt64LE(24),
        flags: b.readUInt32LE(32),
        data: b.subarray(inSize, inSize + size),
      };
    }
    case Opcode.STATFS:
      return { op: 'statfs', header };
    case Opcode.RELEASE:
    case Opcode.RELEASEDIR:
      return {
        op: header.opcode === Opcode.RELEASE ? 'release' : 'releasedir',
        header,
        fh: b.readBigUInt64LE(0),
        flags: b.readUInt32LE(8),
        releaseFlags: b.readUInt32LE(12),
        lockOwner: b.readBigUInt64LE(16),
      };
    case Opcode.FSYNC:
    case Opcode.FSYNCDIR:
      return { op: header.opcode === Opcode.FSYNC ? 'fsync' : 'fsyncdir', header, fh: b.readBigUInt64LE(0), fsyncFlags: b.readUInt32LE(8) };
    case Opcode.SETXATTR: {
      const size = b.readUInt32LE(0);
      const name = names.next();
      if (b.length - names.pos < size) throw new Reject('SHORT_BODY', `${what}: announces a ${size}-byte value, body has ${b.length - names.pos}`);
      return {
        op: 'setxattr',
        header,
        size,
        flags: b.readUInt32LE(4),
        setxattrFlags: inSize > FUSE_COMPAT_SETXATTR_IN_SIZE ? b.readUInt32LE(8) : 0,
        ...named(name),
        value: b.subarray(names.pos, names.pos + size),
      };
    }
    case Opcode.GETXATTR:
      return { op: 'getxattr', header, size: b.readUInt32LE(0), ...named(names.next()) };
    case Opcode.LISTXATTR:
      return { op: 'listxattr', header, size: b.readUInt32LE(0) };
    case Opcode.REMOVEXATTR:
      return { op: 'removexattr', header, ...named(names.next()) };
    case Opcode.FLUSH:
      return { op: 'flush', header, fh: b.readBigUInt64LE(0), lockOwner: b.readBigUInt64LE(16) };
    case Opcode.INIT:
      return { op: 'init', header, init: decodeInitIn(b.subarray(0, Math.min(b.length, FUSE_INIT_IN_SIZE))) };
    case Opcode.GETLK:
    case Opcode.SETLK:
    case Opcode.SETLKW:
      return {
        op: header.opcode === Opcode.GETLK ? 'getlk' : header.opcode === Opcode.SETLK ? 'setlk' : 'setlkw',
        header,
        fh: b.readBigUInt64LE(0),
        owner: b.readBigUInt64LE(8),
        lk: { start: b.readBigUInt64LE(16), end: b.readBigUInt64LE(24), type: b.readUInt32LE(32), pid: b.readUInt32LE(36) },
        lkFlags: b.readUInt32LE(40),
      };
    case Opcode.ACCESS:
      return { op: 'access', header, mask: b.readUInt32LE(0) };
    case Opcode.CREATE:
    case Opcode.TMPFILE:
      return {
        op: header.opcode === Opcode.CREATE ? 'create' : 'tmpfile',
        header,
        flags: b.readUInt32LE(0),
        mode: b.readUInt32LE(4),
        umask: b.readUInt32LE(8),
        openFlags: b.readUInt32LE(12),
        ...named(names.next()),
      };
    case Opcode.INTERRUPT:
      return { op: 'interrupt', header, targetUnique: b.readBigUInt64LE(0) };
    case Opcode.BMAP:
      return { op: 'bmap', header, block: b.readBigUInt64LE(0), blocksize: b.readUInt32LE(8) };
    case Opcode.DESTROY:
      return { op: 'destroy', header };
    case Opcode.POLL:
      return { op: 'poll', header, fh: b.readBigUInt64LE(0), kh: b.readBigUInt64LE(8), flags: b.readUInt32LE(16), events: b.readUInt32LE(20) };
    case Opcode.FALLOCATE:
      return { op: 'fallocate', header, fh: b.readBigUInt64LE(0), offset: b.readBigUInt64LE(8), length: b.readBigUInt64LE(16), mode: b.readUInt32LE(24) };
    case Opcode.LSEEK:
      return { op: 'lseek', header, fh: b.readBigUInt64LE(0), offset: b.readBigUInt64LE(8), whence: b.readUInt32LE(16) };
    case Opcode.COPY_FILE_RANGE:
    case Opcode.COPY_FILE_RANGE_64:
      return {
        op: header.opcode === Opcode.COPY_FILE_RANGE ? 'copy_file_range' : 'copy_file_range_64',
        header,
        fhIn: b.readBigUInt64LE(0),
        offIn: b.readBigUInt64LE(8),
        nodeidOut: b.readBigUInt64LE(16),
        fhOut: b.readBigUInt64LE(24),
        offOut: b.readBigUInt64LE(32),
        len: b.readBigUInt64LE(40),
        flags: b.readBigUInt64LE(48),
      };
    case Opcode.SYNCFS:
      return { op: 'syncfs', header };
    case Opcode.STATX:
      return { op: 'statx', header, getattrFlags: b.readUInt32LE(0), fh: b.readBigUInt64LE(8), sxFlags: b.readUInt32LE(16), sxMask: b.readUInt32LE(20) };
    default:
      return { op: 'unknown', header, body: b };
  }
}

function q(s: string): string {
  return JSON.stringify(s);
}

/** One-line debug rendering of a request (`--debug`): opcode name, unique, node, caller and the interesting fields. */
export function describeRequest(req: FuseRequest): string {
  const h = req.header;
  const head = `${opcodeName(h.opcode)} unique=${h.unique & ~FUSE_UNIQUE_RESEND}${isResend(h.unique) ? ' (resend)' : ''} nodeid=${h.nodeid} uid=${h.uid} gid=${h.gid} pid=${h.pid}`;
  const rest = describeFields(req);
  return rest ? `${head} ${rest}` : head;
}

function describeFields(req: FuseRequest): string {
  switch (req.op) {
    case 'lookup':
    case 'unlink':
    case 'rmdir':
    case 'removexattr':
      return `name=${q(req.name)}`;
    case 'forget':
      return `nlookup=${req.nlookup}`;
    case 'batch_forget':
      return `count=${req.forgets.length}`;
    case 'getattr':
      return `flags=0x${req.getattrFlags.toString(16)} fh=${req.fh}`;
    case 'setattr':
      return `valid=0x${req.valid.toString(16)} fh=${req.fh} size=${req.size} mode=0${req.mode.toString(8)}`;
    case 'readlink':
    case 'statfs':
    case 'destroy':
    case 'syncfs':
      return '';
    case 'symlink':
      return `name=${q(req.name)} target=${q(req.target)}`;
    case 'mknod':
      return `name=${q(req.name)} mode=0${req.mode.toString(8)} rdev=${req.rdev} umask=0${req.umask.toString(8)}`;
    case 'mkdir':
      return `name=${q(req.name)} mode=0${req.mode.toString(8)} umask=0${req.umask.toString(8)}`;
    case 'rename':
    case 'rename2':
      return `name=${q(req.name)} newdir=${req.newdir} newname=${q(req.newname)} flags=${req.flags}`;
    case 'link':
      return `oldnodeid=${req.oldnodeid} newname=${q(req.newname)}`;
    case 'open':
    case 'opendir':
      return `flags=0${req.flags.toString(8)} open_flags=0x${req.openFlags.toString(16)}`;
    case 'read':
    case 'readdir':
    case 'readdirplus':
      return `fh=${req.fh} offset=${req.offset} size=${req.size}`;
    case 'write':
      return `fh=${req.fh} offset=${req.offset} size=${req.size} write_flags=0x${req.writeFlags.toString(16)}`;
    case 'release':
    case 'releasedir':
      return `fh=${req.fh} flags=0${req.flags.toString(8)} release_flags=0x${req.releaseFlags.toString(16)}`;
    case 'fsync':
    case 'fsyncdir':
      return `fh=${req.fh} fsync_flags=${req.fsyncFlags}`;
    case 'setxattr':
      return `name=${q(req.name)} size=${req.size} flags=${req.flags}`;
    case 'getxattr':
      return `name=${q(req.name)} size=${req.size}`;
    case 'listxattr':
      return `size=${req.size}`;
    case 'flush':
      return `fh=${req.fh}`;
    case 'init':
      return `kernel=${req.init.major}.${req.init.minor} max_readahead=${req.init.maxReadahead} flags=0x${req.init.flags.toString(16)}`;
    case 'getlk':
    case 'setlk':
    case 'setlkw':
      return `fh=${req.fh} owner=${req.owner} type=${req.lk.type} start=${req.lk.start} end=${req.lk.end}`;
    case 'access':
      return `mask=${req.mask}`;
    case 'create':
    case 'tmpfile':
      return `name=${q(req.name)} flags=0${req.flags.toString(8)} mode=0${req.mode.toString(8)} umask=0${req.umask.toString(8)}`;
    case 'interrupt':
      return `target=${req.targetUnique}`;
    case 'bmap':
      return `block=${req.block} blocksize=${req.blocksize}`;
    case 'poll':
      return `fh=${req.fh} events=0x${req.events.toString(16)}`;
    case 'fallocate':
      return `fh=${req.fh} offset=${req.offset} length=${req.length} mode=${req.mode}`;
    case 'lseek':
      return `fh=${req.fh} offset=${req.offset} whence=${req.whence}`;
    case 'copy_file_range':
    case 'copy_file_range_64':
      return `fh_in=${req.fhIn} off_in=${req.offIn} nodeid_out=${req.nodeidOut} fh_out=${req.fhOut} off_out=${req.offOut} len=${req.len}`;
    case 'statx':
      return `fh=${req.fh} sx_mask=0x${req.sxMask.toString(16)}`;
    case 'unknown':
      return `body=${req.body.length}B`;
  }
}
