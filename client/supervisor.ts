// The client SDK: a daemon's (or the CLI's) connection to the supervisor. Requests are
// promises; the state calls of an acquired session (journal, checkpoint, INIT) are one-way
// and synchronous, so a daemon can report a backing id between the ioctl and the OPEN reply
// without a round trip. The session keeps its own copy of that state: when the supervisor
// restarts, the daemon keeps serving, reconnects, stores its fd again and re-sends the state.
import {
  closeAll,
  closeFd,
  connectSocket,
  createSealedFile,
  createSocket,
  createSocketPair,
  readSealedFile,
  receiveMessage,
  sendMessage,
  waitWritableSync,
  watchFd,
  type PollHandle,
} from '../native/index.ts';
import {
  AcquireCollector,
  type AcquireProgress,
  acquireAttachment,
  chunkAdopt,
  decodeCheckpointFile,
  decodeMessage,
  encodeAcquireSequence,
  encodeCheckpointFile,
  encodeJournalClose,
  encodeJournalOpen,
  encodeJournalOpenWire,
  encodeMessage,
  HEADER_SIZE,
  JOURNAL_ENTRY_SIZE,
  JournalEntries,
  JournalStore,
  MAX_MESSAGE,
  PROTOCOL_VERSION,
  type ControlMessage,
  type ErrorMessage,
  type MountSpec,
  type Role,
  type CleanupStrategy,
} from '../protocol/index.ts';
import type { AcquiredSession, SessionLink } from './session.ts';
import { holdOptimizer, releaseOptimizer, OPTIMIZER_HOLD_MS } from './optimizer.ts';

/** Minimal logger (pino-compatible). */
export interface ClientLogger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

const quiet: ClientLogger = { info() {}, warn() {}, error() {} };

/** A refusal or failure reported by the supervisor, or a broken connection. */
export class SupervisorError extends Error {
  /** The protocol's errno name (`EBUSY`, `EACCES`, ...), or `ECONNRESET`/`EPROTO` locally. */
  readonly code: string;
  readonly errno: number;
  constructor(code: string, errno: number, message: string) {
    super(message);
    this.name = 'SupervisorError';
    this.code = code;
    this.errno = errno;
  }

  static from(msg: ErrorMessage): SupervisorError {
    return new SupervisorError(msg.code, msg.errno, msg.message);
  }
}

export interface ConnectOptions {
  /** The supervisor's control socket: a path or `@abstract`. */
  socket: string;
  role?: Role;
  /** Shown in the supervisor's logs. */
  clientName?: string;
  log?: ClientLogger;
  /** Reconnect (and re-register an owned session) when the connection breaks. Default: true for daemons. */
  reconnect?: boolean;
  /** Heartbeat interval while owning a session, ms. Default 5000; 0 sends none. */
  heartbeatMs?: number;
}

/** What HELLO_OK said. */
export interface SupervisorInfo {
  version: number;
  supervisorVersion: string;
  closeAll: boolean;
  resend: boolean;
}

type Pending = (msg: ControlMessage, fds: number[]) => boolean;

interface Link {
  fd: number;
  poll: PollHandle;
  pending: Map<number, Pending>;
  nextId: number;
}

/** Connects and says HELLO. Throws `SupervisorError` or a `NativeError` (`ENOENT`, `ECONNREFUSED`). */
export async function connectSupervisor(opts: ConnectOptions): Promise<SupervisorClient> {
  const client = new SupervisorClient(opts);
  await client.open();
  return client;
}

/** A connection to the supervisor. Create it with `connectSupervisor`. */
export class SupervisorClient {
  readonly #opts: Required<Omit<ConnectOptions, 'log'>> & { log: ClientLogger };
  #link: Link | null = null;
  #info: SupervisorInfo | null = null;
  #session: ClientSession | null = null;
  #closed = false;
  #reconnectTimer: NodeJS.Timeout | null = null;
  #heartbeat: NodeJS.Timeout | null = null;
  #drainHandlers: ((name: string) => void)[] = [];
  #disconnectHandlers: ((err: Error) => void)[] = [];

