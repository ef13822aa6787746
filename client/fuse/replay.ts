/**
 * Replay safety for resumed sessions (DESIGN.md section 3).
 *
 * After `FUSE_NOTIFY_RESEND` the kernel requeues every request the dead owner had read but
 * not answered, with bit 63 of `unique` set (`FUSE_UNIQUE_RESEND`). The dead owner may have
 * executed such a request before it died. Reads and lookups can simply run again; the
 * non-idempotent operations cannot: a replayed MKDIR that already ran would fail with
 * EEXIST, a replayed UNLINK with ENOENT, although the application's call succeeded.
 *
 * So before running a non-idempotent operation the server writes an *intent record* to the
 * checkpoint under `intent/<unique without bit 63>`, and deletes it once the reply is
 * written. The next owner, handed the checkpoint, resolves a replayed request that has an
 * intent record against the filesystem's own LOOKUP instead of running it blindly
 * (`resolveReplay`). A replayed request without an intent record never started: it runs
 * normally.
 *
 * Intent records of the previous generation that are never replayed belong to requests whose
 * reply did reach the kernel (the owner died between writing the reply and deleting the
 * record). The kernel requeues resent requests at the head of its pending queue, so they are
 * read before any request that arrived later; the first request without bit 63 (FORGET and
 * BATCH_FORGET aside, which the kernel queues separately and hands out first) therefore ends
 * the replay phase, and the remaining old records are deleted then (`ReplayGuard`).
 *
 * A record cannot tell "did it" from "found it so": a replayed MKDIR whose directory exists
 * would be answered success even if the directory was there before the request, and the
 * application owed EEXIST. So a request that will fail without changing anything, as the
 * filesystem stands before it runs, gets no record (`intentNeeded`): its replay runs again and
 * fails the same way.
 *
 * Limits, stated rather than hidden:
 * - The state looked at before a request runs is the filesystem's own view; a change made
 *   directly on what it serves (not through the mount) between that look and the request is
 *   not seen.
 * - RENAME_EXCHANGE leaves both names in place either way: a replayed one runs again.
 * - A truncating SETATTR runs again (truncating to the same size twice is the same), which
 *   also undoes writes made through passthrough between the crash and the replay.
 * - LINK is resolved as done only when the new name leads to `oldnodeid`, which holds for
 *   filesystems that give one nodeid per inode.
 * - SETXATTR with XATTR_CREATE is resolved as done when the attribute exists (whatever its
 *   value), REMOVEXATTR when it does not; other SETXATTRs run again (setting a value twice
 *   is setting it once).
 */
import { constants as fsc } from 'node:fs';
import { constants } from 'node:os';
import {
  FATTR,
  FUSE_ENTRY_OUT_SIZE,
  FUSE_OPEN_OUT_SIZE,
  FUSE_OUT_HEADER_SIZE,
  FUSE_UNIQUE_RESEND,
  Opcode,
  RENAME_EXCHANGE,
  RENAME_WHITEOUT,
  decodeAttr,
  writeOutHeader,
} from '../../kernel/abi.ts';
import type { SessionLink } from '../session.ts';
import { isResend, replyEmpty, type FuseRequest, type RequestHeader } from './codec.ts';
import { errnoOf } from './errors.ts';
import type { FuseLogger, FuseOperations, RequestContext } from './server.ts';

const { ENOENT } = constants.errno;
const S_IFMT = 0o170000;
const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const S_IFCHR = 0o020000;
const { O_CREAT, O_EXCL, O_TRUNC } = fsc;

/** Checkpoint keys of intent records start with this. */
export const INTENT_KEY_PREFIX = 'intent/';
/** Layout version of an encoded intent record, its first byte. */
export const INTENT_VERSION = 1;
/** version u8, pad u8 x3, opcode u32, nodeid u64, other u64, flags u32, name length u16, name2 length u16. */
const INTENT_HEAD = 32;

/** The checkpoint key of the intent record for request `unique` (bit 63 ignored). */
export function intentKey(unique: bigint): string {
  return `${INTENT_KEY_PREFIX}${unique & ~FUSE_UNIQUE_RESEND}`;
}

/**
 * What a non-idempotent request is about, as recorded before it runs. Decoded from the
 * checkpoint it identifies the request; a replay is matched by comparing the encoded bytes.
 */
