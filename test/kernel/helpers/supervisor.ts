// The supervisor and its peers as real processes, for supervisor.test.ts and
// bench/handover.ts: `fusekeeper serve` on a socket in a temp dir (the compiled CLI, like a
// user runs it: build first with `npm run prepare`), owner helpers as children, the CLI, and
// wait-until polling. Everything started here is killed by pid, never by name.
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findMount, parseMountInfo, unmountFuse } from '../../../kernel/mount.ts';
import type { MountSpec } from '../../../protocol/index.ts';
import { cpuCgroupV1 } from '../../../supervisor/realtime.ts';
import { vmKernel } from '../../vm/guest/env.ts';
import type { OwnerPlan, OwnerReport } from './owner.ts';

export const ROOT = new URL('../../../', import.meta.url).pathname.replace(/\/$/, '');
/** The CLI under test; FUSEKEEPER_TEST_CLI points the tests at another build of it. */
export const CLI = process.env.FUSEKEEPER_TEST_CLI ?? join(ROOT, 'bin/fusekeeper.js');
export const OWNER = join(ROOT, 'test/kernel/helpers/owner.ts');
export const FOREIGN_PEER = join(ROOT, 'test/kernel/helpers/foreign-peer.ts');

/**
 * How long a child the tests start may take to get ready or print a line. The VM tier
 * emulates the CPU (TCG): Node starts 10-15x slower there, and tsx takes 9 s to load on a
 * quiet host.
 */
export const CHILD_READY_MS = vmKernel ? 60_000 : 20_000;

/** Polls `check` until it returns a truthy value; throws after `timeoutMs` saying what was awaited. */
export async function waitUntil<T>(check: () => T | Promise<T>, what: string, timeoutMs = 10_000, everyMs = 10): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v) return v as NonNullable<T>;
      last = v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** A temp dir (world-traversable, so peers of other uids reach the socket) with `mnt`. */
export function tempDir(prefix = 'fusekeeper-sup-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  chmodSync(dir, 0o755);
  return dir;
}

/** A mount spec for `mountpoint` as root, like a daemon would ask for it. */
export function mountSpec(mountpoint: string, overrides: Partial<MountSpec> = {}): MountSpec {
  return { mountpoint, fsName: 'fusekeeper-test', subtype: 'suptest', rootMode: 0o40755, uid: 0, gid: 0, allowOther: false, defaultPermissions: false, readOnly: false, maxRead: 0, ...overrides };
}

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

function exitOf(child: ChildProcess): Promise<Exit> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve({ code: child.exitCode, signal: child.signalCode });
  return new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
}

/**
 * Lines of a child's output stream, and a way to wait for one. Each line is parsed as JSON at
 * most once: the benchmarks look at the supervisor's log in every round, and parsing all of it
 * again each time took the harness milliseconds of CPU per crash by round 60, inside the
 * blackout it measures.
 */
