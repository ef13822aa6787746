import { test } from 'node:test';
import assert from 'node:assert/strict';
import { constants } from 'node:os';
import { mulberry32 } from './fixtures/prng.ts';
import {
  AcquireCollector,
  MAX_CHECKPOINT_FRAMES,
  JournalEntries,
  acquireAttachment,
  checkpointEntrySize,
  checkpointGoesInFile,
  decodeCheckpointFile,
  encodeCheckpointFile,
  journalGoesInFile,
  ERRNO,
  HEADER_SIZE,
  MAX_ADOPT_CHUNK,
  MAX_CHECKPOINT_BYTES,
  MAX_CHECKPOINT_FILE_ENTRIES,
  MAX_CHECKPOINT_VALUE,
  MAX_JOURNAL_CHUNK,
  MAX_JOURNAL_FILE_ENTRIES,
  MAX_KEY_BYTES,
  MAX_MESSAGE,
  MAX_STATUS_JSON,
  MESSAGE_TYPES,
  PROTOCOL_VERSION,
  ProtocolError,
  chunkAdopt,
  chunkJournal,
  decodeMessage,
  describeMessage,
  encodeAcquireSequence,
  encodeJournalClose,
  encodeJournalOpen,
  encodeMessage,
  errorMessage,
  fdCount,
  isCanonicalMountpoint,
  isValidSessionName,
  messageType,
  messageTypeByCode,
  sessionNameFromMountpoint,
  type ControlMessage,
  type DecodeResult,
  type JournalEntry,
  type MessageName,
  type MountSpec,
  type ProtocolErrorReason,
} from '../../protocol/index.ts';

// ---------------------------------------------------------------------------------------------
// An independent frame builder: explicit offsets, no code from protocol/.

function frame(type: number, requestId: number, payload: Buffer | number[] = []): Buffer {
  const p = Buffer.isBuffer(payload) ? payload : Buffer.from(payload);
  const b = Buffer.alloc(16 + p.length);
  b[0] = 0x46; // 'F'
  b[1] = 0x4b; // 'K'
  b[2] = 1; // version
  b[3] = type;
  // 4..5 flags = 0, 6..7 reserved = 0
  b.writeUInt32LE(requestId, 8);
  b.writeUInt32LE(p.length, 12);
  p.copy(b, 16);
  return b;
}
const u8 = (v: number) => Buffer.from([v]);
const u16 = (v: number) => { const b = Buffer.alloc(2); b.writeUInt16LE(v); return b; };
const u32 = (v: number) => { const b = Buffer.alloc(4); b.writeUInt32LE(v); return b; };
const u64 = (v: bigint) => { const b = Buffer.alloc(8); b.writeBigUInt64LE(v); return b; };
const str = (s: string | Buffer) => { const d = Buffer.isBuffer(s) ? s : Buffer.from(s, 'utf8'); return Buffer.concat([u16(d.length), d]); };
const bytes = (d: Buffer) => Buffer.concat([u32(d.length), d]);
const cat = (...parts: Buffer[]) => Buffer.concat(parts);

/** Type codes as docs/protocol.md lists them, written out independently of the table. */
const CODE = {
  hello: 0x01, acquire: 0x02, store: 0x03, adopt: 0x04, release: 0x05, status: 0x06, drain: 0x07,
  init_save: 0x20, journal_open: 0x21, journal_close: 0x22, checkpoint_put: 0x23, checkpoint_delete: 0x24, heartbeat: 0x25, drained: 0x26,
  ok: 0x40, error: 0x41, hello_ok: 0x42, acquired: 0x43, init_params: 0x44, checkpoint_entry: 0x45, journal_entries: 0x46,
  state_end: 0x47, stored: 0x48, adopted: 0x49, status_reply: 0x4a, journal_file: 0x4b, checkpoint_file: 0x4c, drain_request: 0x60,
} as const satisfies Record<MessageName, number>;

function mountPayload(m: MountSpec): Buffer {
  const flags = (m.allowOther ? 1 : 0) | (m.defaultPermissions ? 2 : 0) | (m.readOnly ? 4 : 0);
  return cat(str(m.mountpoint), str(m.fsName), str(m.subtype), u32(m.rootMode), u32(m.uid), u32(m.gid), u32(flags), u32(m.maxRead));
}

const MOUNT: MountSpec = {
  mountpoint: '/mnt/mirror',
  fsName: 'mirrorfs',
  subtype: 'mirror',
  rootMode: 0o40755,
  uid: 1000,
  gid: 1000,
  allowOther: true,
  defaultPermissions: false,
  readOnly: true,
  maxRead: 131072,
};

// ---------------------------------------------------------------------------------------------
// Samples: one or more of every message type, with a requestId that suits its direction.

interface Sample { msg: ControlMessage; requestId: number; fds: number }

const SAMPLES: Sample[] = [
  { msg: { type: 'hello', minVersion: 1, maxVersion: 3, role: 'daemon', clientName: 'mirrorfs 0.1 ✓' }, requestId: 1, fds: 0 },
  { msg: { type: 'hello', minVersion: 1, maxVersion: 1, role: 'cli', clientName: '' }, requestId: 0xffffffff, fds: 0 },
  { msg: { type: 'hello_ok', version: 1, supervisorVersion: '0.1.0', features: 3 }, requestId: 1, fds: 0 },
  { msg: { type: 'acquire', name: 'mirror-home', mount: MOUNT, standby: false }, requestId: 2, fds: 0 },
  { msg: { type: 'acquire', name: 'a', mount: { ...MOUNT, mountpoint: '/', allowOther: false, readOnly: false, defaultPermissions: true, maxRead: 0 }, standby: true }, requestId: 2, fds: 0 },
  { msg: { type: 'acquired', generation: 1, resumed: false, strategy: 'none' }, requestId: 2, fds: 1 },
  { msg: { type: 'acquired', generation: 0xffffffff, resumed: true, strategy: 'close-all' }, requestId: 2, fds: 1 },
  { msg: { type: 'init_params', params: Buffer.from('0700000029000000', 'hex') }, requestId: 2, fds: 0 },
  { msg: { type: 'checkpoint_entry', key: 'nodes/42', value: Buffer.from([1, 2, 3]) }, requestId: 2, fds: 0 },
  { msg: { type: 'checkpoint_entry', key: 'k'.repeat(MAX_KEY_BYTES), value: Buffer.alloc(MAX_CHECKPOINT_VALUE, 7) }, requestId: 2, fds: 0 },
  { msg: { type: 'journal_entries', entries: [{ id: 1, dev: 2049n, ino: 12n }, { id: 0x7fffffff, dev: 0n, ino: (1n << 64n) - 1n }] }, requestId: 2, fds: 0 },
  { msg: { type: 'journal_entries', entries: [] }, requestId: 2, fds: 0 },
  { msg: { type: 'journal_file', count: 1 }, requestId: 2, fds: 1 },
  { msg: { type: 'journal_file', count: MAX_JOURNAL_FILE_ENTRIES }, requestId: 2, fds: 1 },
  { msg: { type: 'checkpoint_file', count: 1, size: 7 }, requestId: 2, fds: 1 },
  { msg: { type: 'checkpoint_file', count: MAX_CHECKPOINT_FILE_ENTRIES, size: MAX_CHECKPOINT_BYTES }, requestId: 2, fds: 1 },
  { msg: { type: 'state_end', initParams: true, checkpointCount: 1, journalCount: 2 }, requestId: 2, fds: 0 },
  { msg: { type: 'store', name: 'self.mounted@host:1', mount: MOUNT }, requestId: 3, fds: 1 },
  { msg: { type: 'stored', generation: 1 }, requestId: 3, fds: 0 },
  { msg: { type: 'init_save', params: Buffer.alloc(64, 0xab) }, requestId: 0, fds: 0 },
  { msg: { type: 'init_save', params: Buffer.alloc(0) }, requestId: 0, fds: 0 },
  { msg: { type: 'journal_open', id: 7, dev: 0x801n, ino: 0x123456789abcdef0n }, requestId: 0, fds: 0 },
  { msg: { type: 'journal_close', id: 7 }, requestId: 0, fds: 0 },
  { msg: { type: 'adopt', more: false, ids: [1, 2, 99] }, requestId: 4, fds: 0 },
  { msg: { type: 'adopt', more: true, ids: [] }, requestId: 4, fds: 0 },
  { msg: { type: 'adopted', closed: 5, probed: 2 }, requestId: 4, fds: 0 },
  { msg: { type: 'checkpoint_put', ack: false, key: 'nodes', value: Buffer.from('{"1":"/"}') }, requestId: 0, fds: 0 },
  { msg: { type: 'checkpoint_put', ack: true, key: 'intent/mkdir/ß', value: Buffer.alloc(0) }, requestId: 5, fds: 0 },
  { msg: { type: 'checkpoint_delete', ack: false, key: 'intent/1' }, requestId: 0, fds: 0 },
  { msg: { type: 'checkpoint_delete', ack: true, key: 'intent/2' }, requestId: 6, fds: 0 },
  { msg: { type: 'heartbeat' }, requestId: 0, fds: 0 },
  { msg: { type: 'release', name: 'mirror-home' }, requestId: 7, fds: 0 },
  { msg: { type: 'status' }, requestId: 8, fds: 0 },
  { msg: { type: 'status_reply', json: JSON.stringify({ sessions: [{ name: 'mirror-home', generation: 2 }] }) }, requestId: 8, fds: 0 },
  { msg: { type: 'drain', name: 'mirror-home' }, requestId: 9, fds: 0 },
  { msg: { type: 'drain_request' }, requestId: 0, fds: 0 },
  { msg: { type: 'drained' }, requestId: 0, fds: 0 },
  { msg: { type: 'ok' }, requestId: 9, fds: 0 },
  { msg: { type: 'error', errno: 16, code: 'EBUSY', message: 'session mirror-home is owned by pid 1234' }, requestId: 2, fds: 0 },
  { msg: { type: 'error', errno: 71, code: 'EPROTO', message: 'bad magic' }, requestId: 0, fds: 0 },
  { msg: { type: 'error', errno: 4095, code: 'EFUTURE', message: '' }, requestId: 1, fds: 0 },
];

