// The native seam writes C structs by hand. These tests compare its x86_64/glibc layouts
// with what the C compiler says, and check the pure helpers.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LAYOUT, cmsgSpace, encodeUnixAddress, STAT_SIZE, decodeStat, devMajor, devMinor, parseThreadExits } from '../../native/index.ts';

const program = `
#define _GNU_SOURCE
#include <stdio.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#define P(name, value) printf("%s=%ld\\n", name, (long)(value))
int main(void) {
  P("msghdr.size", sizeof(struct msghdr));
  P("msghdr.name", offsetof(struct msghdr, msg_name));
  P("msghdr.namelen", offsetof(struct msghdr, msg_namelen));
  P("msghdr.iov", offsetof(struct msghdr, msg_iov));
  P("msghdr.iovlen", offsetof(struct msghdr, msg_iovlen));
  P("msghdr.control", offsetof(struct msghdr, msg_control));
  P("msghdr.controllen", offsetof(struct msghdr, msg_controllen));
  P("msghdr.flags", offsetof(struct msghdr, msg_flags));
  P("iovec.size", sizeof(struct iovec));
  P("iovec.base", offsetof(struct iovec, iov_base));
  P("iovec.len", offsetof(struct iovec, iov_len));
  P("cmsghdr.size", sizeof(struct cmsghdr));
  P("cmsghdr.len", offsetof(struct cmsghdr, cmsg_len));
  P("cmsghdr.level", offsetof(struct cmsghdr, cmsg_level));
  P("cmsghdr.type", offsetof(struct cmsghdr, cmsg_type));
  P("ucred.size", sizeof(struct ucred));
  P("ucred.pid", offsetof(struct ucred, pid));
  P("ucred.uid", offsetof(struct ucred, uid));
  P("ucred.gid", offsetof(struct ucred, gid));
  P("sockaddrUn.size", sizeof(struct sockaddr_un));
  P("sockaddrUn.family", offsetof(struct sockaddr_un, sun_family));
  P("sockaddrUn.path", offsetof(struct sockaddr_un, sun_path));
  P("cmsgSpace.4", CMSG_SPACE(4));
  P("cmsgSpace.12", CMSG_SPACE(12));
  P("stat.size", sizeof(struct stat));
  P("stat.dev", offsetof(struct stat, st_dev));
  P("stat.ino", offsetof(struct stat, st_ino));
  P("stat.nlink", offsetof(struct stat, st_nlink));
  P("stat.mode", offsetof(struct stat, st_mode));
  P("stat.uid", offsetof(struct stat, st_uid));
  P("stat.gid", offsetof(struct stat, st_gid));
  P("stat.rdev", offsetof(struct stat, st_rdev));
  P("stat.size_", offsetof(struct stat, st_size));
  P("major.big", major(makedev(0x12345, 0x6789a)));
  P("minor.big", minor(makedev(0x12345, 0x6789a)));
  P("dev.big", makedev(0x12345, 0x6789a));
  return 0;
}
`;

