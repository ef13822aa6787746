// `fusekeeper demo`: a self-contained tour. Everything lives in one temp dir and is removed at
// the end, also on Ctrl-C: a supervisor (`fusekeeper serve` on a private socket) manages a
// mirrorfs with a warm standby, a reader process stats, opens, reads and closes a file in
// the mount every millisecond, and the demo SIGKILLs the serving daemon a few times. Each
// time the spare takes over; the reader's longest wait around the crash is its blackout.
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';
import { findMount, unmountFuse } from '../../kernel/mount.ts';
import { packageRoot } from './package-root.ts';
import { connectSupervisor, type SupervisorClient } from '../../client/supervisor.ts';
import type { SessionStatus } from '../../supervisor/session.ts';

export const DEMO_HELP = [
  'A self-contained tour, run as root. In a new temp dir it starts a supervisor',
  '(`fusekeeper serve` on a private socket) that manages fusekeeper-mirrorfs with a',
  'warm standby, mirroring a small source directory on a mountpoint. A reader process',
  'stats, opens, reads and closes a file there every millisecond. The demo then',
  'SIGKILLs the serving daemon CRASHES times, one to two seconds apart; each time the',
  'waiting spare takes the session over and the supervisor starts a new spare. It',
  'prints a progress line, then a table: per crash the killed and the new daemon, the',
  'generation, the supervisor\'s recovery time and the blackout (the reader\'s longest',
  'stat+open+read+close around the crash), and the totals (application errors should be 0).',
  'At the end, or on Ctrl-C, it stops the supervisor and daemons, unmounts, and removes',
  'the temp dir. Exit status 0 when every crash was recovered with no application error.',
];

const READER = `
const fs = require('fs');
const [file, intervalUs] = process.argv.slice(1);
let stop = false;
process.on('SIGTERM', () => { stop = true; });
const buf = Buffer.alloc(4096);
let out = '';
const flush = () => { if (out) { fs.writeSync(1, out); out = ''; } };
const tick = () => {
  const t0 = process.hrtime.bigint();
  let err = '0';
  try {
    fs.statSync(file);
    const fd = fs.openSync(file, 'r');
    fs.readSync(fd, buf, 0, buf.length, 0);
    fs.closeSync(fd);
  } catch (e) { err = e.code || 'EIO'; }
  const t1 = process.hrtime.bigint();
  out += t0 + ' ' + (t1 - t0) + ' ' + err + '\\n';
  if (out.length > 2048) flush();
  if (stop) { flush(); process.exit(0); }
  setTimeout(tick, Number(intervalUs) / 1000);
};
setInterval(flush, 50);
tick();
`;

interface Sample {
  start: bigint;
  ns: number;
  err: string;
}

