// Managed daemons: processes the supervisor starts from its configuration and restarts when
// they exit, with exponential backoff and a crash-loop limit. Every process acquires its
// session as a standby (FUSEKEEPER_STANDBY=1): a restarted daemon whose predecessor is
// still being torn down waits instead of being refused. With `standby: true` the spare
// waits connected and takes over at once when the owner dies; those processes also get
// FUSEKEEPER_SPARE=1, which tells them to prepare for that take-over before they wait (a
// daemon restarted without a spare should not spend its start-up on that).
import { spawn, type ChildProcess } from 'node:child_process';
import type { Logger } from './log.ts';
import type { ManagedDaemon } from './config.ts';

interface Managed {
  spec: ManagedDaemon;
  children: Set<ChildProcess>;
  /** Exit times of crashes inside the crash-loop window. */
  crashes: number[];
  /** Consecutive crashes, for the backoff. */
  streak: number;
  timer: NodeJS.Timeout | null;
  gaveUp: boolean;
}

/** Status of one managed daemon, for `fusekeeper status`. */
export interface ManagedStatus {
  name: string;
  running: number[];
  crashesInWindow: number;
  gaveUp: boolean;
}

export class DaemonManager {
  readonly #socket: string;
  readonly #log: Logger;
  readonly #daemons = new Map<string, Managed>();
  readonly #onGiveUp: (d: ManagedDaemon) => void;
  #stopping = false;

  /** `onGiveUp` runs once a daemon exceeded its crash-loop limit (the supervisor applies the policy). */
  constructor(socket: string, daemons: ManagedDaemon[], log: Logger, onGiveUp: (d: ManagedDaemon) => void) {
    this.#socket = socket;
    this.#log = log;
    this.#onGiveUp = onGiveUp;
    for (const spec of daemons) this.#daemons.set(spec.name, { spec, children: new Set(), crashes: [], streak: 0, timer: null, gaveUp: false });
  }

  /** Starts every daemon (and its spare). */
  start(): void {
    for (const d of this.#daemons.values()) this.#fill(d);
  }

  status(): ManagedStatus[] {
    return [...this.#daemons.values()].map((d) => ({ name: d.spec.name, running: [...d.children].map((c) => c.pid ?? -1), crashesInWindow: d.crashes.length, gaveUp: d.gaveUp }));
  }

  /** Stops restarting and sends SIGTERM to every child; resolves when they have exited. */
  async stop(timeoutMs = 5000): Promise<void> {
    this.#stopping = true;
    const exits: Promise<void>[] = [];
    for (const d of this.#daemons.values()) {
      if (d.timer) clearTimeout(d.timer);
      for (const c of d.children) {
        exits.push(new Promise((r) => c.once('exit', () => r())));
        c.kill('SIGTERM');
      }
    }
    const timer = setTimeout(() => {
      for (const d of this.#daemons.values()) for (const c of d.children) c.kill('SIGKILL');
    }, timeoutMs);
    await Promise.all(exits);
    clearTimeout(timer);
  }

  /** Starts processes until the wanted number (1, or 2 with a spare) runs. */
  #fill(d: Managed): void {
    const wanted = d.spec.standby ? 2 : 1;
    while (!this.#stopping && !d.gaveUp && d.children.size < wanted) this.#spawn(d);
  }

  #spawn(d: Managed): void {
    const [cmd, ...args] = d.spec.command;
    const child = spawn(cmd!, args, {
      stdio: ['ignore', 'inherit', 'inherit'],
      env: { ...process.env, ...d.spec.env, FUSEKEEPER_SOCKET: this.#socket, FUSEKEEPER_SESSION: d.spec.name, FUSEKEEPER_STANDBY: '1', FUSEKEEPER_SPARE: d.spec.standby ? '1' : '0' },
    });
    d.children.add(child);
    const started = Date.now();
    child.once('error', (err) => this.#log.error({ event: 'daemon.spawn_failed', session: d.spec.name, err: err.message }, `cannot start ${cmd}: ${err.message}`));
    child.once('exit', (code, signal) => {
      d.children.delete(child);
      const clean = code === 0;
      this.#log[clean ? 'info' : 'warn']({ event: 'daemon.exited', session: d.spec.name, child: child.pid, code, signal, ranMs: Date.now() - started }, `daemon ${child.pid} of ${d.spec.name} exited (${signal ?? `code ${code}`})`);
      if (this.#stopping) return;
      this.#afterExit(d, clean, Date.now() - started);
    });
    this.#log.info({ event: 'daemon.started', session: d.spec.name, child: child.pid, command: d.spec.command }, `started daemon ${child.pid} for ${d.spec.name}`);
  }

  #afterExit(d: Managed, clean: boolean, ranMs: number): void {
    // A daemon that served for a while before crashing starts a new backoff streak.
    if (ranMs > d.spec.maxBackoffMs) d.streak = 0;
    if (clean) {
      // A drained owner exits 0 for a planned hand-over: replace it at once.
      d.streak = 0;
      this.#fill(d);
      return;
    }
    const now = Date.now();
    d.crashes = d.crashes.filter((t) => now - t < d.spec.crashLoopWindowMs);
    d.crashes.push(now);
    d.streak++;
    if (d.crashes.length > d.spec.crashLoopCount) {
      d.gaveUp = true;
      this.#log.error(
        { event: 'daemon.gave_up', session: d.spec.name, crashes: d.crashes.length, windowMs: d.spec.crashLoopWindowMs, policy: d.spec.onGiveUp },
        `${d.spec.name} crashed ${d.crashes.length} times in ${d.spec.crashLoopWindowMs} ms; not restarting (${d.spec.onGiveUp === 'abort' ? 'aborting the connection' : 'the connection waits'})`,
      );
      for (const c of d.children) c.kill('SIGTERM');
      this.#onGiveUp(d.spec);
      return;
    }
    if (d.timer) return;
    const delay = Math.min(d.spec.maxBackoffMs, d.spec.backoffMs * 2 ** Math.max(0, d.streak - 1));
    // With a spare running, the session is already served again; refill in the background.
    d.timer = setTimeout(() => {
      d.timer = null;
      this.#fill(d);
    }, delay);
  }
}
