// The supervisor as a systemd service (docs/systemd.md): readiness and STATUS= for
// `systemctl status`, the watchdog, socket activation, and surviving its own restart. systemd
// holds every session's /dev/fuse fd in the service's fd store (exactly as the supervisor
// holds the daemons' fds); the state that goes with each fd is saved to a file
// (supervisor/state.ts). On start the supervisor takes both back and matches them.
//
// Without systemd (NOTIFY_SOCKET and LISTEN_FDS unset) only the state files remain, and only
// when a state directory is configured: everything here then costs nothing.
import { readFileSync } from 'node:fs';
import { closeFd, pidfdOpen, pidfdSendSignal, pollNow, POLL, socketInfo } from '../native/index.ts';
import { classifyFd } from '../kernel/device.ts';
import { parseMountInfo, type MountInfo } from '../kernel/mount.ts';
import type { Logger } from './log.ts';
import type { Supervisor } from './server.ts';
import type { Owner, Session, SessionStatus } from './session.ts';
import { StateStore, type PersistedSession } from './state.ts';
import { CONTROL_FD_NAME, SESSION_FD_PREFIX, SystemdNotifier, listenFds, sessionFdName, watchdogIntervalMs, type ListenFd } from './systemd.ts';

/** Default debounce of state writes (ms): the most a burst of journal/checkpoint messages costs. */
export const DEFAULT_STATE_FLUSH_MS = 100;

export interface ServiceOptions {
  log: Logger;
  env?: Record<string, string | undefined>;
  /** Where session state is saved; default $FUSEKEEPER_STATE_DIR, else $RUNTIME_DIRECTORY/sessions, else none. */
  stateDir?: string | null;
  flushMs?: number;
}

/** What `restore` found and did; logged, and summarised in STATUS=. */
export interface RestoreReport {
  restored: { name: string; generation: number; owner: number | null }[];
  dropped: { name: string; reason: string }[];
  /** Fds systemd passed that matched nothing (closed and removed from the store). */
  strayFds: { name: string; reason: string }[];
}

/** The state directory from the environment. */
export function stateDirFromEnv(env: Record<string, string | undefined>): string | null {
  if (env.FUSEKEEPER_STATE_DIR) return env.FUSEKEEPER_STATE_DIR;
  // RuntimeDirectory= may list several directories; systemd sets them colon-separated.
  const rd = env.RUNTIME_DIRECTORY?.split(':')[0];
  return rd ? `${rd}/sessions` : null;
}

/** Field 22 of /proc/<pid>/stat (start time in clock ticks since boot), or null. */
export function processStartTime(pid: number): string | null {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null;
  }
  // After "pid (comm) " come fields 3.. ; comm may contain spaces and parentheses.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const v = fields[19];
  return v !== undefined && /^[0-9]+$/.test(v) ? v : null;
}

/**
 * A pidfd for the saved owner if that very process still runs: the pid exists, its start
 * time matches the saved one (not a process that reuses the pid), and it is still there after
 * the check (the pidfd pins what the pid meant when it was opened). Null otherwise.
 */
export function verifyOwner(owner: PersistedSession['owner']): number | null {
  if (!owner || owner.startTime === null) return null;
  let pidfd: number;
  try {
    pidfd = pidfdOpen(owner.pid);
  } catch {
    return null;
  }
  try {
    if (processStartTime(owner.pid) !== owner.startTime) throw new Error('pid reused');
    pidfdSendSignal(pidfd, 0);
    return pidfd;
  } catch {
    closeFd(pidfd);
    return null;
  }
}

/** One line for STATUS=: sessions and owners, what was restored, the last recovery. */
export function formatServiceStatus(sessions: SessionStatus[], restored: RestoreReport | null): string {
  const owned = sessions.filter((s) => s.state === 'owned').length;
  const draining = sessions.filter((s) => s.state === 'draining').length;
  const orphaned = sessions.length - owned - draining;
  const parts = [`${sessions.length} session${sessions.length === 1 ? '' : 's'} (${owned} owned, ${orphaned} orphaned${draining ? `, ${draining} draining` : ''})`];
  if (restored && (restored.restored.length > 0 || restored.dropped.length > 0)) {
    parts.push(`restored ${restored.restored.length} from the fd store at start${restored.dropped.length ? ` (dropped ${restored.dropped.length})` : ''}`);
  }
  let last: SessionStatus | undefined;
  for (const s of sessions) if (s.lastRecovery && (!last || s.lastRecovery.at > last.lastRecovery!.at)) last = s;
  if (last?.lastRecovery) {
    parts.push(`last recovery: ${last.name} generation ${last.lastRecovery.generation} in ${(last.lastRecovery.durationUs / 1000).toFixed(1)} ms at ${last.lastRecovery.at.slice(11, 19)} UTC`);
  }
  return parts.join('; ');
}

