// Intent records and replay resolution (client/fuse/replay.ts): requests are built by the
// independent wire builder and parsed by the codec; the filesystem is the in-memory MemFs.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { constants as fsc } from 'node:fs';
import { FATTR, FUSE_UNIQUE_RESEND, Opcode, RENAME_EXCHANGE, RENAME_WHITEOUT } from '../../kernel/abi.ts';
import { parseRequest, type FuseRequest } from '../../client/fuse/codec.ts';
import { ReplayGuard, decodeIntent, encodeIntent, intentKey, intentNeeded, intentOf, resolveReplay, INTENT_KEY_PREFIX } from '../../client/fuse/replay.ts';
import type { SessionLink } from '../../client/session.ts';
import { MemFs, S_IFCHR, S_IFDIR, S_IFREG } from './fixtures/memfs.ts';
import { createIn, cstr, entryOut, mkdirIn, mknodIn, openOut, outHeader, rename2In, request, setattrIn, u64In, releaseIn } from './fixtures/fuse-builder.ts';

const R = FUSE_UNIQUE_RESEND;
const ctx = { signal: new AbortController().signal };

function parse(buf: Buffer): FuseRequest {
  const r = parseRequest(buf);
  if (!r.ok) throw r.error;
  return r.request;
}

const mkdir = (unique: bigint, parent: bigint, name: string) => parse(request(Opcode.MKDIR, unique, parent, [mkdirIn(0o755, 0o022), cstr(name)]));
const mknod = (unique: bigint, parent: bigint, name: string, mode: number, rdev = 0) => parse(request(Opcode.MKNOD, unique, parent, [mknodIn(mode, rdev, 0), cstr(name)]));
const symlink = (unique: bigint, parent: bigint, name: string, target: string) => parse(request(Opcode.SYMLINK, unique, parent, [cstr(name), cstr(target)]));
const link = (unique: bigint, parent: bigint, oldnodeid: bigint, name: string) => parse(request(Opcode.LINK, unique, parent, [u64In(oldnodeid), cstr(name)]));
const create = (unique: bigint, parent: bigint, name: string, flags: number) => parse(request(Opcode.CREATE, unique, parent, [createIn(flags, 0o644, 0o022, 0), cstr(name)]));
const unlink = (unique: bigint, parent: bigint, name: string) => parse(request(Opcode.UNLINK, unique, parent, [cstr(name)]));
const rmdir = (unique: bigint, parent: bigint, name: string) => parse(request(Opcode.RMDIR, unique, parent, [cstr(name)]));
const rename = (unique: bigint, parent: bigint, name: string, newdir: bigint, newname: string) => parse(request(Opcode.RENAME, unique, parent, [u64In(newdir), cstr(name), cstr(newname)]));
const rename2 = (unique: bigint, parent: bigint, name: string, newdir: bigint, newname: string, flags: number) =>
  parse(request(Opcode.RENAME2, unique, parent, [rename2In(newdir, flags), cstr(name), cstr(newname)]));
const zeroAttr = { fh: 0n, size: 0n, lockOwner: 0n, atime: 0n, mtime: 0n, ctime: 0n, atimensec: 0, mtimensec: 0, ctimensec: 0, mode: 0, uid: 0, gid: 0 };
const setattr = (unique: bigint, nodeid: bigint, valid: number, size = 0n) => parse(request(Opcode.SETATTR, unique, nodeid, [setattrIn({ ...zeroAttr, valid, size })]));
const lookup = (unique: bigint, parent: bigint, name: string) => parse(request(Opcode.LOOKUP, unique, parent, [cstr(name)]));

/** The out header's error field. */
const errorOf = (reply: Buffer | undefined): number | undefined => reply?.readInt32LE(4);
const uniqueOf = (reply: Buffer | undefined): bigint | undefined => reply?.readBigUInt64LE(8);

