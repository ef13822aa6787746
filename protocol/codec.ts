// encodeMessage / decodeMessage: whole frames, header included. Pure: Buffers in, values out.
//
// Fds never pass through here. The sender attaches exactly `messageType(type).fds` fds to the
// frame; the receiver passes the number of fds that arrived to decodeMessage, which rejects a
// wrong count. Whoever received a rejected frame closes every fd that came with it.
import { ERRNO, isErrnoCode, ProtocolError, type ProtocolErrorReason } from './errors.ts';
import { FieldFailure, FieldReader, FieldWriter } from './fields.ts';
import {
  CHECKPOINT_ENTRY_OVERHEAD,
  ERROR_CODE_PATTERN,
  HEADER_SIZE,
  JOURNAL_ENTRY_SIZE,
  MAGIC,
  MAX_ADOPT_CHUNK,
  MAX_BACKING_ID,
  MAX_CHECKPOINT_BYTES,
  MAX_CHECKPOINT_FILE_ENTRIES,
  MAX_CHECKPOINT_VALUE,
  MAX_ERRNO,
  MAX_ERROR_MESSAGE,
  MAX_INIT_PARAMS,
  MAX_JOURNAL_CHUNK,
  MAX_JOURNAL_FILE_ENTRIES,
  MAX_KEY_BYTES,
  MAX_LABEL_BYTES,
  MAX_MESSAGE,
  MAX_NAME_BYTES,
  MAX_PATH_BYTES,
  MAX_STATUS_JSON,
  MOUNT_ALLOW_OTHER,
  MOUNT_DEFAULT_PERMISSIONS,
  MOUNT_FLAGS_MASK,
  MOUNT_LABEL_PATTERN,
  MOUNT_READ_ONLY,
  PROTOCOL_VERSION,
} from './limits.ts';
import {
  messageType,
  messageTypeByCode,
  sentByClient,
  type CleanupStrategy,
  type ControlMessage,
  type JournalEntry,
  type MessageName,
  type MessageTypeInfo,
  type MountSpec,
  type Role,
} from './messages.ts';
import { invalidEntryIndex, JournalEntries } from './journal.ts';
import { isCanonicalMountpoint, isValidCheckpointKey, isValidSessionName } from './names.ts';

/** The decoded 16-byte header. */
export interface FrameHeader {
  magic: number;
  version: number;
  typeCode: number;
  flags: number;
  reserved: number;
  requestId: number;
  payloadLength: number;
}

/** What decodeMessage returns. It never throws. */
export type DecodeResult =
  | { ok: true; message: ControlMessage; requestId: number }
  | { ok: false; error: ProtocolError };

export interface DecodeOptions {
  /**
   * Who is expected to have sent the frame: the supervisor decodes with `'client'` (only
   * requests and one-way messages), clients with `'supervisor'` (only replies and
   * notifications). Anything else is rejected as 'wrong direction'. Default: no check.
   */
  from?: 'client' | 'supervisor';
  /**
   * JOURNAL_ENTRIES: give `entries` packed (a JournalEntries over one copy of the payload)
   * rather than an array of objects. Default false.
   */
  packedJournal?: boolean;
}

const ROLE_CODES: Record<Role, number> = { daemon: 1, cli: 2 };
const ROLES: readonly (Role | undefined)[] = [undefined, 'daemon', 'cli'];
const STRATEGY_CODES: Record<CleanupStrategy, number> = { none: 0, journal: 1, 'close-all': 2 };
const STRATEGIES: readonly CleanupStrategy[] = ['none', 'journal', 'close-all'];
const U64_MAX = (1n << 64n) - 1n;

// ---------------------------------------------------------------------------------------------
// Header

function writeHeader(buf: Buffer, typeCode: number, requestId: number, payloadLength: number): void {
  buf.writeUInt16LE(MAGIC, 0);
  buf.writeUInt8(PROTOCOL_VERSION, 2);
  buf.writeUInt8(typeCode, 3);
  buf.writeUInt16LE(0, 4);
  buf.writeUInt16LE(0, 6);
  buf.writeUInt32LE(requestId, 8);
  buf.writeUInt32LE(payloadLength, 12);
}

/** Reads the header fields of `data` without validating them (needs HEADER_SIZE bytes). */
export function readHeader(data: Buffer): FrameHeader | undefined {
  if (data.length < HEADER_SIZE) return undefined;
  return {
    magic: data.readUInt16LE(0),
    version: data.readUInt8(2),
    typeCode: data.readUInt8(3),
    flags: data.readUInt16LE(4),
    reserved: data.readUInt16LE(6),
    requestId: data.readUInt32LE(8),
    payloadLength: data.readUInt32LE(12),
  };
}

/**
 * Why `requestId` is wrong for a message of `info` (ack: the CHECKPOINT_PUT/DELETE ack flag),
 * or undefined when it is right.
 */
