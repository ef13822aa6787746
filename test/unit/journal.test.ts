// The packed journal: protocol/journal.ts (JournalEntries, JournalStore), the packed codec
// paths (JOURNAL_ENTRIES, JOURNAL_OPEN from and to wire bytes), the ACQUIRE sequence with a
// packed journal, and supervisor/journal.ts's hand-over bookkeeping (docs/protocol.md ADOPT).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mulberry32 } from './fixtures/prng.ts';
import {
  AcquireCollector,
  decodeMessage,
  encodeAcquireSequence,
  encodeJournalOpen,
  encodeJournalOpenWire,
  encodeMessage,
  HEADER_SIZE,
  isJournalOpenFrame,
  JournalEntries,
  JournalStore,
  MAX_BACKING_ID,
  MAX_JOURNAL_CHUNK,
  ProtocolError,
  type ControlMessage,
  type JournalEntry,
} from '../../protocol/index.ts';
import { BackingJournal } from '../../supervisor/journal.ts';

const U64_MAX = (1n << 64n) - 1n;

function sampleEntries(n: number): JournalEntry[] {
  return Array.from({ length: n }, (_, i) => ({ id: (i * 7919) % MAX_BACKING_ID + 1, dev: BigInt(i % 5) << 40n, ino: i === 0 ? U64_MAX : BigInt(i) * 0x10001n }));
}

function reason(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof ProtocolError, String(err));
    assert.equal(err.code, 'EINVAL');
    return err.reason;
  }
  assert.fail('did not throw');
}

test('JournalEntries: packs, indexes and iterates entries; rejects what the wire cannot carry', () => {
  const list = sampleEntries(50);
  const p = JournalEntries.from(list);
  assert.equal(p.length, 50);
  assert.equal(p.bytes.length, 50 * 20);
  for (let i = 0; i < 50; i++) {
    assert.equal(p.id(i), list[i]!.id);
    assert.equal(p.dev(i), list[i]!.dev);
    assert.equal(p.ino(i), list[i]!.ino);
  }
  assert.deepEqual([...p], list);
  assert.deepEqual(p.toArray(), list);
  assert.deepEqual(p.map((e) => e.id), list.map((e) => e.id));
  assert.deepEqual(p.ids(), list.map((e) => e.id));
  assert.deepEqual(p.slice(10, 20).toArray(), list.slice(10, 20));
  assert.deepEqual(JournalEntries.concat([p.slice(0, 7), p.slice(7)]), p);
  assert.equal(JournalEntries.from(p), p);
  assert.deepEqual(JournalEntries.fromWire(Buffer.from(p.bytes)), p);
  assert.equal(JournalEntries.from([]).length, 0);

  assert.equal(reason(() => JournalEntries.from([{ id: 0, dev: 1n, ino: 1n }])), 'invalid value');
  assert.equal(reason(() => JournalEntries.from([{ id: MAX_BACKING_ID + 1, dev: 1n, ino: 1n }])), 'invalid value');
  assert.equal(reason(() => JournalEntries.from([{ id: 1.5, dev: 1n, ino: 1n }])), 'invalid value');
  assert.equal(reason(() => JournalEntries.from([{ id: 1, dev: -1n, ino: 1n }])), 'invalid value');
  assert.equal(reason(() => JournalEntries.from([{ id: 1, dev: 1n, ino: U64_MAX + 1n }])), 'invalid value');
  assert.equal(reason(() => JournalEntries.from([{ id: 1, dev: 1 as unknown as bigint, ino: 1n }])), 'invalid value');
  assert.equal(reason(() => JournalEntries.fromWire(Buffer.alloc(19))), 'invalid value');
  assert.equal(reason(() => JournalEntries.fromWire(Buffer.alloc(20))), 'invalid value');
});

