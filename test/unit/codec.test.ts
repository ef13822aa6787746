import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  FOPEN_KEEP_CACHE,
  FOPEN_PASSTHROUGH,
  FUSE_ATTR_DAX,
  FUSE_EXT_GROUPS,
  FUSE_OUT_HEADER_SIZE,
  FUSE_UNIQUE_RESEND,
  InitFlags,
  Opcode,
  RENAME_NOREPLACE,
  type InitIn,
  type OpcodeName,
} from '../../kernel/abi.ts';
import {
  DirentBuilder,
  FramingError,
  OPCODE_TABLE,
  describeReply,
  describeRequest,
  direntType,
  expectsReply,
  isResend,
  negotiateInit,
  opcodeInfo,
  opcodeName,
  parseRequest,
  replyAttr,
  replyBmap,
  replyCopyFileRange64,
  replyCreate,
  replyData,
  replyEmpty,
  replyEntry,
  replyError,
  replyInit,
  replyLk,
  replyLseek,
  replyOpen,
  replyPoll,
  replyStatfs,
  replyWrite,
  replyXattrSize,
  type EntryOut,
  type FramingErrorCode,
  type FuseRequest,
  type ParseOptions,
  type RequestHeader,
} from '../../client/fuse/codec.ts';
import * as fb from './fixtures/fuse-builder.ts';
import { mulberry32 } from './fixtures/prng.ts';

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');

function hdr(opcode: number, unique: bigint, nodeid: bigint, len: number, c: fb.Caller = {}, extensions = Buffer.alloc(0)): RequestHeader {
  return { unique, nodeid, uid: c.uid ?? 1000, gid: c.gid ?? 1000, pid: c.pid ?? 4242, opcode, len, extensions };
}

/** A request fixture: bytes, what they decode to, and from which (len-patched) prefix length they still decode. */
interface Fixture {
  name: string;
  buf: Buffer;
  expected: FuseRequest;
  opts?: ParseOptions;
  /** Shortest consistent prefix that still parses (default: only the whole request). */
  minValid?: number;
}

/** A request without its header (the fixture fills it in), per union member. */
type Expected<T = FuseRequest> = T extends FuseRequest ? Omit<T, 'header'> & { header?: RequestHeader } : never;

const N = (s: string): { name: string; nameBytes: Buffer } => ({ name: s, nameBytes: Buffer.from(s) });

// Literal hex fixtures, written out by hand from the C structs.
const lookupHex = hex(`
  2c000000 01000000 1000000000000000 0100000000000000 e8030000 e8030000 92100000 0000 0000
  666f6f00`);
const initHex = hex(`
  68000000 1a000000 0200000000000000 0000000000000000 00000000 00000000 00000000 00000000
  07000000 2d000000 00000200 fbffff7b bf070000
  ${'00'.repeat(44)}`);
const writeHex = hex(`
  55000000 10000000 2000000000000000 0500000000000000 e8030000 e8030000 92100000 00000000
  0300000000000000 0010000000000000 05000000 02000000 8877665544332211 02800000 00000000
  68656c6c6f`);
const rename2Hex = hex(`
  3d000000 2d000000 3000000000000000 0100000000000000 e8030000 e8030000 92100000 00000000
  0700000000000000 01000000 00000000
  6100 626200`);
const batchForgetHex = hex(`
  50000000 2a000000 4000000000000000 0000000000000000 00000000 00000000 00000000 00000000
  02000000 00000000
  0500000000000000 0100000000000000
  0900000000000000 0300000000000000`);

const root: fb.Caller = { uid: 0, gid: 0, pid: 0 };
const secctx = fb.extension(1, Buffer.from('selinux\0ctx\0'));
const groups = fb.extension(FUSE_EXT_GROUPS, new fb.Struct(8).u32(0, 1).u32(4, 27).buf);