function requestIdProblem(info: MessageTypeInfo, requestId: number, ack: boolean | undefined): string | undefined {
  if (ack !== undefined) {
    if (ack && requestId === 0) return `${info.label} with ack needs a requestId`;
    if (!ack && requestId !== 0) return `${info.label} without ack must have requestId 0`;
    return undefined;
  }
  switch (info.direction) {
    case 'request':
      return requestId === 0 ? `${info.label} is a request: requestId must not be 0` : undefined;
    case 'reply':
      // ERROR with requestId 0 answers a frame that could not be attributed to a request.
      return requestId === 0 && info.name !== 'error' ? `${info.label} is a reply: requestId must not be 0` : undefined;
    case 'one-way':
    case 'notify':
      return requestId !== 0 ? `${info.label} is ${info.direction}: requestId must be 0` : undefined;
  }
}

// ---------------------------------------------------------------------------------------------
// Encoding

function writeName(w: FieldWriter, name: string): void {
  if (typeof name !== 'string' || !isValidSessionName(name)) throw new ProtocolError('EINVAL', 'invalid name', `session name ${JSON.stringify(name)}`);
  w.string(name, 'name', MAX_NAME_BYTES, 'invalid name');
}

function writeKey(w: FieldWriter, key: string): void {
  if (typeof key !== 'string' || !isValidCheckpointKey(key)) throw new ProtocolError('EINVAL', 'invalid key', `checkpoint key must be 1..${MAX_KEY_BYTES} bytes of UTF-8 without NUL`);
  w.string(key, 'key', MAX_KEY_BYTES, 'invalid key');
}

/** The smallest checkpoint entry: a 1-byte key and an empty value. */
const MIN_CHECKPOINT_ENTRY_SIZE = CHECKPOINT_ENTRY_OVERHEAD + 1;

/** Bytes `key` and `value` take in a CHECKPOINT_FILE, and in a session's checkpoint budget. */
export function checkpointEntrySize(key: string, value: Uint8Array): number {
  return CHECKPOINT_ENTRY_OVERHEAD + Buffer.byteLength(key, 'utf8') + value.length;
}

/**
 * The contents of a CHECKPOINT_FILE holding `checkpoint`: every entry laid out as a
 * CHECKPOINT_ENTRY payload (u16 key length, key, u32 value length, value), back to back, in
 * the map's order. Throws ProtocolError EINVAL for an empty checkpoint, a key or value one
 * CHECKPOINT_ENTRY could not carry, or more than MAX_CHECKPOINT_BYTES in all.
 */
export function encodeCheckpointFile(checkpoint: ReadonlyMap<string, Uint8Array>): Buffer {
  if (checkpoint.size === 0) throw new ProtocolError('EINVAL', 'invalid value', 'CHECKPOINT_FILE carries at least one entry');
  let size = 0;
  for (const [key, value] of checkpoint) {
    if (typeof key !== 'string' || !isValidCheckpointKey(key)) throw new ProtocolError('EINVAL', 'invalid key', `checkpoint key must be 1..${MAX_KEY_BYTES} bytes of UTF-8 without NUL`);
    if (!(value instanceof Uint8Array)) throw new ProtocolError('EINVAL', 'invalid value', `value of ${JSON.stringify(key)} must be a Buffer`);
    if (value.length > MAX_CHECKPOINT_VALUE) throw new ProtocolError('EINVAL', 'oversized', `value of ${JSON.stringify(key)} is ${value.length} bytes, limit ${MAX_CHECKPOINT_VALUE}`);
    size += checkpointEntrySize(key, value);
  }
  if (size > MAX_CHECKPOINT_BYTES) throw new ProtocolError('EINVAL', 'oversized', `checkpoint of ${size} bytes, limit ${MAX_CHECKPOINT_BYTES}`);
  const out = Buffer.allocUnsafe(size);
  let at = 0;
  for (const [key, value] of checkpoint) {
    const keyBytes = out.write(key, at + 2, 'utf8');
    out.writeUInt16LE(keyBytes, at);
    at += 2 + keyBytes;
    out.writeUInt32LE(value.length, at);
    out.set(value, at + 4);
    at += 4 + value.length;
  }
  return out;
}

/**
 * The `count` entries of a CHECKPOINT_FILE's contents, checked like CHECKPOINT_ENTRY payloads
 * (key, value size), each key once, the bytes consumed exactly. Values are copies. Throws
 * ProtocolError EPROTO with the decoder's reason.
 */
