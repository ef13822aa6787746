// supervisor/systemd.ts: the pure parts (LISTEN_* parsing, fd names, watchdog interval,
// message format), sd_notify against a real SOCK_DGRAM socket standing in for systemd's
// NOTIFY_SOCKET (path and abstract), fds attached with FDSTORE=1, and listenFds() in a child
// process that inherits real fds at 3 and 4 the way systemd passes them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, openSync, closeSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { bindSocket, closeFd, createSocket, createSocketPair, receiveMessage, sendMessage, type Received } from '../../native/index.ts';
import {
  FDNAME_MAX,
  NOTIFY_BUFFER_MAX,
  STATUS_MAX,
  SystemdNotifier,
  formatNotification,
  isValidFdName,
  notifySocketAddress,
  parseListenFds,
  sessionFdName,
  sessionNameOfFdName,
  statusText,
  watchdogIntervalMs,
} from '../../supervisor/systemd.ts';
import { NAME_PATTERN } from '../../protocol/index.ts';

test('parseListenFds follows sd_listen_fds_with_names: LISTEN_PID must be this process, fds start at 3', () => {
  assert.deepEqual(parseListenFds({}, 42), { fds: [], problem: null });
  assert.deepEqual(parseListenFds({ LISTEN_PID: '42', LISTEN_FDS: '2', LISTEN_FDNAMES: 'control:fuse-a' }, 42), {
    fds: [
      { fd: 3, name: 'control' },
      { fd: 4, name: 'fuse-a' },
    ],
    problem: null,
  });
  // Meant for another process (e.g. inherited from a parent that did not unset them).
  const other = parseListenFds({ LISTEN_PID: '41', LISTEN_FDS: '2' }, 42);
  assert.deepEqual(other.fds, []);
  assert.match(other.problem!, /not this process/);
  for (const bad of [{ LISTEN_PID: 'x', LISTEN_FDS: '1' }, { LISTEN_PID: '42', LISTEN_FDS: '-1' }, { LISTEN_PID: '42', LISTEN_FDS: '1e3' }, { LISTEN_FDS: '1' }]) {
    const r = parseListenFds(bad, 42);
    assert.deepEqual(r.fds, [], JSON.stringify(bad));
    assert.ok(r.problem, JSON.stringify(bad));
  }
  // No names: "unknown"; too few or too many names: the fds still come, with a problem noted.
  assert.deepEqual(parseListenFds({ LISTEN_PID: '42', LISTEN_FDS: '1' }, 42).fds, [{ fd: 3, name: 'unknown' }]);
  const short = parseListenFds({ LISTEN_PID: '42', LISTEN_FDS: '3', LISTEN_FDNAMES: 'a:b' }, 42);
  assert.deepEqual(short.fds.map((f) => f.name), ['a', 'b', 'unknown']);
  assert.match(short.problem!, /2 names for 3 fds/);
  assert.deepEqual(parseListenFds({ LISTEN_PID: '42', LISTEN_FDS: '0' }, 42), { fds: [], problem: null });
});

test('fd names: systemd rules (printable ASCII, no ":", at most 255), one name per session, never colliding', () => {
  assert.ok(isValidFdName('fuse-mnt-data'));
  assert.ok(!isValidFdName('fuse:mnt'));
  assert.ok(!isValidFdName('a\nb'));
  assert.ok(!isValidFdName('é'));
  assert.ok(!isValidFdName('x'.repeat(256)));
  assert.equal(sessionFdName('mnt-data'), 'fuse-mnt-data');
  assert.equal(sessionFdName('host:vol1@abc'), 'fuse-host%3Avol1@abc');
  assert.equal(sessionNameOfFdName('fuse-host%3Avol1@abc'), 'host:vol1@abc');
  assert.equal(sessionNameOfFdName('control'), null);
  // Long names full of ':' would exceed 255 escaped: a hashed form, still valid and distinct.
  const longA = `a${':'.repeat(127)}`;
  const longB = `b${':'.repeat(127)}`;
  for (const n of [longA, longB, 'z'.repeat(128)]) {
    assert.ok(NAME_PATTERN.test(n));
    const f = sessionFdName(n);
    assert.ok(isValidFdName(f), f);
    assert.ok(f.length <= FDNAME_MAX);
  }
  assert.match(sessionFdName(longA), /~[0-9a-f]{32}$/);
  assert.notEqual(sessionFdName(longA), sessionFdName(longB));
  assert.equal(sessionNameOfFdName(sessionFdName(longA)), null);
  // Injective over a spread of valid names.
  const alphabet = 'aZ09_.@:-';
  const seen = new Map<string, string>();
  let seed = 7;
  const rnd = (n: number): number => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) % n);
  for (let i = 0; i < 5000; i++) {
    let name = 'aZ0'[rnd(3)]!;
    const len = rnd(128);
    for (let j = 0; j < len; j++) name += alphabet[rnd(alphabet.length)]!;
    const f = sessionFdName(name);
    assert.ok(isValidFdName(f));
    const prev = seen.get(f);
    assert.ok(prev === undefined || prev === name, `${prev} and ${name} share ${f}`);
    seen.set(f, name);
    if (!f.includes('~')) assert.equal(sessionNameOfFdName(f), name);
  }
});

