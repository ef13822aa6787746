// The supervisor as users run it: `fusekeeper serve` as a child process on a socket in a temp
// dir, daemons as child processes (helpers/owner.ts) and this process talking to it through
// real SEQPACKET sockets: the SDK, the CLI, and raw frames for hostile peers. Runs the
// compiled CLI: `npm test` builds it; alone, `npm run prepare` first.
//
// Caution: the supervisor kills (fences) a living owner that lost its connection when
// someone else acquires its session. Sessions this process owns are therefore only ever
// ended by RELEASE, never taken over, and its SDK clients send no heartbeats.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { writeFileSync, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import {
  closeAll,
  closeFd,
  connectSocket,
  createSocket,
  createSocketPair,
  fstatFd,
  devMajor,
  devMinor,
  mknod,
  openFd,
  readFd,
  receiveMessage,
  sendMessage,
  O,
  S_IFMT,
  S_IFCHR,
} from '../../native/index.ts';
import { waitReadable } from '../../kernel/handshake.ts';
import { backingClose } from '../../kernel/backing.ts';
import { openFuseDevice } from '../../kernel/device.ts';
import { mountFuse, unmountFuse } from '../../kernel/mount.ts';
import { abortConnection, waitingRequests } from '../../kernel/connections.ts';
import { FuseKernelError } from '../../kernel/errors.ts';
import { decodeMessage, encodeMessage, MAX_JOURNAL_CHUNK, MAX_MESSAGE, type ControlMessage } from '../../protocol/index.ts';
import { connectSupervisor, SupervisorError, type ClientSession, type SupervisorClient } from '../../client/supervisor.ts';
import type { SessionStatus } from '../../supervisor/session.ts';
import { TEARDOWN_IDLE_MAX_MS } from '../../supervisor/recovery.ts';
import { optimizerHeld } from '../../client/optimizer.ts';
import {
  FOREIGN_PEER,
  OWNER,
  ROOT,
  findMount,
  mountSpec,
  processFds,
  runCli,
  sessionDir,
  spawnOwner,
  startSupervisor,
  tempDir,
  unmountUnder,
  waitUntil,
  type OwnerProcess,
  type SupervisorProcess,
} from './helpers/supervisor.ts';
import type { OwnerPlan, OwnerReport } from './helpers/owner.ts';
import { fdSnapshot } from './helpers/connection.ts';

const NOBODY = 65534;
/** Heartbeat silence the main supervisor tolerates (its config). */
const HEARTBEAT_TIMEOUT_MS = 400;

interface Status {
  supervisor: Record<string, unknown> & { connections: number };
  sessions: SessionStatus[];
}

let sup: SupervisorProcess;
/** A long-lived CLI connection to the main supervisor, for status. */
let admin: SupervisorClient;
const owners = new Set<OwnerProcess>();
const clients = new Set<SupervisorClient>();
const heldFds = new Set<number>();

function owner(plan: Omit<OwnerPlan, 'socket'>): OwnerProcess {
  const o = spawnOwner({ socket: sup.socket, ...plan });
  owners.add(o);
  return o;
}

async function daemonClient(): Promise<SupervisorClient> {
  const c = await connectSupervisor({ socket: sup.socket, clientName: 'supervisor.test', heartbeatMs: 0, reconnect: false });
  clients.add(c);
  return c;
}

function hold(session: ClientSession): ClientSession {
  heldFds.add(session.fd);
  return session;
}

function dropFd(fd: number): void {
  if (heldFds.delete(fd)) closeFd(fd);
}

async function status(): Promise<Status> {
  return (await admin.status()) as Status;
}

async function sessionStatus(name: string): Promise<SessionStatus | undefined> {
  return (await status()).sessions.find((s) => s.name === name);
}

/** Releases `name` through the SDK and checks the mount is gone. */
async function release(name: string, mountpoint: string): Promise<void> {
  await admin.release(name);
  assert.equal(findMount(mountpoint), undefined, `${mountpoint} is unmounted after RELEASE`);
}

before(async () => {
  sup = await startSupervisor({ config: { heartbeatTimeoutMs: HEARTBEAT_TIMEOUT_MS, fenceTimeoutMs: 5000 } });
  admin = await connectSupervisor({ socket: sup.socket, role: 'cli', clientName: 'supervisor.test admin', reconnect: false, heartbeatMs: 0 });
});

after(async () => {
  for (const o of owners) await o.kill('SIGKILL');
  for (const c of clients) c.close();
  admin?.close();
  for (const fd of heldFds) closeFd(fd);
  const left = sup ? (await sup.stop(), unmountUnder(sup.dir)) : [];
  await sup?.cleanup();
  assert.deepEqual(left, [], 'every test released what it mounted');
});

test('fresh ACQUIRE mounts, hands over the /dev/fuse fd at generation 1; status --json lists it; release unmounts', async () => {
  const { mountpoint } = sessionDir(sup.dir, 'fresh');
  const spec = mountSpec(mountpoint);
  const client = await daemonClient();
  const session = hold(await client.acquire('fresh', spec));
  assert.equal(session.generation, 1);
  assert.equal(session.resumed, false);
  assert.equal(session.strategy, 'journal');
  assert.equal(session.init, null);
  assert.equal(session.checkpoint.size, 0);
  assert.equal(session.journal.length, 0);
  const st = fstatFd(session.fd);
  assert.equal(st.mode & S_IFMT, S_IFCHR, 'a character device');
  assert.deepEqual([devMajor(st.rdev), devMinor(st.rdev)], [10, 229], '/dev/fuse');
  const m = findMount(mountpoint);
  assert.ok(m, 'mounted (per /proc/self/mountinfo)');
  assert.equal(m.fstype, 'fuse.suptest');
  assert.equal(m.source, 'fusekeeper-test');

  const json = await runCli(['status', '--json', '--socket', sup.socket]);
  assert.equal(json.code, 0, json.stderr);
  const listed = (JSON.parse(json.stdout) as Status).sessions.find((s) => s.name === 'fresh');
  assert.ok(listed, json.stdout);
  assert.equal(listed.mountpoint, mountpoint);
  assert.equal(listed.state, 'owned');
  assert.equal(listed.owner?.pid, process.pid);
  assert.equal(listed.generation, 1);
  assert.equal(listed.restarts, 0);
  assert.equal(listed.strategy, 'journal');
  assert.equal(listed.connectionId, m.minor);
  const table = await runCli(['status', '--socket', sup.socket]);
  assert.equal(table.code, 0, table.stderr);
  assert.match(table.stdout, new RegExp(`^fresh\\s+${mountpoint}\\s+owned\\s+${process.pid}\\s+1\\s+0\\s+journal`, 'm'));

  const rel = await runCli(['release', 'fresh', '--socket', sup.socket]);
  assert.equal(rel.code, 0, rel.stderr);
  assert.equal(rel.stdout, 'released fresh\n');
  assert.equal(findMount(mountpoint), undefined, 'unmounted');
  assert.equal(await sessionStatus('fresh'), undefined);
  const again = await runCli(['release', 'fresh', '--socket', sup.socket]);
  assert.equal(again.code, 1);
  assert.match(again.stderr, /^fusekeeper release: no session named fresh \[ENOENT\]\n$/);
  dropFd(session.fd);
  client.close();
});