function fixtures(): Fixture[] {
  const list: Fixture[] = [];
  const add = (name: string, buf: Buffer, expected: Expected, extra: Partial<Fixture> = {}): void => {
    const h = buf.readUInt32LE(4);
    const header = expected.header ?? hdr(h, buf.readBigUInt64LE(8), buf.readBigUInt64LE(16), buf.length);
    list.push({ name, buf, expected: { ...expected, header } as FuseRequest, ...extra });
  };
  const req = (op: number, unique: bigint, nodeid: bigint, parts: Buffer[], c?: fb.Caller, ext?: Buffer): Buffer => fb.request(op, unique, nodeid, parts, c, ext);

  add('LOOKUP (hex)', lookupHex, { op: 'lookup', ...N('foo') });
  add('INIT 7.45 with flags2 (hex)', initHex, {
    op: 'init',
    header: hdr(Opcode.INIT, 2n, 0n, 104, root),
    init: { major: 7, minor: 45, maxReadahead: 0x20000, flags: 0x7bfffffbn | (0x7bfn << 32n) },
  }, { minValid: 40 + 16 });
  add('WRITE with data (hex)', writeHex, {
    op: 'write',
    fh: 3n,
    offset: 4096n,
    size: 5,
    writeFlags: 2,
    lockOwner: 0x1122334455667788n,
    flags: 0x8002,
    data: Buffer.from('hello'),
  });
  add('RENAME2 with two names (hex)', rename2Hex, { op: 'rename2', newdir: 7n, flags: RENAME_NOREPLACE, ...N('a'), newname: 'bb', newnameBytes: Buffer.from('bb') });
  add('BATCH_FORGET (hex)', batchForgetHex, {
    op: 'batch_forget',
    header: hdr(Opcode.BATCH_FORGET, 0x40n, 0n, 80, root),
    forgets: [
      { nodeid: 5n, nlookup: 1n },
      { nodeid: 9n, nlookup: 3n },
    ],
  });

  add('FORGET', req(Opcode.FORGET, 100n, 7n, [fb.u64In(3n)]), { op: 'forget', nlookup: 3n });
  add('GETATTR', req(Opcode.GETATTR, 102n, 7n, [fb.getattrIn(1, 55n)]), { op: 'getattr', getattrFlags: 1, fh: 55n });
  const sa = {
    valid: 0x7ff,
    fh: 9n,
    size: 1n << 40n,
    lockOwner: 77n,
    atime: 1700000000n,
    mtime: 1700000001n,
    ctime: 1700000002n,
    atimensec: 1,
    mtimensec: 2,
    ctimensec: 3,
    mode: 0o100600,
    uid: 12,
    gid: 34,
  };
  add('SETATTR', req(Opcode.SETATTR, 104n, 7n, [fb.setattrIn(sa)]), { op: 'setattr', ...sa });
  add('READLINK', req(Opcode.READLINK, 106n, 7n, []), { op: 'readlink' });
  add('SYMLINK name then target', req(Opcode.SYMLINK, 108n, 1n, [fb.cstr('link'), fb.cstr('/etc/passwd')]), {
    op: 'symlink',
    ...N('link'),
    target: '/etc/passwd',
    targetBytes: Buffer.from('/etc/passwd'),
  });
  add('MKNOD', req(Opcode.MKNOD, 110n, 1n, [fb.mknodIn(0o20644, 0x0103, 0o022), fb.cstr('dev')]), { op: 'mknod', mode: 0o20644, rdev: 0x0103, umask: 0o022, ...N('dev') });
  add('MKDIR', req(Opcode.MKDIR, 112n, 1n, [fb.mkdirIn(0o755, 0o022), fb.cstr('dir')]), { op: 'mkdir', mode: 0o755, umask: 0o022, ...N('dir') });
  add('UNLINK', req(Opcode.UNLINK, 114n, 1n, [fb.cstr('gone')]), { op: 'unlink', ...N('gone') });
  add('RMDIR', req(Opcode.RMDIR, 116n, 1n, [fb.cstr('empty')]), { op: 'rmdir', ...N('empty') });
  add('RENAME', req(Opcode.RENAME, 118n, 1n, [fb.u64In(5n), fb.cstr('old'), fb.cstr('new')]), {
    op: 'rename',
    newdir: 5n,
    flags: 0,
    ...N('old'),
    newname: 'new',
    newnameBytes: Buffer.from('new'),
  });
  add('LINK', req(Opcode.LINK, 120n, 1n, [fb.u64In(33n), fb.cstr('hard')]), { op: 'link', oldnodeid: 33n, newname: 'hard', newnameBytes: Buffer.from('hard') });
  add('OPEN', req(Opcode.OPEN, 122n, 7n, [fb.openIn(0o100002, 1)]), { op: 'open', flags: 0o100002, openFlags: 1 });
  add('READ', req(Opcode.READ, 124n, 7n, [fb.rwIn(4n, 8192n, 4096, 2, 99n, 0o100000)]), {
    op: 'read',
    fh: 4n,
    offset: 8192n,
    size: 4096,
    readFlags: 2,
    lockOwner: 99n,
    flags: 0o100000,
  });
  add('STATFS', req(Opcode.STATFS, 126n, 1n, []), { op: 'statfs' });
  add('RELEASE', req(Opcode.RELEASE, 128n, 7n, [fb.releaseIn(4n, 0o2, 1, 99n)]), { op: 'release', fh: 4n, flags: 2, releaseFlags: 1, lockOwner: 99n });
  add('FSYNC', req(Opcode.FSYNC, 130n, 7n, [fb.fsyncIn(4n, 1)]), { op: 'fsync', fh: 4n, fsyncFlags: 1 });
  add('SETXATTR (8-byte in)', req(Opcode.SETXATTR, 132n, 7n, [fb.setxattrIn(3, 1), fb.cstr('user.x'), Buffer.from('abc')]), {
    op: 'setxattr',
    size: 3,
    flags: 1,
    setxattrFlags: 0,
    ...N('user.x'),
    value: Buffer.from('abc'),
  });
  add(
    'SETXATTR (16-byte in, SETXATTR_EXT)',
    req(Opcode.SETXATTR, 134n, 7n, [fb.setxattrIn(2, 0, 1), fb.cstr('system.posix_acl_access'), Buffer.from([1, 2])]),
    { op: 'setxattr', size: 2, flags: 0, setxattrFlags: 1, ...N('system.posix_acl_access'), value: Buffer.from([1, 2]) },
    { opts: { flags: InitFlags.SETXATTR_EXT } },
  );
  add('GETXATTR', req(Opcode.GETXATTR, 136n, 7n, [fb.u32In(0), fb.cstr('user.x')]), { op: 'getxattr', size: 0, ...N('user.x') });
  add('LISTXATTR', req(Opcode.LISTXATTR, 138n, 7n, [fb.u32In(4096)]), { op: 'listxattr', size: 4096 });
  add('REMOVEXATTR', req(Opcode.REMOVEXATTR, 140n, 7n, [fb.cstr('user.x')]), { op: 'removexattr', ...N('user.x') });
  add('FLUSH', req(Opcode.FLUSH, 142n, 7n, [fb.flushIn(4n, 99n)]), { op: 'flush', fh: 4n, lockOwner: 99n });
  add('OPENDIR', req(Opcode.OPENDIR, 144n, 1n, [fb.openIn(0o200000, 0)]), { op: 'opendir', flags: 0o200000, openFlags: 0 });
  add('READDIR', req(Opcode.READDIR, 146n, 1n, [fb.rwIn(2n, 3n, 4096, 0, 0n, 0)]), { op: 'readdir', fh: 2n, offset: 3n, size: 4096, readFlags: 0, lockOwner: 0n, flags: 0 });
  add('RELEASEDIR', req(Opcode.RELEASEDIR, 148n, 1n, [fb.releaseIn(2n, 0, 0, 0n)]), { op: 'releasedir', fh: 2n, flags: 0, releaseFlags: 0, lockOwner: 0n });
  add('FSYNCDIR', req(Opcode.FSYNCDIR, 150n, 1n, [fb.fsyncIn(2n, 0)]), { op: 'fsyncdir', fh: 2n, fsyncFlags: 0 });
  for (const [name, op, lkop] of [
    ['GETLK', Opcode.GETLK, 'getlk'],
    ['SETLK', Opcode.SETLK, 'setlk'],
    ['SETLKW', Opcode.SETLKW, 'setlkw'],
  ] as const) {
    add(name, req(op, 152n, 7n, [fb.lkIn(4n, 5n, 0n, 0x7fffffffffffffffn, 1, 321, 0)]), {
      op: lkop,
      fh: 4n,
      owner: 5n,
      lk: { start: 0n, end: 0x7fffffffffffffffn, type: 1, pid: 321 },
      lkFlags: 0,
    });
  }
  add('ACCESS', req(Opcode.ACCESS, 154n, 7n, [fb.u32In(4)]), { op: 'access', mask: 4 });
  add('CREATE', req(Opcode.CREATE, 156n, 1n, [fb.createIn(0o101, 0o100644, 0o022, 0), fb.cstr('new.txt')]), {
    op: 'create',
    flags: 0o101,
    mode: 0o100644,
    umask: 0o022,
    openFlags: 0,
    ...N('new.txt'),
  });
  {
    const ext = Buffer.concat([secctx, groups]);
    const buf = req(Opcode.CREATE, 158n, 1n, [fb.createIn(0o101, 0o100600, 0, 1), fb.cstr('f')], {}, ext);
    add('CREATE with security context and supplementary groups extensions', buf, {
      op: 'create',
      header: hdr(Opcode.CREATE, 158n, 1n, buf.length, {}, ext),
      flags: 0o101,
      mode: 0o100600,
      umask: 0,
      openFlags: 1,
      ...N('f'),
    });
  }
  add('INTERRUPT', req(Opcode.INTERRUPT, 161n, 0n, [fb.u64In(160n)]), { op: 'interrupt', targetUnique: 160n });
  add('BMAP', req(Opcode.BMAP, 162n, 7n, [fb.bmapIn(12n, 4096)]), { op: 'bmap', block: 12n, blocksize: 4096 });
  add('DESTROY', req(Opcode.DESTROY, 164n, 0n, [], root), { op: 'destroy', header: hdr(Opcode.DESTROY, 164n, 0n, 40, root) });
  add('POLL', req(Opcode.POLL, 166n, 7n, [fb.pollIn(4n, 8n, 1, 0x19)]), { op: 'poll', fh: 4n, kh: 8n, flags: 1, events: 0x19 });
  add('FALLOCATE', req(Opcode.FALLOCATE, 168n, 7n, [fb.fallocateIn(4n, 0n, 1n << 20n, 3)]), { op: 'fallocate', fh: 4n, offset: 0n, length: 1n << 20n, mode: 3 });
  add('READDIRPLUS', req(Opcode.READDIRPLUS, 170n, 1n, [fb.rwIn(2n, 0n, 8192, 0, 0n, 0)]), {
    op: 'readdirplus',
    fh: 2n,
    offset: 0n,
    size: 8192,
    readFlags: 0,
    lockOwner: 0n,
    flags: 0,
  });
  add('LSEEK', req(Opcode.LSEEK, 172n, 7n, [fb.lseekIn(4n, 100n, 3)]), { op: 'lseek', fh: 4n, offset: 100n, whence: 3 });
  const cfr = [1n, 2n, 3n, 4n, 5n, 6n, 0n] as [bigint, bigint, bigint, bigint, bigint, bigint, bigint];
  const cfrFields = { fhIn: 1n, offIn: 2n, nodeidOut: 3n, fhOut: 4n, offOut: 5n, len: 6n, flags: 0n };
  add('COPY_FILE_RANGE', req(Opcode.COPY_FILE_RANGE, 174n, 7n, [fb.copyFileRangeIn(cfr)]), { op: 'copy_file_range', ...cfrFields });
  add('COPY_FILE_RANGE_64', req(Opcode.COPY_FILE_RANGE_64, 176n, 7n, [fb.copyFileRangeIn(cfr)]), { op: 'copy_file_range_64', ...cfrFields });
  add('SYNCFS', req(Opcode.SYNCFS, 178n, 1n, [fb.syncfsIn()]), { op: 'syncfs' });
  add('TMPFILE', req(Opcode.TMPFILE, 180n, 1n, [fb.createIn(0o20000002, 0o100600, 0o022, 0), fb.cstr('/')]), {
    op: 'tmpfile',
    flags: 0o20000002,
    mode: 0o100600,
    umask: 0o022,
    openFlags: 0,
    ...N('/'),
  });
  add('STATX', req(Opcode.STATX, 182n, 7n, [fb.statxIn(1, 4n, 0x800, 0xfff)]), { op: 'statx', getattrFlags: 1, fh: 4n, sxFlags: 0x800, sxMask: 0xfff });
  {
    const body = new fb.Struct(32).u64(0, 4n).u32(12, 0x5401).buf;
    const buf = req(Opcode.IOCTL, 184n, 7n, [body]);
    add('IOCTL (no decoder: unknown)', buf, { op: 'unknown', body }, { minValid: 40 });
  }
  {
    const buf = req(999, 186n, 7n, [Buffer.from([1, 2, 3])]);
    add('opcode 999 (unknown)', buf, { op: 'unknown', body: Buffer.from([1, 2, 3]) }, { minValid: 40 });
  }
  // Resend: bit 63 of unique survives decoding.
  add('LOOKUP resent after NOTIFY_RESEND', req(Opcode.LOOKUP, FUSE_UNIQUE_RESEND | 188n, 1n, [fb.cstr('again')]), { op: 'lookup', ...N('again') });
  return list;
}

