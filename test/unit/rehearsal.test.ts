// FuseServer.rehearse (client/fuse/rehearsal.ts): the read-only script reaches the operations
// with well-formed requests, replies go nowhere, lookups are forgotten again, and failures
// are reported rather than thrown.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { constants } from 'node:fs';
import { InitFlags } from '../../kernel/abi.ts';
import { isResend, replyAttr, replyData, replyEmpty, replyOpen } from '../../client/fuse/codec.ts';
import { FuseError } from '../../client/fuse/errors.ts';
import { FuseServer, type FuseOperations } from '../../client/fuse/server.ts';
import { MemFs, S_IFREG } from './fixtures/memfs.ts';

const attr = { ino: 1n, size: 0n, blocks: 0n, atime: 0n, mtime: 0n, ctime: 0n, atimensec: 0, mtimensec: 0, ctimensec: 0, mode: 0o40755, nlink: 2, uid: 0, gid: 0, rdev: 0, blksize: 4096, flags: 0 };

function recordingOps(fs: MemFs, seen: string[]): FuseOperations {
  return {
    lookup: (r) => {
      seen.push(`lookup ${r.header.nodeid} ${r.name}`);
      return fs.lookup(r);
    },
    forget: (r) => {
      seen.push(`forget ${r.header.nodeid} ${r.nlookup}`);
      fs.forget(r);
    },
    getattr: (r) => {
      seen.push(`getattr ${r.header.nodeid}${isResend(r.header.unique) ? ' (replay)' : ''}`);
      return replyAttr(r.header.unique, { attrValid: 0n, attr });
    },
    open: (r) => {
      seen.push(`open ${r.header.nodeid} ${r.flags}`);
      return replyOpen(r.header.unique, { fh: 7n, openFlags: 0 });
    },
    read: (r) => {
      seen.push(`read ${r.header.nodeid} fh ${r.fh} at ${r.offset} size ${r.size}`);
      return replyData(r.header.unique, Buffer.from('abc'));
    },
    flush: (r) => {
      seen.push(`flush fh ${r.fh}`);
      return replyEmpty(r.header.unique);
    },
    release: (r) => {
      seen.push(`release fh ${r.fh}`);
      return replyEmpty(r.header.unique);
    },
    opendir: (r) => {
      seen.push(`opendir ${r.header.nodeid}`);
      return replyOpen(r.header.unique, { fh: 9n, openFlags: 0 });
    },
    readdir: async (r) => {
      await new Promise((res) => setImmediate(res));
      seen.push(`readdir fh ${r.fh}`);
      return replyData(r.header.unique, Buffer.alloc(0));
    },
    releasedir: (r) => {
      seen.push(`releasedir fh ${r.fh}`);
      return replyEmpty(r.header.unique);
    },
  };
}

test('rehearse runs the read-only script through the operations and forgets its lookup', async () => {
  const fs = new MemFs();
  const file = fs.add(1n, 'a', S_IFREG | 0o644);
  const seen: string[] = [];
  const report = await FuseServer.rehearse(recordingOps(fs, seen), { init: { flags: InitFlags.HAS_RESEND, maxWrite: 4096 }, name: 'a' });
  const n = file.nodeid;
  assert.deepEqual(seen, [
    'getattr 1',
    'opendir 1',
    'readdir fh 9',
    'releasedir fh 9',
    'lookup 1 a',
    `getattr ${n}`,
    `getattr ${n} (replay)`,
    `open ${n} ${constants.O_RDONLY}`,
    `read ${n} fh 7 at 0 size 4096`,
    'flush fh 7',
    'release fh 7',
    `forget ${n} 1`,
  ]);
  // INIT is answered by the server itself; STATFS has no handler here.
  assert.deepEqual(report.errors, ['STATFS ENOSYS']);
  assert.equal(report.requests, 14);
  assert.equal(fs.nlookup.get(n), 0n);
});

test('READDIRPLUS is rehearsed when the daemon asks for it; a missing entry is reported, not thrown', async () => {
  const seen: string[] = [];
  const ops = recordingOps(new MemFs(), seen);
  ops.readdirplus = (r) => {
    seen.push(`readdirplus fh ${r.fh}`);
    return replyData(r.header.unique, Buffer.alloc(0));
  };
  ops.statfs = () => {
    throw new Error('not a FuseError');
  };
  const report = await FuseServer.rehearse(ops, { init: { flags: InitFlags.DO_READDIRPLUS, maxWrite: 4096 }, name: 'missing' });
  assert.ok(seen.includes('readdirplus fh 9'), seen.join('\n'));
  assert.ok(!seen.some((s) => s.startsWith('open ')), 'nothing to open after a failed lookup');
  assert.deepEqual(report.errors, ['STATFS EIO', 'LOOKUP ENOENT']);
});

test('without a name only the root is visited', async () => {
  const seen: string[] = [];
  const ops = recordingOps(new MemFs(), seen);
  ops.opendir = () => {
    throw new FuseError('EACCES');
  };
  const report = await FuseServer.rehearse(ops, { init: { flags: 0n, maxWrite: 4096 } });
  assert.deepEqual(seen, ['getattr 1']);
  assert.deepEqual(report.errors, ['STATFS ENOSYS', 'OPENDIR EACCES']);
});