/** The systemd side of `fusekeeper serve`. */
export class ServiceIntegration {
  readonly notifier: SystemdNotifier;
  readonly state: StateStore | null;
  readonly #log: Logger;
  readonly #env: Record<string, string | undefined>;
  /** Fds systemd passed, by name, until `restore` and `controlFd` claim them. */
  readonly #inherited = new Map<string, number[]>();
  /** fd-store name per session. */
  readonly #fdNames = new Map<string, string>();
  /** Start time per owner record (read while it is known to be alive). */
  readonly #startTimes = new WeakMap<Owner, string | null>();
  #supervisor: Supervisor | null = null;
  #report: RestoreReport | null = null;
  #statusTimer: NodeJS.Timeout | null = null;
  #lastStatus = '';
  #ready = false;

  constructor(opts: ServiceOptions) {
    this.#log = opts.log;
    this.#env = opts.env ?? process.env;
    this.notifier = SystemdNotifier.fromEnv(this.#env, this.#log);
    const passed = listenFds(this.#env);
    if (passed.problem) this.#log.warn({ event: 'systemd.listen_fds', problem: passed.problem }, passed.problem);
    for (const f of passed.fds) {
      const list = this.#inherited.get(f.name) ?? [];
      list.push(f.fd);
      this.#inherited.set(f.name, list);
    }
    if (passed.fds.length > 0) {
      this.#log.info({ event: 'systemd.fds_received', count: passed.fds.length, names: summariseNames(passed.fds) }, `systemd passed ${passed.fds.length} fds`);
    }
    const dir = opts.stateDir === undefined ? stateDirFromEnv(this.#env) : opts.stateDir;
    const flushMs = opts.flushMs ?? (Number(this.#env.FUSEKEEPER_STATE_FLUSH_MS) || DEFAULT_STATE_FLUSH_MS);
    this.state = dir
      ? new StateStore(dir, {
          flushMs,
          log: this.#log,
          snapshot: (name) => this.#supervisor?.snapshot(name, this.#fdNames.get(name) ?? sessionFdName(name), (o) => this.#startTime(o)) ?? null,
        })
      : null;
    if (this.notifier.enabled && !this.state) {
      this.#log.warn({ event: 'systemd.no_state_dir' }, 'running under systemd without RuntimeDirectory= or FUSEKEEPER_STATE_DIR: session fds go to the fd store, but their state is not saved, so a restarted supervisor cannot resume them');
    }
  }

  /**
   * The control socket systemd passed (FileDescriptorName=control in fusekeeper.socket), if
   * it is a listening SEQPACKET unix socket. The caller (Supervisor.start) owns it.
   */
  controlFd(): number | undefined {
    const fds = this.#inherited.get(CONTROL_FD_NAME);
    if (!fds || fds.length === 0) return undefined;
    this.#inherited.delete(CONTROL_FD_NAME);
    let chosen: number | undefined;
    for (const fd of fds) {
      let ok = false;
      try {
        const info = socketInfo(fd);
        ok = info.family === 'unix' && info.kind === 'seqpacket' && info.listening;
        if (!ok) this.#log.error({ event: 'systemd.bad_control_fd', fd, info }, `fd ${fd} named "${CONTROL_FD_NAME}" is not a listening AF_UNIX SOCK_SEQPACKET socket (use ListenSequentialPacket=); ignoring it`);
      } catch (err) {
        this.#log.error({ event: 'systemd.bad_control_fd', fd, err: (err as Error).message }, `fd ${fd} named "${CONTROL_FD_NAME}" is not a socket; ignoring it`);
      }
      if (ok && chosen === undefined) chosen = fd;
      else closeFd(fd);
    }
    return chosen;
  }

  /**
   * Takes back the sessions of a previous supervisor process: every saved state with its fd
   * from the store, checked (a /dev/fuse device, its connection alive, its mount still there
   * with the same connection id). Anything inconsistent is dropped, logged and removed from
   * the store. Then installs the hooks that keep store and state current. Call before
   * `supervisor.start()`.
   */
  attach(supervisor: Supervisor): RestoreReport {
    this.#supervisor = supervisor;
    const report: RestoreReport = { restored: [], dropped: [], strayFds: [] };
    const sessionFds = new Map<string, number[]>();
    for (const [name, fds] of [...this.#inherited]) {
      if (name === CONTROL_FD_NAME) continue; // claimed by controlFd()
      this.#inherited.delete(name);
      if (name.startsWith(SESSION_FD_PREFIX)) sessionFds.set(name, fds);
      else {
        // Not ours to interpret (a socket unit we do not know, or `stored` without a name).
        for (const fd of fds) closeFd(fd);
        report.strayFds.push({ name, reason: 'unknown fd name' });
        this.notifier.fdStoreRemove(name);
      }
    }
    const loaded = this.state ? this.state.loadAll() : { sessions: [], rejected: [] };
    // One read of the mount table for all sessions (the last mount on a path wins, as in findMount).
    const mounts = new Map<string, MountInfo>();
    if (loaded.sessions.length > 0) for (const m of parseMountInfo(readFileSync('/proc/self/mountinfo', 'utf8'))) mounts.set(m.mountpoint, m);
    for (const r of loaded.rejected) {
      report.dropped.push({ name: r.file, reason: `unreadable state: ${r.reason}` });
    }
    for (const saved of loaded.sessions) {
      const fds = sessionFds.get(saved.fdName) ?? [];
      sessionFds.delete(saved.fdName);
      const r = this.#restoreOne(supervisor, saved, fds, mounts);
      if (typeof r === 'string') {
        report.dropped.push({ name: saved.name, reason: r });
        this.state?.remove(saved.name);
      } else {
        report.restored.push({ name: saved.name, generation: saved.generation, owner: r.owner?.pid ?? null });
      }
    }
    for (const [fdName, fds] of sessionFds) {
      for (const fd of fds) closeFd(fd);
      this.notifier.fdStoreRemove(fdName);
      report.strayFds.push({ name: fdName, reason: 'no saved state for it' });
    }
    for (const d of report.dropped) this.#log.warn({ event: 'systemd.session_dropped', session: d.name, reason: d.reason }, `not restoring ${d.name}: ${d.reason}`);
    for (const f of report.strayFds) this.#log.warn({ event: 'systemd.fd_dropped', fdName: f.name, reason: f.reason }, `dropped fd "${f.name}" from the fd store: ${f.reason}`);
    if (report.restored.length > 0 || report.dropped.length > 0 || report.strayFds.length > 0) {
      this.#log.info(
        { event: 'supervisor.restored', restored: report.restored, dropped: report.dropped.length, strayFds: report.strayFds.length },
        `restored ${report.restored.length} session(s) from the fd store${report.dropped.length ? `, dropped ${report.dropped.length}` : ''}`,
      );
    }
    this.#report = report;
    supervisor.hooks = {
      added: (s) => this.#added(s),
      changed: (s, urgent) => this.#changed(s, urgent),
      released: (s) => this.#released(s),
    };
    return report;
  }

  /** Restores one saved session: the session, or why it cannot be. Owns `fds` on every path. */
  #restoreOne(supervisor: Supervisor, saved: PersistedSession, fds: number[], mounts: ReadonlyMap<string, MountInfo>): Session | string {
    if (fds.length === 0) {
      return 'its fd is not in the fd store (systemd drops the fd of a connection that ended, and empties the store when the service is stopped rather than restarted)';
    }
    // Several fds under one name (stored twice from different opens): keep the first that is
    // usable, and store it alone again.
    let fd = -1;
    let reason = '';
    for (const f of fds) {
      if (fd >= 0) {
        closeFd(f);
        continue;
      }
      reason = this.#checkFd(saved, f, mounts);
      if (reason) closeFd(f);
      else fd = f;
    }
    if (fds.length > 1) {
      this.notifier.fdStoreRemove(saved.fdName);
      if (fd >= 0) this.notifier.fdStore(saved.fdName, fd);
    }
    if (fd < 0) {
      if (fds.length === 1) this.notifier.fdStoreRemove(saved.fdName);
      return reason;
    }
    const pidfd = verifyOwner(saved.owner);
    try {
      const s = supervisor.restoreSession({ saved, fd, owner: pidfd !== null && saved.owner ? { pid: saved.owner.pid, uid: saved.owner.uid, pidfd } : null });
      if (s.owner) this.#startTimes.set(s.owner, saved.owner!.startTime);
      this.#fdNames.set(saved.name, saved.fdName);
      this.#log.info(
        { event: 'session.restored', session: saved.name, generation: saved.generation, mountpoint: saved.spec.mountpoint, owner: s.owner?.pid ?? null, journal: saved.journal.length, checkpointKeys: saved.checkpoint.size },
        `restored ${saved.name} (generation ${saved.generation}) from the fd store${s.owner ? `; waiting for owner ${s.owner.pid} to re-attach` : '; no owner runs: the next daemon resumes it'}`,
      );
      return s;
    } catch (err) {
      closeFd(fd);
      if (pidfd !== null) closeFd(pidfd);
      this.notifier.fdStoreRemove(saved.fdName);
      return (err as Error).message;
    }
  }

  /** Why `fd` cannot be `saved`'s connection, or '' when it can. */
  #checkFd(saved: PersistedSession, fd: number, mounts: ReadonlyMap<string, MountInfo>): string {
    const kind = classifyFd(fd);
    if (kind !== 'fuse-device') return `its fd is not a /dev/fuse device (${kind})`;
    const ev = pollNow(fd, POLL.IN | POLL.OUT);
    if (ev & (POLL.ERR | POLL.HUP | POLL.NVAL)) return 'its FUSE connection is gone (the fd reports POLLERR)';
    const m = mounts.get(saved.spec.mountpoint);
    if (!m || !(m.fstype === 'fuse' || m.fstype.startsWith('fuse.'))) return `nothing FUSE is mounted on ${saved.spec.mountpoint} any more`;
    // The connection id is the minor of the mount's anonymous device (kernel/connections.ts).
    if (saved.connectionId !== null && m.minor !== saved.connectionId) return `the mount on ${saved.spec.mountpoint} is another FUSE connection (${m.minor}, saved ${saved.connectionId})`;
    return '';
  }

  #added(s: Session): void {
    const fdName = sessionFdName(s.name);
    this.#fdNames.set(s.name, fdName);
    this.notifier.fdStore(fdName, s.fd);
  }

  #changed(s: Session, urgent: boolean): void {
    if (urgent) {
      if (s.owner && !this.#startTimes.has(s.owner)) this.#startTimes.set(s.owner, this.#liveStartTime(s.owner));
      this.state?.flushSession(s.name);
      this.#scheduleStatus();
    } else {
      this.state?.markDirty(s.name);
    }
  }

  #released(s: Session): void {
    const fdName = this.#fdNames.get(s.name) ?? sessionFdName(s.name);
    this.#fdNames.delete(s.name);
    this.notifier.fdStoreRemove(fdName);
    this.state?.remove(s.name);
    this.#scheduleStatus();
  }

