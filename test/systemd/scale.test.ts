// Many sessions through one supervisor restart: every fd goes into systemd's store, a
// SIGKILLed supervisor takes them all back, and every owner re-registers. Owners here are SDK
// clients in this process that acquire and never serve (nothing touches their mounts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { connectSupervisor, type SupervisorClient } from '../../client/supervisor.ts';
import type { MountSpec } from '../../protocol/index.ts';
import type { SessionStatus } from '../../supervisor/session.ts';
import { startUserManager, waitUntil } from './helpers/user-manager.ts';

const SESSIONS = Number(process.env.SCALE_SESSIONS ?? 300);

test(`${SESSIONS} sessions: all in the fd store, all restored after kill -9, all owners re-attached`, async (t) => {
  const um = await startUserManager();
  const clients: SupervisorClient[] = [];
  try {
    assert.equal(um.systemctl('start', 'fusekeeper.socket', 'fusekeeper.service').status, 0);
    const t0 = Date.now();
    for (let i = 0; i < SESSIONS; i++) {
      const mountpoint = join(um.dir, `m${i}`);
      mkdirSync(mountpoint);
      const spec: MountSpec = { mountpoint, fsName: 'fkscale', subtype: 'fkscale', rootMode: 0o40755, uid: 0, gid: 0, allowOther: false, defaultPermissions: false, readOnly: false, maxRead: 0 };
      const c = await connectSupervisor({ socket: um.controlSocket, heartbeatMs: 0 });
      clients.push(c);
      // Names with ':' exercise the fd-name escaping.
      await c.acquire(`scale:${i}`, spec);
    }
    const created = Date.now() - t0;
    const fdStore = (): number => Number(um.show('fusekeeper.service', 'NFileDescriptorStore').NFileDescriptorStore);
    // The supervisor sends FDSTORE=1 as it adds a session; systemd reads it on its own time.
    await waitUntil(() => fdStore() === SESSIONS, `all ${SESSIONS} fds in the store`);
    const status = async (): Promise<SessionStatus[]> => {
      const cli = await connectSupervisor({ socket: um.controlSocket, role: 'cli', reconnect: false, heartbeatMs: 0 });
      try {
        return ((await cli.status()) as { sessions: SessionStatus[] }).sessions;
      } finally {
        cli.close();
      }
    };
    const oldPid = um.mainPid('fusekeeper.service');
    const t1 = Date.now();
    process.kill(oldPid, 'SIGKILL');
    await waitUntil(() => {
      const p = um.show('fusekeeper.service', 'MainPID', 'SubState');
      return Number(p.MainPID) !== oldPid && Number(p.MainPID) !== 0 && p.SubState === 'running';
    }, 'the supervisor to come back', 30_000);
    const ready = Date.now() - t1;
    // With this many sessions STATUS_REPLY carries the brief form (name, state, generation).
    await waitUntil(async () => {
      const s = await status();
      return s.length === SESSIONS && s.every((x) => x.state === 'owned' && x.generation === 1);
    }, `all ${SESSIONS} owners to re-attach`, 60_000, 100);
    const reattached = new Set(
      um
        .log('fusekeeper')
        .split('\n')
        .filter((l) => l.includes('"event":"session.reattached"') && l.includes(`"owner":${process.pid}`))
        .map((l) => (JSON.parse(l) as { session: string }).session),
    );
    assert.equal(reattached.size, SESSIONS, 'every session was re-attached by its owner (this process)');
    const allBack = Date.now() - t1;
    assert.equal(fdStore(), SESSIONS);
    assert.match(um.log('fusekeeper'), new RegExp(`restored ${SESSIONS} session\\(s\\) from the fd store"`));
    t.diagnostic(`${SESSIONS} sessions: created in ${created} ms; after kill -9: READY in ${ready} ms, all re-attached in ${allBack} ms`);
    console.log(`scale timings (ms): ${JSON.stringify({ sessions: SESSIONS, created, killToReady: ready, killToAllReattached: allBack })}`);
  } catch (err) {
    const log = um.log('fusekeeper').split('\n');
    console.error(log.filter((l) => !/"level":30/.test(l)).slice(0, 30).join('\n'));
    console.error(log.slice(-10).join('\n'));
    throw err;
  } finally {
    for (const c of clients) c.close();
    await um.stop();
  }
});
