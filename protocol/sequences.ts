// Multi-message exchanges: the ACQUIRE reply sequence (both ends), journal and ADOPT
// chunking, and ERROR construction. Pure, like the rest of protocol/.
import { checkpointEntrySize, encodeMessage } from './codec.ts';
import { ERRNO, ProtocolError, type ErrnoCode } from './errors.ts';
import { JournalEntries } from './journal.ts';
import { MAX_ADOPT_CHUNK, MAX_ERROR_MESSAGE, MAX_JOURNAL_CHUNK } from './limits.ts';
import { messageType } from './messages.ts';
import type { AcquiredMessage, AdoptMessage, ControlMessage, ErrorMessage, JournalEntriesMessage, JournalEntry } from './messages.ts';

/**
 * Splits journal entries into JOURNAL_ENTRIES messages of at most MAX_JOURNAL_CHUNK entries,
 * each of which encodes to at most MAX_MESSAGE bytes; packed entries give packed chunks (views,
 * no copy). No entries: no messages.
 */
export function chunkJournal(entries: readonly JournalEntry[] | JournalEntries): JournalEntriesMessage[] {
  const out: JournalEntriesMessage[] = [];
  for (let i = 0; i < entries.length; i += MAX_JOURNAL_CHUNK) {
    out.push({ type: 'journal_entries', entries: entries.slice(i, i + MAX_JOURNAL_CHUNK) as JournalEntry[] | JournalEntries });
  }
  return out;
}

/**
 * Splits the ids a new owner keeps into ADOPT messages: every one but the last has
 * `more: true` (answered OK), the last `more: false` (answered ADOPTED). Always at least one.
 */
export function chunkAdopt(ids: readonly number[]): AdoptMessage[] {
  const out: AdoptMessage[] = [];
  for (let i = 0; i < ids.length; i += MAX_ADOPT_CHUNK) {
    out.push({ type: 'adopt', more: i + MAX_ADOPT_CHUNK < ids.length, ids: ids.slice(i, i + MAX_ADOPT_CHUNK) });
  }
  if (out.length === 0) out.push({ type: 'adopt', more: false, ids: [] });
  return out;
}

/** An ERROR message for a protocol errno code; the message is cut to MAX_ERROR_MESSAGE bytes. */
export function errorMessage(code: ErrnoCode, message: string): ErrorMessage {
  let text = message.replace(/\0/g, ' ').replace(/\p{Cs}/gu, '\uFFFD');
  const bytes = Buffer.from(text, 'utf8');
  if (bytes.length > MAX_ERROR_MESSAGE) {
    let end = MAX_ERROR_MESSAGE;
    while (end > 0 && ((bytes[end] ?? 0) & 0xc0) === 0x80) end--; // cut at a character boundary
    text = bytes.toString('utf8', 0, end);
  }
  return { type: 'error', errno: ERRNO[code], code, message: text };
}

/** Everything a successful ACQUIRE hands over besides the fd. */
export interface AcquireState {
  acquired: AcquiredMessage;
  /** The saved INIT parameters; only on a resumed acquire, and only if the last owner saved them. */
  initParams: Buffer | null;
  checkpoint: ReadonlyMap<string, Buffer>;
  /** Packed (what the supervisor sends and the collector gives), or objects. */
  journal: readonly JournalEntry[] | JournalEntries;
}

/**
 * True when a journal of `length` entries is handed over as a JOURNAL_FILE: it does not fit
 * one JOURNAL_ENTRIES frame.
 */
export function journalGoesInFile(length: number): boolean {
  return length > MAX_JOURNAL_CHUNK;
}

/**
 * Checkpoints of at most this many entries are handed over in CHECKPOINT_ENTRY frames, larger
 * ones as a CHECKPOINT_FILE. Measured (`npm run bench -- checkpoint`, both ends' CPU, two
 * runs): the file costs 0.86-1.01x of the frames at 8 keys, 0.56-0.58x at 32, 0.25x from 2000
 * keys on.
 */
export const MAX_CHECKPOINT_FRAMES = 8;

/** True when a checkpoint of `size` entries is handed over as a CHECKPOINT_FILE. */
export function checkpointGoesInFile(size: number): boolean {
  return size > MAX_CHECKPOINT_FRAMES;
}

/** What the sender attaches to a frame of an ACQUIRE state sequence, by the frame's type. */
export type AcquireAttachment = 'fuse-device' | 'checkpoint-file' | 'journal-file' | null;

const ATTACHMENTS = new Map<number, AcquireAttachment>([
  [messageType('acquired').code, 'fuse-device'],
  [messageType('checkpoint_file').code, 'checkpoint-file'],
  [messageType('journal_file').code, 'journal-file'],
]);

