// FUSE_INTERRUPT reaches a handler through its context's signal, whether the handler looked
// at the signal before the interrupt came or only after (the signal is made on first use).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Opcode } from '../../kernel/abi.ts';
import { replyAttr } from '../../client/fuse/codec.ts';
import { FuseError } from '../../client/fuse/errors.ts';
import type { FuseOperations, RequestContext } from '../../client/fuse/server.ts';
import { settledInit, socketServer } from './fixtures/socket-server.ts';
import { getattrIn, request, u64In } from './fixtures/fuse-builder.ts';


const getattr = (unique: bigint): Buffer => request(Opcode.GETATTR, unique, 1n, [getattrIn(0, 0n)]);
const interrupt = (unique: bigint, target: bigint): Buffer => request(Opcode.INTERRUPT, unique, 0n, [u64In(target)]);
/** fuse_out_header: len, error (a negative errno), unique. */
const outHeader = (reply: Buffer): { error: number; unique: bigint } => ({ error: reply.readInt32LE(4), unique: reply.readBigUInt64LE(8) });

/** A GETATTR handler that waits for its signal; `lookFirst` reads ctx.signal before waiting at all. */
function waitingOps(lookFirst: boolean, entered: () => void): FuseOperations {
  return {
    getattr: async (_req, ctx: RequestContext) => {
      const early = lookFirst ? ctx.signal : undefined;
      entered();
      await new Promise((r) => setTimeout(r, 20));
      const signal = early ?? ctx.signal;
      // Not aborted within a second: EIO, which fails the test instead of hanging it.
      if (!signal.aborted) {
        await new Promise((r) => {
          signal.addEventListener('abort', r, { once: true });
          setTimeout(r, 1000);
        });
      }
      throw new FuseError(signal.aborted ? 'EINTR' : 'EIO');
    },
  };
}

for (const lookFirst of [true, false]) {
  test(`INTERRUPT aborts the request's signal (${lookFirst ? 'looked at before' : 'first looked at after'} the interrupt)`, async (t) => {
    let entered!: () => void;
    const inHandler = new Promise<void>((r) => (entered = r));
    const s = socketServer(waitingOps(lookFirst, entered), { resume: settledInit() });
    t.after(() => s.close());
    s.send(getattr(10n));
    await inHandler;
    s.send(interrupt(11n, 10n));
    const reply = outHeader(await s.reply());
    assert.deepEqual(reply, { error: -4, unique: 10n }, 'answered EINTR');
    assert.equal(s.server.inFlight, 0);
  });
}

test('a request nobody interrupts keeps an unaborted signal, made only when looked at', async (t) => {
  const seen: boolean[] = [];
  const ops: FuseOperations = {
    getattr: (req, ctx) => {
      seen.push(ctx.signal.aborted);
      return replyAttr(req.header.unique, { attrValid: 0n, attr: { ino: 1n, size: 0n, blocks: 0n, atime: 0n, mtime: 0n, ctime: 0n, atimensec: 0, mtimensec: 0, ctimensec: 0, mode: 0o40755, nlink: 2, uid: 0, gid: 0, rdev: 0, blksize: 4096, flags: 0 } });
    },
  };
  const s = socketServer(ops, { resume: settledInit() });
  t.after(() => s.close());
  s.send(interrupt(21n, 99n)); // for a request that is not in flight: ignored
  s.send(getattr(20n));
  assert.equal(outHeader(await s.reply()).error, 0);
  assert.deepEqual(seen, [false]);
});