function expectReject(result: DecodeResult, reason: ProtocolErrorReason, what = ''): void {
  assert.equal(result.ok, false, `${what}: expected rejection (${reason})`);
  if (result.ok) return;
  assert.ok(result.error instanceof ProtocolError);
  assert.equal(result.error.code, 'EPROTO');
  assert.equal(result.error.errno, 71);
  assert.equal(result.error.reason, reason, `${what}: ${result.error.message}`);
}

function expectOk(result: DecodeResult): { message: ControlMessage; requestId: number } {
  if (!result.ok) assert.fail(`decode failed: ${result.error.message}`);
  return result;
}

function throwsEinval(fn: () => unknown, reason: ProtocolErrorReason): void {
  assert.throws(fn, (err: unknown) => err instanceof ProtocolError && err.code === 'EINVAL' && err.reason === reason);
}

function withPayloadLength(buf: Buffer): Buffer {
  const b = Buffer.from(buf);
  b.writeUInt32LE(b.length - HEADER_SIZE, 12);
  return b;
}

// ---------------------------------------------------------------------------------------------
// The table

test('MESSAGE_TYPES: unique codes and names, consistent rows, codes as documented', () => {
  const codes = new Set<number>();
  const names = new Set<string>();
  for (const t of MESSAGE_TYPES) {
    assert.ok(Number.isInteger(t.code) && t.code >= 1 && t.code <= 255, t.name);
    assert.ok(!codes.has(t.code), `duplicate code 0x${t.code.toString(16)}`);
    assert.ok(!names.has(t.name), `duplicate name ${t.name}`);
    codes.add(t.code);
    names.add(t.name);
    assert.equal(t.label, t.name.toUpperCase());
    assert.ok(t.fds === 0 || t.fds === 1);
    assert.equal(messageTypeByCode(t.code), t);
    assert.equal(messageType(t.name), t);
    assert.equal(fdCount(t.name), t.fds);
    assert.equal(t.code, CODE[t.name], `${t.name} code`);
    const range = t.direction === 'request' ? [0x01, 0x1f] : t.direction === 'one-way' ? [0x20, 0x3f] : t.direction === 'reply' ? [0x40, 0x5f] : [0x60, 0x7f];
    assert.ok(t.code >= range[0]! && t.code <= range[1]!, `${t.name} code in its direction's range`);
  }
  assert.equal(messageTypeByCode(0), undefined);
  assert.deepEqual([...names].sort(), Object.keys(CODE).sort());
  assert.deepEqual(MESSAGE_TYPES.filter((t) => t.fds === 1).map((t) => t.name).sort(), ['acquired', 'checkpoint_file', 'journal_file', 'store']);
  assert.equal(PROTOCOL_VERSION, 1);
  assert.equal(MAX_MESSAGE, 65536);
});

test('samples cover every message type', () => {
  assert.deepEqual(new Set(SAMPLES.map((s) => s.msg.type)), new Set(MESSAGE_TYPES.map((t) => t.name)));
});

// ---------------------------------------------------------------------------------------------
// Round trips

test('round trip of every message type', () => {
  for (const s of SAMPLES) {
    const buf = encodeMessage(s.msg, s.requestId);
    assert.ok(buf.length <= MAX_MESSAGE, s.msg.type);
    assert.equal(buf.readUInt32LE(12), buf.length - HEADER_SIZE);
    assert.equal(buf[3], CODE[s.msg.type]);
    const r = expectOk(decodeMessage(buf, s.fds));
    assert.deepEqual(r.message, s.msg, s.msg.type);
    assert.equal(r.requestId, s.requestId);
    // Canonical: re-encoding gives the same bytes.
    assert.deepEqual(encodeMessage(r.message, r.requestId), buf);
    assert.match(describeMessage(r.message, r.requestId), new RegExp(`^${s.msg.type.toUpperCase()}#${s.requestId}`));
  }
});

test('decoded buffers own their memory', () => {
  const buf = encodeMessage({ type: 'checkpoint_put', ack: false, key: 'k', value: Buffer.from('abc') });
  const r = expectOk(decodeMessage(buf, 0));
  buf.fill(0);
  assert.ok(r.message.type === 'checkpoint_put');
  assert.equal(r.message.value.toString(), 'abc');
});

test('direction check: the supervisor rejects replies, clients reject requests', () => {
  for (const s of SAMPLES) {
    const buf = encodeMessage(s.msg, s.requestId);
    const byClient = ['request', 'one-way'].includes(messageType(s.msg.type).direction);
    const asSupervisor = decodeMessage(buf, s.fds, { from: 'client' });
    const asClient = decodeMessage(buf, s.fds, { from: 'supervisor' });
    if (byClient) {
      expectOk(asSupervisor);
      expectReject(asClient, 'wrong direction', s.msg.type);
    } else {
      expectOk(asClient);
      expectReject(asSupervisor, 'wrong direction', s.msg.type);
    }
  }
});

// ---------------------------------------------------------------------------------------------
// Hex fixtures, written out by hand

const HELLO_HEX =
  '464b' + '01' + '01' + '0000' + '0000' + '2a000000' + '0f000000' + // header: magic, version 1, type 0x01, flags, reserved, requestId 42, payload 15
  '0100' + '0200' + '01' + // minVersion 1, maxVersion 2, role daemon
  '0800' + Buffer.from('mirrorfs').toString('hex'); // clientName