/** The fd a frame of encodeAcquireSequence's output is sent with. */
export function acquireAttachment(frame: Buffer): AcquireAttachment {
  return ATTACHMENTS.get(frame[3]!) ?? null;
}

/**
 * The supervisor's side: every frame answering ACQUIRE `requestId`, in order: ACQUIRED, INIT_PARAMS
 * if any, the checkpoint, the journal, STATE_END. The frames must be sent back to back, nothing
 * else in between, each with the fd `acquireAttachment` names: ACQUIRED with the /dev/fuse fd.
 *
 * The checkpoint is one CHECKPOINT_ENTRY per key, or with `checkpointFile` one CHECKPOINT_FILE
 * frame, to be sent with a sealed memfd of `encodeCheckpointFile(checkpoint)`. The journal is
 * JOURNAL_ENTRIES chunks, or with `journalFile` one JOURNAL_FILE frame, to be sent with a
 * sealed memfd of the journal's wire bytes (`JournalEntries.from(journal).bytes`). Throws
 * ProtocolError EINVAL for state a fresh (not resumed) acquire cannot carry, or a file for
 * empty state.
 */
export function encodeAcquireSequence(requestId: number, state: AcquireState, opts: { checkpointFile?: boolean; journalFile?: boolean } = {}): Buffer[] {
  const { acquired, initParams, checkpoint, journal } = state;
  if (!acquired.resumed && (initParams !== null || checkpoint.size > 0 || journal.length > 0)) {
    throw new ProtocolError('EINVAL', 'bad sequence', 'a fresh ACQUIRED carries no saved state');
  }
  if (opts.journalFile && journal.length === 0) throw new ProtocolError('EINVAL', 'bad sequence', 'JOURNAL_FILE needs at least one entry');
  if (opts.checkpointFile && checkpoint.size === 0) throw new ProtocolError('EINVAL', 'bad sequence', 'CHECKPOINT_FILE needs at least one entry');
  const frames = [encodeMessage(acquired, requestId)];
  if (initParams !== null) frames.push(encodeMessage({ type: 'init_params', params: initParams }, requestId));
  if (opts.checkpointFile) {
    let size = 0;
    for (const [key, value] of checkpoint) size += checkpointEntrySize(key, value);
    frames.push(encodeMessage({ type: 'checkpoint_file', count: checkpoint.size, size }, requestId));
  } else for (const [key, value] of checkpoint) frames.push(encodeMessage({ type: 'checkpoint_entry', key, value }, requestId));
  if (opts.journalFile) frames.push(encodeMessage({ type: 'journal_file', count: journal.length }, requestId));
  else for (const chunk of chunkJournal(journal)) frames.push(encodeMessage(chunk, requestId));
  frames.push(encodeMessage({ type: 'state_end', initParams: initParams !== null, checkpointCount: checkpoint.size, journalCount: journal.length }, requestId));
  return frames;
}

/** Progress of an AcquireCollector. */
export type AcquireProgress =
  | { done: false }
  | { done: true; state: Omit<AcquireState, 'checkpoint' | 'journal'> & { checkpoint: Map<string, Buffer>; journal: JournalEntries } }
  | { done: true; error: ProtocolError }
  | { done: true; refused: ErrorMessage };

/**
 * The client's side: feed it every message that arrives on the ACQUIRE's requestId, in
 * order. It checks the sequence (ACQUIRED, [INIT_PARAMS], (CHECKPOINT_ENTRY* |
 * CHECKPOINT_FILE), (JOURNAL_ENTRIES* | JOURNAL_FILE), STATE_END), duplicate keys, and the
 * STATE_END counts. A JOURNAL_FILE or CHECKPOINT_FILE is pushed with what was read from its
 * memfd (`fileContents`: the entries, the decoded checkpoint), or with an Error saying why it
 * could not be read. A first ERROR is a refusal; a malformed sequence is a ProtocolError EPROTO
 * 'bad sequence' (disconnect, and close the fd of ACQUIRED if it arrived). After `done`,
 * further messages are errors.
 */
export class AcquireCollector {
  #acquired: AcquiredMessage | null = null;
  #initParams: Buffer | null = null;
  #checkpoint = new Map<string, Buffer>();
  #checkpointFromFile = false;
  /** Chunks received, packed; `#journalCount` entries in all. */
  #journal: JournalEntries[] = [];
  #journalCount = 0;
  #journalFromFile = false;
  /** 0 expecting ACQUIRED, 1 INIT_PARAMS allowed, 2 checkpoint entries, 3 journal chunks, 4 done. */
  #phase = 0;