export interface IntentRecord {
  /** FUSE opcode. */
  opcode: number;
  /** `header.nodeid`: the parent directory (for SETATTR and the xattr operations, the inode). */
  nodeid: bigint;
  /** RENAME/RENAME2: `newdir`; LINK: `oldnodeid`; SETATTR: the new size; else 0. */
  other: bigint;
  /** RENAME2: rename flags; CREATE: open flags; MKNOD/MKDIR: mode; SETATTR: `valid`; SETXATTR: its flags; else 0. */
  flags: number;
  /** The name the operation creates or removes (RENAME: the old name; LINK: the new name; xattrs: the attribute); empty for SETATTR. */
  name: Buffer;
  /** RENAME/RENAME2: the new name; else empty. */
  name2: Buffer;
}

const EMPTY = Buffer.alloc(0);

/** setxattr(2) flag: fail with EEXIST if the attribute exists. */
const XATTR_CREATE = 1;
const { ENODATA } = constants.errno;

/**
 * The intent record a request needs before it runs, or undefined when it needs none: only
 * CREATE, MKNOD, MKDIR, SYMLINK, LINK, UNLINK, RMDIR, RENAME, RENAME2, SETATTR with
 * FATTR_SIZE, SETXATTR with XATTR_CREATE and REMOVEXATTR get one.
 */
export function intentOf(req: FuseRequest): IntentRecord | undefined {
  const opcode = req.header.opcode;
  const nodeid = req.header.nodeid;
  switch (req.op) {
    case 'create':
      return { opcode, nodeid, other: 0n, flags: req.flags, name: req.nameBytes, name2: EMPTY };
    case 'mknod':
    case 'mkdir':
      return { opcode, nodeid, other: 0n, flags: req.mode, name: req.nameBytes, name2: EMPTY };
    case 'symlink':
    case 'unlink':
    case 'rmdir':
      return { opcode, nodeid, other: 0n, flags: 0, name: req.nameBytes, name2: EMPTY };
    case 'link':
      return { opcode, nodeid, other: req.oldnodeid, flags: 0, name: req.newnameBytes, name2: EMPTY };
    case 'rename':
    case 'rename2':
      return { opcode, nodeid, other: req.newdir, flags: req.flags, name: req.nameBytes, name2: req.newnameBytes };
    case 'setattr':
      return req.valid & FATTR.SIZE ? { opcode, nodeid, other: req.size, flags: req.valid, name: EMPTY, name2: EMPTY } : undefined;
    case 'setxattr':
      return req.flags & XATTR_CREATE ? { opcode, nodeid, other: 0n, flags: req.flags, name: req.nameBytes, name2: EMPTY } : undefined;
    case 'removexattr':
      return { opcode, nodeid, other: 0n, flags: 0, name: req.nameBytes, name2: EMPTY };
    default:
      return undefined;
  }
}

/** Encodes an intent record (at most 32 + 2 x 65535 bytes; FUSE names are at most 1024). */
export function encodeIntent(r: IntentRecord): Buffer {
  if (r.name.length > 0xffff || r.name2.length > 0xffff) throw new RangeError('intent record name longer than 65535 bytes');
  const buf = Buffer.alloc(INTENT_HEAD + r.name.length + r.name2.length);
  buf.writeUInt8(INTENT_VERSION, 0);
  buf.writeUInt32LE(r.opcode >>> 0, 4);
  buf.writeBigUInt64LE(BigInt.asUintN(64, r.nodeid), 8);
  buf.writeBigUInt64LE(BigInt.asUintN(64, r.other), 16);
  buf.writeUInt32LE(r.flags >>> 0, 24);
  buf.writeUInt16LE(r.name.length, 28);
  buf.writeUInt16LE(r.name2.length, 30);
  r.name.copy(buf, INTENT_HEAD);
  r.name2.copy(buf, INTENT_HEAD + r.name.length);
  return buf;
}