test('JOURNAL_ENTRIES: packed and object entries encode to the same bytes, and decode to either form', () => {
  const list = sampleEntries(MAX_JOURNAL_CHUNK);
  for (const entries of [list, list.slice(0, 1), []]) {
    const generic = encodeMessage({ type: 'journal_entries', entries }, 9);
    const packed = encodeMessage({ type: 'journal_entries', entries: JournalEntries.from(entries) }, 9);
    assert.deepEqual(packed, generic);
    const asObjects = decodeMessage(generic, 0, { from: 'supervisor' });
    assert.ok(asObjects.ok && asObjects.message.type === 'journal_entries');
    assert.deepEqual(asObjects.message.entries, entries);
    const asPacked = decodeMessage(generic, 0, { from: 'supervisor', packedJournal: true });
    assert.ok(asPacked.ok && asPacked.message.type === 'journal_entries');
    assert.ok(asPacked.message.entries instanceof JournalEntries);
    assert.deepEqual(asPacked.message.entries.toArray(), entries);
    // The decoded entries own their memory.
    const copy = Buffer.from(generic);
    const d = decodeMessage(copy, 0, { packedJournal: true });
    copy.fill(0xff, HEADER_SIZE + 4);
    assert.ok(d.ok && d.message.type === 'journal_entries');
    assert.deepEqual((d.message.entries as JournalEntries).toArray(), entries);
  }
  assert.equal(reason(() => encodeMessage({ type: 'journal_entries', entries: JournalEntries.from(sampleEntries(MAX_JOURNAL_CHUNK + 1)) }, 1)), 'oversized');
  assert.equal(reason(() => encodeMessage({ type: 'journal_entries', entries: JournalEntries.EMPTY }, 0)), 'bad request id');
});

test('JOURNAL_ENTRIES packed decoding keeps every check: id 0, id > MAX_BACKING_ID, truncated chunk, count', () => {
  const good = encodeMessage({ type: 'journal_entries', entries: sampleEntries(3) }, 1);
  const reject = (buf: Buffer): string => {
    const d = decodeMessage(buf, 0, { packedJournal: true });
    assert.ok(!d.ok);
    assert.equal(d.error.code, 'EPROTO');
    return d.error.reason;
  };
  const patched = (at: number, v: number): Buffer => {
    const b = Buffer.from(good);
    b.writeUInt32LE(v, at);
    return b;
  };
  const secondId = HEADER_SIZE + 4 + 20;
  assert.equal(reject(patched(secondId, 0)), 'invalid value');
  assert.equal(reject(patched(secondId, MAX_BACKING_ID + 1)), 'invalid value');
  // Count 4 with 3 entries: truncated; count 2: trailing bytes; over the cap: oversized.
  assert.equal(reject(patched(HEADER_SIZE, 4)), 'truncated payload');
  assert.equal(reject(patched(HEADER_SIZE, 2)), 'trailing bytes');
  assert.equal(reject(patched(HEADER_SIZE, MAX_JOURNAL_CHUNK + 1)), 'oversized');
  const cut = Buffer.from(good.subarray(0, good.length - 7));
  cut.writeUInt32LE(cut.length - HEADER_SIZE, 12);
  assert.equal(reject(cut), 'truncated payload');
});

test('JOURNAL_OPEN from wire bytes: same frame as encodeJournalOpen; isJournalOpenFrame accepts exactly what decodeMessage does', () => {
  const frame = encodeJournalOpen(42, 0x801n, U64_MAX);
  assert.deepEqual(encodeJournalOpenWire(frame, HEADER_SIZE), frame);
  const p = JournalEntries.from([{ id: 42, dev: 0x801n, ino: U64_MAX }]);
  assert.deepEqual(encodeJournalOpenWire(p.bytes), frame);
  assert.equal(reason(() => encodeJournalOpenWire(Buffer.alloc(20))), 'invalid value');
  assert.equal(reason(() => encodeJournalOpenWire(Buffer.alloc(19))), 'invalid value');

  assert.equal(isJournalOpenFrame(frame, 0), true);
  const variants: [string, Buffer, number][] = [['with an fd', frame, 1]];
  for (const [what, at, v] of [['magic', 0, 0], ['version', 2, 9], ['flags', 4, 1], ['reserved', 6, 1], ['request id', 8, 5], ['id 0', 16, 0], ['id too big', 16, 0x80]] as const) {
    const b = Buffer.from(frame);
    if (what === 'id 0') b.writeUInt32LE(0, at);
    else if (what === 'id too big') b.writeUInt32LE(MAX_BACKING_ID + 1, at - 0);
    else b[at] = v;
    variants.push([what, b, 0]);
  }
  variants.push(['a JOURNAL_CLOSE', encodeMessage({ type: 'journal_close', id: 42 }), 0]);
  variants.push(['trailing byte', Buffer.concat([frame, Buffer.alloc(1)]), 0]);
  for (const [what, b, fds] of variants) {
    assert.equal(isJournalOpenFrame(b, fds), false, what);
    assert.equal(decodeMessage(b, fds, { from: 'client' }).ok && b[3] === frame[3] && fds === 0, false, what);
  }
});