export function decodeCheckpointFile(bytes: Buffer, count: number): Map<string, Buffer> {
  const r = new FieldReader(bytes, 0, bytes.length);
  const out = new Map<string, Buffer>();
  try {
    for (let i = 0; i < count; i++) {
      const key = readKey(r);
      const value = r.bytes('value', MAX_CHECKPOINT_VALUE);
      if (out.has(key)) fail('invalid value', `checkpoint key ${JSON.stringify(key)} twice`);
      out.set(key, value);
    }
    r.end();
  } catch (err) {
    if (err instanceof FieldFailure) throw new ProtocolError('EPROTO', err.reason, `CHECKPOINT_FILE entry ${out.size}: ${err.detail}`);
    throw err;
  }
  return out;
}

function writeMount(w: FieldWriter, m: MountSpec): void {
  if (typeof m !== 'object' || m === null) throw new ProtocolError('EINVAL', 'invalid value', 'mount spec missing');
  if (typeof m.mountpoint !== 'string' || !isCanonicalMountpoint(m.mountpoint)) {
    throw new ProtocolError('EINVAL', 'invalid path', `mountpoint ${JSON.stringify(m.mountpoint)} is not a canonical absolute path`);
  }
  w.string(m.mountpoint, 'mountpoint', MAX_PATH_BYTES, 'invalid path');
  for (const [what, v] of [['fsName', m.fsName], ['subtype', m.subtype]] as const) {
    if (typeof v !== 'string' || !MOUNT_LABEL_PATTERN.test(v)) throw new ProtocolError('EINVAL', 'invalid value', `${what} ${JSON.stringify(v)}: use 1-64 of [A-Za-z0-9_.@:+-]`);
    w.string(v, what, 64, 'invalid value');
  }
  w.u32(m.rootMode, 'rootMode');
  w.u32(m.uid, 'uid');
  w.u32(m.gid, 'gid');
  for (const [what, v] of [['allowOther', m.allowOther], ['defaultPermissions', m.defaultPermissions], ['readOnly', m.readOnly]] as const) {
    if (typeof v !== 'boolean') throw new ProtocolError('EINVAL', 'invalid value', `${what} must be a boolean`);
  }
  w.u32((m.allowOther ? MOUNT_ALLOW_OTHER : 0) | (m.defaultPermissions ? MOUNT_DEFAULT_PERMISSIONS : 0) | (m.readOnly ? MOUNT_READ_ONLY : 0), 'flags');
  w.u32(m.maxRead, 'maxRead');
}

function writeBackingId(w: FieldWriter, id: number, what: string): void {
  w.u32(id, what, 1, MAX_BACKING_ID);
}