test('a second owner gets EBUSY; a standby takes over a SIGKILLed owner with its INIT, checkpoint and journal; ADOPT closes the rest', async () => {
  const { mountpoint, files } = sessionDir(sup.dir, 'crash', 4);
  const spec = mountSpec(mountpoint);
  const first = owner({
    name: 'crash',
    mount: spec,
    backing: files.slice(0, 3),
    unreported: files.slice(3),
    checkpoint: { nodes: 'nodeid table', handles: 'fh table', gone: 'deleted below' },
    deleteKeys: ['gone'],
    then: 'sleep',
  });
  const r1 = await first.report;
  assert.equal(r1.generation, 1);
  assert.equal(r1.resumed, false);
  assert.deepEqual(r1.ids, [1, 2, 3], 'backing ids are allocated from 1');
  assert.deepEqual(r1.unreportedIds, [4]);

  const rival = await daemonClient();
  await assert.rejects(rival.acquire('crash', spec), (err: SupervisorError) => err.code === 'EBUSY' && /live owner/.test(err.message));
  await assert.rejects(rival.acquire('crash', { ...spec, readOnly: true }, { standby: true }), (err: SupervisorError) => err.code === 'EINVAL');
  assert.ok(rival.connected, 'a refused ACQUIRE keeps the connection');

  const standby = rival.acquire('crash', spec, { standby: true });
  await waitUntil(async () => (await sessionStatus('crash'))?.standbys === 1, 'the standby to wait');
  await first.kill('SIGKILL');
  const s = hold(await standby);
  assert.deepEqual(await first.exit, { code: null, signal: 'SIGKILL' });

  assert.equal(s.resumed, true);
  assert.equal(s.generation, 2);
  assert.equal(s.strategy, 'journal');
  assert.match(s.init?.toString() ?? '', /^minor=\d+;flags=[0-9a-f]+$/, 'the INIT parameters the dead owner saved');
  assert.deepEqual(Object.fromEntries([...s.checkpoint].map(([k, v]) => [k, v.toString()])), { nodes: 'nodeid table', handles: 'fh table' });
  assert.deepEqual(
    s.journal.map((e) => ({ id: e.id, dev: e.dev.toString(), ino: e.ino.toString() })),
    r1.ids.map((id, i) => ({ id, ...inode(files[i]!) })),
    'the journal names the backing inodes the dead owner reported',
  );
  const st = fstatFd(s.fd);
  assert.deepEqual([devMajor(st.rdev), devMinor(st.rdev)], [10, 229]);

  // Keep ids 1 and 2 (the same backing inodes will be opened again); 3 is closed, 4 (never
  // reported) was probed and closed during the recovery.
  assert.deepEqual(await s.adopt([1, 2]), { closed: 1, probed: 1 });
  // ADOPTED is answered first; the supervisor closes id 3 just after (docs/protocol.md).
  await waitUntil(async () => (await sessionStatus('crash'))?.liveBackingIds === 2, 'the supervisor to close the unadopted id');
  const closeResult = (id: number): string => {
    try {
      backingClose(s.fd, id);
      return 'closed';
    } catch (err) {
      if (err instanceof FuseKernelError) return err.errno;
      throw err;
    }
  };
  assert.equal(closeResult(3), 'ENOENT', 'the unadopted id was closed by the supervisor');
  assert.equal(closeResult(4), 'ENOENT', 'the unreported id was probed and closed');
  const after = await sessionStatus('crash');
  assert.ok(after);
  assert.equal(after.generation, 2);
  assert.equal(after.restarts, 1);
  assert.equal(after.handovers, 0);
  assert.equal(after.state, 'owned');
  assert.equal(after.owner?.pid, process.pid);
  assert.equal(after.liveBackingIds, 2);
  assert.equal(after.strategy, 'journal');
  const rec = after.lastRecovery;
  assert.ok(rec, 'lastRecovery');
  assert.ok(rec.durationUs > 0 && rec.durationUs < 5_000_000, `durationUs ${rec.durationUs}`);
  assert.equal(rec.generation, 2);
  assert.equal(rec.fenced, false, 'a crashed owner is not reported as fenced');
  assert.equal(rec.resent, true);
  assert.deepEqual(rec.cleanup, { strategy: 'journal', closed: 1, probed: 1, alreadyGone: 0 });
  assert.equal(closeResult(1), 'closed', 'adopted ids stay open');
  assert.equal(closeResult(2), 'closed');
  s.journalClose(1);
  s.journalClose(2);
  await waitUntil(async () => (await sessionStatus('crash'))?.liveBackingIds === 0, 'JOURNAL_CLOSE to apply');
  await release('crash', mountpoint);
  dropFd(s.fd);
  rival.close();
});

