// mirrorfs state in the session checkpoint, so that a restarted daemon knows what the kernel
// holds: every node with its lookup count (FORGETs for it will come), every open file and
// directory handle (RELEASEs will come). One key per node and per handle, put on every
// change and deleted when the kernel lets go, one-way and in order through the control
// socket. Values are JSON with 64-bit numbers as decimal strings.
//
//   node/<nodeid>   NodeRecord: [nodeid, path, dev, ino, nlookup, { links?, removed? }?]
//   fh/<fh>         HandleRecord
//   nodes/next      a nodeid no node has reached yet: new nodes after a restart start there,
//                   so a nodeid the kernel forgot is not handed out again for another inode
//   mirror/source   which source directory (and root inode) the session mirrors
//
// Lookup counts are put before the reply that hands the entry to the kernel. A daemon that
// dies after the put and before the reply leaves a count one higher than the kernel's: the
// node is then never forgotten (it stays in the table, harmlessly). The opposite, a count
// below the kernel's, cannot happen, and would make FORGET drop a node still in use.
import { MAX_CHECKPOINT_VALUE } from '../../protocol/limits.ts';
import type { SessionLink } from '../../client/session.ts';
import { nodeRecord, type Node, type NodeObserver, type NodeRecord, type NodeTable } from './nodes.ts';

export const NODE_KEY_PREFIX = 'node/';
export const HANDLE_KEY_PREFIX = 'fh/';
export const NODEID_LEASE_KEY = 'nodes/next';
export const SOURCE_KEY = 'mirror/source';
/** How far `nodes/next` runs ahead, in nodeids: one put per this many new nodes. */
export const NODEID_LEASE = 1024n;

/** Where records go: the checkpoint calls of a `SessionLink`. */
export type CheckpointSink = Pick<SessionLink, 'checkpointPut' | 'checkpointDelete'>;

/** An open handle as checkpointed. */
export interface HandleRecord {
  kind: 'file' | 'dir';
  nodeid: bigint;
  /** open(2) flags the source file was opened with (0 for directories). */
  flags: number;
  /** The source file's inode (0 for directories). */
  dev: bigint;
  ino: bigint;
  /** Passthrough backing id the OPEN/CREATE reply carried, 0 for none. */
  backingId: number;
  /** `unique` (bit 63 cleared) of the OPEN/CREATE/OPENDIR that made it, to spot a replay of it. */
  unique: bigint;
  /**
   * The source file's handle (name_to_handle_at), so that a restarted daemon can reopen a
   * file that was unlinked while open (it has no path left). Absent where none was taken.
   */
  handle?: Buffer;
}

/** The source directory a session mirrors, to refuse resuming it over another one. */
export interface SourceRecord {
  path: string;
  dev: bigint;
  ino: bigint;
}

/** mirrorfs's part of a checkpoint, decoded. */
export interface MirrorCheckpoint {
  nodes: NodeRecord[];
  handles: Map<bigint, HandleRecord>;
  /** New nodeids start here (0n when no lease was recorded). */
  nextNodeid: bigint;
  source: SourceRecord | undefined;
  /** Keys of ours whose values did not decode (skipped). */
  malformed: string[];
}

const DEC = /^(0|[1-9][0-9]*)$/;

function big(v: unknown, what: string): bigint {
  if (typeof v !== 'string' || !DEC.test(v)) throw new TypeError(`${what}: expected a decimal string`);
  return BigInt(v);
}

function json(buf: Buffer): unknown {
  return JSON.parse(buf.toString('utf8')) as unknown;
}

/**
 * Encodes a node record. A record over MAX_CHECKPOINT_VALUE (a node with very many long
 * hard-link names) loses alternative names from the end until it fits: they only serve to
 * keep the node reachable after its primary name is unlinked.
 */
