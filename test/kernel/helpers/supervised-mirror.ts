// `fusekeeper-mirrorfs SOURCE MOUNTPOINT --socket PATH` as a child process (the compiled CLI,
// like a user runs it): started, waited for until it serves, killed by pid. It never
// unmounts; tests release the session with `fusekeeper release`.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { MIRRORFS_CLI } from './mirror.ts';
import { CHILD_READY_MS } from './supervisor.ts';

const COMPILED = new URL('../../../dist/bundle/fusekeeper-mirrorfs.mjs', import.meta.url).pathname;

export interface SupervisedMirror {
  pid: number;
  child: ChildProcess;
  stderr(): string;
  /** Resolves with the exit (code or signal). */
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Sends `signal` (default SIGKILL) unless it has exited, and waits for the exit. */
  kill(signal?: NodeJS.Signals): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/**
 * Starts a supervised mirrorfs and resolves once it serves (its `mirrorfs.ready` line);
 * throws if it exits first or takes longer than `timeoutMs`.
 */
export async function startSupervisedMirror(opts: { source: string; mountpoint: string; socket: string; env?: Record<string, string>; args?: string[]; timeoutMs?: number }): Promise<SupervisedMirror> {
  if (!existsSync(COMPILED)) throw new Error(`${COMPILED} is missing: build with \`npm run prepare\` (npm test does)`);
  const child = spawn(process.execPath, [MIRRORFS_CLI, opts.source, opts.mountpoint, '--socket', opts.socket, ...(opts.args ?? [])], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, ...opts.env },
  });
  let stderr = '';
  child.stderr!.setEncoding('utf8');
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  const ready = new Promise<boolean>((resolve) => {
    child.stderr!.on('data', (s: string) => {
      stderr += s;
      if (stderr.includes('"event":"mirrorfs.ready"')) resolve(true);
    });
    void exit.then(() => resolve(false));
  });
  const m: SupervisedMirror = {
    pid: child.pid!,
    child,
    stderr: () => stderr,
    exit,
    async kill(signal = 'SIGKILL') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exit;
    },
  };
  const timeoutMs = opts.timeoutMs ?? CHILD_READY_MS;
  let timer: NodeJS.Timeout | undefined;
  const ok = await Promise.race([ready, new Promise<'timeout'>((r) => (timer = setTimeout(() => r('timeout'), timeoutMs)))]);
  clearTimeout(timer);
  if (ok !== true) {
    await m.kill();
    throw new Error(`supervised mirrorfs ${ok === 'timeout' ? `did not serve within ${timeoutMs} ms` : 'exited before serving'}; stderr:\n${stderr}`);
  }
  return m;
}