const ACQUIRED_HEX =
  '464b' + '01' + '43' + '0000' + '0000' + '04030201' + '06000000' + // requestId 0x01020304, payload 6
  '03000000' + '01' + '01'; // generation 3, resumed, strategy journal

const STATE_END_HEX =
  '464b' + '01' + '47' + '0000' + '0000' + '04030201' + '09000000' +
  '05000000' + '02000000' + '01'; // checkpointCount 5, journalCount 2, initParams

const ERROR_HEX =
  '464b' + '01' + '41' + '0000' + '0000' + '07000000' + '10000000' + // requestId 7, payload 16
  '10000000' + '0500' + Buffer.from('EBUSY').toString('hex') + '0300' + Buffer.from('pid').toString('hex');

function journalOpenFixture(): Buffer {
  const b = Buffer.alloc(36);
  b.writeUInt16LE(0x4b46, 0); // magic: bytes 46 4b
  b.writeUInt8(1, 2); // version
  b.writeUInt8(0x21, 3); // JOURNAL_OPEN
  b.writeUInt16LE(0, 4); // flags
  b.writeUInt16LE(0, 6); // reserved
  b.writeUInt32LE(0, 8); // requestId: one-way
  b.writeUInt32LE(20, 12); // payloadLength
  b.writeUInt32LE(7, 16); // id
  b.writeBigUInt64LE(0x801n, 20); // dev
  b.writeBigUInt64LE(0x123456789abcdef0n, 28); // ino
  return b;
}

const ACQUIRE_FIXTURE = frame(0x02, 9, cat(
  str('mirror-home'),
  str('/mnt/mirror'), str('mirrorfs'), str('mirror'),
  u32(0o40755), u32(1000), u32(1000), u32(0b101), u32(131072),
  u8(0),
));

const FIXTURES: { name: string; buf: Buffer; fds: number; msg: ControlMessage; requestId: number }[] = [
  { name: 'HELLO', buf: Buffer.from(HELLO_HEX, 'hex'), fds: 0, requestId: 42, msg: { type: 'hello', minVersion: 1, maxVersion: 2, role: 'daemon', clientName: 'mirrorfs' } },
  { name: 'ACQUIRED', buf: Buffer.from(ACQUIRED_HEX, 'hex'), fds: 1, requestId: 0x01020304, msg: { type: 'acquired', generation: 3, resumed: true, strategy: 'journal' } },
  { name: 'STATE_END', buf: Buffer.from(STATE_END_HEX, 'hex'), fds: 0, requestId: 0x01020304, msg: { type: 'state_end', initParams: true, checkpointCount: 5, journalCount: 2 } },
  { name: 'ERROR', buf: Buffer.from(ERROR_HEX, 'hex'), fds: 0, requestId: 7, msg: { type: 'error', errno: 16, code: 'EBUSY', message: 'pid' } },
  { name: 'JOURNAL_OPEN', buf: journalOpenFixture(), fds: 0, requestId: 0, msg: { type: 'journal_open', id: 7, dev: 0x801n, ino: 0x123456789abcdef0n } },
  { name: 'ACQUIRE', buf: ACQUIRE_FIXTURE, fds: 0, requestId: 9, msg: { type: 'acquire', name: 'mirror-home', mount: MOUNT, standby: false } },
];

test('hex fixtures decode to the expected messages and the encoder reproduces them byte for byte', () => {
  for (const f of FIXTURES) {
    const r = expectOk(decodeMessage(f.buf, f.fds));
    assert.deepEqual(r.message, f.msg, f.name);
    assert.equal(r.requestId, f.requestId, f.name);
    assert.equal(encodeMessage(f.msg, f.requestId).toString('hex'), f.buf.toString('hex'), f.name);
  }
  assert.equal(encodeMessage(SAMPLES[0]!.msg, 1).subarray(0, 2).toString('latin1'), 'FK');
});

test('encodeJournalOpen: exact 36 bytes, same as encodeMessage and the fixture', () => {
  const b = encodeJournalOpen(7, 0x801n, 0x123456789abcdef0n);
  assert.equal(b.length, 36);
  assert.deepEqual(b, journalOpenFixture());
  assert.deepEqual(encodeJournalClose(7), frame(0x22, 0, u32(7)));
  throwsEinval(() => encodeJournalOpen(0, 1n, 1n), 'invalid value');
  throwsEinval(() => encodeJournalOpen(0x80000000, 1n, 1n), 'invalid value');
  throwsEinval(() => encodeJournalOpen(1, -1n, 1n), 'invalid value');
  throwsEinval(() => encodeJournalOpen(1, 1n, 1n << 64n), 'invalid value');
  throwsEinval(() => encodeMessage({ type: 'journal_open', id: 1, dev: 1n, ino: 1n }, 3), 'bad request id');
});

test('every truncation of every fixture and sample is rejected with EPROTO, never thrown', () => {
  const all = [...FIXTURES.map((f) => ({ buf: f.buf, fds: f.fds, name: f.name })), ...SAMPLES.map((s) => ({ buf: encodeMessage(s.msg, s.requestId), fds: s.fds, name: s.msg.type }))];
  for (const { buf, fds, name } of all) {
    if (buf.length > 5000) continue; // the big checkpoint sample: covered by a stride below
    for (let n = 0; n < buf.length; n++) {
      const cut = buf.subarray(0, n);
      expectReject(decodeMessage(cut, fds), n < HEADER_SIZE ? 'truncated header' : 'length mismatch', `${name} cut at ${n}`);
      // The same cut with a consistent header: the payload parser itself must notice.
      if (n >= HEADER_SIZE) {
        const r = decodeMessage(withPayloadLength(cut), fds);
        assert.equal(r.ok, false, `${name} payload cut at ${n}`);
        if (!r.ok) assert.equal(r.error.code, 'EPROTO');
      }
    }
  }
  const big = encodeMessage({ type: 'checkpoint_entry', key: 'k', value: Buffer.alloc(20000, 1) }, 1);
  for (let n = HEADER_SIZE; n < big.length; n += 97) expectReject(decodeMessage(withPayloadLength(big.subarray(0, n)), 0), 'truncated payload');
});

// ---------------------------------------------------------------------------------------------
// Header rejections

test('header rejections: magic, version, flags, reserved, length, type, size', () => {
  const good = Buffer.from(HELLO_HEX, 'hex');
  expectOk(decodeMessage(good, 0));
  const patch = (off: number, v: number) => { const b = Buffer.from(good); b[off] = v; return b; };
  expectReject(decodeMessage(patch(0, 0x4b), 0), 'bad magic');
  expectReject(decodeMessage(patch(1, 0x46), 0), 'bad magic');
  expectReject(decodeMessage(patch(2, 2), 0), 'unsupported version');
  expectReject(decodeMessage(patch(2, 0), 0), 'unsupported version');
  expectReject(decodeMessage(patch(4, 1), 0), 'bad flags');
  expectReject(decodeMessage(patch(5, 0x80), 0), 'bad flags');
  expectReject(decodeMessage(patch(6, 1), 0), 'bad reserved');
  expectReject(decodeMessage(patch(12, 16), 0), 'length mismatch');
  expectReject(decodeMessage(patch(15, 1), 0), 'length mismatch');
  expectReject(decodeMessage(Buffer.concat([good, Buffer.from([0])]), 0), 'length mismatch');
  expectReject(decodeMessage(withPayloadLength(Buffer.concat([good, Buffer.from([0])])), 0), 'trailing bytes');
  for (const t of [0x00, 0x08, 0x1f, 0x27, 0x4d, 0x61, 0x7f, 0xff]) expectReject(decodeMessage(patch(3, t), 0), 'unknown type', `type ${t}`);
  expectReject(decodeMessage(Buffer.alloc(0), 0), 'truncated header');
  expectReject(decodeMessage(withPayloadLength(Buffer.concat([good, Buffer.alloc(MAX_MESSAGE)])), 0), 'oversized');
  // Errors after a readable header carry its requestId and type so the receiver can answer.
  const r = decodeMessage(patch(4, 1), 0);
  assert.ok(!r.ok && r.error.requestId === 42 && r.error.typeCode === 1);
  // Not a Buffer at all.
  expectReject(decodeMessage(undefined as unknown as Buffer, 0), 'truncated header');
  // A Uint8Array that is not a Buffer works.
  expectOk(decodeMessage(new Uint8Array(good) as Buffer, 0));
});

