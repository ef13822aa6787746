// The supervisor's session state on disk, so a restarted supervisor can take its sessions
// back (docs/systemd.md, "Session state"). One file per session under the state directory
// ($FUSEKEEPER_STATE_DIR, else systemd's $RUNTIME_DIRECTORY, i.e. /run/fusekeeper), written
// atomically (temp file, fsync, rename, fsync of the directory) and debounced: the hot path
// (JOURNAL_OPEN, CHECKPOINT_PUT) only marks a session dirty; dirty sessions are written at
// most every `flushMs`, and at once at every hand-over, store and release.
//
// File format (`<name>.session`), all integers little-endian:
//   8 bytes  magic "FKSTATE1"
//   u32      length of the header, then the header: UTF-8 JSON (everything but the journal
//            and the checkpoint)
//   u32      number of journal entries, then the entries in the protocol's wire layout
//            (u32 id, u64 dev, u64 ino: 20 bytes each)
//   u32      number of checkpoint entries, then per entry: u32 key length, key (UTF-8),
//            u32 value length, value
//   u32      CRC-32 of everything before it
// Binary rather than JSON because checkpoint values are opaque bytes and can add up to
// hundreds of MB, and a journal of 100k entries costs ~50 ms as JSON and ~1 ms as bytes; the
// header stays readable with `head -c`. Version 1 files (the journal as a JSON array in the
// header, no journal section) are still read.
import { closeSync, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import {
  isCanonicalMountpoint,
  isValidCheckpointKey,
  isValidSessionName,
  JournalEntries,
  JOURNAL_ENTRY_SIZE,
  MAX_BACKING_ID,
  MAX_CHECKPOINT_VALUE,
  MAX_INIT_PARAMS,
  type JournalEntry,
  type MountSpec,
} from '../protocol/index.ts';
import type { RecoveryRecord } from './session.ts';

const MAGIC = Buffer.from('FKSTATE1', 'latin1');
const SUFFIX = '.session';
const FORMAT_VERSION = 2;

/** Everything a restarted supervisor needs to resume a session, besides its fd. */
export interface PersistedSession {
  name: string;
  /** The fd-store name the session's /dev/fuse fd was stored under. */
  fdName: string;
  spec: MountSpec;
  /** FUSE connection id (/sys/fs/fuse/connections/<id>) when the session was stored. */
  connectionId: number | null;
  creatorUid: number;
  generation: number;
  restarts: number;
  handovers: number;
  /**
   * The last owner process. `startTime` (field 22 of /proc/<pid>/stat) tells it apart from a
   * process that later reuses the pid.
   */
  owner: { pid: number; uid: number; startTime: string | null } | null;
  init: Buffer | null;
  /** The live journal, packed. */
  journal: JournalEntries;
  highestReported: number;
  checkpoint: Map<string, Buffer>;
  lastRecovery: RecoveryRecord | null;
  createdAt: string;
  savedAt: string;
}

/** A state file that cannot be used. */
export class StateError extends Error {
  readonly code = 'ERR_STATE';
  constructor(message: string) {
    super(message);
    this.name = 'StateError';
  }
}

function check(cond: unknown, what: string): asserts cond {
  if (!cond) throw new StateError(what);
}

const isU32 = (v: unknown): v is number => Number.isInteger(v) && (v as number) >= 0 && (v as number) <= 0xffffffff;

/** Serialises a session (pure). */
export function encodeSession(s: PersistedSession): Buffer {
  return Buffer.concat(sessionFileParts(s));
}

/**
 * A session's state file as the parts to write one after another (pure): magic to journal
 * count, the journal's bytes (`s.journal.bytes` itself, not a copy), the checkpoint section,
 * and the CRC-32 of the three. A 100k-id journal is 2 MB: joining the parts copied it twice,
 * and with 16k small Buffers for 4000 checkpoint entries the encoding took 2.6-13 ms, about
 * as long as everything else in a hand-over; the file is written from the parts instead.
 */
export function sessionFileParts(s: PersistedSession): Buffer[] {
  const header = {
    version: FORMAT_VERSION,
    name: s.name,
    fdName: s.fdName,
    spec: s.spec,
    connectionId: s.connectionId,
    creatorUid: s.creatorUid,
    generation: s.generation,
    restarts: s.restarts,
    handovers: s.handovers,
    owner: s.owner,
    init: s.init ? s.init.toString('base64') : null,
    highestReported: s.highestReported,
    lastRecovery: s.lastRecovery,
    createdAt: s.createdAt,
    savedAt: s.savedAt,
  };
  const headerBytes = Buffer.from(JSON.stringify(header), 'utf8');
  const head = Buffer.allocUnsafe(MAGIC.length + 4 + headerBytes.length + 4);
  MAGIC.copy(head, 0);
  head.writeUInt32LE(headerBytes.length, MAGIC.length);
  headerBytes.copy(head, MAGIC.length + 4);
  head.writeUInt32LE(s.journal.length, head.length - 4);
  const parts = [head, s.journal.bytes, encodeCheckpointSection(s.checkpoint)];
  let crc = 0;
  for (const part of parts) crc = crc32(part, crc);
  const tail = Buffer.allocUnsafe(4);
  tail.writeUInt32LE(crc, 0);
  parts.push(tail);
  return parts;
}

/** The entry count, then per entry: u32 key length, key (UTF-8), u32 value length, value. */
function encodeCheckpointSection(checkpoint: ReadonlyMap<string, Buffer>): Buffer {
  let size = 4;
  for (const [key, value] of checkpoint) size += 8 + Buffer.byteLength(key, 'utf8') + value.length;
  const out = Buffer.allocUnsafe(size);
  let off = out.writeUInt32LE(checkpoint.size, 0);
  for (const [key, value] of checkpoint) {
    const keyLength = out.write(key, off + 4, 'utf8');
    out.writeUInt32LE(keyLength, off);
    off = out.writeUInt32LE(value.length, off + 4 + keyLength);
    off += value.copy(out, off);
  }
  return out;
}

/** Parses and validates a state file (pure). Throws `StateError` on anything unexpected. */
export function decodeSession(buf: Buffer): PersistedSession {
  check(buf.length >= MAGIC.length + 12, 'truncated state file');
  check(buf.subarray(0, MAGIC.length).equals(MAGIC), 'not a fusekeeper state file (bad magic)');
  const body = buf.subarray(0, buf.length - 4);
  check(crc32(body) === buf.readUInt32LE(buf.length - 4), 'checksum mismatch');
  let off = MAGIC.length;
  const take = (n: number, what: string): Buffer => {
    check(off + n <= body.length, `truncated ${what}`);
    const b = body.subarray(off, off + n);
    off += n;
    return b;
  };
  const headerLen = take(4, 'header length').readUInt32LE(0);
  let h: Record<string, unknown>;
  try {
    h = JSON.parse(take(headerLen, 'header').toString('utf8')) as Record<string, unknown>;
  } catch (err) {
    throw new StateError(`header is not JSON: ${(err as Error).message}`);
  }
  check(typeof h === 'object' && h !== null, 'header is not an object');
  check(h.version === FORMAT_VERSION || h.version === 1, `unsupported state version ${JSON.stringify(h.version)}`);
  check(typeof h.name === 'string' && isValidSessionName(h.name), 'invalid session name');
  check(typeof h.fdName === 'string' && h.fdName.length > 0, 'invalid fdName');
  const spec = h.spec as MountSpec;
  check(
    typeof spec === 'object' && spec !== null && typeof spec.mountpoint === 'string' && isCanonicalMountpoint(spec.mountpoint) &&
      typeof spec.fsName === 'string' && typeof spec.subtype === 'string' && isU32(spec.rootMode) && isU32(spec.uid) && isU32(spec.gid) &&
      typeof spec.allowOther === 'boolean' && typeof spec.defaultPermissions === 'boolean' && typeof spec.readOnly === 'boolean' && isU32(spec.maxRead),
    'invalid mount spec',
  );
  check(h.connectionId === null || isU32(h.connectionId), 'invalid connectionId');
  for (const k of ['creatorUid', 'generation', 'restarts', 'handovers', 'highestReported'] as const) check(isU32(h[k]), `invalid ${k}`);
  check((h.generation as number) >= 1, 'invalid generation');
  const owner = h.owner as PersistedSession['owner'];
  check(
    owner === null || (typeof owner === 'object' && Number.isInteger(owner.pid) && owner.pid > 0 && isU32(owner.uid) && (owner.startTime === null || (typeof owner.startTime === 'string' && /^[0-9]+$/.test(owner.startTime)))),
    'invalid owner',
  );
  check(h.init === null || typeof h.init === 'string', 'invalid init');
  const init = h.init === null ? null : Buffer.from(h.init as string, 'base64');
  check(init === null || init.length <= MAX_INIT_PARAMS, 'init parameters too long');
  let journal: JournalEntries;
  if (h.version === 1) {
    check(Array.isArray(h.journal), 'invalid journal');
    const entries: JournalEntry[] = (h.journal as unknown[]).map((e) => {
      check(Array.isArray(e) && e.length === 3 && Number.isInteger(e[0]) && e[0] >= 1 && e[0] <= MAX_BACKING_ID && /^[0-9]+$/.test(String(e[1])) && /^[0-9]+$/.test(String(e[2])), 'invalid journal entry');
      return { id: e[0] as number, dev: BigInt(e[1] as string), ino: BigInt(e[2] as string) };
    });
    try {
      journal = JournalEntries.from(entries);
    } catch {
      throw new StateError('invalid journal entry');
    }
  } else {
    const n = take(4, 'journal count').readUInt32LE(0);
    const bytes = Buffer.from(take(n * JOURNAL_ENTRY_SIZE, 'journal'));
    try {
      journal = JournalEntries.fromWire(bytes);
    } catch {
      throw new StateError('invalid journal entry');
    }
  }
  check(h.lastRecovery === null || (typeof h.lastRecovery === 'object' && typeof (h.lastRecovery as RecoveryRecord).at === 'string'), 'invalid lastRecovery');
  check(typeof h.createdAt === 'string' && typeof h.savedAt === 'string', 'invalid timestamps');
  const count = take(4, 'checkpoint count').readUInt32LE(0);
  const checkpoint = new Map<string, Buffer>();
  for (let i = 0; i < count; i++) {
    const key = take(take(4, 'key length').readUInt32LE(0), 'key').toString('utf8');
    check(isValidCheckpointKey(key) && !checkpoint.has(key), 'invalid or duplicate checkpoint key');
    const len = take(4, 'value length').readUInt32LE(0);
    check(len <= MAX_CHECKPOINT_VALUE, 'checkpoint value too long');
    checkpoint.set(key, Buffer.from(take(len, 'value')));
  }
  check(off === body.length, 'trailing bytes');
  return {
    name: h.name,
    fdName: h.fdName,
    spec: { ...spec },
    connectionId: h.connectionId as number | null,
    creatorUid: h.creatorUid as number,
    generation: h.generation as number,
    restarts: h.restarts as number,
    handovers: h.handovers as number,
    owner: owner ? { pid: owner.pid, uid: owner.uid, startTime: owner.startTime } : null,
    init,
    journal,
    highestReported: h.highestReported as number,
    checkpoint,
    lastRecovery: h.lastRecovery as RecoveryRecord | null,
    createdAt: h.createdAt,
    savedAt: h.savedAt,
  };
}

/**
 * Writes `data` (one Buffer, or parts one after another) to `path` atomically: temp file in
 * the same directory, fsync, rename, fsync the directory.
 */
export function writeFileAtomic(path: string, data: Buffer | readonly Buffer[]): void {
  const dir = path.slice(0, path.lastIndexOf('/')) || '/';
  const tmp = `${dir}/.${path.slice(dir.length + 1)}.${process.pid}.tmp`;
  const fd = openSync(tmp, 'w', 0o600);
  try {
    for (const part of Buffer.isBuffer(data) ? [data] : data) {
      let off = 0;
      while (off < part.length) off += writeSync(fd, part, off, part.length - off);
    }
    fsyncSync(fd);
  } catch (err) {
    closeSync(fd);
    try {
      unlinkSync(tmp);
    } catch {
      // already gone
    }
    throw err;
  }
  closeSync(fd);
  renameSync(tmp, path);
  const dfd = openSync(dir, 'r');
  try {
    fsyncSync(dfd);
  } finally {
    closeSync(dfd);
  }
}

export interface StateLogger {
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
  debug(obj: object, msg?: string): void;
}

/** What `StateStore.loadAll` read. */
export interface LoadedState {
  sessions: PersistedSession[];
  /** Files that could not be used (they are removed). */
  rejected: { file: string; reason: string }[];
}

/**
 * The state directory: one file per session, written when dirty. `snapshot` is asked for a
 * session's current state at write time (null: the session is gone, its file is removed).
 */
export class StateStore {
  readonly dir: string;
  readonly flushMs: number;
  readonly #snapshot: (name: string) => PersistedSession | null;
  readonly #log: StateLogger;
  readonly #dirty = new Set<string>();
  #timer: NodeJS.Timeout | null = null;
  /** Writes done, for tests and metrics. */
  writes = 0;

  constructor(dir: string, opts: { flushMs: number; snapshot: (name: string) => PersistedSession | null; log: StateLogger }) {
    this.dir = dir;
    this.flushMs = opts.flushMs;
    this.#snapshot = opts.snapshot;
    this.#log = opts.log;
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  }

  fileOf(name: string): string {
    return join(this.dir, `${name}${SUFFIX}`);
  }

  /** Reads every state file; unusable ones are logged, removed and reported. */
  loadAll(): LoadedState {
    const sessions: PersistedSession[] = [];
    const rejected: LoadedState['rejected'] = [];
    for (const file of readdirSync(this.dir).sort()) {
      const path = join(this.dir, file);
      if (file.startsWith('.') && file.endsWith('.tmp')) {
        // A write that did not finish: the previous version (if any) is still in place.
        this.#unlink(path);
        continue;
      }
      if (!file.endsWith(SUFFIX)) continue;
      try {
        const s = decodeSession(readFileSync(path));
        check(`${s.name}${SUFFIX}` === file, `file name does not match session ${s.name}`);
        sessions.push(s);
      } catch (err) {
        rejected.push({ file, reason: (err as Error).message });
        this.#unlink(path);
      }
    }
    return { sessions, rejected };
  }

  /** Marks `name` for the next flush (at most `flushMs` from now). The hot path: no I/O. */
  markDirty(name: string): void {
    this.#dirty.add(name);
    if (this.#timer === null) {
      this.#timer = setTimeout(() => {
        this.#timer = null;
        this.flush();
      }, this.flushMs);
      this.#timer.unref();
    }
  }

  /** Writes `name` now (and forgets it is dirty). */
  flushSession(name: string): void {
    this.#dirty.delete(name);
    this.#write(name);
  }

  /** Writes every dirty session now. */
  flush(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
    const names = [...this.#dirty];
    this.#dirty.clear();
    for (const name of names) this.#write(name);
  }

  /** Removes `name`'s file (released session). */
  remove(name: string): void {
    this.#dirty.delete(name);
    this.#unlink(this.fileOf(name));
  }

  /** Flushes and stops the timer. */
  close(): void {
    this.flush();
  }

  #write(name: string): void {
    const s = this.#snapshot(name);
    if (!s) {
      this.#unlink(this.fileOf(name));
      return;
    }
    try {
      writeFileAtomic(this.fileOf(name), sessionFileParts(s));
      this.writes++;
    } catch (err) {
      // The session keeps working; only a supervisor restart would lose it. Retry later.
      this.#log.error({ event: 'state.write_failed', session: name, err: (err as Error).message }, `cannot save the state of ${name}: ${(err as Error).message}`);
      this.markDirty(name);
    }
  }

  #unlink(path: string): void {
    try {
      unlinkSync(path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') this.#log.warn({ event: 'state.unlink_failed', path, err: (err as Error).message }, `cannot remove ${path}`);
    }
  }
}
