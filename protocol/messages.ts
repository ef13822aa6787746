// Message types of the control protocol: the TypeScript shape of every message and the table
// (code, name, direction, fds) that drives validation, dispatch and debug printing.
import type { JournalEntries } from './journal.ts';

/** Who opened the connection. */
export type Role = 'daemon' | 'cli';

/** How the supervisor cleans a connection's backing ids (DESIGN.md section 4). */
export type CleanupStrategy = 'none' | 'journal' | 'close-all';

/** How a session's connection is mounted. On the wire the booleans are bits of one u32. */
export interface MountSpec {
  /** Canonical absolute path (see isCanonicalMountpoint). */
  mountpoint: string;
  /** Source shown in /proc/mounts; MOUNT_LABEL_PATTERN. */
  fsName: string;
  /** The type becomes `fuse.<subtype>`; MOUNT_LABEL_PATTERN. */
  subtype: string;
  /** Mode of the root directory, type bits included (e.g. 0o40755). */
  rootMode: number;
  uid: number;
  gid: number;
  allowOther: boolean;
  defaultPermissions: boolean;
  readOnly: boolean;
  /** Largest READ; 0 = kernel default (no max_read option). */
  maxRead: number;
}

/** One journaled backing id and the backing file's inode. */
export interface JournalEntry {
  /** Backing id, 1..MAX_BACKING_ID. */
  id: number;
  dev: bigint;
  ino: bigint;
}

export interface HelloMessage { type: 'hello'; minVersion: number; maxVersion: number; role: Role; clientName: string }
export interface HelloOkMessage { type: 'hello_ok'; version: number; supervisorVersion: string; features: number }
export interface AcquireMessage { type: 'acquire'; name: string; mount: MountSpec; standby: boolean }
/** Carries 1 fd: the session's /dev/fuse fd. */
export interface AcquiredMessage { type: 'acquired'; generation: number; resumed: boolean; strategy: CleanupStrategy }
export interface InitParamsMessage { type: 'init_params'; params: Buffer }
export interface CheckpointEntryMessage { type: 'checkpoint_entry'; key: string; value: Buffer }
/**
 * `entries` is an array of objects, or packed (JournalEntries): the encoder takes either, and
 * decodeMessage gives the packed form with `DecodeOptions.packedJournal`.
 */
export interface JournalEntriesMessage { type: 'journal_entries'; entries: JournalEntry[] | JournalEntries }
/**
 * Carries 1 fd: a sealed memfd holding `count` journal entries in the wire layout
 * (JOURNAL_ENTRY_SIZE bytes each, nothing else). Sent instead of JOURNAL_ENTRIES frames for a
 * journal longer than one of them holds.
 */
export interface JournalFileMessage { type: 'journal_file'; count: number }
/**
 * Carries 1 fd: a sealed memfd of `size` bytes holding `count` checkpoint entries, each laid
 * out as a CHECKPOINT_ENTRY payload (key, then value), back to back. Sent instead of
 * CHECKPOINT_ENTRY frames for a checkpoint of many keys.
 */
export interface CheckpointFileMessage { type: 'checkpoint_file'; count: number; size: number }
export interface StateEndMessage { type: 'state_end'; initParams: boolean; checkpointCount: number; journalCount: number }
/** Carries 1 fd: a /dev/fuse fd the daemon mounted itself. */
export interface StoreMessage { type: 'store'; name: string; mount: MountSpec }
export interface StoredMessage { type: 'stored'; generation: number }
export interface InitSaveMessage { type: 'init_save'; params: Buffer }
export interface JournalOpenMessage { type: 'journal_open'; id: number; dev: bigint; ino: bigint }
export interface JournalCloseMessage { type: 'journal_close'; id: number }
/** `more`: further ADOPT messages follow (answered OK); the last one (more = false) gets ADOPTED. */
export interface AdoptMessage { type: 'adopt'; more: boolean; ids: number[] }
export interface AdoptedMessage { type: 'adopted'; closed: number; probed: number }
/** `ack`: the sender wants an OK (or ERROR) reply; the frame then carries a requestId. */
export interface CheckpointPutMessage { type: 'checkpoint_put'; ack: boolean; key: string; value: Buffer }
export interface CheckpointDeleteMessage { type: 'checkpoint_delete'; ack: boolean; key: string }
export interface HeartbeatMessage { type: 'heartbeat' }
export interface ReleaseMessage { type: 'release'; name: string }
export interface StatusMessage { type: 'status' }
export interface StatusReplyMessage { type: 'status_reply'; json: string }
export interface DrainMessage { type: 'drain'; name: string }
export interface DrainRequestMessage { type: 'drain_request' }
export interface DrainedMessage { type: 'drained' }
export interface OkMessage { type: 'ok' }
/** `errno` is a positive Linux errno; `code` its name (ERRNO table), e.g. 'EBUSY'. */
export interface ErrorMessage { type: 'error'; errno: number; code: string; message: string }

