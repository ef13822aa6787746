// systemd integration over the native seam (no libsystemd binding): sd_notify(3) with fds
// attached, and sd_listen_fds_with_names(3). Everything here is a no-op when the process does
// not run under systemd (NOTIFY_SOCKET / LISTEN_FDS unset), so `fusekeeper serve` works the
// same by hand.
//
// Protocol facts this relies on (systemd 252, src/core/service.c and src/basic/fdset.c):
// * A notification is one datagram of `KEY=VALUE` lines to $NOTIFY_SOCKET (a path, or
//   `@name` for the abstract namespace). systemd reads at most PIPE_BUF (4096) bytes and drops
//   longer datagrams whole; it learns the sender from SCM_CREDENTIALS, which the kernel adds.
// * `FDSTORE=1` keeps every fd attached (SCM_RIGHTS) under the message's `FDNAME=`; an fd
//   already in the store (same open file) is not added twice. `FDSTOREREMOVE=1` + `FDNAME=`
//   drops every stored fd of that name. Stored fds come back to the next instance of the
//   service as LISTEN_FDS, after the fds of its socket units, named in LISTEN_FDNAMES.
// * An FDNAME is at most 255 printable ASCII characters and never contains ':' (the
//   separator of LISTEN_FDNAMES); anything else is refused by systemd.
import { createHash } from 'node:crypto';
import { closeAll, createSocket, sendMessage, setCloseOnExec, waitWritableSync, closeFd } from '../native/index.ts';

/** First fd systemd passes (SD_LISTEN_FDS_START). */
export const LISTEN_FDS_START = 3;
/** Longest fd name systemd accepts (FDNAME_MAX). */
export const FDNAME_MAX = 255;
/** Longest datagram systemd reads from the notify socket (NOTIFY_BUFFER_MAX = PIPE_BUF). */
export const NOTIFY_BUFFER_MAX = 4096;
/** Longest STATUS= text sent (systemd shows it in one line of `systemctl status`). */
export const STATUS_MAX = 1024;
/** FileDescriptorName= of the control socket in fusekeeper.socket. */
export const CONTROL_FD_NAME = 'control';
/** Prefix of the fd-store names of session fds (see `sessionFdName`). */
export const SESSION_FD_PREFIX = 'fuse-';

/** An fd systemd passed, with its name (`unknown` when systemd gave none). */
export interface ListenFd {
  fd: number;
  name: string;
}

/** What `parseListenFds` found. `fds` is empty when the variables are unset or not for us. */
export interface ListenFdsResult {
  fds: ListenFd[];
  /** Why the variables were ignored or partly ignored, for the log. */
  problem: string | null;
}

type Env = Record<string, string | undefined>;

/**
 * Interprets LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES like sd_listen_fds_with_names(3)
 * (pure; `listenFds` applies it). Not for this process (LISTEN_PID differs or is missing) or
 * malformed: no fds. Names missing or of the wrong count: `unknown` for each fd without one.
 */
export function parseListenFds(env: Env, pid: number): ListenFdsResult {
  const pidText = env.LISTEN_PID;
  const countText = env.LISTEN_FDS;
  if (pidText === undefined && countText === undefined) return { fds: [], problem: null };
  if (pidText === undefined || !/^[1-9][0-9]*$/.test(pidText)) return { fds: [], problem: `LISTEN_PID=${JSON.stringify(pidText ?? null)} is not a pid; ignoring LISTEN_FDS` };
  if (Number(pidText) !== pid) return { fds: [], problem: `LISTEN_PID=${pidText} is not this process (${pid}); ignoring LISTEN_FDS` };
  if (countText === undefined || !/^(0|[1-9][0-9]{0,5})$/.test(countText)) return { fds: [], problem: `LISTEN_FDS=${JSON.stringify(countText ?? null)} is not a count` };
  const count = Number(countText);
  let names = env.LISTEN_FDNAMES === undefined ? [] : env.LISTEN_FDNAMES.split(':');
  let problem: string | null = null;
  if (env.LISTEN_FDNAMES !== undefined && names.length !== count) {
    problem = `LISTEN_FDNAMES has ${names.length} names for ${count} fds; using "unknown" for the fds without a name`;
    names = names.slice(0, count);
  }
  const fds: ListenFd[] = [];
  for (let i = 0; i < count; i++) fds.push({ fd: LISTEN_FDS_START + i, name: names[i] || 'unknown' });
  return { fds, problem };
}

