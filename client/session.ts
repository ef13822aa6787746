// What a daemon holds once it has acquired a session from the supervisor: the /dev/fuse fd,
// the state the previous owner left, and the one-way calls that keep that state current.
// `client/supervisor.ts` implements it over the control socket; `client/fuse/` uses only
// this interface, so the FUSE server does not depend on how the state travels.
import type { CleanupStrategy, JournalEntries, JournalEntry } from '../protocol/index.ts';

export type { CleanupStrategy, JournalEntries, JournalEntry };

/** The result of `acquire()`. */
export interface AcquiredSession {
  /** Session name. */
  readonly name: string;
  /** The connection's /dev/fuse fd, owned by the daemon (close it when done serving). */
  readonly fd: number;
  /** True when a previous owner served this connection: INIT is already answered. */
  readonly resumed: boolean;
  /** 1 for a fresh session, +1 per hand-over. */
  readonly generation: number;
  /** How the supervisor cleans backing ids on this connection. */
  readonly strategy: CleanupStrategy;
  /** INIT parameters a previous owner saved with `saveInit`, or null. */
  readonly init: Buffer | null;
  /** The checkpoint as the previous owner left it (empty when fresh). */
  readonly checkpoint: ReadonlyMap<string, Buffer>;
  /**
   * Backing ids the previous owners opened and did not close, with their inodes; empty when
   * fresh. Packed: `length`, `id(i)`, `dev(i)`, `ino(i)`, or iterate it for JournalEntry
   * objects (`toArray()` for an array).
   */
  readonly journal: JournalEntries;
}

/**
 * The state calls of an acquired session. Every call but `adopt` is one-way and synchronous:
 * the message is in the socket (or the call throws) when it returns, so a `journalOpen` made
 * before writing an OPEN reply reaches the supervisor before the kernel can use the id. They
 * never wait for the supervisor; while it is away (restarting) they are kept and sent again
 * after reconnecting.
 */
export interface SessionLink {
  /** Reports a backing id after FUSE_DEV_IOC_BACKING_OPEN, before the reply that uses it. */
  journalOpen(id: number, dev: bigint, ino: bigint): void;
  /** Reports a backing id after FUSE_DEV_IOC_BACKING_CLOSE. */
  journalClose(id: number): void;
  /** Saves the INIT settlement (opaque, at most MAX_INIT_PARAMS bytes) for the next owner. */
  saveInit(params: Buffer): void;
  /** Sets a checkpoint key (at most MAX_KEY_BYTES, value at most MAX_CHECKPOINT_VALUE). */
  checkpointPut(key: string, value: Buffer): void;
  checkpointDelete(key: string): void;
  /**
   * After a resume: the journaled ids this owner keeps. The supervisor closes every other id
   * it handed over (those a dead owner opened but never reported were closed before the
   * hand-over). Every ADOPT frame is in the socket when it returns, ahead of any later
   * journal report, so the owner may serve at once and await the promise alongside; it
   * rejects if the supervisor refused the list (a bug: the ids it names were not handed over).
   */
  adopt(ids: readonly number[]): Promise<{ closed: number; probed: number }>;
}
