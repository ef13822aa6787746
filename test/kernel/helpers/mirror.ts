// mirrorfs as a child process on temp dirs, the way a user runs it: `fusekeeper-mirrorfs
// SOURCE MOUNTPOINT`. Starts it, waits until the mount is there and answers, reads its
// counters, stops it with SIGTERM and checks that nothing stays mounted. Runs the compiled
// CLI (bin/ -> dist/): `npm test` builds it first; alone, build with
// `npm run prepare`.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, unlinkSync, promises as fsp } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { findMount, unmountFuse } from '../../../kernel/mount.ts';

export const MIRRORFS_CLI = new URL('../../../bin/fusekeeper-mirrorfs.js', import.meta.url).pathname;
const COMPILED = new URL('../../../dist/bundle/fusekeeper-mirrorfs.mjs', import.meta.url).pathname;

/** The daemon's counters, as `--stats FILE` writes them. */
export interface MirrorStatsSnapshot {
  reads: number;
  writes: number;
  opens: number;
  passthroughOpens: number;
  requests: number;
  nodes: number;
  openHandles: number;
}

export interface MirrorOptions {
  /** Mirror this directory instead of a fresh empty `<dir>/src`. */
  source?: string;
  passthrough?: boolean;
  /** More CLI arguments (e.g. `--debug`). */
  args?: string[];
  /** How long to wait for the mount to appear and answer. Default 10 s. */
  timeoutMs?: number;
}

export interface MirrorProcess {
  /** The temp dir holding `src` (unless given), `mnt` and the stats file. */
  dir: string;
  source: string;
  mountpoint: string;
  pid: number;
  child: ChildProcess;
  /** Everything the daemon wrote to stderr so far. */
  stderr(): string;
  /** Asks for the counters (SIGUSR2) and reads them. */
  stats(): Promise<MirrorStatsSnapshot>;
  /** The counters written at exit (after `stop`). */
  finalStats(): MirrorStatsSnapshot;
  /**
   * SIGTERM, waits for the exit, and throws unless the daemon exited 0 and nothing is left
   * mounted on the mountpoint.
   */
  stop(): Promise<void>;
  /** Whatever state things are in: kills the daemon, lazily unmounts, removes the temp dir. Idempotent. */
  cleanup(): Promise<void>;
}

/** Whether anything is mounted on `path` (per /proc/self/mountinfo). */
export function isMounted(path: string): boolean {
  return findMount(path) !== undefined;
}

function exited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null;
}

/** Resolves once `child` has exited, or false after `ms`. */
async function waitExit(child: ChildProcess, ms: number): Promise<boolean> {
  if (exited(child)) return true;
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      child.off('exit', onExit);
      resolve(false);
    }, ms);
    const onExit = (): void => {
      clearTimeout(timer);
      resolve(true);
    };
    child.once('exit', onExit);
  });
}

/** Starts mirrorfs on a fresh temp dir and resolves once the mount answers. */
export async function startMirror(opts: MirrorOptions = {}): Promise<MirrorProcess> {
  if (!existsSync(COMPILED)) throw new Error(`${COMPILED} is missing: build with \`npm run prepare\` (npm test does)`);
  const dir = mkdtempSync(join(tmpdir(), 'fusekeeper-mirror-'));
  const source = opts.source ?? join(dir, 'src');
  const mountpoint = join(dir, 'mnt');
  const statsFile = join(dir, 'stats.json');
  if (!opts.source) mkdirSync(source);
  mkdirSync(mountpoint);
  const args = [MIRRORFS_CLI, source, mountpoint, '--stats', statsFile, ...(opts.passthrough === false ? ['--no-passthrough'] : []), ...(opts.args ?? [])];
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (s: string) => (stderr += s));
  const exitedPromise = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let cleaned = false;

  const readStats = (): MirrorStatsSnapshot => JSON.parse(readFileSync(statsFile, 'utf8')) as MirrorStatsSnapshot;

  const proc: MirrorProcess = {
    dir,
    source,
    mountpoint,
    pid: child.pid ?? -1,
    child,
    stderr: () => stderr,
    async stats() {
      if (exited(child)) throw new Error(`mirrorfs exited (${child.exitCode ?? child.signalCode}); stderr:\n${stderr}`);
      try {
        unlinkSync(statsFile);
      } catch {
        // not written yet
      }
      child.kill('SIGUSR2');
      const deadline = Date.now() + 5000;
      for (;;) {
        try {
          return readStats();
        } catch (err) {
          // not there yet, or caught half-written
          if (Date.now() > deadline) throw new Error(`mirrorfs wrote no stats within 5 s (${String(err)}); stderr:\n${stderr}`);
        }
        await sleep(10);
      }
    },
    finalStats: readStats,
    async stop() {
      if (!exited(child)) child.kill('SIGTERM');
      if (!(await waitExit(child, 10_000))) {
        child.kill('SIGKILL');
        await exitedPromise;
        throw new Error(`mirrorfs did not exit within 10 s of SIGTERM; stderr:\n${stderr}`);
      }
      if (child.exitCode !== 0) throw new Error(`mirrorfs exited with ${child.exitCode ?? child.signalCode}; stderr:\n${stderr}`);
      if (isMounted(mountpoint)) throw new Error(`mirrorfs exited 0 but ${mountpoint} is still mounted`);
    },
    async cleanup() {
      if (cleaned) return;
      cleaned = true;
      if (!exited(child)) {
        child.kill('SIGTERM');
        if (!(await waitExit(child, 5000))) {
          child.kill('SIGKILL');
          await exitedPromise;
        }
      }
      // Last resort: the daemon died without unmounting. Only detach a FUSE mount here.
      for (let i = 0; i < 5 && isMounted(mountpoint); i++) unmountFuse(mountpoint, true);
      if (isMounted(mountpoint)) throw new Error(`cannot unmount ${mountpoint}; leaving ${dir} in place`);
      rmSync(dir, { recursive: true, force: true });
    },
  };

  try {
    const timeoutMs = opts.timeoutMs ?? 10_000;
    const deadline = Date.now() + timeoutMs;
    while (!isMounted(mountpoint)) {
      if (exited(child)) throw new Error(`mirrorfs exited (${child.exitCode ?? child.signalCode}) before mounting; stderr:\n${stderr}`);
      if (Date.now() > deadline) throw new Error(`mirrorfs did not mount ${mountpoint} within ${timeoutMs} ms; stderr:\n${stderr}`);
      await sleep(20);
    }
    // Mounted; the first access waits for the INIT reply (ENOTCONN if the daemon dies).
    const timer = new AbortController();
    const answered = await Promise.race([
      fsp.stat(mountpoint).then(() => true),
      sleep(Math.max(0, deadline - Date.now()), false, { signal: timer.signal }),
    ]).finally(() => timer.abort());
    if (!answered) throw new Error(`mirrorfs mounted ${mountpoint} but does not answer; stderr:\n${stderr}`);
    return proc;
  } catch (err) {
    await proc.cleanup();
    throw err;
  }
}