export function encodeNodeRecord(rec: NodeRecord): Buffer {
  let buf = Buffer.from(JSON.stringify(rec), 'utf8');
  if (buf.length <= MAX_CHECKPOINT_VALUE) return buf;
  const [id, path, dev, ino, nlookup, extra] = rec;
  const links = [...(extra?.links ?? [])];
  while (buf.length > MAX_CHECKPOINT_VALUE && links.length > 0) {
    links.pop();
    const rest = { ...(links.length ? { links } : {}), ...(extra?.removed ? { removed: true } : {}) };
    buf = Buffer.from(JSON.stringify(Object.keys(rest).length ? [id, path, dev, ino, nlookup, rest] : [id, path, dev, ino, nlookup]), 'utf8');
  }
  if (buf.length > MAX_CHECKPOINT_VALUE) throw new RangeError(`node ${id}: record of ${buf.length} bytes exceeds ${MAX_CHECKPOINT_VALUE}`);
  return buf;
}

/** Decodes a node record; TypeError when it is not one. */
export function decodeNodeRecord(buf: Buffer): NodeRecord {
  const v = json(buf);
  if (!Array.isArray(v) || v.length < 5 || v.length > 6) throw new TypeError('node record: expected an array of 5 or 6 elements');
  const [id, path, dev, ino, nlookup, extra] = v as unknown[];
  for (const [x, what] of [[id, 'nodeid'], [dev, 'dev'], [ino, 'ino'], [nlookup, 'nlookup']] as const) big(x, what);
  if (typeof path !== 'string') throw new TypeError('node record: path must be a string');
  const rec: NodeRecord = [id as string, path, dev as string, ino as string, nlookup as string];
  if (extra !== undefined) {
    const e = extra as { links?: unknown; removed?: unknown };
    if (typeof extra !== 'object' || extra === null) throw new TypeError('node record: extra must be an object');
    if (e.links !== undefined && !(Array.isArray(e.links) && e.links.every((l) => typeof l === 'string'))) throw new TypeError('node record: links must be strings');
    if (e.removed !== undefined && typeof e.removed !== 'boolean') throw new TypeError('node record: removed must be a boolean');
    rec.push({ ...(e.links ? { links: e.links as string[] } : {}), ...(e.removed ? { removed: true } : {}) });
  }
  return rec;
}

export function encodeHandleRecord(h: HandleRecord): Buffer {
  return Buffer.from(
    JSON.stringify({ kind: h.kind, nodeid: String(h.nodeid), flags: h.flags, dev: String(h.dev), ino: String(h.ino), backingId: h.backingId, unique: String(h.unique), ...(h.handle ? { handle: h.handle.toString('hex') } : {}) }),
    'utf8',
  );
}

/** Decodes a handle record; TypeError when it is not one. */
export function decodeHandleRecord(buf: Buffer): HandleRecord {
  const v = json(buf) as Record<string, unknown> | null;
  if (typeof v !== 'object' || v === null) throw new TypeError('handle record: expected an object');
  if (v.kind !== 'file' && v.kind !== 'dir') throw new TypeError('handle record: kind must be file or dir');
  const int = (x: unknown, what: string, max: number): number => {
    if (typeof x !== 'number' || !Number.isInteger(x) || x < 0 || x > max) throw new TypeError(`handle record: ${what} out of range`);
    return x;
  };
  return {
    kind: v.kind,
    nodeid: big(v.nodeid, 'nodeid'),
    flags: int(v.flags, 'flags', 0xffffffff),
    dev: big(v.dev, 'dev'),
    ino: big(v.ino, 'ino'),
    backingId: int(v.backingId, 'backingId', 0x7fffffff),
    unique: big(v.unique, 'unique'),
    ...(v.handle === undefined ? {} : { handle: fileHandle(v.handle) }),
  };
}

/** A `struct file_handle` as hex: 8 header bytes whose first u32 is the length of the rest. */
function fileHandle(v: unknown): Buffer {
  if (typeof v !== 'string' || !/^([0-9a-f]{2}){8,136}$/.test(v)) throw new TypeError('handle record: handle must be hex of 8..136 bytes');
  const b = Buffer.from(v, 'hex');
  if (b.readUInt32LE(0) !== b.length - 8) throw new TypeError('handle record: handle length mismatch');
  return b;
}

