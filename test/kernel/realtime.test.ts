// The supervisor's main thread on SCHED_FIFO (config realtimePriority, docs/systemd.md "The
// supervisor's CPU"): `fusekeeper serve` as a child process, its threads' policies read from
// /proc. Where the kernel has CONFIG_RT_GROUP_SCHED (this test VM), the test's cgroup gets
// real-time runtime for the duration (grantRealtimeRuntime), as a host running the
// supervisor with real-time priority needs.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { spawn, type ChildProcess } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { RealtimeLender } from '../../supervisor/realtime.ts';
import { grantRealtimeRuntime, mountSpec, runCli, sessionDir, spawnOwner, startSupervisor, threadPolicy, waitUntil, type LogEvent, type OwnerProcess, type SupervisorProcess } from './helpers/supervisor.ts';
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

/**
 * Session `name` under `sup`: an owner, then a standby waiting for it (`waiting` runs then);
 * the owner is SIGKILLed and the standby takes over as generation 2. `check` gets the
 * standby, the supervisor's session.recovered line and the log line count at the kill; both
 * processes are killed after it.
 */
async function takeOver(sup: SupervisorProcess, name: string, check: (standby: OwnerProcess, recovered: LogEvent, from: number) => Promise<void> | void, waiting?: (standby: OwnerProcess) => void): Promise<void> {
  const mount = mountSpec(sessionDir(sup.dir, name).mountpoint);
  const first = spawnOwner({ socket: sup.socket, name, mount, then: 'sleep' });
  let standby: OwnerProcess | undefined;
  try {
    await first.report;
    const second = spawnOwner({ socket: sup.socket, name, mount, standby: true, then: 'sleep' });
    standby = second;
    await sup.waitEvent('standby.waiting', (e) => e.session === name && e.standby === second.pid);
    waiting?.(second);
    const from = sup.lineCount();
    await first.kill('SIGKILL');
    assert.equal((await second.report).generation, 2);
    await check(second, await sup.waitEvent('session.recovered', (e) => e.session === name, 10_000, from), from);
  } finally {
    await standby?.kill('SIGKILL');
    await first.kill('SIGKILL');
  }
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
  try {
    await takeOver(sup, 'handover', async (_standby, _recovered, from) => {
      await sup.waitEvent('supervisor.realtime_paused', (e) => e.why === 'a session was handed over', 10_000, from);
      await sup.waitEvent('supervisor.realtime_resumed', undefined, 10_000, from);
      assert.deepEqual(threadPolicy(sup.pid), { policy: SCHED_FIFO, rtPriority: 1 });
    });
  } finally {
    await sup.cleanup();
  }
});

test('a main thread paused for being busy is on SCHED_FIFO again from the owner\'s death to the hand-over', async () => {
  const sup = await startSupervisor({ env: { FUSEKEEPER_LOG_LEVEL: 'debug' } });
  const clients = await Promise.all([0, 1, 2, 3].map(() => connectSupervisor({ socket: sup.socket, role: 'cli', reconnect: false, heartbeatMs: 0 })));
  let busy = true;
  const loops = clients.map(async (c) => {
    while (busy) await c.status();
  });
  try {
    await sup.waitEvent('supervisor.realtime_paused', (e) => e.usedPct !== undefined, 10_000);
    await takeOver(
      sup,
      'busy',
      async (_standby, recovered, from) => {
        const resumed = await sup.waitEvent('supervisor.realtime_resumed', (e) => e.why === 'an owner is dying or being replaced', 10_000, from);
        const steppedDown = await sup.waitEvent('supervisor.realtime_paused', (e) => e.why === 'a session was handed over', 10_000, from);
        const line = (e: LogEvent): number => sup.events().indexOf(e);
        assert.ok(line(resumed) < line(recovered), 'back on SCHED_FIFO before the hand-over');
        assert.ok(line(steppedDown) > line(resumed), 'and stepped down at it');
      },
      // The status requests keep it paused up to the kill.
      () => assert.equal(threadPolicy(sup.pid).policy, SCHED_OTHER, 'paused at the kill'),
    );
  } finally {
    busy = false;
    await Promise.all(loops);
    for (const c of clients) c.close();
    await sup.cleanup();
  }
});

/** A `sleep 600` (through `prefix`, e.g. chrt) that the test kills; resolves once it runs sleep itself. */
async function sleeper(prefix: string[] = []): Promise<ChildProcess & { gone(): Promise<void> }> {
  const [cmd, ...args] = [...prefix, '/bin/sleep', '600'];
  const child = spawn(cmd!, args, { stdio: 'ignore' });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  await waitUntil(() => readdirSync(`/proc/${child.pid}/task`).length > 0 && /^sleep\b/.test(readFileSync(`/proc/${child.pid}/comm`, 'utf8')), 'sleep to run');
  return Object.assign(child, {
    gone: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    },
  });
}

