// Sealed memfds (native/memfd.ts), which carry a large journal in one fd (JOURNAL_FILE):
// real memfd_create and fcntl seals, no privileges needed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { openSync, closeSync, writeSync, readlinkSync, readFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createSealedFile, readSealedFile, NativeError, closeFd } from '../../native/index.ts';

function rejects(fn: () => unknown, code: string, pattern: RegExp): void {
  assert.throws(fn, (err: unknown) => err instanceof NativeError && err.code === code && pattern.test(err.message));
}

test('a sealed file reads back exactly (as a mapping that outlives the fd) and refuses writes', () => {
  const bytes = Buffer.alloc(2 * 1024 * 1024 + 13);
  for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 31) & 0xff;
  const fd = createSealedFile('fusekeeper-test', bytes);
  let read: Buffer;
  try {
    assert.match(readlinkSync(`/proc/self/fd/${fd}`), /^\/memfd:fusekeeper-test/);
    read = readSealedFile(fd, bytes.length);
    assert.throws(() => writeSync(fd, Buffer.from('x'), 0, 1, 0), { code: 'EPERM' });
    rejects(() => readSealedFile(fd, bytes.length - 1), 'EINVAL', /holds 2097165 bytes, expected 2097164/);
  } finally {
    closeFd(fd);
  }
  assert.match(readFileSync('/proc/self/maps', 'utf8'), /\/memfd:fusekeeper-test/, 'a mapping, not a copy');
  assert.deepEqual(read, bytes);
  const empty = createSealedFile('fusekeeper-empty', Buffer.alloc(0));
  assert.equal(readSealedFile(empty, 0).length, 0);
  closeFd(empty);
});

test('readSealedFile refuses what is not a sealed memfd, and closes nothing', () => {
  const dir = mkdtempSync(join(tmpdir(), 'fk-memfd-'));
  try {
    const fd = openSync(join(dir, 'plain'), 'w+');
    writeSync(fd, Buffer.alloc(20));
    rejects(() => readSealedFile(fd, 20), 'EINVAL', /not a memfd/);
    writeSync(fd, Buffer.alloc(1)); // still open: the failed read did not close it
    closeSync(fd);
  } finally {
    rmSync(dir, { recursive: true });
  }
  rejects(() => readSealedFile(1 << 20, 20), 'EBADF', /F_GET_SEALS/);
});