interface CrashRow {
  n: number;
  killed: number;
  owner: number;
  generation: number;
  recoveryUs: number;
  at: bigint;
  blackoutMs?: number;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Calls `onLine` with each complete line of a child's output. */
function onLines(stream: Readable, onLine: (line: string) => void): void {
  let partial = '';
  stream.setEncoding('utf8').on('data', (c: string) => {
    const lines = (partial + c).split('\n');
    partial = lines.pop()!;
    for (const l of lines) onLine(l);
  });
}

export interface DemoOptions {
  crashes: number;
  out: NodeJS.WriteStream;
}

export async function runDemo(opts: DemoOptions): Promise<number> {
  const out = opts.out;
  const say = (s: string): boolean => out.write(`${s}\n`);
  if (process.getuid?.() !== 0) throw Object.assign(new Error('the demo mounts a FUSE filesystem: run it as root'), { code: 'EPERM' });
  try {
    accessSync('/dev/fuse', constants.R_OK | constants.W_OK);
  } catch {
    throw Object.assign(new Error('/dev/fuse is missing or not accessible (try `fusekeeper doctor`)'), { code: 'ENODEV' });
  }
  const root = packageRoot();
  const dir = mkdtempSync(join(tmpdir(), 'fusekeeper-demo-'));
  const source = join(dir, 'source');
  const mountpoint = join(dir, 'mnt');
  const socket = join(dir, 'control.sock');
  mkdirSync(source);
  mkdirSync(mountpoint);
  writeFileSync(join(source, 'hello.txt'), 'hello from the source directory\n');
  writeFileSync(join(source, 'data.bin'), randomBytes(1 << 20));
  writeFileSync(
    join(dir, 'config.json'),
    JSON.stringify({ daemons: [{ name: 'demo', command: [process.execPath, join(root, 'bin/fusekeeper-mirrorfs.js'), source, mountpoint], standby: true, backoffMs: 100, maxBackoffMs: 1000 }] }),
  );
  say(`fusekeeper demo: working in ${dir}`);

  let supervisor: ChildProcess | undefined;
  let reader: ChildProcess | undefined;
  let admin: SupervisorClient | undefined;
  const events: Record<string, unknown>[] = [];
  const daemonPids = new Set<number>();
  let interrupted = false;
  let wake: () => void = () => {};
  const onSignal = (): void => {
    interrupted = true;
    wake();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const check = (): void => {
    if (interrupted) throw Object.assign(new Error('interrupted; cleaned up'), { code: 'EINTR' });
  };
  /** Sleeps, waking early on Ctrl-C. */
  const pause = (ms: number): Promise<void> =>
    new Promise((r) => {
      const t = setTimeout(r, ms);
      wake = () => {
        clearTimeout(t);
        r();
      };
    });
  const waitFor = async <T>(what: string, fn: () => Promise<T | undefined> | T | undefined, timeoutMs = 30_000): Promise<T> => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      check();
      const v = await fn();
      if (v !== undefined && v !== false) return v;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; the supervisor's last lines:\n${log.split('\n').slice(-15).join('\n')}`);
      await pause(20);
    }
  };
  const session = async (): Promise<SessionStatus | undefined> => ((await admin!.status()) as { sessions: SessionStatus[] }).sessions.find((s) => s.name === 'demo');
  let log = '';
  try {
    // Own process groups: Ctrl-C reaches the demo only, which stops the rest in order.
    supervisor = spawn(process.execPath, [join(root, 'bin/fusekeeper.js'), 'serve', '--socket', socket, '--config', join(dir, 'config.json')], {
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
      env: Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^(NOTIFY_SOCKET|LISTEN_|WATCHDOG_|FUSEKEEPER_)/.test(k))),
    });
    onLines(supervisor.stdout!, (p) => {
      try {
        const e = JSON.parse(p) as Record<string, unknown>;
        events.push(e);
        if (e.event === 'daemon.started') daemonPids.add(e.child as number);
      } catch {
        // not a log line
      }
    });
    supervisor.stdout!.on('data', (c: string) => (log += c));
    supervisor.stderr!.setEncoding('utf8').on('data', (c: string) => (log += c));
    await waitFor('the supervisor to listen', () => {
      if (supervisor!.exitCode !== null) throw new Error(`fusekeeper serve exited: ${log.slice(-2000)}`);
      return events.some((e) => e.event === 'supervisor.listening') || undefined;
    });
    admin = await connectSupervisor({ socket, role: 'cli', reconnect: false, heartbeatMs: 0 });
    const first = await waitFor('mirrorfs and its spare', async () => {
      const s = await session();
      return s?.state === 'owned' && s.standbys === 1 ? s : undefined;
    });
    say(`supervisor ${supervisor.pid} mounted ${mountpoint}; mirrorfs ${first.owner!.pid} serves it, a spare waits (strategy ${first.strategy})`);

    const file = join(mountpoint, 'data.bin');
    reader = spawn(process.execPath, ['-e', READER, file, '1000'], { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    const samples: Sample[] = [];
    let readerErr = '';
    onLines(reader.stdout!, (p) => {
      const [s, ns, err] = p.split(' ');
      if (s && ns && err) samples.push({ start: BigInt(s), ns: Number(ns), err });
    });
    reader.stderr!.setEncoding('utf8').on('data', (c: string) => (readerErr += c));
    const readerExit = new Promise<number | null>((r) => reader!.once('exit', (code) => r(code)));
    await waitFor('the reader to start', () => (samples.length > 20 ? true : undefined));
    say(`reader ${reader.pid} stats, opens, reads and closes ${file} every millisecond`);
    say('');

    const tty = out.isTTY === true;
    const rows: CrashRow[] = [];
    const errorsNow = (): number => samples.filter((s) => s.err !== '0').length;
    for (let n = 1; n <= opts.crashes; n++) {
      await pause(1000 + Math.random() * 500);
      check();
      const st = (await session())!;
      const killed = st.owner!.pid;
      const at = process.hrtime.bigint();
      process.kill(killed, 'SIGKILL');
      const rec = await waitFor(`the spare to take over (crash ${n})`, () => events.find((e) => e.event === 'session.recovered' && e.generation === st.generation + 1));
      rows.push({ n, killed, owner: rec.owner as number, generation: rec.generation as number, recoveryUs: rec.durationUs as number, at });
      const line = `crash ${n}/${opts.crashes}: killed mirrorfs ${killed}; spare ${String(rec.owner)} took over as generation ${String(rec.generation)} (supervisor recovery ${((rec.durationUs as number) / 1000).toFixed(2)} ms); reader: ${samples.length} reads, ${errorsNow()} errors`;
      out.write(tty ? `\r\x1b[2K${line}` : `${line}\n`);
      await waitFor('a new spare', async () => ((await session())?.standbys === 1 ? true : undefined));
    }
    await pause(1000);
    check();
    if (tty) out.write('\n');
    reader.kill('SIGTERM');
    await readerExit;
    const end = process.hrtime.bigint();
    for (const [i, r] of rows.entries()) {
      const until = i + 1 < rows.length ? rows[i + 1]!.at : end;
      let worst = 0;
      for (const s of samples) if (s.start >= r.at - 20_000_000n && s.start < until && s.start <= r.at + 1_000_000_000n) worst = Math.max(worst, s.ns);
      r.blackoutMs = worst / 1e6;
    }
    const errors = errorsNow();
    const finalGen = (await session())!.generation;
    say('');
    const header = ['CRASH', 'KILLED', 'NEW OWNER', 'GENERATION', 'SUPERVISOR RECOVERY', 'BLACKOUT'];
    const table = rows.map((r) => [String(r.n), String(r.killed), String(r.owner), String(r.generation), `${(r.recoveryUs / 1000).toFixed(2)} ms`, `${r.blackoutMs!.toFixed(1)} ms`]);
    const widths = header.map((h, i) => Math.max(h.length, ...table.map((t) => t[i]!.length)));
    for (const r of [header, ...table]) say(r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd());
    say('');
    const recoveries = finalGen - first.generation;
    say(`crashes ${rows.length}, recoveries ${recoveries}, application errors ${errors} (reader: ${samples.length} stat+open+read+close, longest wait ${(Math.max(...samples.map((s) => s.ns)) / 1e6).toFixed(1)} ms)`);
    if (errors > 0) say(`reader errors: ${[...new Set(samples.filter((s) => s.err !== '0').map((s) => s.err))].join(', ')} ${readerErr}`);
    return errors === 0 && recoveries === rows.length ? 0 : 1;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await cleanup();
    rmSync(dir, { recursive: true, force: true });
    say(`cleaned up: supervisor and daemons stopped, ${mountpoint} unmounted, ${dir} removed`);
  }

  async function cleanup(): Promise<void> {
    admin?.close();
    if (reader && reader.exitCode === null && reader.signalCode === null) reader.kill('SIGKILL');
    if (supervisor && supervisor.exitCode === null && supervisor.signalCode === null) {
      // SIGTERM: it stops its daemons (the spare and the owner) and releases the session.
      const exited = new Promise((r) => supervisor!.once('exit', r));
      supervisor.kill('SIGTERM');
      const t = setTimeout(() => supervisor!.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(t);
    }
    for (const pid of daemonPids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone, as it should be
      }
    }
    if (findMount(mountpoint)) {
      try {
        unmountFuse(mountpoint);
      } catch {
        unmountFuse(mountpoint, true);
      }
    }
    await sleep(10);
  }
}