function compilerLayout(): Map<string, number> {
  const dir = mkdtempSync(join(tmpdir(), 'fusekeeper-layout-'));
  try {
    writeFileSync(join(dir, 'layout.c'), program);
    execFileSync('cc', ['-o', join(dir, 'layout'), join(dir, 'layout.c')]);
    const out = execFileSync(join(dir, 'layout'), { encoding: 'utf8' });
    return new Map(out.trim().split('\n').map((l) => {
      const [k, v] = l.split('=');
      return [k!, Number(v)];
    }));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test('msghdr, iovec, cmsghdr, ucred, sockaddr_un and stat layouts match the C compiler', () => {
  const c = compilerLayout();
  for (const [struct, fields] of Object.entries(LAYOUT)) {
    for (const [field, value] of Object.entries(fields)) {
      assert.equal(value, c.get(`${struct}.${field}`), `${struct}.${field}`);
    }
  }
  assert.equal(cmsgSpace(4), c.get('cmsgSpace.4'));
  assert.equal(cmsgSpace(12), c.get('cmsgSpace.12'));
  assert.equal(STAT_SIZE, c.get('stat.size'));
  const probe = Buffer.alloc(STAT_SIZE);
  for (const [field, at] of [['dev', 'stat.dev'], ['ino', 'stat.ino'], ['nlink', 'stat.nlink'], ['rdev', 'stat.rdev'], ['size', 'stat.size_']] as const) {
    probe.fill(0);
    probe.writeBigUInt64LE(0x0102030405060708n, c.get(at)!);
    assert.equal(decodeStat(probe)[field], 0x0102030405060708n, field);
  }
  for (const [field, at] of [['mode', 'stat.mode'], ['uid', 'stat.uid'], ['gid', 'stat.gid']] as const) {
    probe.fill(0);
    probe.writeUInt32LE(0x01020304, c.get(at)!);
    assert.equal(decodeStat(probe)[field], 0x01020304, field);
  }
  const dev = BigInt(c.get('dev.big')!);
  assert.equal(devMajor(dev), c.get('major.big'));
  assert.equal(devMinor(dev), c.get('minor.big'));
});

test('unix socket addresses: path with trailing NUL, abstract with leading NUL, too long refused', () => {
  const out = Buffer.alloc(LAYOUT.sockaddrUn.size);
  assert.equal(encodeUnixAddress('/run/fk.sock', out), 2 + 12 + 1);
  assert.equal(out.readUInt16LE(0), 1);
  assert.equal(out.subarray(2, 15).toString('latin1'), '/run/fk.sock\0');
  assert.equal(encodeUnixAddress('@fk', out), 2 + 1 + 2);
  assert.deepEqual([...out.subarray(2, 6)], [0, 0x66, 0x6b, 0]);
  assert.throws(() => encodeUnixAddress(`/${'x'.repeat(107)}`, out), RangeError);
  assert.throws(() => encodeUnixAddress('@', out), RangeError);
  assert.doesNotThrow(() => encodeUnixAddress(`/${'x'.repeat(106)}`, out));
});

test('process events: thread exits are read out of netlink messages, other events and torn messages are skipped', () => {
  // nlmsghdr (16) + cn_msg (20: idx, val, seq, ack, len, flags) + struct proc_event (what,
  // cpu, timestamp_ns, then exit: pid, tgid, exit_code, exit_signal, parent_pid, parent_tgid).
  const message = (what: number, tid: number, pid: number, code: number, idx = 1, atNs = 0n): Buffer => {
    const b = Buffer.alloc(16 + 20 + 16 + 24);
    b.writeUInt32LE(b.length, 0);
    b.writeUInt16LE(3, 4);
    b.writeUInt32LE(idx, 16);
    b.writeUInt32LE(1, 20);
    b.writeUInt16LE(40, 32);
    b.writeUInt32LE(what, 36);
    b.writeBigUInt64LE(atNs, 44);
    b.writeInt32LE(tid, 52);
    b.writeInt32LE(pid, 56);
    b.writeUInt32LE(code, 60);
    return b;
  };
  const EXIT = 0x80000000;
  const FORK = 0x1;
  const bytes = Buffer.concat([message(EXIT, 101, 100, 9, 1, 14501846455162n), message(FORK, 7, 7, 0), message(EXIT, 5, 5, 1, 2), message(EXIT, 100, 100, 256, 1, 14501848000000n)]);
  assert.deepEqual(parseThreadExits(bytes), [
    { tid: 101, pid: 100, exitCode: 9, atNs: 14501846455162n },
    { tid: 100, pid: 100, exitCode: 256, atNs: 14501848000000n },
  ]);
  assert.deepEqual(parseThreadExits(bytes.subarray(0, bytes.length - 1)), [{ tid: 101, pid: 100, exitCode: 9, atNs: 14501846455162n }], 'a torn last message is dropped');
  assert.deepEqual(parseThreadExits(Buffer.alloc(0)), []);
  const bogus = Buffer.alloc(32);
  bogus.writeUInt32LE(4, 0);
  assert.deepEqual(parseThreadExits(bogus), [], 'a length below the header stops parsing');
});
