// Journal entries kept in their wire layout: u32 id, u64 dev, u64 ino, little-endian, 20 bytes
// each (JOURNAL_ENTRY_SIZE; the JOURNAL_OPEN payload and the items of JOURNAL_ENTRIES). A
// hand-over can carry 100k of them and more; held this way they cost no object and no BigInt
// per entry, and encoding is a copy of bytes. Pure: no I/O.
import { ProtocolError } from './errors.ts';
import { JOURNAL_ENTRY_SIZE, MAX_BACKING_ID } from './limits.ts';
import type { JournalEntry } from './messages.ts';

const E = JOURNAL_ENTRY_SIZE;

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/**
 * The index of the first of the `count` wire-layout entries at `bytes[offset..]` whose id is
 * outside 1..MAX_BACKING_ID, or -1 when every id is valid.
 */
export function invalidEntryIndex(bytes: Buffer, count: number, offset = 0): number {
  const start = bytes.byteOffset + offset;
  if (LITTLE_ENDIAN && start % 4 === 0) {
    // Entries are 5 words and the id is the first: one typed-array read per entry.
    const words = new Uint32Array(bytes.buffer, start, count * (E / 4));
    for (let i = 0, w = 0; i < count; i++, w += E / 4) {
      const id = words[w]!;
      if (id < 1 || id > MAX_BACKING_ID) return i;
    }
    return -1;
  }
  for (let i = 0, at = offset; i < count; i++, at += E) {
    const id = bytes.readUInt32LE(at);
    if (id < 1 || id > MAX_BACKING_ID) return i;
  }
  return -1;
}

function writeEntry(buf: Buffer, at: number, e: JournalEntry): void {
  const { id, dev, ino } = e;
  if (!Number.isInteger(id) || id < 1 || id > MAX_BACKING_ID) throw new ProtocolError('EINVAL', 'invalid value', `backing id must be an integer in 1..${MAX_BACKING_ID}, got ${String(id)}`);
  if (typeof dev !== 'bigint' || typeof ino !== 'bigint' || dev < 0n || ino < 0n || dev >> 64n !== 0n || ino >> 64n !== 0n) {
    throw new ProtocolError('EINVAL', 'invalid value', 'dev and ino must be bigints in 0..2^64-1');
  }
  buf.writeUInt32LE(id, at);
  buf.writeBigUInt64LE(dev, at + 4);
  buf.writeBigUInt64LE(ino, at + 12);
}

/**
 * An immutable list of journal entries over one Buffer in the wire layout. Index it with
 * `id(i)`, `dev(i)`, `ino(i)` (the BigInts are made on each call), or iterate it for
 * `JournalEntry` objects made one at a time. Every id is in 1..MAX_BACKING_ID; duplicates
 * are possible (the wire allows them) and the later one wins where a map is built.
 */
export class JournalEntries implements Iterable<JournalEntry> {
  /** The entries in the wire layout (do not modify). An own field, so deepEqual compares it. */
  readonly bytes: Buffer;

  private constructor(bytes: Buffer) {
    this.bytes = bytes;
  }

  /** No entries. */
  static readonly EMPTY = new JournalEntries(Buffer.alloc(0));

  /**
   * Takes `bytes` (wire layout, a multiple of JOURNAL_ENTRY_SIZE) without copying: the caller
   * must not change them afterwards. Throws ProtocolError EINVAL for a bad length or id.
   */
  static fromWire(bytes: Buffer): JournalEntries {
    if (bytes.length % E !== 0) throw new ProtocolError('EINVAL', 'invalid value', `${bytes.length} bytes are not a whole number of ${E}-byte journal entries`);
    const bad = invalidEntryIndex(bytes, bytes.length / E);
    if (bad >= 0) throw new ProtocolError('EINVAL', 'invalid value', `backing id must be in 1..${MAX_BACKING_ID}, got ${bytes.readUInt32LE(bad * E)}`);
    return new JournalEntries(bytes);
  }

  /** @internal `fromWire` for bytes whose length and ids the caller has checked (the decoder, JournalStore). */
  static trusted(bytes: Buffer): JournalEntries {
    return new JournalEntries(bytes);
  }