const FIXTURES = fixtures();

test('literal hex fixtures equal the independent builder output', () => {
  assert.deepEqual(lookupHex, fb.request(Opcode.LOOKUP, 0x10n, 1n, [fb.cstr('foo')]));
  assert.deepEqual(initHex, fb.request(Opcode.INIT, 2n, 0n, [fb.initIn(7, 45, 0x20000, 0x7bfffffb, 0x7bf)], root));
  assert.deepEqual(writeHex, fb.request(Opcode.WRITE, 0x20n, 5n, [fb.rwIn(3n, 4096n, 5, 2, 0x1122334455667788n, 0x8002), Buffer.from('hello')]));
  assert.deepEqual(rename2Hex, fb.request(Opcode.RENAME2, 0x30n, 1n, [fb.rename2In(7n, 1), fb.cstr('a'), fb.cstr('bb')]));
  assert.deepEqual(batchForgetHex, fb.request(Opcode.BATCH_FORGET, 0x40n, 0n, [fb.batchForgetIn([[5n, 1n], [9n, 3n]])], root));
});

test('every fixture parses to its expected request', () => {
  for (const fx of FIXTURES) {
    const r = parseRequest(fx.buf, fx.opts);
    assert.ok(r.ok, `${fx.name}: ${r.ok ? '' : r.error.message}`);
    assert.deepEqual(r.request, fx.expected, fx.name);
  }
});