describe('intent records', () => {
  test('exactly the non-idempotent operations get one; truncating SETATTR only', () => {
    for (const req of [mkdir(2n, 1n, 'd'), mknod(2n, 1n, 'n', S_IFREG | 0o644), symlink(2n, 1n, 's', 't'), link(2n, 1n, 5n, 'l'), create(2n, 1n, 'f', fsc.O_WRONLY), unlink(2n, 1n, 'f'), rmdir(2n, 1n, 'd'), rename(2n, 1n, 'a', 1n, 'b'), rename2(2n, 1n, 'a', 1n, 'b', 1), setattr(2n, 3n, FATTR.SIZE | FATTR.MODE, 10n)]) {
      assert.ok(intentOf(req), req.op);
    }
    for (const req of [lookup(2n, 1n, 'x'), setattr(2n, 3n, FATTR.MODE), parse(request(Opcode.TMPFILE, 2n, 1n, [createIn(0, 0o644, 0, 0), cstr('t')])), parse(request(Opcode.RELEASE, 2n, 3n, [releaseIn(1n, 0, 0, 0n)]))]) {
      assert.equal(intentOf(req), undefined, req.op);
    }
  });

  test('encode/decode round trip keeps every field, 64-bit values and non-UTF-8 names included', () => {
    const rec = { opcode: Opcode.RENAME2, nodeid: (1n << 64n) - 1n, other: 1n << 63n, flags: 0xffffffff, name: Buffer.from([0xff, 0xfe, 0x61]), name2: Buffer.from('new name', 'utf8') };
    const back = decodeIntent(encodeIntent(rec));
    assert.deepEqual(back, rec);
    const fromReq = intentOf(rename2(7n, 4n, 'old', 9n, 'new', RENAME_WHITEOUT))!;
    assert.deepEqual(decodeIntent(encodeIntent(fromReq)), { opcode: Opcode.RENAME2, nodeid: 4n, other: 9n, flags: RENAME_WHITEOUT, name: Buffer.from('old'), name2: Buffer.from('new') });
    const trunc = intentOf(setattr(7n, 3n, FATTR.SIZE, 1234n))!;
    assert.equal(decodeIntent(encodeIntent(trunc)).other, 1234n);
  });

  test('decode refuses anything that is not an intent record', () => {
    const good = encodeIntent(intentOf(mkdir(2n, 1n, 'd'))!);
    assert.throws(() => decodeIntent(good.subarray(0, 31)), RangeError);
    assert.throws(() => decodeIntent(Buffer.concat([good, Buffer.from([0])])), RangeError);
    const badVersion = Buffer.from(good);
    badVersion[0] = 2;
    assert.throws(() => decodeIntent(badVersion), RangeError);
    const badPad = Buffer.from(good);
    badPad[2] = 1;
    assert.throws(() => decodeIntent(badPad), RangeError);
  });

  test('the key is the unique without the resend bit', () => {
    assert.equal(intentKey(42n), `${INTENT_KEY_PREFIX}42`);
    assert.equal(intentKey(42n | R), 'intent/42');
  });
});

