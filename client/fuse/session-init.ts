// The INIT settlement as the bytes a daemon saves with `SessionLink.saveInit`. A resumed
// daemon never sees FUSE_INIT (the kernel asks it once per connection), so the next owner
// decodes these bytes instead. The supervisor stores them opaquely.
import { FUSE_INIT_OUT_SIZE, decodeInitOut, encodeInitOut } from '../../kernel/abi.ts';
import { MAX_INIT_PARAMS } from '../../protocol/limits.ts';
import type { SessionInit } from './server.ts';

/** Layout version of `encodeSessionInit`, its first byte. */
export const SESSION_INIT_VERSION = 1;

const PASSTHROUGH = 1;
/** version u8, bits u8, reserved u16, minor u32, flags u64, maxWrite u32, initOut length u32. */
const HEAD = 24;

/**
 * Encodes `init` (always HEAD + 64 = 88 bytes, well under MAX_INIT_PARAMS). Flags are
 * written as u64, so every bit of the 64-bit combined flags survives.
 */
export function encodeSessionInit(init: SessionInit): Buffer {
  const buf = Buffer.alloc(HEAD + FUSE_INIT_OUT_SIZE);
  buf.writeUInt8(SESSION_INIT_VERSION, 0);
  buf.writeUInt8(init.passthrough ? PASSTHROUGH : 0, 1);
  buf.writeUInt32LE(init.minor >>> 0, 4);
  buf.writeBigUInt64LE(BigInt.asUintN(64, init.flags), 8);
  buf.writeUInt32LE(init.maxWrite >>> 0, 16);
  buf.writeUInt32LE(FUSE_INIT_OUT_SIZE, 20);
  encodeInitOut(init.initOut).copy(buf, HEAD);
  if (buf.length > MAX_INIT_PARAMS) throw new RangeError(`encoded INIT settlement of ${buf.length} bytes exceeds ${MAX_INIT_PARAMS}`);
  return buf;
}

/**
 * Decodes what `encodeSessionInit` wrote. Throws RangeError for anything else: another
 * version, a wrong length, unknown bits, or an initOut that disagrees with the header.
 */
export function decodeSessionInit(buf: Buffer): SessionInit {
  if (buf.length < HEAD) throw new RangeError(`INIT settlement of ${buf.length} bytes is shorter than its ${HEAD}-byte header`);
  const version = buf.readUInt8(0);
  if (version !== SESSION_INIT_VERSION) throw new RangeError(`INIT settlement version ${version}, expected ${SESSION_INIT_VERSION}`);
  const bits = buf.readUInt8(1);
  if ((bits & ~PASSTHROUGH) !== 0 || buf.readUInt16LE(2) !== 0) throw new RangeError('INIT settlement has unknown bits set');
  const outLen = buf.readUInt32LE(20);
  if (outLen !== FUSE_INIT_OUT_SIZE || buf.length !== HEAD + outLen) {
    throw new RangeError(`INIT settlement of ${buf.length} bytes announces a ${outLen}-byte fuse_init_out`);
  }
  const init: SessionInit = {
    minor: buf.readUInt32LE(4),
    flags: buf.readBigUInt64LE(8),
    maxWrite: buf.readUInt32LE(16),
    passthrough: (bits & PASSTHROUGH) !== 0,
    initOut: decodeInitOut(buf.subarray(HEAD)),
  };
  if (init.initOut.minor !== init.minor || init.initOut.maxWrite !== init.maxWrite) {
    throw new RangeError('INIT settlement header disagrees with its fuse_init_out');
  }
  return init;
}