/** Decodes what `encodeIntent` wrote; RangeError for anything else. Names are copies. */
export function decodeIntent(buf: Buffer): IntentRecord {
  if (buf.length < INTENT_HEAD) throw new RangeError(`intent record of ${buf.length} bytes is shorter than its ${INTENT_HEAD}-byte header`);
  const version = buf.readUInt8(0);
  if (version !== INTENT_VERSION) throw new RangeError(`intent record version ${version}, expected ${INTENT_VERSION}`);
  if (buf.readUInt8(1) !== 0 || buf.readUInt16LE(2) !== 0) throw new RangeError('intent record has non-zero padding');
  const nameLen = buf.readUInt16LE(28);
  const name2Len = buf.readUInt16LE(30);
  if (buf.length !== INTENT_HEAD + nameLen + name2Len) {
    throw new RangeError(`intent record of ${buf.length} bytes announces names of ${nameLen} + ${name2Len} bytes`);
  }
  return {
    opcode: buf.readUInt32LE(4),
    nodeid: buf.readBigUInt64LE(8),
    other: buf.readBigUInt64LE(16),
    flags: buf.readUInt32LE(24),
    name: Buffer.from(buf.subarray(INTENT_HEAD, INTENT_HEAD + nameLen)),
    name2: Buffer.from(buf.subarray(INTENT_HEAD + nameLen)),
  };
}

/** The operations replay resolution calls: the filesystem's own LOOKUP, OPEN, FORGET and GETXATTR. */
export type ReplayOperations = Pick<FuseOperations, 'lookup' | 'open' | 'forget' | 'getxattr'>;

/** Whether inode `nodeid` has attribute `name`, by the filesystem's own GETXATTR (size query). */
async function hasXattr(ops: ReplayOperations, header: RequestHeader, nodeid: bigint, name: Buffer, ctx: RequestContext): Promise<boolean | undefined> {
  const getxattr = ops.getxattr;
  const result = await callOp(
    getxattr && (() => getxattr.call(ops, { op: 'getxattr', header: { ...header, opcode: Opcode.GETXATTR, nodeid }, size: 0, name: name.toString('utf8'), nameBytes: name }, ctx)),
  );
  if (typeof result !== 'number') return true;
  return result === ENODATA ? false : undefined;
}

/** A name found by LOOKUP: the complete LOOKUP reply (same `unique` as the replayed request). */
interface Found {
  reply: Buffer;
  nodeid: bigint;
  mode: number;
  rdev: number;
}

/** LOOKUP outcome: found, absent (ENOENT or a negative entry), or failed otherwise. */
type Probe = Found | 'absent' | 'failed';

async function callOp(fn: (() => Promise<Buffer | void> | Buffer | void) | undefined): Promise<Buffer | number> {
  if (!fn) return constants.errno.ENOSYS;
  try {
    const reply = await fn();
    if (!reply || reply.length < FUSE_OUT_HEADER_SIZE) return constants.errno.EIO;
    const error = reply.readInt32LE(4);
    return error === 0 ? reply : -error;
  } catch (err) {
    return errnoOf(err) ?? constants.errno.EIO;
  }
}

/**
 * Looks `name` up in `parent` through the filesystem's own LOOKUP, as part of replayed request
 * `header`. A found entry counts one lookup in the filesystem: either the reply carrying it
 * goes to the kernel (which will FORGET it), or `unlook` balances it.
 */
async function probe(ops: ReplayOperations, header: RequestHeader, parent: bigint, name: Buffer, ctx: RequestContext): Promise<Probe> {
  const lookup = ops.lookup;
  const result = await callOp(
    lookup && (() => lookup.call(ops, { op: 'lookup', header: { ...header, opcode: Opcode.LOOKUP, nodeid: parent }, name: name.toString('utf8'), nameBytes: name }, ctx)),
  );
  if (typeof result === 'number') return result === ENOENT ? 'absent' : 'failed';
  if (result.length < FUSE_OUT_HEADER_SIZE + FUSE_ENTRY_OUT_SIZE) return 'failed';
  const body = result.subarray(FUSE_OUT_HEADER_SIZE);
  const nodeid = body.readBigUInt64LE(0);
  // nodeid 0: a negative entry, the kernel's way of caching ENOENT.
  if (nodeid === 0n) return 'absent';
  const attr = decodeAttr(body, 40);
  return { reply: result, nodeid, mode: attr.mode, rdev: attr.rdev };
}

