import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  createSocket, bindSocket, listenSocket, acceptConnection, sendMessage, receiveMessage,
  peerCredentials, createSocketPair, openFd, closeFd, closeAll, O, NativeError, pidfdOpen, pidfdSendSignal, watchFd, type PollEvents,
} from '../../native/index.ts';
import { waitReadable } from '../../kernel/handshake.ts';
import { backingOpen, backingClose, backingCloseAll } from '../../kernel/backing.ts';
import { openFuseDevice } from '../../kernel/device.ts';
import { FuseKernelError } from '../../kernel/errors.ts';
import { mountTestConnection, fdSnapshot, newFds } from './helpers/connection.ts';

const receiver = new URL('./helpers/fd-receiver.ts', import.meta.url).pathname;

/** Starts the receiver child, accepts its connection, sends `data` + `fds`, returns its answer and pid. */
async function sendToChild(data: string, fds: number[]): Promise<{ answer: string; credPid: number; childPid: number }> {
  const address = `@fusekeeper-test-${process.pid}-${Math.random().toString(36).slice(2)}`;
  const listener = createSocket('seqpacket');
  try {
    bindSocket(listener, address);
    listenSocket(listener);
    const child = spawn(process.execPath, ['--import', 'tsx', receiver, address], { stdio: ['ignore', 'inherit', 'inherit'] });
    const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
    assert.ok(await waitReadable(listener, 15_000), 'child connected');
    const conn = acceptConnection(listener);
    assert.notEqual(conn, null);
    try {
      const cred = peerCredentials(conn!);
      assert.equal(sendMessage(conn!, { data: Buffer.from(data), fds }), data.length);
      assert.ok(await waitReadable(conn!, 15_000), 'child answered');
      const reply = receiveMessage(conn!, { maxBytes: 4096, maxFds: 0 });
      assert.equal(reply.kind, 'message');
      assert.equal(await exited, 0);
      return { answer: reply.kind === 'message' ? reply.data.toString() : '', credPid: cred.pid, childPid: child.pid! };
    } finally {
      closeFd(conn!);
    }
  } finally {
    closeFd(listener);
  }
}

test('an fd of an opened file crosses to another process over SEQPACKET and is read there; SO_PEERCRED names the child', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'fusekeeper-test-'));
  const before = fdSnapshot();
  try {
    writeFileSync(join(dir, 'f'), 'content from the parent');
    const fd = openFd(join(dir, 'f'), O.RDONLY);
    const { answer, credPid, childPid } = await sendToChild('read', [fd]);
    closeFd(fd);
    assert.equal(answer, 'content from the parent');
    assert.equal(credPid, childPid);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  assert.deepEqual(newFds(before), []);
});

test('a mounted /dev/fuse fd crosses to another process, which opens and closes a backing id on it', async () => {
  const conn = await mountTestConnection();
  try {
    writeFileSync(join(conn.dir, 'backing'), 'x');
    const backing = openFd(join(conn.dir, 'backing'), O.RDONLY);
    const { answer } = await sendToChild('backing', [conn.fd, backing]);
    closeFd(backing);
    assert.match(answer, /^id=\d+$/);
  } finally {
    conn.cleanup();
  }
});

test('backing ids on a mounted passthrough connection: open, close, unknown id, CLOSE_ALL unsupported here', async (t) => {
  const conn = await mountTestConnection();
  try {
    writeFileSync(join(conn.dir, 'backing'), 'x');
    const backing = openFd(join(conn.dir, 'backing'), O.RDONLY);
    try {
      const a = backingOpen(conn.fd, backing);
      const b = backingOpen(conn.fd, backing);
      assert.ok(a >= 1);
      assert.equal(b, a + 1, 'ids are allocated cyclically upwards');
      backingClose(conn.fd, a);
      assert.throws(() => backingClose(conn.fd, a), (e: unknown) => e instanceof FuseKernelError && e.code === 'ERR_UNKNOWN_BACKING_ID' && e.errno === 'ENOENT');
      assert.throws(() => backingClose(conn.fd, 999_999), (e: unknown) => e instanceof FuseKernelError && e.code === 'ERR_UNKNOWN_BACKING_ID');
      const all = backingCloseAll(conn.fd);
      if (all.status === 'closed') {
        t.diagnostic('this kernel has FUSE_DEV_IOC_BACKING_CLOSE_ALL');
        assert.throws(() => backingClose(conn.fd, b), (e: unknown) => e instanceof FuseKernelError && e.code === 'ERR_UNKNOWN_BACKING_ID');
      } else {
        assert.deepEqual(all, { status: 'unsupported' });
        backingClose(conn.fd, b);
      }
    } finally {
      closeFd(backing);
    }
  } finally {
    conn.cleanup();
  }
});

test('backingOpen on bad fds: a regular file, a closed fd, an unmounted /dev/fuse fd, a closed backing fd', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'fusekeeper-test-'));
  const before = fdSnapshot();
  try {
    writeFileSync(join(dir, 'f'), 'x');
    const file = openFd(join(dir, 'f'), O.RDONLY);
    const bare = openFuseDevice();
    const isCode = (code: string) => (e: unknown) => e instanceof FuseKernelError && e.code === code;
    assert.throws(() => backingOpen(file, file), isCode('ERR_NOT_FUSE_DEVICE'));
    assert.throws(() => backingOpen(9999, file), isCode('ERR_BAD_FD'));
    assert.throws(() => backingOpen(bare, file), isCode('ERR_PASSTHROUGH_NOT_READY'));
    assert.throws(() => backingClose(file, 1), isCode('ERR_NOT_FUSE_DEVICE'));
    assert.throws(() => backingCloseAll(file), isCode('ERR_NOT_FUSE_DEVICE'));
    assert.throws(() => backingCloseAll(9999), isCode('ERR_BAD_FD'));
    closeAll([file, bare]);
    const conn = await mountTestConnection();
    try {
      assert.throws(() => backingOpen(conn.fd, 9999), isCode('ERR_BAD_FD'));
    } finally {
      conn.cleanup();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  assert.deepEqual(newFds(before), []);
});