test('wrong fd count is rejected for every type', () => {
  for (const s of SAMPLES) {
    const buf = encodeMessage(s.msg, s.requestId);
    for (const n of [s.fds + 1, s.fds - 1, 253, 0.5, Number.NaN]) {
      if (n === s.fds) continue;
      expectReject(decodeMessage(buf, n), 'wrong fd count', `${s.msg.type} with ${n} fds`);
    }
  }
  expectReject(decodeMessage(Buffer.from(ACQUIRED_HEX, 'hex'), 0), 'wrong fd count');
  expectReject(decodeMessage(Buffer.from(ACQUIRED_HEX, 'hex'), 2), 'wrong fd count');
  expectReject(decodeMessage(journalOpenFixture(), 1), 'wrong fd count');
});

test('requestId rules: requests and replies need one, one-way and notify must not have one', () => {
  expectReject(decodeMessage(frame(CODE.status, 0), 0), 'bad request id');
  expectReject(decodeMessage(frame(CODE.ok, 0), 0), 'bad request id');
  expectReject(decodeMessage(frame(CODE.heartbeat, 1), 0), 'bad request id');
  expectReject(decodeMessage(frame(CODE.drain_request, 1), 0), 'bad request id');
  expectOk(decodeMessage(frame(CODE.error, 0, cat(u32(71), str('EPROTO'), str(''))), 0));
  expectReject(decodeMessage(frame(CODE.checkpoint_put, 0, cat(u8(1), str('k'), bytes(Buffer.alloc(0)))), 0), 'bad request id');
  expectReject(decodeMessage(frame(CODE.checkpoint_put, 5, cat(u8(0), str('k'), bytes(Buffer.alloc(0)))), 0), 'bad request id');
  expectOk(decodeMessage(frame(CODE.checkpoint_put, 5, cat(u8(1), str('k'), bytes(Buffer.alloc(0)))), 0));
  expectReject(decodeMessage(frame(CODE.checkpoint_delete, 0, cat(u8(1), str('k'))), 0), 'bad request id');
  throwsEinval(() => encodeMessage({ type: 'status' }), 'bad request id');
  throwsEinval(() => encodeMessage({ type: 'heartbeat' }, 1), 'bad request id');
  throwsEinval(() => encodeMessage({ type: 'checkpoint_delete', ack: true, key: 'k' }), 'bad request id');
  throwsEinval(() => encodeMessage({ type: 'status' }, 2 ** 32), 'bad request id');
  throwsEinval(() => encodeMessage({ type: 'status' }, -1), 'bad request id');
});

// ---------------------------------------------------------------------------------------------
// Payload rejections

test('invalid session names are rejected by decoder and encoder', () => {
  const bad = ['', '-x', '.x', '_x', 'a/b', 'a b', 'é', 'x'.repeat(129), 'a\tb', 'a,b'];
  for (const name of bad) {
    assert.equal(isValidSessionName(name), false, name);
    expectReject(decodeMessage(frame(CODE.release, 1, str(name)), 0), 'invalid name', JSON.stringify(name));
    expectReject(decodeMessage(frame(CODE.drain, 1, str(name)), 0), 'invalid name', JSON.stringify(name));
    throwsEinval(() => encodeMessage({ type: 'release', name }, 1), 'invalid name');
  }
  for (const name of ['a', '0', 'x'.repeat(128), 'mirror-home', 'a.b@c:d_e-f']) expectOk(decodeMessage(frame(CODE.release, 1, str(name)), 0));
  const longName = frame(CODE.acquire, 1, cat(str('x'.repeat(300)), mountPayload(MOUNT), u8(0)));
  expectReject(decodeMessage(longName, 0), 'invalid name');
  expectReject(decodeMessage(frame(CODE.store, 1, cat(str('bad name'), mountPayload(MOUNT))), 1), 'invalid name');
});

test('invalid strings: bad UTF-8, encoded surrogates, NUL', () => {
  const hello = (name: Buffer) => frame(CODE.hello, 1, cat(u16(1), u16(1), u8(1), str(name)));
  expectOk(decodeMessage(hello(Buffer.from('ok ✓')), 0));
  for (const raw of ['ff', 'c0af', 'eda080', 'e282', 'f4908080', '6100']) {
    expectReject(decodeMessage(hello(Buffer.from(raw, 'hex')), 0), 'invalid string', raw);
  }
  throwsEinval(() => encodeMessage({ type: 'hello', minVersion: 1, maxVersion: 1, role: 'cli', clientName: 'a\0b' }, 1), 'invalid string');
  throwsEinval(() => encodeMessage({ type: 'hello', minVersion: 1, maxVersion: 1, role: 'cli', clientName: 'a\ud800' }, 1), 'invalid string');
  expectReject(decodeMessage(frame(CODE.status_reply, 1, cat(u32(3), Buffer.from('{\0}'))), 0), 'invalid string');
});

test('invalid checkpoint keys and oversized values', () => {
  expectReject(decodeMessage(frame(CODE.checkpoint_put, 0, cat(u8(0), str(''), bytes(Buffer.alloc(1)))), 0), 'invalid key');
  expectReject(decodeMessage(frame(CODE.checkpoint_delete, 0, cat(u8(0), str('k'.repeat(MAX_KEY_BYTES + 1)))), 0), 'invalid key');
  expectOk(decodeMessage(frame(CODE.checkpoint_delete, 0, cat(u8(0), str('k'.repeat(MAX_KEY_BYTES)))), 0));
  throwsEinval(() => encodeMessage({ type: 'checkpoint_delete', ack: false, key: '' }), 'invalid key');
  throwsEinval(() => encodeMessage({ type: 'checkpoint_delete', ack: false, key: 'é'.repeat(513) }), 'invalid key');
  expectReject(decodeMessage(frame(CODE.checkpoint_put, 0, cat(u8(0), str('k'), bytes(Buffer.alloc(MAX_CHECKPOINT_VALUE + 1)))), 0), 'oversized');
  expectReject(decodeMessage(frame(CODE.checkpoint_put, 0, cat(u8(0), str('k'), u32(0xffffffff))), 0), 'oversized');
  throwsEinval(() => encodeMessage({ type: 'checkpoint_put', ack: false, key: 'k', value: Buffer.alloc(MAX_CHECKPOINT_VALUE + 1) }), 'oversized');
  // The longest key with the longest value still fits a frame.
  const biggest = encodeMessage({ type: 'checkpoint_put', ack: true, key: 'é'.repeat(512), value: Buffer.alloc(MAX_CHECKPOINT_VALUE) }, 1);
  assert.ok(biggest.length <= MAX_MESSAGE);
});