class Lines {
  readonly all: string[] = [];
  #partial = '';
  #waiters: (() => void)[] = [];
  readonly #parsed: (LogEvent | undefined)[] = [];
  readonly #events: LogEvent[] = [];
  #eventsUpTo = 0;
  push(chunk: string): void {
    const parts = (this.#partial + chunk).split('\n');
    this.#partial = parts.pop()!;
    if (parts.length === 0) return;
    this.all.push(...parts);
    for (const w of this.#waiters.splice(0)) w();
  }
  /** Line `i` parsed as a JSON object, or undefined. */
  parsed(i: number): LogEvent | undefined {
    while (this.#parsed.length <= i && this.#parsed.length < this.all.length) this.#parsed.push(parseJson(this.all[this.#parsed.length]!));
    return this.#parsed[i];
  }
  /** Every JSON line so far, in order (the same array, grown). */
  events(): LogEvent[] {
    for (; this.#eventsUpTo < this.all.length; this.#eventsUpTo++) {
      const e = this.parsed(this.#eventsUpTo);
      if (e) this.#events.push(e);
    }
    return this.#events;
  }
  /** Resolves with the first line from line `from` on that `match` accepts. */
  async find<T>(match: (line: string, i: number) => T | undefined, what: string, timeoutMs: number, from = 0): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    let seen = from;
    for (;;) {
      for (; seen < this.all.length; seen++) {
        const v = match(this.all[seen]!, seen);
        if (v !== undefined) return v;
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; output so far:\n${this.all.slice(-30).join('\n')}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.#waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }
}

function parseJson(line: string): Record<string, unknown> | undefined {
  if (!line.startsWith('{')) return undefined;
  try {
    return JSON.parse(line) as Record<string, unknown>;
  } catch {
    return undefined;
  }
}

/** One structured log line of the supervisor (pino). */
export type LogEvent = Record<string, unknown> & { event?: string; time?: number };

export interface SupervisorProcess {
  dir: string;
  socket: string;
  pid: number;
  child: ChildProcess;
  /** Every JSON line the supervisor (and the daemons it started, which inherit its stdout) printed. */
  events(): LogEvent[];
  /** How many lines it has printed so far: a `from` for waitEvent. */
  lineCount(): number;
  /** Waits for a log event named `event` (and matching `where`), from line `from` (the start) on. */
  waitEvent(event: string, where?: (e: LogEvent) => boolean, timeoutMs?: number, from?: number): Promise<LogEvent>;
  stderr(): string;
  /** The supervisor's fds and their targets (/proc/<pid>/fd), runtime-internal ones excepted. */
  fds(): Map<number, string>;
  /** SIGTERM and wait for the exit. */
  stop(): Promise<Exit>;
  /** Kills it if still running, lazily unmounts anything left under `dir`, removes `dir`. */
  cleanup(): Promise<void>;
}

const RUNTIME_FD = /^anon_inode:\[(eventpoll|eventfd|timerfd|io_uring)\]$/;

/** `fd -> target` of process `pid`, runtime-internal fds excepted. */
export function processFds(pid: number): Map<number, string> {
  const fds = new Map<number, string>();
  for (const name of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const target = readlinkSync(`/proc/${pid}/fd/${name}`);
      if (!RUNTIME_FD.test(target)) fds.set(Number(name), target);
    } catch {
      // closed meanwhile
    }
  }
  return fds;
}

/** Lazily unmounts every mount under `dir` (innermost first). */
export function unmountUnder(dir: string): string[] {
  const mine = parseMountInfo(readFileSync('/proc/self/mountinfo', 'utf8'))
    .map((m) => m.mountpoint)
    .filter((p) => p.startsWith(`${dir}/`))
    .sort((a, b) => b.length - a.length);
  for (const p of mine) {
    try {
      unmountFuse(p, true);
    } catch {
      // already gone
    }
  }
  return mine;
}


/**
 * This process's environment without what would make a test supervisor (or a daemon) talk to
 * a real systemd, take fds it was not meant to, or save state somewhere shared, and without
 * NODE_EXTRA_CA_CERTS: a service started by systemd has none of a login shell's variables,
 * and this one costs every Node process started with it a read and parse of the CA bundle at
 * start-up (Node 20 loads it eagerly: `node -e 0` took 75 instead of 34 ms here), which a
 * cold restart's blackout would then include.
 */
export function hermeticEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  for (const k of Object.keys(env)) {
    if (/^(NOTIFY_SOCKET|LISTEN_(PID|FDS|FDNAMES)|WATCHDOG_(PID|USEC)|RUNTIME_DIRECTORY|FUSEKEEPER_.*|NODE_EXTRA_CA_CERTS)$/.test(k)) delete env[k];
  }
  return env;
}

/**
 * Starts `fusekeeper serve --socket <dir>/control.sock [--config <dir>/config.json]` and
 * waits until it listens. `config` is written as JSON (without `socket`: the flag sets it).
 * `wrapper` (e.g. setpriv and its options) runs node.
 */
export async function startSupervisor(opts: { config?: Record<string, unknown>; dir?: string; env?: Record<string, string>; wrapper?: string[] } = {}): Promise<SupervisorProcess> {
  const dir = opts.dir ?? tempDir();
  const socket = join(dir, 'control.sock');
  // The node flag bin/fusekeeper.js's shebang gives the supervisor (spawned through node here).
  const args = ['--max-semi-space-size=1', CLI, 'serve', '--socket', socket];
  if (opts.config) {
    const file = join(dir, 'config.json');
    writeFileSync(file, JSON.stringify(opts.config));
    args.push('--config', file);
  }
  const [cmd, ...cmdArgs] = [...(opts.wrapper ?? []), process.execPath, ...args];
  const child = spawn(cmd!, cmdArgs, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: { ...hermeticEnv(), ...opts.env } });
  const out = new Lines();
  let err = '';
  child.stdout!.setEncoding('utf8').on('data', (c: string) => out.push(c));
  child.stderr!.setEncoding('utf8').on('data', (c: string) => (err += c));
  const exit = exitOf(child);
  const sup: SupervisorProcess = {
    dir,
    socket,
    pid: child.pid!,
    child,
    events: () => out.events(),
    lineCount: () => out.all.length,
    waitEvent: (event, where = () => true, timeoutMs = 15_000, from = 0) =>
      out.find(
        (_, i) => {
          const e = out.parsed(i);
          return e && e.event === event && where(e) ? e : undefined;
        },
        `supervisor log event ${event}`,
        timeoutMs,
        from,
      ),
    stderr: () => err,
    fds: () => processFds(child.pid!),
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      return exit;
    },
    async cleanup() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const t = setTimeout(() => child.kill('SIGKILL'), 5000);
        await exit;
        clearTimeout(t);
      }
      unmountUnder(dir);
      if (!opts.dir) rmSync(dir, { recursive: true, force: true });
    },
  };
  const started = await Promise.race([
    sup.waitEvent('supervisor.listening', undefined, 30_000).then(() => true),
    exit.then(() => false),
  ]);
  if (!started) throw new Error(`fusekeeper serve exited before listening: ${err}${out.all.join('\n')}`);
  return sup;
}

