// The backing-id journal of one session (DESIGN.md section 4, journal strategy).
//
// The kernel allocates backing ids with idr_alloc_cyclic from 1: each new id is the next
// free one above the last allocated. A daemon reports each id after FUSE_DEV_IOC_BACKING_OPEN
// and before the OPEN reply that uses it, so a crash can leave at most the ids allocated
// after the highest reported one unreported; `probeFrom` is where probing starts.
//
// Entries are packed in the wire layout (protocol/journal.ts): a session may hold 100k and
// more, all handed over at once, and a hand-over is then a copy of bytes. Each entry's tag
// records the hand-over bookkeeping of docs/protocol.md, ADOPT/ADOPTED.

import { JournalEntries, JournalStore, type JournalEntry } from '../protocol/index.ts';

export type { JournalEntry };

/** Tags of the entries: journaled since the last hand-over, handed over, handed over and adopted. */
const OWN = 0;
const INHERITED = 1;
const ADOPTED = 2;

/** Live backing ids of one connection, as reported by its owners. */
export class BackingJournal {
  #store = new JournalStore();
  #highestReported = 0;
  /** A hand-over is not settled yet: the INHERITED and ADOPTED tags are meaningful. */
  #handingOver = false;
  #adopted = 0;
  #version = 0;

  /** Restores a journal from entries and the highest id ever reported (both from saved state). */
  static from(entries: Iterable<JournalEntry> | JournalEntries, highestReported = 0): BackingJournal {
    const packed = JournalEntries.from(entries);
    const j = new BackingJournal();
    j.#store = new JournalStore(packed);
    let highest = highestReported;
    for (let i = 0; i < packed.length; i++) highest = Math.max(highest, packed.id(i));
    j.#highestReported = highest;
    return j;
  }

  /** Records an id the owner opened. A reused id replaces the stale entry (and keeps its hand-over tag). */
  open(entry: JournalEntry): void {
    this.#store.set(entry);
    this.#version++;
    if (entry.id > this.#highestReported) this.#highestReported = entry.id;
  }

  /**
   * `open` for an entry in the wire layout at `src[offset..offset+20)`, e.g. the payload of a
   * JOURNAL_OPEN frame that isJournalOpenFrame accepted (the id must be valid).
   */
  openWire(src: Buffer, offset: number): void {
    this.#store.setWire(src, offset);
    this.#version++;
    const id = src.readUInt32LE(offset);
    if (id > this.#highestReported) this.#highestReported = id;
  }

  /** Records an id the owner closed; unknown ids are ignored (the close may be a replay). */
  close(id: number): boolean {
    if (!this.#store.delete(id)) return false;
    this.#version++;
    return true;
  }

  has(id: number): boolean {
    return this.#store.has(id);
  }

  get size(): number {
    return this.#store.size;
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
  ids(): number[] {
    const n = this.#store.size;
    const out = new Array<number>(n);
    for (let i = 0; i < n; i++) out[i] = this.#store.idAt(i);
    return out;
  }

  /** A copy of the live entries, packed, in no particular order (the hand-over needs no sort). */
  snapshot(): JournalEntries {
    return this.#store.snapshot();
  }

  /** The live entries without a copy, valid until the journal next changes (send them at once). */
  current(): JournalEntries {
    return this.#store.current();
  }

  /** The live entries as objects, sorted by id (for tests and debugging). */
  entries(): JournalEntry[] {
    return this.snapshot().toArray().sort((a, b) => a.id - b.id);
  }

  /** Forgets every id (after CLOSE_ALL). `highestReported` is kept: the allocator's cursor moved on. */
  clear(): void {
    this.#store.clear();
    this.#version++;
  }

  /** Changes whenever the live entries change (not their hand-over tags): `current()` is the same while it does not. */
  get version(): number {
    return this.#version;
  }

  // -------------------------------------------------------------------------------------------
  // Hand-over bookkeeping (docs/protocol.md, ADOPT and ADOPTED)

  /**
   * Every live id is now inherited by a new owner, none adopted (a hand-over that was not
   * settled is replaced). Ids journaled from now on are the new owner's own.
   */
  handOver(): void {
    this.#store.tagAll(INHERITED);
    this.#handingOver = true;
    this.#adopted = 0;
  }

  /** A hand-over is waiting for the new owner's last ADOPT (or its timeout). */
  get handingOver(): boolean {
    return this.#handingOver;
  }

  /** `id` was handed over, is still journaled and not closed since (adopted or not). */
  isInherited(id: number): boolean {
    if (!this.#handingOver) return false;
    const slot = this.#store.slotOf(id);
    return slot >= 0 && this.#store.tagAt(slot) !== OWN;
  }

  /**
   * Marks `ids` adopted, all or none: returns the first id that is not inherited (nothing is
   * marked then), or 0.
   */
  adopt(ids: readonly number[]): number {
    for (const id of ids) if (!this.isInherited(id)) return id;
    for (const id of ids) {
      const slot = this.#store.slotOf(id);
      if (this.#store.tagAt(slot) === INHERITED) {
        this.#store.setTag(slot, ADOPTED);
        this.#adopted++;
      }
    }
    return 0;
  }

  /** Distinct ids adopted since the hand-over. */
  get adoptedCount(): number {
    return this.#adopted;
  }

  /**
   * Settles the hand-over: returns the ids handed over, never adopted and still journaled
   * (they stay journaled until the caller closes them). Empty when no hand-over is pending.
   */
  settle(): Uint32Array {
    if (!this.#handingOver) return new Uint32Array(0);
    this.#handingOver = false;
    this.#adopted = 0;
    return this.#store.idsTagged(INHERITED);
  }
}