/** Gives back the lookup a probe counted, for an entry that does not go to the kernel. */
async function unlook(ops: ReplayOperations, header: RequestHeader, found: Probe, ctx: RequestContext): Promise<void> {
  if (typeof found === 'string' || !ops.forget) return;
  try {
    await ops.forget({ op: 'forget', header: { ...header, opcode: Opcode.FORGET, nodeid: found.nodeid }, nlookup: 1n }, ctx);
  } catch {
    // FORGET has no reply: a failing one changes nothing the kernel sees.
  }
}

function isType(p: Probe, type: number): p is Found {
  return typeof p !== 'string' && (p.mode & S_IFMT) === type;
}

/** A RENAME_WHITEOUT leaves a whiteout (a character device 0/0) under the old name. */
function isWhiteout(p: Probe): boolean {
  return isType(p, S_IFCHR) && p.rdev === 0;
}

/**
 * Resolves a replayed request (bit 63 set) whose intent record exists, i.e. that the dead
 * owner may have executed. Returns the reply to write, or undefined to run the operation
 * normally (it did not run, or whether it did cannot be told).
 *
 * - MKDIR, MKNOD, SYMLINK, LINK: when LOOKUP finds the name (with the type the operation
 *   creates; for LINK, the node `oldnodeid`), that LOOKUP reply is the answer.
 * - CREATE: when LOOKUP finds a regular file, OPEN it with the request's flags minus
 *   O_CREAT, O_EXCL and O_TRUNC (it was created, and truncated if asked, already) and answer
 *   entry + open; an OPEN error is the answer.
 * - UNLINK, RMDIR: when LOOKUP says ENOENT, success.
 * - RENAME, RENAME2: when the old name is gone (or a whiteout, for RENAME_WHITEOUT) and the
 *   new name exists, success. RENAME_EXCHANGE runs again.
 * - SETATTR (truncate): runs again.
 * - SETXATTR (XATTR_CREATE): when the attribute exists, success. REMOVEXATTR: when it does
 *   not (GETXATTR says ENODATA), success.
 *
 * Entries found but not answered are balanced with a FORGET of 1 to the filesystem, so its
 * lookup counts stay equal to the kernel's.
 */
export async function resolveReplay(req: FuseRequest, ops: ReplayOperations, ctx: RequestContext): Promise<Buffer | undefined> {
  const h = req.header;
  const entryIf = async (p: Probe, ok: (f: Found) => boolean): Promise<Buffer | undefined> => {
    if (typeof p !== 'string' && ok(p)) return p.reply;
    await unlook(ops, h, p, ctx);
    return undefined;
  };
  switch (req.op) {
    case 'mkdir':
      return entryIf(await probe(ops, h, h.nodeid, req.nameBytes, ctx), (f) => isType(f, S_IFDIR));
    case 'symlink':
      return entryIf(await probe(ops, h, h.nodeid, req.nameBytes, ctx), (f) => isType(f, S_IFLNK));
    case 'mknod': {
      const type = req.mode & S_IFMT || S_IFREG;
      return entryIf(await probe(ops, h, h.nodeid, req.nameBytes, ctx), (f) => isType(f, type));
    }
    case 'link':
      return entryIf(await probe(ops, h, h.nodeid, req.newnameBytes, ctx), (f) => f.nodeid === req.oldnodeid);
    case 'create': {
      const found = await probe(ops, h, h.nodeid, req.nameBytes, ctx);
      if (!isType(found, S_IFREG)) {
        await unlook(ops, h, found, ctx);
        return undefined;
      }
      const open = ops.open;
      const opened = await callOp(
        open && (() => open.call(ops, { op: 'open', header: { ...h, opcode: Opcode.OPEN, nodeid: found.nodeid }, flags: req.flags & ~(O_CREAT | O_EXCL | O_TRUNC), openFlags: req.openFlags }, ctx)),
      );
      if (typeof opened === 'number' || opened.length < FUSE_OUT_HEADER_SIZE + FUSE_OPEN_OUT_SIZE) {
        await unlook(ops, h, found, ctx);
        const errno = typeof opened === 'number' ? opened : constants.errno.EIO;
        const reply = Buffer.alloc(FUSE_OUT_HEADER_SIZE);
        writeOutHeader(reply, 0, FUSE_OUT_HEADER_SIZE, -errno, h.unique);
        return reply;
      }
      const reply = Buffer.alloc(FUSE_OUT_HEADER_SIZE + FUSE_ENTRY_OUT_SIZE + FUSE_OPEN_OUT_SIZE);
      writeOutHeader(reply, 0, reply.length, 0, h.unique);
      found.reply.copy(reply, FUSE_OUT_HEADER_SIZE, FUSE_OUT_HEADER_SIZE, FUSE_OUT_HEADER_SIZE + FUSE_ENTRY_OUT_SIZE);
      opened.copy(reply, FUSE_OUT_HEADER_SIZE + FUSE_ENTRY_OUT_SIZE, FUSE_OUT_HEADER_SIZE, FUSE_OUT_HEADER_SIZE + FUSE_OPEN_OUT_SIZE);
      return reply;
    }
    case 'unlink':
    case 'rmdir': {
      const found = await probe(ops, h, h.nodeid, req.nameBytes, ctx);
      if (found === 'absent') return replyEmpty(h.unique);
      await unlook(ops, h, found, ctx);
      return undefined;
    }
    case 'rename':
    case 'rename2': {
      if (req.flags & RENAME_EXCHANGE) return undefined;
      const from = await probe(ops, h, h.nodeid, req.nameBytes, ctx);
      const to = await probe(ops, h, req.newdir, req.newnameBytes, ctx);
      await unlook(ops, h, from, ctx);
      await unlook(ops, h, to, ctx);
      const gone = from === 'absent' || (req.flags & RENAME_WHITEOUT && isWhiteout(from));
      return gone && typeof to !== 'string' ? replyEmpty(h.unique) : undefined;
    }
    case 'setxattr':
      return (await hasXattr(ops, h, h.nodeid, req.nameBytes, ctx)) === true ? replyEmpty(h.unique) : undefined;
    case 'removexattr':
      return (await hasXattr(ops, h, h.nodeid, req.nameBytes, ctx)) === false ? replyEmpty(h.unique) : undefined;
    default:
      return undefined;
  }
}

