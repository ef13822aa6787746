// Re-registration (docs/protocol.md, STORE of an existing session): the owner of a session
// whose connection to the supervisor broke, or whose supervisor restarted and restored the
// session from saved state, stores its fd again and owns the session again with the same
// generation. Another FUSE connection under the same name is refused with EEXIST. The
// supervisor runs in-process here; the systemd tier does the same across real restarts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { closeFd, duplicateFd, pidfdOpen } from '../../native/index.ts';
import { openFuseDevice } from '../../kernel/device.ts';
import { findMount, unmountFuse } from '../../kernel/mount.ts';
import { Supervisor } from '../../supervisor/server.ts';
import { resolveConfig } from '../../supervisor/main.ts';
import { processStartTime } from '../../supervisor/service.ts';
import { connectSupervisor, type SupervisorClient } from '../../client/supervisor.ts';
import type { MountSpec } from '../../protocol/index.ts';

const caps = { passthrough: false, resend: false, closeAll: false };

function setup(): { dir: string; socket: string; spec: MountSpec; sup: () => Supervisor } {
  const dir = mkdtempSync(join(tmpdir(), 'fusekeeper-reattach-'));
  const mnt = join(dir, 'mnt');
  mkdirSync(mnt);
  const socket = join(dir, 'sock');
  const spec: MountSpec = { mountpoint: mnt, fsName: 'fktest', subtype: 'fktest', rootMode: 0o40755, uid: 0, gid: 0, allowOther: false, defaultPermissions: false, readOnly: false, maxRead: 0 };
  return { dir, socket, spec, sup: () => new Supervisor({ config: resolveConfig({ socket }), kernel: caps, version: 'test' }) };
}

const daemon = (socket: string): Promise<SupervisorClient> => connectSupervisor({ socket, reconnect: false, heartbeatMs: 0 });

function cleanup(dir: string, mnt: string): void {
  for (let i = 0; i < 3 && findMount(mnt); i++) unmountFuse(mnt, true);
  rmSync(dir, { recursive: true, force: true });
}

test('an owner whose connection broke stores its fd again and owns the session again, same generation; another connection of that name is refused', async () => {
  const { dir, socket, spec, sup: make } = setup();
  const sup = make();
  sup.start();
  let fd = -1;
  try {
    const a = await daemon(socket);
    const s = await a.acquire('s1', spec);
    fd = duplicateFd(s.fd);
    closeFd(s.fd);
    a.close();
    await waitFor(() => sup.status().sessions[0]?.state === 'orphaned');

    // A different FUSE connection (a fresh /dev/fuse open) under the same name: EEXIST.
    const other = openFuseDevice();
    const b = await daemon(socket);
    await assert.rejects(b.store('s1', spec, other), (e: Error & { code?: string }) => e.code === 'EEXIST' && /another FUSE connection/.test(e.message));
    // Another spec: EEXIST too.
    await assert.rejects(b.store('s1', { ...spec, fsName: 'other' }, fd), (e: Error & { code?: string }) => e.code === 'EEXIST');
    closeFd(other);

    // The same connection, from the owner's process: re-attached, same generation.
    const back = await b.store('s1', spec, fd);
    assert.equal(back.generation, 1);
    const st = sup.status().sessions[0]!;
    assert.equal(st.state, 'owned');
    assert.equal(st.owner?.pid, process.pid);
    assert.equal(st.generation, 1);
    // Owned again: a second STORE of it (another connection of the same process) is EEXIST.
    const c = await daemon(socket);
    await assert.rejects(c.store('s1', spec, fd), (e: Error & { code?: string }) => e.code === 'EEXIST' && /has an owner/.test(e.message));
    await c.release('s1').catch(() => undefined);
    c.close();
    b.close();
    assert.equal(findMount(spec.mountpoint), undefined);
  } finally {
    if (fd >= 0) closeFd(fd);
    sup.stop();
    cleanup(dir, spec.mountpoint);
  }
});

test('a restarted supervisor restores a session from its saved state and fd; the running owner re-attaches; the state it re-sends replaces the saved one', async () => {
  const { dir, socket, spec, sup: make } = setup();
  const first = make();
  first.start();
  let fd = -1;
  let second: Supervisor | null = null;
  try {
    const a = await daemon(socket);
    const s = await a.acquire('s2', spec);
    s.checkpointPut('kept', Buffer.from('v1'));
    s.checkpointPut('deleted-while-away', Buffer.from('x'));
    s.journalOpen(5, 1n, 2n);
    await waitFor(() => first.status().sessions[0]?.checkpointKeys === 2);
    const saved = first.snapshot('s2', 'fuse-s2', (o) => processStartTime(o.pid));
    assert.ok(saved);
    assert.equal(saved.owner?.pid, process.pid);
    assert.equal(saved.journal.length, 1);
    // "Crash": the first supervisor goes away without unmounting (its owner still serves).
    fd = duplicateFd(s.fd);
    a.close();
    first.stop();
    assert.ok(findMount(spec.mountpoint), 'the owner keeps the mount');
    // While it is away, the owner deletes a key and closes the journaled id.
    const restart = make();
    second = restart;
    const restored = restart.restoreSession({ saved: { ...saved, generation: 7 }, fd: duplicateFd(fd), owner: { pid: process.pid, uid: 0, pidfd: pidfdOpen(process.pid) } });
    assert.equal(restored.generation, 7);
    restart.start();
    let st = restart.status().sessions[0]!;
    assert.equal(st.state, 'orphaned', 'restored sessions wait for their owner');
    assert.equal(st.owner?.pid, process.pid);
    assert.equal(st.checkpointKeys, 2);
    const b = await daemon(socket);
    const back = await b.store('s2', spec, fd);
    assert.equal(back.generation, 7);
    back.checkpointPut('kept', Buffer.from('v2'));
    st = await waitFor(() => {
      const x = restart.status().sessions[0]!;
      return x.checkpointKeys === 1 ? x : undefined;
    });
    assert.equal(st.state, 'owned');
    assert.equal(st.liveBackingIds, 0, 'the stale journal entry is gone: the owner re-sends what is live');
    const snap = restart.snapshot('s2', 'fuse-s2', () => null)!;
    assert.deepEqual([...snap.checkpoint.keys()], ['kept']);
    assert.equal(snap.checkpoint.get('kept')!.toString(), 'v2');
    assert.equal(snap.highestReported, 5, 'the highest reported id survives (probing starts above it)');
    await b.release('s2');
    b.close();
  } finally {
    if (fd >= 0) closeFd(fd);
    second?.stop();
    cleanup(dir, spec.mountpoint);
  }
});

async function waitFor<T>(check: () => T, timeoutMs = 5000): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = check();
    if (v) return v as NonNullable<T>;
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 5));
  }
}