describe('resolveReplay', () => {
  test('a replayed mkdir that finds its directory answers with that entry and does not run', async () => {
    const fs = new MemFs();
    const d = fs.add(1n, 'd', S_IFDIR | 0o755);
    const reply = await resolveReplay(mkdir(10n | R, 1n, 'd'), fs, ctx);
    assert.equal(errorOf(reply), 0);
    assert.equal(uniqueOf(reply), 10n | R, 'the reply echoes the resent unique');
    assert.equal(reply!.readBigUInt64LE(16), d.nodeid);
    assert.equal(fs.ran.get('mkdir'), undefined);
    assert.equal(fs.nlookup.get(d.nodeid), 1n, 'the answer counts one lookup, as the mkdir reply would');
  });

  test('a replayed mkdir that finds nothing, or something that is not a directory, runs', async () => {
    const fs = new MemFs();
    assert.equal(await resolveReplay(mkdir(10n | R, 1n, 'd'), fs, ctx), undefined);
    const f = fs.add(1n, 'f', S_IFREG | 0o644);
    assert.equal(await resolveReplay(mkdir(11n | R, 1n, 'f'), fs, ctx), undefined);
    assert.equal(fs.nlookup.get(f.nodeid), 0n, 'the probe lookup was forgotten again');
  });

  test('mknod, symlink and link resolve only to what they would have made', async () => {
    const fs = new MemFs();
    const fifo = fs.add(1n, 'fifo', 0o010644);
    const file = fs.add(1n, 'file', S_IFREG | 0o644);
    fs.dirs.get(1n)!.set('hard', file);
    const sl = fs.add(1n, 'sl', 0o120777);
    assert.equal(errorOf(await resolveReplay(mknod(2n | R, 1n, 'fifo', 0o010644), fs, ctx)), 0);
    assert.equal(await resolveReplay(mknod(3n | R, 1n, 'file', 0o010644), fs, ctx), undefined, 'a FIFO was asked for, a regular file is there');
    assert.equal(errorOf(await resolveReplay(mknod(4n | R, 1n, 'file', 0), fs, ctx)), 0, 'mode type 0 means a regular file');
    assert.equal(errorOf(await resolveReplay(symlink(5n | R, 1n, 'sl', 'target'), fs, ctx)), 0);
    assert.equal(await resolveReplay(symlink(6n | R, 1n, 'file', 'target'), fs, ctx), undefined);
    assert.equal(errorOf(await resolveReplay(link(7n | R, 1n, file.nodeid, 'hard'), fs, ctx)), 0);
    assert.equal(await resolveReplay(link(8n | R, 1n, fifo.nodeid, 'hard'), fs, ctx), undefined, 'the name leads to another node');
    assert.equal(fs.nlookup.get(fifo.nodeid), 1n);
    assert.equal(fs.nlookup.get(file.nodeid), 2n, 'mknod(type 0) + link answered; the failed probes forgotten');
    assert.equal(fs.nlookup.get(sl.nodeid), 1n);
    for (const op of ['mknod', 'symlink', 'link']) assert.equal(fs.ran.get(op), undefined, op);
  });

  test('a replayed create that finds its file opens it without O_CREAT/O_EXCL/O_TRUNC and answers entry + open', async () => {
    const fs = new MemFs();
    const f = fs.add(1n, 'f', S_IFREG | 0o644);
    const flags = fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL | fsc.O_TRUNC | fsc.O_APPEND;
    const reply = await resolveReplay(create(20n | R, 1n, 'f', flags), fs, ctx);
    assert.equal(fs.ran.get('create'), undefined);
    assert.deepEqual(fs.opened, [{ fh: 1n, nodeid: f.nodeid, flags: fsc.O_WRONLY | fsc.O_APPEND }]);
    const attrs = { ino: f.nodeid, size: 0n, blocks: 0n, atime: 0n, mtime: 0n, ctime: 0n, atimensec: 0, mtimensec: 0, ctimensec: 0, mode: S_IFREG | 0o644, nlink: 1, uid: 0, gid: 0, rdev: 0, blksize: 0, flags: 0 };
    const expected = Buffer.concat([outHeader(16 + 128 + 16, 0, 20n | R), entryOut(f.nodeid, 0n, 1n, 1n, 0, 0, attrs), openOut(1n, 0, 0)]);
    assert.deepEqual(reply, expected);
  });

  test('a replayed create whose name is absent or a directory runs; a failing OPEN is the answer', async () => {
    const fs = new MemFs();
    assert.equal(await resolveReplay(create(21n | R, 1n, 'f', fsc.O_WRONLY | fsc.O_CREAT), fs, ctx), undefined);
    const d = fs.add(1n, 'd', S_IFDIR | 0o755);
    assert.equal(await resolveReplay(create(22n | R, 1n, 'd', fsc.O_WRONLY | fsc.O_CREAT), fs, ctx), undefined);
    assert.equal(fs.nlookup.get(d.nodeid), 0n);
    const f = fs.add(1n, 'f', S_IFREG | 0o644);
    fs.open = () => {
      throw Object.assign(new Error('no'), { code: 'EACCES' });
    };
    const reply = await resolveReplay(create(23n | R, 1n, 'f', fsc.O_WRONLY | fsc.O_CREAT), fs, ctx);
    assert.equal(errorOf(reply), -13);
    assert.equal(uniqueOf(reply), 23n | R);
    assert.equal(fs.nlookup.get(f.nodeid), 0n, 'the entry did not go to the kernel');
  });

  test('a replayed unlink or rmdir whose name is gone is a success; one whose name is there runs', async () => {
    const fs = new MemFs();
    assert.deepEqual(await resolveReplay(unlink(30n | R, 1n, 'gone'), fs, ctx), outHeader(16, 0, 30n | R));
    assert.deepEqual(await resolveReplay(rmdir(31n | R, 1n, 'gone'), fs, ctx), outHeader(16, 0, 31n | R));
    const f = fs.add(1n, 'f', S_IFREG | 0o644);
    assert.equal(await resolveReplay(unlink(32n | R, 1n, 'f'), fs, ctx), undefined);
    assert.equal(fs.nlookup.get(f.nodeid), 0n);
    // A parent the filesystem does not know: not "gone", the operation runs and reports.
    assert.equal(await resolveReplay(unlink(33n | R, 99n, 'f'), fs, ctx), undefined);
  });

  test('a replayed rename is done when the old name is gone and the new one exists', async () => {
    const fs = new MemFs();
    const sub = fs.add(1n, 'sub', S_IFDIR | 0o755);
    const b = fs.add(sub.nodeid, 'b', S_IFREG | 0o644);
    assert.deepEqual(await resolveReplay(rename(40n | R, 1n, 'a', sub.nodeid, 'b'), fs, ctx), outHeader(16, 0, 40n | R));
    assert.equal(fs.nlookup.get(b.nodeid), 0n);
    // Old name still there: it did not run.
    const a = fs.add(1n, 'a', S_IFREG | 0o644);
    assert.equal(await resolveReplay(rename(41n | R, 1n, 'a', sub.nodeid, 'b'), fs, ctx), undefined);
    // Neither there: not done either (it runs and fails as it should).
    assert.equal(await resolveReplay(rename(42n | R, 1n, 'x', 1n, 'y'), fs, ctx), undefined);
    // RENAME_WHITEOUT leaves a whiteout under the old name.
    fs.dirs.get(1n)!.delete('a');
    fs.add(1n, 'a', S_IFCHR, 0);
    assert.deepEqual(await resolveReplay(rename2(43n | R, 1n, 'a', sub.nodeid, 'b', RENAME_WHITEOUT), fs, ctx), outHeader(16, 0, 43n | R));
    // RENAME_EXCHANGE cannot be told apart: it runs.
    assert.equal(await resolveReplay(rename2(44n | R, 1n, 'a', sub.nodeid, 'b', RENAME_EXCHANGE), fs, ctx), undefined);
    assert.equal(fs.outstandingLookups() - (fs.nlookup.get(a.nodeid) ?? 0n), 0n, 'every probe was forgotten');
    assert.equal(fs.ran.get('rename'), undefined);
  });

  test('a truncating setattr runs again', async () => {
    assert.equal(await resolveReplay(setattr(50n | R, 3n, FATTR.SIZE, 0n), new MemFs(), ctx), undefined);
  });
});

