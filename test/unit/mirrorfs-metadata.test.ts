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
import { MirrorFs } from '../../examples/mirrorfs/mirrorfs.ts';
import { fhOf, mirrorRequest, nodeidOf, runOp } from './fixtures/mirror-requests.ts';

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
        const entry = await runOp(fs, mirrorRequest.lookup(2n, 1n, 'file.txt'));
        const nodeid = nodeidOf(entry);
        const [ino, size] = inoSizeOf(entry, 16 + 40);
        assert.equal(size, 12n);
        assert.deepEqual(inoSizeOf(await runOp(fs, mirrorRequest.getattr(3n, nodeid)), 16 + 16), [ino, 12n]);
        const path = join(source, 'file.txt');
        const blocking = fhOf(await runOp(fs, mirrorRequest.open(4n, nodeid, fsc.O_RDONLY)));
        assert.deepEqual(nonBlockBits(path), [0]);
        const nonBlocking = fhOf(await runOp(fs, mirrorRequest.open(5n, nodeid, fsc.O_RDONLY | fsc.O_NONBLOCK)));
        assert.deepEqual(nonBlockBits(path), [0, fsc.O_NONBLOCK]);
        await runOp(fs, mirrorRequest.release(6n, Opcode.RELEASE, blocking));
        await runOp(fs, mirrorRequest.release(7n, Opcode.RELEASE, nonBlocking));
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
        const nodeid = nodeidOf(await runOp(fs, mirrorRequest.lookup(10n, 1n, 'fifo')));
        unlinkSync(fifo);
        assert.equal(spawnSync('mkfifo', [fifo]).status, 0);
        let answered = false;
        const open = runOp(fs, mirrorRequest.open(11n, nodeid, flags)).then((reply) => {
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
          await runOp(fs, mirrorRequest.release(12n, Opcode.RELEASE, fh));
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
