// Inside the VM: the two kernel changes of "fuse: improve crash recovery for backing files",
// proven directly on the patched build and shown absent on the unpatched build of the same source.
//   1. FUSE_DEV_IOC_BACKING_CLOSE_ALL drops every backing id of a connection (EPERM without
//      passthrough, on an unmounted fd, without CAP_SYS_ADMIN).
//   2. A passthrough open may bring a different backing id for the same backing *inode* while the
//      fuse inode is bound to another one; a different backing inode is still refused.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { closeFd, openFd, O } from '../../../native/index.ts';
import { InitFlags } from '../../../kernel/abi.ts';
import { backingClose, backingCloseAll, backingOpen, type CloseAllResult } from '../../../kernel/backing.ts';
import { openFuseDevice } from '../../../kernel/device.ts';
import { FuseKernelError } from '../../../kernel/errors.ts';
import { mountTestConnection } from '../../kernel/helpers/connection.ts';
import { TinyFuse } from './helpers/tiny-fuse.ts';
import { patched, skipOutsideVm } from './env.ts';

const opts = { skip: skipOutsideVm, timeout: 180_000 };
const CONTENT = 'read through the backing file, never through the daemon\n';
const OTHER = 'a different backing inode\n';
const CLOSED: CloseAllResult = { status: 'closed' };
const ENOTTY: CloseAllResult = { status: 'unsupported' };
const EPERM: CloseAllResult = { status: 'not-permitted', errno: 'EPERM' };

/** What CLOSE_ALL must answer where the kernel refuses: EPERM patched, ENOTTY (no such ioctl) unpatched. */
const refused = patched ? EPERM : ENOTTY;

function isErrno(errno: string): (err: unknown) => boolean {
  return (err) => err instanceof FuseKernelError && err.errno === errno;
}