  /** The owner's start time, read while its pidfd says it has not exited. */
  #liveStartTime(o: Owner): string | null {
    if (o.exited || o.pidfd < 0) return null;
    const t = processStartTime(o.pid);
    try {
      pidfdSendSignal(o.pidfd, 0);
    } catch {
      return null;
    }
    return t;
  }

  #startTime(o: Owner): string | null {
    if (!this.#startTimes.has(o)) this.#startTimes.set(o, this.#liveStartTime(o));
    return this.#startTimes.get(o) ?? null;
  }

  /** STATUS= text now. */
  statusLine(): string {
    const sessions = this.#supervisor?.status().sessions ?? [];
    return formatServiceStatus(sessions, this.#report);
  }

  #scheduleStatus(): void {
    if (!this.#ready || this.#statusTimer || !this.notifier.enabled) return;
    this.#statusTimer = setTimeout(() => {
      this.#statusTimer = null;
      this.#sendStatus();
    }, 200);
    this.#statusTimer.unref();
  }

  #sendStatus(): void {
    const line = this.statusLine();
    if (line === this.#lastStatus) return;
    this.#lastStatus = line;
    this.notifier.status(line);
  }

  /**
   * READY=1 with the first STATUS=, and the watchdog. Owners come and go without hooks
   * (disconnect, exit), so STATUS= is also refreshed every few seconds.
   */
  ready(): void {
    this.#ready = true;
    this.#lastStatus = this.statusLine();
    this.notifier.ready(this.#lastStatus);
    const interval = watchdogIntervalMs(this.#env);
    if (this.notifier.startWatchdog(interval)) this.#log.info({ event: 'systemd.watchdog', intervalMs: interval }, `pinging the systemd watchdog every ${interval} ms`);
    if (this.notifier.enabled) {
      const t = setInterval(() => this.#sendStatus(), 5000);
      t.unref();
      this.#refresh = t;
    }
  }

  #refresh: NodeJS.Timeout | null = null;

  reloading(): void {
    this.notifier.reloading('reloading configuration');
  }

  reloaded(): void {
    this.#lastStatus = this.statusLine();
    this.notifier.ready(this.#lastStatus);
  }

  /** SIGTERM: STOPPING=1, and everything dirty saved before sessions are dropped or released. */
  stopping(): void {
    this.notifier.stopping('stopping');
    this.state?.flush();
  }

  /** Before exiting for a restart: everything saved, STATUS= says why. */
  restarting(): void {
    this.state?.flush();
    this.notifier.status(`restarting: ${this.statusLine()}`);
  }

  /** Saves everything dirty (before exiting). */
  flush(): void {
    this.state?.flush();
  }

  close(): void {
    if (this.#statusTimer) clearTimeout(this.#statusTimer);
    if (this.#refresh) clearInterval(this.#refresh);
    this.state?.close();
    this.notifier.close();
    for (const fds of this.#inherited.values()) for (const fd of fds) closeFd(fd);
    this.#inherited.clear();
  }
}

function summariseNames(fds: ListenFd[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const f of fds) {
    const key = f.name.startsWith(SESSION_FD_PREFIX) ? `${SESSION_FD_PREFIX}*` : f.name;
    out[key] = (out[key] ?? 0) + 1;
  }
  return out;
}