test('every truncated read is a framing error, never a throw', () => {
  for (const fx of FIXTURES) {
    for (let i = 0; i < fx.buf.length; i++) {
      const r = parseRequest(fx.buf.subarray(0, i), fx.opts);
      assert.equal(r.ok, false, `${fx.name} cut at ${i}`);
      if (r.ok) continue;
      assert.ok(r.error instanceof FramingError);
      assert.equal(r.error.code, i < 40 ? 'SHORT_HEADER' : 'LENGTH_MISMATCH', `${fx.name} cut at ${i}`);
      if (i >= 16) assert.equal(r.error.unique, fx.buf.readBigUInt64LE(8));
      else assert.equal(r.error.unique, undefined);
    }
  }
});

test('every consistent prefix (len patched) is rejected by size and name checks until it is complete', () => {
  const bodyErrors: FramingErrorCode[] = ['SHORT_BODY', 'MISSING_NAME', 'BAD_EXTLEN'];
  for (const fx of FIXTURES) {
    const minValid = fx.minValid ?? fx.buf.length;
    for (let i = 40; i < fx.buf.length; i++) {
      const cut = Buffer.from(fx.buf.subarray(0, i));
      cut.writeUInt32LE(i, 0);
      const r = parseRequest(cut, fx.opts);
      if (i >= minValid) {
        assert.ok(r.ok, `${fx.name} prefix ${i} should parse`);
        continue;
      }
      assert.equal(r.ok, false, `${fx.name} prefix ${i} should be rejected`);
      if (r.ok) continue;
      assert.ok(bodyErrors.includes(r.error.code), `${fx.name} prefix ${i}: ${r.error.code}`);
      assert.equal(r.error.unique, fx.buf.readBigUInt64LE(8));
      assert.equal(r.error.opcode, fx.buf.readUInt32LE(4));
    }
  }
});

test('len field disagreeing with the bytes read is LENGTH_MISMATCH', () => {
  const longer = Buffer.concat([lookupHex, Buffer.from([0])]);
  const r1 = parseRequest(longer);
  assert.ok(!r1.ok && r1.error.code === 'LENGTH_MISMATCH' && r1.error.unique === 0x10n && r1.error.opcode === Opcode.LOOKUP);
  const lying = Buffer.from(lookupHex);
  lying.writeUInt32LE(lookupHex.length - 1, 0);
  const r2 = parseRequest(lying);
  assert.ok(!r2.ok && r2.error.code === 'LENGTH_MISMATCH');
});

test('total_extlen beyond the request is BAD_EXTLEN; before 7.38 the field is padding', () => {
  const buf = Buffer.from(lookupHex);
  buf.writeUInt16LE(1, 36);
  const r = parseRequest(buf);
  assert.ok(!r.ok && r.error.code === 'BAD_EXTLEN');
  const old = parseRequest(buf, { minor: 37 });
  assert.ok(old.ok && old.request.op === 'lookup' && old.request.name === 'foo');
});

test('extra bytes after the last name are ignored, write data is exactly size bytes', () => {
  const lookup = fb.request(Opcode.LOOKUP, 2n, 1n, [fb.cstr('x'), Buffer.from([0, 0, 0])]);
  const r = parseRequest(lookup);
  assert.ok(r.ok && r.request.op === 'lookup' && r.request.name === 'x');
  const write = fb.request(Opcode.WRITE, 4n, 5n, [fb.rwIn(1n, 0n, 2, 0, 0n, 0), Buffer.from('abc')]);
  const w = parseRequest(write);
  assert.ok(w.ok && w.request.op === 'write');
  assert.deepEqual(w.request.data, Buffer.from('ab'));
});

test('SETXATTR_EXT negotiated but 8-byte argument sent is SHORT_BODY only when the body is too short', () => {
  const compat = fb.request(Opcode.SETXATTR, 6n, 7n, [fb.setxattrIn(0, 0), fb.cstr('u')]);
  const r = parseRequest(compat, { flags: InitFlags.SETXATTR_EXT });
  assert.ok(!r.ok && r.error.code === 'SHORT_BODY');
});

test('names that are not UTF-8 keep their exact bytes', () => {
  const raw = Buffer.from([0x66, 0xff, 0xfe, 0x6f]);
  const r = parseRequest(fb.request(Opcode.LOOKUP, 8n, 1n, [raw, Buffer.from([0])]));
  assert.ok(r.ok && r.request.op === 'lookup');
  assert.deepEqual(r.request.nameBytes, raw);
  assert.equal(r.request.name, Buffer.from(raw).toString('utf8'));
});

test('isResend looks at bit 63 only', () => {
  assert.equal(isResend(FUSE_UNIQUE_RESEND | 2n), true);
  assert.equal(isResend(2n), false);
  assert.equal(isResend(0x7fffffffffffffffn), false);
});

test('opcode table: one row per opcode, unique names and codes', () => {
  const names = OPCODE_TABLE.map((r) => r.name);
  const codes = OPCODE_TABLE.map((r) => r.code);
  assert.equal(new Set(names).size, names.length);
  assert.equal(new Set(codes).size, codes.length);
  assert.deepEqual([...names].sort(), (Object.keys(Opcode) as OpcodeName[]).sort());
  for (const r of OPCODE_TABLE) {
    assert.equal(r.code, Opcode[r.name]);
    assert.equal(opcodeInfo(r.code), r);
    assert.equal(opcodeName(r.code), r.name);
  }
  assert.equal(opcodeInfo(999), undefined);
  assert.equal(opcodeName(999), 'OPCODE_999');
});

