// A fixture tree with the awkward parts of a real one (sizes around page boundaries, a few
// MiB, nested dirs, symlinks, a hard link, odd modes and owners, a FIFO, xattrs, long and
// non-ASCII names, a directory needing several READDIR buffers), a description of a tree to
// compare two of them, and small wrappers to run real tools.
import { spawnSync, type SpawnSyncOptions } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, lchownSync, linkSync, lstatSync, lutimesSync, mkdirSync, readdirSync, readFileSync, readlinkSync, symlinkSync, writeFileSync, type BigIntStats } from 'node:fs';
import { join } from 'node:path';
import { getXattr, listXattr, setXattr, NativeError } from '../../../native/index.ts';

export interface RunResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `cmd args` and returns what it printed, without judging. */
export function run(cmd: string, args: string[], opts: SpawnSyncOptions = {}): RunResult {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024, timeout: 120_000, ...opts });
  if (r.error) throw r.error;
  return { status: r.status, stdout: String(r.stdout ?? ''), stderr: String(r.stderr ?? '') };
}

/** Runs `cmd args`; throws with its output unless it exits 0. Returns stdout. */
export function ok(cmd: string, args: string[], opts: SpawnSyncOptions = {}): string {
  const r = run(cmd, args, opts);
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}\nstdout: ${r.stdout.slice(0, 4000)}\nstderr: ${r.stderr.slice(0, 4000)}`);
  return r.stdout;
}

/** Whether `name` is on PATH. */
export function have(name: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${name}`], { stdio: 'ignore' }).status === 0;
}