test('a spare whose ACQUIRE is refused, or cannot be sent, does not keep TurboFan held (client/optimizer.ts)', async () => {
  const c = await daemonClient();
  await assert.rejects(c.acquire('not a session name!', mountSpec(join(sup.dir, 'unused')), { standby: true, rehearse: true }), (err: Error & { code?: string }) => err.code === 'EINVAL' && /session name/.test(err.message));
  assert.equal(optimizerHeld(), false, 'released after the request could not be encoded');
  await assert.rejects(c.acquire('no-mountpoint', mountSpec(join(sup.dir, 'no', 'such', 'dir')), { standby: true, rehearse: true }), (err: SupervisorError) => err instanceof SupervisorError);
  assert.equal(optimizerHeld(), false, 'released after the refusal');
  assert.ok(c.connected);
  c.close();
});

test('a journal longer than one frame is handed over in one sealed memfd (JOURNAL_FILE); neither side keeps it open', async () => {
  const count = MAX_JOURNAL_CHUNK + 100;
  const { dir, mountpoint, files } = sessionDir(sup.dir, 'bigjournal', count);
  const spec = mountSpec(mountpoint);
  const first = owner({ name: 'bigjournal', mount: spec, backingIn: { dir, count }, then: 'sleep' });
  const r1 = await first.report;
  assert.equal(r1.ids.length, count);
  const client = await daemonClient();
  const standby = client.acquire('bigjournal', spec, { standby: true });
  await waitUntil(async () => (await sessionStatus('bigjournal'))?.standbys === 1, 'the standby to wait');
  await first.kill('SIGKILL');
  const s = hold(await standby);
  const recovered = await sup.waitEvent('session.recovered', (e) => e.session === 'bigjournal');
  assert.deepEqual(recovered.sentAs, { checkpoint: 'frames', journal: 'file' });
  assert.equal(s.journal.length, count);
  assert.deepEqual(s.journal.map((e) => e.id), r1.ids, 'every journaled id, in the order reported');
  assert.deepEqual({ dev: s.journal.dev(count - 1).toString(), ino: s.journal.ino(count - 1).toString() }, inode(files[count - 1]!));
  const memfds = (fds: Map<number, string>) => [...fds.values()].filter((t) => t.startsWith('/memfd:'));
  assert.deepEqual(memfds(fdSnapshot()), [], 'the SDK closed the memfd after reading it');
  assert.deepEqual(memfds(sup.fds()), [], 'the supervisor closed its memfd after sending it');
  assert.deepEqual(await s.adopt([]), { closed: count, probed: 0 });
  await waitUntil(async () => (await sessionStatus('bigjournal'))?.liveBackingIds === 0, 'the supervisor to close every inherited id');
  await release('bigjournal', mountpoint);
  dropFd(s.fd);
  client.close();
});

/**
 * Hands session `name` with a checkpoint of `count` keys from a killed owner to a standby in
 * this process; `beforeKill` runs once the standby waits. Returns the new session and the
 * supervisor's session.recovered event.
 */
async function handOverCheckpoint(name: string, count: number, beforeKill: () => void = () => {}) {
  const { mountpoint } = sessionDir(sup.dir, name);
  const spec = mountSpec(mountpoint);
  const first = owner({ name, mount: spec, checkpointCount: count, then: 'sleep' });
  await first.report;
  await waitUntil(async () => (await sessionStatus(name))?.checkpointKeys === count, 'every key to reach the supervisor', 60_000, 20);
  const client = await daemonClient();
  const standby = client.acquire(name, spec, { standby: true });
  await waitUntil(async () => (await sessionStatus(name))?.standbys === 1, 'the standby to wait');
  beforeKill();
  await first.kill('SIGKILL');
  const s = hold(await standby);
  const recovered = await sup.waitEvent('session.recovered', (e) => e.session === name);
  assert.equal(s.generation, 2);
  assert.equal(s.checkpoint.size, count);
  assert.equal(s.checkpoint.get(`k${count - 1}`)?.toString(), `v${count - 1}`);
  assert.equal((await sessionStatus(name))?.owner?.pid, process.pid, 'the new owner was not disconnected');
  return {
    s,
    recovered,
    async done() {
      await release(name, mountpoint);
      dropFd(s.fd);
      client.close();
    },
  };
}

test('a checkpoint of 20000 keys is handed over in one sealed memfd (CHECKPOINT_FILE); neither side keeps it open', async () => {
  const { recovered, done } = await handOverCheckpoint('bigcheckpoint', 20_000);
  assert.deepEqual(recovered.sentAs, { checkpoint: 'file', journal: 'frames' });
  const memfds = (fds: Map<number, string>) => [...fds.values()].filter((t) => t.startsWith('/memfd:'));
  assert.deepEqual(memfds(fdSnapshot()), [], 'the SDK closed the memfd after reading it');
  assert.deepEqual(memfds(sup.fds()), [], 'the supervisor closed its memfd after sending it');
  await done();
});

// Without a memfd the checkpoint goes in frames, one per key: more than a connection may leave
// unread (MAX_QUEUED_FRAMES), which must not get the new owner disconnected. The memfd is made
// to fail by the file size limit (RLIMIT_FSIZE applies to memfds; Node ignores SIGXFSZ, so the
// write fails with EFBIG).
test('a supervisor that cannot fill a memfd (EFBIG) hands a checkpoint of 20000 keys over in frames, more than a connection may leave unread', async () => {
  const limit = (which: string) => execFileSync('prlimit', ['--pid', String(sup.pid), '--fsize', '--raw', '--noheadings', '--output', which], { encoding: 'utf8' }).trim();
  const [soft, hard] = [limit('SOFT'), limit('HARD')];
  const restore = () => execFileSync('prlimit', ['--pid', String(sup.pid), `--fsize=${soft}:${hard}`]);
  try {
    const { recovered, done } = await handOverCheckpoint('nomemfd', 20_000, () => execFileSync('prlimit', ['--pid', String(sup.pid), `--fsize=4096:${hard}`]));
    assert.deepEqual(recovered.sentAs, { checkpoint: 'frames', journal: 'frames' });
    const failed = await sup.waitEvent('checkpoint.file_failed', (e) => e.session === 'nomemfd');
    assert.match(String(failed.err), /EFBIG/);
    await done();
  } finally {
    restore();
  }
});