test('opcode table: fixed argument sizes and name counts are those of the C structs', () => {
  // sizeof() of each request's first argument at protocol 7.45, written out independently.
  const inSize: Record<OpcodeName, number> = {
    LOOKUP: 0, FORGET: 8, GETATTR: 16, SETATTR: 88, READLINK: 0, SYMLINK: 0, MKNOD: 16, MKDIR: 8,
    UNLINK: 0, RMDIR: 0, RENAME: 8, LINK: 8, OPEN: 8, READ: 40, WRITE: 40, STATFS: 0, RELEASE: 24,
    FSYNC: 16, SETXATTR: 8, GETXATTR: 8, LISTXATTR: 8, REMOVEXATTR: 0, FLUSH: 24, INIT: 16,
    OPENDIR: 8, READDIR: 40, RELEASEDIR: 24, FSYNCDIR: 16, GETLK: 48, SETLK: 48, SETLKW: 48,
    ACCESS: 8, CREATE: 16, INTERRUPT: 8, BMAP: 16, DESTROY: 0, IOCTL: 32, POLL: 24, NOTIFY_REPLY: 40,
    BATCH_FORGET: 8, FALLOCATE: 32, READDIRPLUS: 40, RENAME2: 16, LSEEK: 24, COPY_FILE_RANGE: 56,
    SETUPMAPPING: 40, REMOVEMAPPING: 4, SYNCFS: 8, TMPFILE: 16, STATX: 24, COPY_FILE_RANGE_64: 56,
    CUSE_INIT: 16,
  };
  const twoNames = ['SYMLINK', 'RENAME', 'RENAME2'];
  const oneName = ['LOOKUP', 'MKNOD', 'MKDIR', 'UNLINK', 'RMDIR', 'LINK', 'SETXATTR', 'GETXATTR', 'REMOVEXATTR', 'CREATE', 'TMPFILE'];
  for (const r of OPCODE_TABLE) {
    assert.equal(r.inSize, inSize[r.name], `${r.name} inSize`);
    assert.equal(r.names, twoNames.includes(r.name) ? 2 : oneName.includes(r.name) ? 1 : 0, `${r.name} names`);
  }
});

test('opcode table: the kernel waits for no reply to FORGET, BATCH_FORGET, NOTIFY_REPLY and INTERRUPT only', () => {
  const noReply = OPCODE_TABLE.filter((r) => !r.reply).map((r) => r.name).sort();
  assert.deepEqual(noReply, ['BATCH_FORGET', 'FORGET', 'INTERRUPT', 'NOTIFY_REPLY']);
  assert.equal(expectsReply(Opcode.FORGET), false);
  assert.equal(expectsReply(Opcode.LOOKUP), true);
  assert.equal(expectsReply(999), true);
  const notifyReply = parseRequest(fb.request(Opcode.NOTIFY_REPLY, 10n, 7n, [Buffer.alloc(40)]));
  assert.ok(notifyReply.ok && notifyReply.request.op === 'unknown' && !expectsReply(notifyReply.request.header.opcode));
});

test('describeRequest names the opcode and the interesting fields', () => {
  for (const fx of FIXTURES) {
    const line = describeRequest(fx.expected);
    assert.ok(line.startsWith(opcodeName(fx.expected.header.opcode)), line);
    assert.ok(!line.includes('\n'));
  }
  assert.equal(
    describeRequest(FIXTURES[0]!.expected),
    'LOOKUP unique=16 nodeid=1 uid=1000 gid=1000 pid=4242 name="foo"',
  );
  const resent = FIXTURES.find((f) => f.name.startsWith('LOOKUP resent'))!;
  assert.match(describeRequest(resent.expected), /^LOOKUP unique=188 \(resend\) /);
});

// Replies.

const attrFields: fb.AttrFields = {
  ino: 42n, size: 4096n, blocks: 8n, atime: 1700000000n, mtime: 1700000001n, ctime: 1700000002n,
  atimensec: 5, mtimensec: 6, ctimensec: 7, mode: 0o100644, nlink: 1, uid: 1000, gid: 1000, rdev: 0, blksize: 4096, flags: FUSE_ATTR_DAX,
};
const entry: EntryOut = { nodeid: 42n, generation: 3n, entryValid: 1n, attrValid: 2n, entryValidNsec: 100, attrValidNsec: 200, attr: attrFields };
const entryBytes = fb.entryOut(42n, 3n, 1n, 2n, 100, 200, attrFields);

test('replyError: negative errno in the header, invalid errnos become EIO', () => {
  assert.equal(replyError(0x10n, 2).toString('hex'), '10000000' + 'feffffff' + '1000000000000000');
  assert.deepEqual(replyError(0x10n, -2), replyError(0x10n, 2));
  assert.deepEqual(replyError(5n, 0), fb.outHeader(16, 0, 5n));
  assert.deepEqual(replyError(5n, 512), fb.outHeader(16, -5, 5n));
  assert.deepEqual(replyError(5n, 1.5), fb.outHeader(16, -5, 5n));
  assert.deepEqual(replyError(5n, 511), fb.outHeader(16, -511, 5n));
});

test('replyEmpty echoes unique, resend bit included', () => {
  assert.deepEqual(replyEmpty(FUSE_UNIQUE_RESEND | 6n), fb.outHeader(16, 0, FUSE_UNIQUE_RESEND | 6n));
});

test('replyEntry: 128-byte fuse_entry_out body', () => {
  const r = replyEntry(7n, entry);
  assert.equal(r.length, 16 + 128);
  assert.deepEqual(r, Buffer.concat([fb.outHeader(144, 0, 7n), entryBytes]));
});

test('replyAttr: 104-byte fuse_attr_out body', () => {
  const r = replyAttr(7n, { attrValid: 9n, attrValidNsec: 10, attr: attrFields });
  assert.deepEqual(r, Buffer.concat([fb.outHeader(120, 0, 7n), fb.attrOut(9n, 10, attrFields)]));
});

