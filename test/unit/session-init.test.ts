// The INIT settlement a daemon saves for its successor (client/fuse/session-init.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { InitFlags, decodeInitOut, encodeInitOut, type InitOut } from '../../kernel/abi.ts';
import { negotiateInit } from '../../client/fuse/codec.ts';
import { decodeSessionInit, encodeSessionInit } from '../../client/fuse/session-init.ts';
import type { SessionInit } from '../../client/fuse/server.ts';
import { MAX_INIT_PARAMS } from '../../protocol/limits.ts';

function settled(): SessionInit {
  const r = negotiateInit(
    { major: 7, minor: 45, maxReadahead: 131072, flags: InitFlags.INIT_EXT | InitFlags.PASSTHROUGH | InitFlags.HAS_RESEND | InitFlags.MAX_PAGES | InitFlags.ASYNC_READ },
    { flags: InitFlags.PASSTHROUGH | InitFlags.HAS_RESEND | InitFlags.ASYNC_READ, maxWrite: 1 << 20 },
  );
  assert.ok(r.ok && !r.awaitReinit);
  return { minor: r.minor, flags: r.flags, maxWrite: r.initOut.maxWrite, passthrough: r.passthrough, initOut: r.initOut };
}

test('a negotiated settlement survives encode/decode unchanged', () => {
  const init = settled();
  assert.equal(init.passthrough, true);
  assert.ok((init.flags & InitFlags.HAS_RESEND) !== 0n, 'a flags2 bit is part of the test');
  const buf = encodeSessionInit(init);
  assert.ok(buf.length <= MAX_INIT_PARAMS);
  assert.deepEqual(decodeSessionInit(buf), init);
});

test('every bit of the 64-bit flags survives, bit 63 included', () => {
  const init = settled();
  const flags = (1n << 63n) | (1n << 32n) | 1n;
  const out: SessionInit = { ...init, flags, passthrough: false, initOut: { ...init.initOut, flags } };
  const back = decodeSessionInit(encodeSessionInit(out));
  assert.equal(back.flags, flags);
  assert.equal(back.initOut.flags, flags);
  assert.equal(back.passthrough, false);
});

test('decodeInitOut inverts encodeInitOut', () => {
  const o: InitOut = { major: 7, minor: 45, maxReadahead: 65536, flags: 0xdeadbeef_12345678n, maxBackground: 12, congestionThreshold: 9, maxWrite: 1 << 20, timeGran: 1, maxPages: 256, mapAlignment: 3, maxStackDepth: 2, requestTimeout: 30 };
  assert.deepEqual(decodeInitOut(encodeInitOut(o)), o);
  assert.throws(() => decodeInitOut(Buffer.alloc(63)), RangeError);
});

test('anything else is refused with RangeError', () => {
  const good = encodeSessionInit(settled());
  const mutate = (f: (b: Buffer) => void): Buffer => {
    const b = Buffer.from(good);
    f(b);
    return b;
  };
  assert.throws(() => decodeSessionInit(good.subarray(0, 10)), RangeError);
  assert.throws(() => decodeSessionInit(good.subarray(0, good.length - 1)), RangeError);
  assert.throws(() => decodeSessionInit(Buffer.concat([good, Buffer.alloc(1)])), RangeError);
  assert.throws(() => decodeSessionInit(mutate((b) => (b[0] = 2))), /version/);
  assert.throws(() => decodeSessionInit(mutate((b) => (b[1] = 0x81))), /unknown bits/);
  assert.throws(() => decodeSessionInit(mutate((b) => b.writeUInt32LE(44, 4))), /disagrees/);
});