test('oversized counts are rejected before anything is allocated', () => {
  expectReject(decodeMessage(frame(CODE.journal_entries, 1, u32(0xffffffff)), 0), 'oversized');
  expectReject(decodeMessage(frame(CODE.journal_entries, 1, u32(MAX_JOURNAL_CHUNK + 1)), 0), 'oversized');
  expectReject(decodeMessage(frame(CODE.journal_entries, 1, cat(u32(2), u32(1), u64(1n), u64(1n))), 0), 'truncated payload');
  expectReject(decodeMessage(frame(CODE.adopt, 1, cat(u8(0), u32(0xffffffff))), 0), 'oversized');
  expectReject(decodeMessage(frame(CODE.adopt, 1, cat(u8(0), u32(MAX_ADOPT_CHUNK + 1))), 0), 'oversized');
  expectReject(decodeMessage(frame(CODE.adopt, 1, cat(u8(0), u32(3), u32(1))), 0), 'truncated payload');
  expectReject(decodeMessage(frame(CODE.status_reply, 1, u32(0xffffffff)), 0), 'oversized');
  expectReject(decodeMessage(frame(CODE.journal_file, 1, u32(MAX_JOURNAL_FILE_ENTRIES + 1)), 1), 'oversized');
  expectReject(decodeMessage(frame(CODE.journal_file, 1, u32(0)), 1), 'invalid value');
  expectReject(decodeMessage(frame(CODE.journal_file, 1, u32(1)), 0), 'wrong fd count');
  throwsEinval(() => encodeMessage({ type: 'journal_file', count: MAX_JOURNAL_FILE_ENTRIES + 1 }, 1), 'oversized');
  throwsEinval(() => encodeMessage({ type: 'journal_file', count: 0 }, 1), 'invalid value');
  expectReject(decodeMessage(frame(CODE.checkpoint_file, 1, cat(u32(MAX_CHECKPOINT_FILE_ENTRIES + 1), u32(MAX_CHECKPOINT_BYTES))), 1), 'oversized');
  expectReject(decodeMessage(frame(CODE.checkpoint_file, 1, cat(u32(1), u32(MAX_CHECKPOINT_BYTES + 1))), 1), 'oversized');
  expectReject(decodeMessage(frame(CODE.checkpoint_file, 1, cat(u32(0), u32(7))), 1), 'invalid value');
  expectReject(decodeMessage(frame(CODE.checkpoint_file, 1, cat(u32(2), u32(13))), 1), 'invalid value');
  expectReject(decodeMessage(frame(CODE.checkpoint_file, 1, cat(u32(1), u32(7))), 0), 'wrong fd count');
  throwsEinval(() => encodeMessage({ type: 'checkpoint_file', count: 0, size: 7 }, 1), 'invalid value');
  throwsEinval(() => encodeMessage({ type: 'checkpoint_file', count: 2, size: 13 }, 1), 'invalid value');
  throwsEinval(() => encodeMessage({ type: 'checkpoint_file', count: 1, size: MAX_CHECKPOINT_BYTES + 1 }, 1), 'oversized');
  expectReject(decodeMessage(frame(CODE.init_save, 0, u32(0x7fffffff)), 0), 'oversized');
  expectReject(decodeMessage(frame(CODE.hello, 1, cat(u16(1), u16(1), u8(1), u16(0xffff), Buffer.from('abc'))), 0), 'oversized');
  expectReject(decodeMessage(frame(CODE.hello, 1, cat(u16(1), u16(1), u8(1), u16(200), Buffer.from('abc'))), 0), 'truncated payload');
  throwsEinval(() => encodeMessage({ type: 'journal_entries', entries: new Array<JournalEntry>(MAX_JOURNAL_CHUNK + 1).fill({ id: 1, dev: 0n, ino: 0n }) }, 1), 'oversized');
  throwsEinval(() => encodeMessage({ type: 'adopt', more: false, ids: new Array<number>(MAX_ADOPT_CHUNK + 1).fill(1) }, 1), 'oversized');
  throwsEinval(() => encodeMessage({ type: 'status_reply', json: 'x'.repeat(MAX_STATUS_JSON + 1) }, 1), 'oversized');
  const fullStatus = encodeMessage({ type: 'status_reply', json: 'x'.repeat(MAX_STATUS_JSON) }, 1);
  assert.equal(fullStatus.length, MAX_MESSAGE);
  expectOk(decodeMessage(fullStatus, 0));
});

test('chunk limits are tight: a full chunk fits, one more entry would not', () => {
  const full = encodeMessage({ type: 'journal_entries', entries: new Array<JournalEntry>(MAX_JOURNAL_CHUNK).fill({ id: 1, dev: 0n, ino: 0n }) }, 1);
  assert.ok(full.length <= MAX_MESSAGE && full.length + 20 > MAX_MESSAGE);
  const adopt = encodeMessage({ type: 'adopt', more: false, ids: new Array<number>(MAX_ADOPT_CHUNK).fill(1) }, 1);
  assert.ok(adopt.length <= MAX_MESSAGE && adopt.length + 4 > MAX_MESSAGE);
});

test('invalid values: enums, booleans, ids, flags, versions, errno', () => {
  const hello = (min: number, max: number, role: number) => frame(CODE.hello, 1, cat(u16(min), u16(max), u8(role), str('x')));
  expectReject(decodeMessage(hello(1, 1, 0), 0), 'invalid value');
  expectReject(decodeMessage(hello(1, 1, 3), 0), 'invalid value');
  expectReject(decodeMessage(hello(0, 1, 1), 0), 'invalid value');
  expectReject(decodeMessage(hello(2, 1, 1), 0), 'invalid value');
  expectReject(decodeMessage(frame(CODE.acquired, 1, cat(u32(1), u8(2), u8(0))), 1), 'invalid value');
  expectReject(decodeMessage(frame(CODE.acquired, 1, cat(u32(1), u8(0), u8(3))), 1), 'invalid value');
  expectReject(decodeMessage(frame(CODE.acquired, 1, cat(u32(0), u8(0), u8(0))), 1), 'invalid value');
  expectReject(decodeMessage(frame(CODE.journal_open, 0, cat(u32(0), u64(1n), u64(1n))), 0), 'invalid value');
  expectReject(decodeMessage(frame(CODE.journal_open, 0, cat(u32(0x80000000), u64(1n), u64(1n))), 0), 'invalid value');
  expectReject(decodeMessage(frame(CODE.journal_close, 0, u32(0)), 0), 'invalid value');
  expectReject(decodeMessage(frame(CODE.adopt, 1, cat(u8(0), u32(1), u32(0))), 0), 'invalid value');
  expectReject(decodeMessage(frame(CODE.checkpoint_delete, 0, cat(u8(7), str('k'))), 0), 'invalid value');
  const acquire = (mount: Buffer) => frame(CODE.acquire, 1, cat(str('n'), mount, u8(0)));
  const m = mountPayload(MOUNT);
  const flagsAt = m.length - 8;
  const badFlags = Buffer.from(m);
  badFlags.writeUInt32LE(8, flagsAt);
  expectReject(decodeMessage(acquire(badFlags), 0), 'invalid value');
  expectReject(decodeMessage(acquire(mountPayload({ ...MOUNT, fsName: 'a,b' })), 0), 'invalid value');
  expectReject(decodeMessage(acquire(mountPayload({ ...MOUNT, subtype: '' })), 0), 'invalid value');
  expectReject(decodeMessage(frame(CODE.error, 1, cat(u32(5), str('EBUSY'), str(''))), 0), 'invalid value');
  expectReject(decodeMessage(frame(CODE.error, 1, cat(u32(0), str('EFOO'), str(''))), 0), 'invalid value');
  expectReject(decodeMessage(frame(CODE.error, 1, cat(u32(1), str('busy'), str(''))), 0), 'invalid value');
  throwsEinval(() => encodeMessage({ type: 'error', errno: 5, code: 'EBUSY', message: '' }, 1), 'invalid value');
  throwsEinval(() => encodeMessage({ type: 'acquired', generation: 0, resumed: false, strategy: 'none' }, 1), 'invalid value');
  throwsEinval(() => encodeMessage({ type: 'acquired', generation: 1, resumed: false, strategy: 'fast' as 'none' }, 1), 'invalid value');
  throwsEinval(() => encodeMessage({ type: 'adopted', closed: 1.5, probed: 0 }, 1), 'invalid value');
  throwsEinval(() => encodeMessage({ type: 'type' } as unknown as ControlMessage, 1), 'unknown type');
});

