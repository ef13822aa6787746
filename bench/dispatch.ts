// FuseServer's own cost per request, without the kernel: the standby rehearsal's script of
// requests (client/fuse/rehearsal.ts: INIT, GETATTR, STATFS, OPENDIR, READDIR, RELEASEDIR,
// LOOKUP, GETATTR, OPEN, READ, FLUSH, RELEASE, FORGET, a replayed GETATTR) run through
// parse, dispatch and reply encoding, against handlers that answer from constants. Reports
// the first rehearsal of the process (everything compiled on first use) and ns per request
// once warm. To compare two commits, run it in a worktree of each, alternately.
// Run: npm run bench -- dispatch   (no privileges)
import { FuseServer, type FuseOperations, type RequestOf } from '../client/fuse/server.ts';
import { replyAttr, replyData, replyEmpty, replyEntry, replyOpen } from '../client/fuse/codec.ts';
import { InitFlags, type Attr } from '../kernel/abi.ts';
import { writeResult } from './lib.ts';

const attr = (ino: bigint): Attr => ({ ino, size: 4096n, blocks: 8n, atime: 0n, mtime: 0n, ctime: 0n, atimensec: 0, mtimensec: 0, ctimensec: 0, mode: ino === 1n ? 0o40755 : 0o100644, nlink: 1, uid: 0, gid: 0, rdev: 0, blksize: 4096, flags: 0 });
const data = Buffer.alloc(4096, 1);
const ops: FuseOperations = {
  lookup: (r: RequestOf<'lookup'>) => replyEntry(r.header.unique, { nodeid: 2n, generation: 0n, entryValid: 0n, attrValid: 0n, attr: attr(2n) }),
  getattr: (r: RequestOf<'getattr'>) => replyAttr(r.header.unique, { attrValid: 0n, attr: attr(r.header.nodeid) }),
  open: (r: RequestOf<'open'>) => replyOpen(r.header.unique, { fh: 2n, openFlags: 0 }),
  opendir: (r: RequestOf<'opendir'>) => replyOpen(r.header.unique, { fh: 1n, openFlags: 0 }),
  read: (r: RequestOf<'read'>) => replyData(r.header.unique, data.subarray(0, Math.min(data.length, r.size))),
  flush: (r: RequestOf<'flush'>) => replyEmpty(r.header.unique),
  release: (r: RequestOf<'release'>) => replyEmpty(r.header.unique),
  releasedir: (r: RequestOf<'releasedir'>) => replyEmpty(r.header.unique),
  forget: () => {},
};
const init = { flags: InitFlags.ASYNC_READ, maxWrite: 128 * 1024 };

export async function run(): Promise<void> {
  const first = await FuseServer.rehearse(ops, { init, name: 'p0' });
  for (let i = 0; i < 300; i++) await FuseServer.rehearse(ops, { init, name: 'p0' });
  const rounds: number[] = [];
  for (let r = 0; r < 5; r++) {
    let requests = 0;
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < 1000; i++) requests += (await FuseServer.rehearse(ops, { init, name: 'p0' })).requests;
    rounds.push(Number(process.hrtime.bigint() - t0) / requests);
  }
  const figures = { requestsPerRehearsal: first.requests, firstRehearsalUs: first.durationUs, nsPerRequestBestOf5: Math.round(Math.min(...rounds)), nsPerRequestRounds: rounds.map(Math.round) };
  console.log(`dispatch: first rehearsal ${first.durationUs} µs (${first.requests} requests), then ${figures.nsPerRequestBestOf5} ns per request (best of 5 rounds of 1000 rehearsals)`);
  writeResult('dispatch', figures);
}
