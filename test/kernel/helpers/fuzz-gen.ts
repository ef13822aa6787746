// The control-protocol fuzzer's generator (issue 7, item 4): a seeded PRNG, valid values for
// every field of docs/protocol.md, valid messages built with protocol's encodeMessage, and
// mutations of encoded frames. Pure (no I/O): test/kernel/helpers/fuzz.ts decides what to send
// when, over which connection, with which fds, and checks the supervisor's answers.
//
// The oracle for a frame is the reference codec itself: `predictFrame` decodes what is about to
// be sent exactly as the supervisor will (same fd count, direction 'client'), so a mutation
// that happens to yield a valid frame is recognised as one and judged as that message.
import {
  decodeMessage,
  encodeMessage,
  errorMessage,
  HEADER_SIZE,
  MAGIC,
  MAX_ADOPT_CHUNK,
  MAX_BACKING_ID,
  MAX_CHECKPOINT_VALUE,
  MAX_INIT_PARAMS,
  MAX_JOURNAL_CHUNK,
  MAX_JOURNAL_FILE_ENTRIES,
  MAX_CHECKPOINT_BYTES,
  MAX_CHECKPOINT_FILE_ENTRIES,
  CHECKPOINT_ENTRY_OVERHEAD,
  MAX_KEY_BYTES,
  MAX_LABEL_BYTES,
  MAX_MESSAGE,
  MAX_PATH_BYTES,
  MESSAGE_TYPES,
  messageType,
  PROTOCOL_VERSION,
  type ControlMessage,
  type DecodeResult,
  type MessageName,
  type MountSpec,
} from '../../../protocol/index.ts';

// ---------------------------------------------------------------------------------------------
// PRNG: sfc32 seeded through splitmix32. One independent stream per (seed, stream).

function splitmix32(seed: number): () => number {
  let x = seed | 0;
  return () => {
    x = (x + 0x9e3779b9) | 0;
    let z = x;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    return (z ^ (z >>> 16)) >>> 0;
  };
}

/** A small deterministic PRNG (sfc32). `new Rng(seed, stream)` gives the same numbers every run. */
export class Rng {
  #a: number;
  #b: number;
  #c: number;
  #d: number;

  constructor(seed: number, stream = 0) {
    const sm = splitmix32((seed >>> 0) ^ Math.imul((stream >>> 0) + 1, 0x632be5ab));
    this.#a = sm();
    this.#b = sm();
    this.#c = sm();
    this.#d = sm();
    for (let i = 0; i < 12; i++) this.u32();
  }