test('mountpoints must be canonical absolute paths', () => {
  const acquire = (mountpoint: string) => frame(CODE.acquire, 1, cat(str('n'), mountPayload({ ...MOUNT, mountpoint }), u8(0)));
  for (const p of ['', 'mnt', 'mnt/x', '/mnt/', '/mnt//x', '/mnt/./x', '/mnt/../x', '/..', '/' + 'x'.repeat(4096)]) {
    assert.equal(isCanonicalMountpoint(p), false, p);
    expectReject(decodeMessage(acquire(p), 0), 'invalid path', p);
    throwsEinval(() => encodeMessage({ type: 'acquire', name: 'n', mount: { ...MOUNT, mountpoint: p }, standby: false }, 1), 'invalid path');
  }
  for (const p of ['/', '/mnt', '/mnt/data x/ü', '/a/.b/..c', '/' + 'x'.repeat(4095)]) {
    assert.equal(isCanonicalMountpoint(p), true, p);
    expectOk(decodeMessage(acquire(p), 0));
  }
});

// ---------------------------------------------------------------------------------------------
// Chunking and sequences

test('chunkJournal: 100k entries in messages of at most MAX_MESSAGE, all carried in order', () => {
  const entries: JournalEntry[] = [];
  for (let i = 0; i < 100_000; i++) entries.push({ id: i + 1, dev: BigInt(i % 7), ino: BigInt(i) * 0x10001n });
  const chunks = chunkJournal(entries);
  assert.equal(chunks.length, Math.ceil(100_000 / MAX_JOURNAL_CHUNK));
  const back: JournalEntry[] = [];
  for (const c of chunks) {
    const buf = encodeMessage(c, 1);
    assert.ok(buf.length <= MAX_MESSAGE);
    const r = expectOk(decodeMessage(buf, 0));
    assert.ok(r.message.type === 'journal_entries');
    back.push(...r.message.entries);
  }
  assert.deepEqual(back, entries);
  assert.deepEqual(chunkJournal([]), []);
});

test('chunkAdopt: chunks fit, only the last has more=false', () => {
  const ids = Array.from({ length: 40_000 }, (_, i) => i + 1);
  const chunks = chunkAdopt(ids);
  assert.equal(chunks.length, 3);
  assert.deepEqual(chunks.map((c) => c.more), [true, true, false]);
  assert.deepEqual(chunks.flatMap((c) => c.ids), ids);
  for (const c of chunks) assert.ok(encodeMessage(c, 1).length <= MAX_MESSAGE);
  assert.deepEqual(chunkAdopt([]), [{ type: 'adopt', more: false, ids: [] }]);
});

test('ACQUIRE sequence: encodeAcquireSequence and AcquireCollector agree, counts are verified', () => {
  const checkpoint = new Map<string, Buffer>();
  for (let i = 0; i < 50; i++) checkpoint.set(`node/${i}`, Buffer.from(`value ${i}`));
  const journal = Array.from({ length: 7000 }, (_, i): JournalEntry => ({ id: i + 1, dev: 2049n, ino: BigInt(1000 + i) }));
  const state = { acquired: { type: 'acquired' as const, generation: 4, resumed: true, strategy: 'journal' as const }, initParams: Buffer.alloc(64, 1), checkpoint, journal };
  const frames = encodeAcquireSequence(11, state);
  assert.equal(frames.length, 1 + 1 + 50 + 3 + 1);
  const decoded = frames.map((f, i) => expectOk(decodeMessage(f, i === 0 ? 1 : 0, { from: 'supervisor' })));
  for (const d of decoded) assert.equal(d.requestId, 11);
  const c = new AcquireCollector();
  let last;
  for (const d of decoded) last = c.push(d.message);
  assert.ok(last && last.done && 'state' in last);
  assert.deepEqual(last.state.acquired, state.acquired);
  assert.deepEqual(last.state.initParams, state.initParams);
  assert.deepEqual(last.state.checkpoint, checkpoint);
  assert.deepEqual(last.state.journal.toArray(), journal);
  assert.ok(c.push({ type: 'ok' }).done);

  // A lost frame, a duplicate key, state on a fresh acquire, misplaced messages: bad sequence.
  const broken = (msgs: ControlMessage[]) => {
    const col = new AcquireCollector();
    let p;
    for (const m of msgs) { p = col.push(m); if (p.done) break; }
    return p;
  };
  const msgs = decoded.map((d) => d.message);
  for (const variant of [
    msgs.filter((_, i) => i !== 5),
    [msgs[0]!, msgs[2]!, msgs[2]!, msgs.at(-1)!],
    [msgs[0]!, msgs[2]!, msgs[1]!],
    [msgs[1]!],
    [{ type: 'acquired', generation: 1, resumed: false, strategy: 'none' } as ControlMessage, msgs[2]!],
    [msgs[0]!, { type: 'ok' } as ControlMessage],
    [msgs[0]!, { type: 'error', errno: 5, code: 'EIO', message: '' } as ControlMessage],
  ]) {
    const p = broken(variant);
    assert.ok(p && p.done && 'error' in p, JSON.stringify(variant.map((m) => m.type)));
    assert.equal(p.error.reason, 'bad sequence');
  }
  const refused = broken([{ type: 'error', errno: 16, code: 'EBUSY', message: 'owned' }]);
  assert.ok(refused && refused.done && 'refused' in refused && refused.refused.code === 'EBUSY');

  const fresh = encodeAcquireSequence(1, { acquired: { type: 'acquired', generation: 1, resumed: false, strategy: 'none' }, initParams: null, checkpoint: new Map(), journal: [] });
  assert.equal(fresh.length, 2);
  throwsEinval(() => encodeAcquireSequence(1, { ...state, acquired: { ...state.acquired, resumed: false } }), 'bad sequence');
});

