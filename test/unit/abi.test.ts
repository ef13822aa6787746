import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  FATTR,
  FOPEN,
  FOPEN_PASSTHROUGH,
  FUSE_ATTR_OUT_SIZE,
  FUSE_ATTR_SIZE,
  FUSE_DEV_IOC_BACKING_CLOSE,
  FUSE_DEV_IOC_BACKING_CLOSE_ALL,
  FUSE_DEV_IOC_BACKING_OPEN,
  FUSE_DEV_IOC_CLONE,
  FUSE_DEV_IOC_SYNC_INIT,
  FUSE_ENTRY_OUT_SIZE,
  FUSE_IN_HEADER_SIZE,
  FUSE_INIT_IN_SIZE,
  FUSE_INIT_OUT_SIZE,
  FUSE_KERNEL_MINOR_VERSION,
  FUSE_KERNEL_VERSION,
  FUSE_MIN_PASSTHROUGH_MINOR,
  FUSE_OPEN_OUT_SIZE,
  FUSE_OUT_HEADER_SIZE,
  FUSE_READ_IN_SIZE,
  FUSE_ROOT_ID,
  FUSE_STATFS_OUT_SIZE,
  FUSE_STATX_OUT_SIZE,
  FUSE_UNIQUE_RESEND,
  FUSE_WRITE_IN_SIZE,
  InitFlags,
  NotifyCode,
  Opcode,
  RENAME_EXCHANGE,
  RENAME_NOREPLACE,
  RENAME_WHITEOUT,
  decodeAttr,
  decodeInHeader,
  decodeInitIn,
  decodeOutHeader,
  direntSize,
  direntplusSize,
  encodeAttr,
  encodeBackingMap,
  encodeInitOut,
  encodeOutHeader,
  initFlagNames,
  notifyResendMessage,
  type Attr,
} from '../../kernel/abi.ts';
import * as fb from './fixtures/fuse-builder.ts';

test('protocol constants match fuse.h 7.45', () => {
  assert.equal(FUSE_KERNEL_VERSION, 7);
  assert.equal(FUSE_KERNEL_MINOR_VERSION, 45);
  assert.equal(FUSE_MIN_PASSTHROUGH_MINOR, 40);
  assert.equal(FUSE_ROOT_ID, 1n);
  assert.equal(FUSE_UNIQUE_RESEND, 0x8000000000000000n);
  assert.equal(NotifyCode.RESEND, 7);
  assert.equal(NotifyCode.INC_EPOCH, 8);
  assert.equal(NotifyCode.PRUNE, 9);
  assert.deepEqual([RENAME_NOREPLACE, RENAME_EXCHANGE, RENAME_WHITEOUT], [1, 2, 4]);
  assert.equal(FOPEN_PASSTHROUGH, 0x80);
  assert.equal(FOPEN.PARALLEL_DIRECT_WRITES, 0x40);
  assert.equal(FATTR.KILL_SUIDGID, 0x800);
});

test('opcode numbers match enum fuse_opcode', () => {
  assert.equal(Opcode.LOOKUP, 1);
  assert.equal(Opcode.SYMLINK, 6);
  assert.equal(Opcode.MKNOD, 8);
  assert.equal(Opcode.FSYNC, 20);
  assert.equal(Opcode.INIT, 26);
  assert.equal(Opcode.INTERRUPT, 36);
  assert.equal(Opcode.NOTIFY_REPLY, 41);
  assert.equal(Opcode.BATCH_FORGET, 42);
  assert.equal(Opcode.RENAME2, 45);
  assert.equal(Opcode.COPY_FILE_RANGE, 47);
  assert.equal(Opcode.SYNCFS, 50);
  assert.equal(Opcode.STATX, 52);
  assert.equal(Opcode.COPY_FILE_RANGE_64, 53);
  assert.equal(Opcode.CUSE_INIT, 4096);
  assert.equal(new Set(Object.values(Opcode)).size, Object.keys(Opcode).length);
});