test('a killed owner is orphaned when its threads exit, before its fds close: the kernel reports the exits, no EOF is waited for', async () => {
  assert.equal((await status()).supervisor.exitEvents, 'on', 'the supervisor listens to thread exit events');
  const { mountpoint } = sessionDir(sup.dir, 'exiting');
  const spec = mountSpec(mountpoint);
  // 200 MB of heap: the kernel takes milliseconds to free it before the fds close.
  const first = owner({ name: 'exiting', mount: spec, ballastMb: 200, then: 'sleep' });
  const r1 = await first.report;
  const client = await daemonClient();
  const standby = client.acquire('exiting', spec, { standby: true });
  await waitUntil(async () => (await sessionStatus('exiting'))?.standbys === 1, 'the standby to wait');
  await first.kill('SIGKILL');
  const s = hold(await standby);
  assert.equal(s.generation, 2);
  const gone = await sup.waitEvent('owner.disconnected', (e) => e.session === 'exiting' && e.owner === r1.pid);
  assert.equal(gone.reason, 'its process is exiting (signal 9)');
  // CLOCK_MONOTONIC ns: the kernel's time of the first thread exit, then the first look.
  const [exitAt, lookAt] = [BigInt(gone.firstExitAt as string), BigInt(gone.firstLookAt as string)];
  assert.ok(exitAt <= lookAt && lookAt < process.hrtime.bigint(), JSON.stringify(gone));
  const recovered = await sup.waitEvent('session.recovered', (e) => e.session === 'exiting');
  assert.equal(recovered.fenced, false, 'an owner already exiting is not killed again');
  assert.deepEqual(await first.exit, { code: null, signal: 'SIGKILL' });
  await release('exiting', mountpoint);
  dropFd(s.fd);
  client.close();
});

test('a killed owner whose control socket outlives it (a child holds it) is orphaned by its thread exits; the supervisor stops awaiting the hang-up after TEARDOWN_IDLE_MAX_MS and keeps no fd of it', async () => {
  const { mountpoint } = sessionDir(sup.dir, 'outlives');
  const spec = mountSpec(mountpoint);
  const first = owner({ name: 'outlives', mount: spec, socketOutlives: true, then: 'sleep' });
  const r1 = await first.report;
  assert.ok(r1.socketHolder, 'the helper started a process holding its sockets');
  try {
    const client = await daemonClient();
    const standby = client.acquire('outlives', spec, { standby: true });
    await waitUntil(async () => (await sessionStatus('outlives'))?.standbys === 1, 'the standby to wait');
    const sockets = (): number => [...sup.fds().values()].filter((t) => t.startsWith('socket:')).length;
    const pidfds = (): number => [...sup.fds().values()].filter((t) => t === 'anon_inode:[pidfd]').length;
    const socketsBefore = sockets();
    const pidfdsBefore = pidfds();
    await first.kill('SIGKILL');
    const s = hold(await standby);
    assert.equal(s.generation, 2);
    const gone = await sup.waitEvent('owner.disconnected', (e) => e.session === 'outlives' && e.owner === r1.pid);
    assert.equal(gone.reason, 'its process is exiting (signal 9)', 'noticed by its threads: its socket never hangs up');
    // Its connection and the watch on it are closed, its pidfd and the watch's copy too; the
    // standby's process (this one) now has a pidfd there.
    await waitUntil(() => sockets() === socketsBefore - 1 && pidfds() === pidfdsBefore, 'the old owner\'s connection and pidfd to be closed', TEARDOWN_IDLE_MAX_MS + 2000, 5);
    await release('outlives', mountpoint);
    dropFd(s.fd);
    client.close();
  } finally {
    process.kill(r1.socketHolder!, 'SIGKILL');
  }
});

/** dev/ino of a file as the journal carries them (decimal strings). */
function inode(path: string): { dev: string; ino: string } {
  const fd = openFd(path, O.RDONLY);
  try {
    const st = fstatFd(fd);
    return { dev: st.dev.toString(), ino: st.ino.toString() };
  } finally {
    closeFd(fd);
  }
}

test('a living owner that disconnected is fenced (killed and reaped) when a new owner acquires', async () => {
  const { mountpoint } = sessionDir(sup.dir, 'fence');
  const spec = mountSpec(mountpoint);
  const gone = owner({ name: 'fence', mount: spec, then: 'disconnect' });
  await gone.report;
  const orphan = await waitUntil(async () => {
    const s = await sessionStatus('fence');
    return s?.state === 'orphaned' ? s : undefined;
  }, 'the owner to be seen disconnected');
  assert.equal(orphan.owner?.connected, false);
  assert.equal(orphan.owner?.pid, gone.pid);
  assert.equal(gone.child.exitCode, null, 'the disconnected owner still runs');

  const client = await daemonClient();
  const s = hold(await client.acquire('fence', spec));
  assert.equal(s.resumed, true);
  assert.equal(s.generation, 2);
  assert.deepEqual(await gone.exit, { code: null, signal: 'SIGKILL' }, 'fenced with SIGKILL');
  const st = await sessionStatus('fence');
  assert.equal(st?.lastRecovery?.fenced, true);
  assert.equal(st?.restarts, 1);
  await sup.waitEvent('owner.fenced', (e) => e.session === 'fence' && e.owner === gone.pid);
  await release('fence', mountpoint);
  dropFd(s.fd);
  client.close();
});

test('an owner that sent heartbeats and then fell silent (SIGSTOP) is fenced and the standby takes over', async () => {
  const { mountpoint } = sessionDir(sup.dir, 'silent');
  const spec = mountSpec(mountpoint);
  const hung = owner({ name: 'silent', mount: spec, heartbeatMs: 50, then: 'sleep' });
  await hung.report;
  const since = Date.now();
  // Heartbeats are arriving: the age stays small well after the acquire.
  await waitUntil(async () => Date.now() - since > 200 && ((await sessionStatus('silent'))?.owner?.heartbeatAgeMs ?? Infinity) < 150, 'heartbeats from the owner');
  const client = await daemonClient();
  const standby = client.acquire('silent', spec, { standby: true });
  await waitUntil(async () => (await sessionStatus('silent'))?.standbys === 1, 'the standby to wait');
  assert.equal((await sessionStatus('silent'))?.state, 'owned', 'a heartbeating owner is live');
  process.kill(hung.pid, 'SIGSTOP');
  const stopped = Date.now();
  const s = hold(await standby);
  assert.ok(Date.now() - stopped >= HEARTBEAT_TIMEOUT_MS - 60, 'not before the heartbeat timeout');
  assert.equal(s.resumed, true);
  assert.equal(s.generation, 2);
  assert.deepEqual(await hung.exit, { code: null, signal: 'SIGKILL' });
  const ev = await sup.waitEvent('owner.silent', (e) => e.session === 'silent');
  assert.equal(ev.owner, hung.pid);
  await release('silent', mountpoint);
  dropFd(s.fd);
  client.close();
});

