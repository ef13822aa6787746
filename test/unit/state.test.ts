// supervisor/state.ts: the session state file (round trip, corruption detected, strict
// validation), atomic writes, and the debounced store; supervisor/service.ts's pure helpers.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { crc32 } from 'node:zlib';
import { closeFd } from '../../native/index.ts';
import { JournalEntries } from '../../protocol/index.ts';
import { decodeSession, encodeSession, sessionFileParts, StateStore, writeFileAtomic, type PersistedSession } from '../../supervisor/state.ts';
import { formatServiceStatus, processStartTime, stateDirFromEnv, verifyOwner } from '../../supervisor/service.ts';
import type { SessionStatus } from '../../supervisor/session.ts';

function sample(name = 'mnt-data'): PersistedSession {
  return {
    name,
    fdName: `fuse-${name}`,
    spec: { mountpoint: `/mnt/${name}`, fsName: 'mirrorfs', subtype: 'mirrorfs', rootMode: 0o40755, uid: 1000, gid: 1000, allowOther: false, defaultPermissions: true, readOnly: false, maxRead: 0 },
    connectionId: 57,
    creatorUid: 1000,
    generation: 3,
    restarts: 2,
    handovers: 0,
    owner: { pid: 4242, uid: 1000, startTime: '123456' },
    init: Buffer.from([1, 2, 3, 0, 255]),
    journal: JournalEntries.from([
      { id: 1, dev: 0x801n, ino: 0x123456789abcdef0n },
      { id: 7, dev: 2049n, ino: 18446744073709551615n },
    ]),
    highestReported: 9,
    checkpoint: new Map([
      ['nodes', Buffer.alloc(10_000, 7)],
      ['intent/ü', Buffer.alloc(0)],
    ]),
    lastRecovery: { at: '2026-01-01T00:00:00.000Z', durationUs: 1234, generation: 3, fenced: false, cleanup: { strategy: 'journal', closed: 1, probed: 0, alreadyGone: 0 }, resent: true },
    createdAt: '2026-01-01T00:00:00.000Z',
    savedAt: '2026-01-01T00:00:01.000Z',
  };
}

test('a session state survives encode/decode byte for byte, 64-bit inode numbers included', () => {
  const s = sample();
  const back = decodeSession(encodeSession(s));
  assert.deepEqual(back, s);
  assert.deepEqual(decodeSession(encodeSession({ ...s, owner: null, init: null, journal: JournalEntries.EMPTY, checkpoint: new Map(), lastRecovery: null, connectionId: null })).owner, null);
});

test('the version 2 layout: magic, header, journal in the wire layout, checkpoint entries, CRC-32', () => {
  const s = sample();
  const u32 = (n: number): Buffer => {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(n);
    return b;
  };
  const buf = encodeSession(s);
  const headerLength = buf.readUInt32LE(8);
  const body = Buffer.concat([
    Buffer.from('FKSTATE1', 'latin1'),
    u32(headerLength),
    buf.subarray(12, 12 + headerLength),
    u32(2),
    s.journal.bytes,
    u32(2),
    ...[...s.checkpoint].flatMap(([k, v]) => [u32(Buffer.byteLength(k)), Buffer.from(k), u32(v.length), v]),
  ]);
  assert.deepEqual(buf, Buffer.concat([body, u32(crc32(body))]));
  assert.equal(JSON.parse(buf.subarray(12, 12 + headerLength).toString()).generation, 3);
  const parts = sessionFileParts(s);
  assert.ok(parts.includes(s.journal.bytes), 'the journal is written from its own bytes, not a copy');
  assert.deepEqual(Buffer.concat(parts), buf);
});

