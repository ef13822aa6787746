// The supervisor: holds every session's /dev/fuse fd, serves the control protocol
// (docs/protocol.md) on a SOCK_SEQPACKET socket, tracks owners by pidfd and connection, and
// runs the recovery sequence (DESIGN.md section 3) when a new owner acquires an orphaned
// session. Everything a peer sends is checked at the boundary; a bad peer gets an ERROR and,
// for a malformed frame, a disconnect, and nothing it sent stays open here.
import { lstatSync, mkdirSync, chmodSync, unlinkSync, statSync, readlinkSync } from 'node:fs';
import { dirname } from 'node:path';
import {
  acceptConnection,
  bindSocket,
  closeAll,
  closeFd,
  createSocket,
  duplicateFd,
  listenSocket,
  peerCredentials,
  setSocketBuffer,
  pidfdOpen,
  pidfdExited,
  currentCpu,
  receiveMessage,
  sendMessage,
  connectSocket,
  createSealedFile,
  watchFd,
  sameOpenFile,
  setNonBlocking,
  subscribeThreadExits,
  readThreadExits,
  FineTimer,
  NativeError,
  type PeerCredentials,
  type PollEvents,
  type PollHandle,
} from '../native/index.ts';
import { classifyFd, openFuseDevice } from '../kernel/device.ts';
import { mountFuse, unmountFuse, findMount, type MountInfo } from '../kernel/mount.ts';
import { abortConnection, connectionId, ensureFusectl } from '../kernel/connections.ts';
import {
  decodeMessage,
  encodeMessage,
  encodeAcquireSequence,
  encodeCheckpointFile,
  acquireAttachment,
  checkpointEntrySize,
  checkpointGoesInFile,
  journalGoesInFile,
  MAX_CHECKPOINT_BYTES,
  errorMessage,
  describeMessage,
  messageTypeByCode,
  ProtocolError,
  FEATURE_CLOSE_ALL,
  FEATURE_RESEND,
  HEADER_SIZE,
  isJournalOpenFrame,
  MAX_JOURNAL_FILE_ENTRIES,
  MAX_MESSAGE,
  MAX_STATUS_JSON,
  PROTOCOL_VERSION,
  type ControlMessage,
  type ErrnoCode,
  type MessageOf,
  type MountSpec,
  type Role,
  type CleanupStrategy,
} from '../protocol/index.ts';
import { BackingJournal } from './journal.ts';
import { closeUnadopted } from './cleanup.ts';
import { rehearseRecovery } from './rehearsal.ts';
import { cleanBacking, fenceOwner, moveOffCpu, replayInFlight, RecoveryError, RESTORE_IDLED_AFTER_MS, restoreThreads, scanThreads, TEARDOWN_IDLE_MAX_MS, yieldExitingThreads, type ThreadScan } from './recovery.ts';
import { silentLogger, holdLogsThisTurn, type Logger } from './log.ts';
import { noMetrics, type SupervisorMetrics } from './metrics.ts';
import type { SupervisorConfig } from './config.ts';
import { REALTIME_OFF, RealtimeLender, type RealtimeLoan, type RealtimeScheduling } from './realtime.ts';
import type { Owner, Session, SessionStatus } from './session.ts';
import type { PersistedSession } from './state.ts';

/** What the kernel can do, probed once at start (`fusekeeper doctor` does the same). */
export interface KernelCaps {
  passthrough: boolean;
  resend: boolean;
  closeAll: boolean;
}

export interface SupervisorOptions {
  config: SupervisorConfig;
  kernel: KernelCaps;
  version: string;
  log?: Logger;
  metrics?: SupervisorMetrics;
  /** The main thread's real-time scheduling (serve() starts and stops it; supervisor/realtime.ts). */
  realtime?: Omit<RealtimeScheduling, 'stop'>;
}

/**
 * Where the supervisor reports session lifecycle events, so that something outside it (the
 * systemd integration, supervisor/service.ts) can keep fds and state safe across a restart
 * of the supervisor itself. Hooks must not throw (errors are logged and ignored).
 */
export interface SessionHooks {
  /** A session got its /dev/fuse fd (fresh ACQUIRE or STORE): `s.fd` is the supervisor's copy. */
  added?(s: Session): void;
  /**
   * The session's persistent state changed. `urgent`: a hand-over, a new or re-attached owner
   * (save now); otherwise a one-way state message on the hot path (save soon).
   */
  changed?(s: Session, urgent: boolean): void;
  /** Released: unmounted and forgotten for good. */
  released?(s: Session): void;
}

/** A session as a restarted supervisor takes it back (see `Supervisor.restoreSession`). */
export interface RestoredSession {
  saved: PersistedSession;
  /** The session's /dev/fuse fd, from the fd store; owned by the supervisor from now on. */
  fd: number;
  /** The saved owner if it still runs (verified by the caller): a pidfd for it, owned by the supervisor from now on. */
  owner: { pid: number; uid: number; pidfd: number } | null;
}

/** A refused request: answered with ERROR `code`, the connection stays up. */
class Refusal extends Error {
  constructor(
    readonly code: ErrnoCode,
    message: string,
  ) {
    super(message);
  }
}

/** Frames a peer may leave unread before it is disconnected. */
const MAX_QUEUED_FRAMES = 4096;
/** Sessions one supervisor holds (ENOSPC beyond). A session's checkpoint is limited to MAX_CHECKPOINT_BYTES. */
const MAX_SESSIONS = 4096;
/**
 * SO_SNDBUF asked for on each connection (the kernel doubles it: 1 MiB). A resumed ACQUIRE
 * with a large checkpoint is many 64 KB frames; with the default 208 KiB about 3 fit, and
 * every refill waits for the daemon to read and the supervisor to be told there is room.
 * AF_UNIX datagram sockets also queue at most net.unix.max_dgram_qlen (default 10) frames,
 * which 1 MiB about matches. (A large journal goes in one memfd instead: #sendResumed.)
 */
const SEND_BUFFER = 512 * 1024;
/**
 * While a standby waits, the journal file for its hand-over is written this long after the
 * journal changes (or the standby arrives), at most once per this long (#writeJournalAhead).
 */
const JOURNAL_AHEAD_MS = 50;
/** Unadopted backing ids closed per event-loop turn after ADOPTED. */
const CLOSE_CHUNK = 2048;

/** How long #ownerDying keeps looking again at a dying owner's threads, ns. */
const DYING_LOOK_NS = 50_000_000n;
/**
 * The pause between two looks at a dying owner's threads, ns: at least this, and at least 4
 * times what the last look took, so that looking costs at most a fifth of a CPU however many
 * threads the owner has (a look reads /proc once per thread).
 */
const DYING_LOOK_PAUSE_NS = 200_000;

interface Conn {
  id: number;
  fd: number;
  poll: PollHandle | null;
  peer: PeerCredentials;
  role: Role | null;
  clientName: string;
  /** The session this connection owns (at most one). */
  session: LiveSession | null;
  /** Frames the socket had no room for, with duplicated fds owned by the queue. */
  out: { data: Buffer; fds: number[] }[];
  /** `poll` also waits for room to send (while `out` is not empty). */
  pollWritable: boolean;
  /** An ACQUIRE of this connection is being answered (recovery runs, or it waits as a standby). */
  acquiring: boolean;
  closed: boolean;
}

interface StandbyWait {
  conn: Conn;
  requestId: number;
}

interface LiveSession extends Session {
  checkpointBytes: number;
  adoptTimer: NodeJS.Timeout | null;
  /** Ids probed at the last hand-over, reported in ADOPTED. */
  probedAtHandover: number;
  /** Inherited ids nobody adopted, still to be closed (after ADOPTED was answered), in chunks. */
  pendingClose: { ids: Uint32Array; next: number; timer: NodeJS.Immediate | null } | null;
  recovering: boolean;
  /** Owners that handed over cleanly (drain). */
  handovers: number;
  drain: { conn: Conn; requestId: number; timer: NodeJS.Timeout; drained: boolean } | null;
  standbys: StandbyWait[];
  ownerWatch: PollHandle | null;
  resolveExit: (() => void) | null;
  /** Heartbeats received from the current owner; only owners that send them can be silent. */
  heartbeats: number;
}

/** The supervisor. `start()` binds the control socket; `stop()` closes everything it opened. */
export class Supervisor {
  readonly config: SupervisorConfig;
  readonly kernel: KernelCaps;
  readonly #log: Logger;
  readonly #metrics: SupervisorMetrics;
  readonly #version: string;
  readonly #sessions = new Map<string, LiveSession>();
  readonly #conns = new Map<number, Conn>();
  #listenFd = -1;
  #listenPoll: PollHandle | null = null;
  #nextConnId = 1;
  #watchdog: NodeJS.Timeout | null = null;
  #stopping = false;
  readonly startedAt = Date.now();
  /** Called when a managed daemon's session should be aborted (give-up policy). */
  onSessionGone: ((name: string) => void) | null = null;
  /** Session lifecycle hooks (fd store and saved state under systemd; see supervisor/service.ts). */
  hooks: SessionHooks = {};
  /** The control socket came from systemd (socket activation): not ours to unlink. */
  #listenInherited = false;
  /** Netlink socket of the kernel's thread exit events (native/procevents.ts), or -1 without them. */
  #exitEventsFd = -1;
  #exitEventsPoll: PollHandle | null = null;
  #exitEventsBuf: Buffer | null = null;
  /** Why thread exit events are off (null: on). */
  #exitEventsOff: string | null = null;
  readonly #realtime: NonNullable<SupervisorOptions['realtime']>;
  /** Owners reported exiting whose threads are not all exiting or parked yet, and until when to look (#ownerDying). */
  readonly #dyingOwners = new Map<Owner, { session: LiveSession; exitCode: number; until: bigint }>();
  /** Wakes #lookAtDyingOwners; exists while exit events are on. */
  #dyingTimer: FineTimer | null = null;
  /** What the last look at a dying owner's threads took, ns. */
  #lastLookNs = 0;
  /** Real-time priority for new owners' main threads around their take-over (#recover). */
  readonly #lender: RealtimeLender;

  constructor(opts: SupervisorOptions) {
    this.config = opts.config;
    this.kernel = opts.kernel;
    this.#log = opts.log ?? silentLogger();
    this.#metrics = opts.metrics ?? noMetrics;
    this.#version = opts.version;
    this.#realtime = opts.realtime ?? REALTIME_OFF;
    this.#lender = new RealtimeLender();
  }

  /** The cleanup strategy this kernel allows. */
  get strategy(): CleanupStrategy {
    if (!this.kernel.passthrough) return 'none';
    return this.kernel.closeAll ? 'close-all' : 'journal';
  }

