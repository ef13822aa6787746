// A session owner as a child process, for supervisor.test.ts: connects to the supervisor
// with the SDK, acquires a session, answers FUSE_INIT when the session is fresh, reports
// backing ids and checkpoint entries, prints one JSON line (`{"helper":"owner",...}`) and
// then does what the plan says. It never reads /dev/fuse after INIT: requests to the mount
// wait in the kernel, so tests must not touch the mountpoint while this owns it.
//
// The plan is JSON, from argv[2] or $FUSEKEEPER_OWNER_PLAN (managed daemons). Socket, session
// name and standby default to $FUSEKEEPER_SOCKET, $FUSEKEEPER_SESSION, $FUSEKEEPER_STANDBY.
import { openSync, closeSync, fstatSync, readdirSync, readlinkSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { connectSupervisor } from '../../../client/supervisor.ts';
import { answerInit } from '../../../kernel/handshake.ts';
import { backingOpen } from '../../../kernel/backing.ts';
import { InitFlags } from '../../../kernel/abi.ts';
import type { MountSpec } from '../../../protocol/index.ts';

export interface OwnerPlan {
  socket?: string;
  name?: string;
  mount: MountSpec;
  standby?: boolean;
  /** SDK heartbeat interval; 0 (default) sends none. */
  heartbeatMs?: number;
  /** Files registered as backing ids and journaled (after answering INIT on a fresh session). */
  backing?: string[];
  /** More files like `backing`: DIR/b0 .. DIR/b<count - 1> (sessionDir's names), for lists too long for argv. */
  backingIn?: { dir: string; count: number };
  /** Files registered as backing ids and never journaled: a crash between ioctl and report. */
  unreported?: string[];
  checkpoint?: Record<string, string>;
  /** More checkpoint keys: k0 .. k<count - 1> with values v0 .., for more than argv holds. */
  checkpointCount?: number;
  deleteKeys?: string[];
  /** On a resumed session: ADOPT every inherited id. */
  adoptAll?: boolean;
  /**
   * Afterwards: `sleep` until killed; `disconnect` from the supervisor (keeping the fd) and
   * sleep; `drain` sleep until asked to drain, then DRAINED and exit 0; `crash` exit 1 after
   * `crashAfterMs`.
   */
  then: 'sleep' | 'disconnect' | 'drain' | 'crash';
  /** MB of JS heap to hold, so that the kernel takes a while to free the process's memory when it dies. */
  ballastMb?: number;
  crashAfterMs?: number;
  /**
   * Before reporting, start a `sleep` that inherits every socket of this process (reported as
   * `socketHolder`, to be killed by the test): its control connection outlives it, and the
   * supervisor sees no hang-up when it dies.
   */
  socketOutlives?: boolean;
}

/** The line the helper prints once it owns the session. */
export interface OwnerReport {
  helper: 'owner';
  pid: number;
  name: string;
  generation: number;
  resumed: boolean;
  strategy: string;
  /** Hex of the INIT parameters handed over. */
  init: string | null;
  checkpoint: Record<string, string>;
  journal: { id: number; dev: string; ino: string }[];
  /** Ids this owner journaled, in the order of `plan.backing`. */
  ids: number[];
  unreportedIds: number[];
  adopted: { closed: number; probed: number } | null;
  /** FUSEKEEPER_STANDBY and FUSEKEEPER_SPARE as a managing supervisor set them. */
  env: { standby?: string; spare?: string };
  /** The pid of the process holding this one's sockets (plan.socketOutlives). */
  socketHolder?: number;
}

const plan = JSON.parse(process.argv[2] ?? process.env.FUSEKEEPER_OWNER_PLAN ?? 'null') as OwnerPlan;
if (!plan) throw new Error('owner helper: no plan (argv[2] or FUSEKEEPER_OWNER_PLAN)');
(globalThis as { ballast?: string[] }).ballast = Array.from({ length: plan.ballastMb ?? 0 }, () => Buffer.alloc(1 << 20, 1).toString('latin1'));
const name = plan.name ?? process.env.FUSEKEEPER_SESSION!;
const client = await connectSupervisor({
  socket: plan.socket ?? process.env.FUSEKEEPER_SOCKET!,
  clientName: `owner-helper ${name}`,
  heartbeatMs: plan.heartbeatMs ?? 0,
  reconnect: false,
});
const session = await client.acquire(name, plan.mount, { standby: plan.standby ?? process.env.FUSEKEEPER_STANDBY === '1' });
let adopted: OwnerReport['adopted'] = null;
if (session.resumed) {
  if (plan.adoptAll) adopted = await session.adopt(session.journal.map((e) => e.id));
} else {
  const agreed = await answerInit(session.fd, InitFlags.INIT_EXT | InitFlags.PASSTHROUGH);
  session.saveInit(Buffer.from(`minor=${agreed.minor};flags=${agreed.flags.toString(16)}`));
}
const register = (path: string, journal: boolean): number => {
  const fd = openSync(path, 'r');
  try {
    const id = backingOpen(session.fd, fd);
    if (journal) {
      const st = fstatSync(fd, { bigint: true });
      session.journalOpen(id, st.dev, st.ino);
    }
    return id;
  } finally {
    closeSync(fd);
  }
};
const backingFiles = [...(plan.backing ?? []), ...Array.from({ length: plan.backingIn?.count ?? 0 }, (_, i) => join(plan.backingIn!.dir, `b${i}`))];
const ids = backingFiles.map((p) => register(p, true));
const unreportedIds = (plan.unreported ?? []).map((p) => register(p, false));
for (const [k, v] of Object.entries(plan.checkpoint ?? {})) session.checkpointPut(k, Buffer.from(v));
for (let i = 0; i < (plan.checkpointCount ?? 0); i++) session.checkpointPut(`k${i}`, Buffer.from(`v${i}`));
for (const k of plan.deleteKeys ?? []) session.checkpointDelete(k);

if (plan.then === 'drain') {
  client.onDrainRequest(() => {
    client.drained();
    process.exit(0);
  });
}

const report: OwnerReport = {
  helper: 'owner',
  pid: process.pid,
  name,
  generation: session.generation,
  resumed: session.resumed,
  strategy: session.strategy,
  init: session.init ? session.init.toString('hex') : null,
  checkpoint: Object.fromEntries([...session.checkpoint].map(([k, v]) => [k, v.toString()])),
  journal: session.journal.map((e) => ({ id: e.id, dev: e.dev.toString(), ino: e.ino.toString() })),
  ids,
  unreportedIds,
  adopted,
  env: { standby: process.env.FUSEKEEPER_STANDBY, spare: process.env.FUSEKEEPER_SPARE },
};
if (plan.then === 'disconnect') client.close();
if (plan.socketOutlives) {
  const sockets = readdirSync('/proc/self/fd')
    .map(Number)
    .filter((fd) => {
      try {
        return readlinkSync(`/proc/self/fd/${fd}`).startsWith('socket:');
      } catch {
        return false; // the fd of the directory listing itself
      }
    });
  const holder = spawn('sleep', ['600'], { stdio: ['ignore', 'ignore', 'ignore', ...sockets], detached: true });
  holder.unref();
  report.socketHolder = holder.pid;
}
process.stdout.write(`${JSON.stringify(report)}\n`);

if (plan.then === 'crash') {
  setTimeout(() => process.exit(1), plan.crashAfterMs ?? 0);
} else {
  // Keep the process (and its copy of the fd) alive until killed or drained.
  setInterval(() => {}, 1 << 30);
}