/** A SessionLink that records its calls in order. */
function recordingLink(): SessionLink & { calls: string[]; checkpoint: Map<string, Buffer> } {
  const calls: string[] = [];
  const checkpoint = new Map<string, Buffer>();
  return {
    calls,
    checkpoint,
    journalOpen: (id) => void calls.push(`journalOpen ${id}`),
    journalClose: (id) => void calls.push(`journalClose ${id}`),
    saveInit: () => void calls.push('saveInit'),
    checkpointPut: (key, value) => {
      calls.push(`put ${key}`);
      checkpoint.set(key, value);
    },
    checkpointDelete: (key) => {
      calls.push(`delete ${key}`);
      checkpoint.delete(key);
    },
    adopt: async () => ({ closed: 0, probed: 0 }),
  };
}

describe('ReplayGuard', () => {
  test('a fresh request gets its intent record when recorded and loses it at end; idempotent ones get none', () => {
    const link = recordingLink();
    const guard = new ReplayGuard({ link });
    const t = guard.begin(mkdir(8n, 1n, 'd'));
    assert.deepEqual(t, { key: 'intent/8', resolve: false, intent: encodeIntent(intentOf(mkdir(8n, 1n, 'd'))!) });
    assert.deepEqual(link.calls, [], 'begin writes nothing: the server asks intentNeeded first');
    guard.record(t);
    assert.deepEqual(decodeIntent(link.checkpoint.get('intent/8')!), intentOf(mkdir(8n, 1n, 'd')));
    guard.end(t.key!);
    assert.deepEqual(link.calls, ['put intent/8', 'delete intent/8']);
    const idempotent = guard.begin(lookup(9n, 1n, 'd'));
    assert.deepEqual(idempotent, { key: undefined, resolve: false, intent: undefined });
    guard.record(idempotent);
    assert.equal(link.calls.length, 2);
  });

  test('without a link nothing is recorded or resolved', () => {
    const guard = new ReplayGuard({ previous: new Map([['intent/8', encodeIntent(intentOf(mkdir(8n, 1n, 'd'))!)]]) });
    assert.deepEqual(guard.begin(mkdir(8n | R, 1n, 'd')), { key: undefined, resolve: false, intent: undefined });
  });

  test('a replay with a matching record is resolved and keeps the record until answered', () => {
    const link = recordingLink();
    const previous = new Map([
      ['intent/8', encodeIntent(intentOf(mkdir(8n, 1n, 'd'))!)],
      ['node/2', Buffer.from('not ours')],
    ]);
    const replayed: bigint[] = [];
    const guard = new ReplayGuard({ link, previous, onReplayed: (u) => replayed.push(u) });
    assert.equal(guard.pending, 1);
    assert.deepEqual(guard.begin(mkdir(8n | R, 1n, 'd')), { key: 'intent/8', resolve: true, intent: undefined });
    assert.deepEqual(replayed, [8n]);
    assert.deepEqual(link.calls, [], 'the record is already in the checkpoint');
    assert.equal(guard.pending, 0);
  });

  test('a replay without a record, or with one for another request, runs with a fresh record', () => {
    const link = recordingLink();
    const logged: string[] = [];
    const log = { info() {}, warn: (o: object) => void logged.push((o as { event: string }).event), error() {} };
    const guard = new ReplayGuard({ link, previous: new Map([['intent/9', encodeIntent(intentOf(mkdir(9n, 1n, 'other'))!)]]), log });
    const a = guard.begin(unlink(7n | R, 1n, 'f'));
    const b = guard.begin(mkdir(9n | R, 1n, 'd'));
    assert.deepEqual([a.key, a.resolve, b.key, b.resolve], ['intent/7', false, 'intent/9', false]);
    guard.record(a);
    guard.record(b);
    assert.deepEqual(link.calls, ['put intent/7', 'put intent/9']);
    assert.deepEqual(logged, ['fuse.replay_intent_mismatch']);
  });

  test('the first request that is not a replay ends the replay phase and deletes stale records; FORGET does not', () => {
    const link = recordingLink();
    const previous = new Map([
      ['intent/5', encodeIntent(intentOf(unlink(5n, 1n, 'a'))!)],
      ['intent/6', encodeIntent(intentOf(mkdir(6n, 1n, 'b'))!)],
    ]);
    const guard = new ReplayGuard({ link, previous });
    guard.begin(parse(request(Opcode.FORGET, 100n, 3n, [u64In(1n)])));
    assert.equal(guard.replaying, true);
    guard.begin(unlink(5n | R, 1n, 'a'));
    assert.equal(guard.replaying, true);
    guard.begin(lookup(101n, 1n, 'x'));
    assert.equal(guard.replaying, false);
    assert.deepEqual(link.calls, ['delete intent/6'], 'only the record nobody replayed; intent/5 waits for its answer');
    // A late replay of the deleted one would simply run: it has no record any more.
    assert.deepEqual(guard.begin(mkdir(6n | R, 1n, 'b')), { key: 'intent/6', resolve: false, intent: encodeIntent(intentOf(mkdir(6n, 1n, 'b'))!) });
  });
});