  /** Packs entries (an array, or another JournalEntries: then no copy). Throws ProtocolError EINVAL for a value the wire cannot carry. */
  static from(entries: Iterable<JournalEntry> | readonly JournalEntry[]): JournalEntries {
    if (entries instanceof JournalEntries) return entries;
    const list = Array.isArray(entries) ? (entries as readonly JournalEntry[]) : [...entries];
    if (list.length === 0) return JournalEntries.EMPTY;
    const buf = Buffer.allocUnsafe(list.length * E);
    for (let i = 0; i < list.length; i++) writeEntry(buf, i * E, list[i]!);
    return new JournalEntries(buf);
  }

  /** Concatenates lists (one copy). */
  static concat(parts: readonly JournalEntries[]): JournalEntries {
    if (parts.length === 0) return JournalEntries.EMPTY;
    if (parts.length === 1) return parts[0]!;
    return new JournalEntries(Buffer.concat(parts.map((p) => p.bytes)));
  }

  /** Number of entries. */
  get length(): number {
    return this.bytes.length / E;
  }

  /** Backing id of entry `i` (0 <= i < length). */
  id(i: number): number {
    return this.bytes.readUInt32LE(i * E);
  }

  dev(i: number): bigint {
    return this.bytes.readBigUInt64LE(i * E + 4);
  }

  ino(i: number): bigint {
    return this.bytes.readBigUInt64LE(i * E + 12);
  }

  /** Entry `i` as an object. */
  entry(i: number): JournalEntry {
    return { id: this.id(i), dev: this.dev(i), ino: this.ino(i) };
  }

  /** Entries `start..end` (a view, no copy). */
  slice(start: number, end = this.length): JournalEntries {
    return new JournalEntries(this.bytes.subarray(start * E, end * E));
  }

  *[Symbol.iterator](): IterableIterator<JournalEntry> {
    const n = this.length;
    for (let i = 0; i < n; i++) yield this.entry(i);
  }

  /** The ids, in order. */
  ids(): number[] {
    const n = this.length;
    const out = new Array<number>(n);
    for (let i = 0; i < n; i++) out[i] = this.bytes.readUInt32LE(i * E);
    return out;
  }

  toArray(): JournalEntry[] {
    return [...this];
  }

  /** `toArray().map(fn)` without the intermediate array. */
  map<T>(fn: (e: JournalEntry, i: number) => T): T[] {
    const n = this.length;
    const out = new Array<T>(n);
    for (let i = 0; i < n; i++) out[i] = fn(this.entry(i), i);
    return out;
  }
}

const INITIAL_CAPACITY = 64;

/**
 * id -> slot over typed arrays (open addressing, linear probing, backward-shift deletion): a
 * 100k-id index is 2 MB outside the GC heap, and filling or emptying it makes no garbage (a
 * Map of that size is a 3.7 MB large object, re-made at each doubling and halving). Ids are
 * >= 1: 0 marks a free cell. It never shrinks.
 */
class IdIndex {
  #keys: Uint32Array;
  #slots: Int32Array;
  #mask: number;
  size = 0;

  constructor(capacity = INITIAL_CAPACITY) {
    let cells = 16;
    while (cells < capacity * 2) cells *= 2;
    this.#keys = new Uint32Array(cells);
    this.#slots = new Int32Array(cells);
    this.#mask = cells - 1;
  }