test('fusekeeper upgrade: the owner drains and exits 0, the waiting standby takes over (generation 2, handovers 1, restarts 0)', async () => {
  const { mountpoint } = sessionDir(sup.dir, 'upgrade');
  const spec = mountSpec(mountpoint);
  const old = owner({ name: 'upgrade', mount: spec, checkpoint: { state: 'flushed before DRAINED' }, then: 'drain' });
  await old.report;
  const client = await daemonClient();
  const standby = client.acquire('upgrade', spec, { standby: true });
  await waitUntil(async () => (await sessionStatus('upgrade'))?.standbys === 1, 'the standby to wait');
  const up = await runCli(['upgrade', 'upgrade', '--socket', sup.socket, '--timeout', '20']);
  assert.equal(up.code, 0, up.stderr);
  assert.match(up.stdout, new RegExp(`^draining upgrade \\(owner ${old.pid}, generation 1\\)\\.\\.\\.\\nupgrade: generation 2 served by ${process.pid} after`));
  assert.deepEqual(await old.exit, { code: 0, signal: null }, 'the old owner exited on its own');
  const s = hold(await standby);
  assert.equal(s.resumed, true);
  assert.equal(s.generation, 2);
  assert.equal(s.checkpoint.get('state')?.toString(), 'flushed before DRAINED');
  const st = await sessionStatus('upgrade');
  assert.equal(st?.generation, 2);
  assert.equal(st?.handovers, 1);
  assert.equal(st?.restarts, 0);
  assert.equal(st?.lastRecovery?.fenced, false);
  await release('upgrade', mountpoint);
  dropFd(s.fd);
  client.close();
});

// ------------------------------------------------------------------------------------------
// Hostile peers, with raw frames.

type Received = { kind: 'eof' } | { kind: 'message'; msg: ControlMessage | null; requestId: number; fds: number };

/** A peer speaking raw frames. */
class RawPeer {
  readonly fd: number;
  constructor(socket: string) {
    this.fd = createSocket('seqpacket');
    connectSocket(this.fd, socket);
  }
  send(data: Buffer, fds: number[] = []): void {
    assert.notEqual(sendMessage(this.fd, { data, fds }), null, 'the socket took the frame');
  }
  async next(timeoutMs = 5000): Promise<Received> {
    for (;;) {
      const r = receiveMessage(this.fd, { maxBytes: MAX_MESSAGE, maxFds: 4 });
      if (r.kind === 'eof') return { kind: 'eof' };
      if (r.kind === 'message') {
        closeAll(r.fds);
        const d = decodeMessage(r.data, r.fds.length, { from: 'supervisor' });
        return { kind: 'message', msg: d.ok ? d.message : null, requestId: d.ok ? d.requestId : -1, fds: r.fds.length };
      }
      assert.ok(await waitReadable(this.fd, timeoutMs), 'the supervisor answered');
    }
  }
  async hello(): Promise<void> {
    this.send(encodeMessage({ type: 'hello', minVersion: 1, maxVersion: 1, role: 'daemon', clientName: 'raw' }, 1));
    const r = await this.next();
    assert.equal(r.kind === 'message' && r.msg?.type, 'hello_ok');
  }
  /** Expects ERROR `code` on `requestId`, then (when `disconnects`) the end of the connection. */
  async expectError(code: string, requestId: number, disconnects: boolean): Promise<string> {
    const r = await this.next();
    assert.equal(r.kind, 'message');
    assert.ok(r.kind === 'message' && r.msg?.type === 'error', `an ERROR, got ${JSON.stringify(r)}`);
    assert.equal(r.msg.code, code, r.msg.message);
    assert.equal(r.requestId, requestId);
    assert.equal(r.fds, 0);
    if (disconnects) assert.deepEqual(await this.next(), { kind: 'eof' }, 'disconnected after EPROTO');
    return r.msg.message;
  }
  close(): void {
    closeFd(this.fd);
  }
}

/** Runs helpers/foreign-peer.ts as uid/gid 65534 (`fd`, if given, becomes its fd 3); its JSON line. */
function foreignPeer(socket: string, plan: Record<string, unknown>, fd?: number): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', FOREIGN_PEER, socket, String(NOBODY), String(NOBODY), JSON.stringify(plan)], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'inherit', ...(fd === undefined ? [] : [fd])],
    });
    let text = '';
    child.stdout!.setEncoding('utf8').on('data', (c: string) => (text += c));
    child.on('error', reject);
    child.on('exit', (code) => {
      if (code !== 0) reject(new Error(`foreign peer exited ${code}: ${text}`));
      else resolve(JSON.parse(text) as Record<string, unknown>);
    });
  });
}

function frame(type: number, payload: Buffer, requestId = 1, fix: (h: Buffer) => void = () => {}): Buffer {
  const h = Buffer.alloc(16);
  h.writeUInt16LE(0x4b46, 0);
  h[2] = 1;
  h[3] = type;
  h.writeUInt32LE(requestId, 8);
  h.writeUInt32LE(payload.length, 12);
  fix(h);
  return Buffer.concat([h, payload]);
}