function writePayload(w: FieldWriter, msg: ControlMessage): void {
  switch (msg.type) {
    case 'hello':
      w.u16(msg.minVersion, 'minVersion');
      w.u16(msg.maxVersion, 'maxVersion');
      if (msg.minVersion < 1 || msg.minVersion > msg.maxVersion) throw new ProtocolError('EINVAL', 'invalid value', 'need 1 <= minVersion <= maxVersion');
      if (!Object.prototype.hasOwnProperty.call(ROLE_CODES, msg.role)) throw new ProtocolError('EINVAL', 'invalid value', `role ${String(msg.role)}`);
      w.u8(ROLE_CODES[msg.role], 'role');
      w.string(msg.clientName, 'clientName', MAX_LABEL_BYTES);
      return;
    case 'hello_ok':
      w.u16(msg.version, 'version');
      if (msg.version < 1) throw new ProtocolError('EINVAL', 'invalid value', 'version must be >= 1');
      w.string(msg.supervisorVersion, 'supervisorVersion', MAX_LABEL_BYTES);
      w.u32(msg.features, 'features');
      return;
    case 'acquire':
      writeName(w, msg.name);
      writeMount(w, msg.mount);
      w.bool(msg.standby, 'standby');
      return;
    case 'acquired':
      w.u32(msg.generation, 'generation', 1);
      w.bool(msg.resumed, 'resumed');
      if (!Object.prototype.hasOwnProperty.call(STRATEGY_CODES, msg.strategy)) throw new ProtocolError('EINVAL', 'invalid value', `strategy ${String(msg.strategy)}`);
      w.u8(STRATEGY_CODES[msg.strategy], 'strategy');
      return;
    case 'init_params':
    case 'init_save':
      w.bytes(msg.params, 'params', MAX_INIT_PARAMS);
      return;
    case 'checkpoint_entry':
      writeKey(w, msg.key);
      w.bytes(msg.value, 'value', MAX_CHECKPOINT_VALUE);
      return;
    case 'journal_entries':
      if (msg.entries instanceof JournalEntries) throw new Error('unreachable: encodeMessage encodes packed entries itself');
      w.count(msg.entries.length, 'entries', MAX_JOURNAL_CHUNK);
      for (const e of msg.entries) {
        writeBackingId(w, e.id, 'entry id');
        w.u64(e.dev, 'entry dev');
        w.u64(e.ino, 'entry ino');
      }
      return;
    case 'journal_file':
      w.count(msg.count, 'entries', MAX_JOURNAL_FILE_ENTRIES);
      if (msg.count < 1) throw new ProtocolError('EINVAL', 'invalid value', 'JOURNAL_FILE carries at least one entry');
      return;
    case 'checkpoint_file':
      w.count(msg.count, 'entries', MAX_CHECKPOINT_FILE_ENTRIES);
      if (msg.count < 1) throw new ProtocolError('EINVAL', 'invalid value', 'CHECKPOINT_FILE carries at least one entry');
      if (msg.size > MAX_CHECKPOINT_BYTES) throw new ProtocolError('EINVAL', 'oversized', `CHECKPOINT_FILE of ${msg.size} bytes, limit ${MAX_CHECKPOINT_BYTES}`);
      if (msg.size < msg.count * MIN_CHECKPOINT_ENTRY_SIZE) throw new ProtocolError('EINVAL', 'invalid value', `${msg.count} entries do not fit ${msg.size} bytes`);
      w.u32(msg.size, 'size');
      return;
    case 'state_end':
      w.u32(msg.checkpointCount, 'checkpointCount');
      w.u32(msg.journalCount, 'journalCount');
      w.bool(msg.initParams, 'initParams');
      return;
    case 'store':
      writeName(w, msg.name);
      writeMount(w, msg.mount);
      return;
    case 'stored':
      w.u32(msg.generation, 'generation', 1);
      return;
    case 'journal_open':
      writeBackingId(w, msg.id, 'id');
      w.u64(msg.dev, 'dev');
      w.u64(msg.ino, 'ino');
      return;
    case 'journal_close':
      writeBackingId(w, msg.id, 'id');
      return;
    case 'adopt':
      w.bool(msg.more, 'more');
      w.count(msg.ids.length, 'ids', MAX_ADOPT_CHUNK);
      for (const id of msg.ids) writeBackingId(w, id, 'adopted id');
      return;
    case 'adopted':
      w.u32(msg.closed, 'closed');
      w.u32(msg.probed, 'probed');
      return;
    case 'checkpoint_put':
      w.bool(msg.ack, 'ack');
      writeKey(w, msg.key);
      w.bytes(msg.value, 'value', MAX_CHECKPOINT_VALUE);
      return;
    case 'checkpoint_delete':
      w.bool(msg.ack, 'ack');
      writeKey(w, msg.key);
      return;
    case 'release':
    case 'drain':
      writeName(w, msg.name);
      return;
    case 'status_reply':
      w.longString(msg.json, 'json', MAX_STATUS_JSON);
      return;
    case 'error': {
      w.u32(msg.errno, 'errno', 1, MAX_ERRNO);
      if (typeof msg.code !== 'string' || !ERROR_CODE_PATTERN.test(msg.code)) throw new ProtocolError('EINVAL', 'invalid value', `error code ${JSON.stringify(msg.code)}`);
      if (isErrnoCode(msg.code) && ERRNO[msg.code] !== msg.errno) throw new ProtocolError('EINVAL', 'invalid value', `${msg.code} is errno ${ERRNO[msg.code]}, not ${msg.errno}`);
      w.string(msg.code, 'code', 32);
      w.string(msg.message, 'message', MAX_ERROR_MESSAGE);
      return;
    }
    case 'heartbeat':
    case 'status':
    case 'drain_request':
    case 'drained':
    case 'ok':
      return;
    default: {
      const never: never = msg;
      throw new ProtocolError('EINVAL', 'unknown type', `message type ${JSON.stringify((never as { type?: unknown }).type)}`);
    }
  }
}

/**
 * Encodes one frame. `requestId` must be non-zero for requests and replies (ERROR may use 0),
 * and for CHECKPOINT_PUT/DELETE with `ack`; 0 for one-way messages and notifications. Send the
 * result with exactly `messageType(msg.type).fds` fds attached. Throws ProtocolError (code
 * EINVAL) for a value the wire cannot carry and for a frame larger than MAX_MESSAGE.
 */
export function encodeMessage(msg: ControlMessage, requestId = 0): Buffer {
  if (typeof msg !== 'object' || msg === null) throw new ProtocolError('EINVAL', 'invalid value', 'message must be an object');
  let info: MessageTypeInfo;
  try {
    info = messageType(msg.type);
  } catch {
    throw new ProtocolError('EINVAL', 'unknown type', `message type ${JSON.stringify(msg.type)}`);
  }
  if (!Number.isInteger(requestId) || requestId < 0 || requestId > 0xffffffff) throw new ProtocolError('EINVAL', 'bad request id', `requestId ${requestId}`);
  if (msg.type === 'journal_open') {
    if (requestId !== 0) throw new ProtocolError('EINVAL', 'bad request id', 'JOURNAL_OPEN is one-way: requestId must be 0');
    return encodeJournalOpen(msg.id, msg.dev, msg.ino);
  }
  const ack = msg.type === 'checkpoint_put' || msg.type === 'checkpoint_delete' ? msg.ack : undefined;
  const problem = requestIdProblem(info, requestId, ack);
  if (problem) throw new ProtocolError('EINVAL', 'bad request id', problem);
  if (msg.type === 'journal_entries' && msg.entries instanceof JournalEntries) return encodePackedEntries(msg.entries, requestId);
  const w = new FieldWriter();
  writePayload(w, msg);
  return w.finish(info.code, requestId, writeHeader);
}