/**
 * Whether `req`, a request intentOf gives a record, needs it written before it runs, by the
 * filesystem's own LOOKUP or GETXATTR now. It does not when it will fail without changing
 * anything: what it creates exists (MKDIR, MKNOD, SYMLINK, LINK: EEXIST; SETXATTR with
 * XATTR_CREATE: EEXIST), or what it removes or renames is absent (UNLINK, RMDIR, RENAME:
 * ENOENT; REMOVEXATTR: ENODATA). Nor does a CREATE whose name exists: it fails with O_EXCL,
 * and otherwise opens the file, which can be done twice. With a record, a replay of such a
 * request would find what it expects to have made, and answer success. The kernel holds the
 * directory's lock (the inode's, for attributes) from before it sends the request until it
 * has the reply, so no request through the mount changes the answer meanwhile. A look that
 * fails otherwise says a record is needed.
 */
export async function intentNeeded(req: FuseRequest, ops: ReplayOperations, ctx: RequestContext): Promise<boolean> {
  const h = req.header;
  /** Whether `name` is in `parent`; undefined when LOOKUP fails otherwise. */
  const exists = async (parent: bigint, name: Buffer): Promise<boolean | undefined> => {
    const found = await probe(ops, h, parent, name, ctx);
    await unlook(ops, h, found, ctx);
    return found === 'failed' ? undefined : found !== 'absent';
  };
  switch (req.op) {
    case 'mkdir':
    case 'mknod':
    case 'symlink':
    case 'create':
      return (await exists(h.nodeid, req.nameBytes)) !== true;
    case 'link':
      return (await exists(h.nodeid, req.newnameBytes)) !== true;
    case 'unlink':
    case 'rmdir':
    case 'rename':
    case 'rename2':
      return (await exists(h.nodeid, req.nameBytes)) !== false;
    case 'setxattr':
      return (await hasXattr(ops, h, h.nodeid, req.nameBytes, ctx)) !== true;
    case 'removexattr':
      return (await hasXattr(ops, h, h.nodeid, req.nameBytes, ctx)) !== false;
    default:
      return true;
  }
}

/** What `ReplayGuard.begin` decided for one request. */
export interface ReplayTicket {
  /** Intent record key: delete it (`end`) once the reply is written, if it was recorded. */
  readonly key: string | undefined;
  /** A replay whose intent record exists: resolve it with `resolveReplay` before running it. */
  readonly resolve: boolean;
  /**
   * The record a request about to run fresh needs first (`record`), if intentNeeded says so;
   * undefined when it needs none or is resolved.
   */
  readonly intent: Buffer | undefined;
}

