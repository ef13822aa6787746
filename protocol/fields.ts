// The field codec: little-endian integers, u16-length strings, u32-length byte strings and
// u32-count arrays. The reader checks every length against the bytes left before reading and
// caps every count before allocating; it signals a malformed payload by throwing a
// `FieldFailure`, which decodeMessage turns into a returned ProtocolError. The writer checks
// every value and throws ProtocolError EINVAL.
import { isUtf8 } from 'node:buffer';
import { ProtocolError, type ProtocolErrorReason } from './errors.ts';
import { isWireString } from './names.ts';
import { HEADER_SIZE, MAX_MESSAGE } from './limits.ts';

/** Thrown inside the decoder only; never escapes decodeMessage. Not an Error: no stack capture. */
export class FieldFailure {
  constructor(
    readonly reason: ProtocolErrorReason,
    readonly detail: string,
  ) {}
}

function fail(reason: ProtocolErrorReason, detail: string): never {
  throw new FieldFailure(reason, detail);
}

const U64_MAX = (1n << 64n) - 1n;

/** Reads the fields of one payload, `buf[start, end)`. */
export class FieldReader {
  #pos: number;
  readonly #buf: Buffer;
  readonly #end: number;

  constructor(buf: Buffer, start: number, end: number) {
    this.#buf = buf;
    this.#pos = start;
    this.#end = end;
  }

  get remaining(): number {
    return this.#end - this.#pos;
  }

  #need(n: number, what: string): void {
    if (n > this.#end - this.#pos) fail('truncated payload', `${what} needs ${n} bytes, ${this.#end - this.#pos} left`);
  }

  u8(what: string): number {
    this.#need(1, what);
    return this.#buf.readUInt8(this.#pos++);
  }

  u16(what: string): number {
    this.#need(2, what);
    const v = this.#buf.readUInt16LE(this.#pos);
    this.#pos += 2;
    return v;
  }

  u32(what: string): number {
    this.#need(4, what);
    const v = this.#buf.readUInt32LE(this.#pos);
    this.#pos += 4;
    return v;
  }

  i32(what: string): number {
    this.#need(4, what);
    const v = this.#buf.readInt32LE(this.#pos);
    this.#pos += 4;
    return v;
  }

  u64(what: string): bigint {
    this.#need(8, what);
    const v = this.#buf.readBigUInt64LE(this.#pos);
    this.#pos += 8;
    return v;
  }

  /** A u8 that must be 0 or 1. */
  bool(what: string): boolean {
    const v = this.u8(what);
    if (v > 1) fail('invalid value', `${what} must be 0 or 1, got ${v}`);
    return v === 1;
  }

  /** A u32 in [min, max]. */
  u32In(what: string, min: number, max: number): number {
    const v = this.u32(what);
    if (v < min || v > max) fail('invalid value', `${what} ${v} outside ${min}..${max}`);
    return v;
  }

  /** u16 length + UTF-8 without NUL, at most `max` bytes (longer: `tooLong`). */
  string(what: string, max: number, tooLong: ProtocolErrorReason = 'oversized'): string {
    const len = this.u16(`${what} length`);
    return this.#utf8(what, len, max, tooLong);
  }

  /** u32 length + UTF-8 without NUL, at most `max` bytes. */
  longString(what: string, max: number): string {
    const len = this.u32(`${what} length`);
    return this.#utf8(what, len, max, 'oversized');
  }

  #utf8(what: string, len: number, max: number, tooLong: ProtocolErrorReason): string {
    if (len > max) fail(tooLong, `${what} is ${len} bytes, limit ${max}`);
    this.#need(len, what);
    const start = this.#pos;
    const bytes = this.#buf.subarray(start, start + len);
    if (!isUtf8(bytes)) fail('invalid string', `${what} is not valid UTF-8`);
    if (bytes.includes(0)) fail('invalid string', `${what} contains NUL`);
    this.#pos += len;
    return bytes.toString('utf8');
  }

  /** u32 length + bytes, at most `max`; returned as a copy that owns its memory. */
  bytes(what: string, max: number): Buffer {
    const len = this.u32(`${what} length`);
    if (len > max) fail('oversized', `${what} is ${len} bytes, limit ${max}`);
    return this.copy(len, what);
  }

  /**
   * The next `n` bytes as a copy that owns its memory: its own allocation, not a slice of
   * Node's shared 8 KiB Buffer pool, since decoded values are often kept (a checkpoint value
   * lives as long as its key). A kept pool slice keeps its whole pool alive: in the crash-loop
   * harness the supervisor's checkpoint values pinned 1396 pools (11 MiB) in 150 crashes.
   */
  copy(n: number, what: string): Buffer {
    this.#need(n, what);
    const out = Buffer.allocUnsafeSlow(n);
    this.#buf.copy(out, 0, this.#pos, this.#pos + n);
    this.#pos += n;
    return out;
  }

  /** A u32 array count, capped at `max` and checked against the bytes left (`itemSize` each). */
  count(what: string, max: number, itemSize: number): number {
    const n = this.u32(`${what} count`);
    if (n > max) fail('oversized', `${what} count ${n}, limit ${max}`);
    this.#need(n * itemSize, what);
    return n;
  }

  /** A u32 count of items carried outside the frame (in an attached fd): 1..`max`. */
  outOfBandCount(what: string, max: number): number {
    const n = this.u32(`${what} count`);
    if (n === 0) fail('invalid value', `${what} count must be at least 1`);
    if (n > max) fail('oversized', `${what} count ${n}, limit ${max}`);
    return n;
  }

  /** The payload must be consumed exactly. */
  end(): void {
    if (this.#pos !== this.#end) fail('trailing bytes', `${this.#end - this.#pos} bytes after the last field`);
  }
}