  #fail(detail: string): AcquireProgress {
    this.#phase = 4;
    return { done: true, error: new ProtocolError('EPROTO', 'bad sequence', detail) };
  }

  push(msg: ControlMessage, fileContents?: JournalEntries | Map<string, Buffer> | Error): AcquireProgress {
    if (this.#phase === 4) return this.#fail(`${msg.type} after the end of the ACQUIRE reply`);
    switch (msg.type) {
      case 'error':
        if (this.#phase !== 0) return this.#fail('ERROR in the middle of an ACQUIRE reply');
        this.#phase = 4;
        return { done: true, refused: msg };
      case 'acquired':
        if (this.#phase !== 0) return this.#fail('second ACQUIRED');
        this.#acquired = msg;
        this.#phase = 1;
        return { done: false };
      case 'init_params':
        if (this.#phase !== 1 || !this.#acquired?.resumed) return this.#fail('INIT_PARAMS out of place');
        this.#initParams = msg.params;
        this.#phase = 2;
        return { done: false };
      case 'checkpoint_entry':
        if (this.#phase < 1 || this.#phase > 2 || !this.#acquired?.resumed || this.#checkpointFromFile) return this.#fail('CHECKPOINT_ENTRY out of place');
        if (this.#checkpoint.has(msg.key)) return this.#fail(`checkpoint key ${JSON.stringify(msg.key)} sent twice`);
        this.#checkpoint.set(msg.key, msg.value);
        this.#phase = 2;
        return { done: false };
      case 'checkpoint_file':
        if (this.#phase < 1 || this.#phase > 2 || !this.#acquired?.resumed || this.#checkpoint.size > 0) return this.#fail('CHECKPOINT_FILE out of place');
        if (fileContents === undefined) return this.#fail('CHECKPOINT_FILE without its contents');
        if (fileContents instanceof Error) return this.#fail(`CHECKPOINT_FILE: ${fileContents.message}`);
        if (!(fileContents instanceof Map)) return this.#fail('CHECKPOINT_FILE with journal entries');
        if (fileContents.size !== msg.count) return this.#fail(`CHECKPOINT_FILE says ${msg.count} entries, its file holds ${fileContents.size}`);
        this.#checkpoint = fileContents;
        this.#checkpointFromFile = true;
        this.#phase = 2;
        return { done: false };
      case 'journal_entries':
        if (this.#phase < 1 || this.#phase > 3 || !this.#acquired?.resumed || this.#journalFromFile) return this.#fail('JOURNAL_ENTRIES out of place');
        if (msg.entries instanceof JournalEntries) this.#journal.push(msg.entries);
        else {
          try {
            this.#journal.push(JournalEntries.from(msg.entries));
          } catch (err) {
            return this.#fail(`JOURNAL_ENTRIES: ${(err as Error).message}`);
          }
        }
        this.#journalCount += msg.entries.length;
        this.#phase = 3;
        return { done: false };
      case 'journal_file':
        if (this.#phase < 1 || this.#phase > 2 || !this.#acquired?.resumed) return this.#fail('JOURNAL_FILE out of place');
        if (fileContents === undefined) return this.#fail('JOURNAL_FILE without its entries');
        if (fileContents instanceof Error) return this.#fail(`JOURNAL_FILE: ${fileContents.message}`);
        if (!(fileContents instanceof JournalEntries)) return this.#fail('JOURNAL_FILE with checkpoint entries');
        if (fileContents.length !== msg.count) return this.#fail(`JOURNAL_FILE says ${msg.count} entries, its file holds ${fileContents.length}`);
        this.#journal.push(fileContents);
        this.#journalCount += msg.count;
        this.#journalFromFile = true;
        this.#phase = 3;
        return { done: false };
      case 'state_end': {
        const acquired = this.#acquired;
        if (this.#phase < 1 || acquired === null) return this.#fail('STATE_END before ACQUIRED');
        if (msg.initParams !== (this.#initParams !== null) || msg.checkpointCount !== this.#checkpoint.size || msg.journalCount !== this.#journalCount) {
          return this.#fail(
            `STATE_END says init=${msg.initParams} checkpoint=${msg.checkpointCount} journal=${msg.journalCount}, ` +
              `received init=${this.#initParams !== null} checkpoint=${this.#checkpoint.size} journal=${this.#journalCount}`,
          );
        }
        this.#phase = 4;
        return { done: true, state: { acquired, initParams: this.#initParams, checkpoint: this.#checkpoint, journal: JournalEntries.concat(this.#journal) } };
      }
      default:
        return this.#fail(`${msg.type} inside an ACQUIRE reply`);
    }
  }
}