const JOURNAL_ENTRIES_CODE = messageType('journal_entries').code;

/** JOURNAL_ENTRIES from packed entries (valid by construction): one allocation and one copy. */
function encodePackedEntries(entries: JournalEntries, requestId: number): Buffer {
  const n = entries.length;
  if (n > MAX_JOURNAL_CHUNK) throw new ProtocolError('EINVAL', 'oversized', `entries count ${n}, limit ${MAX_JOURNAL_CHUNK}`);
  const payload = 4 + n * JOURNAL_ENTRY_SIZE;
  const b = Buffer.allocUnsafe(HEADER_SIZE + payload);
  writeHeader(b, JOURNAL_ENTRIES_CODE, requestId, payload);
  b.writeUInt32LE(n, HEADER_SIZE);
  entries.bytes.copy(b, HEADER_SIZE + 4);
  return b;
}

const JOURNAL_OPEN_CODE = messageType('journal_open').code;
const JOURNAL_CLOSE_CODE = messageType('journal_close').code;
const JOURNAL_OPEN_SIZE = HEADER_SIZE + JOURNAL_ENTRY_SIZE;

function checkBackingId(id: number): void {
  if (!Number.isInteger(id) || id < 1 || id > MAX_BACKING_ID) throw new ProtocolError('EINVAL', 'invalid value', `backing id must be an integer in 1..${MAX_BACKING_ID}, got ${String(id)}`);
}

function checkU64(v: bigint, what: string): void {
  if (typeof v !== 'bigint' || v < 0n || v > U64_MAX) throw new ProtocolError('EINVAL', 'invalid value', `${what} must be a bigint in 0..2^64-1`);
}

/**
 * JOURNAL_OPEN, the hot path: one Buffer.allocUnsafe of exactly 36 bytes, no scratch copy.
 * Same bytes as encodeMessage({ type: 'journal_open', id, dev, ino }).
 */
export function encodeJournalOpen(id: number, dev: bigint, ino: bigint): Buffer {
  checkBackingId(id);
  checkU64(dev, 'dev');
  checkU64(ino, 'ino');
  const b = Buffer.allocUnsafe(JOURNAL_OPEN_SIZE);
  writeHeader(b, JOURNAL_OPEN_CODE, 0, JOURNAL_ENTRY_SIZE);
  b.writeUInt32LE(id, 16);
  b.writeBigUInt64LE(dev, 20);
  b.writeBigUInt64LE(ino, 28);
  return b;
}

/**
 * JOURNAL_OPEN from an entry already in the wire layout, `entry[offset..offset+20)` (e.g. a
 * JournalStore slot): same bytes as encodeJournalOpen of its id, dev and ino.
 */
export function encodeJournalOpenWire(entry: Buffer, offset = 0): Buffer {
  if (offset < 0 || offset + JOURNAL_ENTRY_SIZE > entry.length) throw new ProtocolError('EINVAL', 'invalid value', 'a journal entry is 20 bytes');
  checkBackingId(entry.readUInt32LE(offset));
  const b = Buffer.allocUnsafe(JOURNAL_OPEN_SIZE);
  writeHeader(b, JOURNAL_OPEN_CODE, 0, JOURNAL_ENTRY_SIZE);
  entry.copy(b, HEADER_SIZE, offset, offset + JOURNAL_ENTRY_SIZE);
  return b;
}

/**
 * True when `data`, received with `fdCount` fds, is a JOURNAL_OPEN frame that decodeMessage
 * would accept (from a client); its payload, at HEADER_SIZE, is then one journal entry in the
 * wire layout. Lets the receiver record it without decoding dev and ino into BigInts. False
 * for anything else: decode that with decodeMessage.
 */
export function isJournalOpenFrame(data: Buffer, fdCount: number): boolean {
  if (fdCount !== 0 || data.length !== JOURNAL_OPEN_SIZE || data[3] !== JOURNAL_OPEN_CODE) return false;
  if (data.readUInt16LE(0) !== MAGIC || data[2] !== PROTOCOL_VERSION || data.readUInt32LE(4) !== 0 || data.readUInt32LE(8) !== 0) return false;
  if (data.readUInt32LE(12) !== JOURNAL_ENTRY_SIZE) return false;
  const id = data.readUInt32LE(HEADER_SIZE);
  return id >= 1 && id <= MAX_BACKING_ID;
}