test('replyOpen: backing_id at body offset 12', () => {
  const r = replyOpen(0x10n, { fh: 1n, openFlags: FOPEN_PASSTHROUGH, backingId: 3 });
  assert.equal(r.toString('hex'), '20000000' + '00000000' + '1000000000000000' + '0100000000000000' + '80000000' + '03000000');
  assert.deepEqual(replyOpen(2n, { fh: 0xffffffffffffffffn, openFlags: FOPEN_KEEP_CACHE }), Buffer.concat([fb.outHeader(32, 0, 2n), fb.openOut(0xffffffffffffffffn, 2, 0)]));
});

test('replyCreate: entry_out then open_out', () => {
  const r = replyCreate(8n, entry, { fh: 5n, openFlags: FOPEN_PASSTHROUGH, backingId: 12 });
  assert.deepEqual(r, Buffer.concat([fb.outHeader(160, 0, 8n), entryBytes, fb.openOut(5n, 0x80, 12)]));
});

test('small fixed replies: write, xattr size, lseek, bmap, poll, lk, copy_file_range_64, statfs', () => {
  assert.deepEqual(replyWrite(1n, 5), Buffer.concat([fb.outHeader(24, 0, 1n), new fb.Struct(8).u32(0, 5).buf]));
  assert.deepEqual(replyXattrSize(1n, 77), Buffer.concat([fb.outHeader(24, 0, 1n), new fb.Struct(8).u32(0, 77).buf]));
  assert.deepEqual(replyLseek(1n, 1n << 33n), Buffer.concat([fb.outHeader(24, 0, 1n), new fb.Struct(8).u64(0, 1n << 33n).buf]));
  assert.deepEqual(replyBmap(1n, 9n), Buffer.concat([fb.outHeader(24, 0, 1n), new fb.Struct(8).u64(0, 9n).buf]));
  assert.deepEqual(replyPoll(1n, 0x41), Buffer.concat([fb.outHeader(24, 0, 1n), new fb.Struct(8).u32(0, 0x41).buf]));
  assert.deepEqual(replyCopyFileRange64(1n, 1n << 40n), Buffer.concat([fb.outHeader(24, 0, 1n), new fb.Struct(8).u64(0, 1n << 40n).buf]));
  assert.deepEqual(
    replyLk(1n, { start: 1n, end: 2n, type: 1, pid: 99 }),
    Buffer.concat([fb.outHeader(40, 0, 1n), new fb.Struct(24).u64(0, 1n).u64(8, 2n).u32(16, 1).u32(20, 99).buf]),
  );
  const st = { blocks: 100n, bfree: 50n, bavail: 40n, files: 10n, ffree: 5n, bsize: 4096, namelen: 255, frsize: 4096 };
  assert.deepEqual(replyStatfs(1n, st), Buffer.concat([fb.outHeader(96, 0, 1n), fb.kstatfs(st)]));
});

test('replyData: header then the bytes, from one buffer or several', () => {
  assert.deepEqual(replyData(3n, Buffer.from('abc')), Buffer.concat([fb.outHeader(19, 0, 3n), Buffer.from('abc')]));
  assert.deepEqual(replyData(3n, [Buffer.from('ab'), new Uint8Array([0x63])]), Buffer.concat([fb.outHeader(19, 0, 3n), Buffer.from('abc')]));
  assert.deepEqual(replyData(3n, Buffer.alloc(0)), fb.outHeader(16, 0, 3n));
});

test('replyInit: 64-byte fuse_init_out with flags2', () => {
  const flags = InitFlags.INIT_EXT | InitFlags.ASYNC_READ | InitFlags.PASSTHROUGH;
  const r = replyInit(2n, {
    major: 7, minor: 45, maxReadahead: 4096, flags, maxBackground: 0, congestionThreshold: 0,
    maxWrite: 131072, timeGran: 1, maxPages: 32, mapAlignment: 0, maxStackDepth: 1, requestTimeout: 0,
  });
  const body = new fb.Struct(64).u32(0, 7).u32(4, 45).u32(8, 4096).u32(12, (1 << 30) | 1).u32(20, 131072).u32(24, 1).u16(28, 32).u32(32, 1 << 5).u32(36, 1).buf;
  assert.deepEqual(r, Buffer.concat([fb.outHeader(80, 0, 2n), body]));
});

test('DirentBuilder: records padded to 8 bytes for names of length 1..9', () => {
  for (let n = 1; n <= 9; n++) {
    const names = ['a'.repeat(n), 'b'.repeat(n)];
    const b = new DirentBuilder(11n, 4096);
    names.forEach((name, i) => assert.equal(b.add({ ino: BigInt(100 + i), off: BigInt(i + 1), type: 8, name }), true));
    const expectedBody = Buffer.concat(names.map((name, i) => fb.dirent(BigInt(100 + i), BigInt(i + 1), 8, name)));
    assert.equal(expectedBody.length % 8, 0);
    assert.deepEqual(b.finish(), Buffer.concat([fb.outHeader(16 + expectedBody.length, 0, 11n), expectedBody]), `name length ${n}`);
    assert.equal(b.count, 2);
  }
});

test('DirentBuilder: add returns false once the next record would exceed the requested size', () => {
  const b = new DirentBuilder(1n, 64); // two 32-byte records fit exactly
  assert.equal(b.add({ ino: 1n, off: 1n, name: 'one' }), true);
  assert.equal(b.add({ ino: 2n, off: 2n, name: 'two' }), true);
  assert.equal(b.add({ ino: 3n, off: 3n, name: 'x' }), false);
  assert.equal(b.size, 64);
  const out = b.finish();
  assert.equal(out.length, 16 + 64);
  assert.equal(out.readUInt32LE(0), out.length);
  const tiny = new DirentBuilder(1n, 31);
  assert.equal(tiny.add({ ino: 1n, off: 1n, name: 'a' }), false);
  assert.deepEqual(tiny.finish(), fb.outHeader(16, 0, 1n));
});