describe('intentNeeded (found by bench/chaos.ts: stress-ng xattr got success for an XATTR_CREATE of an existing attribute after a crash)', () => {
  test('a request that will fail, or only open, as the filesystem stands needs no record; one that will change it does', async () => {
    const fs = new MemFs();
    const d = fs.add(1n, 'd', S_IFDIR | 0o755);
    const f = fs.add(1n, 'f', S_IFREG | 0o644);
    const cases: [FuseRequest, boolean][] = [
      [mkdir(2n, 1n, 'd'), false],
      [mkdir(2n, 1n, 'new'), true],
      [mknod(2n, 1n, 'f', S_IFREG | 0o644), false],
      [symlink(2n, 1n, 'new', 'f'), true],
      [link(2n, 1n, f.nodeid, 'd'), false],
      [link(2n, 1n, f.nodeid, 'new'), true],
      [create(2n, 1n, 'f', fsc.O_CREAT | fsc.O_EXCL | fsc.O_WRONLY), false],
      [create(2n, 1n, 'f', fsc.O_CREAT | fsc.O_TRUNC | fsc.O_WRONLY), false],
      [create(2n, 1n, 'new', fsc.O_CREAT | fsc.O_EXCL | fsc.O_WRONLY), true],
      [unlink(2n, 1n, 'gone'), false],
      [unlink(2n, 1n, 'f'), true],
      [rmdir(2n, 1n, 'd'), true],
      [rename(2n, 1n, 'gone', 1n, 'x'), false],
      [rename(2n, 1n, 'f', 1n, 'x'), true],
      [setattr(2n, f.nodeid, FATTR.SIZE, 0n), true],
    ];
    for (const [req, needed] of cases) assert.equal(await intentNeeded(req, fs, ctx), needed, `${req.op} ${JSON.stringify((req as { name?: string }).name ?? '')}`);
    assert.equal(fs.outstandingLookups(), 0n, 'every entry a look found was forgotten again');
    assert.equal(fs.get(1n, 'new'), undefined, 'looking changed nothing');
    assert.deepEqual([...fs.ran.keys()].sort(), ['forget', 'lookup'], 'only looks ran');
    assert.ok(fs.get(1n, 'd') === d && fs.get(1n, 'f') === f);
  });

  test('a LOOKUP that fails otherwise than ENOENT says a record is needed', async () => {
    const failing = { lookup: () => Promise.reject(Object.assign(new Error('EIO'), { code: 'EIO', errno: 5 })) };
    assert.equal(await intentNeeded(mkdir(2n, 1n, 'd'), failing, ctx), true);
    assert.equal(await intentNeeded(unlink(2n, 1n, 'd'), failing, ctx), true);
  });
});