/** JOURNAL_CLOSE: one allocation of exactly 20 bytes. */
export function encodeJournalClose(id: number): Buffer {
  checkBackingId(id);
  const b = Buffer.allocUnsafe(HEADER_SIZE + 4);
  writeHeader(b, JOURNAL_CLOSE_CODE, 0, 4);
  b.writeUInt32LE(id, 16);
  return b;
}

// ---------------------------------------------------------------------------------------------
// Decoding

function fail(reason: ProtocolErrorReason, detail: string): never {
  throw new FieldFailure(reason, detail);
}

function readName(r: FieldReader): string {
  const name = r.string('name', MAX_NAME_BYTES, 'invalid name');
  if (!isValidSessionName(name)) fail('invalid name', `session name ${JSON.stringify(name)}`);
  return name;
}

function readKey(r: FieldReader): string {
  const key = r.string('key', MAX_KEY_BYTES, 'invalid key');
  if (key.length === 0) fail('invalid key', 'empty checkpoint key');
  return key;
}

function readMount(r: FieldReader): MountSpec {
  const mountpoint = r.string('mountpoint', MAX_PATH_BYTES, 'invalid path');
  if (!isCanonicalMountpoint(mountpoint)) fail('invalid path', `mountpoint ${JSON.stringify(mountpoint)} is not a canonical absolute path`);
  const fsName = r.string('fsName', 64, 'invalid value');
  if (!MOUNT_LABEL_PATTERN.test(fsName)) fail('invalid value', `fsName ${JSON.stringify(fsName)}`);
  const subtype = r.string('subtype', 64, 'invalid value');
  if (!MOUNT_LABEL_PATTERN.test(subtype)) fail('invalid value', `subtype ${JSON.stringify(subtype)}`);
  const rootMode = r.u32('rootMode');
  const uid = r.u32('uid');
  const gid = r.u32('gid');
  const flags = r.u32('flags');
  if ((flags & ~MOUNT_FLAGS_MASK) !== 0) fail('invalid value', `unknown mount flags 0x${flags.toString(16)}`);
  const maxRead = r.u32('maxRead');
  return {
    mountpoint,
    fsName,
    subtype,
    rootMode,
    uid,
    gid,
    allowOther: (flags & MOUNT_ALLOW_OTHER) !== 0,
    defaultPermissions: (flags & MOUNT_DEFAULT_PERMISSIONS) !== 0,
    readOnly: (flags & MOUNT_READ_ONLY) !== 0,
    maxRead,
  };
}

function readBackingId(r: FieldReader, what: string): number {
  return r.u32In(what, 1, MAX_BACKING_ID);
}

type PayloadReader = (r: FieldReader) => ControlMessage;

/** JOURNAL_ENTRIES with DecodeOptions.packedJournal: one copy of the entries, ids checked in place. */
function readPackedJournal(r: FieldReader): ControlMessage {
  const n = r.count('entries', MAX_JOURNAL_CHUNK, JOURNAL_ENTRY_SIZE);
  const bytes = r.copy(n * JOURNAL_ENTRY_SIZE, 'entries');
  const bad = invalidEntryIndex(bytes, n);
  if (bad >= 0) fail('invalid value', `entry id ${bytes.readUInt32LE(bad * JOURNAL_ENTRY_SIZE)} outside 1..${MAX_BACKING_ID}`);
  return { type: 'journal_entries', entries: JournalEntries.trusted(bytes) };
}

