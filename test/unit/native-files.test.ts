// readGeneratedFile and readLinkInto (native/files.ts), which the supervisor's looks at a
// dying owner's threads read /proc with: real files, links and /proc, no privileges needed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { constants, tmpdir } from 'node:os';
import { NativeError, readGeneratedFile, readLinkInto } from '../../native/index.ts';

function rejects(fn: () => unknown, code: string, pattern: RegExp): void {
  assert.throws(fn, (err: unknown) => err instanceof NativeError && err.code === code && pattern.test(err.message));
}

test('readGeneratedFile reads /proc as fs does, in one read, and never past the buffer', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'fusekeeper-files-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const buf = Buffer.alloc(8192);
  // pid, comm, state, ppid, pgrp, session, tty, tpgid and flags: the same at every read.
  const fields = (s: string) => s.split(' ').slice(0, 9).join(' ');
  const n = readGeneratedFile(`/proc/${process.pid}/stat`, buf);
  // Its times and sizes may change between two reads, and with them its length.
  assert.equal(buf[n - 1], 0x0a, 'the whole line, to its newline, in one read');
  assert.equal(fields(buf.toString('latin1', 0, n)), fields(readFileSync(`/proc/${process.pid}/stat`, 'latin1')));
  const path = join(dir, 'f');
  const bytes = Buffer.from('0123456789'.repeat(10));
  writeFileSync(path, bytes);
  const small = Buffer.alloc(30, 0xff);
  assert.equal(readGeneratedFile(path, small), 30, 'filled, not overrun');
  assert.deepEqual(small, bytes.subarray(0, 30));
  writeFileSync(path, '');
  assert.equal(readGeneratedFile(path, buf), 0);
});

test('readGeneratedFile returns the negative errno instead of throwing; readLinkInto throws with the errno and the path', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'fusekeeper-files-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const buf = Buffer.alloc(64);
  assert.equal(readGeneratedFile(join(dir, 'missing'), buf), -constants.errno.ENOENT);
  assert.equal(readGeneratedFile(dir, buf), -constants.errno.EISDIR);
  assert.equal(readGeneratedFile('/proc/2147483647/stat', buf), -constants.errno.ENOENT, 'a thread that is gone');
  writeFileSync(join(dir, 'plain'), 'x');
  rejects(() => readLinkInto(join(dir, 'plain'), buf), 'EINVAL', /readlink .*plain/);
  rejects(() => readLinkInto(join(dir, 'missing'), buf), 'ENOENT', /readlink/);
});

test('readLinkInto returns the target, truncated at the buffer, without a terminating NUL', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'fusekeeper-files-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  symlinkSync('anon_inode:[io_uring]', join(dir, 'l'));
  const buf = Buffer.alloc(64, 0xff);
  const n = readLinkInto(join(dir, 'l'), buf);
  assert.equal(buf.toString('latin1', 0, n), 'anon_inode:[io_uring]');
  assert.equal(buf[n], 0xff);
  const short = Buffer.alloc(5);
  assert.equal(readLinkInto(join(dir, 'l'), short), 5);
  assert.equal(short.toString(), 'anon_');
});
