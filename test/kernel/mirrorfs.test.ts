// mirrorfs under real tools: the CLI as a child process on temp dirs, and programs nobody
// here wrote (cp, tar, git, fio, coreutils, attr) working through the mount. Every test
// checks the tool succeeded and that the source directory holds exactly what it should.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, closeSync, fchmodSync, lstatSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, symlinkSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { startMirror, isMounted, MIRRORFS_CLI, type MirrorProcess } from './helpers/mirror.ts';
import { describeTree, diffTrees, have, makeFixtureTree, ok, run, xattrsWork } from './helpers/tree.ts';
import { unmountFuse } from '../../kernel/mount.ts';

const GIT = ['-c', 'user.name=fusekeeper test', '-c', 'user.email=test@fusekeeper.invalid', '-c', 'init.defaultBranch=main', '-c', 'gc.auto=0'];

/** `stat` of every entry below `dir`, relative names, sorted: type, mode, owner, size, links, mtime. */
function statListing(dir: string): string {
  return ok('sh', ['-c', `cd "$1" && find . -print0 | LC_ALL=C sort -z | xargs -0 stat -c '%n %F %a %u:%g %s %h %.9Y'`, 'sh', dir]);
}

/** The FIFO aside, every regular file in the listing with its size. */
function assertSameTree(expected: string, actual: string, what: string, opts: { mtime?: boolean } = {}): void {
  assert.deepEqual(diffTrees(expected, actual), [], `diff -r ${what}`);
  assert.deepEqual(describeTree(actual, opts), describeTree(expected, opts), `tree ${what}`);
}

/** Drops clean dentries and inodes, so the kernel FORGETs the nodes nobody holds. */
function dropDentries(): void {
  writeFileSync('/proc/sys/vm/drop_caches', '2');
}

/** The daemon's open fds that point into its source directory. */
function sourceFds(m: MirrorProcess): string[] {
  const dir = `/proc/${m.pid}/fd`;
  return readdirSync(dir)
    .map((fd) => {
      try {
        return readlinkSync(join(dir, fd));
      } catch {
        return '';
      }
    })
    .filter((target) => target === m.source || target.startsWith(`${m.source}/`));
}

/** A work dir for a describe block: fixtures, copies out of the mount, compiled helpers. */
function workDir(): string {
  return mkdtempSync(join(tmpdir(), 'fusekeeper-mirrortest-'));
}