test('hostile peers: malformed, oversized, truncated frames, frames before HELLO, too many fds, wrong fd types, another uid; the supervisor keeps serving and its fds return to baseline', async () => {
  await waitUntil(async () => (await status()).supervisor.connections === 1, 'only the admin connection to remain');
  // An owner of an earlier test that disconnected may still be exiting: the supervisor keeps
  // its pidfd until the exit is reported (a baseline taken before that failed the comparison
  // at the end once, in CI).
  await waitUntil(() => ![...sup.fds().values()].includes('anon_inode:[pidfd]'), 'the earlier owners\' pidfds to be closed');
  const baseline = sup.fds();
  const stillServing = async (): Promise<void> => {
    assert.ok(Array.isArray((await status()).sessions), 'status still answers');
  };
  const scratch = join(sup.dir, 'hostile');
  mkdirSync(scratch);
  const plain = join(scratch, 'plain-file');
  writeFileSync(plain, 'not a device');
  const hello = encodeMessage({ type: 'hello', minVersion: 1, maxVersion: 1, role: 'daemon', clientName: 'raw' }, 1);

  // Not a frame at all, and a header with a wrong magic.
  for (const bytes of [Buffer.from('GET / HTTP/1.1\r\n\r\n'), frame(0x01, hello.subarray(16), 1, (h) => h.writeUInt16LE(0x1234, 0))]) {
    const p = new RawPeer(sup.socket);
    p.send(bytes);
    assert.match(await p.expectError('EPROTO', 0, true), /magic/);
    p.close();
    await stillServing();
  }
  // Oversized: more than 64 KiB in one message.
  {
    const p = new RawPeer(sup.socket);
    await p.hello();
    p.send(frame(0x06, Buffer.alloc(MAX_MESSAGE + 4000 - 16)));
    await p.expectError('EPROTO', 0, true);
    p.close();
    await stillServing();
  }
  // Truncated: shorter than a header; a header promising more payload than came.
  for (const bytes of [hello.subarray(0, 9), hello.subarray(0, hello.length - 3)]) {
    const p = new RawPeer(sup.socket);
    p.send(bytes);
    assert.match(await p.expectError('EPROTO', 0, true), /truncated|length/);
    p.close();
    await stillServing();
  }
  // A well-formed frame, but not HELLO first.
  {
    const p = new RawPeer(sup.socket);
    p.send(encodeMessage({ type: 'status' }, 7));
    assert.match(await p.expectError('EPROTO', 0, true), /before HELLO/);
    p.close();
    await stillServing();
  }
  // Fds where none belong, or more than one: the frame is malformed and every fd is closed.
  const fifo = join(scratch, 'fifo');
  mknod(fifo, 0o010600, 0);
  const fifoRead = openFd(fifo, O.RDONLY | O.NONBLOCK);
  const fdsToSend = (): number[] => [openFd(plain, O.RDONLY), openFd(fifo, O.WRONLY | O.NONBLOCK), ...createSocketPair('seqpacket')];
  for (const [what, build, requestId] of [
    ['HELLO with 4 fds', () => hello, 1],
    ['STORE with 2 fds', () => encodeMessage({ type: 'store', name: 'x', mount: mountSpec(join(scratch, 'nowhere')) }, 2), 2],
    ['STATUS with 9 fds (beyond what the supervisor takes)', () => encodeMessage({ type: 'status' }, 3), 3],
  ] as const) {
    const p = new RawPeer(sup.socket);
    if (what !== 'HELLO with 4 fds') await p.hello();
    let fds = fdsToSend();
    if (what.startsWith('STORE')) {
      closeAll(fds.slice(2));
      fds = fds.slice(0, 2);
    }
    if (what.startsWith('STATUS')) fds = [...fds, ...fdsToSend(), openFd(plain, O.RDONLY)];
    p.send(build(), fds);
    closeAll(fds);
    // The header was readable and the type is a request: the ERROR goes to its requestId.
    assert.match(await p.expectError('EPROTO', requestId, true), /fd count/, what);
    p.close();
    await stillServing();
  }
  // STORE with one fd of the wrong kind: EBADF, the fd closed, the connection kept.
  {
    const p = new RawPeer(sup.socket);
    await p.hello();
    const unmountedFuse = openFuseDevice();
    const cases: [string, number][] = [
      ['a regular file', openFd(plain, O.RDONLY)],
      ['a pipe', openFd(fifo, O.WRONLY | O.NONBLOCK)],
      ['a socket', createSocketPair('seqpacket')[0]],
      ['an unmounted /dev/fuse fd', unmountedFuse],
    ];
    let id = 10;
    for (const [what, fd] of cases) {
      p.send(encodeMessage({ type: 'store', name: 'hostile-store', mount: mountSpec(join(scratch, 'nowhere')) }, ++id), [fd]);
      closeFd(fd);
      await p.expectError('EBADF', id, false).catch((err: Error) => assert.fail(`${what}: ${err.message}`));
    }
    // The write end of the FIFO was the supervisor's last writer: it reads EOF, not EAGAIN.
    assert.equal(readFd(fifoRead, Buffer.alloc(8)), 0, 'the supervisor closed the pipe it was sent');
    p.send(encodeMessage({ type: 'status' }, 99));
    const r = await p.next();
    assert.equal(r.kind === 'message' && r.msg?.type, 'status_reply', 'the connection still serves');
    p.close();
    await stillServing();
  }
  closeFd(fifoRead);

  // A peer of another uid cannot take, drain or release a root session, and gets no fd.
  {
    const { mountpoint } = sessionDir(sup.dir, 'rootonly');
    const { mountpoint: rootDir } = sessionDir(sup.dir, 'rootdir');
    const spec = mountSpec(mountpoint);
    const rootOwner = owner({ name: 'rootonly', mount: spec, then: 'sleep' });
    await rootOwner.report;
    const result = await foreignPeer(sup.socket, { name: 'rootonly', mount: spec, freshMount: mountSpec(rootDir, { uid: NOBODY, gid: NOBODY }) });
    assert.deepEqual(result, {
      helper: 'foreign',
      uid: NOBODY,
      acquire: 'EACCES',
      standby: 'EACCES',
      freshOnRootDir: 'EACCES',
      release: 'EACCES',
      drain: 'EACCES',
      fdsGained: 0,
      stillConnected: true,
    });
    const st = await sessionStatus('rootonly');
    assert.equal(st?.state, 'owned');
    assert.equal(st?.owner?.pid, rootOwner.pid);
    assert.equal(st?.generation, 1);
    assert.equal(findMount(mountpoint)?.fstype, 'fuse.suptest');
    assert.equal(findMount(rootDir), undefined);
    const refused = sup.events().filter((e) => e.event === 'peer.refused' && e.uid === NOBODY).map((e) => e.request);
    assert.deepEqual(refused.sort(), ['acquire', 'acquire', 'acquire', 'drain', 'release']);
    await release('rootonly', mountpoint);
    await rootOwner.kill('SIGKILL');
    await stillServing();
  }

  await waitUntil(() => {
    const now = sup.fds();
    return now.size === baseline.size && [...now].every(([fd, t]) => baseline.get(fd) === t);
  }, `the supervisor's fds to return to baseline (${JSON.stringify([...baseline])})`, 5000).catch((err: Error) => {
    assert.fail(`${err.message}; now ${JSON.stringify([...sup.fds()])}`);
  });
});