export function encodeSourceRecord(s: SourceRecord): Buffer {
  return Buffer.from(JSON.stringify({ path: s.path, dev: String(s.dev), ino: String(s.ino) }), 'utf8');
}

export function decodeSourceRecord(buf: Buffer): SourceRecord {
  const v = json(buf) as Record<string, unknown> | null;
  if (typeof v !== 'object' || v === null || typeof v.path !== 'string') throw new TypeError('source record: expected { path, dev, ino }');
  return { path: v.path, dev: big(v.dev, 'dev'), ino: big(v.ino, 'ino') };
}

/**
 * Picks mirrorfs's records out of a checkpoint. Keys of others (`intent/...`, written by the
 * FUSE server) are left alone; a record of ours that does not decode is listed in
 * `malformed` and skipped.
 */
export function readCheckpoint(checkpoint: ReadonlyMap<string, Buffer>): MirrorCheckpoint {
  const out: MirrorCheckpoint = { nodes: [], handles: new Map(), nextNodeid: 0n, source: undefined, malformed: [] };
  for (const [key, value] of checkpoint) {
    try {
      if (key.startsWith(NODE_KEY_PREFIX)) {
        const rec = decodeNodeRecord(value);
        if (`${NODE_KEY_PREFIX}${rec[0]}` !== key) throw new TypeError('node record under another nodeid');
        out.nodes.push(rec);
      } else if (key.startsWith(HANDLE_KEY_PREFIX)) {
        out.handles.set(big(key.slice(HANDLE_KEY_PREFIX.length), 'fh'), decodeHandleRecord(value));
      } else if (key === NODEID_LEASE_KEY) {
        out.nextNodeid = big(json(value), 'nodes/next');
      } else if (key === SOURCE_KEY) {
        out.source = decodeSourceRecord(value);
      }
    } catch {
      out.malformed.push(key);
    }
  }
  return out;
}

/**
 * Keeps the checkpoint in step with a NodeTable (as its observer) and with the handle table
 * (`putHandle`/`deleteHandle`). Each call sends at once: a record put while handling a
 * request is in the control socket before that request's reply is written.
 */
export class CheckpointWriter implements NodeObserver {
  readonly #sink: CheckpointSink;
  #leased: bigint;

  /** `leased`: the `nodes/next` value already in the checkpoint (0n: none). */
  constructor(sink: CheckpointSink, leased = 0n) {
    this.#sink = sink;
    this.#leased = leased;
  }

  /** Observes `table` from now on, leasing nodeids ahead of it. */
  attach(table: NodeTable): void {
    table.observer = this;
    this.#lease(table.nextNodeid);
  }

  #lease(next: bigint): void {
    if (next < this.#leased) return;
    this.#leased = next + NODEID_LEASE;
    this.#sink.checkpointPut(NODEID_LEASE_KEY, Buffer.from(JSON.stringify(String(this.#leased)), 'utf8'));
  }

  changed(node: Node): void {
    // The lease goes first: a crash between the two puts must not leave this nodeid unleased.
    this.#lease(node.nodeid + 1n);
    this.#sink.checkpointPut(`${NODE_KEY_PREFIX}${node.nodeid}`, encodeNodeRecord(nodeRecord(node)));
  }

  dropped(nodeid: bigint): void {
    this.#sink.checkpointDelete(`${NODE_KEY_PREFIX}${nodeid}`);
  }

  putHandle(fh: bigint, h: HandleRecord): void {
    this.#sink.checkpointPut(`${HANDLE_KEY_PREFIX}${fh}`, encodeHandleRecord(h));
  }

  deleteHandle(fh: bigint): void {
    this.#sink.checkpointDelete(`${HANDLE_KEY_PREFIX}${fh}`);
  }

  putSource(s: SourceRecord): void {
    this.#sink.checkpointPut(SOURCE_KEY, encodeSourceRecord(s));
  }
}

