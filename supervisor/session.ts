// The supervisor's record of one FUSE connection (DESIGN.md section 3).
import type { BackingJournal } from './journal.ts';
import type { CleanupReport } from './cleanup.ts';
import type { MountSpec } from '../protocol/index.ts';

export type { MountSpec };

/** What the last recovery did and how long it took. */
export interface RecoveryRecord {
  at: string;
  /** From the moment the supervisor started recovering to the hand-over being sent. */
  durationUs: number;
  generation: number;
  /** The previous owner was alive and had to be killed. */
  fenced: boolean;
  cleanup: CleanupReport;
  /** FUSE_NOTIFY_RESEND was written. */
  resent: boolean;
}

/** The process currently serving a session. */
export interface Owner {
  /** Connection id (the supervisor's), or null once disconnected. */
  connection: number | null;
  pid: number;
  uid: number;
  /** pidfd of the owner process; closed by the supervisor when the owner is forgotten. */
  pidfd: number;
  lastHeartbeat: number;
  /** The process has exited (pidfd became readable). */
  exited: boolean;
  /** Resolves when the process exits (the supervisor's pidfd watch sets `exited` first). */
  exit: Promise<void>;
  /**
   * A look found every thread exiting or parked (supervisor/recovery.ts scanThreads). That
   * lasts: such threads only go on exiting, and a dying process starts no new ones.
   */
  fenced?: boolean;
  /**
   * The supervisor's looks at its threads while it dies (scanThreads): how many, their time in
   * ns, and how many threads they moved off the supervisor's CPU (moveOffCpu).
   */
  looks?: { count: number; ns: number; moved: number };
  /**
   * CLOCK_MONOTONIC ns: when its first thread exit was reported with a non-zero code (the
   * kernel's timestamp of the event), and when the supervisor first looked at its threads.
   */
  dyingSince?: { exitNs: bigint; lookNs?: bigint };
}

export type SessionState = 'owned' | 'orphaned' | 'draining';

export interface Session {
  name: string;
  spec: MountSpec;
  /** The supervisor's own copy of the /dev/fuse fd; it keeps the connection alive. */
  fd: number;
  /** FUSE connection id (/sys/fs/fuse/connections/<id>), when known. */
  connectionId: number | undefined;
  generation: number;
  /** Uid that created the session; only it (and root, and configured uids/gids) may acquire it. */
  creatorUid: number;
  owner: Owner | null;
  /** The INIT parameters the first daemon negotiated (opaque to the supervisor). */
  init: Buffer | null;
  checkpoint: Map<string, Buffer>;
  journal: BackingJournal;
  /** Owners replaced after a crash (recoveries done). */
  restarts: number;
  lastRecovery: RecoveryRecord | null;
  createdAt: string;
}

/** What `fusekeeper status --json` shows per session. Stable field names. */
export interface SessionStatus {
  name: string;
  mountpoint: string;
  connectionId: number | null;
  state: SessionState;
  owner: { pid: number; uid: number; connected: boolean; heartbeatAgeMs: number } | null;
  generation: number;
  /** Owners replaced after a crash. */
  restarts: number;
  /** Owners replaced by a planned hand-over (drain). */
  handovers: number;
  strategy: 'close-all' | 'journal' | 'none';
  liveBackingIds: number;
  checkpointKeys: number;
  checkpointBytes: number;
  /** Standby processes waiting to take over. */
  standbys: number;
  lastRecovery: RecoveryRecord | null;
}
