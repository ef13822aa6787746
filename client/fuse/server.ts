// The /dev/fuse request loop: a thin shell around the pure codec. It reads requests
// non-blocking on readiness, dispatches them to an async handler, and writes exactly one
// reply per request that expects one. No error thrown by a handler crosses the dispatch
// boundary: a FuseError becomes its errno, anything else is logged and answered EIO.
import { constants } from 'node:os';
import { readFd, writeFd, setNonBlocking, watchFd, errnoName, type PollHandle } from '../../native/index.ts';
import { FUSE_IN_HEADER_SIZE, FUSE_UNIQUE_RESEND, FUSE_WRITE_IN_SIZE, InitFlags, type InitOut } from '../../kernel/abi.ts';
import {
  parseRequest,
  isResend,
  expectsReply,
  describeRequest,
  describeReply,
  negotiateInit,
  replyError,
  replyEmpty,
  replyInit,
  type FuseRequest,
  type FuseOp,
  type InitWanted,
} from './codec.ts';
import { errnoOf } from './errors.ts';
import type { SessionLink } from '../session.ts';
import { intentNeeded, ReplayGuard, resolveReplay } from './replay.ts';
import { decodeSessionInit, encodeSessionInit } from './session-init.ts';
import { faultPoint } from './fault.ts';
import { rehearseRequests, type RehearsalReport } from './rehearsal.ts';

const { EAGAIN, EINTR, ENOENT, ENODEV, ENOSYS, EIO, EPROTO } = constants.errno;

/** Per-request context handed to operations. */
export interface RequestContext {
  /** Aborted when the kernel sends FUSE_INTERRUPT for this request. */
  readonly signal: AbortSignal;
}

/**
 * A request's context whose AbortSignal is made on first use. Most handlers never look at
 * it, and an AbortController with its signal costs about 3-4 µs per request on Node 20 once
 * warm (600 µs for the first 20 in a new process), measured on the test VM.
 */
class LazyContext implements RequestContext {
  #controller: AbortController | undefined;
  #interrupted = false;

  get signal(): AbortSignal {
    if (!this.#controller) {
      this.#controller = new AbortController();
      if (this.#interrupted) this.#controller.abort();
    }
    return this.#controller.signal;
  }

  /** FUSE_INTERRUPT for this request: aborts the signal, now or when it is made. */
  interrupt(): void {
    this.#interrupted = true;
    this.#controller?.abort();
  }
}

/** The request type of operation `K` (request interfaces may serve several ops, e.g. open/opendir). */
export type RequestOf<K extends FuseOp> = FuseRequest extends infer R ? (R extends { op: infer O } ? (K extends O ? R & { op: K } : never) : never) : never;

/**
 * A filesystem: one optional method per operation, each resolving to the complete reply
 * (built with the codec's `reply*` builders) or throwing `FuseError`. Missing methods are
 * answered `ENOSYS`. `forget`/`batch_forget` get no reply; their result is ignored.
 */
export type FuseOperations = {
  [K in Exclude<FuseOp, 'init' | 'interrupt' | 'unknown'>]?: (req: RequestOf<K>, ctx: RequestContext) => Promise<Buffer | void> | Buffer | void;
};

/** What the INIT exchange settled, also what a resumed daemon restores instead of INIT. */
export interface SessionInit {
  minor: number;
  /** Flags in force (combined 64-bit). */
  flags: bigint;
  maxWrite: number;
  passthrough: boolean;
  initOut: InitOut;
}

/** Minimal logger interface (pino-compatible). */
export interface FuseLogger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

/** A logger that drops everything: for rehearsals, whose lines would only mislead. */
export const QUIET_LOGGER: FuseLogger = { info() {}, warn() {}, error() {} };

export interface FuseServerOptions {
  /** What to ask for in INIT. `maxWrite` also sizes the read buffer. */
  init: InitWanted;
  /**
   * A connection that already answered INIT (resumed after a crash): skip INIT, use this.
   * Should the kernel still send an INIT (the previous owner died before answering it, and
   * FUSE_NOTIFY_RESEND requeued it), it is answered as on a fresh connection.
   */
  resume?: SessionInit;
  /** Called once INIT is settled (fresh or resumed). */
  onInit?: (init: SessionInit) => void;
  /**
   * The supervisor session this connection belongs to. The INIT settlement is saved through
   * it (`saveInit`, before the INIT reply is written), and each non-idempotent request gets
   * an intent record in the checkpoint while it runs (see replay.ts).
   */
  link?: SessionLink;
  /** Resumed: the checkpoint the previous owner left; its intent records resolve replays. */
  checkpoint?: ReadonlyMap<string, Buffer>;
  /**
   * Called with `unique` (bit 63 cleared) for each replayed request before it runs: whatever
   * the previous owner handed out only in its reply to that request never reached the kernel
   * (see `ReplayGuardOptions.onReplayed`).
   */
  onReplayed?: (unique: bigint) => void;
  /** Prints each request and reply on one line each through `log.info`. */
  debug?: boolean;
  log?: FuseLogger;
  /** Requests read per readiness callback before yielding to the event loop. */
  batch?: number;
  /**
   * Called once, after the first reply is written: when (`process.hrtime.bigint()`) the
   * first request was read and when that reply went out, and its operation. A resumed
   * daemon's take-over ends there.
   */
  onFirstReply?: (readAt: bigint, repliedAt: bigint, op: string) => void;
}

/** Why the loop ended. */
export type StopReason = 'unmounted' | 'stopped' | 'error';

const consoleLogger: FuseLogger = {
  info: (o, m) => console.error(m ?? '', JSON.stringify(o, bigintReplacer)),
  warn: (o, m) => console.error(m ?? '', JSON.stringify(o, bigintReplacer)),
  error: (o, m) => console.error(m ?? '', JSON.stringify(o, bigintReplacer)),
};

function bigintReplacer(_k: string, v: unknown): unknown {
  return typeof v === 'bigint' ? v.toString() : v;
}

/** Serves one FUSE connection. The fd stays owned by the caller: `stop()` does not close it. */
export class FuseServer {
  readonly fd: number;
  readonly #ops: FuseOperations;
  readonly #opts: FuseServerOptions;
  readonly #log: FuseLogger;
  readonly #inFlight = new Map<bigint, LazyContext>();
  readonly #replay: ReplayGuard;
  #buf: Buffer;
  #poll: PollHandle | undefined;
  #init: SessionInit | undefined;
  #stopped: StopReason | undefined;
  #resolveDone!: (r: StopReason) => void;
  /** Resolves when the loop ends, with the reason. */
  readonly done: Promise<StopReason>;
  /** Requests answered (or consumed, for those without reply). */
  requests = 0;
  /** Rehearsal only: where replies go instead of the fd. */
  #sink: ((reply: Buffer) => void) | undefined;
  /** When the first request was read, until the first reply has gone out (onFirstReply). */
  #firstReadAt: bigint | undefined;
  #firstReplied = false;