test('ACQUIRE sequence with a packed journal: byte-identical to the object journal; the collector gives it packed', () => {
  const list = sampleEntries(10_000);
  const base = { acquired: { type: 'acquired' as const, generation: 3, resumed: true, strategy: 'journal' as const }, initParams: Buffer.alloc(8, 2), checkpoint: new Map([['k', Buffer.from('v')]]) };
  const generic = encodeAcquireSequence(5, { ...base, journal: list });
  const packed = encodeAcquireSequence(5, { ...base, journal: JournalEntries.from(list) });
  assert.deepEqual(packed, generic);
  for (const packedJournal of [true, false]) {
    const c = new AcquireCollector();
    let last: ReturnType<AcquireCollector['push']> | undefined;
    for (const [i, f] of packed.entries()) {
      const d = decodeMessage(f, i === 0 ? 1 : 0, { from: 'supervisor', packedJournal });
      assert.ok(d.ok);
      last = c.push(d.message);
    }
    assert.ok(last && last.done && 'state' in last);
    assert.ok(last.state.journal instanceof JournalEntries);
    assert.deepEqual(last.state.journal.toArray(), list);
  }
  // STATE_END's journalCount is checked against the entries received.
  const frames = packed.map((f, i) => decodeMessage(f, i === 0 ? 1 : 0, { packedJournal: true })).map((d) => (d.ok ? d.message : assert.fail()));
  const end = frames.at(-1)! as Extract<ControlMessage, { type: 'state_end' }>;
  const c = new AcquireCollector();
  let p;
  for (const m of [...frames.slice(0, -1), { ...end, journalCount: end.journalCount + 1 }]) p = c.push(m);
  assert.ok(p && p.done && 'error' in p && /journal=10001/.test(p.error.message));
  // An object chunk the wire could not carry is a bad sequence, not a throw.
  const c2 = new AcquireCollector();
  c2.push(frames[0]!);
  const bad = c2.push({ type: 'journal_entries', entries: [{ id: 0, dev: 0n, ino: 0n }] });
  assert.ok(bad.done && 'error' in bad);
});