  /**
   * Binds and listens on the control socket, or serves `listenFd`, a listening SEQPACKET
   * socket systemd passed (socket activation; it becomes the supervisor's and is never
   * unlinked). Throws with a clear message when it cannot.
   */
  start(listenFd?: number): void {
    const address = this.config.socket;
    let fd: number;
    if (listenFd !== undefined) {
      setNonBlocking(listenFd, true);
      fd = listenFd;
      this.#listenInherited = true;
    } else {
      if (!address.startsWith('@')) prepareSocketPath(address);
      fd = createSocket('seqpacket');
      try {
        bindSocket(fd, address);
        if (!address.startsWith('@')) chmodSync(address, 0o666);
        listenSocket(fd);
      } catch (err) {
        closeFd(fd);
        throw err;
      }
    }
    this.#listenFd = fd;
    this.#listenPoll = watchFd(fd, { readable: true }, () => this.#accept());
    const tick = Math.max(50, Math.min(5_000, Math.floor(this.config.heartbeatTimeoutMs / 2)));
    this.#watchdog = setInterval(() => this.#checkHeartbeats(), tick);
    this.#watchdog.unref();
    this.#subscribeExitEvents();
    const recoveryRehearsedUs = this.#rehearseRecovery();
    this.#log.info(
      { event: 'supervisor.listening', socket: address, inherited: this.#listenInherited, strategy: this.strategy, kernel: this.kernel, exitEvents: this.#exitEventsOff ?? 'on', realtime: this.#realtime.status(), recoveryRehearsedUs },
      `listening on ${address}${this.#listenInherited ? ' (socket from systemd)' : ''}`,
    );
  }

  /**
   * The recovery path run once where it changes nothing (supervisor/rehearsal.ts), with the
   * server's own first steps: a read of the thread exit events (whatever it finds is handled
   * as always) and the log hold, whose lines of this turn (`supervisor.listening`) are
   * written when it ends. Returns the time it took, µs.
   */
  #rehearseRecovery(): number {
    const started = process.hrtime.bigint();
    // The hold's first use at a crash compiled Node's setImmediate and its queue: 0.3-0.4 ms
    // between the owner's death and the ACQUIRED frame (V8's function events, failover bench).
    holdLogsThisTurn(this.#log);
    if (this.#exitEventsFd >= 0) this.#onThreadExits();
    this.#dyingTimer?.arm(1e12);
    this.#dyingTimer?.disarm();
    rehearseRecovery();
    return Math.round(Number(process.hrtime.bigint() - started) / 1000);
  }

  /**
   * Listens to the kernel's thread exit events, so that a killed owner is noticed as soon as
   * its threads are exiting: its socket reaches EOF only after its last thread has freed the
   * process's memory, milliseconds later for a daemon of some size (native/procevents.ts).
   * Without them (no CONFIG_PROC_EVENTS, not root) EOF and the pidfd still tell, later.
   */
  #subscribeExitEvents(): void {
    if (!this.config.exitEvents) {
      this.#exitEventsOff = 'off in the configuration';
      return;
    }
    try {
      this.#exitEventsFd = subscribeThreadExits();
    } catch (err) {
      this.#exitEventsOff = (err as Error).message;
      return;
    }
    this.#exitEventsBuf = Buffer.alloc(64 * 1024);
    this.#exitEventsPoll = watchFd(this.#exitEventsFd, { readable: true }, () => this.#onThreadExits());
    try {
      this.#dyingTimer = new FineTimer(() => this.#lookAtDyingOwners());
    } catch (err) {
      this.#closeExitEvents();
      this.#exitEventsOff = (err as Error).message;
    }
  }

  #onThreadExits(): void {
    let exits;
    try {
      exits = readThreadExits(this.#exitEventsFd, this.#exitEventsBuf!).exits;
    } catch (err) {
      this.#log.warn({ event: 'supervisor.exit_events_failed', err: (err as Error).message }, `thread exit events stop: ${(err as Error).message}`);
      this.#closeExitEvents();
      this.#exitEventsOff = (err as Error).message;
      return;
    }
    if (exits.length === 0) return;
    for (const s of this.#sessions.values()) {
      const o = s.owner;
      if (!o || o.exited || o.connection === null) continue;
      const exit = exits.find((e) => e.pid === o.pid);
      if (!exit) continue;
      this.#realtime.recovering();
      o.dyingSince ??= { exitNs: exit.atNs };
      this.#ownerDying(s, o, exit.exitCode);
    }
  }

  /**
   * A thread of `owner` exited with a non-zero code: a fatal signal or exit(n) is taking the
   * whole process down. Once every thread of it is exiting or parked (scanThreads), it sends
   * nothing more and touches /dev/fuse no more: its frames still queued are applied and its
   * connection closed, which orphans the session at once instead of at EOF. A thread that
   * is on a CPU at a look is neither yet; the threads are looked at again at each further
   * exit event and every DYING_LOOK_PAUSE_NS, for a while (EOF comes anyway). The last thread
   * to exit reports no event until it has freed the process's memory. Threads already
   * exiting go to SCHED_IDLE at each look: they compete for the CPU with the threads that
   * still have to get there, and with this process. At the decision the parked ones follow,
   * and all stay there for the rest of the teardown (#awaitTeardown), which otherwise
   * competes with the new owner.
   */
  #ownerDying(s: LiveSession, owner: Owner, exitCode: number): void {
    if (s.owner !== owner || owner.exited || owner.connection === null) {
      this.#dyingOwners.delete(owner);
      this.#restoreIdledSoon(owner);
      if (!s.recovering) this.#dropPreparedJournal(s);
      return;
    }
    const lookedAt = process.hrtime.bigint();
    const scan = this.#lookAtThreads(owner);
    if (scan.others > 0) {
      const dying = this.#dyingOwners.get(owner);
      if (dying === undefined) {
        this.#dyingOwners.set(owner, { session: s, exitCode, until: lookedAt + DYING_LOOK_NS });
        this.#prepareJournalFile(s);
        this.#armDyingLook();
      } else if (lookedAt > dying.until) {
        this.#dyingOwners.delete(owner);
        this.#restoreIdledSoon(owner);
        this.#dropPreparedJournal(s);
      }
      return;
    }
    owner.fenced = true;
    this.#dyingOwners.delete(owner);
    this.#idle(owner, yieldExitingThreads(scan.parked));
    this.#armDyingLook();
    const conn = this.#conns.get(owner.connection);
    if (!conn) {
      this.#restoreIdledSoon(owner);
      return;
    }
    while (!conn.closed && this.#receiveOne(conn));
    // Read to EOF: the teardown has closed the process's files already.
    if (conn.closed) this.#restoreIdled(owner);
    else this.#awaitTeardown(owner, conn.fd);
    // exit_code is a wait status: the signal in the low 7 bits, else exit(n) as n << 8.
    const signal = exitCode & 0x7f;
    this.#disconnect(conn, `its process is exiting (${signal !== 0 ? `signal ${signal}` : `status ${exitCode >> 8}`})`);
    // No standby took the session (#recover would be running): nobody to send the file to.
    if (!s.recovering) this.#dropPreparedJournal(s);
  }

  /** Looks again at every dying owner's threads (#ownerDying), and arms the next look. */
  #lookAtDyingOwners(): void {
    for (const [owner, d] of [...this.#dyingOwners]) this.#ownerDying(d.session, owner, d.exitCode);
    this.#armDyingLook();
  }

  /** One look at a dying owner's threads: idles the exiting ones (#idledThreads), and times and counts the look. */
  #lookAtThreads(owner: Owner): ThreadScan {
    const lookedAt = process.hrtime.bigint();
    if (owner.dyingSince) owner.dyingSince.lookNs ??= lookedAt;
    const scan = scanThreads(owner.pid);
    this.#idle(owner, yieldExitingThreads(scan.exiting));
    const moved = scan.runnable.length > 0 ? this.#moveOffThisCpu(owner, scan.runnable) : 0;
    this.#lastLookNs = Number(process.hrtime.bigint() - lookedAt);
    const looks = (owner.looks ??= { count: 0, ns: 0, moved: 0 });
    looks.count++;
    looks.ns += this.#lastLookNs;
    looks.moved += moved;
    return scan;
  }