const NO_TICKET: ReplayTicket = Object.freeze({ key: undefined, resolve: false, intent: undefined });

export interface ReplayGuardOptions {
  /** Where intent records go. Without it no records are written and nothing is resolved. */
  link?: SessionLink;
  /** The checkpoint the previous owner left (its `intent/` keys are considered). */
  previous?: ReadonlyMap<string, Buffer>;
  /**
   * Called with `unique` (bit 63 cleared) for each replayed request, before it runs. The
   * kernel requeues only requests it got no reply for, so whatever the previous owner handed
   * out only in its reply to `unique` (the file handle of an OPEN or CREATE) never reached
   * the kernel, and nothing will ever release it.
   */
  onReplayed?: (unique: bigint) => void;
  log?: FuseLogger;
}

/**
 * Writes and deletes intent records around non-idempotent requests, and tells which replayed
 * requests need resolving. Call `begin` for each request in the order read from /dev/fuse;
 * `record` the ticket's intent (where intentNeeded says so) before its handler runs; call
 * `end` with the ticket's key once its reply is written, if the record was written or the
 * request resolved.
 */
export class ReplayGuard {
  readonly #link: SessionLink | undefined;
  readonly #onReplayed: ((unique: bigint) => void) | undefined;
  readonly #log: FuseLogger | undefined;
  /** Intent records of the previous owner not replayed (yet), by key. */
  readonly #previous = new Map<string, Buffer>();
  #replaying = true;

  constructor(opts: ReplayGuardOptions) {
    this.#link = opts.link;
    this.#onReplayed = opts.onReplayed;
    this.#log = opts.log;
    for (const [key, value] of opts.previous ?? []) if (key.startsWith(INTENT_KEY_PREFIX)) this.#previous.set(key, value);
  }

  /** Intent records of the previous owner still waiting for their replay. */
  get pending(): number {
    return this.#previous.size;
  }

  /** True until the first request that is not a replay (FORGET/BATCH_FORGET aside). */
  get replaying(): boolean {
    return this.#replaying;
  }

  begin(req: FuseRequest): ReplayTicket {
    const unique = req.header.unique;
    const resent = isResend(unique);
    if (resent) this.#onReplayed?.(unique & ~FUSE_UNIQUE_RESEND);
    else if (this.#replaying && req.op !== 'forget' && req.op !== 'batch_forget') this.#endReplay();
    const link = this.#link;
    const intent = link && intentOf(req);
    if (!link || !intent) return NO_TICKET;
    const key = intentKey(unique);
    const encoded = encodeIntent(intent);
    if (resent) {
      const recorded = this.#previous.get(key);
      if (recorded) {
        this.#previous.delete(key);
        // The record stays in the checkpoint until the replay is answered: a crash meanwhile
        // leaves it for the next owner.
        if (recorded.equals(encoded)) return { key, resolve: true, intent: undefined };
        this.#log?.warn({ event: 'fuse.replay_intent_mismatch', key, op: req.op }, 'intent record does not match the replayed request; running it');
      }
    }
    return { key, resolve: false, intent: encoded };
  }

  /** Writes the intent record of `ticket` (one `begin` returned with an `intent`). */
  record(ticket: ReplayTicket): void {
    if (ticket.key === undefined || ticket.intent === undefined) return;
    try {
      this.#link?.checkpointPut(ticket.key, ticket.intent);
    } catch (err) {
      this.#log?.warn({ event: 'fuse.intent_not_recorded', key: ticket.key, err: String(err) }, 'intent record not sent; a replay of this request would run again');
    }
  }

  /** The reply for the ticket's request is written (or refused): its record goes. */
  end(key: string): void {
    try {
      this.#link?.checkpointDelete(key);
    } catch (err) {
      this.#log?.warn({ event: 'fuse.intent_not_deleted', key, err: String(err) }, 'intent record not deleted');
    }
  }

  #endReplay(): void {
    this.#replaying = false;
    for (const key of this.#previous.keys()) this.end(key);
    if (this.#previous.size > 0) this.#log?.info({ event: 'fuse.replay_done', stale: this.#previous.size }, 'replay phase over; deleted intent records that were answered before the crash');
    this.#previous.clear();
  }
}
