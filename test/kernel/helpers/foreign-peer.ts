// A peer of another uid, for supervisor.test.ts: starts as root, drops to the uid/gid in
// argv (and no supplementary groups) *before* connecting, so the supervisor's SO_PEERCRED
// sees that uid. Then tries to take or end a root session and prints one JSON line with what
// the supervisor answered and whether any fd arrived.
//   argv: SOCKET UID GID PLAN   where PLAN is JSON { name, mount, freshMount }
// With PLAN { store: MountSpec } instead it STOREs the /dev/fuse fd it inherited as fd 3 (a
// mount of its own uid) and prints what the supervisor answered within 3 s, or "timeout".
import { setTimeout as sleep } from 'node:timers/promises';
import { readdirSync } from 'node:fs';
import { connectSupervisor, type SupervisorClient } from '../../../client/supervisor.ts';
import type { MountSpec } from '../../../protocol/index.ts';

const [socket, uid, gid, planJson] = process.argv.slice(2);
const plan = JSON.parse(planJson!) as { name: string; mount: MountSpec; freshMount: MountSpec; store?: MountSpec };
const fdCount = (): number => readdirSync('/proc/self/fd').length;

process.setgroups!([]);
process.setgid!(Number(gid));
process.setuid!(Number(uid));

async function outcome(what: () => Promise<unknown>): Promise<string> {
  try {
    await what();
    return 'ok';
  } catch (err) {
    return (err as { code?: string }).code ?? String(err);
  }
}

if (plan.store) {
  const owner = await connectSupervisor({ socket: socket!, clientName: 'foreign store', heartbeatMs: 0, reconnect: false });
  const answer = await Promise.race([outcome(() => owner.store(plan.name, plan.store!, 3)), sleep(3000).then(() => 'timeout')]);
  owner.close();
  process.stdout.write(`${JSON.stringify({ helper: 'foreign', uid: process.getuid!(), store: answer })}\n`);
  process.exit(0);
}

const daemon: SupervisorClient = await connectSupervisor({ socket: socket!, clientName: 'foreign daemon', heartbeatMs: 0, reconnect: false });
const cli: SupervisorClient = await connectSupervisor({ socket: socket!, role: 'cli', clientName: 'foreign cli', heartbeatMs: 0, reconnect: false });
const before = fdCount();
const result = {
  helper: 'foreign',
  uid: process.getuid!(),
  acquire: await outcome(() => daemon.acquire(plan.name, plan.mount)),
  standby: await outcome(() => daemon.acquire(plan.name, plan.mount, { standby: true })),
  freshOnRootDir: await outcome(() => daemon.acquire(`${plan.name}-mine`, plan.freshMount)),
  release: await outcome(() => cli.release(plan.name)),
  drain: await outcome(() => cli.drain(plan.name)),
  fdsGained: fdCount() - before,
  stillConnected: daemon.connected && cli.connected,
};
daemon.close();
cli.close();
process.stdout.write(`${JSON.stringify(result)}\n`);