  /**
   * Runs a short read-only script of requests (see rehearsal.ts) through `ops` with the same
   * parse, dispatch and reply code as a served connection, replies going nowhere and no
   * session link, so that the first requests after a take-over do not pay for V8's
   * first-run compilation. For a warm standby, before it waits. The handlers run for real
   * (a LOOKUP, OPEN and READ of root entry `name`, if given): give it operations whose
   * state is thrown away, not the instance that will serve the session. `onInit` gets the
   * settlement of the rehearsal's INIT, for a rehearsal of resuming with it.
   */
  static async rehearse(ops: FuseOperations, opts: { init: InitWanted; name?: string; onInit?: (init: SessionInit) => void }): Promise<RehearsalReport> {
    const server = new FuseServer(-1, ops, { init: opts.init, log: QUIET_LOGGER, onInit: opts.onInit });
    const report = await rehearseRequests((frame) => server.#rehearseOne(frame), opts.init.flags, opts.name);
    // A resumed owner decodes the INIT settlement its predecessor saved.
    if (server.#init) decodeSessionInit(encodeSessionInit(server.#init));
    return report;
  }

  #rehearseOne(frame: Buffer): Promise<Buffer | null> {
    return new Promise((resolve) => {
      this.#sink = resolve;
      this.#dispatch(frame);
      if (!expectsReply(frame.readUInt32LE(4))) resolve(null);
    });
  }

  constructor(fd: number, ops: FuseOperations, opts: FuseServerOptions) {
    this.fd = fd;
    this.#ops = ops;
    this.#opts = opts;
    this.#log = opts.log ?? consoleLogger;
    // Not zeroed: only the bytes a read returned are ever looked at. Zeroing 132 KiB cost a
    // warm standby about 0.5 ms of page faults at its take-over (perf, failover bench).
    this.#buf = Buffer.allocUnsafeSlow(readBufferSize(opts.resume?.maxWrite ?? opts.init.maxWrite));
    this.#init = opts.resume;
    this.#replay = new ReplayGuard({ link: opts.link, previous: opts.checkpoint, onReplayed: opts.onReplayed, log: this.#log });
    this.done = new Promise((r) => (this.#resolveDone = r));
  }

  /** The INIT settlement, once known. */
  get init(): SessionInit | undefined {
    return this.#init;
  }

  /** Requests being handled right now. */
  get inFlight(): number {
    return this.#inFlight.size;
  }

  /** Starts reading. With `resume`, INIT is taken as settled. */
  start(): void {
    setNonBlocking(this.fd, true);
    if (this.#init) this.#opts.onInit?.(this.#init);
    this.#poll = watchFd(this.fd, { readable: true }, () => this.#drain());
  }

  /** Stops reading (in-flight requests still get their replies). Idempotent. */
  stop(reason: StopReason = 'stopped'): void {
    if (this.#stopped) return;
    this.#stopped = reason;
    this.#poll?.close();
    this.#poll = undefined;
    this.#resolveDone(reason);
  }

  /** Resolves once no request is in flight. */
  async idle(): Promise<void> {
    while (this.#inFlight.size > 0) await new Promise((r) => setTimeout(r, 1));
  }

  #drain(): void {
    const batch = this.#opts.batch ?? 32;
    for (let i = 0; i < batch && !this.#stopped; i++) {
      const n = readFd(this.fd, this.#buf);
      if (n >= 0) {
        this.#firstReadAt ??= process.hrtime.bigint();
        this.#dispatch(Buffer.from(this.#buf.subarray(0, n)));
        continue;
      }
      const errno = -n;
      if (errno === EAGAIN) return;
      // ENOENT: the request was interrupted and dropped between readiness and read.
      if (errno === EINTR || errno === ENOENT) continue;
      if (errno === ENODEV) {
        this.#log.info({ event: 'fuse.unmounted' }, 'connection ended (unmounted or aborted)');
        this.stop('unmounted');
        return;
      }
      this.#log.error({ event: 'fuse.read_failed', errno: errnoName(errno) }, 'reading /dev/fuse failed');
      this.stop('error');
      return;
    }
  }

  #write(reply: Buffer, opcode: number): void {
    if (this.#sink) {
      this.#sink(reply);
      return;
    }
    if (this.#opts.debug) this.#log.info({ event: 'fuse.reply' }, describeReply(reply, opcode));
    const n = writeFd(this.fd, reply);
    if (n === reply.length) return;
    const errno = n < 0 ? -n : EIO;
    // ENOENT: the request was interrupted or aborted meanwhile; the kernel no longer wants it.
    if (errno === ENOENT) return;
    if (errno === ENODEV) {
      this.stop('unmounted');
      return;
    }
    this.#log.error({ event: 'fuse.reply_refused', errno: errnoName(errno), reply: describeReply(reply, opcode) }, 'the kernel refused a reply');
  }

  #dispatch(data: Buffer): void {
    const parsed = parseRequest(data, { minor: this.#init?.minor ?? 0, flags: this.#init?.flags ?? 0n });
    if (!parsed.ok) {
      const { error } = parsed;
      this.#log.warn({ event: 'fuse.framing_error', code: error.code, opcode: error.opcode }, error.message);
      if (error.unique !== undefined && error.opcode !== undefined && expectsReply(error.opcode)) {
        this.#write(replyError(error.unique, EIO), error.opcode);
      }
      return;
    }
    const req = parsed.request;
    this.requests++;
    if (this.#opts.debug) this.#log.info({ event: 'fuse.request' }, describeRequest(req));
    const { unique, opcode } = req.header;
    switch (req.op) {
      case 'init':
        this.#handleInit(req);
        return;
      case 'interrupt':
        this.#inFlight.get(req.targetUnique)?.interrupt();
        return;
      case 'unknown':
        if (expectsReply(opcode)) this.#write(replyError(unique, ENOSYS), opcode);
        return;
      case 'destroy':
        this.#write(replyEmpty(unique), opcode);
        this.stop('unmounted');
        return;
      default:
        break;
    }
    const handler = this.#ops[req.op] as ((r: FuseRequest, ctx: RequestContext) => Promise<Buffer | void> | Buffer | void) | undefined;
    const wantsReply = expectsReply(opcode);
    if (!handler) {
      if (wantsReply) this.#write(replyError(unique, ENOSYS), opcode);
      return;
    }
    const ctx = new LazyContext();
    if (wantsReply) this.#inFlight.set(unique, ctx);
    const run = (): Promise<Buffer | void> | Buffer | void => handler.call(this.#ops, req, ctx);
    // Before the handler: a non-idempotent request that will change something (intentNeeded)
    // gets its intent record out first.
    const ticket = this.#replay.begin(req);
    // A resolved replay's record is in the checkpoint already.
    let recorded = ticket.resolve;
    const recordThenRun = async (): Promise<Buffer | void> => {
      if (await intentNeeded(req, this.#ops, ctx)) {
        this.#replay.record(ticket);
        recorded = true;
      }
      return run();
    };
    let result: Promise<Buffer | void> | Buffer | void;
    try {
      result = ticket.resolve ? this.#resolveReplay(req, ctx, run) : ticket.intent ? recordThenRun() : run();
    } catch (err) {
      result = Promise.reject(err);
    }
    if (!wantsReply) {
      Promise.resolve(result).catch((err: unknown) => this.#log.error({ event: 'fuse.handler_failed', op: req.op, err: String(err) }, 'handler failed'));
      return;
    }
    const answer = (reply: Buffer): void => {
      this.#inFlight.delete(unique);
      // Test-only (FUSEKEEPER_FAULT=after-exec:<op>): die with the operation done and unanswered.
      if (!isResend(unique) && !this.#sink) faultPoint(`after-exec:${req.op}`);
      this.#write(reply, opcode);
      if (recorded && ticket.key !== undefined) this.#replay.end(ticket.key);
      if (!this.#firstReplied && this.#firstReadAt !== undefined) {
        this.#firstReplied = true;
        this.#opts.onFirstReply?.(this.#firstReadAt, process.hrtime.bigint(), req.op);
      }
    };
    Promise.resolve(result).then(
      (reply) => {
        if (!reply) this.#log.error({ event: 'fuse.no_reply', op: req.op }, 'handler resolved without a reply');
        answer(reply || replyError(unique, EIO));
      },
      (err: unknown) => {
        const errno = errnoOf(err);
        if (errno === undefined) {
          this.#log.error({ event: 'fuse.handler_failed', op: req.op, err: err instanceof Error ? err.stack : String(err) }, 'handler threw; answering EIO');
        }
        answer(replyError(unique, errno ?? EIO));
      },
    );
  }

  /** A replay whose intent record exists: answered from what the filesystem shows, or run again. */
  async #resolveReplay(req: FuseRequest, ctx: RequestContext, run: () => Promise<Buffer | void> | Buffer | void): Promise<Buffer | void> {
    const reply = await resolveReplay(req, this.#ops, ctx);
    this.#log.info({ event: 'fuse.replay', op: req.op, unique: req.header.unique & ~FUSE_UNIQUE_RESEND, outcome: reply ? 'resolved' : 'run' }, reply ? 'replayed request was already done: answered from the filesystem' : 'replayed request runs again');
    return reply ?? run();
  }

  #handleInit(req: Extract<FuseRequest, { op: 'init' }>): void {
    const { unique, opcode } = req.header;
    const result = negotiateInit(req.init, this.#opts.init);
    if (!result.ok) {
      this.#log.error({ event: 'fuse.init_refused', reason: result.reason }, 'cannot speak the kernel protocol');
      this.#write(replyError(unique, result.errno ?? EPROTO), opcode);
      return;
    }
    if (result.awaitReinit) {
      this.#write(replyInit(unique, result.initOut), opcode);
      return;
    }
    this.#init = {
      minor: result.minor,
      flags: result.flags,
      maxWrite: result.initOut.maxWrite,
      passthrough: result.passthrough,
      initOut: result.initOut,
    };
    // Saved before the reply: once the kernel has the reply it never sends INIT again, so a
    // crash between reply and save would leave the next owner unable to serve. A crash
    // between save and reply leaves INIT unanswered: it is resent, and answered again.
    try {
      this.#opts.link?.saveInit(encodeSessionInit(this.#init));
    } catch (err) {
      this.#log.error({ event: 'fuse.init_not_saved', err: String(err) }, 'INIT settlement not saved; a restarted daemon cannot resume this connection');
    }
    this.#write(replyInit(unique, result.initOut), opcode);
    if (readBufferSize(this.#init.maxWrite) > this.#buf.length) this.#buf = Buffer.allocUnsafeSlow(readBufferSize(this.#init.maxWrite));
    this.#log.info(
      { event: 'fuse.init', protocol: `7.${result.minor}`, passthrough: result.passthrough, resend: (result.flags & InitFlags.HAS_RESEND) !== 0n, maxWrite: this.#init.maxWrite },
      'FUSE connection initialised',
    );
    this.#opts.onInit?.(this.#init);
  }
}

/** A /dev/fuse read buffer for `maxWrite`: the kernel refuses shorter reads with EINVAL. */
export function readBufferSize(maxWrite: number): number {
  return Math.max(8192, FUSE_IN_HEADER_SIZE + FUSE_WRITE_IN_SIZE + maxWrite + 4096);
}