  #home(id: number): number {
    return (Math.imul(id, 0x9e3779b1) >>> 0) & this.#mask;
  }

  #find(id: number): number {
    const keys = this.#keys;
    for (let i = this.#home(id); ; i = (i + 1) & this.#mask) {
      const k = keys[i]!;
      if (k === id) return i;
      if (k === 0) return -1 - i;
    }
  }

  get(id: number): number | undefined {
    const i = this.#find(id);
    return i >= 0 ? this.#slots[i] : undefined;
  }

  has(id: number): boolean {
    return this.#find(id) >= 0;
  }

  set(id: number, slot: number): void {
    let i = this.#find(id);
    if (i < 0) {
      if ((this.size + 1) * 2 > this.#keys.length) {
        this.#grow();
        i = this.#find(id);
      }
      i = -1 - i;
      this.#keys[i] = id;
      this.size++;
    }
    this.#slots[i] = slot;
  }

  delete(id: number): boolean {
    let i = this.#find(id);
    if (i < 0) return false;
    const keys = this.#keys;
    const mask = this.#mask;
    // Move later entries of the probe run back into the hole where their home allows it.
    for (let j = (i + 1) & mask; keys[j] !== 0; j = (j + 1) & mask) {
      const h = this.#home(keys[j]!);
      if ((j > i && (h <= i || h > j)) || (j < i && h <= i && h > j)) {
        keys[i] = keys[j]!;
        this.#slots[i] = this.#slots[j]!;
        i = j;
      }
    }
    keys[i] = 0;
    this.size--;
    return true;
  }

  #grow(): void {
    const keys = this.#keys;
    const slots = this.#slots;
    this.#keys = new Uint32Array(keys.length * 2);
    this.#slots = new Int32Array(keys.length * 2);
    this.#mask = keys.length * 2 - 1;
    for (let i = 0; i < keys.length; i++) {
      const k = keys[i]!;
      if (k === 0) continue;
      let j = this.#home(k);
      while (this.#keys[j] !== 0) j = (j + 1) & this.#mask;
      this.#keys[j] = k;
      this.#slots[j] = slots[i]!;
    }
  }
}

/**
 * A mutable set of journal entries keyed by id, packed densely in the wire layout (a closed
 * entry's slot is refilled by the last one, so slots 0..size-1 are always live and a snapshot
 * is one copy). Each slot carries a tag byte for the holder's bookkeeping: 0 for an entry
 * added by `set`/`setWire`, kept when an existing id is set again. The id -> slot index is
 * built on the first keyed access, so a store made from a hand-over costs one copy until used.
 */
export class JournalStore {
  #bytes: Buffer;
  #tags: Uint8Array;
  #size = 0;
  #index: IdIndex | null = new IdIndex();