/** One payload reader per message; the Record type makes the table exhaustive. */
const READERS: Record<MessageName, PayloadReader> = {
  hello(r) {
    const minVersion = r.u16('minVersion');
    const maxVersion = r.u16('maxVersion');
    if (minVersion < 1 || minVersion > maxVersion) fail('invalid value', `versions ${minVersion}..${maxVersion}`);
    const roleCode = r.u8('role');
    const role = ROLES[roleCode];
    if (role === undefined) fail('invalid value', `role ${roleCode}`);
    const clientName = r.string('clientName', MAX_LABEL_BYTES);
    return { type: 'hello', minVersion, maxVersion, role, clientName };
  },
  hello_ok(r) {
    const version = r.u16('version');
    if (version < 1) fail('invalid value', 'version 0');
    const supervisorVersion = r.string('supervisorVersion', MAX_LABEL_BYTES);
    const features = r.u32('features');
    return { type: 'hello_ok', version, supervisorVersion, features };
  },
  acquire(r) {
    const name = readName(r);
    const mount = readMount(r);
    const standby = r.bool('standby');
    return { type: 'acquire', name, mount, standby };
  },
  acquired(r) {
    const generation = r.u32In('generation', 1, 0xffffffff);
    const resumed = r.bool('resumed');
    const code = r.u8('strategy');
    const strategy = STRATEGIES[code];
    if (strategy === undefined) fail('invalid value', `strategy ${code}`);
    return { type: 'acquired', generation, resumed, strategy };
  },
  init_params(r) {
    return { type: 'init_params', params: r.bytes('params', MAX_INIT_PARAMS) };
  },
  checkpoint_entry(r) {
    const key = readKey(r);
    const value = r.bytes('value', MAX_CHECKPOINT_VALUE);
    return { type: 'checkpoint_entry', key, value };
  },
  journal_entries(r) {
    const n = r.count('entries', MAX_JOURNAL_CHUNK, JOURNAL_ENTRY_SIZE);
    const entries: JournalEntry[] = new Array<JournalEntry>(n);
    for (let i = 0; i < n; i++) {
      const id = readBackingId(r, 'entry id');
      const dev = r.u64('entry dev');
      const ino = r.u64('entry ino');
      entries[i] = { id, dev, ino };
    }
    return { type: 'journal_entries', entries };
  },
  journal_file(r) {
    return { type: 'journal_file', count: r.outOfBandCount('entries', MAX_JOURNAL_FILE_ENTRIES) };
  },
  checkpoint_file(r) {
    const count = r.outOfBandCount('entries', MAX_CHECKPOINT_FILE_ENTRIES);
    const size = r.u32('size');
    if (size > MAX_CHECKPOINT_BYTES) fail('oversized', `size ${size}, limit ${MAX_CHECKPOINT_BYTES}`);
    if (size < count * MIN_CHECKPOINT_ENTRY_SIZE) fail('invalid value', `${count} entries do not fit ${size} bytes`);
    return { type: 'checkpoint_file', count, size };
  },
  state_end(r) {
    const checkpointCount = r.u32('checkpointCount');
    const journalCount = r.u32('journalCount');
    const initParams = r.bool('initParams');
    return { type: 'state_end', initParams, checkpointCount, journalCount };
  },
  store(r) {
    const name = readName(r);
    const mount = readMount(r);
    return { type: 'store', name, mount };
  },
  stored(r) {
    return { type: 'stored', generation: r.u32In('generation', 1, 0xffffffff) };
  },
  init_save(r) {
    return { type: 'init_save', params: r.bytes('params', MAX_INIT_PARAMS) };
  },
  journal_open(r) {
    const id = readBackingId(r, 'id');
    const dev = r.u64('dev');
    const ino = r.u64('ino');
    return { type: 'journal_open', id, dev, ino };
  },
  journal_close(r) {
    return { type: 'journal_close', id: readBackingId(r, 'id') };
  },
  adopt(r) {
    const more = r.bool('more');
    const n = r.count('ids', MAX_ADOPT_CHUNK, 4);
    const ids = new Array<number>(n);
    for (let i = 0; i < n; i++) ids[i] = readBackingId(r, 'adopted id');
    return { type: 'adopt', more, ids };
  },
  adopted(r) {
    const closed = r.u32('closed');
    const probed = r.u32('probed');
    return { type: 'adopted', closed, probed };
  },
  checkpoint_put(r) {
    const ack = r.bool('ack');
    const key = readKey(r);
    const value = r.bytes('value', MAX_CHECKPOINT_VALUE);
    return { type: 'checkpoint_put', ack, key, value };
  },
  checkpoint_delete(r) {
    const ack = r.bool('ack');
    const key = readKey(r);
    return { type: 'checkpoint_delete', ack, key };
  },
  heartbeat: () => ({ type: 'heartbeat' }),
  release: (r) => ({ type: 'release', name: readName(r) }),
  status: () => ({ type: 'status' }),
  status_reply: (r) => ({ type: 'status_reply', json: r.longString('json', MAX_STATUS_JSON) }),
  drain: (r) => ({ type: 'drain', name: readName(r) }),
  drain_request: () => ({ type: 'drain_request' }),
  drained: () => ({ type: 'drained' }),
  ok: () => ({ type: 'ok' }),
  error(r) {
    const errno = r.u32In('errno', 1, MAX_ERRNO);
    const code = r.string('code', 32, 'invalid value');
    if (!ERROR_CODE_PATTERN.test(code)) fail('invalid value', `error code ${JSON.stringify(code)}`);
    if (isErrnoCode(code) && ERRNO[code] !== errno) fail('invalid value', `${code} is errno ${ERRNO[code]}, not ${errno}`);
    const message = r.string('message', MAX_ERROR_MESSAGE);
    return { type: 'error', errno, code, message };
  },
};

function reject(reason: ProtocolErrorReason, detail: string, requestId = 0, typeCode = -1): DecodeResult {
  return { ok: false, error: new ProtocolError('EPROTO', reason, detail, requestId, typeCode) };
}