function invalid(reason: ProtocolErrorReason, detail: string): never {
  throw new ProtocolError('EINVAL', reason, detail);
}

/**
 * Writes one frame into a module-wide scratch buffer (encoding is synchronous), starting
 * after the header; `finish` writes the header and returns an exact-size copy.
 */
const scratch = Buffer.allocUnsafe(MAX_MESSAGE);

export class FieldWriter {
  #pos = HEADER_SIZE;

  #room(n: number, what: string): number {
    const at = this.#pos;
    if (n > MAX_MESSAGE - at) invalid('oversized', `${what} does not fit in MAX_MESSAGE (${MAX_MESSAGE})`);
    this.#pos = at + n;
    return at;
  }

  #int(v: number, min: number, max: number, what: string): void {
    if (!Number.isInteger(v) || v < min || v > max) invalid('invalid value', `${what} must be an integer in ${min}..${max}, got ${String(v)}`);
  }

  u8(v: number, what: string): void {
    this.#int(v, 0, 0xff, what);
    scratch.writeUInt8(v, this.#room(1, what));
  }

  u16(v: number, what: string): void {
    this.#int(v, 0, 0xffff, what);
    scratch.writeUInt16LE(v, this.#room(2, what));
  }

  u32(v: number, what: string, min = 0, max = 0xffffffff): void {
    this.#int(v, min, max, what);
    scratch.writeUInt32LE(v, this.#room(4, what));
  }

  i32(v: number, what: string): void {
    this.#int(v, -0x80000000, 0x7fffffff, what);
    scratch.writeInt32LE(v, this.#room(4, what));
  }

  u64(v: bigint, what: string): void {
    if (typeof v !== 'bigint' || v < 0n || v > U64_MAX) invalid('invalid value', `${what} must be a bigint in 0..2^64-1`);
    scratch.writeBigUInt64LE(v, this.#room(8, what));
  }

  bool(v: boolean, what: string): void {
    if (typeof v !== 'boolean') invalid('invalid value', `${what} must be a boolean`);
    this.u8(v ? 1 : 0, what);
  }

  /** u16 length + UTF-8; `max` bytes at most (longer: `tooLong`). */
  string(s: string, what: string, max: number, tooLong: ProtocolErrorReason = 'oversized'): void {
    this.#utf8(s, what, Math.min(max, 0xffff), tooLong, 2);
  }

  /** u32 length + UTF-8. */
  longString(s: string, what: string, max: number): void {
    this.#utf8(s, what, max, 'oversized', 4);
  }

  #utf8(s: string, what: string, max: number, tooLong: ProtocolErrorReason, lengthSize: 2 | 4): void {
    if (typeof s !== 'string' || !isWireString(s)) invalid('invalid string', `${what} must be a string without NUL or lone surrogates`);
    const len = Buffer.byteLength(s, 'utf8');
    if (len > max) invalid(tooLong, `${what} is ${len} bytes, limit ${max}`);
    if (lengthSize === 2) this.u16(len, `${what} length`);
    else this.u32(len, `${what} length`);
    scratch.write(s, this.#room(len, what), len, 'utf8');
  }

  /** u32 length + bytes. */
  bytes(b: Uint8Array, what: string, max: number): void {
    if (!(b instanceof Uint8Array)) invalid('invalid value', `${what} must be a Buffer`);
    if (b.length > max) invalid('oversized', `${what} is ${b.length} bytes, limit ${max}`);
    this.u32(b.length, `${what} length`);
    scratch.set(b, this.#room(b.length, what));
  }

  /** u32 count, capped at `max`. */
  count(n: number, what: string, max: number): void {
    if (n > max) invalid('oversized', `${what} count ${n}, limit ${max}`);
    this.u32(n, `${what} count`);
  }

  /** Writes the header and returns the frame. */
  finish(typeCode: number, requestId: number, writeHeader: (buf: Buffer, typeCode: number, requestId: number, payloadLength: number) => void): Buffer {
    const size = this.#pos;
    writeHeader(scratch, typeCode, requestId, size - HEADER_SIZE);
    const out = Buffer.allocUnsafe(size);
    scratch.copy(out, 0, 0, size);
    return out;
  }
}