test('ACQUIRE sequence with the journal in a JOURNAL_FILE: counted, exclusive, checked against its entries', () => {
  const journal = JournalEntries.from(Array.from({ length: MAX_JOURNAL_CHUNK + 1 }, (_, i): JournalEntry => ({ id: i + 1, dev: 7n, ino: BigInt(i) })));
  assert.ok(journalGoesInFile(journal.length) && !journalGoesInFile(MAX_JOURNAL_CHUNK));
  const state = { acquired: { type: 'acquired' as const, generation: 3, resumed: true, strategy: 'journal' as const }, initParams: null, checkpoint: new Map([['k', Buffer.from('v')]]), journal };
  const frames = encodeAcquireSequence(9, state, { journalFile: true });
  assert.equal(frames.length, 4);
  const fds = (i: number) => (i === 0 || i === frames.length - 2 ? 1 : 0);
  const msgs = frames.map((f, i) => expectOk(decodeMessage(f, fds(i), { from: 'supervisor' })).message);
  assert.deepEqual(msgs[2], { type: 'journal_file', count: journal.length });
  assert.deepEqual(msgs[3], { type: 'state_end', initParams: false, checkpointCount: 1, journalCount: journal.length });
  const run = (list: ControlMessage[], file: (m: ControlMessage) => JournalEntries | Error | undefined) => {
    const c = new AcquireCollector();
    let p;
    for (const m of list) { p = c.push(m, file(m)); if (p.done) break; }
    return p;
  };
  const ok = run(msgs, (m) => (m.type === 'journal_file' ? journal : undefined));
  assert.ok(ok && ok.done && 'state' in ok);
  assert.deepEqual(ok.state.journal.bytes, journal.bytes);

  const chunk = expectOk(decodeMessage(encodeMessage({ type: 'journal_entries', entries: [{ id: 1, dev: 1n, ino: 1n }] }, 9), 0)).message;
  const short = JournalEntries.from(journal.toArray().slice(1));
  for (const [what, list, file] of [
    ['no entries given', msgs, () => undefined],
    ['unreadable file', msgs, (m: ControlMessage) => (m.type === 'journal_file' ? new Error('not sealed') : undefined)],
    ['count differs from the file', msgs, (m: ControlMessage) => (m.type === 'journal_file' ? short : undefined)],
    ['frames after the file', [msgs[0]!, msgs[2]!, chunk, msgs[3]!], (m: ControlMessage) => (m.type === 'journal_file' ? journal : undefined)],
    ['a file after frames', [msgs[0]!, chunk, msgs[2]!, msgs[3]!], (m: ControlMessage) => (m.type === 'journal_file' ? journal : undefined)],
    ['two files', [msgs[0]!, msgs[2]!, msgs[2]!, msgs[3]!], (m: ControlMessage) => (m.type === 'journal_file' ? journal : undefined)],
  ] as const) {
    const p = run([...list], file);
    assert.ok(p && p.done && 'error' in p, what);
    assert.equal(p.error.reason, 'bad sequence', what);
  }
  // A fresh ACQUIRED is never followed by a journal.
  const fresh = run([{ type: 'acquired', generation: 1, resumed: false, strategy: 'journal' }, msgs[2]!], () => journal);
  assert.ok(fresh && fresh.done && 'error' in fresh);
  throwsEinval(() => encodeAcquireSequence(1, { ...state, journal: [] }, { journalFile: true }), 'bad sequence');
});

test('CHECKPOINT_FILE contents: entries laid out as CHECKPOINT_ENTRY payloads, checked like them', () => {
  const checkpoint = new Map<string, Buffer>([['nodes/1', Buffer.from('one')], ['ü', Buffer.alloc(0)], ['k'.repeat(MAX_KEY_BYTES), Buffer.alloc(MAX_CHECKPOINT_VALUE, 9)]]);
  const file = encodeCheckpointFile(checkpoint);
  // Written out independently: u16 key length, key, u32 value length, value.
  const expected = cat(...[...checkpoint].map(([k, v]) => cat(str(k), bytes(v))));
  assert.deepEqual(file, expected);
  assert.equal(file.length, [...checkpoint].reduce((n, [k, v]) => n + checkpointEntrySize(k, v), 0));
  assert.deepEqual(decodeCheckpointFile(file, checkpoint.size), checkpoint);
  // Each entry is the payload of the CHECKPOINT_ENTRY that would carry it.
  const first = encodeMessage({ type: 'checkpoint_entry', key: 'nodes/1', value: Buffer.from('one') }, 1);
  assert.deepEqual(file.subarray(0, first.length - HEADER_SIZE), first.subarray(HEADER_SIZE));

  const rejects = (buf: Buffer, count: number, reason: ProtocolErrorReason) =>
    assert.throws(() => decodeCheckpointFile(buf, count), (e: unknown) => e instanceof ProtocolError && e.code === 'EPROTO' && e.reason === reason, reason);
  rejects(file, checkpoint.size + 1, 'truncated payload');
  rejects(file, checkpoint.size - 1, 'trailing bytes');
  rejects(file.subarray(0, file.length - 1), checkpoint.size, 'truncated payload');
  rejects(cat(str('a'), bytes(Buffer.from('1')), str('a'), bytes(Buffer.from('2'))), 2, 'invalid value');
  rejects(cat(str(''), bytes(Buffer.alloc(0))), 1, 'invalid key');
  rejects(cat(str(Buffer.from([0x61, 0])), bytes(Buffer.alloc(0))), 1, 'invalid string');
  rejects(cat(str('k'.repeat(MAX_KEY_BYTES + 1)), bytes(Buffer.alloc(0))), 1, 'invalid key');
  rejects(cat(str('a'), u32(MAX_CHECKPOINT_VALUE + 1)), 1, 'oversized');
  rejects(cat(str('a'), u32(0xffffffff)), 1, 'oversized');

  throwsEinval(() => encodeCheckpointFile(new Map()), 'invalid value');
  throwsEinval(() => encodeCheckpointFile(new Map([['', Buffer.alloc(0)]])), 'invalid key');
  throwsEinval(() => encodeCheckpointFile(new Map([['a', Buffer.alloc(MAX_CHECKPOINT_VALUE + 1)]])), 'oversized');
});

test('ACQUIRE sequence with the checkpoint in a CHECKPOINT_FILE: counted, exclusive, before the journal, checked against its contents', () => {
  const checkpoint = new Map<string, Buffer>();
  for (let i = 0; i <= MAX_CHECKPOINT_FRAMES; i++) checkpoint.set(`node/${i}`, Buffer.from(`value ${i}`));
  assert.ok(checkpointGoesInFile(checkpoint.size) && !checkpointGoesInFile(MAX_CHECKPOINT_FRAMES));
  const journal = JournalEntries.from(Array.from({ length: MAX_JOURNAL_CHUNK + 1 }, (_, i): JournalEntry => ({ id: i + 1, dev: 7n, ino: BigInt(i) })));
  const state = { acquired: { type: 'acquired' as const, generation: 3, resumed: true, strategy: 'journal' as const }, initParams: Buffer.alloc(8), checkpoint, journal };
  const frames = encodeAcquireSequence(9, state, { checkpointFile: true, journalFile: true });
  assert.deepEqual(frames.map(acquireAttachment), ['fuse-device', null, 'checkpoint-file', 'journal-file', null]);
  const msgs = frames.map((f) => expectOk(decodeMessage(f, acquireAttachment(f) === null ? 0 : 1, { from: 'supervisor' })).message);
  const size = encodeCheckpointFile(checkpoint).length;
  assert.deepEqual(msgs[2], { type: 'checkpoint_file', count: checkpoint.size, size });
  assert.deepEqual(msgs[4], { type: 'state_end', initParams: true, checkpointCount: checkpoint.size, journalCount: journal.length });
  const contents = (m: ControlMessage) => (m.type === 'checkpoint_file' ? decodeCheckpointFile(encodeCheckpointFile(checkpoint), checkpoint.size) : m.type === 'journal_file' ? journal : undefined);
  const run = (list: ControlMessage[], file: (m: ControlMessage) => JournalEntries | Map<string, Buffer> | Error | undefined) => {
    const c = new AcquireCollector();
    let p;
    for (const m of list) { p = c.push(m, file(m)); if (p.done) break; }
    return p;
  };
  const ok = run(msgs, contents);
  assert.ok(ok && ok.done && 'state' in ok);
  assert.deepEqual(ok.state.checkpoint, checkpoint);
  assert.deepEqual(ok.state.journal.bytes, journal.bytes);
  // Checkpoint in a file, journal in frames.
  const mixed = encodeAcquireSequence(9, { ...state, journal: [{ id: 1, dev: 1n, ino: 1n }] }, { checkpointFile: true });
  assert.deepEqual(mixed.map(acquireAttachment), ['fuse-device', null, 'checkpoint-file', null, null]);
  const mixedMsgs = mixed.map((f) => expectOk(decodeMessage(f, acquireAttachment(f) === null ? 0 : 1, { from: 'supervisor' })).message);
  const mixedOk = run(mixedMsgs, contents);
  assert.ok(mixedOk && mixedOk.done && 'state' in mixedOk);

  const entry = expectOk(decodeMessage(encodeMessage({ type: 'checkpoint_entry', key: 'x', value: Buffer.alloc(1) }, 9), 0)).message;
  const fewer = new Map([...checkpoint].slice(1));
  for (const [what, list, file] of [
    ['no contents given', msgs, (m: ControlMessage) => (m.type === 'checkpoint_file' ? undefined : contents(m))],
    ['unreadable file', msgs, (m: ControlMessage) => (m.type === 'checkpoint_file' ? new Error('not sealed') : contents(m))],
    ['journal entries as its contents', msgs, (m: ControlMessage) => (m.type === 'checkpoint_file' ? journal : contents(m))],
    ['checkpoint as the journal file contents', msgs, (m: ControlMessage) => (m.type === 'journal_file' ? checkpoint : contents(m))],
    ['count differs from the file', msgs, (m: ControlMessage) => (m.type === 'checkpoint_file' ? fewer : contents(m))],
    ['entries after the file', [msgs[0]!, msgs[2]!, entry, msgs[3]!, msgs[4]!], contents],
    ['a file after entries', [msgs[0]!, entry, msgs[2]!, msgs[3]!, msgs[4]!], contents],
    ['two files', [msgs[0]!, msgs[2]!, msgs[2]!, msgs[3]!, msgs[4]!], contents],
    ['after the journal', [msgs[0]!, msgs[3]!, msgs[2]!, msgs[4]!], contents],
    ['before INIT_PARAMS', [msgs[0]!, msgs[2]!, msgs[1]!, msgs[3]!, msgs[4]!], contents],
  ] as const) {
    const p = run([...list], file);
    assert.ok(p && p.done && 'error' in p, what);
    assert.equal(p.error.reason, 'bad sequence', what);
  }
  const fresh = run([{ type: 'acquired', generation: 1, resumed: false, strategy: 'journal' }, msgs[2]!], contents);
  assert.ok(fresh && fresh.done && 'error' in fresh);
  throwsEinval(() => encodeAcquireSequence(1, { ...state, checkpoint: new Map() }, { checkpointFile: true }), 'bad sequence');
});