  /**
   * Moves the dying owner's runnable threads that wait on this thread's CPU to the other CPUs
   * (moveOffCpu); they get their CPUs back with the idled ones (#restoreIdled). Returns how
   * many it moved.
   */
  #moveOffThisCpu(owner: Owner, runnable: ThreadScan['runnable']): number {
    let cpu: number;
    try {
      cpu = currentCpu();
    } catch {
      return 0;
    }
    const moved = moveOffCpu(runnable, cpu);
    if (moved.size === 0) return 0;
    const known = this.#movedThreads.get(owner);
    if (known) for (const [tid, mask] of moved) known.set(tid, mask);
    else this.#movedThreads.set(owner, moved);
    // Given back where the idled ones are (#restoreIdled): after the teardown, before the reap.
    this.#idle(owner, [...moved.keys()]);
    return moved.size;
  }

  #armDyingLook(): void {
    if (this.#dyingOwners.size === 0) this.#dyingTimer?.disarm();
    else this.#dyingTimer?.arm(Math.max(DYING_LOOK_PAUSE_NS, 4 * this.#lastLookNs));
  }

  /** Threads of dying owners on SCHED_IDLE (#ownerDying). */
  readonly #idledThreads = new Map<Owner, Set<number>>();

  /** Adds `tids`, just moved to SCHED_IDLE, to `owner`'s idled threads. */
  #idle(owner: Owner, tids: number[]): void {
    if (tids.length === 0) return;
    const known = this.#idledThreads.get(owner);
    if (known) for (const tid of tids) known.add(tid);
    else this.#idledThreads.set(owner, new Set(tids));
  }

  /** Fenced owners whose idled threads wait for the end of their teardown (#awaitTeardown). */
  readonly #teardowns = new Map<Owner, { socket: number; pidfd: number; poll: PollHandle; timer: NodeJS.Timeout }>();

  /**
   * Keeps a fenced owner's idled threads on SCHED_IDLE until its teardown hangs up its
   * control socket (`connFd`, about to be closed here: a duplicate is watched), and at most
   * TEARDOWN_IDLE_MAX_MS. The last thread frees the process's memory first (the bulk of a
   * teardown: milliseconds for a Node daemon, while the new owner starts serving), then
   * closes its files, and only then notifies its parent; moved back at that hang-up, it is
   * SCHED_NORMAL when the parent reaps it (restoreThreads says why it must be).
   */
  #awaitTeardown(owner: Owner, connFd: number): void {
    if (!this.#idledThreads.has(owner)) return;
    let socket = -1;
    let pidfd = -1;
    let poll: PollHandle;
    try {
      socket = duplicateFd(connFd);
      pidfd = duplicateFd(owner.pidfd);
      // A hang-up (POLLHUP) is reported whatever the events asked for.
      poll = watchFd(socket, { disconnect: true }, () => this.#endTeardown(owner));
    } catch {
      // EMFILE: move them back as where no teardown is awaited.
      closeAll([socket, pidfd].filter((fd) => fd >= 0));
      this.#restoreIdledSoon(owner);
      return;
    }
    this.#teardowns.set(owner, { socket, pidfd, poll, timer: setTimeout(() => this.#endTeardown(owner), TEARDOWN_IDLE_MAX_MS) });
  }

  /** Moves `owner`'s idled threads back now (unless the process has exited: they are gone) and stops awaiting its teardown. */
  #endTeardown(owner: Owner): void {
    const t = this.#teardowns.get(owner);
    if (!t) return;
    this.#teardowns.delete(owner);
    t.poll.close();
    clearTimeout(t.timer);
    // Exited, the process may be reaped: its thread ids may be reused.
    this.#restoreIdled(owner, pidfdExited(t.pidfd));
    closeFd(t.socket);
    closeFd(t.pidfd);
  }

  /**
   * Moves `owner`'s idled threads back to SCHED_NORMAL RESTORE_IDLED_AFTER_MS from now, where
   * no teardown is awaited (#awaitTeardown).
   */
  #restoreIdledSoon(owner: Owner): void {
    if (this.#idledThreads.has(owner)) setTimeout(() => this.#restoreIdled(owner), RESTORE_IDLED_AFTER_MS);
  }

  /** Moves `owner`'s idled threads back to SCHED_NORMAL (restoreThreads says why), unless it has exited (then they are gone). */
  #restoreIdled(owner: Owner, exited = owner.exited): void {
    const tids = this.#idledThreads.get(owner);
    const moved = this.#movedThreads.get(owner);
    this.#idledThreads.delete(owner);
    this.#movedThreads.delete(owner);
    if (tids && !exited) restoreThreads(tids, moved);
  }

  /** Threads of dying owners moved off the supervisor's CPU (#moveOffThisCpu), with their affinities before. */
  readonly #movedThreads = new Map<Owner, Map<number, Buffer>>();

  /** Sealed journal files written ahead of a hand-over (#prepareJournalFile), per session. */
  readonly #preparedJournals = new Map<LiveSession, { fd: number; journal: BackingJournal; version: number }>();

  /** Whether a hand-over of `s` now would send its journal in a file (journal strategy, a standby waiting). */
  #journalFileAhead(s: LiveSession): boolean {
    return this.kernel.passthrough && !this.kernel.closeAll && s.standbys.length > 0 && journalGoesInFile(s.journal.size);
  }

  /**
   * Writes the sealed memfd of `s`'s journal for the standby about to take it over, ahead of
   * the hand-over: a journal of 100k ids is 2 MB, about 1 ms to write, which #sendResumed
   * would otherwise take. #sendResumed uses it if the journal has not changed since (the
   * owner's last frames, closes of ids nobody adopted). Written while a standby waits
   * (#writeJournalAhead) and at the first look at a dying owner; closed if no hand-over
   * follows. Without a memfd then, #sendResumed tries again.
   */
  #prepareJournalFile(s: LiveSession): void {
    if (!this.#journalFileAhead(s)) return;
    if (this.#currentPreparedJournal(s)) return;
    this.#dropPreparedJournal(s);
    try {
      const fd = createSealedFile(`fusekeeper-journal-${s.name}`, s.journal.current().bytes);
      this.#preparedJournals.set(s, { fd, journal: s.journal, version: s.journal.version });
    } catch {
      // EMFILE, ENOMEM: #sendResumed writes it then, or sends frames.
    }
  }

  /** Pending #writeJournalAhead timers, per session. */
  readonly #journalAheadTimers = new Map<LiveSession, NodeJS.Timeout>();

  /**
   * Has the journal file of `s` written ahead (#prepareJournalFile) JOURNAL_AHEAD_MS from now,
   * unless a write is pending already: a crash then finds it ready, and a journal that keeps
   * changing is written at most once per JOURNAL_AHEAD_MS.
   */
  #writeJournalAhead(s: LiveSession): void {
    if (this.#journalAheadTimers.has(s) || !this.#journalFileAhead(s)) return;
    const timer = setTimeout(() => {
      this.#journalAheadTimers.delete(s);
      if (this.#sessions.get(s.name) === s && !s.recovering) this.#prepareJournalFile(s);
    }, JOURNAL_AHEAD_MS);
    timer.unref();
    this.#journalAheadTimers.set(s, timer);
  }

  /** The prepared journal file of `s` if it still holds the journal's entries. */
  #currentPreparedJournal(s: LiveSession): { fd: number } | undefined {
    const p = this.#preparedJournals.get(s);
    return p && p.journal === s.journal && p.version === s.journal.version ? p : undefined;
  }

  /** The prepared journal file of `s` if it still holds the journal's entries (the caller owns it), else -1. */
  #takePreparedJournal(s: LiveSession): number {
    const p = this.#currentPreparedJournal(s);
    if (!p) {
      this.#dropPreparedJournal(s);
      return -1;
    }
    this.#preparedJournals.delete(s);
    return p.fd;
  }

  #dropPreparedJournal(s: LiveSession): void {
    const p = this.#preparedJournals.get(s);
    if (!p) return;
    this.#preparedJournals.delete(s);
    closeFd(p.fd);
  }

  #closeExitEvents(): void {
    this.#dyingTimer?.close();
    this.#dyingTimer = null;
    for (const owner of this.#dyingOwners.keys()) this.#restoreIdledSoon(owner);
    for (const owner of [...this.#teardowns.keys()]) this.#endTeardown(owner);
    this.#dyingOwners.clear();
    this.#exitEventsPoll?.close();
    this.#exitEventsPoll = null;
    if (this.#exitEventsFd >= 0) closeFd(this.#exitEventsFd);
    this.#exitEventsFd = -1;
  }

  /**
   * Stops serving: closes the socket and every connection. Sessions whose owner is alive stay
   * mounted (the owner holds the connection); ownerless ones are unmounted, since nobody
   * would serve them once this process is gone.
   */
  stop(): void {
    if (this.#stopping) return;
    this.#stopping = true;
    if (this.#watchdog) clearInterval(this.#watchdog);
    this.#listenPoll?.close();
    this.#listenPoll = null;
    this.#closeExitEvents();
    this.#lender.stop();
    if (this.#listenFd >= 0) {
      closeFd(this.#listenFd);
      this.#listenFd = -1;
      if (!this.config.socket.startsWith('@') && !this.#listenInherited) {
        try {
          unlinkSync(this.config.socket);
        } catch {
          // already gone
        }
      }
    }
    for (const s of [...this.#sessions.values()]) {
      // The pidfd watch runs on a later turn of the loop: a managed owner just stopped by
      // SIGTERM may have exited without it having fired.
      const o = s.owner;
      if (o && !o.exited && o.pidfd >= 0 && pidfdExited(o.pidfd)) o.exited = true;
      // An owner process that still runs holds the connection, connected or not (a daemon
      // reconnecting after a supervisor restart): its mount stays.
      if (this.#ownerLive(s) || (s.owner !== null && !s.owner.exited)) {
        this.#log.info({ event: 'session.left_to_owner', session: s.name, owner: s.owner?.pid }, `leaving ${s.name} mounted: its owner still serves it`);
        this.#dropSession(s, 'supervisor stopping');
      } else {
        this.#release(s, 'supervisor stopping');
      }
    }
    for (const conn of [...this.#conns.values()]) this.#disconnect(conn, 'supervisor stopping');
    this.#log.info({ event: 'supervisor.stopped' }, 'stopped');
  }

  /** Session names. */
  get sessionNames(): string[] {
    return [...this.#sessions.keys()];
  }

  /** The JSON `fusekeeper status --json` prints. */
  status(): { supervisor: Record<string, unknown>; sessions: SessionStatus[] } {
    return {
      supervisor: {
        version: this.#version,
        socket: this.config.socket,
        processId: process.pid,
        uptimeMs: Date.now() - this.startedAt,
        strategy: this.strategy,
        kernel: this.kernel,
        exitEvents: this.#exitEventsOff ?? 'on',
        realtime: this.#realtime.status(),
        connections: this.#conns.size,
      },
      sessions: [...this.#sessions.values()].map((s) => this.#sessionStatus(s)),
    };
  }

  #sessionStatus(s: LiveSession): SessionStatus {
    const o = s.owner;
    return {
      name: s.name,
      mountpoint: s.spec.mountpoint,
      connectionId: s.connectionId ?? null,
      state: s.drain ? 'draining' : this.#ownerLive(s) ? 'owned' : 'orphaned',
      owner: o ? { pid: o.pid, uid: o.uid, connected: o.connection !== null, heartbeatAgeMs: Date.now() - o.lastHeartbeat } : null,
      generation: s.generation,
      restarts: s.restarts,
      handovers: s.handovers,
      strategy: this.strategy,
      liveBackingIds: s.journal.size,
      checkpointKeys: s.checkpoint.size,
      checkpointBytes: s.checkpointBytes,
      standbys: s.standbys.length,
      lastRecovery: s.lastRecovery,
    };
  }

  /**
   * Aborts a session's connection (applications get ENOTCONN instead of hanging), unmounts
   * it and forgets it. For a managed daemon that will not come back.
   */
  abortSession(name: string, reason: string): void {
    const s = this.#sessions.get(name);
    if (!s) return;
    if (s.connectionId !== undefined) {
      try {
        ensureFusectl();
        abortConnection(s.connectionId);
      } catch (err) {
        this.#log.error({ event: 'session.abort_failed', session: name, err: (err as Error).message }, 'aborting the connection failed');
      }
    }
    this.#log.warn({ event: 'session.aborted', session: name, reason }, `aborted ${name}: ${reason}`);
    this.#release(s, reason);
  }

  // ------------------------------------------------------------------------------------------
  // Persistence (supervisor/service.ts): what a restarted supervisor needs, and taking it back

  /** The state of session `name` to save (its fd is kept elsewhere), or null if there is none. */
  snapshot(name: string, fdName: string, ownerStartTime: (o: Owner) => string | null): PersistedSession | null {
    const s = this.#sessions.get(name);
    if (!s) return null;
    return {
      name: s.name,
      fdName,
      spec: { ...s.spec },
      connectionId: s.connectionId ?? null,
      creatorUid: s.creatorUid,
      generation: s.generation,
      restarts: s.restarts,
      handovers: s.handovers,
      owner: s.owner ? { pid: s.owner.pid, uid: s.owner.uid, startTime: ownerStartTime(s.owner) } : null,
      init: s.init,
      journal: s.journal.snapshot(),
      highestReported: s.journal.highestReported,
      checkpoint: new Map(s.checkpoint),
      lastRecovery: s.lastRecovery,
      createdAt: s.createdAt,
      savedAt: new Date().toISOString(),
    };
  }

  /**
   * Takes back a session a previous supervisor process saved, with its fd from systemd's fd
   * store. Call before `start()`. It starts orphaned: its owner (if it still runs) re-attaches
   * with STORE, or the next ACQUIRE recovers it (fencing that owner first). Throws if a
   * session of that name or on that mountpoint exists; the fds stay the caller's then.
   */
  restoreSession(r: RestoredSession): Session {
    const p = r.saved;
    if (this.#sessions.has(p.name)) throw new Error(`session ${p.name} exists`);
    if (this.#sessionOnMountpoint(p.spec.mountpoint)) throw new Error(`another session is on ${p.spec.mountpoint}`);
    const s = this.#newSession(p.name, p.spec, r.fd, p.creatorUid, p.connectionId ?? connectionId(p.spec.mountpoint));
    s.generation = p.generation;
    s.restarts = p.restarts;
    s.handovers = p.handovers;
    s.init = p.init;
    s.checkpoint = new Map(p.checkpoint);
    for (const [k, v] of s.checkpoint) s.checkpointBytes += checkpointEntrySize(k, v);
    s.journal = BackingJournal.from(p.journal, p.highestReported);
    s.lastRecovery = p.lastRecovery;
    s.createdAt = p.createdAt;
    if (r.owner) {
      const { pid, uid, pidfd } = r.owner;
      let resolveExit!: () => void;
      const exit = new Promise<void>((res) => (resolveExit = res));
      const owner: Owner = { connection: null, pid, uid, pidfd, lastHeartbeat: Date.now(), exited: false, exit };
      s.owner = owner;
      s.resolveExit = resolveExit;
      this.#watchOwner(s, owner, resolveExit);
    }
    this.#gauges();
    return s;
  }

  #hook<K extends keyof SessionHooks>(name: K, ...args: Parameters<NonNullable<SessionHooks[K]>>): void {
    const fn = this.hooks[name] as ((...a: unknown[]) => void) | undefined;
    if (!fn) return;
    try {
      fn.apply(this.hooks, args);
    } catch (err) {
      this.#log.error({ event: 'supervisor.hook_failed', hook: name, err: err instanceof Error ? err.stack : String(err) }, `session hook ${name} failed`);
    }
  }

  // ------------------------------------------------------------------------------------------
  // Connections

  #accept(): void {
    for (;;) {
      let fd: number | null;
      try {
        fd = acceptConnection(this.#listenFd);
      } catch (err) {
        this.#log.error({ event: 'supervisor.accept_failed', err: (err as Error).message }, 'accept failed');
        return;
      }
      if (fd === null) return;
      let peer: PeerCredentials;
      try {
        peer = peerCredentials(fd);
      } catch (err) {
        closeFd(fd);
        this.#log.warn({ event: 'peer.rejected', reason: 'no credentials', err: (err as Error).message }, 'rejected a peer without credentials');
        this.#metrics.rejectedPeer('no-credentials');
        continue;
      }
      try {
        setSocketBuffer(fd, 'send', SEND_BUFFER);
      } catch {
        // The default buffer works, only slower for large hand-overs.
      }
      const conn: Conn = { id: this.#nextConnId++, fd, poll: null, peer, role: null, clientName: '', session: null, out: [], pollWritable: false, acquiring: false, closed: false };
      conn.poll = watchFd(fd, { readable: true, disconnect: true }, (ev) => this.#onPoll(conn, ev));
      this.#conns.set(conn.id, conn);
      this.#log.debug({ event: 'peer.connected', conn: conn.id, peerPid: peer.pid, uid: peer.uid, gid: peer.gid }, 'peer connected');
    }
  }

  #onReadable(conn: Conn): void {
    for (let i = 0; i < 64 && !conn.closed; i++) {
      if (!this.#receiveOne(conn)) return;
    }
  }

  /** Reads and handles one frame; false when nothing more can be read now. */
  #receiveOne(conn: Conn): boolean {
    let r;
    try {
      // A view of the socket module's buffer: JOURNAL_OPEN is recorded from it, anything else copied.
      r = receiveMessage(conn.fd, { maxBytes: MAX_MESSAGE, maxFds: 4, view: true });
    } catch (err) {
      // A peer that closed with replies unread makes the next recvmsg fail with ECONNRESET,
      // once, ahead of the frames it sent before closing: read on, they and then EOF follow.
      if (peerGone(err)) return true;
      this.#disconnect(conn, `recvmsg: ${(err as Error).message}`);
      return false;
    }
    if (r.kind === 'again') return false;
    if (r.kind === 'eof') {
      this.#disconnect(conn, 'peer closed the connection');
      return false;
    }
    const fdCount = r.fds.length + r.extraFdsClosed + (r.controlTruncated ? 1 : 0);
    // JOURNAL_OPEN, the hot path: recorded from the frame's bytes (no message object, no BigInt).
    if (!r.truncated && conn.role !== null && isJournalOpenFrame(r.data, fdCount) && this.#journalOpenFrame(conn, r.data)) return true;
    const decoded = r.truncated
      ? { ok: false as const, error: new ProtocolError('EPROTO', 'oversized', `more than ${MAX_MESSAGE} bytes`) }
      : decodeMessage(Buffer.from(r.data), fdCount, { from: 'client' });
    if (!decoded.ok) {
      closeAll(r.fds);
      this.#protocolError(conn, decoded.error);
      return false;
    }
    const fds = r.fds;
    try {
      this.#handle(conn, decoded.message, decoded.requestId, fds);
    } catch (err) {
      // The handlers own `fds` and close them on every path; this is a bug net.
      this.#log.error({ event: 'supervisor.internal_error', conn: conn.id, err: err instanceof Error ? err.stack : String(err) }, 'internal error handling a message');
      if (decoded.requestId !== 0) this.#reply(conn, decoded.requestId, errorMessage('EIO', `internal error: ${(err as Error).message}`));
    }
    return true;
  }

  #protocolError(conn: Conn, error: ProtocolError): void {
    const info = error.typeCode >= 0 ? messageTypeByCode(error.typeCode) : undefined;
    const requestId = info && (info.direction === 'request' || error.requestId !== 0) ? error.requestId : 0;
    this.#log.warn({ event: 'peer.protocol_error', conn: conn.id, peerPid: conn.peer.pid, uid: conn.peer.uid, reason: error.reason, detail: error.message }, `protocol error: ${error.message}`);
    this.#metrics.rejectedPeer('protocol-error');
    this.#send(conn, encodeMessage(errorMessage('EPROTO', error.message), requestId));
    this.#disconnect(conn, `protocol error: ${error.reason}`);
  }

  #disconnect(conn: Conn, reason: string): void {
    if (conn.closed) return;
    conn.closed = true;
    conn.poll?.close();
    conn.poll = null;
    for (const f of conn.out) closeAll(f.fds);
    conn.out = [];
    closeFd(conn.fd);
    this.#conns.delete(conn.id);
    // A CLI that asked for a drain may go away; the drain goes on and its reply is dropped.
    for (const s of this.#sessions.values()) s.standbys = s.standbys.filter((w) => w.conn !== conn);
    const s = conn.session;
    conn.session = null;
    if (s?.owner?.connection === conn.id) {
      s.owner.connection = null;
      // A waiting standby gets ACQUIRED in this turn (#serveStandby); the lines wait for it.
      holdLogsThisTurn(this.#log);
      const looks = s.owner.looks ? { looks: s.owner.looks.count, lookingUs: Math.round(s.owner.looks.ns / 1000), movedOffCpu: s.owner.looks.moved } : {};
      // CLOCK_MONOTONIC ns, to line the death up with other processes' clocks.
      const dying = s.owner.dyingSince;
      const since = dying ? { firstExitAt: String(dying.exitNs), ...(dying.lookNs === undefined ? {} : { firstLookAt: String(dying.lookNs) }) } : {};
      this.#log.info({ event: 'owner.disconnected', session: s.name, owner: s.owner.pid, reason, ...looks, ...since }, `owner of ${s.name} disconnected: ${reason}`);
      this.#gauges();
      this.#serveStandby(s);
    } else {
      this.#log.debug({ event: 'peer.disconnected', conn: conn.id, reason }, 'peer disconnected');
    }
  }

  /**
   * Sends a frame, or queues it while the socket is full. A peer that leaves more than
   * MAX_QUEUED_FRAMES unread is disconnected, except for an ACQUIRE state sequence
   * (`sequence`): in frames (no memfd could be made) that is one frame per checkpoint key,
   * bounded by the session's own state (MAX_CHECKPOINT_BYTES), and a new owner reads it only
   * after the supervisor has queued it all (a checkpoint of 6000 keys was refused this way in
   * the crash-loop harness).
   */
  #send(conn: Conn, data: Buffer, fd?: number, sequence = false): void {
    if (conn.closed) return;
    const fds = fd === undefined ? [] : [fd];
    if (conn.out.length === 0) {
      try {
        if (sendMessage(conn.fd, { data, fds }) !== null) return;
      } catch (err) {
        // The peer is gone; frames it sent before going are still to be read (see #receiveOne).
        if (!peerGone(err)) this.#disconnect(conn, `sendmsg: ${(err as Error).message}`);
        return;
      }
    }
    if (conn.out.length >= MAX_QUEUED_FRAMES && !sequence) {
      this.#disconnect(conn, 'peer does not read its replies');
      return;
    }
    conn.out.push({ data, fds: fds.map(duplicateFd) });
    this.#pollWritable(conn, true);
  }

  /** Sends queued frames while the socket has room; polls for room again when it has none. */
  #flush(conn: Conn): void {
    while (conn.out.length > 0 && !conn.closed) {
      const f = conn.out[0]!;
      let sent: number | null;
      try {
        sent = sendMessage(conn.fd, f);
      } catch (err) {
        if (peerGone(err)) {
          for (const q of conn.out) closeAll(q.fds);
          conn.out = [];
        } else {
          this.#disconnect(conn, `sendmsg: ${(err as Error).message}`);
        }
        break;
      }
      if (sent === null) break;
      conn.out.shift();
      closeAll(f.fds);
    }
    this.#pollWritable(conn, conn.out.length > 0 && !conn.closed);
  }

  #pollWritable(conn: Conn, on: boolean): void {
    if (conn.pollWritable === on || !conn.poll) return;
    conn.pollWritable = on;
    conn.poll.setEvents({ readable: true, disconnect: true, writable: on });
  }

  #onPoll(conn: Conn, ev: PollEvents): void {
    if (ev.writable) this.#flush(conn);
    if (!ev.writable || ev.readable || ev.disconnect) this.#onReadable(conn);
  }

  #reply(conn: Conn, requestId: number, msg: ControlMessage): void {
    this.#send(conn, encodeMessage(msg, requestId));
  }

  // ------------------------------------------------------------------------------------------
  // Dispatch

  #handle(conn: Conn, msg: ControlMessage, requestId: number, fds: number[]): void {
    this.#log.trace({ event: 'peer.message', conn: conn.id }, describeMessage(msg, requestId));
    if (conn.role === null) {
      closeAll(fds);
      if (msg.type !== 'hello') {
        this.#protocolError(conn, new ProtocolError('EPROTO', 'bad sequence', `${msg.type.toUpperCase()} before HELLO`, requestId, -1));
        return;
      }
      this.#hello(conn, msg, requestId);
      return;
    }
    switch (msg.type) {
      case 'hello':
        this.#protocolError(conn, new ProtocolError('EPROTO', 'bad sequence', 'second HELLO'));
        return;
      case 'acquire':
      case 'store':
      case 'adopt':
      case 'release':
      case 'status':
      case 'drain':
        this.#request(conn, msg, requestId, fds);
        return;
      default:
        this.#oneWay(conn, msg, requestId);
    }
  }

  #hello(conn: Conn, msg: MessageOf<'hello'>, requestId: number): void {
    if (msg.minVersion > PROTOCOL_VERSION || msg.maxVersion < PROTOCOL_VERSION) {
      this.#reply(conn, requestId, errorMessage('ENOTSUP', `this supervisor speaks protocol version ${PROTOCOL_VERSION}, the client ${msg.minVersion}..${msg.maxVersion}`));
      this.#disconnect(conn, 'no common protocol version');
      return;
    }
    conn.role = msg.role;
    conn.clientName = msg.clientName;
    const features = (this.kernel.closeAll ? FEATURE_CLOSE_ALL : 0) | (this.kernel.resend ? FEATURE_RESEND : 0);
    this.#reply(conn, requestId, { type: 'hello_ok', version: PROTOCOL_VERSION, supervisorVersion: this.#version, features });
  }

  /** Requests: a Refusal becomes ERROR on the requestId; fds are closed unless stored. */
  #request(conn: Conn, msg: ControlMessage, requestId: number, fds: number[]): void {
    const refuse = (err: unknown): void => {
      if (err instanceof Refusal) {
        if (err.code === 'EACCES' || err.code === 'EPERM') {
          this.#metrics.rejectedPeer(err.code.toLowerCase());
          this.#log.warn({ event: 'peer.refused', conn: conn.id, peerPid: conn.peer.pid, uid: conn.peer.uid, request: msg.type, code: err.code }, err.message);
        }
        this.#reply(conn, requestId, errorMessage(err.code, err.message));
        return;
      }
      throw err;
    };
    try {
      switch (msg.type) {
        case 'acquire':
          this.#acquire(conn, msg, requestId).catch(refuse);
          return;
        case 'store':
          this.#store(conn, msg, requestId, fds[0]!);
          return;
        case 'adopt':
          this.#adopt(conn, msg, requestId);
          return;
        case 'release':
          this.#releaseRequest(conn, msg.name, requestId);
          return;
        case 'status':
          this.#reply(conn, requestId, { type: 'status_reply', json: this.#statusJson() });
          return;
        case 'drain':
          this.#drainRequest(conn, msg.name, requestId);
          return;
        default:
          return;
      }
    } catch (err) {
      refuse(err);
    }
  }

  /**
   * Records JOURNAL_OPEN `frame` (isJournalOpenFrame accepted it) if `conn` owns its session;
   * false, with nothing done, otherwise (the generic path then answers it).
   */
  #journalOpenFrame(conn: Conn, frame: Buffer): boolean {
    const s = conn.session;
    if (!s || s.owner?.connection !== conn.id) return false;
    // `frame` may be a view of the receive buffer: record it before anything can send.
    if (!this.#journalFull(conn, s, frame.readUInt32LE(HEADER_SIZE))) s.journal.openWire(frame, HEADER_SIZE);
    this.#hook('changed', s, false);
    this.#writeJournalAhead(s);
    return true;
  }

  /** True, after a protocol error, when JOURNAL_OPEN of `id` would grow a full journal. */
  #journalFull(conn: Conn, s: LiveSession, id: number): boolean {
    if (s.journal.size < MAX_JOURNAL_FILE_ENTRIES || s.journal.has(id)) return false;
    this.#protocolError(conn, new ProtocolError('EPROTO', 'oversized', `journal of ${s.name} is full (${MAX_JOURNAL_FILE_ENTRIES} ids)`));
    return true;
  }

  #oneWay(conn: Conn, msg: ControlMessage, requestId: number): void {
    const s = conn.session;
    if (!s || s.owner?.connection !== conn.id) {
      this.#protocolError(conn, new ProtocolError('EPROTO', 'bad sequence', `${msg.type.toUpperCase()} on a connection that owns no session`, requestId));
      return;
    }
    if (msg.type !== 'heartbeat' && msg.type !== 'drained') this.#hook('changed', s, false);
    switch (msg.type) {
      case 'init_save':
        s.init = msg.params;
        return;
      case 'journal_open':
        if (this.#journalFull(conn, s, msg.id)) return;
        s.journal.open({ id: msg.id, dev: msg.dev, ino: msg.ino });
        this.#writeJournalAhead(s);
        return;
      case 'journal_close':
        s.journal.close(msg.id);
        this.#writeJournalAhead(s);
        return;
      case 'checkpoint_put': {
        const old = s.checkpoint.get(msg.key);
        const delta = checkpointEntrySize(msg.key, msg.value) - (old ? checkpointEntrySize(msg.key, old) : 0);
        if (s.checkpointBytes + delta > MAX_CHECKPOINT_BYTES) {
          if (msg.ack) this.#reply(conn, requestId, errorMessage('ENOSPC', `checkpoint of ${s.name} would exceed ${MAX_CHECKPOINT_BYTES} bytes`));
          else this.#protocolError(conn, new ProtocolError('EPROTO', 'oversized', `checkpoint of ${s.name} is full`));
          return;
        }
        s.checkpoint.set(msg.key, msg.value);
        s.checkpointBytes += delta;
        if (msg.ack) this.#reply(conn, requestId, { type: 'ok' });
        return;
      }
      case 'checkpoint_delete': {
        const old = s.checkpoint.get(msg.key);
        if (old) {
          s.checkpoint.delete(msg.key);
          s.checkpointBytes -= checkpointEntrySize(msg.key, old);
        }
        if (msg.ack) this.#reply(conn, requestId, { type: 'ok' });
        return;
      }
      case 'heartbeat':
        s.owner.lastHeartbeat = Date.now();
        s.heartbeats++;
        return;
      case 'drained':
        this.#drained(s);
        return;
      default:
        this.#protocolError(conn, new ProtocolError('EPROTO', 'wrong direction', `${msg.type.toUpperCase()} is not sent by clients`));
    }
  }

  // ------------------------------------------------------------------------------------------
  // Authorisation

  /** May `peer` acquire, drain or release session `s`? Root, its creator, configured uids/gids. */
  #mayUse(peer: PeerCredentials, s: Session): boolean {
    return peer.uid === 0 || peer.uid === s.creatorUid || this.config.allowedUids.includes(peer.uid) || this.config.allowedGids.includes(peer.gid);
  }

  #requireDaemon(conn: Conn, what: string): void {
    if (conn.role !== 'daemon') throw new Refusal('EPERM', `${what} needs a daemon connection (this one said role ${conn.role})`);
    if (conn.session) throw new Refusal('EBUSY', `this connection already owns session ${conn.session.name}; open one connection per session`);
    if (conn.acquiring) throw new Refusal('EBUSY', 'this connection is already acquiring a session');
  }

  /** A fresh mount by a non-root peer: only on a directory it owns, as itself. */
  #checkMountAllowed(peer: PeerCredentials, spec: MountSpec): void {
    let st;
    try {
      st = statSync(spec.mountpoint);
    } catch {
      throw new Refusal('EINVAL', `mountpoint ${spec.mountpoint} does not exist`);
    }
    if (!st.isDirectory()) throw new Refusal('EINVAL', `mountpoint ${spec.mountpoint} is not a directory`);
    if (peer.uid === 0) return;
    if (st.uid !== peer.uid) throw new Refusal('EACCES', `mountpoint ${spec.mountpoint} belongs to uid ${st.uid}, not to the peer's uid ${peer.uid}`);
    if (spec.uid !== peer.uid || spec.gid !== peer.gid) throw new Refusal('EACCES', `a peer of uid ${peer.uid} gid ${peer.gid} may only mount as itself (spec says ${spec.uid}:${spec.gid})`);
    if (spec.allowOther) throw new Refusal('EPERM', 'allow_other is only for root peers');
  }

  #sessionOnMountpoint(mountpoint: string): LiveSession | undefined {
    for (const s of this.#sessions.values()) if (s.spec.mountpoint === mountpoint) return s;
    return undefined;
  }

  /**
   * The FUSE mount looking up `path` would pass through (a session's, or any other), or
   * undefined. A lookup inside a FUSE mount waits for its daemon; for a session whose owner
   * died or hangs, or a foreign mount nobody answers, stat(2)/mount(2) on this thread would
   * stop the whole supervisor. So this resolves the path by hand (lstat, readlink) and stops
   * before looking anything up at or below a FUSE mountpoint (sessions by their spec, others
   * from /proc/self/mountinfo, never by stat), spelled as given or as resolved.
   */
  #fuseAlongPath(path: string): { session: LiveSession } | { mountpoint: string } | undefined {
    const given = path.split('/').filter((c) => c !== '');
    for (let i = 0; i <= given.length; i++) {
      const prefix = `/${given.slice(0, i).join('/')}`;
      const s = this.#sessionOnMountpoint(prefix);
      if (s) return { session: s };
      if (isFuseMount(prefix)) return { mountpoint: prefix };
    }
    const done: string[] = [];
    const todo = [...given];
    for (let hops = 0; todo.length > 0; ) {
      const c = todo.shift()!;
      if (c === '.') continue;
      if (c === '..') {
        done.pop();
        continue;
      }
      done.push(c);
      const p = `/${done.join('/')}`;
      const s = this.#sessionOnMountpoint(p);
      if (s) return { session: s };
      if (isFuseMount(p)) return { mountpoint: p };
      let link: string;
      try {
        if (!lstatSync(p).isSymbolicLink()) continue;
        link = readlinkSync(p);
      } catch {
        return undefined; // missing: the stat that follows reports it
      }
      if (++hops > 40) return undefined; // ELOOP, likewise
      done.pop();
      if (link.startsWith('/')) done.length = 0;
      todo.unshift(...link.split('/').filter((x) => x !== ''));
    }
    return undefined;
  }

  // ------------------------------------------------------------------------------------------
  // Sessions

  #newSession(name: string, spec: MountSpec, fd: number, creatorUid: number, connId: number | undefined = connectionId(spec.mountpoint)): LiveSession {
    const s: LiveSession = {
      name,
      spec,
      fd,
      connectionId: connId,
      generation: 1,
      creatorUid,
      owner: null,
      init: null,
      checkpoint: new Map(),
      journal: new BackingJournal(),
      restarts: 0,
      lastRecovery: null,
      createdAt: new Date().toISOString(),
      checkpointBytes: 0,
      adoptTimer: null,
      probedAtHandover: 0,
      pendingClose: null,
      recovering: false,
      handovers: 0,
      drain: null,
      standbys: [],
      ownerWatch: null,
      resolveExit: null,
      heartbeats: 0,
    };
    this.#sessions.set(name, s);
    return s;
  }

  /** Makes `conn` the owner of `s`: pidfd watch on its process. */
  #setOwner(s: LiveSession, conn: Conn): void {
    let pidfd = -1;
    let exited = false;
    try {
      pidfd = pidfdOpen(conn.peer.pid);
    } catch {
      exited = true; // ESRCH: the process is already gone
    }
    let resolveExit!: () => void;
    const exit = new Promise<void>((r) => (resolveExit = r));
    const owner: Owner = { connection: conn.id, pid: conn.peer.pid, uid: conn.peer.uid, pidfd, lastHeartbeat: Date.now(), exited, exit };
    s.owner = owner;
    s.heartbeats = 0;
    s.resolveExit = resolveExit;
    conn.session = s;
    if (exited) resolveExit();
    else {
      this.#watchOwner(s, owner, resolveExit);
    }
    this.#gauges();
  }

  /** Watches the owner's pidfd: its exit frees the session for the next owner (or a standby). */
  #watchOwner(s: LiveSession, owner: Owner, resolveExit: () => void): void {
    s.ownerWatch = watchFd(owner.pidfd, { readable: true }, () => {
      if (s.owner !== owner) return;
      owner.exited = true;
      s.ownerWatch?.close();
      s.ownerWatch = null;
      resolveExit();
      holdLogsThisTurn(this.#log);
      this.#log.info({ event: 'owner.exited', session: s.name, owner: owner.pid }, `owner ${owner.pid} of ${s.name} exited`);
      this.#gauges();
      this.#serveStandby(s);
    });
  }

  /** Forgets the owner record (its connection is closed separately). */
  #forgetOwner(s: LiveSession): void {
    s.ownerWatch?.close();
    s.ownerWatch = null;
    if (s.owner && s.owner.pidfd >= 0) closeFd(s.owner.pidfd);
    s.resolveExit?.();
    s.resolveExit = null;
    s.owner = null;
  }

  /** An owner that is connected, alive and (if it ever sent heartbeats) not silent. */
  #ownerLive(s: LiveSession): boolean {
    const o = s.owner;
    if (!o || o.exited || o.connection === null) return false;
    return !(s.heartbeats > 0 && Date.now() - o.lastHeartbeat > this.config.heartbeatTimeoutMs);
  }

  async #acquire(conn: Conn, msg: MessageOf<'acquire'>, requestId: number): Promise<void> {
    this.#requireDaemon(conn, 'ACQUIRE');
    const existing = this.#sessions.get(msg.name);
    if (!existing) {
      this.#acquireFresh(conn, msg, requestId);
      return;
    }
    const s = existing;
    if (!this.#mayUse(conn.peer, s)) throw new Refusal('EACCES', `session ${s.name} belongs to uid ${s.creatorUid}`);
    if (!sameSpec(s.spec, msg.mount)) throw new Refusal('EINVAL', `the mount spec differs from session ${s.name}'s (${s.spec.mountpoint})`);
    if (s.recovering || s.drain || this.#ownerLive(s)) {
      if (!msg.standby) {
        if (s.recovering) throw new Refusal('EAGAIN', `session ${s.name} is being recovered`);
        throw new Refusal('EBUSY', `session ${s.name} has a live owner (process ${s.owner?.pid})`);
      }
      conn.acquiring = true;
      s.standbys.push({ conn, requestId });
      this.#writeJournalAhead(s);
      this.#log.info({ event: 'standby.waiting', session: s.name, standby: conn.peer.pid }, `standby ${conn.peer.pid} waits for ${s.name}`);
      return;
    }
    await this.#recover(s, conn, requestId);
  }

  #acquireFresh(conn: Conn, msg: MessageOf<'acquire'>, requestId: number): void {
    const spec = msg.mount;
    if (this.#sessions.size >= MAX_SESSIONS) throw new Refusal('ENOSPC', `at most ${MAX_SESSIONS} sessions`);
    if (this.#sessionOnMountpoint(spec.mountpoint)) throw new Refusal('EEXIST', `another session is mounted on ${spec.mountpoint}`);
    // Checked before any stat: a FUSE filesystem mounted there may never answer one.
    if (findMount(spec.mountpoint)) throw new Refusal('EBUSY', `something is already mounted on ${spec.mountpoint}`);
    const outer = this.#fuseAlongPath(spec.mountpoint);
    if (outer) {
      const where = 'session' in outer ? `session ${outer.session.name}'s mount on ${outer.session.spec.mountpoint}` : `the FUSE mount on ${outer.mountpoint}`;
      throw new Refusal('EINVAL', `mountpoint ${spec.mountpoint} lies inside ${where}; the supervisor does not look up paths through FUSE mounts`);
    }
    this.#checkMountAllowed(conn.peer, spec);
    let fd: number;
    try {
      fd = openFuseDevice();
    } catch (err) {
      throw new Refusal('EIO', `cannot open /dev/fuse: ${(err as Error).message}`);
    }
    try {
      mountFuse(fd, {
        mountpoint: spec.mountpoint,
        fsName: spec.fsName,
        subtype: spec.subtype,
        rootMode: spec.rootMode,
        userId: spec.uid,
        groupId: spec.gid,
        allowOther: spec.allowOther,
        defaultPermissions: spec.defaultPermissions,
        readOnly: spec.readOnly,
        ...(spec.maxRead > 0 ? { maxRead: spec.maxRead } : {}),
      });
    } catch (err) {
      closeFd(fd);
      const e = err as Error & { errno?: string };
      throw new Refusal(e.errno === 'EPERM' ? 'EPERM' : 'EIO', `mounting ${spec.mountpoint} failed: ${e.message}`);
    }
    const s = this.#newSession(msg.name, spec, fd, conn.peer.uid);
    this.#setOwner(s, conn);
    this.#hook('added', s);
    this.#hook('changed', s, true);
    const frames = encodeAcquireSequence(requestId, {
      acquired: { type: 'acquired', generation: 1, resumed: false, strategy: this.strategy },
      initParams: null,
      checkpoint: new Map(),
      journal: [],
    });
    this.#sendSequence(conn, frames, s.fd);
    this.#log.info({ event: 'session.created', session: s.name, mountpoint: spec.mountpoint, owner: conn.peer.pid, uid: conn.peer.uid, connectionId: s.connectionId }, `session ${s.name} mounted on ${spec.mountpoint}`);
    this.#gauges();
  }

  #sendSequence(conn: Conn, frames: Buffer[], fd: number): void {
    frames.forEach((f, i) => this.#send(conn, f, i === 0 ? fd : undefined));
  }

  /**
   * A resumed ACQUIRE reply. A journal longer than one frame and a checkpoint of many keys go
   * in sealed memfds (JOURNAL_FILE, CHECKPOINT_FILE): one fd each instead of a frame per 3275
   * entries or per key, which the peer would have to receive and decode one by one, and which
   * this process would hold queued meanwhile. Without a memfd (EMFILE, ENOMEM) they go in
   * frames. `preparedJournal` (#takePreparedJournal: the journal file written already, or -1)
   * is this method's to close.
   */
  #sendResumed(conn: Conn, requestId: number, s: LiveSession, strategy: CleanupStrategy, preparedJournal: number): { checkpoint: 'file' | 'frames'; journal: 'file' | 'frames' } {
    const state = { acquired: { type: 'acquired' as const, generation: s.generation, resumed: true, strategy }, initParams: s.init, checkpoint: s.checkpoint, journal: s.journal.current() };
    const sealed = (what: 'checkpoint' | 'journal', contents: () => Buffer): number => {
      try {
        return createSealedFile(`fusekeeper-${what}-${s.name}`, contents());
      } catch (err) {
        this.#log.warn({ event: `${what}.file_failed`, session: s.name, err: (err as Error).message }, `${what} of ${s.name} goes in frames: ${(err as Error).message}`);
        return -1;
      }
    };
    const checkpointFile = checkpointGoesInFile(state.checkpoint.size) ? sealed('checkpoint', () => encodeCheckpointFile(state.checkpoint)) : -1;
    const journalFile = journalGoesInFile(state.journal.length) ? (preparedJournal >= 0 ? preparedJournal : sealed('journal', () => state.journal.bytes)) : -1;
    if (journalFile !== preparedJournal && preparedJournal >= 0) closeFd(preparedJournal);
    try {
      const frames = encodeAcquireSequence(requestId, state, { checkpointFile: checkpointFile >= 0, journalFile: journalFile >= 0 });
      const fds = { 'fuse-device': s.fd, 'checkpoint-file': checkpointFile, 'journal-file': journalFile };
      for (const f of frames) {
        const attach = acquireAttachment(f);
        this.#send(conn, f, attach === null ? undefined : fds[attach], true);
      }
      return { checkpoint: checkpointFile >= 0 ? 'file' : 'frames', journal: journalFile >= 0 ? 'file' : 'frames' };
    } finally {
      if (checkpointFile >= 0) closeFd(checkpointFile);
      if (journalFile >= 0) closeFd(journalFile);
    }
  }

  /**
   * The recovery sequence for `conn` taking over orphaned session `s`: fence, clean, replay,
   * hand over with generation + 1.
   */
  async #recover(s: LiveSession, conn: Conn, requestId: number): Promise<void> {
    this.#realtime.recovering();
    s.recovering = true;
    conn.acquiring = true;
    let loan: RealtimeLoan | string = 'the recovery failed first';
    const started = process.hrtime.bigint();
    // Microseconds per step, for the log: where a slow hand-over spent its time.
    const stepsUs: Record<string, number> = {};
    let lapAt = started;
    const lap = (step: string): void => {
      const now = process.hrtime.bigint();
      stepsUs[step] = Number(now - lapAt) / 1000;
      lapAt = now;
    };
    const old = s.owner;
    const drained = s.drain?.drained === true || (old !== null && this.#drainedOwners.has(old));
    let fenced = false;
    try {
      if (old) {
        fenced = await fenceOwner(old, this.config.fenceTimeoutMs);
        lap('fence');
        if (fenced) {
          this.#metrics.fencedOwner();
          this.#log.warn({ event: 'owner.fenced', session: s.name, owner: old.pid }, `killed owner ${old.pid} of ${s.name}: alive but disconnected or silent`);
        }
        const oldConn = old.connection === null ? undefined : this.#conns.get(old.connection);
        if (oldConn) {
          // Its last journal and checkpoint messages are still queued; apply them first.
          while (!oldConn.closed && this.#receiveOne(oldConn));
          this.#disconnect(oldConn, 'replaced by a new owner');
        }
        this.#forgetOwner(s);
        lap('lastFrames');
      }
      if (conn.closed) throw new RecoveryError('fence', 'the new owner disconnected during recovery');
      this.#finishPendingCloses(s);
      const cleanup = this.kernel.passthrough ? cleanBacking(s, this.kernel.closeAll) : { strategy: 'none' as const, closed: 0, probed: 0, alreadyGone: 0 };
      lap('cleanup');
      const resent = this.kernel.resend;
      if (resent) replayInFlight(s);
      lap('resend');
      s.generation++;
      if (drained) s.handovers++;
      else s.restarts++;
      s.probedAtHandover = cleanup.probed;
      if (cleanup.strategy === 'journal') s.journal.handOver();
      else s.journal.settle();
      this.#setOwner(s, conn);
      conn.acquiring = false;
      lap('newOwner');
      const preparedJournal = this.#takePreparedJournal(s);
      const sentAs = this.#sendResumed(conn, requestId, s, cleanup.strategy, preparedJournal);
      lap('send');
      // Lent once the last frame is out: a supervisor that is itself SCHED_NORMAL at the moment
      // (paused for being busy) would otherwise be preempted by the new owner between its
      // frames. With 100k journaled ids, a crash soon after the owner registered them came
      // while the supervisor was paused, and in a third of the rounds each sendmsg took
      // 0.1-4 ms as the woken owner took the CPU (send step 2.8-6.9 ms, not 0.1-0.3). The
      // owner, woken by the first frame, gets the priority once the rest are sent.
      loan = this.config.takeoverRealtimeMs > 0 ? this.#lender.lend(conn.peer.pid, this.config.realtimePriority) : 'takeoverRealtimeMs is 0';
      const durationUs = Number(process.hrtime.bigint() - started) / 1000;
      // Stepping down lets the new owner, and the applications it wakes, run at once where
      // they share a CPU with this thread. It comes before the state save, which writes and
      // fsyncs the session's file: 0.3 ms (median) on tmpfs, 1.6-2.8 ms and up to 14 on ext4
      // (failover bench, warm).
      this.#realtime.handedOver();
      s.lastRecovery = { at: new Date().toISOString(), durationUs: Math.round(durationUs), generation: s.generation, fenced, cleanup, resent };
      const savingAt = process.hrtime.bigint();
      this.#hook('changed', s, true);
      const savedUs = Math.round(Number(process.hrtime.bigint() - savingAt) / 1000);
      if (s.journal.handingOver) this.#armAdoptTimer(s);
      this.#metrics.recovery(cleanup.strategy, 'ok', durationUs / 1e6);
      this.#metrics.backingIds('probed', cleanup.probed);
      if (cleanup.strategy === 'close-all') this.#metrics.backingIds('closed', cleanup.closed);
      this.#log.info(
        {
          event: 'session.recovered', session: s.name, generation: s.generation, owner: conn.peer.pid, durationUs: Math.round(durationUs), fenced, drained, cleanup, resent, journal: s.journal.size, checkpointKeys: s.checkpoint.size, sentAs, journalPrepared: preparedJournal >= 0, stepsUs, savedUs,
          // CLOCK_MONOTONIC ns, to line the recovery up with other processes' clocks.
          startedAt: String(started),
          ownerRealtime: typeof loan === 'string' ? `not lent: ${loan}` : `SCHED_FIFO ${this.config.realtimePriority} for ${this.config.takeoverRealtimeMs} ms`,
        },
        `${s.name} handed to ${conn.peer.pid} as generation ${s.generation} in ${Math.round(durationUs)} µs`,
      );
      if (typeof loan !== 'string') loan.endAfter(this.config.takeoverRealtimeMs);
    } catch (err) {
      if (typeof loan !== 'string') loan.end();
      conn.acquiring = false;
      this.#metrics.recovery(this.strategy, 'failed', Number(process.hrtime.bigint() - started) / 1e9);
      this.#log.error({ event: 'session.recovery_failed', session: s.name, err: (err as Error).message }, `recovery of ${s.name} failed: ${(err as Error).message}`);
      this.#reply(conn, requestId, errorMessage('EIO', `recovery of ${s.name} failed: ${(err as Error).message}`));
    } finally {
      if (old) this.#drainedOwners.delete(old);
      this.#dropPreparedJournal(s);
      s.recovering = false;
      this.#gauges();
    }
    this.#serveStandby(s);
  }

  readonly #drainedOwners = new WeakSet<Owner>();

  #armAdoptTimer(s: LiveSession): void {
    if (s.adoptTimer) clearTimeout(s.adoptTimer);
    s.adoptTimer = setTimeout(() => {
      s.adoptTimer = null;
      if (!s.journal.handingOver) return;
      const r = closeUnadopted(s.fd, s.journal, s.journal.settle());
      this.#metrics.backingIds('closed', r.closed);
      this.#log.warn({ event: 'journal.adopt_timeout', session: s.name, closed: r.closed }, `owner of ${s.name} did not ADOPT within ${this.config.adoptTimeoutMs} ms; closed ${r.closed} inherited backing ids`);
    }, this.config.adoptTimeoutMs);
    s.adoptTimer.unref();
  }

  /** Hands a free session to the first waiting standby. */
  #serveStandby(s: LiveSession): void {
    if (s.recovering || s.drain || this.#ownerLive(s) || this.#stopping) return;
    const next = s.standbys.shift();
    if (!next) return;
    if (next.conn.closed) {
      this.#serveStandby(s);
      return;
    }
    void this.#recover(s, next.conn, next.requestId);
  }

  #store(conn: Conn, msg: MessageOf<'store'>, requestId: number, fd: number): void {
    let existing: LiveSession | undefined;
    try {
      this.#requireDaemon(conn, 'STORE');
      if (classifyFd(fd) !== 'fuse-device') throw new Refusal('EBADF', 'the fd attached to STORE is not a /dev/fuse device (10:229)');
      existing = this.#sessions.get(msg.name);
      if (existing) {
        this.#checkReattach(conn, existing, msg, fd);
      } else {
        if (this.#sessionOnMountpoint(msg.mount.mountpoint)) throw new Refusal('EEXIST', `another session is mounted on ${msg.mount.mountpoint}`);
        if (this.#sessions.size >= MAX_SESSIONS) throw new Refusal('ENOSPC', `at most ${MAX_SESSIONS} sessions`);
        const m = findMount(msg.mount.mountpoint);
        if (!m || !(m.fstype === 'fuse' || m.fstype.startsWith('fuse.'))) throw new Refusal('EBADF', `no FUSE filesystem is mounted on ${msg.mount.mountpoint}`);
        // The owner of a FUSE mount is its user_id= option; a stat would go to the peer's own
        // daemon, which need not answer (and without allow_other refuses root).
        if (conn.peer.uid !== 0 && (msg.mount.uid !== conn.peer.uid || fuseMountOwner(m) !== conn.peer.uid)) {
          throw new Refusal('EACCES', `a peer of uid ${conn.peer.uid} may only store its own mounts`);
        }
      }
    } catch (err) {
      closeFd(fd);
      throw err;
    }
    if (existing) {
      this.#reattach(conn, existing, requestId, fd);
      return;
    }
    const s = this.#newSession(msg.name, msg.mount, fd, conn.peer.uid);
    this.#setOwner(s, conn);
    this.#hook('added', s);
    this.#hook('changed', s, true);
    this.#reply(conn, requestId, { type: 'stored', generation: s.generation });
    this.#log.info({ event: 'session.stored', session: s.name, mountpoint: msg.mount.mountpoint, owner: conn.peer.pid, uid: conn.peer.uid }, `session ${s.name} stored by ${conn.peer.pid}`);
  }

  /**
   * STORE of a session that exists: its owner re-registering (after a supervisor restart, or a
   * broken connection), see docs/protocol.md. Allowed when the session has no live owner, the
   * peer may use it, the spec matches, the fd is the very open file the supervisor holds
   * (kcmp), and the peer is the recorded owner process (or the recorded owner has exited).
   * Throws the refusal (EEXIST); `fd` stays the caller's.
   */
  #checkReattach(conn: Conn, s: LiveSession, msg: MessageOf<'store'>, fd: number): void {
    if (s.recovering || s.drain || this.#ownerLive(s)) throw new Refusal('EEXIST', `session ${s.name} exists and has an owner`);
    if (!this.#mayUse(conn.peer, s)) throw new Refusal('EEXIST', `session ${s.name} exists (it belongs to uid ${s.creatorUid})`);
    if (!sameSpec(s.spec, msg.mount)) throw new Refusal('EEXIST', `session ${s.name} exists with another mount spec`);
    const o = s.owner;
    const ownerRuns = o !== null && !o.exited;
    if (ownerRuns && o.pid !== conn.peer.pid) throw new Refusal('EEXIST', `session ${s.name} exists; its owner ${o.pid} still runs`);
    let same: boolean;
    try {
      same = sameOpenFile(fd, s.fd);
    } catch (err) {
      // No kcmp (CONFIG_KCMP off): only the recorded owner process itself may re-attach.
      if (!(err instanceof NativeError && err.code === 'ENOSYS')) throw err;
      same = ownerRuns && o.pid === conn.peer.pid;
    }
    if (!same) throw new Refusal('EEXIST', `session ${s.name} exists on another FUSE connection`);
  }

  /**
   * Re-attaches the STORE's peer as the owner of `s` (checked by #checkReattach): same
   * generation; the checkpoint and journal are reset, since the owner re-sends its complete
   * state next. Closes `fd` (the supervisor keeps its own copy of the same open file).
   */
  #reattach(conn: Conn, s: LiveSession, requestId: number, fd: number): void {
    closeFd(fd);
    const o = s.owner;
    if (o && !o.exited && o.pid === conn.peer.pid) {
      o.connection = conn.id;
      o.lastHeartbeat = Date.now();
      s.heartbeats = 0;
      conn.session = s;
    } else {
      this.#forgetOwner(s);
      this.#setOwner(s, conn);
    }
    // The owner re-sends INIT_SAVE, every checkpoint key and every live journal entry; what is
    // here may be stale (saved before the restart). The highest reported id stays.
    this.#finishPendingCloses(s);
    s.checkpoint.clear();
    s.checkpointBytes = 0;
    s.journal.clear();
    if (s.adoptTimer) clearTimeout(s.adoptTimer);
    s.adoptTimer = null;
    s.journal.settle();
    this.#gauges();
    this.#hook('changed', s, true);
    this.#reply(conn, requestId, { type: 'stored', generation: s.generation });
    this.#log.info({ event: 'session.reattached', session: s.name, owner: conn.peer.pid, generation: s.generation }, `owner ${conn.peer.pid} re-attached to ${s.name} (generation ${s.generation})`);
  }

  #adopt(conn: Conn, msg: MessageOf<'adopt'>, requestId: number): void {
    if (conn.role !== 'daemon') throw new Refusal('EPERM', `ADOPT needs a daemon connection (this one said role ${conn.role})`);
    const s = conn.session;
    if (!s || s.owner?.connection !== conn.id) throw new Refusal('EINVAL', 'ADOPT on a connection that owns no session');
    if (!s.journal.handingOver) throw new Refusal('EINVAL', `ADOPT outside a resumed journal-strategy ownership of ${s.name}`);
    const stranger = s.journal.adopt(msg.ids);
    if (stranger !== 0) throw new Refusal('EINVAL', `backing id ${stranger} was not handed over with ${s.name}`);
    if (msg.more) {
      this.#reply(conn, requestId, { type: 'ok' });
      return;
    }
    // ADOPTED is answered first (the new owner may be serving already), and the ids nobody
    // adopted are closed right after, in chunks (100k ioctls take a while). That is safe: an
    // id stays allocated until closed, so the owner can never be given it again, and it stays
    // in the journal until closed, so no crash meanwhile loses it (the next recovery closes
    // what is left before anything else).
    const adopted = s.journal.adoptedCount;
    const toClose = s.journal.settle();
    if (s.adoptTimer) clearTimeout(s.adoptTimer);
    s.adoptTimer = null;
    this.#metrics.backingIds('adopted', adopted);
    this.#reply(conn, requestId, { type: 'adopted', closed: toClose.length, probed: s.probedAtHandover });
    this.#log.info({ event: 'journal.adopted', session: s.name, adopted, closing: toClose.length, probed: s.probedAtHandover }, `${s.name}: ${adopted} backing ids adopted, ${toClose.length} to close`);
    this.#finishPendingCloses(s);
    if (toClose.length > 0) {
      s.pendingClose = { ids: toClose, next: 0, timer: null };
      this.#closeSome(s);
    } else {
      this.#hook('changed', s, false);
    }
  }

  /** Closes the next chunk of `s.pendingClose` and schedules the rest. */
  #closeSome(s: LiveSession, all = false): void {
    const p = s.pendingClose;
    if (!p) return;
    p.timer = null;
    const end = all ? p.ids.length : Math.min(p.ids.length, p.next + CLOSE_CHUNK);
    let r: { closed: number; alreadyGone: number };
    try {
      r = closeUnadopted(s.fd, s.journal, p.ids.subarray(p.next, end));
    } catch (err) {
      s.pendingClose = null;
      this.#log.error({ event: 'journal.close_failed', session: s.name, left: p.ids.length - p.next, err: (err as Error).message }, `closing unadopted backing ids of ${s.name} failed`);
      return;
    }
    p.next = end;
    if (s.lastRecovery) {
      s.lastRecovery.cleanup.closed += r.closed;
      s.lastRecovery.cleanup.alreadyGone += r.alreadyGone;
    }
    this.#metrics.backingIds('closed', r.closed);
    if (p.next < p.ids.length) {
      p.timer = setImmediate(() => this.#closeSome(s));
      return;
    }
    s.pendingClose = null;
    this.#gauges();
    this.#hook('changed', s, false);
    this.#writeJournalAhead(s);
  }

  /** Closes whatever unadopted ids are still pending, now (before anything else touches the journal). */
  #finishPendingCloses(s: LiveSession): void {
    const p = s.pendingClose;
    if (!p) return;
    if (p.timer) clearImmediate(p.timer);
    this.#closeSome(s, true);
  }

  #releaseRequest(conn: Conn, name: string, requestId: number): void {
    const s = this.#sessions.get(name);
    if (!s) throw new Refusal('ENOENT', `no session named ${name}`);
    if (!this.#mayUse(conn.peer, s)) throw new Refusal('EACCES', `session ${name} belongs to uid ${s.creatorUid}`);
    this.#release(s, `released by ${conn.peer.pid}`);
    this.#reply(conn, requestId, { type: 'ok' });
  }

  /** Unmounts and forgets a session. */
  #release(s: LiveSession, reason: string): void {
    try {
      unmountFuse(s.spec.mountpoint);
    } catch {
      try {
        unmountFuse(s.spec.mountpoint, true);
      } catch (err) {
        // Already unmounted (by an admin, or an aborted connection): nothing is left to do.
        this.#log.debug({ event: 'session.unmount_skipped', session: s.name, err: (err as Error).message }, 'nothing to unmount');
      }
    }
    this.#dropSession(s, reason);
    this.#hook('released', s);
    this.#log.info({ event: 'session.released', session: s.name, mountpoint: s.spec.mountpoint, reason }, `session ${s.name} released: ${reason}`);
    this.onSessionGone?.(s.name);
  }

  /** Closes the supervisor's copy of the fd and forgets the session (mount untouched). */
  #dropSession(s: LiveSession, reason: string): void {
    if (s.adoptTimer) clearTimeout(s.adoptTimer);
    if (s.drain) {
      clearTimeout(s.drain.timer);
      this.#reply(s.drain.conn, s.drain.requestId, errorMessage('ENOENT', `session ${s.name} went away: ${reason}`));
      s.drain = null;
    }
    for (const w of s.standbys) {
      w.conn.acquiring = false;
      this.#reply(w.conn, w.requestId, errorMessage('ENOENT', `session ${s.name} went away: ${reason}`));
    }
    s.standbys = [];
    const ownerConn = s.owner?.connection != null ? this.#conns.get(s.owner.connection) : undefined;
    if (ownerConn) ownerConn.session = null;
    this.#forgetOwner(s);
    this.#finishPendingCloses(s);
    clearTimeout(this.#journalAheadTimers.get(s));
    this.#journalAheadTimers.delete(s);
    this.#dropPreparedJournal(s);
    closeFd(s.fd);
    this.#sessions.delete(s.name);
    this.#gauges();
  }

  #drainRequest(conn: Conn, name: string, requestId: number): void {
    const s = this.#sessions.get(name);
    if (!s) throw new Refusal('ENOENT', `no session named ${name}`);
    if (!this.#mayUse(conn.peer, s)) throw new Refusal('EACCES', `session ${name} belongs to uid ${s.creatorUid}`);
    if (s.drain) throw new Refusal('EBUSY', `a drain of ${name} is already in progress`);
    const ownerConn = s.owner?.connection != null ? this.#conns.get(s.owner.connection) : undefined;
    if (!this.#ownerLive(s) || !ownerConn) {
      this.#reply(conn, requestId, { type: 'ok' });
      return;
    }
    const timer = setTimeout(() => void this.#drainTimedOut(s), this.config.drainTimeoutMs);
    s.drain = { conn, requestId, timer, drained: false };
    this.#send(ownerConn, encodeMessage({ type: 'drain_request' }));
    this.#log.info({ event: 'session.draining', session: name, owner: s.owner?.pid }, `asked owner ${s.owner?.pid} of ${name} to drain`);
  }

  #drained(s: LiveSession): void {
    const d = s.drain;
    const owner = s.owner;
    if (!d || !owner || d.drained) return;
    d.drained = true;
    this.#drainedOwners.add(owner);
    void owner.exit.then(() => {
      if (s.drain !== d) return;
      clearTimeout(d.timer);
      s.drain = null;
      this.#reply(d.conn, d.requestId, { type: 'ok' });
      this.#log.info({ event: 'session.drained', session: s.name, owner: owner.pid }, `owner ${owner.pid} of ${s.name} drained and exited`);
      this.#serveStandby(s);
    });
  }

  async #drainTimedOut(s: LiveSession): Promise<void> {
    const d = s.drain;
    if (!d) return;
    const owner = s.owner;
    this.#log.warn({ event: 'session.drain_timeout', session: s.name, owner: owner?.pid }, `owner of ${s.name} did not drain within ${this.config.drainTimeoutMs} ms; fencing it`);
    if (owner) {
      this.#drainedOwners.delete(owner);
      try {
        if (await fenceOwner(owner, this.config.fenceTimeoutMs)) this.#metrics.fencedOwner();
      } catch (err) {
        this.#log.error({ event: 'owner.fence_failed', session: s.name, err: (err as Error).message }, (err as Error).message);
      }
    }
    if (s.drain === d) s.drain = null;
    this.#reply(d.conn, d.requestId, errorMessage('ETIMEDOUT', `owner of ${s.name} did not drain within ${this.config.drainTimeoutMs} ms and was fenced`));
    this.#serveStandby(s);
  }

  /** Owners that sent heartbeats and then fell silent for heartbeatTimeoutMs are fenced. */
  #checkHeartbeats(): void {
    for (const s of this.#sessions.values()) {
      const o = s.owner;
      if (!o || o.exited || s.recovering || s.heartbeats === 0) continue;
      if (Date.now() - o.lastHeartbeat <= this.config.heartbeatTimeoutMs) continue;
      s.heartbeats = 0;
      this.#log.warn({ event: 'owner.silent', session: s.name, owner: o.pid, silentMs: Date.now() - o.lastHeartbeat }, `owner ${o.pid} of ${s.name} sent no heartbeat for ${Date.now() - o.lastHeartbeat} ms; fencing it`);
      fenceOwner(o, this.config.fenceTimeoutMs).then(
        (killed) => {
          if (killed) this.#metrics.fencedOwner();
          this.#serveStandby(s);
        },
        (err: Error) => this.#log.error({ event: 'owner.fence_failed', session: s.name, err: err.message }, err.message),
      );
    }
  }

  #statusJson(): string {
    const st = this.status();
    let json = JSON.stringify(st);
    if (Buffer.byteLength(json) <= MAX_STATUS_JSON) return json;
    // Too many sessions for one frame: drop per-session detail, keep names and states.
    const brief = { supervisor: st.supervisor, truncated: true, sessions: st.sessions.map((s) => ({ name: s.name, state: s.state, generation: s.generation })) };
    json = JSON.stringify(brief);
    while (Buffer.byteLength(json) > MAX_STATUS_JSON) {
      brief.sessions.pop();
      json = JSON.stringify(brief);
    }
    return json;
  }

  #gauges(): void {
    let owners = 0;
    let live = 0;
    for (const s of this.#sessions.values()) {
      if (this.#ownerLive(s)) owners++;
      live += s.journal.size;
    }
    this.#metrics.setSessions(this.#sessions.size);
    this.#metrics.setOwners(owners);
    this.#metrics.setLiveBackingIds(live);
  }
}