/** A temp dir with two backing files (different inodes): `same` and `other`. */
function backingFiles(): { dir: string; same: string; other: string; cleanup(): void } {
  const dir = mkdtempSync(join(tmpdir(), 'fusekeeper-vm-'));
  const same = join(dir, 'same');
  const other = join(dir, 'other');
  writeFileSync(same, CONTENT);
  writeFileSync(other, OTHER);
  return { dir, same, other, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

async function readFrom0(h: FileHandle): Promise<string> {
  const buf = Buffer.alloc(4096);
  const { bytesRead } = await h.read(buf, 0, buf.length, 0);
  return buf.subarray(0, bytesRead).toString('utf8');
}

/** Opens `path` read-only; resolves the handle or the errno code the open failed with. */
async function tryOpen(path: string): Promise<FileHandle | string> {
  try {
    return await open(path, 'r');
  } catch (err) {
    return (err as NodeJS.ErrnoException).code ?? String(err);
  }
}

/** Runs close-all-child.ts without CAP_SYS_ADMIN, with `fd` as its fd 3. */
async function closeAllWithoutCapSysAdmin(fd: number): Promise<{ capSysAdmin: boolean; result: CloseAllResult }> {
  const child = spawn(
    'setpriv',
    ['--bounding-set=-sys_admin', '--inh-caps=-sys_admin', '--', process.execPath, '--import', 'tsx', new URL('./helpers/close-all-child.ts', import.meta.url).pathname],
    { stdio: ['ignore', 'pipe', 'inherit', fd] },
  );
  let out = '';
  child.stdout!.setEncoding('utf8').on('data', (s: string) => (out += s));
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  assert.equal(code, 0, `close-all child exited ${code}: ${out}`);
  return JSON.parse(out) as { capSysAdmin: boolean; result: CloseAllResult };
}

test(`CLOSE_ALL on a mounted passthrough connection: ${patched ? 'returns 0, later closes of the old ids give ENOENT' : 'ENOTTY, the ids stay open'}`, opts, async () => {
  const files = backingFiles();
  const conn = await mountTestConnection();
  const fd = openFd(files.same, O.RDONLY);
  try {
    const ids = [backingOpen(conn.fd, fd), backingOpen(conn.fd, fd), backingOpen(conn.fd, fd)];
    const result = backingCloseAll(conn.fd);
    if (patched) {
      assert.deepEqual(result, CLOSED);
      for (const id of ids) assert.throws(() => backingClose(conn.fd, id), isErrno('ENOENT'), `old id ${id} after CLOSE_ALL`);
      assert.deepEqual(backingCloseAll(conn.fd), CLOSED, 'CLOSE_ALL of an empty map');
      const fresh = backingOpen(conn.fd, fd);
      assert.ok(fresh > Math.max(...ids), `allocation stays cyclic: fresh id ${fresh} after ${ids.join(',')}`);
      backingClose(conn.fd, fresh);
    } else {
      assert.deepEqual(result, ENOTTY);
      for (const id of ids) backingClose(conn.fd, id);
    }
  } finally {
    closeFd(fd);
    conn.cleanup();
    files.cleanup();
  }
});

test(`CLOSE_ALL is refused (${patched ? 'EPERM' : 'ENOTTY'}) without passthrough, on an unmounted fd, and without CAP_SYS_ADMIN; nothing is closed`, opts, async () => {
  const noPassthrough = await mountTestConnection(InitFlags.INIT_EXT);
  try {
    assert.equal(noPassthrough.agreed.flags & InitFlags.PASSTHROUGH, 0n);
    assert.deepEqual(backingCloseAll(noPassthrough.fd), refused, 'connection without passthrough');
  } finally {
    noPassthrough.cleanup();
  }

  const bare = openFuseDevice();
  try {
    assert.deepEqual(backingCloseAll(bare), refused, 'unmounted /dev/fuse fd');
  } finally {
    closeFd(bare);
  }

  const files = backingFiles();
  const conn = await mountTestConnection();
  const fd = openFd(files.same, O.RDONLY);
  try {
    const id = backingOpen(conn.fd, fd);
    const child = await closeAllWithoutCapSysAdmin(conn.fd);
    assert.equal(child.capSysAdmin, false, 'setpriv dropped CAP_SYS_ADMIN');
    assert.deepEqual(child.result, refused, 'caller without CAP_SYS_ADMIN');
    backingClose(conn.fd, id); // still open: the refused CLOSE_ALL dropped nothing
  } finally {
    closeFd(fd);
    conn.cleanup();
    files.cleanup();
  }
});

test(`a second backing id for the same backing inode while the first file is open: ${patched ? 'accepted' : 'EIO'}`, opts, async () => {
  const files = backingFiles();
  const fs = await TinyFuse.mount([{ name: 'f', backingPath: files.same }]);
  const fdA = openFd(files.same, O.RDONLY);
  const fdB = openFd(files.same, O.RDONLY); // a separate open file of the same inode
  const handles: FileHandle[] = [];
  try {
    const idA = backingOpen(fs.fd, fdA);
    fs.answerNextOpen('f', idA);
    const first = await open(fs.path('f'), 'r');
    handles.push(first);
    assert.equal(await readFrom0(first), CONTENT);

    const idB = backingOpen(fs.fd, fdB);
    assert.notEqual(idB, idA);
    fs.answerNextOpen('f', idB);
    const second = await tryOpen(fs.path('f'));
    if (patched) {
      assert.ok(typeof second !== 'string', `second open failed with ${String(second)}`);
      handles.push(second);
      assert.equal(await readFrom0(second), CONTENT);
      assert.equal(await readFrom0(first), CONTENT, 'the first file still reads');
    } else {
      assert.equal(second, 'EIO');
    }
    assert.deepEqual(fs.opens.map((o) => o.backingId), [idA, idB]);
    assert.deepEqual(fs.unexpected, []);
    backingClose(fs.fd, idA);
    backingClose(fs.fd, idB);
  } finally {
    for (const h of handles) await h.close();
    closeFd(fdA);
    closeFd(fdB);
    fs.close();
    files.cleanup();
  }
});

test('a backing id for a different backing inode while the first file is open: EIO (both kernels)', opts, async () => {
  const files = backingFiles();
  const fs = await TinyFuse.mount([{ name: 'f', backingPath: files.same }]);
  const fdA = openFd(files.same, O.RDONLY);
  const fdC = openFd(files.other, O.RDONLY);
  let first: FileHandle | undefined;
  try {
    const idA = backingOpen(fs.fd, fdA);
    fs.answerNextOpen('f', idA);
    first = await open(fs.path('f'), 'r');
    const idC = backingOpen(fs.fd, fdC);
    fs.answerNextOpen('f', idC);
    assert.equal(await tryOpen(fs.path('f')), 'EIO');
    assert.equal(await readFrom0(first), CONTENT, 'the first file is unaffected');
    assert.deepEqual(fs.unexpected, []);
    backingClose(fs.fd, idA);
    backingClose(fs.fd, idC);
  } finally {
    await first?.close();
    closeFd(fdA);
    closeFd(fdC);
    fs.close();
    files.cleanup();
  }
});

test(`recovery shape: ${patched ? 'CLOSE_ALL, the held file keeps reading, the reopen with a fresh id succeeds' : 'a fresh id gives EIO, the adopted old id works (journal strategy)'}`, opts, async () => {
  const files = backingFiles();
  const fs = await TinyFuse.mount([{ name: 'f', backingPath: files.same }]);
  let fdA = openFd(files.same, O.RDONLY);
  const handles: FileHandle[] = [];
  let fdB = -1;
  try {
    const idA = backingOpen(fs.fd, fdA);
    fs.answerNextOpen('f', idA);
    const held = await open(fs.path('f'), 'r');
    handles.push(held);
    // The daemon "crashes": its copy of the backing file goes away with it.
    closeFd(fdA);
    fdA = -1;
    assert.equal(await readFrom0(held), CONTENT);

    if (patched) {
      assert.deepEqual(backingCloseAll(fs.fd), CLOSED);
      assert.throws(() => backingClose(fs.fd, idA), isErrno('ENOENT'));
      assert.equal(await readFrom0(held), CONTENT, 'held file after CLOSE_ALL');
    }
    fdB = openFd(files.same, O.RDONLY);
    const idB = backingOpen(fs.fd, fdB);
    assert.ok(idB > idA);
    fs.answerNextOpen('f', idB);
    const reopened = await tryOpen(fs.path('f'));
    if (patched) {
      assert.ok(typeof reopened !== 'string', `reopen with fresh id ${idB} failed with ${String(reopened)}`);
      handles.push(reopened);
      assert.equal(await readFrom0(reopened), CONTENT);
    } else {
      assert.equal(reopened, 'EIO', 'fresh id for a file still held open');
      fs.answerNextOpen('f', idA);
      const adopted = await tryOpen(fs.path('f'));
      assert.ok(typeof adopted !== 'string', `reopen with the adopted id ${idA} failed with ${String(adopted)}`);
      handles.push(adopted);
      assert.equal(await readFrom0(adopted), CONTENT);
      backingClose(fs.fd, idA);
    }
    assert.equal(await readFrom0(held), CONTENT);
    assert.deepEqual(fs.unexpected, []);
    backingClose(fs.fd, idB);
  } finally {
    for (const h of handles) await h.close();
    if (fdA >= 0) closeFd(fdA);
    if (fdB >= 0) closeFd(fdB);
    fs.close();
    files.cleanup();
  }
});
