// The supervisor's main thread on SCHED_FIFO (config realtimePriority, docs/systemd.md "The
// supervisor's CPU"): `fusekeeper serve` as a child process, its threads' policies read from
// /proc. Where the kernel has CONFIG_RT_GROUP_SCHED (this test VM), the test's cgroup gets
// real-time runtime for the duration (grantRealtimeRuntime), as a host running the
// supervisor with real-time priority needs.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { grantRealtimeRuntime, mountSpec, runCli, sessionDir, spawnOwner, startSupervisor, threadPolicy, waitUntil, type SupervisorProcess } from './helpers/supervisor.ts';
import { connectSupervisor } from '../../client/supervisor.ts';

const SCHED_OTHER = 0;
const SCHED_FIFO = 1;

let runtime: ReturnType<typeof grantRealtimeRuntime> | undefined;
before(() => {
  runtime = grantRealtimeRuntime();
});
after(() => runtime?.restore());

async function statusOf(sup: SupervisorProcess): Promise<Record<string, unknown>> {
  const r = await runCli(['status', '--json', '--socket', sup.socket]);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout).supervisor;
}

test('serve runs its main thread on SCHED_FIFO 1; its other threads and the daemons it starts keep SCHED_OTHER', async () => {
  const sup = await startSupervisor({ config: { daemons: [{ name: 'sleeper', command: ['/bin/sleep', '600'] }] } });
  try {
    assert.equal((await statusOf(sup)).realtime, 'SCHED_FIFO 1');
    assert.equal((await sup.waitEvent('supervisor.listening')).realtime, 'SCHED_FIFO 1');
    assert.deepEqual(threadPolicy(sup.pid), { policy: SCHED_FIFO, rtPriority: 1 });
    const others = readdirSync(`/proc/${sup.pid}/task`).map(Number).filter((tid) => tid !== sup.pid);
    assert.ok(others.length >= 4, 'node runs V8 and libuv threads');
    for (const tid of others) assert.equal(threadPolicy(tid).policy, SCHED_OTHER, `thread ${tid}`);
    const started = await sup.waitEvent('daemon.started', (e) => e.session === 'sleeper');
    const child = Number(started.child);
    assert.deepEqual(threadPolicy(child), { policy: SCHED_OTHER, rtPriority: 0 }, 'SCHED_RESET_ON_FORK: a daemon does not inherit it');
  } finally {
    await sup.cleanup();
  }
});

test('realtimePriority 0 leaves the main thread on SCHED_OTHER and status says why', async () => {
  const sup = await startSupervisor({ config: { realtimePriority: 0 } });
  try {
    assert.equal((await statusOf(sup)).realtime, 'off in the configuration');
    assert.equal(threadPolicy(sup.pid).policy, SCHED_OTHER);
  } finally {
    await sup.cleanup();
  }
});

test('without CAP_SYS_NICE the supervisor warns once, serves on SCHED_OTHER, and status names the refusal', async () => {
  const sup = await startSupervisor({ wrapper: ['setpriv', '--bounding-set', '-sys_nice', '--inh-caps', '-sys_nice', '--'] });
  try {
    const warned = await sup.waitEvent('supervisor.realtime_refused');
    assert.match(String(warned.err), /sched_setscheduler.*EPERM/);
    assert.match(String((await statusOf(sup)).realtime), /EPERM/);
    assert.equal(threadPolicy(sup.pid).policy, SCHED_OTHER);
    await waitUntil(() => sup.events().filter((e) => e.event === 'supervisor.realtime_refused').length === 1, 'one warning');
  } finally {
    await sup.cleanup();
  }
});

test('a main thread kept busy (status requests from 4 clients) goes to SCHED_NORMAL, and back to SCHED_FIFO once idle', async () => {
  const sup = await startSupervisor();
  const clients = await Promise.all([0, 1, 2, 3].map(() => connectSupervisor({ socket: sup.socket, role: 'cli', reconnect: false, heartbeatMs: 0 })));
  let busy = true;
  const loops = clients.map(async (c) => {
    while (busy) await c.status();
  });
  try {
    const paused = await sup.waitEvent('supervisor.realtime_paused', undefined, 10_000);
    assert.ok(Number(paused.usedPct) > Number(paused.limitPct), JSON.stringify(paused));
    assert.match(String(((await clients[0]!.status()) as { supervisor: { realtime: string } }).supervisor.realtime), /^SCHED_NORMAL for now/);
    assert.equal(threadPolicy(sup.pid).policy, SCHED_OTHER);
  } finally {
    busy = false;
    await Promise.all(loops);
    for (const c of clients) c.close();
  }
  try {
    await waitUntil(() => threadPolicy(sup.pid).policy === SCHED_FIFO, 'the main thread back on SCHED_FIFO', 5_000);
    assert.equal((await statusOf(sup)).realtime, 'SCHED_FIFO 1');
  } finally {
    await sup.cleanup();
  }
});

test('after a hand-over the main thread steps down to SCHED_NORMAL (the new owner starts serving first), and is back on SCHED_FIFO once idle', async () => {
  const sup = await startSupervisor({ env: { FUSEKEEPER_LOG_LEVEL: 'debug' } });
  const { mountpoint } = sessionDir(sup.dir, 'handover');
  const mount = mountSpec(mountpoint);
  const first = spawnOwner({ socket: sup.socket, name: 'handover', mount, then: 'sleep' });
  let second: ReturnType<typeof spawnOwner> | undefined;
  try {
    await first.report;
    const standby = spawnOwner({ socket: sup.socket, name: 'handover', mount, standby: true, then: 'sleep' });
    second = standby;
    await sup.waitEvent('standby.waiting', (e) => e.session === 'handover' && e.standby === standby.pid);
    const from = sup.lineCount();
    await first.kill('SIGKILL');
    assert.equal((await standby.report).generation, 2);
    await sup.waitEvent('session.recovered', (e) => e.session === 'handover', 10_000, from);
    await sup.waitEvent('supervisor.realtime_paused', (e) => e.why === 'a session was handed over', 10_000, from);
    await sup.waitEvent('supervisor.realtime_resumed', undefined, 10_000, from);
    assert.deepEqual(threadPolicy(sup.pid), { policy: SCHED_FIFO, rtPriority: 1 });
  } finally {
    await second?.kill('SIGKILL');
    await first.kill('SIGKILL');
    await sup.cleanup();
  }
});