test('RealtimeLender: SCHED_FIFO for a process\'s main thread, taken back (at once or after a while); other policies left alone; a gone process refused', async () => {
  const lender = new RealtimeLender(2);
  const normal = await sleeper();
  const batch = await sleeper(['chrt', '--batch', '0']);
  const changed = await sleeper();
  try {
    const loan = lender.lend(normal.pid!, 1);
    assert.notEqual(typeof loan, 'string', String(loan));
    assert.deepEqual(threadPolicy(normal.pid!), { policy: SCHED_FIFO, rtPriority: 1 });
    assert.equal(lender.outstanding, 1);
    assert.match(String(lender.lend(changed.pid!, 1)), /1 other new owners have it/, 'one per CPU but one');
    if (typeof loan !== 'string') loan.end();
    assert.deepEqual(threadPolicy(normal.pid!), { policy: SCHED_OTHER, rtPriority: 0 });
    assert.equal(lender.outstanding, 0);

    const later = lender.lend(normal.pid!, 1);
    if (typeof later === 'string') assert.fail(later);
    const endAt = Date.now();
    later.endAfter(300);
    assert.equal(threadPolicy(normal.pid!).policy, SCHED_FIFO);
    await waitUntil(() => threadPolicy(normal.pid!).policy === SCHED_OTHER, 'the loan to end', 5_000, 10);
    assert.ok(Date.now() - endAt >= 290, `ended after ${Date.now() - endAt} ms`);

    const SCHED_BATCH = 3;
    assert.equal(lender.lend(batch.pid!, 1), 'left alone: it runs SCHED_BATCH');
    assert.equal(threadPolicy(batch.pid!).policy, SCHED_BATCH);

    // The process changed its policy during the loan: it keeps what it chose.
    const chosen = lender.lend(changed.pid!, 1);
    if (typeof chosen === 'string') assert.fail(chosen);
    const chrt = spawn('chrt', ['--fifo', '--pid', '2', String(changed.pid)], { stdio: 'ignore' });
    await new Promise((r) => chrt.once('exit', r));
    chosen.end();
    assert.deepEqual(threadPolicy(changed.pid!), { policy: SCHED_FIFO, rtPriority: 2 });

    const pid = normal.pid!;
    await normal.gone();
    assert.match(String(lender.lend(pid, 1)), /ESRCH/);
    assert.equal(lender.outstanding, 0);
  } finally {
    lender.stop();
    await Promise.all([normal.gone(), batch.gone(), changed.gone()]);
  }
});

test('a standby taking over gets SCHED_FIFO on its main thread for takeoverRealtimeMs (with a CPU to spare), logged with the hand-over', async () => {
  const sup = await startSupervisor({ config: { takeoverRealtimeMs: 1500 } });
  try {
    await takeOver(
      sup,
      'lend',
      async (standby, recovered) => {
        if (availableParallelism() < 2) {
          // The VM tier's guests: a real-time borrower could hold the only CPU.
          assert.equal(recovered.ownerRealtime, 'not lent: the supervisor has one CPU');
          assert.equal(threadPolicy(standby.pid).policy, SCHED_OTHER);
          return;
        }
        assert.equal(recovered.ownerRealtime, 'SCHED_FIFO 1 for 1500 ms');
        const handedAt = Date.now();
        assert.deepEqual(threadPolicy(standby.pid), { policy: SCHED_FIFO, rtPriority: 1 });
        const others = readdirSync(`/proc/${standby.pid}/task`).map(Number).filter((tid) => tid !== standby.pid);
        for (const tid of others) assert.equal(threadPolicy(tid).policy, SCHED_OTHER, `thread ${tid}: only the main thread`);
        await waitUntil(() => threadPolicy(standby.pid).policy === SCHED_OTHER, 'the loan to end', 10_000, 20);
        assert.ok(Date.now() - handedAt >= 1000, `ended ${Date.now() - handedAt} ms after the hand-over was logged`);
      },
      (standby) => assert.equal(threadPolicy(standby.pid).policy, SCHED_OTHER),
    );
  } finally {
    await sup.cleanup();
  }
});

test('a supervisor limited to one CPU lends none, and says so', async () => {
  const sup = await startSupervisor({ config: { takeoverRealtimeMs: 1500 }, wrapper: ['taskset', '--cpu-list', '0'] });
  try {
    await takeOver(sup, 'single', (standby, recovered) => {
      assert.equal(recovered.ownerRealtime, 'not lent: the supervisor has one CPU');
      assert.equal(threadPolicy(standby.pid).policy, SCHED_OTHER);
    });
  } finally {
    await sup.cleanup();
  }
});