/**
 * The peer closed its end (EPIPE on send; ECONNRESET when it closed with our frames unread).
 * Not a reason to disconnect at once: whatever it sent before closing is still queued here and
 * must be applied (its last JOURNAL_OPEN/CHECKPOINT_PUT), and EOF comes after it.
 */
function peerGone(err: unknown): boolean {
  return err instanceof NativeError && (err.code === 'EPIPE' || err.code === 'ECONNRESET');
}

function isFuseMount(path: string): boolean {
  const m = findMount(path);
  return m !== undefined && (m.fstype === 'fuse' || m.fstype.startsWith('fuse.'));
}

/** The `user_id=` of a FUSE mount's super options, or -1. */
function fuseMountOwner(m: MountInfo): number {
  const id = /(?:^|,)user_id=(\d+)(?:,|$)/.exec(m.superOptions)?.[1];
  return id === undefined ? -1 : Number(id);
}

function sameSpec(a: MountSpec, b: MountSpec): boolean {
  return (
    a.mountpoint === b.mountpoint &&
    a.fsName === b.fsName &&
    a.subtype === b.subtype &&
    a.rootMode === b.rootMode &&
    a.uid === b.uid &&
    a.gid === b.gid &&
    a.allowOther === b.allowOther &&
    a.defaultPermissions === b.defaultPermissions &&
    a.readOnly === b.readOnly &&
    a.maxRead === b.maxRead
  );
}

/**
 * Creates the socket's directory and removes a stale socket file left by a dead supervisor.
 * A socket somebody still listens on means another supervisor runs: that is an error.
 */
function prepareSocketPath(path: string): void {
  mkdirSync(dirname(path), { recursive: true, mode: 0o755 });
  let st;
  try {
    st = lstatSync(path);
  } catch {
    return;
  }
  if (!st.isSocket()) throw new Error(`${path} exists and is not a socket; refusing to replace it`);
  const probe = createSocket('seqpacket');
  try {
    connectSocket(probe, path);
    throw new Error(`another supervisor is listening on ${path}`);
  } catch (err) {
    if (!(err instanceof NativeError && (err.code === 'ECONNREFUSED' || err.code === 'ENOENT'))) throw err;
  } finally {
    closeFd(probe);
  }
  unlinkSync(path);
}