test('INIT flag bits match the header, flags2 bits are 32 and up', () => {
  assert.equal(InitFlags.ASYNC_READ, 1n);
  assert.equal(InitFlags.MAX_PAGES, 1n << 22n);
  assert.equal(InitFlags.SETXATTR_EXT, 1n << 29n);
  assert.equal(InitFlags.INIT_EXT, 1n << 30n);
  assert.equal(InitFlags.SECURITY_CTX, 1n << 32n);
  assert.equal(InitFlags.DIRECT_IO_ALLOW_MMAP, 1n << 36n);
  assert.equal(InitFlags.PASSTHROUGH, 1n << 37n);
  assert.equal(InitFlags.NO_EXPORT_SUPPORT, 1n << 38n);
  assert.equal(InitFlags.HAS_RESEND, 1n << 39n);
  assert.equal(InitFlags.ALLOW_IDMAP, 1n << 40n);
  assert.equal(InitFlags.OVER_IO_URING, 1n << 41n);
  assert.equal(InitFlags.REQUEST_TIMEOUT, 1n << 42n);
  const bits = Object.values(InitFlags);
  assert.equal(new Set(bits).size, bits.length, 'no two flags share a bit');
  for (const b of bits) assert.equal(b & (b - 1n), 0n, 'each flag is a single bit');
  assert.deepEqual(initFlagNames(InitFlags.PASSTHROUGH | InitFlags.ASYNC_READ | (1n << 60n)), ['ASYNC_READ', 'PASSTHROUGH', 'bit60']);
});

test('ioctl numbers are the _IOC encodings of the header', () => {
  assert.equal(FUSE_DEV_IOC_CLONE, 0x8004e500);
  assert.equal(FUSE_DEV_IOC_BACKING_OPEN, 0x4010e501);
  assert.equal(FUSE_DEV_IOC_BACKING_CLOSE, 0x4004e502);
  assert.equal(FUSE_DEV_IOC_SYNC_INIT, 0xe503);
  assert.equal(FUSE_DEV_IOC_BACKING_CLOSE_ALL, 0xe504);
});

test('struct sizes', () => {
  assert.equal(FUSE_IN_HEADER_SIZE, 40);
  assert.equal(FUSE_OUT_HEADER_SIZE, 16);
  assert.equal(FUSE_ATTR_SIZE, 88);
  assert.equal(FUSE_ENTRY_OUT_SIZE, 128);
  assert.equal(FUSE_ATTR_OUT_SIZE, 104);
  assert.equal(FUSE_OPEN_OUT_SIZE, 16);
  assert.equal(FUSE_INIT_IN_SIZE, 64);
  assert.equal(FUSE_INIT_OUT_SIZE, 64);
  assert.equal(FUSE_READ_IN_SIZE, 40);
  assert.equal(FUSE_WRITE_IN_SIZE, 40);
  assert.equal(FUSE_STATFS_OUT_SIZE, 80);
  assert.equal(FUSE_STATX_OUT_SIZE, 288);
});

test('decodeInHeader reads every field at its C offset', () => {
  const h = fb.inHeader(123, 15, 0x8000000000000042n, 0xfedcba9876543210n, { uid: 1001, gid: 1002, pid: 77 }, 3);
  assert.deepEqual(decodeInHeader(h), {
    len: 123,
    opcode: 15,
    unique: 0x8000000000000042n,
    nodeid: 0xfedcba9876543210n,
    uid: 1001,
    gid: 1002,
    pid: 77,
    totalExtlen: 3,
  });
  assert.throws(() => decodeInHeader(h.subarray(0, 39)), RangeError);
});

test('encodeOutHeader / decodeOutHeader', () => {
  assert.equal(encodeOutHeader(16, -2, 0x10n).toString('hex'), '10000000' + 'feffffff' + '1000000000000000');
  assert.deepEqual(decodeOutHeader(fb.outHeader(32, -38, 9n)), { len: 32, error: -38, unique: 9n });
});

test('notifyResendMessage is {len=16, error=7, unique=0}', () => {
  assert.equal(notifyResendMessage().toString('hex'), '10000000' + '07000000' + '0000000000000000');
});