test('JournalStore: set, replace, delete with slot reuse, lazy index with duplicates, retain, snapshot', () => {
  const s = new JournalStore();
  for (let id = 1; id <= 1000; id++) s.set({ id, dev: 1n, ino: BigInt(id) });
  const capacity = s.capacity;
  // Closing and opening as many again reuses slots: the store does not grow.
  for (let round = 0; round < 5; round++) {
    for (let id = 1; id <= 1000; id += 2) assert.equal(s.delete(id), true);
    assert.equal(s.size, 500);
    for (let id = 1; id <= 1000; id += 2) s.set({ id, dev: 2n, ino: BigInt(id) });
    assert.equal(s.size, 1000);
  }
  assert.equal(s.capacity, capacity);
  assert.equal(s.delete(5000), false);
  s.set({ id: 2, dev: 9n, ino: 9n });
  assert.equal(s.size, 1000);
  const byId = new Map(s.snapshot().map((e) => [e.id, e]));
  assert.deepEqual(byId.get(2), { id: 2, dev: 9n, ino: 9n });
  assert.deepEqual(byId.get(3), { id: 3, dev: 2n, ino: 3n });
  assert.equal(byId.size, 1000);

  // Built from a hand-over with a duplicate id: the later entry wins, as when replayed.
  const handed = JournalEntries.from([{ id: 4, dev: 1n, ino: 1n }, { id: 5, dev: 1n, ino: 2n }, { id: 4, dev: 1n, ino: 3n }]);
  const t = new JournalStore(handed);
  assert.equal(t.size, 2);
  assert.deepEqual(t.snapshot().toArray(), [{ id: 4, dev: 1n, ino: 3n }, { id: 5, dev: 1n, ino: 2n }]);
  t.retain((id) => id === 5);
  assert.deepEqual(t.snapshot().toArray(), [{ id: 5, dev: 1n, ino: 2n }]);
  assert.equal(t.has(4), false);
  assert.equal(t.has(5), true);
  const frame = encodeJournalOpen(6, 7n, 8n);
  t.setWire(frame, HEADER_SIZE);
  assert.deepEqual(encodeJournalOpenWire(t.wireAt(t.slotOf(6))), frame);
  assert.throws(() => t.setWire(Buffer.alloc(20), 0), RangeError);
  t.clear();
  assert.equal(t.size, 0);
  assert.equal(t.snapshot().length, 0);
});

test('JournalStore against a Map: 200k random sets, deletes, clears and retains agree on every id and entry', () => {
  const rand = mulberry32(0x5eed);
  const store = new JournalStore();
  const model = new Map<number, bigint>();
  const check = (id: number) => {
    assert.equal(store.has(id), model.has(id), `has(${id})`);
    if (model.has(id)) assert.equal(store.wireAt(store.slotOf(id)).readBigUInt64LE(12), model.get(id), `ino of ${id}`);
  };
  // For half the run 40 ids spread over the whole range (a small table with colliding homes:
  // probe runs wrap around its end), then 1..4096 (what the kernel allocates) and a few huge ones.
  const spread = Array.from({ length: 40 }, () => 1 + Math.floor(rand() * MAX_BACKING_ID));
  let range = 0;
  const pick = () => (range === 0 ? spread[Math.floor(rand() * spread.length)]! : rand() < 0.99 ? 1 + Math.floor(rand() * range) : MAX_BACKING_ID - Math.floor(rand() * 8));
  for (let op = 0; op < 200_000; op++) {
    if (op === 100_000) range = 4096;
    const r = rand();
    const id = pick();
    if (r < 0.55) {
      const ino = BigInt(op);
      store.set({ id, dev: 1n, ino });
      model.set(id, ino);
    } else if (r < 0.9999) {
      assert.equal(store.delete(id), model.delete(id), `delete(${id})`);
    } else if (r < 0.99995) {
      store.clear();
      model.clear();
    } else {
      const odd = (x: number) => x % 2 === 1;
      store.retain(odd);
      for (const k of [...model.keys()]) if (!odd(k)) model.delete(k);
    }
    check(id);
    if (op % 10_000 === 0) for (const k of range === 0 ? spread : Array.from({ length: 4096 }, (_, i) => i + 1)) check(k);
  }
  assert.equal(store.size, model.size);
  assert.deepEqual(new Set(store.snapshot().ids()), new Set(model.keys()));
});