/**
 * The fds systemd passed to this process (socket units and the fd store), taken over: each
 * is made close-on-exec (systemd passes them without, and they must not leak into managed
 * daemons), and LISTEN_PID/LISTEN_FDS/LISTEN_FDNAMES are removed from the environment so no
 * child mistakes them for its own. The caller owns every returned fd.
 */
export function listenFds(env: Env = process.env, pid = process.pid): ListenFdsResult {
  const result = parseListenFds(env, pid);
  delete env.LISTEN_PID;
  delete env.LISTEN_FDS;
  delete env.LISTEN_FDNAMES;
  const kept: ListenFd[] = [];
  for (const f of result.fds) {
    try {
      setCloseOnExec(f.fd);
      kept.push(f);
    } catch (err) {
      result.problem = `${result.problem ? `${result.problem}; ` : ''}fd ${f.fd} (${f.name}) is not open: ${(err as Error).message}`;
    }
  }
  return { fds: kept, problem: result.problem };
}

/** Whether systemd accepts `name` as an FDNAME (printable ASCII without ':', at most 255). */
export function isValidFdName(name: string): boolean {
  return name.length <= FDNAME_MAX && /^[\x20-\x39\x3b-\x7e]*$/.test(name);
}

/**
 * The fd-store name of a session's /dev/fuse fd: `fuse-` + the session name with `%` and `:`
 * percent-escaped (session names may contain ':', FDNAMEs may not). Names whose escaped form
 * would exceed 255 characters (many ':') become `fuse-` + a prefix + `~` + 32 hex digits of
 * the name's SHA-256; escaped names never contain `~`, so the two forms cannot collide. The
 * saved session state records the name it was stored under, so decoding is never needed.
 */
export function sessionFdName(sessionName: string): string {
  const escaped = sessionName.replace(/%/g, '%25').replace(/:/g, '%3A');
  const plain = SESSION_FD_PREFIX + escaped;
  if (plain.length <= FDNAME_MAX) return plain;
  const digest = createHash('sha256').update(sessionName).digest('hex').slice(0, 32);
  return `${SESSION_FD_PREFIX}${escaped.slice(0, FDNAME_MAX - SESSION_FD_PREFIX.length - 33).replace(/%[0-9A-F]?$/, '')}~${digest}`;
}

/** The session name of a plain (not hashed) session fd name; null for anything else. */
export function sessionNameOfFdName(fdName: string): string | null {
  if (!fdName.startsWith(SESSION_FD_PREFIX) || fdName.includes('~')) return null;
  const body = fdName.slice(SESSION_FD_PREFIX.length);
  if (!/^(?:[^%]|%25|%3A)+$/.test(body)) return null;
  return body.replace(/%3A/g, ':').replace(/%25/g, '%');
}

/** Where to send notifications: `NOTIFY_SOCKET` if it is an absolute path or `@abstract`. */
export function notifySocketAddress(env: Env = process.env): string | null {
  const v = env.NOTIFY_SOCKET;
  if (!v) return null;
  if (v.startsWith('/') || (v.startsWith('@') && v.length > 1)) return v;
  return null;
}

/**
 * The watchdog ping interval in ms (half of WATCHDOG_USEC, as sd_watchdog_enabled(3)
 * recommends), or null when the watchdog is off or meant for another process (WATCHDOG_PID).
 */
export function watchdogIntervalMs(env: Env = process.env, pid = process.pid): number | null {
  const usec = env.WATCHDOG_USEC;
  if (!usec || !/^[1-9][0-9]*$/.test(usec)) return null;
  const owner = env.WATCHDOG_PID;
  if (owner !== undefined && owner !== '' && Number(owner) !== pid) return null;
  return Math.max(1, Math.floor(Number(usec) / 2000));
}

/** One notification as sent: `KEY=VALUE` lines. Values lose newlines (they would end the field). */
export function formatNotification(fields: ReadonlyArray<readonly [string, string]>): Buffer {
  const text = fields.map(([k, v]) => `${k}=${v.replace(/[\r\n]+/g, ' ')}\n`).join('');
  return Buffer.from(text, 'utf8');
}

/** A STATUS= text cut to `STATUS_MAX` bytes without splitting a character. */
export function statusText(text: string): string {
  const oneLine = text.replace(/[\r\n]+/g, ' ');
  if (Buffer.byteLength(oneLine) <= STATUS_MAX) return oneLine;
  let cut = Buffer.from(oneLine).subarray(0, STATUS_MAX - 3).toString('utf8');
  if (cut.endsWith('\uFFFD')) cut = cut.slice(0, -1);
  return `${cut}...`;
}

export interface NotifierLogger {
  warn(obj: object, msg?: string): void;
}

