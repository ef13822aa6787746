// Where mirrorfs looks up, stats and opens its source's files (MirrorOptions.metadataCalls):
// on the main thread or on libuv's pool, with the same answers either way, and an open on
// the main thread that never waits there (examples/mirrorfs/mirrorfs.ts, #openSource). The
// operations are called directly over a real temp dir, as in mirrorfs-checkpoint.test.ts.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { constants as fsc, closeSync, mkdtempSync, mkdirSync, openSync, readFileSync, readdirSync, readlinkSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Opcode } from '../../kernel/abi.ts';
import { parseRequest, type FuseRequest } from '../../client/fuse/codec.ts';
import { MirrorFs } from '../../examples/mirrorfs/mirrorfs.ts';
import { cstr, getattrIn, openIn, releaseIn, request } from './fixtures/fuse-builder.ts';

const parse = (buf: Buffer): FuseRequest => {
  const r = parseRequest(buf);
  if (!r.ok) throw r.error;
  return r.request;
};
const req = {
  lookup: (u: bigint, parent: bigint, name: string) => parse(request(Opcode.LOOKUP, u, parent, [cstr(name)])),
  getattr: (u: bigint, nodeid: bigint) => parse(request(Opcode.GETATTR, u, nodeid, [getattrIn(0, 0n)])),
  open: (u: bigint, nodeid: bigint, flags: number) => parse(request(Opcode.OPEN, u, nodeid, [openIn(flags, 0)])),
  release: (u: bigint, fh: bigint) => parse(request(Opcode.RELEASE, u, 0n, [releaseIn(fh, 0, 0, 0n)])),
};
type Op = (r: FuseRequest) => Promise<Buffer | void> | Buffer | void;
const call = async (fs: MirrorFs, r: FuseRequest): Promise<Buffer> => (await (fs as unknown as Record<string, Op>)[r.op]!.call(fs, r)) as Buffer;
const nodeidOf = (reply: Buffer): bigint => reply.readBigUInt64LE(16);
const fhOf = (reply: Buffer): bigint => reply.readBigUInt64LE(16);
/** struct fuse_entry_out's attr starts at 16 + 40; struct fuse_attr_out's at 16 + 16. Both begin with ino, size. */
const inoSizeOf = (reply: Buffer, attrAt: number): [bigint, bigint] => [reply.readBigUInt64LE(attrAt), reply.readBigUInt64LE(attrAt + 8)];

/** open(2) flags of this process's fds that lead to `path` (/proc/self/fdinfo), in fd order. */
function openFlagsOf(path: string): number[] {
  const flags: number[] = [];
  for (const fd of readdirSync('/proc/self/fd')) {
    let target: string;
    try {
      target = readlinkSync(`/proc/self/fd/${fd}`);
    } catch {
      continue; // the fd readdir itself used
    }
    if (target !== path) continue;
    flags.push(parseInt(/^flags:\s+([0-7]+)$/m.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'))![1]!, 8));
  }
  return flags;
}

/** The O_NONBLOCK bit of each fd that leads to `path`, smallest first (fd order is not fixed: Node 24 reuses numbers differently). */
const nonBlockBits = (path: string): number[] => openFlagsOf(path).map((f) => f & fsc.O_NONBLOCK).sort((a, b) => a - b);

describe('mirrorfs metadata calls', () => {
  let dir: string;
  let source: string;

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'fusekeeper-meta-'));
    source = join(dir, 'src');
    mkdirSync(source);
    writeFileSync(join(source, 'file.txt'), 'twelve bytes');
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  for (const metadataCalls of ['main', 'pool'] as const) {
    test(`${metadataCalls}: LOOKUP, GETATTR and OPEN answer from the source; the opened fd has O_NONBLOCK only when asked`, async () => {
      const fs = await MirrorFs.create({ source, backing: null, metadataCalls });
      try {
        const entry = await call(fs, req.lookup(2n, 1n, 'file.txt'));
        const nodeid = nodeidOf(entry);
        const [ino, size] = inoSizeOf(entry, 16 + 40);
        assert.equal(size, 12n);
        assert.deepEqual(inoSizeOf(await call(fs, req.getattr(3n, nodeid)), 16 + 16), [ino, 12n]);
        const path = join(source, 'file.txt');
        const blocking = fhOf(await call(fs, req.open(4n, nodeid, fsc.O_RDONLY)));
        assert.deepEqual(openFlagsOf(path).map((f) => f & fsc.O_NONBLOCK), [0]);
        const nonBlocking = fhOf(await call(fs, req.open(5n, nodeid, fsc.O_RDONLY | fsc.O_NONBLOCK)));
        assert.deepEqual(nonBlockBits(path), [0, fsc.O_NONBLOCK]);
        await call(fs, req.release(6n, blocking));
        await call(fs, req.release(7n, nonBlocking));
        assert.deepEqual(openFlagsOf(path), []);
      } finally {
        await fs.closeAll();
      }
    });
  }

  test('main: a FIFO put where a looked-up file was is opened on the pool, waiting for its other end there, as asked', async () => {
    const fs = await MirrorFs.create({ source, backing: null, metadataCalls: 'main' });
    const fifo = join(source, 'fifo');
    try {
      for (const [flags, peer] of [
        [fsc.O_RDONLY, fsc.O_WRONLY],
        // O_WRONLY|O_NONBLOCK without a reader fails ENXIO.
        [fsc.O_WRONLY, fsc.O_RDONLY],
      ] as const) {
        writeFileSync(fifo, 'a regular file first');
        const nodeid = nodeidOf(await call(fs, req.lookup(10n, 1n, 'fifo')));
        unlinkSync(fifo);
        assert.equal(spawnSync('mkfifo', [fifo]).status, 0);
        let answered = false;
        const open = call(fs, req.open(11n, nodeid, flags)).then((reply) => {
          answered = true;
          return reply;
        });
        // The main thread is free meanwhile: this timer fires while the open waits.
        await sleep(50);
        assert.equal(answered, false, 'the open waits for the FIFO\'s other end');
        const peerFd = openSync(fifo, peer | fsc.O_NONBLOCK);
        try {
          const fh = fhOf(await open);
          assert.deepEqual(nonBlockBits(fifo), [0, fsc.O_NONBLOCK], 'mirrorfs\'s fd blocks; the peer\'s does not');
          await call(fs, req.release(12n, fh));
        } finally {
          closeSync(peerFd);
        }
        unlinkSync(fifo);
      }
    } finally {
      await fs.closeAll();
      rmSync(fifo, { force: true });
    }
  });
});