// ------------------------------------------------------------------------------------------
// Managed daemons.

test('managed daemon: a command that acquires and crashes is restarted with backoff; past the crash-loop limit ("abort") the connection is aborted', async () => {
  const dir = tempDir();
  const { mountpoint } = sessionDir(dir, 'managed');
  // Each daemon lives 1 s: the application below must be seen waiting before the last one
  // crashes, also on a loaded CI machine where starting it takes a while.
  const plan: OwnerPlan = { mount: mountSpec(mountpoint), then: 'crash', crashAfterMs: 1000 };
  const msup = await startSupervisor({
    dir,
    config: {
      daemons: [
        {
          name: 'managed',
          command: [process.execPath, '--import', 'tsx', OWNER],
          env: { FUSEKEEPER_OWNER_PLAN: JSON.stringify(plan) },
          backoffMs: 100,
          maxBackoffMs: 5000,
          crashLoopCount: 3,
          crashLoopWindowMs: 60_000,
          onGiveUp: 'abort',
        },
      ],
    },
  }).catch((err: Error) => {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  });
  let app: ReturnType<typeof spawn> | undefined;
  try {
    const reports = (): OwnerReport[] => msup.events().filter((e) => e.helper === 'owner') as unknown as OwnerReport[];
    await waitUntil(() => reports().length >= 1, 'the first daemon to acquire');
    assert.ok(findMount(mountpoint), 'mounted by the first daemon');
    assert.deepEqual(reports()[0]!.env, { standby: '1', spare: '0' }, 'a daemon without a spare waits for its session but does not prepare as a spare');
    const mcli = await connectSupervisor({ socket: msup.socket, role: 'cli', reconnect: false, heartbeatMs: 0 });
    let connId: number | null = null;
    try {
      connId = ((await mcli.status()) as Status).sessions[0]?.connectionId ?? null;
    } finally {
      mcli.close();
    }
    assert.ok(connId !== null);
    // An application blocked in a request nobody answers: the daemons keep crashing.
    app = spawn(process.execPath, ['-e', `require('fs').stat(${JSON.stringify(join(mountpoint, 'file'))}, (e) => console.log(e ? e.code : 'ok'))`], { stdio: ['ignore', 'pipe', 'inherit'] });
    let appOut = '';
    app.stdout!.setEncoding('utf8').on('data', (c: string) => (appOut += c));
    const appExit = new Promise<number | null>((r) => app!.once('exit', (code) => r(code)));
    // Every distinct observation, for the failure message. ECONNABORTED is also proof: the
    // kernel gives it only to a request that was waiting when the connection was aborted.
    const seen: string[] = [];
    await waitUntil(() => {
      let now: string;
      let waitingNow = false;
      try {
        const mounted = findMount(mountpoint) !== undefined;
        const waiting = mounted ? waitingRequests(connId!) : -1;
        waitingNow = waiting > 0;
        now = `mounted ${mounted}, waiting ${waiting}, application said ${JSON.stringify(appOut)}`;
      } catch (err) {
        now = `${(err as Error).message}, application said ${JSON.stringify(appOut)}`;
      }
      if (seen.at(-1) !== now) seen.push(now);
      return waitingNow || appOut.trim() === 'ECONNABORTED';
    }, 'the application to wait in the kernel').catch((err: Error) => assert.fail(`${err.message}: ${seen.join('; ')}`));

    const aborted = await msup.waitEvent('session.aborted', (e) => e.session === 'managed', 30_000);
    assert.match(String(aborted.reason), /crashed more than 3 times/);
    assert.equal(await appExit, 0);
    // The kernel fails a request that was waiting when the connection was aborted with
    // ECONNABORTED, and every later one with ENOTCONN: an error either way, not a hang.
    assert.match(appOut.trim(), /^(ECONNABORTED|ENOTCONN)$/, 'the application gets an error instead of hanging');
    assert.equal(findMount(mountpoint), undefined, 'unmounted');

    const ev = msup.events();
    const started = ev.filter((e) => e.event === 'daemon.started');
    const exited = ev.filter((e) => e.event === 'daemon.exited');
    assert.equal(started.length, 4, 'the first start and three restarts');
    assert.equal(exited.length, 4);
    assert.ok(exited.every((e) => e.code === 1));
    const gaveUp = ev.find((e) => e.event === 'daemon.gave_up');
    assert.equal(gaveUp?.policy, 'abort');
    // Backoff doubles: 100, 200, 400 ms between a crash and the next start.
    const delays = [1, 2, 3].map((i) => started[i]!.time! - exited[i - 1]!.time!);
    delays.forEach((d, i) => assert.ok(d >= 100 * 2 ** i - 5 && d < 100 * 2 ** i + 1000, `restart ${i + 1} after ${d} ms (backoff ${100 * 2 ** i})`));
    const gens = reports().map((r) => [r.generation, r.resumed]);
    assert.deepEqual(gens, [[1, false], [2, true], [3, true], [4, true]], 'each restart resumed the session');

    const after = await runCli(['status', '--json', '--socket', msup.socket]);
    assert.equal(after.code, 0, after.stderr);
    assert.deepEqual((JSON.parse(after.stdout) as Status).sessions, [], 'the aborted session is no longer listed');
  } finally {
    if (app && app.exitCode === null) app.kill('SIGKILL');
    await msup.cleanup();
    rmSync(dir, { recursive: true, force: true });
  }
});

// ------------------------------------------------------------------------------------------
// A FUSE filesystem nobody answers, where the supervisor must not look.