/**
 * sd_notify(3). Without NOTIFY_SOCKET every call is a no-op returning false. A failed send
 * is logged and reported (false), never thrown: systemd being away must not stop the
 * supervisor. Fds passed to `send`/`fdStore` stay the caller's.
 */
export class SystemdNotifier {
  readonly address: string | null;
  readonly #log: NotifierLogger | null;
  #fd = -1;
  #watchdog: NodeJS.Timeout | null = null;

  constructor(address: string | null, log?: NotifierLogger) {
    this.address = address;
    this.#log = log ?? null;
  }

  /** A notifier for $NOTIFY_SOCKET (no-op when unset). */
  static fromEnv(env: Env = process.env, log?: NotifierLogger): SystemdNotifier {
    return new SystemdNotifier(notifySocketAddress(env), log);
  }

  get enabled(): boolean {
    return this.address !== null;
  }

  /**
   * Sends one notification with `fds` attached. A full socket buffer is waited for up to
   * `waitMs` (fd-store messages must not be lost). Returns whether systemd got it.
   */
  send(fields: ReadonlyArray<readonly [string, string]>, fds: number[] = [], waitMs = 1000): boolean {
    if (this.address === null) return false;
    const data = formatNotification(fields);
    if (data.length > NOTIFY_BUFFER_MAX) {
      this.#log?.warn({ event: 'systemd.notify_failed', fields: fields.map(([k]) => k), bytes: data.length }, `notification of ${data.length} bytes exceeds systemd's ${NOTIFY_BUFFER_MAX}`);
      return false;
    }
    try {
      if (this.#fd < 0) this.#fd = createSocket('dgram');
      for (let tries = 0; tries < 2; tries++) {
        if (sendMessage(this.#fd, { data, fds }, this.address) !== null) return true;
        if (!waitWritableSync(this.#fd, waitMs)) break;
      }
      this.#log?.warn({ event: 'systemd.notify_failed', fields: fields.map(([k]) => k), err: 'EAGAIN' }, 'systemd did not take a notification (socket buffer full)');
    } catch (err) {
      this.#log?.warn({ event: 'systemd.notify_failed', fields: fields.map(([k]) => k), err: (err as Error).message }, `sd_notify failed: ${(err as Error).message}`);
    }
    return false;
  }

  ready(status?: string): boolean {
    return this.send(status === undefined ? [['READY', '1']] : [['READY', '1'], ['STATUS', statusText(status)]]);
  }

  status(text: string): boolean {
    return this.send([['STATUS', statusText(text)]]);
  }

  reloading(status?: string): boolean {
    return this.send(status === undefined ? [['RELOADING', '1']] : [['RELOADING', '1'], ['STATUS', statusText(status)]]);
  }

  stopping(status?: string): boolean {
    return this.send(status === undefined ? [['STOPPING', '1']] : [['STOPPING', '1'], ['STATUS', statusText(status)]]);
  }

  watchdog(): boolean {
    return this.send([['WATCHDOG', '1']], [], 0);
  }

  /** Puts `fd` into the fd store under `name` (the caller keeps its own `fd`). */
  fdStore(name: string, fd: number): boolean {
    if (!isValidFdName(name)) throw new RangeError(`invalid fd store name ${JSON.stringify(name)}`);
    return this.send([['FDSTORE', '1'], ['FDNAME', name]], [fd]);
  }

  /** Drops every fd stored under `name` (false, and nothing sent, for a name systemd would refuse). */
  fdStoreRemove(name: string): boolean {
    if (!isValidFdName(name)) return false;
    return this.send([['FDSTOREREMOVE', '1'], ['FDNAME', name]]);
  }

  /**
   * Pings the watchdog every `intervalMs` (from `watchdogIntervalMs`) from the event loop, so
   * a loop that stops turning stops the pings and systemd restarts the service. Returns
   * whether a watchdog runs.
   */
  startWatchdog(intervalMs: number | null = watchdogIntervalMs()): boolean {
    this.stopWatchdog();
    if (intervalMs === null || !this.enabled) return false;
    this.watchdog();
    this.#watchdog = setInterval(() => this.watchdog(), intervalMs);
    this.#watchdog.unref();
    return true;
  }

  stopWatchdog(): void {
    if (this.#watchdog) clearInterval(this.#watchdog);
    this.#watchdog = null;
  }

  close(): void {
    this.stopWatchdog();
    if (this.#fd >= 0) closeFd(this.#fd);
    this.#fd = -1;
  }
}

/** Closes listen fds nobody claimed. */
export function closeListenFds(fds: Iterable<ListenFd>): void {
  closeAll([...fds].map((f) => f.fd));
}