describe('mirrorfs with passthrough, through real tools', () => {
  let m: MirrorProcess;
  let work: string;
  let fixture: string;
  let renameat2: string;
  let xattrs: boolean;

  before(async () => {
    work = workDir();
    fixture = join(work, 'fixture');
    mkdirSync(fixture);
    xattrs = have('setfattr') && xattrsWork(work);
    makeFixtureTree(fixture, { xattrs });
    renameat2 = join(work, 'renameat2');
    ok('cc', ['-O1', '-o', renameat2, new URL('./helpers/renameat2.c', import.meta.url).pathname]);
    m = await startMirror();
  });

  after(async () => {
    await m?.cleanup();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  test('cp -a copies a tree into the mount and back out unchanged', () => {
    const inMount = join(m.mountpoint, 'tree');
    ok('cp', ['-a', fixture, inMount]);
    assertSameTree(fixture, inMount, 'fixture vs mount');
    assertSameTree(fixture, join(m.source, 'tree'), 'fixture vs source');
    assert.equal(statListing(inMount), statListing(fixture));
    assert.equal(statListing(join(m.source, 'tree')), statListing(fixture));
    const out = join(work, 'out');
    ok('cp', ['-a', inMount, out]);
    assertSameTree(fixture, out, 'fixture vs copied back out');
    assert.equal(statListing(out), statListing(fixture));
    assert.ok(lstatSync(join(out, 'fifo')).isFIFO());
    assert.equal(lstatSync(join(out, 'hard1')).ino, lstatSync(join(out, 'nested/hard2')).ino);
  });

  test('tar round trip: create from the mount, extract elsewhere and into the mount', () => {
    const tarFile = join(work, 'tree.tar');
    const xattrArgs = ['--format=posix', ...(xattrs ? ['--xattrs', '--xattrs-include=user.*'] : [])];
    ok('tar', [...xattrArgs, '-C', m.mountpoint, '-cf', tarFile, 'tree']);
    const untar = join(work, 'untar');
    mkdirSync(untar);
    ok('tar', [...xattrArgs, '-C', untar, '-xpf', tarFile]);
    assertSameTree(fixture, join(untar, 'tree'), 'fixture vs tar extracted outside');
    mkdirSync(join(m.mountpoint, 'untar'));
    ok('tar', [...xattrArgs, '-C', join(m.mountpoint, 'untar'), '-xpf', tarFile]);
    assertSameTree(fixture, join(m.mountpoint, 'untar/tree'), 'fixture vs tar extracted into the mount');
    assertSameTree(fixture, join(m.source, 'untar/tree'), 'fixture vs source of tar extracted into the mount');
  });

  test('git init, add, commit, fsck and log inside the mount', () => {
    const repo = join(m.mountpoint, 'repo');
    mkdirSync(repo);
    ok('cp', ['-a', join(fixture, 'nested'), join(fixture, 'big.bin'), join(fixture, 'small.txt'), join(fixture, 'exec.sh'), repo]);
    ok('git', [...GIT, 'init', '-q'], { cwd: repo });
    ok('git', [...GIT, 'add', '-A'], { cwd: repo });
    ok('git', [...GIT, 'commit', '-q', '-m', 'first commit through mirrorfs'], { cwd: repo });
    writeFileSync(join(repo, 'small.txt'), 'changed\n');
    ok('git', [...GIT, 'commit', '-q', '-am', 'second'], { cwd: repo });
    ok('git', [...GIT, 'gc', '-q', '--prune=now'], { cwd: repo });
    ok('git', [...GIT, 'fsck', '--full', '--strict'], { cwd: repo });
    assert.equal(ok('git', [...GIT, 'log', '--format=%s'], { cwd: repo }), 'second\nfirst commit through mirrorfs\n');
    assert.equal(ok('git', [...GIT, 'status', '--porcelain'], { cwd: repo }), '');
    // The source is the same repository: git agrees there, without the mount. Read-only:
    // (--no-optional-locks: a plain status rewrites .git/index behind the mount's back,
    // and the kernel may cache the old file's attributes for the TTL.)
    const src = join(m.source, 'repo');
    ok('git', [...GIT, '-c', `safe.directory=${src}`, 'fsck', '--full'], { cwd: src });
    assert.equal(ok('git', [...GIT, '--no-optional-locks', '-c', `safe.directory=${src}`, 'status', '--porcelain'], { cwd: src }), '');
    ok('git', [...GIT, 'checkout', '-q', 'HEAD~1', '--', 'small.txt'], { cwd: repo });
    assert.equal(readFileSync(join(src, 'small.txt'), 'utf8'), 'hello, world\n');
  });

  test('fio with --verify=crc32c on a file in the mount', () => {
    const file = join(m.mountpoint, 'fio.dat');
    // --verify_state_save=0: no *-verify.state files left in the working directory.
    const common = ['--ioengine=psync', `--filename=${file}`, '--size=32m', '--verify=crc32c', '--do_verify=1', '--verify_fatal=1', '--verify_state_save=0', '--output-format=json'];
    const jobs = [
      ['--name=randwrite', '--rw=randwrite', '--bs=4k', '--direct=0'],
      ['--name=seqwrite', '--rw=write', '--bs=128k', '--direct=0'],
      ['--name=direct', '--rw=randwrite', '--bs=64k', '--direct=1'],
    ];
    for (const job of jobs) {
      const out = ok('fio', [...common, ...job], { cwd: work });
      const report = JSON.parse(out.slice(out.indexOf('{'))) as { jobs: { error: number; write: { io_bytes: number }; read: { io_bytes: number } }[] };
      assert.equal(report.jobs[0]!.error, 0, `fio ${job[0]}`);
      assert.equal(report.jobs[0]!.write.io_bytes, 32 * 1024 * 1024, `fio ${job[0]} wrote`);
      assert.ok(report.jobs[0]!.read.io_bytes > 0, `fio ${job[0]} verified by reading back`);
    }
    assert.equal(statSync(join(m.source, 'fio.dat')).size, 32 * 1024 * 1024);
    assert.equal(ok('cmp', [file, join(m.source, 'fio.dat')]), '');
  });

  test('renameat2: RENAME_NOREPLACE and RENAME_EXCHANGE, of files and of directories', () => {
    const mnt = m.mountpoint;
    const src = m.source;
    mkdirSync(join(mnt, 'ren'));
    writeFileSync(join(mnt, 'ren/a'), 'A');
    writeFileSync(join(mnt, 'ren/b'), 'B');
    const r2 = (flag: string, from: string, to: string) => run(renameat2, [flag, join(mnt, from), join(mnt, to)]);

    let r = r2('noreplace', 'ren/a', 'ren/b');
    assert.equal(r.stderr.trim(), 'EEXIST');
    assert.equal(readFileSync(join(src, 'ren/a'), 'utf8'), 'A');
    assert.equal(readFileSync(join(src, 'ren/b'), 'utf8'), 'B');
    r = r2('noreplace', 'ren/a', 'ren/c');
    assert.equal(r.status, 0, r.stderr);
    assert.equal(readFileSync(join(src, 'ren/c'), 'utf8'), 'A');
    assert.throws(() => lstatSync(join(src, 'ren/a')), { code: 'ENOENT' });

    r = r2('exchange', 'ren/b', 'ren/c');
    assert.equal(r.status, 0, r.stderr);
    assert.equal(readFileSync(join(src, 'ren/b'), 'utf8'), 'A');
    assert.equal(readFileSync(join(src, 'ren/c'), 'utf8'), 'B');
    assert.equal(readFileSync(join(mnt, 'ren/b'), 'utf8'), 'A');
    assert.equal(readFileSync(join(mnt, 'ren/c'), 'utf8'), 'B');
    r = r2('exchange', 'ren/b', 'ren/nothing');
    assert.equal(r.stderr.trim(), 'ENOENT');

    // Directories: the kernel keeps its cached children, mirrorfs must move their paths.
    mkdirSync(join(mnt, 'ren/d1/sub'), { recursive: true });
    mkdirSync(join(mnt, 'ren/d2'));
    writeFileSync(join(mnt, 'ren/d1/sub/f'), 'one');
    writeFileSync(join(mnt, 'ren/d2/g'), 'two');
    r = r2('exchange', 'ren/d1', 'ren/d2');
    assert.equal(r.status, 0, r.stderr);
    assert.equal(readFileSync(join(src, 'ren/d2/sub/f'), 'utf8'), 'one');
    assert.equal(readFileSync(join(src, 'ren/d1/g'), 'utf8'), 'two');
    // Writes through names cached before the exchange land in the right source files.
    writeFileSync(join(mnt, 'ren/d2/sub/f'), 'one again');
    writeFileSync(join(mnt, 'ren/d1/g'), 'two again');
    writeFileSync(join(mnt, 'ren/d2/sub/new'), 'new');
    assert.equal(readFileSync(join(src, 'ren/d2/sub/f'), 'utf8'), 'one again');
    assert.equal(readFileSync(join(src, 'ren/d1/g'), 'utf8'), 'two again');
    assert.equal(readFileSync(join(src, 'ren/d2/sub/new'), 'utf8'), 'new');
    r = r2('noreplace', 'ren/d1', 'ren/d2');
    assert.equal(r.stderr.trim(), 'EEXIST');
    r = r2('none', 'ren/d2', 'ren/d3');
    assert.equal(r.status, 0, r.stderr);
    writeFileSync(join(mnt, 'ren/d3/sub/f'), 'moved');
    assert.equal(readFileSync(join(src, 'ren/d3/sub/f'), 'utf8'), 'moved');
    assert.deepEqual(describeTree(join(mnt, 'ren')), describeTree(join(src, 'ren')));
  });

  test('chmod, chown, truncate and touch -d (utimens) land on the source', () => {
    const f = join(m.mountpoint, 'attrs');
    const s = join(m.source, 'attrs');
    writeFileSync(f, 'x'.repeat(10_000));
    ok('chmod', ['0640', f]);
    assert.equal(statSync(s).mode & 0o7777, 0o640);
    ok('chmod', ['u+s,g+x', f]);
    assert.equal(statSync(s).mode & 0o7777, 0o4650);
    ok('chown', ['1234:4321', f]);
    assert.equal(statSync(s).uid, 1234);
    assert.equal(statSync(s).gid, 4321);
    ok('chown', [':99', f]);
    assert.equal(statSync(s).uid, 1234);
    assert.equal(statSync(s).gid, 99);
    ok('truncate', ['-s', '12345', f]);
    assert.equal(statSync(s).size, 12345);
    ok('truncate', ['-s', '100', f]);
    assert.equal(readFileSync(s, 'utf8'), 'x'.repeat(100));
    ok('touch', ['-d', '2001-02-03 04:05:06.123456789 UTC', f]);
    assert.equal(ok('stat', ['-c', '%.9Y', s]).trim(), '981173106.123456789');
    assert.equal(ok('stat', ['-c', '%.9Y', f]).trim(), '981173106.123456789');
    ok('touch', ['-a', '-d', '1999-12-31 23:59:59.5 UTC', f]);
    assert.equal(ok('stat', ['-c', '%.9X %.9Y', s]).trim(), '946684799.500000000 981173106.123456789');
    const before = Date.now() / 1000;
    ok('touch', [f]);
    assert.ok(Number(ok('stat', ['-c', '%.9Y', s])) >= before - 1);
    symlinkSync('attrs', join(m.mountpoint, 'attrs-link'));
    ok('touch', ['-h', '-d', '2010-01-01 00:00:00.25 UTC', join(m.mountpoint, 'attrs-link')]);
    assert.equal(ok('stat', ['-c', '%.9Y', join(m.source, 'attrs-link')]).trim(), '1262304000.250000000');
    assert.ok(Number(ok('stat', ['-c', '%Y', s])) >= before - 1, 'touch -h left the target alone');
    ok('chown', ['-h', '7:7', join(m.mountpoint, 'attrs-link')]);
    assert.equal(lstatSync(join(m.source, 'attrs-link')).uid, 7);
    assert.equal(statSync(s).uid, 1234);
  });

  test('fallocate allocates, punches holes and the size shows on the source', () => {
    const f = join(m.mountpoint, 'falloc');
    const s = join(m.source, 'falloc');
    ok('fallocate', ['-l', '10MiB', f]);
    assert.equal(statSync(s).size, 10 * 1024 * 1024);
    assert.ok(statSync(s).blocks * 512 >= 10 * 1024 * 1024, 'blocks allocated');
    writeFileSync(f, Buffer.alloc(1024 * 1024, 0xab));
    ok('fallocate', ['-n', '-l', '4MiB', f]);
    assert.equal(statSync(s).size, 1024 * 1024, 'keep-size');
    ok('fallocate', ['-p', '-o', '0', '-l', '65536', f]);
    const data = readFileSync(f);
    assert.equal(data.length, 1024 * 1024);
    assert.ok(data.subarray(0, 65536).every((b) => b === 0), 'hole reads as zeros');
    assert.ok(data.subarray(65536).every((b) => b === 0xab));
    assert.ok(readFileSync(s).equals(data));
  });

  // coreutils 9.1 (Debian 12) copies with copy_file_range by default and with read/write
  // under --reflink=never (copy_file_range may reflink); both, inside and out of the mount.
  test('cp of a large file inside the mount: copy_file_range, and --reflink=never', () => {
    const big = join(m.mountpoint, 'large');
    const fd = openSync(big, 'w');
    const chunk = Buffer.alloc(1024 * 1024);
    for (let i = 0; i < 24; i++) {
      chunk.fill(i + 1);
      chunk.writeUInt32LE(i * 7919, 100);
      writeSync(fd, chunk);
    }
    closeSync(fd);
    for (const args of [[], ['--reflink=never']]) {
      const copy = join(m.mountpoint, `large.copy${args.length}`);
      ok('cp', [...args, big, copy]);
      ok('cmp', [join(m.source, 'large'), join(m.source, `large.copy${args.length}`)]);
      ok('cmp', [big, copy]);
      // And out of the mount and back in, across filesystems.
      ok('cp', [...args, big, join(work, 'large.out')]);
      ok('cmp', [join(m.source, 'large'), join(work, 'large.out')]);
      ok('cp', [...args, join(work, 'large.out'), join(m.mountpoint, 'large.in')]);
      ok('cmp', [join(m.source, 'large'), join(m.source, 'large.in')]);
      rmSync(join(work, 'large.out'));
    }
  });

  test('statfs (df) reports the source filesystem', () => {
    const fields = (p: string) => ok('stat', ['-f', '-c', '%S %b %c %l', p]).trim();
    assert.equal(fields(m.mountpoint), fields(m.source));
    const df = ok('df', ['-B1', '--output=size,target', m.mountpoint]).trim().split('\n');
    const srcDf = ok('df', ['-B1', '--output=size', m.source]).trim().split('\n');
    assert.equal(df.length, 2);
    assert.equal(df[1]!.trim().split(/\s+/)[0], srcDf[1]!.trim());
    assert.equal(df[1]!.trim().split(/\s+/)[1], m.mountpoint);
  });

  test('xattrs with setfattr/getfattr', { skip: !have('setfattr') && 'attr is not installed (scripts/install-deps.sh)' }, () => {
    const f = join(m.mountpoint, 'xattr-file');
    const s = join(m.source, 'xattr-file');
    writeFileSync(f, 'x');
    mkdirSync(join(m.mountpoint, 'xattr-dir'));
    ok('setfattr', ['-n', 'user.plain', '-v', 'value', f]);
    ok('setfattr', ['-n', 'user.big', '-v', `0x${'ab'.repeat(4000)}`, f]);
    ok('setfattr', ['-n', 'user.dir', '-v', 'on a dir', join(m.mountpoint, 'xattr-dir')]);
    assert.equal(ok('getfattr', ['--only-values', '-n', 'user.plain', s]), 'value');
    assert.equal(ok('getfattr', ['--only-values', '-n', 'user.dir', join(m.source, 'xattr-dir')]), 'on a dir');
    const dump = (p: string) => ok('getfattr', ['-d', '-e', 'hex', '--absolute-names', p]).split('\n').slice(1).join('\n');
    assert.equal(dump(f), dump(s));
    assert.match(dump(f), /user\.big=0x(ab){4000}/);
    ok('setfattr', ['-x', 'user.plain', f]);
    assert.doesNotMatch(dump(s), /user\.plain/);
    const missing = run('getfattr', ['-n', 'user.plain', f]);
    assert.notEqual(missing.status, 0);
    assert.match(missing.stderr, /No such attribute/);
    // XATTR_CREATE on an existing name fails; XATTR_REPLACE on a missing one too.
    const py = (flags: string, name: string) => run('python3', ['-c', `import os,sys; os.setxattr(sys.argv[1], "${name}", b"v", ${flags})`, f]);
    assert.match(py('os.XATTR_CREATE', 'user.big').stderr, /File exists/);
    assert.match(py('os.XATTR_REPLACE', 'user.absent').stderr, /No data available/);
  });

  test('nodeids are stable: st_ino is the source inode, before and after a FORGET', async () => {
    const f = join(m.mountpoint, 'stable');
    writeFileSync(f, 'x');
    ok('ln', [f, join(m.mountpoint, 'stable-link')]);
    const sourceIno = ok('stat', ['-c', '%i', join(m.source, 'stable')]).trim();
    assert.equal(ok('stat', ['-c', '%i', f]).trim(), sourceIno);
    assert.equal(ok('stat', ['-c', '%i %h', join(m.mountpoint, 'stable-link')]).trim(), `${sourceIno} 2`);
    const before = await m.stats();
    let after = before;
    for (let i = 0; i < 100 && after.nodes >= before.nodes; i++) {
      dropDentries();
      await sleep(20);
      after = await m.stats();
    }
    assert.ok(after.nodes < before.nodes, `the kernel forgot nodes (${before.nodes} -> ${after.nodes})`);
    assert.equal(ok('stat', ['-c', '%i', f]).trim(), sourceIno);
    assert.equal(ok('stat', ['-c', '%i', join(m.mountpoint, 'stable-link')]).trim(), sourceIno);
    assert.equal(ok('stat', ['-c', '%i', m.mountpoint]).trim(), ok('stat', ['-c', '%i', m.source]).trim());
  });

  test('regression: unlinking the hard link looked up last leaves the other name usable', () => {
    const a = join(m.mountpoint, 'hl-a');
    writeFileSync(a, 'hello\n');
    ok('ln', [a, join(m.mountpoint, 'hl-b')]);
    ok('stat', [join(m.mountpoint, 'hl-b')]); // the node's name is now hl-b
    ok('rm', [join(m.mountpoint, 'hl-b')]);
    // Used to fail with ENOENT for the kernel's cache lifetime: the node still said hl-b.
    ok('chmod', ['0600', a]);
    assert.equal(statSync(join(m.source, 'hl-a')).mode & 0o777, 0o600);
    ok('sh', ['-c', 'echo more >> "$1"', 'sh', a]);
    assert.equal(readFileSync(join(m.source, 'hl-a'), 'utf8'), 'hello\nmore\n');
  });

  test('regression: a file replaced by rename is not reached through the old one', () => {
    const x = join(m.mountpoint, 'rep-x');
    writeFileSync(x, 'old');
    writeFileSync(join(m.mountpoint, 'rep-y'), 'new');
    const fd = openSync(x, 'r');
    try {
      ok('mv', [join(m.mountpoint, 'rep-y'), x]);
      // The old file is unlinked but open: changing it must not touch the new rep-x.
      try {
        fchmodSync(fd, 0o600);
      } catch (err) {
        assert.equal((err as NodeJS.ErrnoException).code, 'ENOENT');
      }
      assert.equal(statSync(join(m.source, 'rep-x')).mode & 0o777, 0o644);
      assert.equal(readFileSync(x, 'utf8'), 'new');
    } finally {
      closeSync(fd);
    }
  });

  test('SIGTERM unmounts and exits 0, with no handle left open', async () => {
    // RELEASE is asynchronous: close(2) returns before the daemon has seen it.
    for (let i = 0; i < 100 && (await m.stats()).openHandles > 0; i++) await sleep(20);
    assert.equal((await m.stats()).openHandles, 0);
    assert.deepEqual(sourceFds(m), [], 'the daemon holds no fd into the source once every file is closed');
    await m.stop();
    const stats = m.finalStats();
    assert.equal(stats.openHandles, 0);
    assert.ok(stats.passthroughOpens > 0);
    assert.equal(stats.reads, 0, 'passthrough served every read in the kernel');
    assert.ok(!isMounted(m.mountpoint));
  });
});

// Also the one run of real tools with --metadata-on-main: lookups, stats and opens of the
// source on the main thread instead of libuv's pool (test/unit/mirrorfs-metadata.test.ts).
describe('mirrorfs without passthrough, metadata on the main thread: data through the daemon', () => {
  let m: MirrorProcess;
  let work: string;
  let fixture: string;

  before(async () => {
    work = workDir();
    fixture = join(work, 'fixture');
    mkdirSync(fixture);
    makeFixtureTree(fixture, { xattrs: have('setfattr') && xattrsWork(work) });
    m = await startMirror({ passthrough: false, args: ['--metadata-on-main'] });
  });

  after(async () => {
    await m?.cleanup();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  test('cp -a in and out, and a tar round trip', () => {
    ok('cp', ['-a', fixture, join(m.mountpoint, 'tree')]);
    assertSameTree(fixture, join(m.source, 'tree'), 'fixture vs source');
    ok('cp', ['-a', join(m.mountpoint, 'tree'), join(work, 'out')]);
    assertSameTree(fixture, join(work, 'out'), 'fixture vs copied back out');
    // POSIX format: nanosecond mtimes and xattrs survive.
    const tarArgs = ['--format=posix', '--xattrs', '--xattrs-include=user.*'];
    ok('tar', [...tarArgs, '-C', m.mountpoint, '-cf', join(work, 'tree.tar'), 'tree']);
    mkdirSync(join(work, 'untar'));
    ok('tar', [...tarArgs, '-C', join(work, 'untar'), '-xpf', join(work, 'tree.tar')]);
    assertSameTree(fixture, join(work, 'untar/tree'), 'fixture vs tar');
  });

  test('fio with --verify=crc32c', () => {
    const file = join(m.mountpoint, 'fio.dat');
    for (const job of [['--name=randwrite', '--rw=randwrite', '--bs=4k'], ['--name=seqwrite', '--rw=write', '--bs=128k']]) {
      ok('fio', ['--ioengine=psync', `--filename=${file}`, '--size=16m', '--verify=crc32c', '--do_verify=1', '--verify_fatal=1', '--verify_state_save=0', '--direct=0', ...job], { cwd: work });
    }
    ok('cmp', [file, join(m.source, 'fio.dat')]);
  });

  test('cp inside the mount is a copy_file_range in the daemon, not reads and writes', async () => {
    const big = join(m.mountpoint, 'large');
    writeFileSync(big, Buffer.alloc(8 * 1024 * 1024, 0x5a));
    const before = await m.stats();
    ok('cp', [big, join(m.mountpoint, 'large.copy')]);
    const after = await m.stats();
    ok('cmp', [join(m.source, 'large'), join(m.source, 'large.copy')]);
    assert.equal(after.writes - before.writes, 0, 'no WRITE: the daemon copied with copy_file_range');
    assert.equal(after.reads - before.reads, 0, 'no READ: the daemon copied with copy_file_range');
    ok('cp', ['--reflink=never', big, join(m.mountpoint, 'large.rw')]);
    ok('cmp', [join(m.source, 'large'), join(m.source, 'large.rw')]);
    assert.ok((await m.stats()).writes - after.writes >= 8, '--reflink=never: WRITEs through the daemon');
  });

  test('SIGTERM unmounts and exits 0; reads went through the daemon', async () => {
    for (let i = 0; i < 100 && (await m.stats()).openHandles > 0; i++) await sleep(20);
    assert.deepEqual(sourceFds(m), []);
    await m.stop();
    const stats = m.finalStats();
    assert.equal(stats.passthroughOpens, 0);
    assert.ok(stats.reads > 0 && stats.writes > 0);
    assert.equal(stats.openHandles, 0);
  });
});

describe('passthrough is really used', () => {
  let data: string;
  const SIZE = 256 * 1024 * 1024;

  before(() => {
    data = workDir();
    const fd = openSync(join(data, 'big'), 'w');
    const chunk = Buffer.alloc(1024 * 1024);
    for (let i = 0; i < SIZE / chunk.length; i++) {
      chunk.fill(i & 0xff);
      writeSync(fd, chunk);
    }
    closeSync(fd);
  });

  after(() => {
    if (data) rmSync(data, { recursive: true, force: true });
  });

  for (const passthrough of [true, false]) {
    test(`reading 256 MiB ${passthrough ? 'with passthrough takes ZERO READ requests' : 'with --no-passthrough goes through the daemon'}`, async () => {
      const m = await startMirror({ source: data, passthrough });
      try {
        const out = run('dd', [`if=${join(m.mountpoint, 'big')}`, 'of=/dev/null', 'bs=1M']);
        assert.equal(out.status, 0, out.stderr);
        assert.match(out.stderr, /^268435456 bytes/m);
        const stats = await m.stats();
        if (passthrough) {
          assert.equal(stats.reads, 0, JSON.stringify(stats));
          assert.ok(stats.passthroughOpens >= 1, JSON.stringify(stats));
        } else {
          assert.ok(stats.reads > 0, JSON.stringify(stats));
          assert.equal(stats.passthroughOpens, 0);
        }
        await m.stop();
      } finally {
        await m.cleanup();
      }
    });
  }
});

describe('fusekeeper-mirrorfs refuses bad input with one line and a non-zero exit', () => {
  let dir: string;
  let tmpfs: string | undefined;

  before(() => {
    dir = workDir();
    chmodSync(dir, 0o755); // the unprivileged run must be able to reach it
    mkdirSync(join(dir, 'src'));
    mkdirSync(join(dir, 'mnt'));
    writeFileSync(join(dir, 'file'), 'x');
  });

  after(() => {
    if (tmpfs && isMounted(tmpfs)) unmountFuse(tmpfs, true);
    if (dir && !isMounted(join(dir, 'busy'))) rmSync(dir, { recursive: true, force: true });
  });

  const cli = (args: string[], wrap: string[] = []) =>
    wrap.length ? run(wrap[0]!, [...wrap.slice(1), process.execPath, MIRRORFS_CLI, ...args]) : run(process.execPath, [MIRRORFS_CLI, ...args]);

  function assertRefused(r: ReturnType<typeof run>, pattern: RegExp, mountpoint = join(dir, 'mnt')): void {
    assert.notEqual(r.status, 0);
    assert.equal(r.stderr.trimEnd().split('\n').length, 1, `one line on stderr, got:\n${r.stderr}`);
    assert.match(r.stderr, pattern);
    assert.match(r.stderr, /^fusekeeper-mirrorfs: /);
    assert.ok(!isMountedFuse(mountpoint), `nothing mounted on ${mountpoint}`);
  }

  function isMountedFuse(mountpoint: string): boolean {
    return readFileSync('/proc/self/mountinfo', 'utf8').split('\n').some((l) => l.split(' ')[4] === mountpoint && l.includes(' - fuse.'));
  }

  test('a source that does not exist', () => {
    assertRefused(cli([join(dir, 'nope'), join(dir, 'mnt')]), /source .*nope does not exist/);
  });

  test('a source that is a file', () => {
    assertRefused(cli([join(dir, 'file'), join(dir, 'mnt')]), /is not a directory/);
  });

  test('a mountpoint that is not a directory, or missing', () => {
    assertRefused(cli([join(dir, 'src'), join(dir, 'file')]), /mountpoint .*file is not a directory/, join(dir, 'file'));
    assertRefused(cli([join(dir, 'src'), join(dir, 'missing')]), /mountpoint .*missing does not exist/, join(dir, 'missing'));
  });

  test('a mountpoint that is busy (a tmpfs is mounted there)', () => {
    tmpfs = join(dir, 'busy');
    mkdirSync(tmpfs);
    ok('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'fusekeeper-test', tmpfs]);
    try {
      assertRefused(cli([join(dir, 'src'), tmpfs]), /busy/, tmpfs);
      assert.ok(!isMountedFuse(tmpfs));
    } finally {
      ok('umount', [tmpfs]);
    }
    assert.ok(!isMounted(tmpfs));
  });

  test('a mountpoint inside the source', () => {
    mkdirSync(join(dir, 'src/inner'), { recursive: true });
    assertRefused(cli([join(dir, 'src'), join(dir, 'src/inner')]), /inside the source/, join(dir, 'src/inner'));
  });

  test('no privileges (as nobody)', { skip: !have('setpriv') && 'setpriv (util-linux) is missing' }, () => {
    assertRefused(cli([join(dir, 'src'), join(dir, 'mnt')], ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups']), /needs root or CAP_SYS_ADMIN/);
  });

  test('wrong arguments: usage on stderr, exit 2', () => {
    const r = cli([join(dir, 'src')]);
    assert.equal(r.status, 2);
    assert.match(r.stderr, /^fusekeeper-mirrorfs: expected SOURCE and MOUNTPOINT\nusage: /);
    const bad = cli(['--bogus', join(dir, 'src'), join(dir, 'mnt')]);
    assert.equal(bad.status, 2);
  });

  test('--help exits 0 and prints the usage', () => {
    const r = cli(['--help']);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /^usage: fusekeeper-mirrorfs SOURCE MOUNTPOINT/);
    assert.equal(r.stderr, '');
  });
});