export interface OwnerProcess {
  child: ChildProcess;
  pid: number;
  /** Resolves with the helper's JSON line once it owns the session. */
  report: Promise<OwnerReport>;
  exit: Promise<Exit>;
  stderr(): string;
  /** Sends `signal` unless it has exited; resolves once it has, for SIGKILL. */
  kill(signal?: NodeJS.Signals): Promise<Exit>;
}

/** Starts test/kernel/helpers/owner.ts with `plan`. */
export function spawnOwner(plan: OwnerPlan): OwnerProcess {
  const child = spawn(process.execPath, ['--import', 'tsx', OWNER, JSON.stringify(plan)], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  const out = new Lines();
  let err = '';
  child.stdout!.setEncoding('utf8').on('data', (c: string) => out.push(c));
  child.stderr!.setEncoding('utf8').on('data', (c: string) => (err += c));
  const exit = exitOf(child);
  const report = Promise.race([
    out.find((l) => parseJson(l) as OwnerReport | undefined, 'the owner helper to acquire', 30_000),
    exit.then((e) => {
      throw new Error(`owner helper exited (${e.signal ?? e.code}) before acquiring: ${err}`);
    }),
  ]);
  report.catch(() => {});
  return {
    child,
    pid: child.pid!,
    report,
    exit,
    stderr: () => err,
    async kill(signal = 'SIGKILL') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exit;
    },
  };
}

/** Runs the compiled CLI; resolves with its status and output (never rejects on a non-zero exit). */
export function runCli(args: string[], opts: { timeoutMs?: number } = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`fusekeeper ${args.join(' ')} did not finish within ${opts.timeoutMs ?? 30_000} ms: ${stdout}${stderr}`));
    }, opts.timeoutMs ?? 30_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** A session dir `<parent>/<name>` with `mnt` and, optionally, backing files `b0..bn-1`. */
export function sessionDir(parent: string, name: string, backingFiles = 0): { dir: string; mountpoint: string; files: string[] } {
  const dir = join(parent, name);
  mkdirSync(join(dir, 'mnt'), { recursive: true });
  const files = Array.from({ length: backingFiles }, (_, i) => {
    const f = join(dir, `b${i}`);
    writeFileSync(f, `backing ${i}\n`);
    return f;
  });
  return { dir, mountpoint: join(dir, 'mnt'), files };
}

export { findMount };

/** Scheduling policy of thread `tid` (fields 40 and 41 of its /proc stat): 0 SCHED_OTHER, 1 SCHED_FIFO, 5 SCHED_IDLE. */
export function threadPolicy(tid: number): { policy: number; rtPriority: number } {
  const stat = readFileSync(`/proc/${tid}/stat`, 'latin1');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return { policy: Number(fields[38]), rtPriority: Number(fields[37]) };
}

/**
 * On a kernel with CONFIG_RT_GROUP_SCHED (cgroup v1 `cpu.rt_runtime_us`), a cgroup without
 * real-time runtime refuses SCHED_FIFO even to root. Sets `us` per second on each cgroup from
 * the top down to `path` (in the cpu hierarchy; by default this process's cgroup) where it
 * is 0, creating the missing ones (systemd then uses them as they are). Returns the files it
 * changed and what restores them and removes what it created (nothing where the kernel has
 * no such limit).
 */
export function grantRealtimeRuntime(us = 500_000, path?: string): { files: string[]; restore(): void } {
  const none = { files: [], restore: () => {} };
  let cgroups: string;
  try {
    cgroups = readFileSync('/proc/self/cgroup', 'utf8');
  } catch (err) {
    // A kernel without CONFIG_CGROUPS (the VM tier's) has no such file, and no such limit.
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return none;
    throw err;
  }
  const own = cpuCgroupV1(cgroups);
  if (!own || !existsSync(join(own.hierarchy, 'cpu.rt_runtime_us'))) return none;
  const changed: string[] = [];
  const created: string[] = [];
  let dir = own.hierarchy;
  for (const part of (path ?? own.path).split('/').filter(Boolean)) {
    dir = join(dir, part);
    if (!existsSync(dir)) {
      mkdirSync(dir);
      created.push(dir);
    }
    const file = join(dir, 'cpu.rt_runtime_us');
    if (readFileSync(file, 'utf8').trim() !== '0') continue;
    writeFileSync(file, String(us));
    changed.push(file);
  }
  return {
    files: changed,
    restore: () => {
      for (const file of [...changed].reverse()) if (existsSync(file)) writeFileSync(file, '0');
      for (const d of created.reverse()) {
        try {
          rmdirSync(d);
        } catch {
          // gone already (systemd removes the cgroups it no longer uses)
        }
      }
    },
  };
}