test('watchdog interval: half of WATCHDOG_USEC, only for the process WATCHDOG_PID names', () => {
  assert.equal(watchdogIntervalMs({}, 5), null);
  assert.equal(watchdogIntervalMs({ WATCHDOG_USEC: '10000000' }, 5), 5000);
  assert.equal(watchdogIntervalMs({ WATCHDOG_USEC: '10000000', WATCHDOG_PID: '5' }, 5), 5000);
  assert.equal(watchdogIntervalMs({ WATCHDOG_USEC: '10000000', WATCHDOG_PID: '6' }, 5), null);
  assert.equal(watchdogIntervalMs({ WATCHDOG_USEC: '0' }, 5), null);
  assert.equal(watchdogIntervalMs({ WATCHDOG_USEC: 'soon' }, 5), null);
  assert.equal(watchdogIntervalMs({ WATCHDOG_USEC: '1000' }, 5), 1);
});

test('notification format: KEY=VALUE lines; STATUS= is one line, cut to a bounded size', () => {
  assert.equal(formatNotification([['READY', '1'], ['STATUS', 'a\nb']]).toString(), 'READY=1\nSTATUS=a b\n');
  assert.equal(statusText('x\r\ny'), 'x y');
  const long = statusText('ü'.repeat(2000));
  assert.ok(Buffer.byteLength(long) <= STATUS_MAX);
  assert.ok(long.endsWith('...'));
  assert.ok(!long.includes('\uFFFD'));
  assert.equal(notifySocketAddress({ NOTIFY_SOCKET: '/run/systemd/notify' }), '/run/systemd/notify');
  assert.equal(notifySocketAddress({ NOTIFY_SOCKET: '@abc' }), '@abc');
  assert.equal(notifySocketAddress({ NOTIFY_SOCKET: 'relative' }), null);
  assert.equal(notifySocketAddress({ NOTIFY_SOCKET: '@' }), null);
  assert.equal(notifySocketAddress({}), null);
});

/** A SOCK_DGRAM socket standing in for systemd's notify socket. */
function fakeSystemd(address: string): { fd: number; next(): Promise<{ text: string; fds: number[] }>; close(): void } {
  const fd = createSocket('dgram');
  bindSocket(fd, address);
  return {
    fd,
    async next() {
      for (let i = 0; i < 200; i++) {
        const r: Received = receiveMessage(fd, { maxBytes: NOTIFY_BUFFER_MAX + 1, maxFds: 16 });
        if (r.kind === 'message') return { text: r.data.toString(), fds: r.fds };
        await sleep(5);
      }
      throw new Error('no notification arrived');
    },
    close: () => closeFd(fd),
  };
}

test('sd_notify over a real datagram socket: READY, STATUS, RELOADING, STOPPING, WATCHDOG; path and abstract addresses', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'fusekeeper-notify-'));
  for (const address of [join(dir, 'notify'), `@fusekeeper-test-notify-${process.pid}`]) {
    const systemd = fakeSystemd(address);
    const n = SystemdNotifier.fromEnv({ NOTIFY_SOCKET: address });
    try {
      assert.ok(n.enabled);
      assert.ok(n.ready('1 session'));
      assert.deepEqual(await systemd.next(), { text: 'READY=1\nSTATUS=1 session\n', fds: [] });
      n.status('2 sessions');
      assert.equal((await systemd.next()).text, 'STATUS=2 sessions\n');
      n.reloading();
      assert.equal((await systemd.next()).text, 'RELOADING=1\n');
      n.stopping('bye');
      assert.equal((await systemd.next()).text, 'STOPPING=1\nSTATUS=bye\n');
      n.watchdog();
      assert.equal((await systemd.next()).text, 'WATCHDOG=1\n');
      // Too long for systemd's buffer: not sent (systemd would drop it whole anyway).
      assert.equal(n.send([['X', 'y'.repeat(NOTIFY_BUFFER_MAX)]]), false);
    } finally {
      n.close();
      systemd.close();
    }
  }
  rmSync(dir, { recursive: true, force: true });
});

