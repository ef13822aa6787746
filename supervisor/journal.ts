// The backing-id journal of one session (DESIGN.md section 4, journal strategy).
//
// The kernel allocates backing ids with idr_alloc_cyclic from 1: each new id is the next
// free one above the last allocated. A daemon reports each id after FUSE_DEV_IOC_BACKING_OPEN
// and before the OPEN reply that uses it, so a crash can leave at most the ids allocated
// after the highest reported one unreported; `probeFrom` is where probing starts.

import type { JournalEntry } from '../protocol/index.ts';

export type { JournalEntry };

/** Live backing ids of one connection, as reported by its owners. */
export class BackingJournal {
  readonly #live = new Map<number, JournalEntry>();
  #highestReported = 0;

  /** Restores a journal from entries and the highest id ever reported (both from saved state). */
  static from(entries: Iterable<JournalEntry>, highestReported = 0): BackingJournal {
    const j = new BackingJournal();
    for (const e of entries) j.open(e);
    j.#highestReported = Math.max(j.#highestReported, highestReported);
    return j;
  }

  /** Records an id the owner opened. A reused id replaces the stale entry. */
  open(entry: JournalEntry): void {
    this.#live.set(entry.id, { ...entry });
    if (entry.id > this.#highestReported) this.#highestReported = entry.id;
  }

  /** Records an id the owner closed; unknown ids are ignored (the close may be a replay). */
  close(id: number): boolean {
    return this.#live.delete(id);
  }

  has(id: number): boolean {
    return this.#live.has(id);
  }

  get size(): number {
    return this.#live.size;
  }

  /** Highest id ever reported on this connection (not only live ones). */
  get highestReported(): number {
    return this.#highestReported;
  }

  /** First id that may have been allocated but never reported. */
  get probeFrom(): number {
    return this.#highestReported + 1;
  }

  /** The live ids, in no particular order. */
  ids(): IterableIterator<number> {
    return this.#live.keys();
  }

  /** The live entries, in no particular order (the hand-over needs no sort). */
  list(): JournalEntry[] {
    return [...this.#live.values()];
  }

  entries(): JournalEntry[] {
    return [...this.#live.values()].sort((a, b) => a.id - b.id);
  }

  /** Forgets every id (after CLOSE_ALL). `highestReported` is kept: the allocator's cursor moved on. */
  clear(): void {
    this.#live.clear();
  }
}