test('a damaged or foreign state file is refused, never half-used', () => {
  const buf = encodeSession(sample());
  assert.throws(() => decodeSession(buf.subarray(0, buf.length - 1)), /checksum|truncated/);
  for (const at of [0, 10, 40, buf.length - 20, buf.length - 2]) {
    const bad = Buffer.from(buf);
    bad[at]! ^= 0x40;
    assert.throws(() => decodeSession(bad), /magic|checksum/, `flip at ${at}`);
  }
  assert.throws(() => decodeSession(Buffer.from('hello world, not a state file')), /magic/);
  // Well-formed but invalid content (checksum recomputed by encodeSession) is refused too.
  assert.throws(() => decodeSession(encodeSession({ ...sample(), name: 'bad name' })), /invalid session name/);
  assert.throws(() => decodeSession(encodeSession({ ...sample(), spec: { ...sample().spec, mountpoint: 'relative' } })), /invalid mount spec/);
  assert.throws(() => decodeSession(encodeSession({ ...sample(), generation: 0 })), /invalid generation/);
  // A journal entry with id 0: patched into the journal section, checksum recomputed.
  const good = encodeSession(sample());
  const at = good.indexOf(sample().journal.bytes);
  assert.ok(at > 0);
  const zeroId = Buffer.from(good.subarray(0, good.length - 4));
  zeroId.writeUInt32LE(0, at);
  assert.throws(() => decodeSession(withCrc(zeroId)), /invalid journal entry/);
  const truncated = Buffer.from(good.subarray(0, at - 4));
  assert.throws(() => decodeSession(withCrc(Buffer.concat([truncated, u32le(3), Buffer.alloc(20)]))), /truncated journal/);
});

function u32le(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
}

function withCrc(body: Buffer): Buffer {
  return Buffer.concat([body, u32le(crc32(body))]);
}

/** A state file as version 1 wrote it: the journal a JSON array in the header. */
function versionOneFile(s: PersistedSession, journal: unknown[]): Buffer {
  const header = Buffer.from(JSON.stringify({ version: 1, name: s.name, fdName: s.fdName, spec: s.spec, connectionId: s.connectionId, creatorUid: s.creatorUid, generation: s.generation, restarts: s.restarts, handovers: s.handovers, owner: s.owner, init: null, journal, highestReported: s.highestReported, lastRecovery: s.lastRecovery, createdAt: s.createdAt, savedAt: s.savedAt }));
  return withCrc(Buffer.concat([Buffer.from('FKSTATE1', 'latin1'), u32le(header.length), header, u32le(0)]));
}

test('a version 1 state file (journal in the JSON header) is still read', () => {
  const s = sample();
  const back = decodeSession(versionOneFile(s, [[1, '2049', '18446744073709551615'], [7, '1', '2']]));
  assert.deepEqual(back.journal.toArray(), [{ id: 1, dev: 2049n, ino: 18446744073709551615n }, { id: 7, dev: 1n, ino: 2n }]);
  assert.throws(() => decodeSession(versionOneFile(s, [[0, '1', '1']])), /invalid journal entry/);
  assert.throws(() => decodeSession(versionOneFile(s, [[1, '1', String(1n << 64n)]])), /invalid journal entry/);
});