  /** Uniform 32-bit unsigned integer. */
  u32(): number {
    const t = (((this.#a + this.#b) | 0) + this.#d) | 0;
    this.#d = (this.#d + 1) | 0;
    this.#a = this.#b ^ (this.#b >>> 9);
    this.#b = (this.#c + (this.#c << 3)) | 0;
    this.#c = (this.#c << 21) | (this.#c >>> 11);
    this.#c = (this.#c + t) | 0;
    return t >>> 0;
  }

  /** Uniform in [0, 1). */
  float(): number {
    return this.u32() / 4294967296;
  }

  /** Uniform integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.float() * n);
  }

  /** Uniform integer in [lo, hi]. */
  range(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }

  chance(p: number): boolean {
    return this.float() < p;
  }

  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new RangeError('pick from an empty list');
    return items[this.int(items.length)]!;
  }

  /** One of `entries` with probability proportional to its weight. */
  weighted<T>(entries: readonly (readonly [T, number])[]): T {
    let total = 0;
    for (const [, w] of entries) total += w;
    let x = this.float() * total;
    for (const [v, w] of entries) {
      if (x < w) return v;
      x -= w;
    }
    return entries[entries.length - 1]![0];
  }

  bytes(n: number): Buffer {
    const b = Buffer.allocUnsafe(n);
    let i = 0;
    for (; i + 4 <= n; i += 4) b.writeUInt32LE(this.u32(), i);
    for (; i < n; i++) b[i] = this.u32() & 0xff;
    return b;
  }

  u64(): bigint {
    return (BigInt(this.u32()) << 32n) | BigInt(this.u32());
  }

  /** Mostly small sizes, sometimes medium, rarely up to `max`. */
  size(max: number, small = 32): number {
    const x = this.float();
    if (x < 0.85) return this.range(0, Math.min(small, max));
    if (x < 0.97) return this.range(0, Math.min(small * 16, max));
    return this.range(0, max);
  }
}

// ---------------------------------------------------------------------------------------------
// Valid field values

const ALNUM = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
const NAME_REST = `${ALNUM}_.@:-`;
const LABEL_CHARS = `${ALNUM}_.@:+-`;
const PATH_CHARS = `${ALNUM}._-`;

function charsFrom(r: Rng, alphabet: string, n: number): string {
  let s = '';
  for (let i = 0; i < n; i++) s += alphabet[r.int(alphabet.length)]!;
  return s;
}

/** A valid session name (NAME_PATTERN): `prefix` + random characters, at most 128 bytes. */
export function genName(r: Rng, prefix = ''): string {
  const room = 128 - prefix.length;
  const n = r.chance(0.95) ? r.range(1, Math.min(16, room)) : r.range(1, room);
  if (prefix) return prefix + charsFrom(r, NAME_REST, n);
  return charsFrom(r, ALNUM, 1) + charsFrom(r, NAME_REST, n - 1);
}

/** A valid fsName/subtype label. */
export function genLabel(r: Rng): string {
  return charsFrom(r, LABEL_CHARS, r.chance(0.9) ? r.range(1, 16) : r.range(1, 64));
}

/** One code point that is valid in a wire string: no NUL, no surrogate. */
function genCodePoint(r: Rng): number {
  const pool = r.weighted<[number, number]>([
    [[0x20, 0x7e], 70],
    [[0x01, 0x1f], 4],
    [[0xa0, 0x24f], 10],
    [[0x4e00, 0x9fff], 8],
    [[0x1f300, 0x1faff], 8],
  ]);
  return r.range(pool[0], pool[1]);
}

/** Valid UTF-8 text (no NUL, no lone surrogate) of at most `maxBytes` bytes, at least `minBytes`. */
export function genText(r: Rng, maxBytes: number, minBytes = 0, small = 24): string {
  const target = Math.max(minBytes, r.size(maxBytes, small));
  let s = '';
  let bytes = 0;
  while (bytes < target) {
    const ch = String.fromCodePoint(genCodePoint(r));
    const n = Buffer.byteLength(ch);
    if (bytes + n > maxBytes) {
      if (bytes >= minBytes) break;
      continue;
    }
    s += ch;
    bytes += n;
  }
  return s;
}

/** A valid checkpoint key: 1..1024 bytes of UTF-8 without NUL. */
export function genKey(r: Rng): string {
  return genText(r, MAX_KEY_BYTES, 1, 40);
}

/**
 * A canonical absolute path below `root` (itself canonical). Components are never `.`/`..`;
 * some are long or not ASCII, and a few paths use the whole 4096 bytes.
 */
export function genPathBelow(r: Rng, root: string): string {
  const parts: string[] = [];
  const long = r.chance(0.03);
  const components = long ? 400 : r.range(1, 3);
  let bytes = Buffer.byteLength(root);
  for (let i = 0; i < components; i++) {
    let c = r.chance(0.05) ? genText(r, 40, 1).replace(/\//g, '_') : charsFrom(r, PATH_CHARS, r.range(1, long ? 30 : 16));
    if (c === '.' || c === '..') c = `${c}x`;
    const n = Buffer.byteLength(c) + 1;
    if (bytes + n > MAX_PATH_BYTES) break;
    parts.push(c);
    bytes += n;
  }
  if (parts.length === 0) parts.push('x');
  return `${root}/${parts.join('/')}`;
}

/** A MountSpec on `mountpoint` with random (valid) fields. */
export function genSpec(r: Rng, mountpoint: string): MountSpec {
  return {
    mountpoint,
    fsName: genLabel(r),
    subtype: genLabel(r),
    rootMode: r.chance(0.7) ? 0o40755 : r.u32(),
    uid: r.chance(0.7) ? 0 : r.u32(),
    gid: r.chance(0.7) ? 0 : r.u32(),
    allowOther: r.chance(0.3),
    defaultPermissions: r.chance(0.3),
    readOnly: r.chance(0.2),
    maxRead: r.chance(0.7) ? 0 : r.u32(),
  };
}

/** A backing id: mostly small (like the kernel's cyclic allocator), sometimes anywhere. */
export function genBackingId(r: Rng): number {
  return r.chance(0.85) ? r.range(1, 4096) : r.range(1, MAX_BACKING_ID);
}

// ---------------------------------------------------------------------------------------------
// Valid messages

/** Where generated names and paths point. */
export interface GenContext {
  /** A directory that does not exist: ACQUIRE/STORE mountpoints below it never exist. */
  absentRoot: string;
  /** Prefix of session names that never exist (no session is ever created with it). */
  absentPrefix: string;
}

export const REQUEST_TYPES = ['hello', 'acquire', 'store', 'adopt', 'release', 'status', 'drain'] as const satisfies readonly MessageName[];
export const ONE_WAY_TYPES = ['init_save', 'journal_open', 'journal_close', 'checkpoint_put', 'checkpoint_delete', 'heartbeat', 'drained'] as const satisfies readonly MessageName[];
export const SUPERVISOR_TYPES = MESSAGE_TYPES.filter((t) => t.direction === 'reply' || t.direction === 'notify').map((t) => t.name);

/** A valid HELLO; `role` fixed or random. Versions always include 1 unless `incompatible`. */
export function genHello(r: Rng, role?: 'daemon' | 'cli', incompatible = false): MessageOf<'hello'> {
  let minVersion = 1;
  let maxVersion = r.chance(0.8) ? 1 : r.range(1, 0xffff);
  if (incompatible) {
    minVersion = r.range(2, 0xffff);
    maxVersion = r.range(minVersion, 0xffff);
  }
  return { type: 'hello', minVersion, maxVersion, role: role ?? r.pick(['daemon', 'cli'] as const), clientName: genText(r, MAX_LABEL_BYTES) };
}

type MessageOf<N extends MessageName> = Extract<ControlMessage, { type: N }>;

/** A valid message of `type` whose names and mountpoints do not exist (see GenContext). */
export function genMessage(r: Rng, type: MessageName, ctx: GenContext): ControlMessage {
  switch (type) {
    case 'hello':
      return genHello(r);
    case 'acquire':
      return { type, name: genName(r, ctx.absentPrefix), mount: genSpec(r, genPathBelow(r, ctx.absentRoot)), standby: r.chance(0.3) };
    case 'store':
      return { type, name: genName(r, ctx.absentPrefix), mount: genSpec(r, genPathBelow(r, ctx.absentRoot)) };
    case 'adopt': {
      const n = r.chance(0.98) ? r.range(0, 8) : r.range(0, MAX_ADOPT_CHUNK);
      return { type, more: r.chance(0.3), ids: Array.from({ length: n }, () => genBackingId(r)) };
    }
    case 'release':
    case 'drain':
      return { type, name: genName(r, ctx.absentPrefix) };
    case 'status':
    case 'heartbeat':
    case 'drained':
    case 'ok':
    case 'drain_request':
      return { type } as ControlMessage;
    case 'init_save':
    case 'init_params':
      return { type, params: r.bytes(r.size(MAX_INIT_PARAMS, 64)) };
    case 'journal_open':
      return { type, id: genBackingId(r), dev: r.u64(), ino: r.u64() };
    case 'journal_close':
      return { type, id: genBackingId(r) };
    case 'checkpoint_put':
      return { type, ack: r.chance(0.3), key: genKey(r), value: r.bytes(r.size(MAX_CHECKPOINT_VALUE, 64)) };
    case 'checkpoint_delete':
      return { type, ack: r.chance(0.3), key: genKey(r) };
    case 'hello_ok':
      return { type, version: r.range(1, 3), supervisorVersion: genText(r, MAX_LABEL_BYTES), features: r.u32() };
    case 'acquired':
      return { type, generation: r.range(1, 100), resumed: r.chance(0.5), strategy: r.pick(['none', 'journal', 'close-all'] as const) };
    case 'checkpoint_entry':
      return { type, key: genKey(r), value: r.bytes(r.size(MAX_CHECKPOINT_VALUE, 64)) };
    case 'journal_entries': {
      const n = r.chance(0.98) ? r.range(0, 8) : r.range(0, MAX_JOURNAL_CHUNK);
      return { type, entries: Array.from({ length: n }, () => ({ id: genBackingId(r), dev: r.u64(), ino: r.u64() })) };
    }
    case 'journal_file':
      return { type, count: r.chance(0.9) ? r.range(1, 8) : r.range(1, MAX_JOURNAL_FILE_ENTRIES) };
    case 'checkpoint_file': {
      const count = r.chance(0.9) ? r.range(1, 8) : r.range(1, MAX_CHECKPOINT_FILE_ENTRIES);
      return { type, count, size: r.range(count * (CHECKPOINT_ENTRY_OVERHEAD + 1), MAX_CHECKPOINT_BYTES) };
    }
    case 'state_end':
      return { type, checkpointCount: r.range(0, 10), journalCount: r.range(0, 10), initParams: r.chance(0.5) };
    case 'stored':
      return { type, generation: r.range(1, 100) };
    case 'adopted':
      return { type, closed: r.range(0, 10), probed: r.range(0, 10) };
    case 'status_reply':
      return { type, json: JSON.stringify({ sessions: [], note: genText(r, 200) }) };
    case 'error':
      return errorMessage(r.pick(['EPERM', 'ENOENT', 'EIO', 'EBUSY', 'EPROTO', 'EINVAL'] as const), genText(r, 100));
  }
}

/**
 * The requestId a well-behaved client uses for `msg`: `next` for requests (and acked
 * checkpoint messages, and replies, which need one too), 0 for one-way and notify.
 */
export function properRequestId(msg: ControlMessage, next: number): number {
  const info = messageType(msg.type);
  if (msg.type === 'checkpoint_put' || msg.type === 'checkpoint_delete') return msg.ack ? next : 0;
  return info.direction === 'request' || info.direction === 'reply' ? next : 0;
}

/** encodeMessage with the proper requestId. */
export function encodeProper(msg: ControlMessage, next: number): { frame: Buffer; requestId: number } {
  const requestId = properRequestId(msg, next);
  return { frame: encodeMessage(msg, requestId), requestId };
}

// ---------------------------------------------------------------------------------------------
// Mutations of encoded frames

export const MUTATIONS = [
  'bitflip',
  'header-bitflip',
  'truncate',
  'extend',
  'length-field',
  'magic',
  'version',
  'flags',
  'reserved',
  'unknown-type',
  'swap-type',
  'request-id',
  'payload-garbage',
  'splice',
  'count-field',
] as const;
export type Mutation = (typeof MUTATIONS)[number];

const KNOWN_CODES = new Set(MESSAGE_TYPES.map((t) => t.code));
const UNKNOWN_CODES = Array.from({ length: 256 }, (_, i) => i).filter((c) => !KNOWN_CODES.has(c));

/** Rewrites the header's payloadLength to match the frame (when it has a header). */
function fixLength(b: Buffer): Buffer {
  if (b.length >= HEADER_SIZE) b.writeUInt32LE(b.length - HEADER_SIZE, 12);
  return b;
}

/** A mutated copy of `frame` (which stays untouched). */
export function mutateFrame(r: Rng, frame: Buffer, kind: Mutation = r.pick(MUTATIONS)): Buffer {
  const b = Buffer.from(frame);
  const headerOk = b.length >= HEADER_SIZE;
  switch (kind) {
    case 'bitflip': {
      const n = r.range(1, 8);
      for (let i = 0; i < n; i++) {
        const at = r.int(b.length);
        b[at] = b[at]! ^ (1 << r.int(8));
      }
      return b;
    }
    case 'header-bitflip': {
      const at = r.int(Math.min(HEADER_SIZE, b.length));
      b[at] = b[at]! ^ (1 << r.int(8));
      return b;
    }
    case 'truncate':
      return b.subarray(0, r.int(b.length));
    case 'extend': {
      const extra = r.bytes(r.chance(0.9) ? r.range(1, 64) : r.range(1, 4096));
      return r.chance(0.5) ? fixLength(Buffer.concat([b, extra])) : Buffer.concat([b, extra]);
    }
    case 'length-field':
      if (!headerOk) return b;
      b.writeUInt32LE(
        r.weighted<number>([
          [b.length - HEADER_SIZE + 1, 3],
          [Math.max(0, b.length - HEADER_SIZE - 1), 3],
          [r.u32(), 2],
          [0xffffffff, 1],
          [0, 1],
          [MAX_MESSAGE, 1],
        ]),
        12,
      );
      return b;
    case 'magic':
      if (!headerOk) return b;
      b.writeUInt16LE(r.chance(0.5) ? 0x464b : (MAGIC ^ r.range(1, 0xffff)) & 0xffff, 0);
      return b;
    case 'version':
      if (!headerOk) return b;
      b.writeUInt8(r.chance(0.5) ? 0 : r.range(PROTOCOL_VERSION + 1, 255), 2);
      return b;
    case 'flags':
      if (!headerOk) return b;
      b.writeUInt16LE(r.range(1, 0xffff), 4);
      return b;
    case 'reserved':
      if (!headerOk) return b;
      b.writeUInt16LE(r.range(1, 0xffff), 6);
      return b;
    case 'unknown-type':
      if (!headerOk) return b;
      b.writeUInt8(r.pick(UNKNOWN_CODES), 3);
      return b;
    case 'swap-type':
      if (!headerOk) return b;
      b.writeUInt8(r.pick(MESSAGE_TYPES).code, 3);
      return b;
    case 'request-id':
      if (!headerOk) return b;
      b.writeUInt32LE(r.chance(0.5) ? 0 : r.u32(), 8);
      return b;
    case 'payload-garbage':
      if (b.length <= HEADER_SIZE) return fixLength(Buffer.concat([b, r.bytes(r.range(1, 64))]));
      r.bytes(b.length - HEADER_SIZE).copy(b, HEADER_SIZE);
      return b;
    case 'splice': {
      const at = headerOk ? r.range(HEADER_SIZE, b.length) : r.range(0, b.length);
      const cut = r.chance(0.5) ? r.range(0, Math.min(8, b.length - at)) : 0;
      const out = Buffer.concat([b.subarray(0, at), r.bytes(r.range(0, 16)), b.subarray(at + cut)]);
      return fixLength(out);
    }
    case 'count-field': {
      // Forge a length/count somewhere in the payload: the first u16/u32 after the header.
      if (b.length < HEADER_SIZE + 4) return fixLength(Buffer.concat([b, r.bytes(4)]));
      const at = r.range(HEADER_SIZE, b.length - 4);
      if (r.chance(0.5)) b.writeUInt32LE(r.pick([0xffffffff, 0x7fffffff, 0x10000, r.u32()]), at);
      else b.writeUInt16LE(r.pick([0xffff, 0x8000, r.range(0, 0xffff)]), at);
      return b;
    }
  }
}

/** Random bytes: sometimes shorter than a header, sometimes with a valid magic in front. */
export function garbageFrame(r: Rng): Buffer {
  const b = r.bytes(r.chance(0.3) ? r.range(1, HEADER_SIZE - 1) : r.range(1, 512));
  if (b.length >= 2 && r.chance(0.5)) b.writeUInt16LE(MAGIC, 0);
  if (b.length >= 3 && r.chance(0.5)) b.writeUInt8(PROTOCOL_VERSION, 2);
  return b;
}

/** A frame longer than MAX_MESSAGE with a header that declares its true length. */
export function oversizedFrame(r: Rng, base?: Buffer): Buffer {
  const len = MAX_MESSAGE + (r.chance(0.5) ? r.range(1, 16) : r.range(1, 16384));
  const b = Buffer.alloc(len);
  if (base) base.copy(b, 0, 0, Math.min(base.length, len));
  else r.bytes(len).copy(b);
  b.writeUInt16LE(MAGIC, 0);
  b.writeUInt8(PROTOCOL_VERSION, 2);
  b.writeUInt16LE(0, 4);
  b.writeUInt16LE(0, 6);
  b.writeUInt32LE(len - HEADER_SIZE, 12);
  return b;
}

/** Exactly MAX_MESSAGE bytes: a valid header of a known type, garbage payload. */
export function maxSizeFrame(r: Rng): Buffer {
  const b = r.bytes(MAX_MESSAGE);
  b.writeUInt16LE(MAGIC, 0);
  b.writeUInt8(PROTOCOL_VERSION, 2);
  b.writeUInt8(r.pick(MESSAGE_TYPES).code, 3);
  b.writeUInt32LE(0, 4);
  b.writeUInt32LE(r.chance(0.5) ? 0 : r.range(1, 1000), 8);
  b.writeUInt32LE(MAX_MESSAGE - HEADER_SIZE, 12);
  return b;
}

// ---------------------------------------------------------------------------------------------
// Prediction

/** What the supervisor will make of a frame, by the reference codec. */
export type FramePrediction =
  /** A zero-length message without fds reads as end-of-file: a disconnect, no ERROR. */
  | { kind: 'eof' }
  /** Malformed: ERROR EPROTO (when it can) and a disconnect. */
  | { kind: 'malformed'; reason: string }
  /** A valid frame: judged as this message. */
  | { kind: 'valid'; message: ControlMessage; requestId: number };

export function predictFrame(frame: Buffer, fdCount: number): FramePrediction {
  if (frame.length === 0 && fdCount === 0) return { kind: 'eof' };
  if (frame.length > MAX_MESSAGE) return { kind: 'malformed', reason: 'oversized' };
  const d: DecodeResult = decodeMessage(frame, fdCount, { from: 'client' });
  if (!d.ok) return { kind: 'malformed', reason: d.error.reason };
  return { kind: 'valid', message: d.message, requestId: d.requestId };
}