/**
 * Decodes one frame that arrived with `fdCount` fds (count every fd that arrived, including
 * any the transport already closed for lack of room). Never throws: anything malformed comes
 * back as `{ ok: false, error }` with `error.code === 'EPROTO'`; then the caller closes every
 * fd of the frame. On success the caller owns the fds (exactly `messageType(type).fds`).
 */
export function decodeMessage(data: Buffer, fdCount: number, options?: DecodeOptions): DecodeResult {
  try {
    return decodeFrame(data, fdCount, options);
  } catch (err) {
    if (err instanceof FieldFailure) return reject(err.reason, err.detail);
    return reject('internal error', err instanceof Error ? err.message : String(err));
  }
}

function decodeFrame(input: Buffer, fdCount: number, options: DecodeOptions | undefined): DecodeResult {
  if (!(input instanceof Uint8Array)) return reject('truncated header', 'not a Buffer');
  const data = Buffer.isBuffer(input) ? input : Buffer.from((input as Uint8Array).buffer, (input as Uint8Array).byteOffset, (input as Uint8Array).byteLength);
  if (data.length < HEADER_SIZE) return reject('truncated header', `${data.length} bytes, a header is ${HEADER_SIZE}`);
  if (data.length > MAX_MESSAGE) return reject('oversized', `${data.length} bytes, limit ${MAX_MESSAGE}`);
  const magic = data.readUInt16LE(0);
  if (magic !== MAGIC) return reject('bad magic', `0x${magic.toString(16)}`);
  const version = data.readUInt8(2);
  if (version !== PROTOCOL_VERSION) return reject('unsupported version', `version ${version}, this codec speaks ${PROTOCOL_VERSION}`);
  const payloadLength = data.readUInt32LE(12);
  if (payloadLength !== data.length - HEADER_SIZE) return reject('length mismatch', `payloadLength ${payloadLength}, ${data.length - HEADER_SIZE} bytes follow the header`);
  const typeCode = data.readUInt8(3);
  const requestId = data.readUInt32LE(8);
  const flags = data.readUInt16LE(4);
  if (flags !== 0) return reject('bad flags', `flags 0x${flags.toString(16)}`, requestId, typeCode);
  const reserved = data.readUInt16LE(6);
  if (reserved !== 0) return reject('bad reserved', `reserved 0x${reserved.toString(16)}`, requestId, typeCode);
  const info = messageTypeByCode(typeCode);
  if (!info) return reject('unknown type', `type 0x${typeCode.toString(16)}`, requestId, typeCode);
  if (fdCount !== info.fds) return reject('wrong fd count', `${info.label} carries ${info.fds} fds, got ${String(fdCount)}`, requestId, typeCode);
  if (options?.from !== undefined && sentByClient(info.direction) !== (options.from === 'client')) {
    return reject('wrong direction', `${info.label} is a ${info.direction} message, not sent by a ${options.from}`, requestId, typeCode);
  }
  const ackable = info.name === 'checkpoint_put' || info.name === 'checkpoint_delete';
  if (!ackable) {
    const problem = requestIdProblem(info, requestId, undefined);
    if (problem) return reject('bad request id', problem, requestId, typeCode);
  }
  let message: ControlMessage;
  try {
    const r = new FieldReader(data, HEADER_SIZE, data.length);
    message = info.name === 'journal_entries' && options?.packedJournal ? readPackedJournal(r) : READERS[info.name](r);
    r.end();
  } catch (err) {
    if (err instanceof FieldFailure) return reject(err.reason, `${info.label}: ${err.detail}`, requestId, typeCode);
    throw err;
  }
  if (message.type === 'checkpoint_put' || message.type === 'checkpoint_delete') {
    const problem = requestIdProblem(info, requestId, message.ack);
    if (problem) return reject('bad request id', problem, requestId, typeCode);
  }
  return { ok: true, message, requestId };
}

// ---------------------------------------------------------------------------------------------
// Debugging

function show(v: unknown): string {
  if (typeof v === 'bigint') return v.toString();
  if (Buffer.isBuffer(v)) return `<${v.length} bytes>`;
  if (Array.isArray(v) || v instanceof JournalEntries) return `[${v.length}]`;
  if (typeof v === 'object' && v !== null) return `{${Object.entries(v).map(([k, x]) => `${k}=${show(x)}`).join(' ')}}`;
  return JSON.stringify(v) ?? String(v);
}

/** A one-line description for logs: `ACQUIRE#7 name="home" mount={...} standby=false`. */
export function describeMessage(msg: ControlMessage, requestId = 0): string {
  const label = messageType(msg.type).label;
  const fields = Object.entries(msg)
    .filter(([k]) => k !== 'type')
    .map(([k, v]) => `${k}=${show(v)}`);
  return [`${label}#${requestId}`, ...fields].join(' ');
}