test('a connection without passthrough negotiated refuses backing ids with a typed error', async () => {
  const conn = await mountTestConnection(0n);
  try {
    writeFileSync(join(conn.dir, 'backing'), 'x');
    const backing = openFd(join(conn.dir, 'backing'), O.RDONLY);
    try {
      assert.throws(() => backingOpen(conn.fd, backing), (e: unknown) => e instanceof FuseKernelError && e.code === 'ERR_PASSTHROUGH_NOT_READY');
    } finally {
      closeFd(backing);
    }
  } finally {
    conn.cleanup();
  }
});

test('a received message with more fds than expected closes the extras', () => {
  const [a, b] = createSocketPair('seqpacket');
  const file = openFd('/proc/self/status', O.RDONLY);
  const before = fdSnapshot();
  sendMessage(a, { data: Buffer.from('x'), fds: [file, file, file, file, file] });
  const got = receiveMessage(b, { maxBytes: 16, maxFds: 2 });
  assert.equal(got.kind, 'message');
  if (got.kind !== 'message') return;
  assert.equal(got.fds.length, 2);
  assert.equal(got.extraFdsClosed, 3);
  assert.equal(newFds(before).length, 2, "exactly the two kept fds are new");
  closeAll(got.fds);
  const none = receiveMessage(b, { maxBytes: 16, maxFds: 0 });
  assert.equal(none.kind, 'again');
  sendMessage(a, { data: Buffer.from('y'), fds: [file] });
  const zero = receiveMessage(b, { maxBytes: 16, maxFds: 0 });
  assert.ok(zero.kind === 'message' && zero.fds.length === 0 && zero.extraFdsClosed === 1);
  assert.deepEqual(newFds(before), []);
  closeAll([a, b, file]);
});

test('an oversized message is reported truncated, and a closed peer gives eof', () => {
  const [a, b] = createSocketPair('seqpacket');
  sendMessage(a, { data: Buffer.alloc(100, 1), fds: [] });
  const got = receiveMessage(b, { maxBytes: 10, maxFds: 0 });
  assert.ok(got.kind === 'message' && got.truncated && got.data.length === 10);
  closeFd(a);
  assert.equal(receiveMessage(b, { maxBytes: 10, maxFds: 0 }).kind, 'eof');
  assert.throws(() => sendMessage(b, { data: Buffer.from('x'), fds: [] }), (e: unknown) => e instanceof NativeError && e.code === 'EPIPE');
  closeFd(b);
});

test('pidfd: signals reach the process and the pidfd becomes readable when it exits', async () => {
  const child = spawn('sleep', ['30'], { stdio: 'ignore' });
  const exited = new Promise((resolve) => child.on('exit', resolve));
  const pidfd = pidfdOpen(child.pid!);
  try {
    pidfdSendSignal(pidfd, 'SIGKILL');
    assert.ok(await waitReadable(pidfd, 5000));
    await exited;
    assert.throws(() => pidfdSendSignal(pidfd, 'SIGTERM'), (e: unknown) => e instanceof NativeError && e.code === 'ESRCH');
  } finally {
    closeFd(pidfd);
  }
  assert.throws(() => pidfdOpen(0x3fffffff), (e: unknown) => e instanceof NativeError && e.code === 'ESRCH');
});

test('watchFd reports the events it was asked for; setEvents changes them on the same handle', async () => {
  const [a, b] = createSocketPair('seqpacket');
  const seen: PollEvents[] = [];
  const h = watchFd(a, { readable: true, disconnect: true }, (ev) => {
    seen.push(ev);
    if (ev.writable) h.setEvents({ readable: true, disconnect: true });
    // Level-triggered: what is not read is reported again.
    if (ev.readable) receiveMessage(a, { maxBytes: 64, maxFds: 1 });
  });
  try {
    // Fill the socket: no room, so asking for writable reports nothing yet.
    let queued = 0;
    while (sendMessage(a, { data: Buffer.alloc(60_000), fds: [] }) !== null) queued++;
    h.setEvents({ readable: true, disconnect: true, writable: true });
    await new Promise((r) => setTimeout(r, 30));
    assert.equal(seen.length, 0);
    for (let i = 0; i < queued; i++) assert.equal(receiveMessage(b, { maxBytes: 65536, maxFds: 1 }).kind, 'message');
    await new Promise((r) => setTimeout(r, 30));
    // Room again: one writable event, then no more once writable is no longer asked for.
    assert.deepEqual(seen, [{ readable: false, writable: true, disconnect: false, error: false }]);
    sendMessage(b, { data: Buffer.from('x'), fds: [] });
    await new Promise((r) => setTimeout(r, 30));
    assert.equal(seen.length, 2);
    assert.equal(seen[1]!.readable, true);
  } finally {
    h.close();
    closeAll([a, b]);
  }
});