/** Every message of the protocol, discriminated by `type`. */
export type ControlMessage =
  | HelloMessage
  | HelloOkMessage
  | AcquireMessage
  | AcquiredMessage
  | InitParamsMessage
  | CheckpointEntryMessage
  | JournalEntriesMessage
  | JournalFileMessage
  | CheckpointFileMessage
  | StateEndMessage
  | StoreMessage
  | StoredMessage
  | InitSaveMessage
  | JournalOpenMessage
  | JournalCloseMessage
  | AdoptMessage
  | AdoptedMessage
  | CheckpointPutMessage
  | CheckpointDeleteMessage
  | HeartbeatMessage
  | ReleaseMessage
  | StatusMessage
  | StatusReplyMessage
  | DrainMessage
  | DrainRequestMessage
  | DrainedMessage
  | OkMessage
  | ErrorMessage;

export type MessageName = ControlMessage['type'];

/** The message of type `N`. */
export type MessageOf<N extends MessageName> = Extract<ControlMessage, { type: N }>;

/**
 * - `request`: client -> supervisor, requestId != 0, answered by replies with that requestId.
 * - `reply`: supervisor -> client, echoes a request's requestId (ERROR may carry 0: see docs).
 * - `one-way`: client -> supervisor, requestId 0, never answered (CHECKPOINT_PUT/DELETE with
 *   ack = 1 are the exception: they carry a requestId and get OK or ERROR).
 * - `notify`: supervisor -> client, unsolicited, requestId 0.
 */
export type Direction = 'request' | 'reply' | 'one-way' | 'notify';

/** One row of the message table. */
export interface MessageTypeInfo {
  /** The header's type byte. */
  readonly code: number;
  /** The `type` of the TypeScript message. */
  readonly name: MessageName;
  /** The name in docs/protocol.md and logs: `name` in upper case. */
  readonly label: string;
  readonly direction: Direction;
  /** Exactly how many fds travel with the message (SCM_RIGHTS). */
  readonly fds: 0 | 1;
}

function row(code: number, name: MessageName, direction: Direction, fds: 0 | 1 = 0): MessageTypeInfo {
  return Object.freeze({ code, name, label: name.toUpperCase(), direction, fds });
}

/**
 * Every message type. Code ranges follow the direction: 0x01.. requests, 0x20.. one-way,
 * 0x40.. replies, 0x60.. notifications.
 */
export const MESSAGE_TYPES: readonly MessageTypeInfo[] = Object.freeze([
  row(0x01, 'hello', 'request'),
  row(0x02, 'acquire', 'request'),
  row(0x03, 'store', 'request', 1),
  row(0x04, 'adopt', 'request'),
  row(0x05, 'release', 'request'),
  row(0x06, 'status', 'request'),
  row(0x07, 'drain', 'request'),

  row(0x20, 'init_save', 'one-way'),
  row(0x21, 'journal_open', 'one-way'),
  row(0x22, 'journal_close', 'one-way'),
  row(0x23, 'checkpoint_put', 'one-way'),
  row(0x24, 'checkpoint_delete', 'one-way'),
  row(0x25, 'heartbeat', 'one-way'),
  row(0x26, 'drained', 'one-way'),

  row(0x40, 'ok', 'reply'),
  row(0x41, 'error', 'reply'),
  row(0x42, 'hello_ok', 'reply'),
  row(0x43, 'acquired', 'reply', 1),
  row(0x44, 'init_params', 'reply'),
  row(0x45, 'checkpoint_entry', 'reply'),
  row(0x46, 'journal_entries', 'reply'),
  row(0x47, 'state_end', 'reply'),
  row(0x48, 'stored', 'reply'),
  row(0x49, 'adopted', 'reply'),
  row(0x4a, 'status_reply', 'reply'),
  row(0x4b, 'journal_file', 'reply', 1),
  row(0x4c, 'checkpoint_file', 'reply', 1),

  row(0x60, 'drain_request', 'notify'),
]);

const byCode: (MessageTypeInfo | undefined)[] = new Array<MessageTypeInfo | undefined>(256).fill(undefined);
const byName = new Map<string, MessageTypeInfo>();
for (const info of MESSAGE_TYPES) {
  byCode[info.code] = info;
  byName.set(info.name, info);
}

/** The table row of a type code, or undefined for an unknown code. */
export function messageTypeByCode(code: number): MessageTypeInfo | undefined {
  return byCode[code];
}

/** The table row of a message name. */
export function messageType(name: MessageName): MessageTypeInfo {
  const info = byName.get(name);
  if (!info) throw new TypeError(`unknown message type ${JSON.stringify(name)}`);
  return info;
}

/** How many fds a message of `name` carries. */
export function fdCount(name: MessageName): 0 | 1 {
  return messageType(name).fds;
}

/** True when messages of this direction are sent by clients (daemons and the CLI). */
export function sentByClient(direction: Direction): boolean {
  return direction === 'request' || direction === 'one-way';
}