test('DirentBuilder: READDIRPLUS packs entry_out before each dirent', () => {
  const b = new DirentBuilder(12n, 4096, true);
  assert.equal(b.add({ off: 1n, name: 'file', entry }), true);
  assert.equal(b.add({ ino: 1n, off: 2n, type: 4, name: '..' }), true);
  const zeroEntry = fb.entryOut(0n, 0n, 0n, 0n, 0, 0, { ...attrFields, ino: 1n, size: 0n, blocks: 0n, atime: 0n, mtime: 0n, ctime: 0n, atimensec: 0, mtimensec: 0, ctimensec: 0, mode: 0, nlink: 0, uid: 0, gid: 0, blksize: 0, flags: 0 });
  const body = Buffer.concat([
    fb.direntplus(entryBytes, 42n, 1n, direntType(0o100644), 'file'),
    fb.direntplus(zeroEntry, 1n, 2n, 4, '..'),
  ]);
  assert.equal(direntType(0o100644), 8);
  assert.deepEqual(b.finish(), Buffer.concat([fb.outHeader(16 + body.length, 0, 12n), body]));
});

test('DirentBuilder rejects names the kernel would answer with EIO', () => {
  const b = new DirentBuilder(1n, 4096);
  assert.throws(() => b.add({ ino: 1n, off: 1n, name: '' }), RangeError);
  assert.throws(() => b.add({ ino: 1n, off: 1n, name: 'a/b' }), RangeError);
  assert.throws(() => b.add({ ino: 1n, off: 1n, name: 'x'.repeat(1025) }), RangeError);
  assert.equal(b.count, 0);
});

test('describeReply: errors, notifications and decoded bodies', () => {
  assert.equal(describeReply(replyError(0x10n, 2), Opcode.LOOKUP), 'LOOKUP reply unique=16 error=-2 (ENOENT)');
  assert.equal(describeReply(Buffer.from('10000000070000000000000000000000', 'hex')), 'notify code=7 len=16');
  assert.match(describeReply(replyEntry(3n, entry), Opcode.LOOKUP), /nodeid=42 generation=3/);
  assert.match(describeReply(replyOpen(3n, { fh: 1n, openFlags: 0x80, backingId: 3 }), Opcode.OPEN), /backing_id=3/);
  assert.equal(describeReply(Buffer.alloc(3)), 'reply malformed (3 bytes)');
});

// INIT negotiation.

const everything = Object.values(InitFlags).reduce((a, b) => a | b, 0n) & ~InitFlags.INIT_RESERVED;
const kernel = (major: number, minor: number, flags: bigint, maxReadahead = 131072): InitIn => ({ major, minor, maxReadahead, flags });
const wantedPt = { flags: InitFlags.PASSTHROUGH | InitFlags.HAS_RESEND | InitFlags.ASYNC_READ, maxWrite: 1 << 20, maxStackDepth: 1 };

test('negotiateInit: 7.45 kernel offering passthrough grants it with INIT_EXT and max_stack_depth', () => {
  const r = negotiateInit(kernel(7, 45, everything), wantedPt);
  assert.ok(r.ok);
  assert.equal(r.minor, 45);
  assert.equal(r.passthrough, true);
  assert.equal(r.awaitReinit, false);
  assert.equal(r.flags & InitFlags.PASSTHROUGH, InitFlags.PASSTHROUGH);
  assert.equal(r.flags & InitFlags.INIT_EXT, InitFlags.INIT_EXT);
  assert.equal(r.flags, InitFlags.PASSTHROUGH | InitFlags.HAS_RESEND | InitFlags.ASYNC_READ | InitFlags.INIT_EXT | InitFlags.MAX_PAGES);
  assert.equal(r.initOut.flags, r.flags);
  assert.equal(r.initOut.maxStackDepth, 1);
  assert.equal(r.initOut.maxWrite, 1 << 20);
  assert.equal(r.initOut.maxPages, 256);
  assert.equal(r.initOut.timeGran, 1);
  assert.equal(r.initOut.maxReadahead, 131072);
  const wire = replyInit(2n, r.initOut);
  assert.equal(wire.readUInt32LE(16 + 12) & (1 << 30), 1 << 30, 'INIT_EXT in flags');
  assert.equal(wire.readUInt32LE(16 + 32), (1 << 5) | (1 << 7), 'PASSTHROUGH and HAS_RESEND in flags2');
  assert.equal(wire.readUInt32LE(16 + 36), 1, 'max_stack_depth');
});

test('negotiateInit: 7.39 kernel gets no passthrough', () => {
  const r = negotiateInit(kernel(7, 39, everything), wantedPt);
  assert.ok(r.ok);
  assert.equal(r.minor, 39);
  assert.equal(r.passthrough, false);
  assert.equal(r.flags & InitFlags.PASSTHROUGH, 0n);
  assert.equal(r.initOut.maxStackDepth, 0);
});

test('negotiateInit: passthrough not offered, or no stack depth, means none', () => {
  const notOffered = negotiateInit(kernel(7, 45, everything & ~InitFlags.PASSTHROUGH), wantedPt);
  assert.ok(notOffered.ok && !notOffered.passthrough && notOffered.initOut.maxStackDepth === 0);
  const noDepth = negotiateInit(kernel(7, 45, everything), { ...wantedPt, maxStackDepth: 0 });
  assert.ok(noDepth.ok && !noDepth.passthrough && (noDepth.flags & InitFlags.PASSTHROUGH) === 0n);
  const defaultDepth = negotiateInit(kernel(7, 45, everything), { flags: InitFlags.PASSTHROUGH, maxWrite: 4096 });
  assert.ok(defaultDepth.ok && defaultDepth.passthrough && defaultDepth.initOut.maxStackDepth === 1);
  const tooDeep = negotiateInit(kernel(7, 45, everything), { ...wantedPt, maxStackDepth: 5 });
  assert.ok(tooDeep.ok && tooDeep.initOut.maxStackDepth === 2);
});

test('negotiateInit: passthrough wins over WRITEBACK_CACHE, which the kernel would not combine', () => {
  const both = negotiateInit(kernel(7, 45, everything), { ...wantedPt, flags: wantedPt.flags | InitFlags.WRITEBACK_CACHE });
  assert.ok(both.ok && both.passthrough && (both.flags & InitFlags.WRITEBACK_CACHE) === 0n);
  const wbOnly = negotiateInit(kernel(7, 45, everything), { flags: InitFlags.WRITEBACK_CACHE, maxWrite: 4096 });
  assert.ok(wbOnly.ok && (wbOnly.flags & InitFlags.WRITEBACK_CACHE) !== 0n);
});