  constructor(opts: ConnectOptions) {
    const role = opts.role ?? 'daemon';
    this.#opts = {
      socket: opts.socket,
      role,
      clientName: opts.clientName ?? `${process.argv[1] ?? 'node'}[${process.pid}]`,
      log: opts.log ?? quiet,
      reconnect: opts.reconnect ?? role === 'daemon',
      heartbeatMs: opts.heartbeatMs ?? 5000,
    };
  }

  /** The supervisor's HELLO_OK, once connected. */
  get info(): SupervisorInfo | null {
    return this.#info;
  }

  /** True while a connection is up. */
  get connected(): boolean {
    return this.#link !== null;
  }

  /** Connects and negotiates. Called by `connectSupervisor`. */
  async open(): Promise<void> {
    const fd = createSocket('seqpacket');
    try {
      connectSocket(fd, this.#opts.socket);
    } catch (err) {
      closeFd(fd);
      throw err;
    }
    const link: Link = { fd, poll: null as unknown as PollHandle, pending: new Map(), nextId: 1 };
    link.poll = watchFd(fd, { readable: true, disconnect: true }, () => this.#onReadable(link));
    this.#link = link;
    const reply = await this.#request({ type: 'hello', minVersion: PROTOCOL_VERSION, maxVersion: PROTOCOL_VERSION, role: this.#opts.role, clientName: this.#opts.clientName });
    if (reply.type !== 'hello_ok') throw this.#unexpected(reply);
    this.#info = { version: reply.version, supervisorVersion: reply.supervisorVersion, closeAll: (reply.features & 1) !== 0, resend: (reply.features & 2) !== 0 };
  }

  /** Called with the session name when the supervisor asks the owner to drain (planned upgrade). */
  onDrainRequest(cb: (name: string) => void): void {
    this.#drainHandlers.push(cb);
  }

  /** Called when the connection breaks (before any reconnect). */
  onDisconnect(cb: (err: Error) => void): void {
    this.#disconnectHandlers.push(cb);
  }

  /**
   * Acquires session `name`: fresh (the supervisor mounted it; the kernel will send INIT) or
   * resumed after a previous owner (state restored, INIT already answered). With `standby`,
   * waits while the session has a live owner. With `rehearse` (a warm spare, which will
   * wait), first runs the take-over path once on made-up state, so that the real take-over
   * does not wait for V8 to compile it (about 10 ms in a new process: not worth it for a
   * daemon restarted into a session that is already waiting for it). Throws
   * `SupervisorError` (`EBUSY`, `EACCES`, ...).
   */
  async acquire(name: string, mount: MountSpec, opts: { standby?: boolean; rehearse?: boolean } = {}): Promise<ClientSession> {
    if (this.#session) throw new SupervisorError('EBUSY', 16, `this client already owns session ${this.#session.name}`);
    this.#requireLink();
    if (opts.rehearse) {
      this.#rehearseTakeover(mount);
      await runEventLoopOnce();
    }
    // Asked again: the connection may have broken during the rehearsal's turns.
    const link = this.#requireLink();
    // After the rehearsals (the daemon's own ran before this call): what they made hot is
    // optimized, or being optimized, by now (client/optimizer.ts).
    if (opts.rehearse && holdOptimizer()) this.#opts.log.info({ event: 'client.optimizer_held', afterTakeoverMs: OPTIMIZER_HOLD_MS }, 'TurboFan held until a while after the take-over');
    const collector = new AcquireCollector();
    let fd = -1;
    let result: ReturnType<AcquireCollector['push']> | undefined;
    try {
      // A connection that breaks meanwhile answers every pending request with an ERROR.
      result = await new Promise<ReturnType<AcquireCollector['push']>>((resolve) => {
        this.#sendRequest(link, { type: 'acquire', name, mount, standby: opts.standby ?? false }, (msg, fds) => {
          if (msg.type === 'acquired' && fds.length === 1) fd = fds[0]!;
          const p = collector.push(msg, readStateFile(msg, fds));
          if (p.done) resolve(p);
          return p.done;
        });
      });
    } finally {
      // Also when the request could not be sent (an invalid name throws while encoding).
      releaseOptimizer(result !== undefined && 'state' in result ? OPTIMIZER_HOLD_MS : 0);
    }
    if (!('state' in result)) {
      if (fd >= 0) closeFd(fd);
      if ('refused' in result) throw SupervisorError.from(result.refused);
      throw new SupervisorError('EPROTO', 71, 'error' in result ? result.error.message : 'incomplete ACQUIRE reply');
    }
    const { acquired, initParams, checkpoint, journal } = result.state;
    const session = new ClientSession(this, name, mount, fd, { resumed: acquired.resumed, generation: acquired.generation, strategy: acquired.strategy, init: initParams, checkpoint, journal });
    this.#own(session);
    return session;
  }

  /**
   * Hands the supervisor a /dev/fuse fd this daemon opened and mounted itself; the session
   * is then supervised with this client as its owner. `fd` stays the caller's too.
   */
  async store(name: string, mount: MountSpec, fd: number): Promise<ClientSession> {
    if (this.#session) throw new SupervisorError('EBUSY', 16, `this client already owns session ${this.#session.name}`);
    const reply = await this.#request({ type: 'store', name, mount }, fd);
    if (reply.type !== 'stored') throw this.#unexpected(reply);
    const session = new ClientSession(this, name, mount, fd, { resumed: false, generation: reply.generation, strategy: this.#info?.closeAll ? 'close-all' : 'journal', init: null, checkpoint: new Map(), journal: JournalEntries.EMPTY });
    this.#own(session);
    return session;
  }

  /** Unmounts session `name` and makes the supervisor forget it. */
  async release(name: string): Promise<void> {
    const reply = await this.#request({ type: 'release', name });
    if (reply.type !== 'ok') throw this.#unexpected(reply);
    if (this.#session?.name === name) this.#disown();
  }

  /** The supervisor's status (the JSON `fusekeeper status --json` prints). */
  async status(): Promise<unknown> {
    const reply = await this.#request({ type: 'status' });
    if (reply.type !== 'status_reply') throw this.#unexpected(reply);
    return JSON.parse(reply.json) as unknown;
  }

  /** Asks the owner of `name` to drain and exit; resolves once it has. */
  async drain(name: string): Promise<void> {
    const reply = await this.#request({ type: 'drain', name });
    if (reply.type !== 'ok') throw this.#unexpected(reply);
  }

  /** Tells the supervisor this owner has answered everything it read and will exit. */
  drained(): void {
    this.#oneWay(encodeMessage({ type: 'drained' }));
  }

  /** Disconnects. Never releases or unmounts anything; the session fd stays the caller's. */
  close(): void {
    this.#closed = true;
    if (this.#reconnectTimer) clearTimeout(this.#reconnectTimer);
    this.#stopHeartbeat();
    this.#dropLink(new SupervisorError('ECONNRESET', 104, 'client closed'));
  }

  // ------------------------------------------------------------------------------------------

  #own(session: ClientSession): void {
    this.#session = session;
    this.#registered = true;
    this.#startHeartbeat();
  }

  /**
   * What a spare does once before it waits, so that its take-over runs code V8 has
   * compiled and whose property caches are filled (a function is compiled when first called;
   * on the failover bench the standby spent most of its take-over compiling): receives a
   * made-up resumed ACQUIRE reply as the real one comes, builds a session from it that keeps
   * state as an owner's does (nothing is sent: this client owns no session yet), and starts
   * and stops a heartbeat timer (Node's timer lists are compiled on first use too; the
   * rest of Node's event-loop code is run by runEventLoopOnce).
   */
  #rehearseTakeover(mount: MountSpec): void {
    const state = rehearseAcquireReply(32);
    if (state) {
      const s = new ClientSession(this, 'rehearsal', mount, -1, {
        resumed: true,
        generation: state.acquired.generation,
        strategy: state.acquired.strategy,
        init: state.initParams,
        checkpoint: state.checkpoint,
        journal: state.journal,
      });
      s.checkpointPut('rehearsal', Buffer.alloc(48));
      s.checkpointDelete('rehearsal');
      s.journalOpen(2, 1n, 2n);
      s.journalClose(2);
      encodeMessage({ type: 'adopt', more: false, ids: [1] }, 1);
    }
    // The real timer calls: an unref'd interval takes other paths in Node's timer lists.
    this.#startHeartbeat();
    this.#stopHeartbeat();
  }

  #disown(): void {
    this.#session = null;
    this.#registered = false;
    this.#stopHeartbeat();
  }

  /**
   * The current link owns the session (ACQUIRE/STORE answered). One-way session frames are
   * sent only then: on a fresh link before the re-registering STORE is answered, the
   * supervisor would take them for frames of a connection that owns nothing (EPROTO and a
   * disconnect); they are kept in the session's state copy and re-sent after STORED.
   */
  #registered = false;

  #startHeartbeat(): void {
    this.#stopHeartbeat();
    if (this.#opts.heartbeatMs <= 0) return;
    const frame = encodeMessage({ type: 'heartbeat' });
    this.#heartbeat = setInterval(() => this.#oneWay(frame), this.#opts.heartbeatMs);
    this.#heartbeat.unref();
  }

  #stopHeartbeat(): void {
    if (this.#heartbeat) clearInterval(this.#heartbeat);
    this.#heartbeat = null;
  }

  #requireLink(): Link {
    if (!this.#link) throw new SupervisorError('ECONNRESET', 104, `not connected to the supervisor at ${this.#opts.socket}`);
    return this.#link;
  }

  #unexpected(msg: ControlMessage): SupervisorError {
    if (msg.type === 'error') return SupervisorError.from(msg);
    return new SupervisorError('EPROTO', 71, `unexpected ${msg.type.toUpperCase()} reply`);
  }

  /** Sends a request whose answer is one frame. */
  #request(msg: ControlMessage, fd?: number): Promise<ControlMessage> {
    return new Promise((resolve, reject) => {
      let link: Link;
      try {
        link = this.#requireLink();
      } catch (err) {
        reject(err as Error);
        return;
      }
      // A connection that breaks meanwhile answers every pending request with an ERROR.
      this.#sendRequest(
        link,
        msg,
        (reply, fds) => {
          closeAll(fds);
          resolve(reply);
          return true;
        },
        fd,
      );
    });
  }

  #sendRequest(link: Link, msg: ControlMessage, onReply: Pending, fd?: number): void {
    const id = link.nextId++;
    if (link.nextId > 0xffffffff) link.nextId = 1;
    link.pending.set(id, onReply);
    this.#sendFrame(link, encodeMessage(msg, id), fd === undefined ? [] : [fd]);
  }

  /** One-way frames: dropped while disconnected or not registered (the session's state copy covers them). */
  #oneWay(frame: Buffer): void {
    if (this.#link && this.#registered) this.#sendFrame(this.#link, frame, []);
  }

  /**
   * Sends synchronously. A full socket buffer blocks the thread briefly (the supervisor is
   * reading; a journal report must precede the reply that uses the id); a supervisor that
   * reads nothing for 2 s counts as gone.
   */
  #sendFrame(link: Link, data: Buffer, fds: number[]): void {
    try {
      for (let tries = 0; tries < 2; tries++) {
        if (sendMessage(link.fd, { data, fds }) !== null) return;
        if (!waitWritableSync(link.fd, 2000)) break;
      }
      this.#linkBroken(link, new SupervisorError('ETIMEDOUT', 110, 'the supervisor stopped reading'));
    } catch (err) {
      this.#linkBroken(link, err as Error);
    }
  }

  #onReadable(link: Link): void {
    for (let i = 0; i < 64 && this.#link === link; i++) {
      let r;
      try {
        r = receiveMessage(link.fd, { maxBytes: MAX_MESSAGE, maxFds: 4 });
      } catch (err) {
        this.#linkBroken(link, err as Error);
        return;
      }
      if (r.kind === 'again') return;
      if (r.kind === 'eof') {
        this.#linkBroken(link, new SupervisorError('ECONNRESET', 104, 'the supervisor closed the connection'));
        return;
      }
      const d = r.truncated ? null : decodeMessage(r.data, r.fds.length + r.extraFdsClosed, { from: 'supervisor', packedJournal: true });
      if (!d || !d.ok) {
        closeAll(r.fds);
        this.#linkBroken(link, new SupervisorError('EPROTO', 71, `malformed frame from the supervisor: ${d && !d.ok ? d.error.message : 'oversized'}`));
        return;
      }
      const msg = d.message;
      if (msg.type === 'drain_request') {
        const name = this.#session?.name;
        if (name) for (const cb of this.#drainHandlers) cb(name);
        continue;
      }
      const pending = link.pending.get(d.requestId);
      if (!pending) {
        closeAll(r.fds);
        // ERROR with requestId 0: the supervisor refused a one-way frame and disconnects.
        if (msg.type === 'error') this.#opts.log.error({ event: 'supervisor.error', code: msg.code }, msg.message);
        continue;
      }
      if (pending(msg, r.fds)) link.pending.delete(d.requestId);
    }
  }

  #dropLink(err: Error): void {
    const link = this.#link;
    if (!link) return;
    this.#link = null;
    this.#registered = false;
    link.poll.close();
    closeFd(link.fd);
    const error = err instanceof SupervisorError ? err : new SupervisorError('ECONNRESET', 104, err.message);
    const refusal: ErrorMessage = { type: 'error', errno: error.errno, code: error.code, message: error.message };
    for (const p of link.pending.values()) p(refusal, []);
    link.pending.clear();
  }

  #linkBroken(link: Link, err: Error): void {
    if (this.#link !== link) return;
    this.#dropLink(err);
    this.#opts.log.warn({ event: 'supervisor.disconnected', err: err.message }, `lost the supervisor: ${err.message}`);
    for (const cb of this.#disconnectHandlers) cb(err);
    if (this.#opts.reconnect && !this.#closed) this.#scheduleReconnect(100);
  }

  #scheduleReconnect(delayMs: number): void {
    this.#reconnectTimer = setTimeout(() => {
      this.#reconnectTimer = null;
      void this.#reconnect(delayMs);
    }, delayMs);
    this.#reconnectTimer.unref();
  }

  /** Reconnects; an owned session is stored again and its state re-sent. */
  async #reconnect(delayMs: number): Promise<void> {
    if (this.#closed) return;
    try {
      await this.open();
      const s = this.#session;
      if (s) {
        const reply = await this.#request({ type: 'store', name: s.name, mount: s.mount }, s.fd);
        if (reply.type !== 'stored') throw this.#unexpected(reply);
        this.#registered = true;
        s.resendState();
        this.#startHeartbeat();
      }
      this.#opts.log.info({ event: 'supervisor.reconnected', session: s?.name }, 'reconnected to the supervisor');
    } catch (err) {
      const e = err as Error & { code?: string };
      if (e.code === 'EEXIST') {
        // The supervisor still has the session (it did not restart): it considers this owner gone.
        this.#opts.log.error({ event: 'supervisor.session_taken', session: this.#session?.name }, `the supervisor kept session ${this.#session?.name}; serving unsupervised`);
        return;
      }
      // A link that broke meanwhile has already scheduled the next attempt: one chain only.
      if (this.#reconnectTimer !== null || this.#closed) return;
      this.#dropLink(e);
      this.#scheduleReconnect(Math.min(2000, delayMs * 2));
    }
  }

  /** @internal The session's one-way frames. */
  sendState(frame: Buffer): void {
    this.#oneWay(frame);
  }

  /** @internal ADOPT in chunks, all sent before it returns; resolves with the last answer. */
  async adopt(ids: readonly number[]): Promise<{ closed: number; probed: number }> {
    const replies = await Promise.all(chunkAdopt(ids).map((chunk) => this.#request(chunk)));
    for (const r of replies) if (r.type === 'error') throw SupervisorError.from(r);
    const last = replies.at(-1)!;
    if (last.type !== 'adopted') throw this.#unexpected(last);
    return { closed: last.closed, probed: last.probed };
  }
}

/**
 * For a frame of an ACQUIRE state sequence and the fds that came with it: what the sealed
 * memfd of a JOURNAL_FILE or CHECKPOINT_FILE holds (the entries, the decoded checkpoint), or
 * the Error that says why it cannot be used; undefined for other frames. Pass the result to
 * `AcquireCollector.push`. Closes every fd that came with `msg` except ACQUIRED's /dev/fuse fd.
 */
export function readStateFile(msg: ControlMessage, fds: number[]): JournalEntries | Map<string, Buffer> | Error | undefined {
  if (msg.type === 'acquired' && fds.length === 1) return undefined;
  try {
    if (fds.length !== 1) return undefined;
    if (msg.type === 'journal_file') return JournalEntries.fromWire(readSealedFile(fds[0]!, msg.count * JOURNAL_ENTRY_SIZE));
    if (msg.type === 'checkpoint_file') return decodeCheckpointFile(readSealedFile(fds[0]!, msg.size), msg.count);
    return undefined;
  } catch (err) {
    return err as Error;
  } finally {
    closeAll(fds);
  }
}

/**
 * Runs the parts of Node's own event loop a take-over uses: a timer that fires, an immediate,
 * a timer cancelled, a listener removed. Node compiles its internal functions on their first
 * call too: a bare standby on the failover bench (which had never run a timer) spent about
 * 1 ms of its take-over compiling some 40 of them (processTimers, listOnTimeout, the timer
 * priority queue, processImmediate, the async-hook stack; `node --log-function-events`).
 */
async function runEventLoopOnce(): Promise<void> {
  clearTimeout(setTimeout(() => {}, 1000));
  await new Promise<void>((resolve) => setTimeout(resolve, 0));
  await new Promise<void>((resolve) => setImmediate(resolve));
  // On `process` itself, whose 'removeListener' handler checks for signals. The event is no signal.
  const listener = (): void => {};
  process.on('fusekeeper-warm-up', listener);
  (process as NodeJS.EventEmitter).emit('fusekeeper-warm-up');
  process.off('fusekeeper-warm-up', listener);
}

type AcquiredState = Extract<AcquireProgress, { state: unknown }>['state'];

/**
 * Journal entries in the rehearsed ACQUIRE reply, checked at least REHEARSAL_JOURNAL_CHECKS
 * times: by then V8 has optimized the loop that checks every id of a journal handed over. Run
 * a few times only, it checked 100k ids in 2.9 ms at a take-over; optimized, in 0.5 ms (a
 * Node 20 process with the standby flags of bin/warm-code.js).
 */
const REHEARSAL_JOURNAL_ENTRIES = 4096;
const REHEARSAL_JOURNAL_CHECKS = 4;

/**
 * Receives, decodes and collects made-up resumed ACQUIRE replies through a socket pair, as
 * the real one arrives: one item of each kind of state plus `checkpointKeys` entries, the
 * checkpoint and journal once in frames and once in files. Returns the last collected state.
 */
function rehearseAcquireReply(checkpointKeys: number): AcquiredState | undefined {
  const journal = JournalEntries.from(Array.from({ length: REHEARSAL_JOURNAL_ENTRIES }, (_, i) => ({ id: i + 1, dev: 1n, ino: BigInt(i + 1) })));
  // The reply below checks them twice (in frames, in a file).
  for (let i = 2; i < REHEARSAL_JOURNAL_CHECKS; i++) JournalEntries.fromWire(journal.bytes);
  const checkpoint = new Map<string, Buffer>();
  for (let i = 0; i < checkpointKeys; i++) checkpoint.set(`rehearsal/${i}`, Buffer.alloc(48, 0x5b));
  let pair: [number, number];
  try {
    pair = createSocketPair('seqpacket');
  } catch {
    return undefined; // no fds left now (EMFILE?): the rehearsal only warms the code up
  }
  const [to, from] = pair;
  let state: AcquiredState | undefined;
  try {
    for (const inFiles of [false, true]) {
      const opts = { checkpointFile: inFiles, journalFile: inFiles };
      const frames = encodeAcquireSequence(1, { acquired: { type: 'acquired', generation: 2, resumed: true, strategy: 'journal' }, initParams: Buffer.alloc(16), checkpoint, journal }, opts);
      const collector = new AcquireCollector();
      for (const frame of frames) {
        const attach = acquireAttachment(frame);
        const file = attach === 'checkpoint-file' ? encodeCheckpointFile(checkpoint) : attach === 'journal-file' ? journal.bytes : null;
        const fds = attach === 'fuse-device' ? [to] : file ? [createSealedFile('fusekeeper-rehearsal', file)] : [];
        try {
          if (sendMessage(to, { data: frame, fds }) === null) return state;
        } finally {
          if (file) closeAll(fds);
        }
        const r = receiveMessage(from, { maxBytes: MAX_MESSAGE, maxFds: 4 });
        if (r.kind !== 'message') return state;
        const d = decodeMessage(r.data, r.fds.length, { from: 'supervisor', packedJournal: true });
        if (!d.ok) {
          closeAll(r.fds);
          return state;
        }
        const contents = readStateFile(d.message, r.fds);
        if (d.message.type === 'acquired') closeAll(r.fds);
        const p = collector.push(d.message, contents);
        if (p.done && 'state' in p) state = p.state;
      }
    }
  } catch {
    // as above: a warm-up that cannot run does no harm
  } finally {
    closeFd(to);
    closeFd(from);
  }
  return state;
}

/** An acquired session: its fd, the state handed over, and the calls that keep state current. */
export class ClientSession implements AcquiredSession, SessionLink {
  readonly name: string;
  readonly mount: MountSpec;
  readonly fd: number;
  readonly resumed: boolean;
  readonly generation: number;
  readonly strategy: CleanupStrategy;
  readonly init: Buffer | null;
  readonly checkpoint: ReadonlyMap<string, Buffer>;
  readonly journal: JournalEntries;
  readonly #client: SupervisorClient;
  /** What the supervisor holds, re-sent after a reconnect. */
  readonly #state: { init: Buffer | null; checkpoint: Map<string, Buffer>; journal: JournalStore | null };

  constructor(
    client: SupervisorClient,
    name: string,
    mount: MountSpec,
    fd: number,
    handed: { resumed: boolean; generation: number; strategy: CleanupStrategy; init: Buffer | null; checkpoint: Map<string, Buffer>; journal: JournalEntries },
  ) {
    this.#client = client;
    this.name = name;
    this.mount = mount;
    this.fd = fd;
    this.resumed = handed.resumed;
    this.generation = handed.generation;
    this.strategy = handed.strategy;
    this.init = handed.init;
    this.checkpoint = handed.checkpoint;
    this.journal = handed.journal;
    // The kept journal starts as the handed one and is copied only once it changes (most
    // owners ADOPT first, which replaces it): a 100k-id copy costs a take-over about 1 ms.
    this.#state = { init: handed.init, checkpoint: new Map(handed.checkpoint), journal: null };
  }

  /** The journal this session keeps for re-sending (resendState). */
  #kept(): JournalStore {
    return (this.#state.journal ??= new JournalStore(this.journal));
  }

  journalOpen(id: number, dev: bigint, ino: bigint): void {
    const frame = encodeJournalOpen(id, dev, ino);
    this.#kept().setWire(frame, HEADER_SIZE);
    this.#client.sendState(frame);
  }

  journalClose(id: number): void {
    this.#kept().delete(id);
    this.#client.sendState(encodeJournalClose(id));
  }

  saveInit(params: Buffer): void {
    this.#state.init = params;
    this.#client.sendState(encodeMessage({ type: 'init_save', params }));
  }

  checkpointPut(key: string, value: Buffer): void {
    this.#state.checkpoint.set(key, value);
    this.#client.sendState(encodeMessage({ type: 'checkpoint_put', ack: false, key, value }));
  }

  checkpointDelete(key: string): void {
    this.#state.checkpoint.delete(key);
    this.#client.sendState(encodeMessage({ type: 'checkpoint_delete', ack: false, key }));
  }

  adopt(ids: readonly number[]): Promise<{ closed: number; probed: number }> {
    if (ids.length === 0) {
      this.#state.journal = new JournalStore();
    } else {
      const keep = new Set(ids);
      this.#kept().retain((id) => keep.has(id));
    }
    return this.#client.adopt(ids);
  }

  /** @internal Re-sends everything after the supervisor came back. */
  resendState(): void {
    const { init, checkpoint } = this.#state;
    const journal = this.#kept();
    if (init) this.#client.sendState(encodeMessage({ type: 'init_save', params: init }));
    for (const [key, value] of checkpoint) this.#client.sendState(encodeMessage({ type: 'checkpoint_put', ack: false, key, value }));
    for (let i = 0; i < journal.size; i++) this.#client.sendState(encodeJournalOpenWire(journal.wireAt(i)));
  }
}