test('BackingJournal hand-over: inherited ids, ADOPT all-or-nothing, closed and re-journaled ids are not inherited', () => {
  const j = new BackingJournal();
  for (let id = 1; id <= 10; id++) j.open({ id, dev: 1n, ino: BigInt(id) });
  assert.equal(j.handingOver, false);
  assert.equal(j.isInherited(1), false);
  assert.deepEqual([...j.settle()], []);

  j.handOver();
  assert.equal(j.handingOver, true);
  for (let id = 1; id <= 10; id++) assert.equal(j.isInherited(id), true);
  // Journaled after the hand-over: the new owner's own, not adoptable, never closed by ADOPT.
  j.open({ id: 11, dev: 1n, ino: 11n });
  assert.equal(j.isInherited(11), false);
  // Re-journaling an inherited id (the kernel's id, a new inode) keeps it inherited.
  j.open({ id: 3, dev: 1n, ino: 33n });
  assert.equal(j.isInherited(3), true);
  // Closed then journaled again: not inherited any more.
  j.close(4);
  j.open({ id: 4, dev: 1n, ino: 44n });
  assert.equal(j.isInherited(4), false);
  j.close(5);
  assert.equal(j.isInherited(5), false);

  // All or nothing: one id that was not handed over refuses the whole ADOPT.
  assert.equal(j.adopt([1, 2, 11]), 11);
  assert.equal(j.adoptedCount, 0);
  assert.equal(j.adopt([1, 4]), 4);
  assert.equal(j.adopt([1, 2, 2]), 0);
  assert.equal(j.adopt([2, 3]), 0);
  assert.equal(j.adoptedCount, 3);
  // Adopted then closed by the owner: neither closed by the supervisor nor adoptable again.
  j.close(2);
  assert.equal(j.adopt([2]), 2);

  const toClose = [...j.settle()].sort((a, b) => a - b);
  assert.deepEqual(toClose, [6, 7, 8, 9, 10]);
  assert.equal(j.handingOver, false);
  assert.equal(j.isInherited(6), false);
  assert.equal(j.adopt([]), 0);
  // The ids to close stay journaled until closed.
  for (const id of toClose) assert.equal(j.has(id), true);
  assert.deepEqual([...j.settle()], []);

  // A second hand-over before the first settled marks everything afresh.
  j.handOver();
  j.adopt([6]);
  j.handOver();
  assert.equal(j.adoptedCount, 0);
  assert.equal(j.settle().length, j.size);
  assert.equal(j.highestReported, 11);
});

test('BackingJournal: restores from packed entries, JOURNAL_OPEN wire bytes, snapshot round trip', () => {
  const list = sampleEntries(2000);
  const j = BackingJournal.from(JournalEntries.from(list), 5);
  assert.equal(j.size, 2000);
  assert.equal(j.highestReported, Math.max(...list.map((e) => e.id)));
  const frame = encodeJournalOpen(MAX_BACKING_ID, 3n, 4n);
  j.openWire(frame, HEADER_SIZE);
  assert.equal(j.has(MAX_BACKING_ID), true);
  assert.equal(j.highestReported, MAX_BACKING_ID);
  assert.equal(j.probeFrom, MAX_BACKING_ID + 1);
  const want = [...list, { id: MAX_BACKING_ID, dev: 3n, ino: 4n }].sort((a, b) => a.id - b.id);
  assert.deepEqual(j.entries(), want);
  assert.deepEqual(BackingJournal.from(j.snapshot()).entries(), want);
  j.clear();
  assert.equal(j.size, 0);
  assert.equal(j.highestReported, MAX_BACKING_ID);
});

test('BackingJournal.version changes with the live entries, not with the hand-over tags', () => {
  const j = new BackingJournal();
  const seen = [j.version];
  const changed = (what: string): void => {
    assert.ok(!seen.includes(j.version), `${what} changes the version`);
    seen.push(j.version);
  };
  const same = (what: string): void => assert.equal(j.version, seen.at(-1), `${what} keeps the version`);
  j.open({ id: 1, dev: 1n, ino: 1n });
  changed('open');
  j.open({ id: 1, dev: 1n, ino: 2n });
  changed('re-journaling an id');
  const frame = Buffer.alloc(20);
  frame.writeUInt32LE(2, 0);
  j.openWire(frame, 0);
  changed('openWire');
  const bytes = Buffer.from(j.current().bytes);
  j.handOver();
  j.adopt([1]);
  j.settle();
  same('handOver, adopt and settle');
  assert.deepEqual(j.current().bytes, bytes, 'and the entries are the same bytes');
  assert.equal(j.close(7), false);
  same('closing an id that is not journaled');
  j.close(2);
  changed('close');
  j.clear();
  changed('clear');
});
