// The hand-over itself: an owner process is SIGKILLed while a standby waits in ACQUIRE; how
// long until the standby holds the /dev/fuse fd again. Real processes and sockets:
// `fusekeeper serve` (compiled CLI) as a child, the owner a child process
// (drivers/handover-owner.ts: fresh session, passthrough INIT answered, JOURNAL entries of
// real backing ids on distinct backing files), the standby this process, speaking raw frames
// so nothing but the socket stands between the supervisor's reply and the clock.
//
// Per round: fresh session, owner journals N ids, the standby's ACQUIRE waits (checked in
// status), then t0 = just before pidfd_send_signal(SIGKILL), blocking poll(2) on the
// standby socket, t1 = ACQUIRED (with its fd) received. What lies between: the kernel
// tearing the owner down, the supervisor seeing the EOF/pidfd, fencing (waiting for the exit
// to be final), probing above the journal, FUSE_NOTIFY_RESEND, encoding the state sequence,
// sendmsg. The rest of the sequence (INIT_PARAMS, the checkpoint, N journal entries,
// STATE_END) is timed separately. The supervisor's own figure, lastRecovery.durationUs, runs
// from the start of its recovery to the sequence being sent. Then RELEASE, and the next round.
// Run: npm run bench -- handover   (root, /dev/fuse; `npm run prepare` first)
import { spawn } from 'node:child_process';
import { mkdirSync, writeFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { loadavg } from 'node:os';
import { closeAll, closeFd, connectSocket, createSocket, pidfdOpen, pidfdSendSignal, receiveMessage, sendMessage, NativeError } from '../native/index.ts';
import { sys, lastErrno } from '../native/libc.ts';
import { decodeMessage, encodeMessage, MAX_MESSAGE, type ControlMessage } from '../protocol/index.ts';
import { connectSupervisor, type SupervisorClient } from '../client/supervisor.ts';
import type { SessionStatus } from '../supervisor/session.ts';
import { startSupervisor, mountSpec, waitUntil, ROOT } from '../test/kernel/helpers/supervisor.ts';
import { summarizeRounded, writeResult } from './lib.ts';

const ROUNDS = Number(process.env.HANDOVER_ROUNDS ?? 50);
const JOURNAL_SIZES = [0, 1000, 10_000];
const DRIVER = join(ROOT, 'bench/drivers/handover-owner.ts');
const POLLIN = 0x001;

/** Blocks the thread in poll(2) until `fd` is readable; throws after `timeoutMs`. */
function waitReadableSync(fd: number, timeoutMs: number): void {
  const pfd = Buffer.alloc(8);
  pfd.writeInt32LE(fd, 0);
  pfd.writeInt16LE(POLLIN, 4);
  for (;;) {
    const n = sys.poll(pfd, 1, timeoutMs) as number;
    if (n > 0) return;
    if (n === 0) throw new Error(`nothing to read within ${timeoutMs} ms`);
    if (lastErrno() !== 4 /* EINTR */) throw new NativeError('poll', lastErrno());
  }
}

/**
 * Blocks until the standby socket is readable, noting when the owner's pidfd turned readable
 * (the owner has exited) if that came first: the time of that, or null.
 */
function waitHandover(standby: number, pidfd: number): bigint | null {
  const pfd = Buffer.alloc(16);
  pfd.writeInt32LE(standby, 0);
  pfd.writeInt16LE(POLLIN, 4);
  pfd.writeInt32LE(pidfd, 8);
  pfd.writeInt16LE(POLLIN, 12);
  let exitAt: bigint | null = null;
  for (;;) {
    pfd.writeInt16LE(0, 6);
    pfd.writeInt16LE(0, 14);
    // A pidfd stays readable once the process exited: stop watching it then.
    const n = sys.poll(pfd, exitAt === null ? 2 : 1, 30_000) as number;
    const now = process.hrtime.bigint();
    if (n === 0) throw new Error('no hand-over within 30 s');
    if (n < 0) {
      if (lastErrno() === 4 /* EINTR */) continue;
      throw new NativeError('poll', lastErrno());
    }
    if (exitAt === null && pfd.readInt16LE(14) !== 0) exitAt = now;
    if (pfd.readInt16LE(6) !== 0) return exitAt;
  }
}

/** Receives one frame, blocking: the message, its fds (the caller's), and when it arrived. */
function receive(fd: number): { msg: ControlMessage; fds: number[]; at: bigint } {
  for (;;) {
    waitReadableSync(fd, 30_000);
    const r = receiveMessage(fd, { maxBytes: MAX_MESSAGE, maxFds: 4 });
    const at = process.hrtime.bigint();
    if (r.kind === 'again') continue;
    if (r.kind === 'eof') throw new Error('the supervisor closed the standby connection');
    const d = decodeMessage(r.data, r.fds.length, { from: 'supervisor' });
    if (!d.ok) {
      closeAll(r.fds);
      throw new Error(`malformed frame from the supervisor: ${d.error.message}`);
    }
    return { msg: d.message, fds: r.fds, at };
  }
}

function send(fd: number, msg: ControlMessage, requestId: number): void {
  if (sendMessage(fd, { data: encodeMessage(msg, requestId), fds: [] }) === null) throw new Error('control socket full');
}

interface Round {
  handoverUs: number;
  /** Kill -> the owner's pidfd readable here (the process is gone), when seen before ACQUIRED. */
  ownerExitUs: number | null;
  stateUs: number;
  supervisorUs: number;
}

async function round(admin: SupervisorClient, socket: string, dir: string, files: string, n: number, i: number): Promise<Round> {
  const name = `handover-${n}-${i}`;
  const mountpoint = join(dir, `mnt-${n}`);
  const spec = mountSpec(mountpoint, { fsName: 'fusekeeper-bench', subtype: 'handover' });
  const owner = spawn(process.execPath, ['--import', 'tsx', DRIVER, socket, name, JSON.stringify(spec), files, String(n)], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = new Promise<void>((r) => owner.once('exit', () => r()));
  let standby = -1;
  let pidfd = -1;
  try {
    await new Promise<void>((resolve, reject) => {
      let out = '';
      owner.stdout.setEncoding('utf8').on('data', (c: string) => {
        out += c;
        if (out.includes('ready\n')) resolve();
      });
      owner.once('exit', (code, signal) => reject(new Error(`owner exited (${signal ?? code}) before it was ready`)));
    });
    pidfd = pidfdOpen(owner.pid!);
    const sessionStatus = async (): Promise<SessionStatus | undefined> => ((await admin.status()) as { sessions: SessionStatus[] }).sessions.find((s) => s.name === name);
    await waitUntil(async () => (await sessionStatus())?.liveBackingIds === n, `the supervisor to hold ${n} journal entries`, 30_000, 5);

    standby = createSocket('seqpacket');
    connectSocket(standby, socket);
    send(standby, { type: 'hello', minVersion: 1, maxVersion: 1, role: 'daemon', clientName: 'handover-bench standby' }, 1);
    if (receive(standby).msg.type !== 'hello_ok') throw new Error('HELLO refused');
    send(standby, { type: 'acquire', name, mount: spec, standby: true }, 2);
    await waitUntil(async () => (await sessionStatus())?.standbys === 1, 'the standby to wait', 10_000, 5);

    const t0 = process.hrtime.bigint();
    pidfdSendSignal(pidfd, 'SIGKILL');
    const exitAt = waitHandover(standby, pidfd);
    const first = receive(standby);
    if (first.msg.type !== 'acquired' || first.fds.length !== 1) throw new Error(`expected ACQUIRED with the fd, got ${first.msg.type}`);
    closeAll(first.fds);
    if (first.msg.generation !== 2 || !first.msg.resumed) throw new Error(`unexpected ${JSON.stringify(first.msg)}`);
    let last = first;
    while (last.msg.type !== 'state_end') {
      last = receive(standby);
      closeAll(last.fds);
    }
    if (last.msg.type !== 'state_end' || last.msg.journalCount !== n || !last.msg.initParams || last.msg.checkpointCount !== 1) throw new Error(`unexpected state: ${JSON.stringify(last.msg)}`);
    const st = await sessionStatus();
    if (!st?.lastRecovery || st.generation !== 2) throw new Error(`unexpected status ${JSON.stringify(st)}`);
    await admin.release(name);
    return {
      handoverUs: Number(first.at - t0) / 1000,
      // The standby's reply cannot come before the owner's exit (the fence waits for it).
      ownerExitUs: exitAt === null ? null : Number(exitAt - t0) / 1000,
      stateUs: Number(last.at - first.at) / 1000,
      supervisorUs: st.lastRecovery.durationUs,
    };
  } finally {
    if (owner.exitCode === null && owner.signalCode === null) owner.kill('SIGKILL');
    await exited;
    if (pidfd >= 0) closeFd(pidfd);
    if (standby >= 0) closeFd(standby);
  }
}

const stats = (xs: number[]): Record<string, number> => summarizeRounded(xs, 1);

export async function run(): Promise<void> {
  const sup = await startSupervisor();
  const admin = await connectSupervisor({ socket: sup.socket, role: 'cli', reconnect: false, heartbeatMs: 0 });
  const figures: Record<string, unknown> = {
    rounds: ROUNDS,
    unit: 'microseconds',
    handover: 'pidfd_send_signal(SIGKILL) of the owner -> the waiting standby has received ACQUIRED with the fd (this process, blocking poll)',
    ownerExit: 'pidfd_send_signal(SIGKILL) -> the owner pidfd readable in this process (the kernel has torn the process down); rounds where that was seen before ACQUIRED',
    exitToAcquired: 'owner pidfd readable -> ACQUIRED received: the supervisor noticing, recovering and sending, plus two wake-ups',
    stateSequence: 'ACQUIRED received -> STATE_END received (INIT_PARAMS, 1 checkpoint entry of 4 KiB, the journal)',
    supervisorRecovery: "the supervisor's lastRecovery.durationUs: recovery start (owner seen gone) -> state sequence sent",
  };
  figures.loadAverageBefore = loadavg().map((x) => Math.round(x * 100) / 100);
  try {
    for (const n of JOURNAL_SIZES) {
      const files = join(sup.dir, `backing-${n}`);
      mkdirSync(files);
      mkdirSync(join(sup.dir, `mnt-${n}`));
      for (let i = 0; i < n; i++) writeFileSync(join(files, String(i)), 'x');
      const rounds: Round[] = [];
      await round(admin, sup.socket, sup.dir, files, n, -1); // warm-up, not counted
      for (let i = 0; i < ROUNDS; i++) rounds.push(await round(admin, sup.socket, sup.dir, files, n, i));
      const exits = rounds.filter((r) => r.ownerExitUs !== null);
      const entry = {
        handoverUs: stats(rounds.map((r) => r.handoverUs)),
        ownerExitUs: stats(exits.map((r) => r.ownerExitUs!)),
        exitToAcquiredUs: stats(exits.map((r) => r.handoverUs - r.ownerExitUs!)),
        stateSequenceUs: stats(rounds.map((r) => r.stateUs)),
        supervisorRecoveryUs: stats(rounds.map((r) => r.supervisorUs)),
      };
      figures[`journal${n}`] = entry;
      console.log(`journal of ${n} entries, ${ROUNDS} rounds (µs):`);
      console.table(entry);
      rmSync(files, { recursive: true, force: true });
    }
  } finally {
    admin.close();
    await sup.cleanup();
  }
  figures.loadAverageAfter = loadavg().map((x) => Math.round(x * 100) / 100);
  writeResult('handover', figures);
}