test('negotiateInit: a pre-7.36 kernel (no INIT_EXT) gets no flags2 bits', () => {
  const r = negotiateInit(kernel(7, 31, everything & 0x3fffffffn), { flags: everything, maxWrite: 65536 });
  assert.ok(r.ok);
  assert.equal(r.flags >> 32n, 0n);
  assert.equal(r.flags & InitFlags.INIT_EXT, 0n);
  assert.equal(r.minor, 31);
});

test('negotiateInit: newer minor is capped at 45; readahead and max_write bounds', () => {
  const r = negotiateInit(kernel(7, 50, InitFlags.ASYNC_READ, 65536), { flags: InitFlags.ASYNC_READ, maxWrite: 100, maxReadahead: 1 << 20 });
  assert.ok(r.ok);
  assert.equal(r.minor, 45);
  assert.equal(r.initOut.minor, 45);
  assert.equal(r.initOut.maxReadahead, 65536);
  assert.equal(r.initOut.maxWrite, 4096);
  assert.equal(r.initOut.maxPages, 1);
  assert.equal(r.flags, InitFlags.ASYNC_READ);
  const small = negotiateInit(kernel(7, 45, everything), { flags: 0n, maxWrite: 65536 });
  assert.ok(small.ok && (small.flags & InitFlags.MAX_PAGES) === 0n, 'max_pages is never lowered below the kernel default');
  assert.equal(small.flags, InitFlags.INIT_EXT);
});

test('negotiateInit: request timeout only when REQUEST_TIMEOUT is granted', () => {
  const yes = negotiateInit(kernel(7, 45, everything), { flags: InitFlags.REQUEST_TIMEOUT, maxWrite: 4096, requestTimeout: 60 });
  assert.ok(yes.ok && yes.initOut.requestTimeout === 60);
  const no = negotiateInit(kernel(7, 45, everything & ~InitFlags.REQUEST_TIMEOUT), { flags: InitFlags.REQUEST_TIMEOUT, maxWrite: 4096, requestTimeout: 60 });
  assert.ok(no.ok && no.initOut.requestTimeout === 0);
});

test('negotiateInit: kernel major 8 gets our major only and a new INIT is awaited', () => {
  const r = negotiateInit(kernel(8, 0, 0n), wantedPt);
  assert.ok(r.ok);
  assert.equal(r.awaitReinit, true);
  assert.equal(r.initOut.major, 7);
  assert.equal(r.initOut.minor, 45);
  assert.equal(r.initOut.flags, 0n);
  assert.equal(r.initOut.maxWrite, 0);
});

test('negotiateInit: kernel major 6 or minor below 23 is EPROTO', () => {
  const r = negotiateInit(kernel(6, 99, everything), wantedPt);
  assert.ok(!r.ok && r.errno === 71);
  const old = negotiateInit(kernel(7, 22, 0n), wantedPt);
  assert.ok(!old.ok && old.errno === 71);
});

// Fuzz.

test('fuzz: parseRequest never throws and never reports a decoder failure (seeded, 20k inputs)', () => {
  const rnd = mulberry32(0x5eed1234);
  const int = (n: number): number => Math.floor(rnd() * n);
  const bytes = (n: number): Buffer => {
    const b = Buffer.alloc(n);
    for (let i = 0; i < n; i++) b[i] = int(256);
    return b;
  };
  const codes = [...OPCODE_TABLE.map((r) => r.code), 0, 7, 19, 54, 999, 0xffffffff];
  let ok = 0;
  for (let iter = 0; iter < 20000; iter++) {
    let buf: Buffer;
    const mode = iter % 4;
    if (mode === 0) {
      buf = bytes(int(120));
    } else if (mode === 1) {
      // Well-framed header, random opcode, random body and extension length.
      const body = bytes(int(140));
      buf = Buffer.concat([fb.inHeader(40 + body.length, codes[int(codes.length)]!, BigInt(int(1e9)), BigInt(int(100)), {}, int(4)), body]);
    } else {
      // Mutated fixture: flipped bytes, optionally truncated, len kept consistent half the time.
      const fx = FIXTURES[int(FIXTURES.length)]!;
      buf = Buffer.from(fx.buf.subarray(0, mode === 2 ? fx.buf.length : int(fx.buf.length + 1)));
      const flips = 1 + int(4);
      for (let k = 0; k < flips && buf.length > 0; k++) buf[int(buf.length)] = int(256);
      if (rnd() < 0.5 && buf.length >= 4) buf.writeUInt32LE(buf.length, 0);
    }
    const opts: ParseOptions = { minor: 30 + int(16), flags: rnd() < 0.5 ? InitFlags.SETXATTR_EXT : 0n };
    let r;
    try {
      r = parseRequest(buf, opts);
    } catch (err) {
      assert.fail(`parseRequest threw on ${buf.toString('hex')}: ${String(err)}`);
    }
    if (r.ok) {
      ok++;
      assert.equal(typeof describeRequest(r.request), 'string');
    } else {
      assert.ok(r.error instanceof FramingError);
      assert.notEqual(r.error.code, 'MALFORMED', `${r.error.message} on ${buf.toString('hex')}`);
    }
    assert.equal(typeof describeReply(buf, codes[int(codes.length)]), 'string');
  }
  assert.ok(ok > 1000, `only ${ok} inputs parsed: the fuzz is not reaching the decoders`);
});

test('parseRequest survives replies fed back and every byte value in the opcode field', () => {
  for (let op = 0; op < 70; op++) {
    const buf = fb.request(op, 1n, 1n, []);
    const r = parseRequest(buf);
    if (!r.ok) assert.ok(['SHORT_BODY', 'MISSING_NAME'].includes(r.error.code), `${op}: ${r.error.code}`);
  }
  // A reply is framed like a request whose opcode field is the error: it decodes as opcode 0, unknown.
  const echoed = parseRequest(replyEntry(1n, entry));
  assert.ok(echoed.ok && echoed.request.op === 'unknown' && echoed.request.header.opcode === 0);
  assert.equal(parseRequest(replyError(1n, 2)).ok, false, 'a 16-byte error reply is a short header');
  assert.equal(FUSE_OUT_HEADER_SIZE, 16);
});
