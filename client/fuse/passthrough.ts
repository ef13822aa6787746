// Passthrough backing ids, one per backing *inode*: every open handle of the same backing
// file shares one id. The kernel binds a fuse inode with open passthrough files to one
// fuse_backing object and fails a later open answered with another id for it (EIO on
// unpatched kernels), so the id must be shared, and stay open while any handle uses it.
import { backingOpen, backingClose } from '../../kernel/backing.ts';
import { FuseKernelError } from '../../kernel/errors.ts';
import type { JournalEntry, SessionLink } from '../session.ts';
import type { FuseLogger } from './server.ts';
import { faultArmed, faultPoint } from './fault.ts';

/** Journal hooks: `opened` runs after the ioctl and before the OPEN reply that uses the id. */
export interface BackingHooks {
  opened?(id: number, dev: bigint, ino: bigint): void | Promise<void>;
  closed?(id: number): void;
}

/**
 * Hooks that report every backing id to the supervisor (the journal strategy, DESIGN.md
 * section 4). `acquire` awaits `opened` before it returns the id, so the report is in the
 * control socket before the OPEN/CREATE reply that hands the id to the kernel.
 */
export function journalHooks(link: SessionLink): BackingHooks {
  return {
    opened: (id, dev, ino) => link.journalOpen(id, dev, ino),
    closed: (id) => link.journalClose(id),
  };
}

interface BackingEntry {
  id: number;
  dev: bigint;
  ino: bigint;
  refs: number;
}

export class BackingTable {
  readonly #fuseFd: number;
  readonly #byInode = new Map<string, BackingEntry>();
  readonly #hooks: BackingHooks;
  readonly #log: FuseLogger | undefined;
  #enabled: boolean;
  /** Ids opened, closed, and opens that fell back to reads through the daemon. */
  readonly stats = { opened: 0, closed: 0, fallbacks: 0 };

  constructor(fuseFd: number, enabled: boolean, hooks: BackingHooks = {}, log?: FuseLogger) {
    this.#fuseFd = fuseFd;
    this.#enabled = enabled;
    this.#hooks = hooks;
    this.#log = log;
  }

  /** Whether opens are still answered with passthrough. */
  get enabled(): boolean {
    return this.#enabled;
  }

  /**
   * The backing id for the inode (dev, ino) whose open file is `backingFd`, opening one if
   * no handle holds it yet; one reference is taken. Returns 0 when passthrough is off or the
   * kernel refused this file: the caller then serves reads and writes itself. `backingFd`
   * stays owned by the caller (the kernel took its own reference).
   */
  async acquire(backingFd: number, dev: bigint, ino: bigint): Promise<number> {
    if (!this.#enabled) return 0;
    const key = `${dev}:${ino}`;
    const existing = this.#byInode.get(key);
    if (existing) {
      existing.refs++;
      return existing.id;
    }
    let id: number;
    try {
      id = backingOpen(this.#fuseFd, backingFd);
    } catch (err) {
      if (!(err instanceof FuseKernelError)) throw err;
      this.stats.fallbacks++;
      if (err.code === 'ERR_PASSTHROUGH_NOT_READY') {
        this.#enabled = false;
        this.#log?.warn({ event: 'fuse.passthrough_off', reason: err.message }, 'passthrough refused by the kernel; serving reads through the daemon');
      }
      return 0;
    }
    faultPoint('after-backing-open');
    const entry = { id, dev, ino, refs: 1 };
    this.#byInode.set(key, entry);
    this.stats.opened++;
    try {
      await this.#hooks.opened?.(id, dev, ino);
    } catch (err) {
      // Not journaled: nobody else could ever close it. The caller's open fails.
      this.release(dev, ino);
      throw err;
    }
    return id;
  }

  /** Drops one reference; the last one closes the id. */
  release(dev: bigint, ino: bigint): void {
    const key = `${dev}:${ino}`;
    const entry = this.#byInode.get(key);
    if (!entry) return;
    if (--entry.refs > 0) return;
    this.#byInode.delete(key);
    try {
      backingClose(this.#fuseFd, entry.id);
    } catch (err) {
      // ENOENT: already closed (by a supervisor cleanup); the id is gone either way.
      if (!(err instanceof FuseKernelError && err.code === 'ERR_UNKNOWN_BACKING_ID')) throw err;
    }
    this.stats.closed++;
    this.#hooks.closed?.(entry.id);
  }

  /** Takes over an id a previous daemon opened (journal strategy), with `refs` open handles. */
  adopt(id: number, dev: bigint, ino: bigint, refs: number): void {
    this.#byInode.set(`${dev}:${ino}`, { id, dev, ino, refs });
  }

  /**
   * After a resume on the journal strategy: takes over each journaled id whose backing inode
   * still has open handles, `refs(dev, ino)` of them (each will be released once). On an
   * unpatched kernel a file the application still holds open stays bound to that id, and a
   * new open of it answered with any other id fails with EIO. Returns the adopted entries;
   * pass their ids to `SessionLink.adopt` before serving, so the supervisor closes the rest.
   * Of two entries for one inode the first is taken.
   */
  adoptJournal(journal: Iterable<JournalEntry>, refs: (dev: bigint, ino: bigint) => number): JournalEntry[] {
    const adopted: JournalEntry[] = [];
    // Test-only (FUSEKEEPER_FAULT=skip-adopt): behave like a daemon without the journal strategy.
    if (faultArmed('skip-adopt')) return adopted;
    for (const e of journal) {
      const n = refs(e.dev, e.ino);
      if (n <= 0 || this.idOf(e.dev, e.ino) !== 0) continue;
      this.adopt(e.id, e.dev, e.ino, n);
      adopted.push(e);
    }
    return adopted;
  }

  /** The id currently held for (dev, ino), or 0. */
  idOf(dev: bigint, ino: bigint): number {
    return this.#byInode.get(`${dev}:${ino}`)?.id ?? 0;
  }

  /** Live ids with their inodes and reference counts. */
  entries(): BackingEntry[] {
    return [...this.#byInode.values()].map((e) => ({ ...e }));
  }
}