test('writeFileAtomic replaces a file whole and leaves no temp file', () => {
  const dir = mkdtempSync(join(tmpdir(), 'fusekeeper-state-'));
  try {
    const p = join(dir, 'x.session');
    writeFileAtomic(p, Buffer.from('one'));
    writeFileAtomic(p, Buffer.from('two'));
    assert.equal(readFileSync(p, 'utf8'), 'two');
    writeFileAtomic(p, [Buffer.from('th'), Buffer.alloc(0), Buffer.from('ree')]);
    assert.equal(readFileSync(p, 'utf8'), 'three');
    assert.deepEqual(readdirSync(dir), ['x.session']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('StateStore: the hot path only marks dirty; one write per session per flush interval; urgent writes at once', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'fusekeeper-state-'));
  const sessions = new Map<string, PersistedSession>([['a', sample('a')], ['b', sample('b')]]);
  const errors: unknown[] = [];
  const log = { warn: (o: object) => errors.push(o), error: (o: object) => errors.push(o), debug: () => {} };
  const store = new StateStore(dir, { flushMs: 30, snapshot: (n) => sessions.get(n) ?? null, log });
  try {
    for (let i = 0; i < 1000; i++) store.markDirty('a');
    store.markDirty('b');
    assert.equal(store.writes, 0, 'nothing written synchronously');
    await sleep(80);
    assert.equal(store.writes, 2, 'one write each after the interval');
    sessions.get('a')!.generation = 4;
    store.flushSession('a');
    assert.equal(store.writes, 3);
    const loaded = store.loadAll();
    assert.deepEqual(loaded.sessions.map((s) => [s.name, s.generation]), [['a', 4], ['b', 3]]);
    // A vanished session's file goes at the next write; remove() drops it at once.
    sessions.delete('b');
    store.flushSession('b');
    assert.ok(!existsSync(join(dir, 'b.session')));
    store.remove('a');
    assert.deepEqual(store.loadAll().sessions, []);
    // Junk and leftovers: a torn temp file is deleted, a corrupt file reported and deleted.
    writeFileSync(join(dir, '.c.session.1.tmp'), 'partial');
    writeFileSync(join(dir, 'c.session'), 'garbage');
    writeFileSync(join(dir, 'd.session'), encodeSession(sample('e')));
    const junk = store.loadAll();
    assert.deepEqual(junk.sessions, []);
    assert.deepEqual(junk.rejected.map((r) => r.file), ['c.session', 'd.session']);
    assert.match(junk.rejected[1]!.reason, /does not match/);
    assert.deepEqual(readdirSync(dir), []);
    assert.deepEqual(errors, []);
  } finally {
    store.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('service helpers: state dir from the environment, process start time, owner verification, STATUS= line', () => {
  assert.equal(stateDirFromEnv({}), null);
  assert.equal(stateDirFromEnv({ RUNTIME_DIRECTORY: '/run/fusekeeper:/run/other' }), '/run/fusekeeper/sessions');
  assert.equal(stateDirFromEnv({ RUNTIME_DIRECTORY: '/run/fusekeeper', FUSEKEEPER_STATE_DIR: '/var/lib/fk' }), '/var/lib/fk');
  const mine = processStartTime(process.pid);
  assert.match(mine!, /^[0-9]+$/);
  assert.equal(processStartTime(0x7ffffff0), null);
  // The very process: a pidfd. Same pid, other start time (a reused pid): nothing.
  const pidfd = verifyOwner({ pid: process.pid, uid: 0, startTime: mine });
  assert.ok(pidfd !== null && pidfd >= 0);
  closeFd(pidfd);
  assert.equal(verifyOwner({ pid: process.pid, uid: 0, startTime: `${mine}1` }), null);
  assert.equal(verifyOwner({ pid: 0x7ffffff0, uid: 0, startTime: '1' }), null);
  assert.equal(verifyOwner({ pid: process.pid, uid: 0, startTime: null }), null);
  assert.equal(verifyOwner(null), null);
  const st = (name: string, state: SessionStatus['state'], at?: string): SessionStatus =>
    ({ name, state, lastRecovery: at ? { at, durationUs: 2500, generation: 2, fenced: false, cleanup: { strategy: 'journal', closed: 0, probed: 0, alreadyGone: 0 }, resent: true } : null }) as SessionStatus;
  assert.equal(formatServiceStatus([], null), '0 sessions (0 owned, 0 orphaned)');
  assert.equal(
    formatServiceStatus([st('a', 'owned', '2026-01-01T10:00:00.000Z'), st('b', 'orphaned', '2026-01-01T11:00:00.000Z'), st('c', 'draining')], { restored: [{ name: 'a', generation: 1, owner: 5 }], dropped: [], strayFds: [] }),
    '3 sessions (1 owned, 1 orphaned, 1 draining); restored 1 from the fd store at start; last recovery: b generation 2 in 2.5 ms at 11:00:00 UTC',
  );
});