test('decodeInitIn: 7.45 body with INIT_EXT reads flags2', () => {
  const flags = Number(InitFlags.INIT_EXT | InitFlags.ASYNC_READ);
  const body = fb.initIn(7, 45, 131072, flags, 0b10100000, 64); // flags2 bits 5 (PASSTHROUGH) and 7 (HAS_RESEND)
  assert.deepEqual(decodeInitIn(body), {
    major: 7,
    minor: 45,
    maxReadahead: 131072,
    flags: InitFlags.INIT_EXT | InitFlags.ASYNC_READ | InitFlags.PASSTHROUGH | InitFlags.HAS_RESEND,
  });
});

test('decodeInitIn: flags2 ignored without INIT_EXT or on the 16-byte pre-7.36 layout', () => {
  const noExt = fb.initIn(7, 45, 4096, Number(InitFlags.ASYNC_READ), 0xffffffff, 64);
  assert.equal(decodeInitIn(noExt).flags, InitFlags.ASYNC_READ);
  const old = fb.initIn(7, 31, 4096, Number(InitFlags.INIT_EXT), 0xffffffff, 64).subarray(0, 16);
  assert.deepEqual(decodeInitIn(old), { major: 7, minor: 31, maxReadahead: 4096, flags: InitFlags.INIT_EXT });
  assert.deepEqual(decodeInitIn(fb.initIn(8, 0, 0, 0, 0, 8)), { major: 8, minor: 0, maxReadahead: 0, flags: 0n });
  assert.throws(() => decodeInitIn(Buffer.alloc(7)), RangeError);
});

test('encodeInitOut splits flags into flags/flags2 and places every field', () => {
  const flags = InitFlags.INIT_EXT | InitFlags.MAX_PAGES | InitFlags.PASSTHROUGH | InitFlags.HAS_RESEND;
  const out = encodeInitOut({
    major: 7,
    minor: 45,
    maxReadahead: 0x20000,
    flags,
    maxBackground: 64,
    congestionThreshold: 48,
    maxWrite: 0x100000,
    timeGran: 1,
    maxPages: 256,
    mapAlignment: 3,
    maxStackDepth: 1,
    requestTimeout: 30,
  });
  assert.equal(out.length, 64);
  const expected = new fb.Struct(64)
    .u32(0, 7)
    .u32(4, 45)
    .u32(8, 0x20000)
    .u32(12, (1 << 30) | (1 << 22))
    .u16(16, 64)
    .u16(18, 48)
    .u32(20, 0x100000)
    .u32(24, 1)
    .u16(28, 256)
    .u16(30, 3)
    .u32(32, (1 << 5) | (1 << 7))
    .u32(36, 1)
    .u16(40, 30).buf;
  assert.equal(out.toString('hex'), expected.toString('hex'));
});

const sampleAttr: Attr & fb.AttrFields = {
  ino: 0x0102030405060708n,
  size: 1234567890123n,
  blocks: 2412n,
  atime: 1700000000n,
  mtime: 1700000001n,
  ctime: 1700000002n,
  atimensec: 111,
  mtimensec: 222,
  ctimensec: 333,
  mode: 0o100644,
  nlink: 1,
  uid: 1000,
  gid: 100,
  rdev: 0,
  blksize: 4096,
  flags: 0,
};

test('encodeAttr matches struct fuse_attr and round-trips', () => {
  assert.equal(encodeAttr(sampleAttr).toString('hex'), fb.attr(sampleAttr).toString('hex'));
  assert.deepEqual(decodeAttr(encodeAttr(sampleAttr)), sampleAttr);
  const negative = encodeAttr({ ...sampleAttr, mtime: -1n, atime: -5 });
  assert.equal(negative.readBigInt64LE(32), -1n);
  assert.equal(negative.readBigInt64LE(24), -5n);
});

test('encodeBackingMap is {int32 fd, uint32 flags, uint64 padding}', () => {
  assert.equal(encodeBackingMap(7).toString('hex'), '07000000' + '00000000' + '0000000000000000');
  assert.equal(encodeBackingMap(-1, 2).toString('hex'), 'ffffffff' + '02000000' + '0000000000000000');
});

test('dirent sizes are 8-byte aligned', () => {
  assert.deepEqual([1, 2, 7, 8, 9, 16, 17].map(direntSize), [32, 32, 32, 32, 40, 40, 48]);
  assert.deepEqual([1, 8, 9].map(direntplusSize), [160, 160, 168]);
});