/** Resolves with `p`'s outcome, or 'timeout' after `ms`. */
function within<T>(p: Promise<T>, ms: number): Promise<T | 'timeout'> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([p, new Promise<'timeout'>((r) => (timer = setTimeout(() => r('timeout'), ms)))]).finally(() => clearTimeout(timer));
}

test(
  'a fresh ACQUIRE on a mountpoint where an unanswered FUSE filesystem is mounted is refused with EBUSY, and the supervisor keeps serving',
  async () => {
    const dir = tempDir();
    const mountpoint = join(dir, 'hung');
    mkdirSync(mountpoint);
    // Mounted, and nobody will ever read this fd: every request to the mount waits.
    const hungFd = openFuseDevice();
    mountFuse(hungFd, { mountpoint, fsName: 'fusekeeper-test', subtype: 'hung' });
    let hsup: SupervisorProcess | undefined;
    let client: SupervisorClient | undefined;
    try {
      hsup = await startSupervisor({ dir });
      client = await connectSupervisor({ socket: hsup.socket, clientName: 'supervisor.test hung', heartbeatMs: 0, reconnect: false });
      const outcome = await within(
        client.acquire('hung', mountSpec(mountpoint)).then(
          (s) => {
            closeFd(s.fd);
            return 'acquired';
          },
          (err: SupervisorError) => err.code,
        ),
        3000,
      );
      assert.equal(outcome, 'EBUSY');
      const cli = await connectSupervisor({ socket: hsup.socket, role: 'cli', reconnect: false, heartbeatMs: 0 });
      try {
        assert.notEqual(await within(cli.status(), 2000), 'timeout', 'status still answers');
      } finally {
        cli.close();
      }
    } finally {
      client?.close();
      // Ending the connection also frees a supervisor stuck in a request to it.
      unmountFuse(mountpoint, true);
      closeFd(hungFd);
      await hsup?.cleanup();
      rmSync(dir, { recursive: true, force: true });
    }
  },
);

test(
  'a peer of another uid that STOREs its own mount and never answers FUSE requests gets an answer, and the supervisor keeps serving',
  async () => {
    const dir = tempDir();
    const mountpoint = join(dir, 'theirs');
    mkdirSync(mountpoint);
    // What fusermount3 gives an unprivileged user (allow_other needs user_allow_other in
    // /etc/fuse.conf): a mounted fd, user_id= its uid. Its "daemon" (the helper) never reads it.
    const fd = openFuseDevice();
    mountFuse(fd, { mountpoint, fsName: 'fusekeeper-test', subtype: 'theirs', userId: NOBODY, groupId: NOBODY, allowOther: true });
    const minor = findMount(mountpoint)!.minor;
    let hsup: SupervisorProcess | undefined;
    try {
      hsup = await startSupervisor({ dir });
      const result = await foreignPeer(hsup.socket, { name: 'theirs', store: mountSpec(mountpoint, { subtype: 'theirs', uid: NOBODY, gid: NOBODY, allowOther: true }) }, fd);
      assert.notEqual(result.store, 'timeout', 'STORE was answered');
      const cli = await connectSupervisor({ socket: hsup.socket, role: 'cli', reconnect: false, heartbeatMs: 0 });
      try {
        assert.notEqual(await within(cli.status(), 2000), 'timeout', 'status still answers');
      } finally {
        cli.close();
      }
    } finally {
      // The supervisor may hold a copy of the fd: abort the connection to free it.
      abortConnection(minor);
      unmountFuse(mountpoint, true);
      closeFd(fd);
      await hsup?.cleanup();
      rmSync(dir, { recursive: true, force: true });
    }
  },
);

// ------------------------------------------------------------------------------------------
// The CLI's own errors.

test('fusekeeper serve --help; status without a supervisor and serve with a bad --config fail with one line and exit 1', async () => {
  const help = await runCli(['serve', '--help']);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /^usage: fusekeeper serve \[--socket PATH\] \[--config FILE\]/);
  assert.match(help.stdout, /--config FILE/);

  const dir = tempDir();
  try {
    const missing = join(dir, 'nobody-listens.sock');
    const st = await runCli(['status', '--socket', missing]);
    assert.equal(st.code, 1);
    assert.equal(st.stdout, '');
    assert.match(st.stderr, /^fusekeeper status: no supervisor is listening on \S+nobody-listens\.sock \(start one with `fusekeeper serve`\) \[ENOENT\]\n$/);

    const notJson = join(dir, 'bad.json');
    writeFileSync(notJson, '{ socket: nope');
    const bad = await runCli(['serve', '--socket', join(dir, 's.sock'), '--config', notJson]);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /^fusekeeper serve: \S+bad\.json: not valid JSON: [^\n]*\n$/);

    const unknown = join(dir, 'unknown.json');
    writeFileSync(unknown, JSON.stringify({ heartbeatTimeoutMs: 1000, bogus: true }));
    const unk = await runCli(['serve', '--socket', join(dir, 's.sock'), '--config', unknown]);
    assert.equal(unk.code, 1);
    assert.match(unk.stderr, /^fusekeeper serve: \S+unknown\.json: unknown key "bogus" \(known: [^\n]*\) \[ERR_CONFIG\]\n$/);

    const badDaemon = join(dir, 'daemon.json');
    writeFileSync(badDaemon, JSON.stringify({ daemons: [{ name: 'x', command: [], onGiveUp: 'explode' }] }));
    const bd = await runCli(['serve', '--socket', join(dir, 's.sock'), '--config', badDaemon]);
    assert.equal(bd.code, 1);
    assert.match(bd.stderr, /^fusekeeper serve: [^\n]*daemons\[0\]\.command: expected a non-empty array of strings \[ERR_CONFIG\]\n$/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('after all of the above the main supervisor holds no session and no stray fd', async () => {
  await waitUntil(async () => (await status()).supervisor.connections === 1, 'only the admin connection to remain');
  assert.deepEqual((await status()).sessions, []);
  const fds = [...processFds(sup.pid).values()];
  assert.ok(!fds.some((t) => t === '/dev/fuse' || t === 'anon_inode:[pidfd]'), JSON.stringify(fds));
});