  constructor(initial: JournalEntries = JournalEntries.EMPTY) {
    const n = initial.length;
    const capacity = Math.max(INITIAL_CAPACITY, n);
    this.#bytes = Buffer.allocUnsafe(capacity * E);
    initial.bytes.copy(this.#bytes, 0);
    this.#tags = new Uint8Array(capacity);
    this.#size = n;
    this.#index = n === 0 ? new IdIndex() : null;
  }

  get size(): number {
    this.#map();
    return this.#size;
  }

  /** Slots allocated (for tests and memory accounting). */
  get capacity(): number {
    return this.#tags.length;
  }

  #map(): IdIndex {
    let m = this.#index;
    if (m === null) {
      m = new IdIndex(this.#size);
      // Later duplicates win, as when the entries are replayed one by one.
      let n = 0;
      for (let i = 0; i < this.#size; i++) {
        const id = this.#bytes.readUInt32LE(i * E);
        const at = m.get(id);
        if (at === undefined) {
          if (n !== i) {
            this.#bytes.copy(this.#bytes, n * E, i * E, i * E + E);
            this.#tags[n] = this.#tags[i]!;
          }
          m.set(id, n++);
        } else {
          this.#bytes.copy(this.#bytes, at * E, i * E, i * E + E);
        }
      }
      this.#size = n;
      this.#index = m;
    }
    return m;
  }

  #slotFor(id: number): number {
    const m = this.#map();
    const at = m.get(id);
    if (at !== undefined) return at;
    if (this.#size === this.#tags.length) this.#grow();
    const slot = this.#size++;
    this.#tags[slot] = 0;
    m.set(id, slot);
    return slot;
  }

  #grow(): void {
    const capacity = this.#tags.length * 2;
    const bytes = Buffer.allocUnsafe(capacity * E);
    this.#bytes.copy(bytes, 0, 0, this.#size * E);
    const tags = new Uint8Array(capacity);
    tags.set(this.#tags.subarray(0, this.#size));
    this.#bytes = bytes;
    this.#tags = tags;
  }

  has(id: number): boolean {
    return this.#map().has(id);
  }

  /** Adds or replaces the entry of `e.id`. Throws ProtocolError EINVAL for a value the wire cannot carry. */
  set(e: JournalEntry): void {
    const probe = Buffer.allocUnsafe(E);
    writeEntry(probe, 0, e);
    this.setWire(probe, 0);
  }

  /**
   * Adds or replaces the entry in wire layout at `src[offset..offset+20)` (a JOURNAL_OPEN
   * payload). Its id must be valid (the decoder checked it); throws RangeError otherwise.
   */
  setWire(src: Uint8Array, offset: number): void {
    const id = (src[offset]! | (src[offset + 1]! << 8) | (src[offset + 2]! << 16) | (src[offset + 3]! << 24)) >>> 0;
    if (id < 1 || id > MAX_BACKING_ID) throw new RangeError(`backing id ${id} outside 1..${MAX_BACKING_ID}`);
    const d = this.#slotFor(id) * E;
    const dst = this.#bytes;
    // Byte by byte: no view object per entry (this runs once per JOURNAL_OPEN frame).
    for (let i = 0; i < E; i++) dst[d + i] = src[offset + i]!;
  }

  /** Removes the entry of `id`; false if there is none. */
  delete(id: number): boolean {
    const m = this.#map();
    const slot = m.get(id);
    if (slot === undefined) return false;
    m.delete(id);
    const last = --this.#size;
    if (slot !== last) {
      this.#bytes.copyWithin(slot * E, last * E, last * E + E);
      this.#tags[slot] = this.#tags[last]!;
      m.set(this.#bytes.readUInt32LE(slot * E), slot);
    }
    return true;
  }

  /** Removes every entry. */
  clear(): void {
    this.#size = 0;
    this.#index = new IdIndex();
  }

  /**
   * Keeps only the entries whose id passes `keep` (one pass; the index is rebuilt on next
   * use). Duplicates of a store made from a hand-over are not merged first: both copies pass
   * or fail `keep` alike, and the index build merges them later.
   */
  retain(keep: (id: number) => boolean): void {
    let n = 0;
    for (let i = 0; i < this.#size; i++) {
      if (!keep(this.#bytes.readUInt32LE(i * E))) continue;
      if (n !== i) {
        this.#bytes.copy(this.#bytes, n * E, i * E, i * E + E);
        this.#tags[n] = this.#tags[i]!;
      }
      n++;
    }
    if (n !== this.#size) {
      this.#size = n;
      this.#index = null;
    }
  }

  /** The slot of `id`, or -1. Slots move when entries are deleted. */
  slotOf(id: number): number {
    return this.#map().get(id) ?? -1;
  }

  /** The id in `slot` (0 <= slot < size). */
  idAt(slot: number): number {
    this.#map();
    return this.#bytes.readUInt32LE(slot * E);
  }

  /** The wire-layout bytes of `slot` (a view: valid until the store next changes). */
  wireAt(slot: number): Buffer {
    this.#map();
    return this.#bytes.subarray(slot * E, slot * E + E);
  }

  tagAt(slot: number): number {
    return this.#tags[slot]!;
  }

  setTag(slot: number, tag: number): void {
    this.#tags[slot] = tag;
  }

  /**
   * The ids whose tag is `tag`, in slot order. A typed array of the exact length: for 100k ids
   * an array grown by push left 2 MB of garbage on the JS heap at every hand-over.
   */
  idsTagged(tag: number): Uint32Array {
    this.#map();
    let n = 0;
    for (let i = 0; i < this.#size; i++) if (this.#tags[i] === tag) n++;
    const out = new Uint32Array(n);
    for (let i = 0, k = 0; k < n; i++) if (this.#tags[i] === tag) out[k++] = this.#bytes.readUInt32LE(i * E);
    return out;
  }

  /** Sets the tag of every entry. */
  tagAll(tag: number): void {
    this.#map();
    this.#tags.fill(tag, 0, this.#size);
  }

  /** A copy of the entries, in slot order. */
  snapshot(): JournalEntries {
    const live = this.current();
    return live.length === 0 ? live : JournalEntries.trusted(Buffer.from(live.bytes));
  }

  /** The live entries without a copy: valid only until the store next changes. */
  current(): JournalEntries {
    this.#map();
    if (this.#size === 0) return JournalEntries.EMPTY;
    return JournalEntries.trusted(this.#bytes.subarray(0, this.#size * E));
  }
}