describe('extended attributes (found by bench/chaos.ts: stress-ng xattr got EEXIST after a replayed XATTR_CREATE)', () => {
  const setxattr = (unique: bigint, nodeid: bigint, name: string, flags: number) => {
    const head = Buffer.alloc(8);
    head.writeUInt32LE(1, 0);
    head.writeUInt32LE(flags, 4);
    return parse(request(Opcode.SETXATTR, unique, nodeid, [head, cstr(name), Buffer.from('v')]));
  };
  const removexattr = (unique: bigint, nodeid: bigint, name: string) => parse(request(Opcode.REMOVEXATTR, unique, nodeid, [cstr(name)]));
  /** A filesystem whose GETXATTR says the attribute is there (size 1) or not (ENODATA). */
  const withXattr = (present: boolean) => ({
    getxattr: (req: { header: { unique: bigint } }) => {
      if (!present) throw Object.assign(new Error('no attribute'), { code: 'ENODATA', errno: 61 });
      const b = Buffer.alloc(24);
      b.writeUInt32LE(24, 0);
      b.writeBigUInt64LE(req.header.unique, 8);
      b.writeUInt32LE(1, 16);
      return b;
    },
  });

  test('SETXATTR with XATTR_CREATE and REMOVEXATTR get intent records, other SETXATTRs none', () => {
    assert.ok(intentOf(setxattr(2n, 3n, 'user.a', 1)));
    assert.ok(intentOf(removexattr(2n, 3n, 'user.a')));
    assert.equal(intentOf(setxattr(2n, 3n, 'user.a', 0)), undefined);
    assert.equal(intentOf(setxattr(2n, 3n, 'user.a', 2)), undefined);
  });

  test('a replayed XATTR_CREATE whose attribute exists, and a replayed REMOVEXATTR whose attribute is gone, succeed', async () => {
    assert.equal(errorOf(await resolveReplay(setxattr(5n | R, 3n, 'user.a', 1), withXattr(true), ctx)), 0);
    assert.equal(await resolveReplay(setxattr(6n | R, 3n, 'user.a', 1), withXattr(false), ctx), undefined, 'not there: it runs');
    assert.equal(errorOf(await resolveReplay(removexattr(7n | R, 3n, 'user.a'), withXattr(false), ctx)), 0);
    assert.equal(await resolveReplay(removexattr(8n | R, 3n, 'user.a'), withXattr(true), ctx), undefined, 'still there: it runs');
  });

  test('an XATTR_CREATE of an attribute that exists, and a REMOVEXATTR of one that does not, need no record', async () => {
    assert.equal(await intentNeeded(setxattr(5n, 3n, 'user.a', 1), withXattr(true), ctx), false);
    assert.equal(await intentNeeded(setxattr(5n, 3n, 'user.a', 1), withXattr(false), ctx), true);
    assert.equal(await intentNeeded(removexattr(5n, 3n, 'user.a'), withXattr(false), ctx), false);
    assert.equal(await intentNeeded(removexattr(5n, 3n, 'user.a'), withXattr(true), ctx), true);
  });
});
