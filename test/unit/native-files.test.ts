// readFileInto and readLinkInto (native/files.ts), which the supervisor's looks at a dying
// owner's threads read /proc with: real files, links and /proc, no privileges needed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NativeError, readFileInto, readLinkInto } from '../../native/index.ts';

function rejects(fn: () => unknown, code: string, pattern: RegExp): void {
  assert.throws(fn, (err: unknown) => err instanceof NativeError && err.code === code && pattern.test(err.message));
}

test('readFileInto reads a whole file, stops at a full buffer, and reads /proc as fs does', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'fusekeeper-files-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'f');
  const bytes = Buffer.from('0123456789'.repeat(1000));
  writeFileSync(path, bytes);
  const buf = Buffer.alloc(16384);
  assert.equal(readFileInto(path, buf), bytes.length);
  assert.deepEqual(buf.subarray(0, bytes.length), bytes);
  const small = Buffer.alloc(100);
  assert.equal(readFileInto(path, small), 100, 'filled, not overrun');
  assert.deepEqual(small, bytes.subarray(0, 100));
  writeFileSync(path, '');
  assert.equal(readFileInto(path, buf), 0);
  // pid, comm, state, ppid, pgrp, session, tty, tpgid and flags: the same at every read.
  const fields = (s: string) => s.split(' ').slice(0, 9).join(' ');
  const n = readFileInto(`/proc/${process.pid}/stat`, buf);
  assert.equal(fields(buf.toString('latin1', 0, n)), fields(readFileSync(`/proc/${process.pid}/stat`, 'latin1')));
});

test('readFileInto and readLinkInto fail with the errno and the path', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'fusekeeper-files-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const buf = Buffer.alloc(64);
  rejects(() => readFileInto(join(dir, 'missing'), buf), 'ENOENT', /open .*missing/);
  rejects(() => readFileInto(dir, buf), 'EISDIR', /read .*fusekeeper-files-/);
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