/** Whether user.* xattrs work on the filesystem of `dir`. */
export function xattrsWork(dir: string): boolean {
  try {
    setXattr(dir, 'user.fusekeeper-probe', Buffer.from('1'), 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * `diff -r` of two trees, symlinks compared as links; FIFOs cannot be compared by content
 * and are reported as such by diff, which is expected (their type is checked by
 * `describeTree`). Returns the unexpected lines (none when the trees match).
 */
export function diffTrees(a: string, b: string): string[] {
  const r = run('diff', ['-r', '--no-dereference', a, b]);
  const lines = (r.stdout + r.stderr).split('\n').filter((l) => l && !/^File .* is a fifo while file .* is a fifo$/.test(l));
  if (r.status !== 0 && r.status !== 1) lines.push(`diff exited ${r.status}`);
  return lines;
}

/** Builds the fixture tree in `dir` (an existing, empty directory). */
export function makeFixtureTree(dir: string, opts: { xattrs: boolean }): void {
  const file = (rel: string, data: Buffer | string, mode = 0o644): void => {
    writeFileSync(join(dir, rel), data);
    chmodSync(join(dir, rel), mode);
  };
  file('empty', '');
  file('small.txt', 'hello, world\n');
  file('page', randomBytes(4096));
  file('page-plus-one', randomBytes(4097));
  file('odd', randomBytes(65537));
  file('big.bin', randomBytes(3 * 1024 * 1024 + 123));
  file('exec.sh', '#!/bin/sh\necho hi\n', 0o755);
  file('readonly', 'ro\n', 0o444);
  file('private', 'secret\n', 0o600);
  lchownSync(join(dir, 'private'), 1234, 5678);
  file('setuid', 'x', 0o4755);
  file(`name with spaces \u00fc \u2603.txt`, 'unicode\n');
  file('L'.repeat(255), 'long name\n');
  mkdirSync(join(dir, 'nested/a/b/c'), { recursive: true });
  file('nested/a/b/c/deep.txt', 'deep\n');
  file('nested/a/b/mid.bin', randomBytes(200_000));
  symlinkSync('../../small.txt', join(dir, 'nested/a/link-rel'));
  symlinkSync('/nonexistent/fusekeeper/target', join(dir, 'dangling'));
  symlinkSync('nested', join(dir, 'dirlink'));
  lchownSync(join(dir, 'dirlink'), 4321, 4321);
  file('hard1', 'one inode, two names\n');
  linkSync(join(dir, 'hard1'), join(dir, 'nested/hard2'));
  mkdirSync(join(dir, 'shared'), { mode: 0o755 });
  chmodSync(join(dir, 'shared'), 0o2775);
  mkdirSync(join(dir, 'sticky'));
  chmodSync(join(dir, 'sticky'), 0o1777);
  lchownSync(join(dir, 'shared'), 1000, 1000);
  const fifo = spawnSync('mkfifo', ['-m', '0640', join(dir, 'fifo')]);
  if (fifo.status !== 0) throw new Error('mkfifo failed');
  mkdirSync(join(dir, 'many'));
  for (let i = 0; i < 300; i++) file(`many/entry-${String(i).padStart(4, '0')}-${'x'.repeat(i % 40)}`, String(i));
  if (opts.xattrs) {
    setXattr(join(dir, 'small.txt'), 'user.color', Buffer.from('blue'), 0);
    setXattr(join(dir, 'small.txt'), 'user.empty', Buffer.alloc(0), 0);
    setXattr(join(dir, 'big.bin'), 'user.binary', randomBytes(300), 0);
    setXattr(join(dir, 'nested'), 'user.dir', Buffer.from('a directory'), 0);
  }
  // Distinct, sub-second timestamps, set last (children first, so directories keep theirs).
  const stamp = (rel: string, sec: number): void => lutimesSync(join(dir, rel), sec + 0.123456, sec + 0.654321);
  stamp('small.txt', 1_000_000_000);
  stamp('dangling', 1_100_000_000);
  stamp('nested/a/b/c', 1_200_000_000);
  stamp('nested', 1_300_000_000);
}

/** One line per entry: type, mode, owner, size, mtime (ns), link target, content hash, xattrs, hard links. */
export function describeTree(root: string, opts: { mtime?: boolean; owners?: boolean; xattrs?: boolean } = {}): string[] {
  const { mtime = true, owners = true, xattrs = true } = opts;
  const lines: string[] = [];
  const inodes = new Map<string, string>();
  const walk = (rel: string): void => {
    const abs = rel ? join(root, rel) : root;
    const st = lstatSync(abs, { bigint: true }) as BigIntStats;
    const fields = [rel || '.', typeOf(st), (Number(st.mode) & 0o7777).toString(8)];
    if (owners) fields.push(`${st.uid}:${st.gid}`);
    if (st.isFile() || st.isSymbolicLink()) fields.push(`size=${st.size}`);
    if (mtime && !st.isSymbolicLink()) fields.push(`mtime=${st.mtimeNs}`);
    if (st.isSymbolicLink()) fields.push(`-> ${readlinkSync(abs)}`);
    if (st.isFile()) {
      fields.push(createHash('sha256').update(readFileSync(abs)).digest('hex').slice(0, 16));
      const key = `${st.ino}`;
      if (st.nlink > 1n) {
        const first = inodes.get(key);
        if (first) fields.push(`hardlink-of=${first}`);
        else inodes.set(key, rel);
        fields.push(`nlink=${st.nlink}`);
      }
    }
    if (xattrs && !st.isSymbolicLink()) fields.push(`xattrs={${userXattrs(abs)}}`);
    lines.push(fields.join(' '));
    if (st.isDirectory()) for (const name of readdirSync(abs).sort()) walk(rel ? join(rel, name) : name);
  };
  walk('');
  return lines;
}

function typeOf(st: BigIntStats): string {
  if (st.isFile()) return 'file';
  if (st.isDirectory()) return 'dir';
  if (st.isSymbolicLink()) return 'symlink';
  if (st.isFIFO()) return 'fifo';
  if (st.isSocket()) return 'socket';
  return 'other';
}

function userXattrs(path: string): string {
  let list: Buffer;
  try {
    list = listXattr(path, 65536) as Buffer;
  } catch (err) {
    if (err instanceof NativeError && (err.code === 'ENOTSUP' || err.code === 'EOPNOTSUPP')) return '';
    throw err;
  }
  const names = list.toString('latin1').split('\0').filter((n) => n.startsWith('user.')).sort();
  return names.map((n) => `${n}=${(getXattr(path, n, 65536) as Buffer).toString('hex')}`).join(',');
}