// ---------------------------------------------------------------------------------------------
// Errors and names

test('errno table matches Linux x86_64 and errorMessage builds valid ERRORs', () => {
  const expected = { EPERM: 1, ENOENT: 2, EIO: 5, EBADF: 9, EAGAIN: 11, EACCES: 13, EBUSY: 16, EEXIST: 17, EINVAL: 22, ENOSPC: 28, EPROTO: 71, ENOTSUP: 95, ETIMEDOUT: 110, ESTALE: 116 };
  assert.deepEqual({ ...ERRNO }, expected);
  if (process.platform === 'linux') for (const [k, v] of Object.entries(expected)) assert.equal(constants.errno[k as keyof typeof constants.errno], v, k);
  const e = errorMessage('EBUSY', 'x'.repeat(1023) + 'é' + '\0' + '\ud800');
  assert.equal(e.errno, 16);
  assert.ok(Buffer.byteLength(e.message) <= 1024);
  assert.ok(!e.message.includes('é'), 'cut at a character boundary');
  expectOk(decodeMessage(encodeMessage(e, 1), 0));
  assert.equal(errorMessage('ENOENT', 'a\0b').message, 'a b');
});

test('sessionNameFromMountpoint: deterministic, valid, lossless names stay readable', () => {
  assert.equal(sessionNameFromMountpoint('/mnt/data'), 'mnt-data');
  assert.equal(sessionNameFromMountpoint('/mnt//data/'), 'mnt-data');
  assert.equal(sessionNameFromMountpoint('/mnt/x/../data'), 'mnt-data');
  assert.equal(sessionNameFromMountpoint('/'), 'root');
  assert.equal(sessionNameFromMountpoint('/srv/my_data.v2'), 'srv-my_data.v2');
  assert.match(sessionNameFromMountpoint('/mnt/data x'), /^mnt-data_x@[0-9a-f]{12}$/);
  assert.equal(sessionNameFromMountpoint('/mnt/data x'), sessionNameFromMountpoint('/mnt/data x'));
  throwsEinval(() => sessionNameFromMountpoint('mnt/data'), 'invalid path');
  const paths = [
    '/mnt/data x', '/mnt/data_x', '/mnt/data-x', '/mnt/data/x', '/mnt/data@x', '/mnt/data:x', '/mnt/.data', '/.hidden', '/_x', '/-x',
    '/mnt/ü', '/mnt/ö', '/mnt/😀', '/mnt/data_x@' + 'a'.repeat(12), '/' + 'a'.repeat(200), '/' + 'a'.repeat(201), '/a/' + 'b'.repeat(126), '/a-' + 'b'.repeat(126),
  ];
  const names = new Map<string, string>();
  for (const p of paths) {
    const n = sessionNameFromMountpoint(p);
    assert.ok(isValidSessionName(n), `${p} -> ${n}`);
    assert.ok(!names.has(n), `${p} and ${names.get(n)} both map to ${n}`);
    names.set(n, p);
  }
});

// ---------------------------------------------------------------------------------------------
// Fuzz

test('fuzz: 50k random and mutated frames never throw; accepted frames re-encode identically', () => {
  const rand = mulberry32(0x5eed);
  const int = (n: number) => Math.floor(rand() * n);
  const seeds = [...SAMPLES.filter((s) => s.msg.type !== 'checkpoint_entry' || s.msg.value.length < 100).map((s) => ({ buf: encodeMessage(s.msg, s.requestId), fds: s.fds })), ...FIXTURES.map((f) => ({ buf: f.buf, fds: f.fds }))];
  const interesting = [0, 1, 0x7f, 0x80, 0xff, 0x46, 0x4b];
  let accepted = 0;
  for (let i = 0; i < 50_000; i++) {
    let buf: Buffer;
    let fds: number;
    const mode = int(4);
    if (mode === 0) {
      // Random bytes behind a plausible header.
      const payload = Buffer.alloc(int(80));
      for (let j = 0; j < payload.length; j++) payload[j] = int(256);
      buf = frame(MESSAGE_TYPES[int(MESSAGE_TYPES.length)]!.code, int(3), payload);
      fds = int(2);
    } else {
      const seed = seeds[int(seeds.length)]!;
      buf = Buffer.from(seed.buf);
      fds = rand() < 0.95 ? seed.fds : int(3);
      const edits = 1 + int(4);
      for (let e = 0; e < edits; e++) {
        const op = int(5);
        if (op === 0 && buf.length > 0) buf[int(buf.length)] = int(256);
        else if (op === 1 && buf.length > 0) buf[int(buf.length)] = interesting[int(interesting.length)]!;
        else if (op === 2) buf = buf.subarray(0, int(buf.length + 1));
        else if (op === 3) buf = Buffer.concat([buf, Buffer.from([int(256)])]);
        else if (op === 4 && buf.length > HEADER_SIZE + 4) {
          const at = HEADER_SIZE + int(buf.length - HEADER_SIZE - 3);
          buf.writeUInt32LE([0, 1, 0xffff, 0x10000, 0xffffffff, int(2 ** 32)][int(6)]!, at);
        }
      }
      if (mode !== 3 && buf.length >= HEADER_SIZE) buf = withPayloadLength(buf);
    }
    let r: DecodeResult;
    try {
      r = decodeMessage(buf, fds);
    } catch (err) {
      assert.fail(`decodeMessage threw on ${buf.toString('hex')}: ${String(err)}`);
    }
    if (r.ok) {
      accepted++;
      assert.equal(encodeMessage(r.message, r.requestId).toString('hex'), buf.toString('hex'), 'canonical encoding');
    } else {
      assert.equal(r.error.code, 'EPROTO');
      assert.notEqual(r.error.reason, 'internal error', r.error.message);
    }
  }
  assert.ok(accepted > 100, `some mutations stay valid (${accepted})`);
});