test('FDSTORE=1 attaches the fd itself (SCM_RIGHTS) under FDNAME=; FDSTOREREMOVE=1 names it; the caller keeps its fd', async () => {
  const address = `@fusekeeper-test-fdstore-${process.pid}`;
  const systemd = fakeSystemd(address);
  const n = new SystemdNotifier(address);
  const [a, b] = createSocketPair('seqpacket');
  try {
    assert.ok(n.fdStore('fuse-mnt-data', a));
    const got = await systemd.next();
    assert.equal(got.text, 'FDSTORE=1\nFDNAME=fuse-mnt-data\n');
    assert.equal(got.fds.length, 1);
    // The received fd is the same socket: what goes in at b comes out at the stored copy.
    sendMessage(b, { data: Buffer.from('ping'), fds: [] });
    await sleep(5);
    const r = receiveMessage(got.fds[0]!, { maxBytes: 16, maxFds: 0 });
    assert.equal(r.kind === 'message' ? r.data.toString() : r.kind, 'ping');
    closeFd(got.fds[0]!);
    // Still ours.
    sendMessage(a, { data: Buffer.from('pong'), fds: [] });
    await sleep(5);
    const back = receiveMessage(b, { maxBytes: 16, maxFds: 0 });
    assert.equal(back.kind === 'message' ? back.data.toString() : back.kind, 'pong');
    assert.ok(n.fdStoreRemove('fuse-mnt-data'));
    assert.deepEqual(await systemd.next(), { text: 'FDSTOREREMOVE=1\nFDNAME=fuse-mnt-data\n', fds: [] });
    assert.throws(() => n.fdStore('fuse:bad', a), /invalid fd store name/);
    assert.equal(n.fdStoreRemove('bad:name'), false);
  } finally {
    closeFd(a);
    closeFd(b);
    n.close();
    systemd.close();
  }
});

test('the watchdog pings from the event loop at the given interval; no NOTIFY_SOCKET means no-op', async () => {
  const address = `@fusekeeper-test-watchdog-${process.pid}`;
  const systemd = fakeSystemd(address);
  const n = new SystemdNotifier(address);
  try {
    assert.ok(n.startWatchdog(20));
    const pings: string[] = [];
    for (let i = 0; i < 4; i++) pings.push((await systemd.next()).text);
    assert.deepEqual(pings, Array(4).fill('WATCHDOG=1\n'));
    n.stopWatchdog();
  } finally {
    n.close();
    systemd.close();
  }
  const off = SystemdNotifier.fromEnv({});
  assert.equal(off.enabled, false);
  assert.equal(off.ready('x'), false);
  assert.equal(off.fdStore('fuse-x', 0), false);
  assert.equal(off.startWatchdog(10), false);
  off.close();
});

test('listenFds takes fds 3.. as systemd passes them: close-on-exec afterwards, LISTEN_* removed from the environment', () => {
  const dir = mkdtempSync(join(tmpdir(), 'fusekeeper-listen-'));
  const child = join(dir, 'child.ts');
  const systemdTs = new URL('../../supervisor/systemd.ts', import.meta.url).pathname;
  writeFileSync(
    child,
    `import { readFileSync } from 'node:fs';
import { listenFds } from ${JSON.stringify(systemdTs)};
const r = listenFds();
const flags = r.fds.map((f) => /^flags:\\s+(\\d+)/m.exec(readFileSync('/proc/self/fdinfo/' + f.fd, 'utf8'))![1]);
process.stdout.write(JSON.stringify({ r, flags, env: Object.keys(process.env).filter((k) => k.startsWith('LISTEN_')), pid: process.pid }));
`,
  );
  const f1 = openSync(join(dir, 'one'), 'w');
  const f2 = openSync(join(dir, 'two'), 'w');
  try {
    // `exec` keeps the shell's pid, so LISTEN_PID=$$ names the node process, as systemd does.
    const r = spawnSync('/bin/sh', ['-c', `LISTEN_PID=$$ LISTEN_FDS=2 LISTEN_FDNAMES=control:fuse-a exec ${JSON.stringify(process.execPath)} --import tsx ${JSON.stringify(child)}`], {
      stdio: ['ignore', 'pipe', 'pipe', f1, f2],
      encoding: 'utf8',
      cwd: new URL('../..', import.meta.url).pathname,
    });
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout) as { r: { fds: { fd: number; name: string }[]; problem: string | null }; flags: string[]; env: string[] };
    assert.deepEqual(out.r, { fds: [{ fd: 3, name: 'control' }, { fd: 4, name: 'fuse-a' }], problem: null });
    // O_CLOEXEC (02000000 octal) is reported in fdinfo's flags.
    for (const fl of out.flags) assert.ok((parseInt(fl, 8) & 0o2000000) !== 0, `flags ${fl} lack O_CLOEXEC`);
    assert.deepEqual(out.env, []);
  } finally {
    closeSync(f1);
    closeSync(f2);
    rmSync(dir, { recursive: true, force: true });
  }
  assert.ok(readFileSync('/proc/self/status', 'utf8').length > 0);
});
