// Control-protocol fuzzing against a live supervisor (issue 7, item 4). Shared by
// `bench/fuzz.ts` (`npm run fuzz -- --count N --seed S`) and test/kernel/fuzz.test.ts.
//
// runFuzz starts `fusekeeper serve` from the build (bin/fusekeeper.js -> dist/), records the
// fds it holds once idle, then sends exactly `count` generated frames over many concurrent
// connections: valid messages and valid sequences, mutated frames, out-of-order messages,
// random fd attachments, oversized and empty frames, abrupt disconnects. Every frame has an
// expected fate, computed with the reference codec (fuzz-gen.ts predictFrame) and a model of
// the connection and session state: answered (a reply on its requestId), dropped (ERROR EPROTO
// and/or EOF) or, for a one-way message, silently applied (proved by a later answer on the same
// connection). A frame that meets neither fate within its deadline is a hang.
//
// A few conversations own real sessions: the supervisor mounts a FUSE connection on a temp dir
// for them (nobody serves it: the fuzzer answers FUSE_INIT and nothing else). Their owners are
// small helper processes that connect and hand the socket over, so fencing kills a helper, never
// the fuzzer. Those conversations check the state the supervisor hands back on a resumed ACQUIRE
// (INIT parameters, checkpoint, journal) against what was sent, exercise ADOPT, DRAIN,
// standby take-over, busy and duplicate mountpoints, and ACQUIREs nested inside a session's
// mount.
//
// At the end: the supervisor process is alive and logged no fatal or internal error, every
// session is released and nothing stays mounted, and its fd table (targets, runtime-internal
// fds aside) is the baseline again.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, readdirSync, readlinkSync, rmSync, rmdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  closeAll,
  closeFd,
  connectSocket,
  createSocket,
  createSocketPair,
  mknod,
  NativeError,
  O,
  openFd,
  receiveMessage,
  sendMessage,
  watchFd,
  type PollHandle,
} from '../../../native/index.ts';
import { openFuseDevice } from '../../../kernel/device.ts';
import { answerInit, waitReadable } from '../../../kernel/handshake.ts';
import { InitFlags } from '../../../kernel/abi.ts';
import { unmountFuse } from '../../../kernel/mount.ts';
import { abortConnection, connectionId, ensureFusectl } from '../../../kernel/connections.ts';
import {
  AcquireCollector,
  decodeMessage,
  describeMessage,
  encodeMessage,
  MAX_ADOPT_CHUNK,
  MAX_MESSAGE,
  messageType,
  type ControlMessage,
  type MessageName,
  type MountSpec,
} from '../../../protocol/index.ts';
import { readStateFile } from '../../../client/supervisor.ts';
import {
  encodeProper,
  garbageFrame,
  genBackingId,
  genHello,
  genKey,
  genMessage,
  genName,
  genPathBelow,
  genSpec,
  maxSizeFrame,
  mutateFrame,
  MUTATIONS,
  ONE_WAY_TYPES,
  oversizedFrame,
  predictFrame,
  REQUEST_TYPES,
  Rng,
  SUPERVISOR_TYPES,
  type FramePrediction,
  type GenContext,
} from './fuzz-gen.ts';

export interface FuzzOptions {
  /** Frames to send (every frame on every connection counts, health checks do not). */
  count: number;
  seed: number;
  /** Conversations running at once, each on its own connection(s). */
  concurrency?: number;
  /** How long a frame may stay without its answer or drop. */
  deadlineMs?: number;
  /** Conversations that own real sessions (FUSE mounts, helper processes). Default true. */
  sessions?: boolean;
  /** Health check (process alive + STATUS on a fresh connection) period. */
  healthEveryMs?: number;
  /** `fusekeeper status --json` (the CLI, a child process) period. */
  cliStatusEveryMs?: number;
  /** The CLI entry point; default bin/fusekeeper.js of this checkout. */
  cli?: string;
  /** Progress lines (about every 10%). */
  progress?: (line: string) => void;
  /** Keep the temp dir (socket, supervisor log) afterwards. */
  keepTemp?: boolean;
}

export type Outcome =
  | 'answered'
  | 'refused'
  | 'protocol-error'
  | 'dropped'
  | 'silent'
  | 'unverified'
  | 'abandoned'
  | 'standby-cancelled'
  | 'hang';

export interface FuzzReport {
  seed: number;
  count: number;
  concurrency: number;
  deadlineMs: number;
  messagesSent: number;
  byCategory: Record<string, number>;
  byKind: Record<string, number>;
  messagesWithFds: number;
  fdsAttached: number;
  fdsAttachedByKind: Record<string, number>;
  outcomes: Record<Outcome, number>;
  framesReceived: number;
  /** Answers that came after their frame's deadline (counted as hangs already). */
  lateAnswers: number;
  errorsByCode: Record<string, number>;
  connections: number;
  disconnects: { byServer: number; abruptByClient: number; gracefulByClient: number };
  sessions: { created: number; resumed: number; standbyTakeovers: number; drainsOk: number; drainsTimedOut: number; released: number; nestedAcquires: number; aborted: number; helpers: number };
  health: { statusChecks: number; cliChecks: number; failures: string[] };
  durationMs: number;
  msgsPerSec: number;
  supervisor: { pid: number; aliveAtEnd: boolean; exitCode: number | null; exitSignal: string | null; fatalLines: number; internalErrors: number; errorEvents: Record<string, number>; logLines: number };
  fds: { baselineCount: number; finalCount: number; baselineCompared: number; finalCompared: number; leaked: string[]; missing: string[]; settleMs: number };
  leftoverMounts: string[];
  hangs: string[];
  anomalies: Record<string, { count: number; examples: string[] }>;
  fuzzerLeakedFds: string[];
  tempDir: string;
  /** Every violated invariant; empty when the run passed. */
  failures: string[];
}

/**
 * Anomalies that are wrong answers, not just an errno other than docs/protocol.md names: the
 * state handed over on a resumed ACQUIRE, STATUS of a session against what its owner sent,
 * frames the reference codec rejects, fds where none belong, and the fuzzer's own errors.
 */
const SERIOUS_ANOMALIES = [
  'resumed ',
  'ACQUIRED header',
  'broken ACQUIRE state sequence',
  'STATUS of an owned session',
  'session missing from STATUS',
  'malformed frame from the supervisor',
  'fd attached to a reply',
  'ADOPTED counts',
  'standby served while the owner lives',
  'fuzzer error',
  'FUSE_INIT of a fresh session',
  'owner helper',
];

const SESSION_PREFIX = 'fzs-';
const ABSENT_PREFIX = 'nx-';
const MAX_LIVE_SESSIONS = 6;
const INIT_FLAGS = InitFlags.INIT_EXT | InitFlags.PASSTHROUGH;
const RUNTIME_FD = /^anon_inode:\[(eventpoll|eventfd|timerfd|io_uring)\]$/;
const RECV = { maxBytes: MAX_MESSAGE, maxFds: 4 };

// ---------------------------------------------------------------------------------------------
// Small utilities

function inc(map: Record<string, number>, key: string, by = 1): void {
  map[key] = (map[key] ?? 0) + by;
}

function short(s: string, n = 240): string {
  return s.length > n ? `${s.slice(0, n)}...` : s;
}

function describeFrame(p: FramePrediction, frame: Buffer): string {
  if (p.kind === 'valid') return short(describeMessage(p.message, p.requestId), 160);
  return `${frame.length}-byte frame (${p.kind === 'eof' ? 'empty' : p.reason})`;
}

/** fd -> target of a process. */
function fdTable(pid: number | 'self'): Map<number, string> {
  const out = new Map<number, string>();
  let names: string[];
  try {
    names = readdirSync(`/proc/${pid}/fd`);
  } catch {
    return out;
  }
  for (const n of names) {
    try {
      out.set(Number(n), readlinkSync(`/proc/${pid}/fd/${n}`));
    } catch {
      // closed meanwhile
    }
  }
  return out;
}

/** The comparable part of an fd table: sorted targets, runtime-internal fds left out. */
function comparable(table: Map<number, string>): string[] {
  return [...table.values()].filter((t) => !RUNTIME_FD.test(t)).sort();
}

/** Multiset difference a - b. */
function minus(a: string[], b: string[]): string[] {
  const left = new Map<string, number>();
  for (const x of b) left.set(x, (left.get(x) ?? 0) + 1);
  const out: string[] = [];
  for (const x of a) {
    const n = left.get(x) ?? 0;
    if (n > 0) left.set(x, n - 1);
    else out.push(x);
  }
  return out;
}

/** Mount points at or below `dir` in this mount namespace. */
function mountsBelow(dir: string): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[4] ?? '')
    .map((p) => p.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))))
    .filter((p) => p === dir || p.startsWith(`${dir}/`));
}

/** Resolves after `ms` without keeping the process alive (for races). */
function later(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms).unref());
}

class Budget {
  constructor(public left: number) {}
  take(): boolean {
    if (this.left <= 0) return false;
    this.left--;
    return true;
  }
  give(): void {
    this.left++;
  }
}

// ---------------------------------------------------------------------------------------------
// Expectations, steps and connections

interface Expect {
  /** reply: one reply frame on the requestId; acquire: the ACQUIRE state sequence or ERROR;
   *  fatal: ERROR EPROTO (if the supervisor can) and a disconnect; silent: nothing. */
  kind: 'reply' | 'acquire' | 'fatal' | 'silent';
  ok?: readonly MessageName[];
  errors?: readonly string[];
  /** A mismatch is an anomaly; otherwise only a hang counts. */
  strict: boolean;
  /** The connection ends after this frame (fatal, ENOTSUP). */
  closes?: boolean;
  /** An empty frame reads as EOF: no ERROR. */
  eofOnly?: boolean;
  /** The deadline starts with armDeadline() (a standby ACQUIRE waits by design). */
  deferDeadline?: boolean;
  /** Called with the reply (or the completed ACQUIRE collector) on success or refusal. */
  onReply?: (msg: ControlMessage, step: Step) => void;
}

const FATAL: Expect = { kind: 'fatal', strict: true, closes: true };

class Step {
  seq: number;
  sentAt = 0;
  done = false;
  outcome: Outcome | null = null;
  reply: ControlMessage | null = null;
  collector: AcquireCollector | null = null;
  acquireState: Extract<ReturnType<AcquireCollector['push']>, { state: unknown }>['state'] | null = null;
  /** The /dev/fuse fd of ACQUIRED; whoever awaits the step owns it. */
  acquiredFd = -1;
  timer: NodeJS.Timeout | null = null;
  readonly promise: Promise<void>;
  #resolve!: () => void;

  constructor(
    readonly fuzzer: Fuzzer,
    readonly conn: FuzzConn,
    readonly label: string,
    readonly requestId: number,
    readonly expect: Expect,
  ) {
    this.seq = fuzzer.nextSeq++;
    this.promise = new Promise<void>((r) => (this.#resolve = r));
    if (expect.kind === 'acquire') this.collector = new AcquireCollector();
  }

  /**
   * Resolves when the step has its fate; at once for a one-way message (a later answer proves
   * it) and for a standby ACQUIRE that waits by design.
   */
  settled(): Promise<void> {
    if (this.done) return Promise.resolve();
    if (this.expect.kind === 'silent' || (this.expect.deferDeadline && !this.timer)) return Promise.resolve();
    return this.promise;
  }

  armDeadline(): void {
    if (this.done || this.timer) return;
    this.timer = setTimeout(() => this.conn.hang(this), this.fuzzer.deadlineMs);
  }

  finish(outcome: Outcome): void {
    if (this.done) return;
    this.done = true;
    this.outcome = outcome;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.fuzzer.report.outcomes[outcome]++;
    this.#resolve();
  }

  /** A frame on this step's requestId; true when the step is complete. */
  onFrame(msg: ControlMessage, fds: number[]): boolean {
    const e = this.expect;
    if (e.kind === 'acquire' && this.collector) {
      if (msg.type === 'acquired' && fds.length === 1 && this.acquiredFd < 0) this.acquiredFd = fds.shift()!;
      const p = this.collector.push(msg, readStateFile(msg, fds));
      if (!p.done) return false;
      if ('state' in p) {
        this.acquireState = p.state;
        this.reply = p.state.acquired;
        e.onReply?.(p.state.acquired, this);
        this.finish('answered');
      } else if ('refused' in p) {
        this.#judgeError(p.refused);
      } else {
        this.fuzzer.anomaly('broken ACQUIRE state sequence', `${this.label}: ${p.error.message}`);
        this.finish('answered');
      }
      return true;
    }
    if (fds.length > 0) {
      this.fuzzer.anomaly('fd attached to a reply', `${this.label}: ${msg.type} with ${fds.length} fds`);
      closeAll(fds);
    }
    if (msg.type === 'error') {
      this.#judgeError(msg);
      return true;
    }
    this.reply = msg;
    if (e.kind === 'reply' && e.strict && !(e.ok ?? []).includes(msg.type)) {
      this.fuzzer.anomaly(`unexpected reply ${msg.type}`, `${this.label}: expected ${[...(e.ok ?? []), ...(e.errors ?? [])].join('/') || 'a drop'}, got ${short(describeMessage(msg, this.requestId))}`);
    }
    if (e.kind === 'fatal' && e.strict) this.fuzzer.anomaly('malformed frame answered', `${this.label}: got ${msg.type}`);
    e.onReply?.(msg, this);
    this.finish('answered');
    return true;
  }

  #judgeError(msg: Extract<ControlMessage, { type: 'error' }>): void {
    this.reply = msg;
    const e = this.expect;
    if (msg.code === 'EPROTO' && this.conn.fatalSent) {
      this.finish('protocol-error');
      return;
    }
    if (e.strict && !(e.errors ?? []).includes(msg.code)) {
      this.fuzzer.anomaly(`unexpected ERROR ${msg.code}`, `${this.label}: expected ${[...(e.ok ?? []), ...(e.errors ?? [])].join('/') || 'a drop'}, got ${msg.code} "${short(msg.message, 160)}"`);
    }
    e.onReply?.(msg, this);
    this.finish(msg.code === 'EPROTO' ? 'protocol-error' : 'refused');
  }
}

/** What the fuzzer believes about a connection. */
interface ConnModel {
  phase: 'new' | 'ready';
  role: 'daemon' | 'cli' | null;
  session: SessionRec | null;
  /** A standby ACQUIRE of this connection waits. */
  acquiring: boolean;
}

class FuzzConn {
  readonly id: number;
  poll: PollHandle | null;
  closed = false;
  eof = false;
  nextRid = 1;
  readonly pending = new Map<number, Step>();
  silent: Step[] = [];
  fatalSent: Step | null = null;
  /** Frames whose fate the model cannot know exactly were sent: unknown frames are not anomalies. */
  lenient = false;
  sawProtoError = false;
  hung = false;
  /** requestIds of frames that hung: their answers may still come, late. */
  readonly lateRids = new Set<number>();
  onNotify: ((msg: ControlMessage) => void) | null = null;
  readonly model: ConnModel = { phase: 'new', role: null, session: null, acquiring: false };
  readonly #eofWaiters: (() => void)[] = [];

  constructor(
    readonly fuzzer: Fuzzer,
    readonly fd: number,
  ) {
    this.id = fuzzer.report.connections++;
    this.poll = watchFd(fd, { readable: true, disconnect: true }, () => this.#onReadable());
  }

  /** The next requestId: never 0, never one that is outstanding or answered late. */
  rid(): number {
    for (;;) {
      const r = this.nextRid++;
      if (this.nextRid > 0xffffffff) this.nextRid = 1;
      if (!this.pending.has(r) && !this.lateRids.has(r)) return r;
    }
  }

  /** A frame (mutated, say) uses requestId `r`: the counter moves past it. */
  sawRid(r: number): void {
    if (r >= this.nextRid && r < 0xffffffff) this.nextRid = r + 1;
  }

  /** Open, and no frame that ends it was sent. */
  get open(): boolean {
    return !this.closed && !this.eof && !this.fatalSent;
  }

  #onReadable(): void {
    for (let i = 0; i < 256; i++) {
      if (this.closed || this.eof) return;
      let m;
      try {
        m = receiveMessage(this.fd, RECV);
      } catch {
        this.#onEof();
        return;
      }
      if (m.kind === 'again') return;
      if (m.kind === 'eof') {
        this.#onEof();
        return;
      }
      this.#onFrame(m.data, m.fds, m.fds.length + m.extraFdsClosed + (m.controlTruncated ? 1 : 0));
    }
  }

  #onFrame(data: Buffer, fds: number[], fdCount: number): void {
    const f = this.fuzzer;
    f.report.framesReceived++;
    const d = decodeMessage(data, fdCount, { from: 'supervisor' });
    if (!d.ok) {
      f.anomaly('malformed frame from the supervisor', d.error.message);
      closeAll(fds);
      return;
    }
    const { message: msg, requestId } = d;
    if (msg.type === 'error') {
      inc(f.report.errorsByCode, msg.code);
      if (msg.code === 'EPROTO') this.sawProtoError = true;
    }
    if (requestId !== 0) {
      const step = this.pending.get(requestId);
      if (step) {
        this.#verifySilentBefore(step.seq);
        if (step.onFrame(msg, fds)) this.pending.delete(requestId);
        return;
      }
      closeAll(fds);
      if (msg.type === 'error' && msg.code === 'EPROTO' && this.fatalSent) return; // the malformed frame's own requestId
      if (this.lateRids.delete(requestId)) {
        f.report.lateAnswers++;
        return;
      }
      if (!this.lenient) f.anomaly('frame for no outstanding request', short(describeMessage(msg, requestId)));
      return;
    }
    closeAll(fds);
    if (msg.type === 'error') {
      if (msg.code === 'EPROTO' && (this.fatalSent || this.lenient)) return;
      f.anomaly(`unattributed ERROR ${msg.code}`, short(msg.message));
      return;
    }
    if (msg.type === 'drain_request') {
      if (this.onNotify) this.onNotify(msg);
      else if (!this.lenient) f.anomaly('unexpected DRAIN_REQUEST', `conn ${this.id}`);
      return;
    }
    f.anomaly(`unexpected ${msg.type} on requestId 0`, short(describeMessage(msg, 0)));
  }

  #verifySilentBefore(seq: number): void {
    if (this.silent.length === 0) return;
    const keep: Step[] = [];
    for (const s of this.silent) {
      if (s.seq < seq) s.finish('silent');
      else keep.push(s);
    }
    this.silent = keep;
  }

  #onEof(): void {
    if (this.eof || this.closed) return;
    this.eof = true;
    this.poll?.close();
    this.poll = null;
    const f = this.fuzzer;
    f.report.disconnects.byServer++;
    const fatal = this.fatalSent;
    for (const s of this.silent) {
      if (fatal && s.seq < fatal.seq) s.finish('silent');
      else {
        if (!fatal && !this.lenient) f.anomaly('disconnect without a malformed frame', `after one-way ${s.label}`);
        s.finish('dropped');
      }
    }
    this.silent = [];
    for (const s of this.pending.values()) {
      if (s.done) continue;
      if (!fatal && !this.lenient && s.expect.strict) f.anomaly('disconnect without a malformed frame', `pending ${s.label}`);
      if (s.acquiredFd >= 0) {
        closeFd(s.acquiredFd);
        s.acquiredFd = -1;
      }
      s.finish('dropped');
    }
    this.pending.clear();
    if (fatal && !fatal.done) {
      if (fatal.expect.kind === 'fatal' && fatal.expect.strict && !fatal.expect.eofOnly && !this.sawProtoError) {
        f.anomaly('disconnect without ERROR EPROTO', fatal.label);
      }
      fatal.finish(this.sawProtoError ? 'protocol-error' : 'dropped');
    }
    for (const w of this.#eofWaiters.splice(0)) w();
  }

  /** Resolves at EOF (or when this side closed). */
  waitEof(): Promise<void> {
    if (this.eof || this.closed) return Promise.resolve();
    return new Promise((r) => this.#eofWaiters.push(r));
  }

  /** Sends `frame` as `step`; false when it could not be sent (peer gone, budget spent). */
  async send(step: Step, frame: Buffer, fds: number[], category: string, kind: string, counted = true): Promise<boolean> {
    const f = this.fuzzer;
    // After a frame that ends the connection nothing more is sent: the supervisor would drop it
    // unread along with the connection, and it would have no fate of its own.
    if (!this.open || this.fatalSent || (counted && f.stopped)) return false;
    if (counted && !f.budget.take()) return false;
    const giveBack = (): void => {
      if (counted) f.budget.give();
    };
    const deadline = Date.now() + f.deadlineMs;
    for (;;) {
      let n: number | null;
      try {
        n = sendMessage(this.fd, { data: frame, fds });
      } catch (err) {
        giveBack();
        if (err instanceof NativeError && ['EPIPE', 'ECONNRESET', 'ENOTCONN', 'ECONNREFUSED'].includes(err.code)) {
          // The supervisor closed the connection (a frame before this one ended it); the EOF follows.
          if (!this.fatalSent && !this.lenient) f.anomaly('disconnect without a malformed frame', `send of ${step.label}: ${err.code}`);
          return false;
        }
        throw err;
      }
      if (n !== null) break;
      // The supervisor's receive queue is full (net.unix.max_dgram_qlen frames). Retry on a
      // timer: a second poll handle on this fd would unregister the readable one when closed.
      await sleep(1);
      if (!this.open) {
        giveBack();
        return false;
      }
      if (Date.now() > deadline) {
        giveBack();
        this.hang(step, 'the supervisor does not read: its receive queue stayed full');
        return false;
      }
    }
    step.sentAt = Date.now();
    const r = f.report;
    if (counted) {
      r.messagesSent++;
      inc(r.byCategory, category);
      inc(r.byKind, `${category}/${kind}`);
      if (fds.length > 0) {
        r.messagesWithFds++;
        r.fdsAttached += fds.length;
      }
    }
    const e = step.expect;
    if (e.kind === 'silent') this.silent.push(step);
    else if (e.kind === 'reply' || e.kind === 'acquire') {
      if (step.requestId !== 0 && !this.pending.has(step.requestId)) this.pending.set(step.requestId, step);
      else this.lenient = true;
    }
    if (e.closes && !this.fatalSent) this.fatalSent = step;
    if (!e.strict) this.lenient = true;
    if (e.kind !== 'silent' && !e.deferDeadline) step.armDeadline();
    if (counted) f.afterSend();
    if (this.model.session || f.traceAll) f.trace(`send conn=${this.id} ${this.model.session ? `session=${this.model.session.name} ` : ''}seq=${step.seq} ${step.expect.kind} ${step.label}`);
    return true;
  }

  hang(step: Step, why = 'no answer and no disconnect'): void {
    if (step.done) return;
    // Which side is stuck? Peek at the socket: if something is waiting here, the fuzzer's
    // readiness watch failed, not the supervisor.
    if (!this.closed && !this.eof) {
      let peek = 'nothing to read';
      try {
        const m = receiveMessage(this.fd, RECV);
        if (m.kind === 'message') {
          closeAll(m.fds);
          peek = `a ${m.data.length}-byte frame was waiting unread`;
        } else if (m.kind === 'eof') peek = 'EOF was waiting unread';
      } catch (err) {
        peek = `recvmsg: ${(err as Error).message}`;
      }
      why = `${why} (socket: ${peek}; poll ${this.poll ? 'active' : 'closed'})`;
    }
    this.hung = true;
    this.lateRids.add(step.requestId);
    this.fuzzer.onHang(step, why);
    if (step.requestId !== 0 && this.pending.get(step.requestId) === step) this.pending.delete(step.requestId);
    step.finish('hang');
  }

  /** Closes this side. Whatever still waited is abandoned (or, for a waiting standby, cancelled). */
  close(how: 'graceful' | 'abrupt'): void {
    if (this.closed) return;
    const wasOpen = !this.eof;
    this.closed = true;
    this.poll?.close();
    this.poll = null;
    closeFd(this.fd);
    if (wasOpen) {
      if (how === 'abrupt') this.fuzzer.report.disconnects.abruptByClient++;
      else this.fuzzer.report.disconnects.gracefulByClient++;
    }
    for (const s of this.silent) s.finish('unverified');
    this.silent = [];
    for (const s of this.pending.values()) {
      if (s.acquiredFd >= 0) {
        closeFd(s.acquiredFd);
        s.acquiredFd = -1;
      }
      s.finish(s.expect.deferDeadline && !s.timer ? 'standby-cancelled' : 'abandoned');
    }
    this.pending.clear();
    if (this.fatalSent && !this.fatalSent.done) this.fatalSent.finish('abandoned');
    for (const w of this.#eofWaiters.splice(0)) w();
  }
}

// ---------------------------------------------------------------------------------------------
// Sessions and their owner processes

interface Helper {
  pid: number;
  child: ChildProcess;
  ctl: number;
  exited: boolean;
  exit: Promise<void>;
}

interface SessionRec {
  name: string;
  mountpoint: string;
  spec: MountSpec;
  state: 'leased' | 'orphan' | 'dead';
  generation: number;
  init: Buffer | null;
  checkpoint: Map<string, Buffer>;
  journal: Map<number, { dev: bigint; ino: bigint }>;
  inherited: Set<number> | null;
  adopted: Set<number>;
  /** The owner process of the current (or last) owner connection. */
  helper: Helper | null;
  /** The connection that owns it now (the fuzzer's end), if any. */
  ownerConn: FuzzConn | null;
}

/** As docs/protocol.md section 11 counts a session's checkpoint: key + value + 6 per entry. */
function checkpointBytes(s: SessionRec): number {
  let n = 0;
  for (const [k, v] of s.checkpoint) n += 6 + v.length + Buffer.byteLength(k);
  return n;
}

// The owner helper: connects to the control socket, hands the connected socket to the fuzzer
// over fd 3 (so SO_PEERCRED names the helper), and lives until fd 3 closes or it is killed.
const HELPER_CODE = `
const n = await import(process.env.FUZZ_NATIVE);
let s;
for (let i = 0; ; i++) {
  s = n.createSocket('seqpacket');
  try { n.connectSocket(s, process.env.FUZZ_SOCKET); break; }
  catch (err) { n.closeFd(s); if (i > 200) throw err; await new Promise((r) => setTimeout(r, 10)); }
}
n.sendMessage(3, { data: Buffer.from('c'), fds: [s] });
n.closeFd(s);
n.watchFd(3, { readable: true, disconnect: true }, () => {
  const m = n.receiveMessage(3, { maxBytes: 16, maxFds: 0 });
  if (m.kind !== 'again') process.exit(0);
});
`;

// ---------------------------------------------------------------------------------------------
// Fds to attach

interface FdSource {
  kind: string;
  fd: number;
}

function openFdSources(dir: string): { sources: FdSource[]; fuseDevice: number; close(): void } {
  const sources: FdSource[] = [];
  const opened: number[] = [];
  const add = (kind: string, fd: number): number => {
    sources.push({ kind, fd });
    opened.push(fd);
    return fd;
  };
  add('/dev/null', openFd('/dev/null', O.RDWR));
  const fifo = join(dir, 'fifo');
  mknod(fifo, 0o010600, 0);
  add('pipe-read', openFd(fifo, O.RDONLY | O.NONBLOCK));
  add('pipe-write', openFd(fifo, O.WRONLY | O.NONBLOCK));
  writeFileSync(join(dir, 'regular'), 'fusekeeper fuzz\n');
  add('regular-file', openFd(join(dir, 'regular'), O.RDWR));
  add('directory', openFd(dir, O.RDONLY | O.DIRECTORY));
  const [a, b] = createSocketPair('seqpacket');
  add('socket', a);
  opened.push(b);
  const [c, d] = createSocketPair('dgram');
  add('dgram-socket', c);
  opened.push(d);
  const fuseDevice = add('/dev/fuse-unmounted', openFuseDevice());
  return { sources, fuseDevice, close: () => closeAll(opened) };
}

// ---------------------------------------------------------------------------------------------
// The fuzzer

type PlainAction =
  | 'status'
  | 'release'
  | 'drain'
  | 'acquire'
  | 'store'
  | 'adopt'
  | 'pipeline'
  | 'oneway'
  | 'second-hello'
  | 'client-reply'
  | 'bad-request-id'
  | 'mutated'
  | 'fd-attach'
  | 'garbage'
  | 'oversized'
  | 'max-size'
  | 'zero-length'
  | 'abrupt'
  | 'end';

const PLAIN_ACTIONS: readonly (readonly [PlainAction, number])[] = [
  ['status', 9],
  ['release', 7],
  ['drain', 5],
  ['acquire', 9],
  ['store', 6],
  ['adopt', 5],
  ['pipeline', 6],
  ['oneway', 3],
  ['second-hello', 1],
  ['client-reply', 2],
  ['bad-request-id', 2],
  ['mutated', 16],
  ['fd-attach', 6],
  ['garbage', 2],
  ['oversized', 1],
  ['max-size', 1],
  ['zero-length', 1],
  ['abrupt', 2],
  ['end', 3],
];

type SessionAction =
  | 'journal_open'
  | 'journal_close'
  | 'checkpoint_put'
  | 'checkpoint_delete'
  | 'init_save'
  | 'heartbeat'
  | 'drained'
  | 'status'
  | 'adopt'
  | 'acquire-again'
  | 'store-self'
  | 'side-busy'
  | 'side-eexist'
  | 'side-store'
  | 'side-nested'
  | 'drain'
  | 'standby-takeover'
  | 'mutated'
  | 'fd-attach'
  | 'release'
  | 'orphan';

const SESSION_ACTIONS: readonly (readonly [SessionAction, number])[] = [
  ['journal_open', 12],
  ['journal_close', 5],
  ['checkpoint_put', 12],
  ['checkpoint_delete', 4],
  ['init_save', 3],
  ['heartbeat', 3],
  ['drained', 1],
  ['status', 4],
  ['adopt', 4],
  ['acquire-again', 1],
  ['store-self', 1],
  ['side-busy', 1],
  ['side-eexist', 1],
  ['side-store', 1],
  ['side-nested', 1],
  ['drain', 1],
  ['standby-takeover', 1],
  ['mutated', 4],
  ['fd-attach', 1],
  ['release', 1],
  ['orphan', 2],
];

class Fuzzer {
  readonly report: FuzzReport;
  readonly budget: Budget;
  readonly deadlineMs: number;
  nextSeq = 1;
  stopped = false;
  readonly dir: string;
  readonly socket: string;
  readonly gen: GenContext;
  readonly mntRoot: string;
  /** Symlinks into session mounts, for nested ACQUIREs spelled through them. */
  readonly linkRoot: string;
  #nextLink = 1;
  readonly cli: string;
  supervisor: ChildProcess | null = null;
  supervisorPid = 0;
  supervisorExit: { code: number | null; signal: string | null } | null = null;
  logPath: string;
  fdSources: ReturnType<typeof openFdSources> | null = null;
  readonly sessions = new Map<string, SessionRec>();
  readonly helpers = new Set<Helper>();
  readonly openConns = new Set<FuzzConn>();
  /** Fds the fuzzer holds for leased sessions (ACQUIRED). */
  readonly heldFuseFds = new Set<number>();
  #nextSession = 1;
  #progressAt = 0;
  #sessionsOn: boolean;

  constructor(readonly opts: Required<Omit<FuzzOptions, 'progress'>> & Pick<FuzzOptions, 'progress'>) {
    this.budget = new Budget(opts.count);
    this.deadlineMs = opts.deadlineMs;
    this.#sessionsOn = opts.sessions;
    this.dir = mkdtempSync(join(tmpdir(), 'fusekeeper-fuzz-'));
    this.socket = join(this.dir, 'control.sock');
    this.logPath = join(this.dir, 'supervisor.log');
    this.mntRoot = join(this.dir, 'mnt');
    mkdirSync(this.mntRoot);
    this.linkRoot = join(this.dir, 'links');
    mkdirSync(this.linkRoot);
    this.gen = { absentRoot: join(this.dir, 'absent'), absentPrefix: ABSENT_PREFIX };
    this.cli = opts.cli;
    this.report = {
      seed: opts.seed,
      count: opts.count,
      concurrency: opts.concurrency,
      deadlineMs: opts.deadlineMs,
      messagesSent: 0,
      byCategory: {},
      byKind: {},
      messagesWithFds: 0,
      fdsAttached: 0,
      fdsAttachedByKind: {},
      outcomes: { answered: 0, refused: 0, 'protocol-error': 0, dropped: 0, silent: 0, unverified: 0, abandoned: 0, 'standby-cancelled': 0, hang: 0 },
      framesReceived: 0,
      lateAnswers: 0,
      errorsByCode: {},
      connections: 0,
      disconnects: { byServer: 0, abruptByClient: 0, gracefulByClient: 0 },
      sessions: { created: 0, resumed: 0, standbyTakeovers: 0, drainsOk: 0, drainsTimedOut: 0, released: 0, nestedAcquires: 0, aborted: 0, helpers: 0 },
      health: { statusChecks: 0, cliChecks: 0, failures: [] },
      durationMs: 0,
      msgsPerSec: 0,
      supervisor: { pid: 0, aliveAtEnd: false, exitCode: null, exitSignal: null, fatalLines: 0, internalErrors: 0, errorEvents: {}, logLines: 0 },
      fds: { baselineCount: 0, finalCount: 0, baselineCompared: 0, finalCompared: 0, leaked: [], missing: [], settleMs: 0 },
      leftoverMounts: [],
      hangs: [],
      anomalies: {},
      fuzzerLeakedFds: [],
      tempDir: this.dir,
      failures: [],
    };
  }

  /** FUZZ_TRACE=file: one line per frame sent on a session owner's connection, and session events. */
  #trace = process.env.FUZZ_TRACE ? openSync(process.env.FUZZ_TRACE, 'w') : -1;
  readonly traceAll = process.env.FUZZ_TRACE_ALL === '1';
  trace(line: string): void {
    if (this.#trace >= 0) writeFileSync(this.#trace, `${Date.now()} ${line}\n`);
  }

  closeTrace(): void {
    if (this.#trace >= 0) closeSync(this.#trace);
    this.#trace = -1;
  }

  anomaly(type: string, example: string): void {
    this.trace(`ANOMALY ${type}: ${example}`);
    const a = (this.report.anomalies[type] ??= { count: 0, examples: [] });
    a.count++;
    if (a.examples.length < 5) a.examples.push(short(example, 400));
  }

  afterSend(): void {
    const sent = this.report.messagesSent;
    if (this.opts.progress && sent >= this.#progressAt) {
      this.#progressAt = sent + Math.max(1000, Math.floor(this.opts.count / 10));
      if (sent > 0) this.opts.progress(`fuzz: ${sent}/${this.opts.count} frames, ${this.report.connections} connections, ${this.report.hangs.length} hangs`);
    }
  }

  /**
   * A frame met no fate in time. The supervisor may be stuck in the kernel on one of the
   * fuzzer's FUSE mounts (nobody serves them): abort them all so it can go on, and count it.
   */
  onHang(step: Step, why: string): void {
    this.report.hangs.push(short(`conn ${step.conn.id}: ${why} within ${this.deadlineMs} ms: ${step.label}`, 500));
    for (const s of this.sessions.values()) {
      if (s.state === 'dead') continue;
      const id = connectionId(s.mountpoint);
      if (id === undefined) continue;
      try {
        ensureFusectl();
        abortConnection(id);
        s.state = 'dead';
        this.report.sessions.aborted++;
      } catch {
        // already gone
      }
    }
  }

  // ------------------------------------------------------------------------------------------
  // Supervisor process

  async startSupervisor(): Promise<void> {
    const config = join(this.dir, 'config.json');
    writeFileSync(
      config,
      JSON.stringify({ socket: this.socket, drainTimeoutMs: 500, fenceTimeoutMs: 3000, adoptTimeoutMs: 600_000, heartbeatTimeoutMs: 600_000 }),
    );
    const log = openSync(this.logPath, 'w');
    const child = spawn(process.execPath, [this.cli, 'serve', '--socket', this.socket, '--config', config], {
      stdio: ['ignore', log, log],
      env: { ...process.env, FUSEKEEPER_LOG_LEVEL: 'info' },
    });
    closeSync(log);
    this.supervisor = child;
    this.supervisorPid = child.pid ?? 0;
    this.report.supervisor.pid = this.supervisorPid;
    child.on('exit', (code, signal) => {
      this.supervisorExit = { code, signal };
      this.stopped = true;
    });
    const until = Date.now() + 30_000;
    while (Date.now() < until) {
      if (this.supervisorExit) throw new Error(`the supervisor exited at start (${JSON.stringify(this.supervisorExit)}): ${this.#logTail()}`);
      if (existsSync(this.socket) && (await this.statusCheck()) === null) return;
      await sleep(50);
    }
    throw new Error(`the supervisor did not answer STATUS on ${this.socket} within 30 s: ${this.#logTail()}`);
  }

  #logTail(): string {
    try {
      return readFileSync(this.logPath, 'utf8').split('\n').slice(-20).join('\n');
    } catch {
      return '(no log)';
    }
  }

  supervisorAlive(): boolean {
    if (this.supervisorExit || this.supervisorPid === 0) return false;
    try {
      process.kill(this.supervisorPid, 0);
      return true;
    } catch {
      return false;
    }
  }

  /** The supervisor's fd table, comparable part, once it did not change for 200 ms. */
  async settledFds(maxMs: number, want?: string[]): Promise<{ table: Map<number, string>; compared: string[]; ms: number }> {
    const started = Date.now();
    let prev = comparable(fdTable(this.supervisorPid));
    for (;;) {
      await sleep(200);
      const table = fdTable(this.supervisorPid);
      const now = comparable(table);
      const same = now.length === prev.length && now.every((x, i) => x === prev[i]);
      const atWant = want !== undefined && minus(now, want).length === 0 && minus(want, now).length === 0;
      if ((same && (want === undefined || atWant)) || Date.now() - started > maxMs) return { table, compared: now, ms: Date.now() - started };
      prev = now;
    }
  }

  /** STATUS on a fresh cli connection, outside the budget; null when fine, else why not. */
  async statusCheck(): Promise<string | null> {
    let fd: number;
    try {
      fd = createSocket('seqpacket');
    } catch (err) {
      return (err as Error).message;
    }
    try {
      connectSocket(fd, this.socket);
    } catch (err) {
      closeFd(fd);
      return `connect: ${(err as Error).message}`;
    }
    try {
      const hello = encodeMessage({ type: 'hello', minVersion: 1, maxVersion: 1, role: 'cli', clientName: 'fuzz health' }, 1);
      const status = encodeMessage({ type: 'status' }, 2);
      sendMessage(fd, { data: hello, fds: [] });
      sendMessage(fd, { data: status, fds: [] });
      const until = Date.now() + this.deadlineMs;
      let got = 0;
      while (got < 2) {
        if (!(await waitReadable(fd, Math.max(1, until - Date.now())))) return `no STATUS_REPLY within ${this.deadlineMs} ms`;
        const m = receiveMessage(fd, RECV);
        if (m.kind === 'again') continue;
        if (m.kind === 'eof') return 'disconnected';
        closeAll(m.fds);
        const d = decodeMessage(m.data, m.fds.length, { from: 'supervisor' });
        if (!d.ok) return `bad frame: ${d.error.message}`;
        if (d.message.type === 'error') return `ERROR ${d.message.code}: ${d.message.message}`;
        got++;
        if (d.message.type === 'status_reply') {
          this.lastStatus = JSON.parse(d.message.json) as StatusJson;
          return null;
        }
      }
      return 'no STATUS_REPLY';
    } catch (err) {
      return (err as Error).message;
    } finally {
      closeFd(fd);
    }
  }

  lastStatus: StatusJson | null = null;

  /** `fusekeeper status --json` through the CLI; null when fine. */
  cliStatus(): Promise<string | null> {
    return new Promise((resolve) => {
      const child = spawn(process.execPath, [this.cli, 'status', '--json', '--socket', this.socket], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      let err = '';
      child.stdout.on('data', (b: Buffer) => (out += b.toString()));
      child.stderr.on('data', (b: Buffer) => (err += b.toString()));
      const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
      child.on('exit', (code) => {
        clearTimeout(timer);
        if (code !== 0) return resolve(`fusekeeper status exited ${code}: ${short(err)}`);
        try {
          const st = JSON.parse(out) as StatusJson;
          resolve(Array.isArray(st.sessions) ? null : 'no sessions array');
        } catch (e) {
          resolve(`not JSON: ${(e as Error).message}`);
        }
      });
    });
  }

  async healthLoop(): Promise<void> {
    let lastCli = Date.now();
    while (!this.stopped && this.budget.left > 0) {
      await sleep(this.opts.healthEveryMs);
      if (this.stopped || this.budget.left <= 0) break;
      if (!this.supervisorAlive()) {
        this.report.health.failures.push(`supervisor not alive after ${this.report.messagesSent} frames`);
        this.stopped = true;
        return;
      }
      this.report.health.statusChecks++;
      const why = await this.statusCheck();
      if (why) this.report.health.failures.push(`STATUS after ${this.report.messagesSent} frames: ${why}`);
      if (Date.now() - lastCli >= this.opts.cliStatusEveryMs) {
        lastCli = Date.now();
        this.report.health.cliChecks++;
        const e = await this.cliStatus();
        if (e) this.report.health.failures.push(`fusekeeper status after ${this.report.messagesSent} frames: ${e}`);
      }
    }
  }

  // ------------------------------------------------------------------------------------------
  // Connections

  async connect(): Promise<FuzzConn> {
    for (let i = 0; ; i++) {
      const fd = createSocket('seqpacket');
      try {
        connectSocket(fd, this.socket);
        const c = new FuzzConn(this, fd);
        this.openConns.add(c);
        return c;
      } catch (err) {
        closeFd(fd);
        if (!(err instanceof NativeError && err.code === 'EAGAIN') || i > 500) throw err;
        await sleep(5);
      }
    }
  }

  done(c: FuzzConn, how: 'graceful' | 'abrupt' = 'graceful'): void {
    c.close(how);
    this.openConns.delete(c);
  }

  async spawnHelper(): Promise<{ helper: Helper; conn: FuzzConn } | null> {
    const native = new URL('../../../dist/native/index.js', import.meta.url);
    const [ours, theirs] = createSocketPair('seqpacket');
    const child = spawn(process.execPath, ['--input-type=module', '-e', HELPER_CODE], {
      stdio: ['ignore', 'ignore', 'inherit', theirs],
      env: { ...process.env, FUZZ_NATIVE: native.href, FUZZ_SOCKET: this.socket },
    });
    closeFd(theirs);
    let resolveExit!: () => void;
    const helper: Helper = { pid: child.pid ?? 0, child, ctl: ours, exited: false, exit: new Promise<void>((r) => (resolveExit = r)) };
    child.on('exit', () => {
      helper.exited = true;
      resolveExit();
    });
    this.helpers.add(helper);
    this.report.sessions.helpers++;
    if (!(await waitReadable(ours, 15_000))) {
      this.anomaly('owner helper did not start', `pid ${helper.pid}`);
      this.killHelper(helper);
      return null;
    }
    const m = receiveMessage(ours, { maxBytes: 16, maxFds: 1 });
    if (m.kind !== 'message' || m.fds.length !== 1) {
      if (m.kind === 'message') closeAll(m.fds);
      this.anomaly('owner helper sent no socket', `pid ${helper.pid}`);
      this.killHelper(helper);
      return null;
    }
    const conn = new FuzzConn(this, m.fds[0]!);
    this.openConns.add(conn);
    return { helper, conn };
  }

  killHelper(h: Helper): void {
    if (!h.exited) h.child.kill('SIGKILL');
    if (h.ctl >= 0) {
      closeFd(h.ctl);
      h.ctl = -1;
    }
  }

  // ------------------------------------------------------------------------------------------
  // Sending with expectations

  /** Sends a frame judged by prediction + model; returns the step (or null when not sent). */
  async frame(c: FuzzConn, frame: Buffer, fds: number[], category: string, kind: string, expect?: Expect, label?: string): Promise<Step | null> {
    const p = predictFrame(frame, fds.length);
    let e = expect ?? this.judge(c, p, category === 'valid');
    const rid = p.kind === 'valid' ? p.requestId : 0;
    if (rid !== 0) {
      c.sawRid(rid);
      if ((e.kind === 'reply' || e.kind === 'acquire') && (c.pending.has(rid) || c.lateRids.has(rid))) {
        // Its answer cannot be told from the outstanding one's: a later answer proves it was read.
        e = { kind: 'silent', strict: false };
      }
    }
    const step = new Step(this, c, `${label ?? kind}: ${describeFrame(p, frame)}`, e.kind === 'reply' || e.kind === 'acquire' ? rid : 0, e);
    const sent = await c.send(step, frame, fds, category, kind);
    if (!sent) return null;
    if (p.kind === 'valid') this.applySent(c, p.message, step);
    return step;
  }

  /** Sends a valid message with a proper requestId. */
  async msg(c: FuzzConn, msg: ControlMessage, expect?: Expect, fds: number[] = [], kind?: string): Promise<Step | null> {
    const { frame } = encodeProper(msg, c.rid());
    return this.frame(c, frame, fds, 'valid', kind ?? messageType(msg.type).label, expect);
  }

  /**
   * Model updates for a frame the supervisor will process (one-way messages of an owner are
   * applied in order as they are sent).
   */
  applySent(c: FuzzConn, m: ControlMessage, step: Step): void {
    if (c.fatalSent !== null || step.expect.closes) return;
    if (m.type === 'release' && c.model.phase === 'ready') {
      const t = this.sessions.get(m.name);
      if (t?.ownerConn) {
        t.ownerConn.model.session = null;
        // Released from another connection: the owner's one-way frames already sent may reach
        // the supervisor after the RELEASE. Each is then a protocol error (bad sequence, no
        // session), and the supervisor disconnects the owner.
        if (t.ownerConn !== c) t.ownerConn.lenient = true;
      }
      return;
    }
    const s = c.model.session;
    if (!s) return;
    switch (m.type) {
      case 'init_save':
        s.init = m.params;
        break;
      case 'journal_open':
        s.journal.set(m.id, { dev: m.dev, ino: m.ino });
        break;
      case 'journal_close':
        s.journal.delete(m.id);
        s.inherited?.delete(m.id);
        break;
      case 'checkpoint_put':
        s.checkpoint.set(m.key, m.value);
        break;
      case 'checkpoint_delete':
        s.checkpoint.delete(m.key);
        break;
      case 'adopt': {
        const inherited = s.inherited;
        if (!inherited || !m.ids.every((id) => inherited.has(id))) break;
        for (const id of m.ids) s.adopted.add(id);
        if (m.more) break;
        for (const id of inherited) if (!s.adopted.has(id)) s.journal.delete(id);
        s.inherited = null;
        s.adopted = new Set();
        break;
      }
      default:
    }
  }

  /**
   * Is `name` certainly not a session? Sessions are only created with SESSION_PREFIX names on
   * directories below mntRoot; every other ACQUIRE names a path below absentRoot (mutations
   * keep a string's length, so they do not reach an existing directory).
   */
  #absentName(name: string): boolean {
    return name.startsWith(ABSENT_PREFIX) || (!name.startsWith(SESSION_PREFIX) && !this.sessions.has(name));
  }

  #absentPath(p: string): boolean {
    return p.startsWith(`${this.gen.absentRoot}/`);
  }

  /** The expected fate of a frame on `c`, from its prediction and the connection model. */
  judge(c: FuzzConn, p: FramePrediction, strict: boolean): Expect {
    if (p.kind === 'eof') return { kind: 'fatal', strict: true, closes: true, eofOnly: true };
    if (p.kind === 'malformed') return FATAL;
    const m = p.message;
    const mod = c.model;
    if (mod.phase === 'new') {
      if (m.type !== 'hello') return FATAL;
      if (m.minVersion > 1 || m.maxVersion < 1) return { kind: 'reply', errors: ['ENOTSUP'], strict: true, closes: true };
      return {
        kind: 'reply',
        ok: ['hello_ok'],
        strict: true,
        onReply: (r) => {
          if (r.type !== 'hello_ok') return;
          mod.phase = 'ready';
          mod.role = m.role;
        },
      };
    }
    const s = mod.session;
    const daemon = mod.role === 'daemon';
    switch (m.type) {
      case 'hello':
        return FATAL;
      case 'status':
        return { kind: 'reply', ok: ['status_reply'], strict: true };
      case 'release':
        if (this.#absentName(m.name)) return { kind: 'reply', errors: ['ENOENT'], strict: true };
        return { kind: 'reply', ok: ['ok'], errors: ['ENOENT'], strict, onReply: (r) => r.type === 'ok' && this.#releasedByName(m.name) };
      case 'drain':
        if (this.#absentName(m.name)) return { kind: 'reply', errors: ['ENOENT'], strict: true };
        return { kind: 'reply', ok: ['ok'], errors: ['ENOENT', 'EBUSY', 'ETIMEDOUT'], strict: false };
      case 'acquire':
        if (!daemon) return { kind: 'reply', errors: ['EPERM'], strict: true };
        if (s || mod.acquiring) return { kind: 'reply', errors: ['EBUSY'], strict: true };
        if (this.#absentName(m.name) && this.#absentPath(m.mount.mountpoint)) return { kind: 'reply', errors: ['EINVAL'], strict: true };
        return { kind: 'acquire', errors: ['EINVAL', 'EBUSY', 'EEXIST', 'EAGAIN', 'EIO', 'ENOENT'], strict: false, deferDeadline: m.standby && !this.#absentName(m.name) };
      case 'store':
        if (!daemon) return { kind: 'reply', errors: ['EPERM'], strict: true };
        if (s || mod.acquiring) return { kind: 'reply', errors: ['EBUSY'], strict: true };
        if (this.#absentName(m.name) && this.#absentPath(m.mount.mountpoint)) return { kind: 'reply', errors: ['EBADF'], strict: true };
        return { kind: 'reply', ok: ['stored'], errors: ['EBADF', 'EEXIST'], strict };
      case 'adopt': {
        if (!daemon) return { kind: 'reply', errors: ['EPERM'], strict: true };
        if (!s || !s.inherited) return { kind: 'reply', errors: ['EINVAL'], strict: true };
        const inherited = s.inherited;
        if (!m.ids.every((id) => inherited.has(id))) return { kind: 'reply', errors: ['EINVAL'], strict: true };
        if (m.more) return { kind: 'reply', ok: ['ok'], strict: true };
        // ADOPTED.closed counts the journaled ids nobody adopted (docs/protocol.md), whether or
        // not the kernel knows them; the fuzz owners journal made-up ids and open none, so
        // nothing is ever found by probing.
        const adopting = new Set(m.ids);
        const unadopted = [...inherited].filter((id) => !s.adopted.has(id) && !adopting.has(id) && s.journal.has(id)).length;
        return {
          kind: 'reply',
          ok: ['adopted'],
          strict: true,
          onReply: (r) => {
            if (r.type === 'adopted' && (r.closed !== unadopted || r.probed !== 0)) this.anomaly('ADOPTED counts', `closed ${r.closed} probed ${r.probed}, expected closed ${unadopted} probed 0`);
          },
        };
      }
      default:
        break;
    }
    // One-way messages (replies and notifications never decode with from: 'client').
    if (!s) return FATAL;
    if ((m.type === 'checkpoint_put' || m.type === 'checkpoint_delete') && m.ack) return { kind: 'reply', ok: ['ok'], strict: true };
    return { kind: 'silent', strict: true };
  }

  #releasedByName(name: string): void {
    const s = this.sessions.get(name);
    if (!s) return;
    this.sessions.delete(name);
    this.report.sessions.released++;
  }

  /** 0..5 fds from the sources (and sometimes a session's mounted /dev/fuse fd). */
  pickFds(r: Rng, n: number, extra: FdSource[] = []): number[] {
    const all = [...this.fdSources!.sources, ...extra];
    const out: number[] = [];
    for (let i = 0; i < n; i++) {
      const s = r.pick(all);
      inc(this.report.fdsAttachedByKind, s.kind);
      out.push(s.fd);
    }
    return out;
  }

  // ------------------------------------------------------------------------------------------
  // Generated frames

  /** A message of a random client type, encoded with a proper requestId. */
  #anyClientFrame(r: Rng, c: FuzzConn, types: readonly MessageName[] = [...REQUEST_TYPES, ...ONE_WAY_TYPES]): Buffer {
    const m = genMessage(r, r.pick(types), this.gen);
    return encodeProper(m, c.rid()).frame;
  }

  async #mutated(r: Rng, c: FuzzConn, base?: Buffer): Promise<Step | null> {
    const types: readonly MessageName[] = r.chance(0.1) ? SUPERVISOR_TYPES : [...REQUEST_TYPES, ...ONE_WAY_TYPES];
    const frame = base ?? this.#anyClientFrame(r, c, types);
    const kind = r.pick(MUTATIONS);
    const data = mutateFrame(r, frame, kind);
    return this.frame(c, data, [], 'mutated', kind);
  }

  async #fdAttach(r: Rng, c: FuzzConn, extra: FdSource[] = []): Promise<Step | null> {
    const n = r.range(1, 5);
    let frame: Buffer;
    let kind: string;
    if (r.chance(0.25)) {
      // STORE with the wrong number of fds, or with exactly one of the wrong kind.
      frame = encodeProper(genMessage(r, 'store', this.gen), c.rid()).frame;
      kind = `STORE+${n}fd`;
    } else if (r.chance(0.2)) {
      frame = mutateFrame(r, this.#anyClientFrame(r, c));
      kind = `mutated+${n}fd`;
    } else {
      const m = genMessage(r, r.pick([...REQUEST_TYPES, ...ONE_WAY_TYPES]), this.gen);
      frame = encodeProper(m, c.rid()).frame;
      kind = `${messageType(m.type).label}+${n}fd`;
    }
    return this.frame(c, frame, this.pickFds(r, n, extra), 'fd-attach', kind);
  }

  /** Out-of-order requestIds: a request (or acked checkpoint message) with 0, a one-way with one. */
  #badRequestId(r: Rng, c: FuzzConn): Buffer {
    const { frame, requestId } = encodeProper(genMessage(r, r.pick([...REQUEST_TYPES, ...ONE_WAY_TYPES]), this.gen), c.rid());
    frame.writeUInt32LE(requestId === 0 ? c.rid() : 0, 8);
    return frame;
  }

  // ------------------------------------------------------------------------------------------
  // Conversations

  async worker(seed: number, counter: { next: number }): Promise<void> {
    while (!this.stopped && this.budget.left > 0) {
      const idx = counter.next++;
      const r = new Rng(seed, idx + 1);
      const kind = r.weighted<'garbage-first' | 'cli' | 'daemon' | 'session'>([
        ['garbage-first', 10],
        ['cli', 30],
        ['daemon', 50],
        ['session', this.#sessionsOn ? 4 : 0],
      ]);
      try {
        if (kind === 'session') await this.sessionConversation(r);
        else await this.plainConversation(r, kind);
      } catch (err) {
        this.anomaly('fuzzer error', err instanceof Error ? (err.stack ?? err.message) : String(err));
      }
    }
  }

  async plainConversation(r: Rng, kind: 'garbage-first' | 'cli' | 'daemon'): Promise<void> {
    const c = await this.connect();
    try {
      if (kind === 'garbage-first') {
        await this.#firstNotHello(r, c);
        return;
      }
      if (!(await this.#hello(r, c, kind))) return;
      while (c.open && !this.stopped && this.budget.left > 0) {
        const action = r.weighted(PLAIN_ACTIONS);
        if (!(await this.#plainAction(r, c, action))) break;
      }
      await this.#settle(c);
    } finally {
      this.done(c);
    }
  }

  /** Waits for every outstanding answer (or the drop) of `c`. */
  async #settle(c: FuzzConn): Promise<void> {
    const waits = [...c.pending.values()].map((s) => s.settled());
    if (c.fatalSent && !c.fatalSent.done) waits.push(c.fatalSent.promise);
    await Promise.all(waits);
  }

  async #firstNotHello(r: Rng, c: FuzzConn): Promise<void> {
    const what = r.weighted<string>([
      ['request', 4],
      ['one-way', 2],
      ['reply', 1],
      ['mutated-hello', 4],
      ['garbage', 2],
      ['zero-length', 1],
      ['oversized', 1],
      ['fds', 1],
    ]);
    let step: Step | null;
    switch (what) {
      case 'request':
        step = await this.frame(c, encodeProper(genMessage(r, r.pick(REQUEST_TYPES.filter((t) => t !== 'hello')), this.gen), c.rid()).frame, [], 'out-of-order', 'before-hello');
        break;
      case 'one-way':
        step = await this.frame(c, encodeProper(genMessage(r, r.pick(ONE_WAY_TYPES), this.gen), c.rid()).frame, [], 'out-of-order', 'before-hello');
        break;
      case 'reply':
        step = await this.frame(c, encodeProper(genMessage(r, r.pick(SUPERVISOR_TYPES), this.gen), c.rid()).frame, [], 'out-of-order', 'client-sends-reply');
        break;
      case 'mutated-hello':
        step = await this.#mutated(r, c, encodeMessage(genHello(r), c.rid()));
        break;
      case 'garbage':
        step = await this.frame(c, garbageFrame(r), [], 'garbage', 'random-bytes');
        break;
      case 'zero-length':
        step = await this.frame(c, Buffer.alloc(0), r.chance(0.3) ? this.pickFds(r, r.range(1, 3)) : [], 'zero-length', 'empty');
        break;
      case 'oversized':
        step = await this.frame(c, oversizedFrame(r, encodeMessage(genHello(r), c.rid())), [], 'oversized', 'over-64KiB');
        break;
      default:
        step = await this.frame(c, encodeMessage(genHello(r), c.rid()), this.pickFds(r, r.range(1, 5)), 'fd-attach', 'HELLO+fds');
    }
    if (!step) return;
    if (c.model.phase === 'new' && step.expect.kind === 'reply' && !step.expect.closes) {
      // A mutation that still is a valid HELLO: carry on briefly as that role.
      await step.promise;
      if (c.open && (c.model.phase as ConnModel['phase']) === 'ready') {
        for (let i = 0; i < 3 && c.open; i++) if (!(await this.#plainAction(r, c, r.weighted(PLAIN_ACTIONS)))) break;
      }
    }
    await this.#settle(c);
  }

  /** HELLO (sometimes incompatible, sometimes mutated); true when the connection is ready. */
  async #hello(r: Rng, c: FuzzConn, role: 'daemon' | 'cli'): Promise<boolean> {
    const x = r.float();
    let step: Step | null;
    if (x < 0.04) step = await this.msg(c, genHello(r, role, true), undefined, [], 'HELLO-incompatible');
    else if (x < 0.08) step = await this.#mutated(r, c, encodeMessage(genHello(r, role), c.rid()));
    else step = await this.msg(c, genHello(r, role));
    if (!step) return false;
    await step.promise;
    if (c.model.phase !== 'ready') await this.#settle(c);
    return c.open && c.model.phase === 'ready';
  }

  /** One action of a cli or daemon connection that owns no session; false ends the conversation. */
  async #plainAction(r: Rng, c: FuzzConn, action: PlainAction): Promise<boolean> {
    const wait = async (s: Step | null): Promise<boolean> => {
      if (!s) return false;
      if (s.expect.closes || r.chance(0.7)) await s.settled();
      return c.open;
    };
    switch (action) {
      case 'status':
      case 'release':
      case 'drain':
      case 'acquire':
      case 'adopt':
        return wait(await this.msg(c, genMessage(r, action, this.gen)));
      case 'store': {
        const m = genMessage(r, 'store', this.gen);
        return wait(await this.msg(c, m, undefined, this.pickFds(r, 1)));
      }
      case 'pipeline': {
        const n = r.range(2, 8);
        const steps: Step[] = [];
        for (let i = 0; i < n; i++) {
          const t = r.pick(['status', 'release', 'drain', 'acquire', 'adopt', 'store'] as const);
          const s = await this.msg(c, genMessage(r, t, this.gen), undefined, t === 'store' ? this.pickFds(r, 1) : []);
          if (!s) break;
          steps.push(s);
        }
        if (r.chance(0.15)) {
          // A malformed frame right behind the pipeline: its replies may be dropped with it.
          await this.#mutated(r, c);
        }
        await Promise.all(steps.map((s) => s.settled()));
        return c.open;
      }
      case 'oneway':
        return wait(await this.msg(c, genMessage(r, r.pick(ONE_WAY_TYPES), this.gen)));
      case 'second-hello':
        return wait(await this.frame(c, encodeMessage(genHello(r), c.rid()), [], 'out-of-order', 'second-hello'));
      case 'client-reply':
        return wait(await this.frame(c, encodeProper(genMessage(r, r.pick(SUPERVISOR_TYPES), this.gen), c.rid()).frame, [], 'out-of-order', 'client-sends-reply'));
      case 'bad-request-id':
        return wait(await this.frame(c, this.#badRequestId(r, c), [], 'out-of-order', 'bad-request-id'));
      case 'mutated':
        return wait(await this.#mutated(r, c));
      case 'fd-attach':
        return wait(await this.#fdAttach(r, c));
      case 'garbage':
        return wait(await this.frame(c, garbageFrame(r), [], 'garbage', 'random-bytes'));
      case 'oversized':
        return wait(await this.frame(c, oversizedFrame(r, r.chance(0.5) ? this.#anyClientFrame(r, c) : undefined), [], 'oversized', 'over-64KiB'));
      case 'max-size':
        return wait(await this.frame(c, maxSizeFrame(r), [], 'max-size', 'exactly-64KiB'));
      case 'zero-length':
        return wait(await this.frame(c, Buffer.alloc(0), r.chance(0.3) ? this.pickFds(r, r.range(1, 3)) : [], 'zero-length', 'empty'));
      case 'abrupt': {
        // A request, then gone before its answer.
        if (r.chance(0.7)) await this.msg(c, genMessage(r, r.pick(['status', 'release', 'acquire', 'drain'] as const), this.gen));
        this.done(c, 'abrupt');
        return false;
      }
      case 'end':
        return false;
    }
  }

  // ------------------------------------------------------------------------------------------
  // Session conversations

  #newSessionRec(r: Rng): SessionRec {
    const n = this.#nextSession++;
    const mountpoint = join(this.mntRoot, `s${n}`);
    mkdirSync(mountpoint);
    const spec: MountSpec = {
      mountpoint,
      fsName: 'fusekeeper-fuzz',
      subtype: 'fuzz',
      rootMode: 0o40755,
      uid: 0,
      gid: 0,
      allowOther: r.chance(0.3),
      defaultPermissions: r.chance(0.3),
      readOnly: false,
      maxRead: 0,
    };
    return { name: `${SESSION_PREFIX}${n}`, mountpoint, spec, state: 'leased', generation: 0, init: null, checkpoint: new Map(), journal: new Map(), inherited: null, adopted: new Set(), helper: null, ownerConn: null };
  }

  /** Expectation of an ACQUIRE of `s` by its next owner, checking the handed-over state. */
  #acquireExpect(s: SessionRec, fresh: boolean, standby: boolean): Expect {
    return {
      kind: 'acquire',
      errors: [],
      strict: true,
      deferDeadline: standby && !fresh,
      onReply: (msg, step) => {
        const st = step.acquireState;
        if (msg.type !== 'acquired' || !st) return;
        const a = st.acquired;
        const want = fresh ? 1 : s.generation + 1;
        if (a.resumed === fresh || a.generation !== want) this.anomaly('ACQUIRED header', `${s.name}: resumed=${a.resumed} generation=${a.generation}, expected resumed=${!fresh} generation=${want}`);
        if (fresh) return;
        const same = (x: Buffer | null, y: Buffer | null): boolean => (x === null ? y === null : y !== null && x.equals(y));
        if (!same(st.initParams, s.init)) this.anomaly('resumed INIT_PARAMS', `${s.name}: got ${st.initParams?.length ?? 'none'} bytes, expected ${s.init?.length ?? 'none'}`);
        const ck = [...st.checkpoint].map(([k, v]) => `${k}=${v.toString('hex')}`).sort();
        const want2 = [...s.checkpoint].map(([k, v]) => `${k}=${v.toString('hex')}`).sort();
        if (ck.join('\n') !== want2.join('\n')) this.anomaly('resumed checkpoint', `${s.name}: got ${ck.length} keys, expected ${want2.length} (${minus(ck, want2).length} unexpected, ${minus(want2, ck).length} missing)`);
        const jr = st.journal.map((e) => `${e.id}:${e.dev}:${e.ino}`).sort();
        const wantJ = a.strategy === 'close-all' ? [] : [...s.journal].map(([id, e]) => `${id}:${e.dev}:${e.ino}`).sort();
        if (jr.join(',') !== wantJ.join(',')) this.anomaly('resumed journal', `${s.name}: got ${jr.length} entries, expected ${wantJ.length} (${minus(jr, wantJ).length} unexpected, ${minus(wantJ, jr).length} missing)`);
      },
    };
  }

  /** Applies a successful hand-over to the model. */
  #handedOver(s: SessionRec, step: Step, fresh: boolean): number {
    const st = step.acquireState!;
    s.generation = st.acquired.generation;
    if (!fresh && st.acquired.strategy === 'close-all') s.journal.clear();
    s.inherited = !fresh && st.acquired.strategy === 'journal' ? new Set(s.journal.keys()) : null;
    s.adopted = new Set();
    const fd = step.acquiredFd;
    step.acquiredFd = -1;
    if (fd >= 0) this.heldFuseFds.add(fd);
    if (fresh) this.report.sessions.created++;
    else this.report.sessions.resumed++;
    return fd;
  }

  #releaseFuseFd(fd: number): void {
    if (fd >= 0 && this.heldFuseFds.delete(fd)) closeFd(fd);
  }

  async sessionConversation(r: Rng): Promise<void> {
    const orphans = [...this.sessions.values()].filter((s) => s.state === 'orphan');
    const live = [...this.sessions.values()].filter((s) => s.state !== 'dead').length;
    let s: SessionRec;
    let fresh: boolean;
    if (orphans.length > 0 && (r.chance(0.7) || live >= MAX_LIVE_SESSIONS)) {
      s = r.pick(orphans);
      s.state = 'leased';
      fresh = false;
    } else if (live < MAX_LIVE_SESSIONS) {
      s = this.#newSessionRec(r);
      this.sessions.set(s.name, s);
      fresh = true;
    } else {
      await this.plainConversation(r, 'daemon');
      return;
    }
    const got = await this.spawnHelper();
    if (!got) {
      if (fresh) this.sessions.delete(s.name);
      else s.state = 'orphan';
      return;
    }
    let owner = got.conn;
    let helper = got.helper;
    let fuseFd = -1;
    const side: FuzzConn[] = [];
    let ended = false;
    try {
      if (!(await this.#hello(r, owner, 'daemon')) || owner.model.role !== 'daemon') return;
      const standby = !fresh || r.chance(0.3);
      const acq = await this.msg(owner, { type: 'acquire', name: s.name, mount: s.spec, standby }, this.#acquireExpect(s, fresh, standby));
      if (!acq) return;
      acq.armDeadline();
      await acq.promise;
      if (acq.outcome !== 'answered' || !acq.acquireState) {
        if (acq.acquiredFd >= 0) closeFd(acq.acquiredFd);
        return;
      }
      fuseFd = this.#handedOver(s, acq, fresh);
      this.trace(`session=${s.name} conn=${owner.id} acquired generation ${s.generation} (${fresh ? 'fresh' : 'resumed'}), ${s.checkpoint.size} keys`);
      owner.model.session = s;
      s.ownerConn = owner;
      s.helper = helper;
      if (fresh) {
        try {
          await answerInit(fuseFd, INIT_FLAGS);
        } catch (err) {
          this.anomaly('FUSE_INIT of a fresh session', `${s.name}: ${(err as Error).message}`);
        }
      }
      while (owner.open && !this.stopped && this.budget.left > 0 && s.state === 'leased' && this.sessions.has(s.name)) {
        const action = r.weighted(SESSION_ACTIONS);
        this.trace(`session=${s.name} conn=${owner.id} action ${action}`);
        const res = await this.#sessionAction(r, s, owner, helper, fuseFd, action, side);
        if (res === 'end') {
          ended = true;
          break;
        }
        if (res && typeof res === 'object') {
          // A standby took over: continue with the new owner.
          this.done(owner, 'abrupt');
          this.#releaseFuseFd(fuseFd);
          owner = res.conn;
          helper = res.helper;
          fuseFd = res.fuseFd;
          owner.model.session = s;
          s.ownerConn = owner;
          s.helper = helper;
        }
      }
      if (!ended && owner.open) await this.#ownerSync(owner);
    } finally {
      for (const c of side) this.done(c);
      // The owner "exits" (crash) or hangs: half the time its process dies now, otherwise the
      // next ACQUIRE has to fence it.
      this.done(owner, 'abrupt');
      if (s.ownerConn === owner) s.ownerConn = null;
      this.#releaseFuseFd(fuseFd);
      if (r.chance(0.5)) this.killHelper(helper);
      else if (helper.ctl >= 0) {
        // Keep it alive, but drop our control end only when it exits.
        void helper.exit.then(() => this.killHelper(helper));
      }
      if (this.sessions.has(s.name) && s.state === 'leased') s.state = s.generation > 0 ? 'orphan' : 'dead';
      this.trace(`session=${s.name} conn=${owner.id} conversation ends: ${this.sessions.has(s.name) ? s.state : 'released'}, ${s.checkpoint.size} keys`);
      if (s.generation === 0 && fresh && this.sessions.get(s.name) === s) {
        // Never acquired: nothing mounted.
        this.sessions.delete(s.name);
        try {
          rmdirSync(s.mountpoint);
        } catch {
          // something may have been mounted after all; the end of the run releases it
        }
      }
    }
  }

  /**
   * A canonical path whose lookup passes through `s`'s mount: below its mountpoint, or through
   * a symlink (absolute or relative) to the mountpoint or to the directory holding it.
   */
  #nestedPath(r: Rng, s: SessionRec): string {
    const v = r.weighted<string>([
      ['below', 4],
      ['link-to-mount', 2],
      ['relative-link-to-mount', 1],
      ['link-to-parent', 2],
    ]);
    if (v === 'below') return genPathBelow(r, s.mountpoint);
    const link = join(this.linkRoot, `l${this.#nextLink++}`);
    if (v === 'link-to-parent') {
      symlinkSync(this.mntRoot, link);
      return genPathBelow(r, join(link, basename(s.mountpoint)));
    }
    symlinkSync(v === 'link-to-mount' ? s.mountpoint : join('..', 'mnt', basename(s.mountpoint)), link);
    return r.chance(0.4) ? link : genPathBelow(r, link);
  }

  /** Makes sure every one-way message the owner sent was processed: a STATUS round trip. */
  async #ownerSync(c: FuzzConn): Promise<void> {
    if (c.silent.length === 0 || !c.open) return;
    const st = await this.msg(c, { type: 'status' }, undefined, [], 'STATUS-sync');
    if (st) await st.promise;
    await this.#settle(c);
  }

  /** The session's entry in a STATUS reply against the model. */
  #checkStatus(s: SessionRec, msg: ControlMessage): void {
    if (msg.type !== 'status_reply') return;
    const st = JSON.parse(msg.json) as StatusJson;
    const e = st.sessions.find((x) => x.name === s.name);
    if (!e) {
      this.anomaly('session missing from STATUS', s.name);
      return;
    }
    const got = `gen=${e.generation} keys=${e.checkpointKeys} bytes=${e.checkpointBytes} ids=${e.liveBackingIds}`;
    const want = `gen=${s.generation} keys=${s.checkpoint.size} bytes=${checkpointBytes(s)} ids=${s.journal.size}`;
    if (got !== want) this.anomaly('STATUS of an owned session', `${s.name}: ${got}, expected ${want}`);
  }

  async #side(side: FuzzConn[], r: Rng, role: 'daemon' | 'cli'): Promise<FuzzConn | null> {
    const c = await this.connect();
    side.push(c);
    if (!(await this.#hello(r, c, role))) return null;
    return c;
  }

  async #sessionAction(
    r: Rng,
    s: SessionRec,
    owner: FuzzConn,
    helper: Helper,
    fuseFd: number,
    action: SessionAction,
    side: FuzzConn[],
  ): Promise<'end' | boolean | { conn: FuzzConn; helper: Helper; fuseFd: number }> {
    const ownerLive = !helper.exited;
    const waitOn = async (st: Step | null): Promise<boolean> => {
      if (st && (st.expect.closes || r.chance(0.6))) await st.settled();
      return owner.open;
    };
    switch (action) {
      case 'journal_open': {
        const reuse = s.journal.size > 0 && r.chance(0.2);
        const id = reuse ? r.pick([...s.journal.keys()]) : genBackingId(r);
        return waitOn(await this.msg(owner, { type: 'journal_open', id, dev: r.u64(), ino: r.u64() }));
      }
      case 'journal_close': {
        const id = s.journal.size > 0 && r.chance(0.7) ? r.pick([...s.journal.keys()]) : genBackingId(r);
        return waitOn(await this.msg(owner, { type: 'journal_close', id }));
      }
      case 'checkpoint_put': {
        const key = s.checkpoint.size > 0 && r.chance(0.4) ? r.pick([...s.checkpoint.keys()]) : genKey(r);
        const m = genMessage(r, 'checkpoint_put', this.gen) as Extract<ControlMessage, { type: 'checkpoint_put' }>;
        return waitOn(await this.msg(owner, { ...m, key }));
      }
      case 'checkpoint_delete': {
        const key = s.checkpoint.size > 0 && r.chance(0.7) ? r.pick([...s.checkpoint.keys()]) : genKey(r);
        return waitOn(await this.msg(owner, { type: 'checkpoint_delete', ack: r.chance(0.3), key }));
      }
      case 'init_save':
      case 'heartbeat':
      case 'drained':
        return waitOn(await this.msg(owner, genMessage(r, action, this.gen)));
      case 'status': {
        const st = await this.msg(owner, { type: 'status' }, { kind: 'reply', ok: ['status_reply'], strict: true, onReply: (m) => this.#checkStatus(s, m) });
        if (st) await st.promise;
        return owner.open;
      }
      case 'adopt': {
        let ids: number[];
        if (s.inherited && s.inherited.size > 0 && r.chance(0.8)) {
          const pool = [...s.inherited];
          ids = pool.filter(() => r.chance(0.6)).slice(0, MAX_ADOPT_CHUNK);
        } else {
          ids = Array.from({ length: r.range(0, 4) }, () => genBackingId(r));
        }
        return waitOn(await this.msg(owner, { type: 'adopt', more: r.chance(0.3), ids }));
      }
      case 'acquire-again':
        return waitOn(await this.msg(owner, { type: 'acquire', name: r.chance(0.5) ? s.name : genName(r, ABSENT_PREFIX), mount: r.chance(0.5) ? s.spec : genSpec(r, genPathBelow(r, this.gen.absentRoot)), standby: r.chance(0.5) }, { kind: 'reply', errors: ['EBUSY'], strict: true }));
      case 'store-self':
        return waitOn(await this.msg(owner, { type: 'store', name: s.name, mount: s.spec }, { kind: 'reply', errors: ['EBUSY'], strict: true }, [fuseFd >= 0 ? fuseFd : this.fdSources!.fuseDevice]));
      case 'side-busy': {
        // Another daemon wants the owned session without standby: EBUSY (EINVAL with another spec).
        const c = await this.#side(side, r, 'daemon');
        if (!c) return owner.open;
        const sameSpec = r.chance(0.7);
        const spec = sameSpec ? s.spec : { ...s.spec, readOnly: !s.spec.readOnly };
        const errors = !sameSpec ? ['EINVAL'] : ownerLive ? ['EBUSY'] : [];
        if (errors.length === 0) return owner.open; // would take the session over: that is standby-takeover's job
        const st = await this.msg(c, { type: 'acquire', name: s.name, mount: spec, standby: false }, { kind: 'reply', errors, strict: true });
        if (st) await st.promise;
        this.done(c);
        return owner.open;
      }
      case 'side-eexist': {
        // A fresh ACQUIRE of another name on this session's mountpoint.
        const c = await this.#side(side, r, 'daemon');
        if (!c) return owner.open;
        const st = await this.msg(c, { type: 'acquire', name: genName(r, ABSENT_PREFIX), mount: genSpec(r, s.mountpoint), standby: r.chance(0.3) }, { kind: 'reply', errors: ['EEXIST'], strict: true });
        if (st) await st.promise;
        this.done(c);
        return owner.open;
      }
      case 'side-store': {
        // STORE of the session's own (mounted) /dev/fuse fd under its name, its mountpoint, or elsewhere.
        const c = await this.#side(side, r, 'daemon');
        if (!c) return owner.open;
        const v = r.int(3);
        const name = v === 0 ? s.name : genName(r, ABSENT_PREFIX);
        const mount = v === 2 ? genSpec(r, genPathBelow(r, this.gen.absentRoot)) : genSpec(r, s.mountpoint);
        const fd = fuseFd >= 0 && r.chance(0.8) ? fuseFd : this.fdSources!.fuseDevice;
        const errors = v === 2 ? ['EBADF'] : ['EEXIST'];
        const st = await this.msg(c, { type: 'store', name, mount }, { kind: 'reply', errors, strict: true }, [fd]);
        if (st) await st.promise;
        this.done(c);
        return owner.open;
      }
      case 'side-nested': {
        // A fresh ACQUIRE on a directory inside this session's mount: refused, and quickly.
        const c = await this.#side(side, r, 'daemon');
        if (!c) return owner.open;
        this.report.sessions.nestedAcquires++;
        const mountpoint = this.#nestedPath(r, s);
        const st = await this.msg(c, { type: 'acquire', name: genName(r, ABSENT_PREFIX), mount: genSpec(r, mountpoint), standby: false }, { kind: 'reply', errors: ['EINVAL', 'EBUSY', 'EEXIST', 'EACCES'], strict: true }, [], 'ACQUIRE-nested');
        if (st) await st.promise;
        this.done(c);
        return owner.open && s.state === 'leased';
      }
      case 'drain': {
        // fusekeeper upgrade: the CLI drains, the owner answers DRAINED (or not) and exits.
        const c = await this.#side(side, r, 'cli');
        if (!c) return owner.open;
        const cooperate = r.chance(0.7);
        let requested = false;
        const gotRequest = new Promise<void>((resolve) => {
          owner.onNotify = () => {
            requested = true;
            resolve();
          };
        });
        const st = await this.msg(c, { type: 'drain', name: s.name }, { kind: 'reply', ok: ['ok'], errors: ownerLive && !cooperate ? ['ETIMEDOUT'] : [], strict: true });
        if (!st) return owner.open;
        if (ownerLive) {
          await Promise.race([gotRequest, st.promise, later(this.deadlineMs)]);
          if (!requested) this.anomaly('no DRAIN_REQUEST', `${s.name}: the owner was not asked to drain`);
          if (cooperate && owner.open) {
            for (let i = r.range(0, 3); i > 0; i--) await this.msg(owner, { type: 'checkpoint_put', ack: false, key: genKey(r), value: r.bytes(r.range(0, 64)) });
            await this.msg(owner, { type: 'drained' });
            await this.#ownerSync(owner);
            // The owner exits without unmounting.
            this.done(owner, 'graceful');
            this.killHelper(helper);
          }
        }
        await st.promise;
        if (st.reply?.type === 'ok') this.report.sessions.drainsOk++;
        else if (st.reply?.type === 'error' && st.reply.code === 'ETIMEDOUT') this.report.sessions.drainsTimedOut++;
        owner.onNotify = null;
        this.done(c);
        return 'end';
      }
      case 'standby-takeover': {
        // A warm standby waits; the owner crashes; the standby gets the session, resumed.
        const got = await this.spawnHelper();
        if (!got) return owner.open;
        const p = got.conn;
        if (!(await this.#hello(r, p, 'daemon')) || p.model.role !== 'daemon') {
          this.done(p);
          this.killHelper(got.helper);
          return owner.open;
        }
        // The supervisor disconnects the old owner when the standby takes over.
        owner.lenient = true;
        const acq = await this.msg(p, { type: 'acquire', name: s.name, mount: s.spec, standby: true }, this.#acquireExpect(s, false, true));
        if (!acq) {
          this.done(p);
          this.killHelper(got.helper);
          return owner.open;
        }
        await this.#ownerSync(owner);
        await sleep(r.range(0, 20));
        if (acq.done && ownerLive) this.anomaly('standby served while the owner lives', `${s.name}: ${acq.reply?.type}`);
        // Crash: the connection goes, the process dies now or is left for fencing.
        this.done(owner, 'abrupt');
        if (r.chance(0.5)) this.killHelper(helper);
        acq.armDeadline();
        await acq.promise;
        if (acq.outcome !== 'answered' || !acq.acquireState) {
          this.done(p);
          this.killHelper(got.helper);
          return 'end';
        }
        this.report.sessions.standbyTakeovers++;
        const fd = this.#handedOver(s, acq, false);
        return { conn: p, helper: got.helper, fuseFd: fd };
      }
      case 'mutated': {
        const m = genMessage(r, r.pick(['journal_open', 'journal_close', 'checkpoint_put', 'checkpoint_delete', 'init_save', 'heartbeat', 'adopt', 'status'] as const), this.gen);
        const st = await this.#mutated(r, owner, encodeProper(m, owner.rid()).frame);
        return waitOn(st);
      }
      case 'fd-attach':
        return waitOn(await this.#fdAttach(r, owner, fuseFd >= 0 ? [{ kind: '/dev/fuse-mounted', fd: fuseFd }] : []));
      case 'release': {
        const st = await this.msg(owner, { type: 'release', name: s.name }, { kind: 'reply', ok: ['ok'], strict: true, onReply: (m) => m.type === 'ok' && this.#releasedByName(s.name) });
        if (st) await st.promise;
        if (st?.outcome === 'answered') owner.model.session = null;
        return 'end';
      }
      case 'orphan':
        return 'end';
    }
  }

  // ------------------------------------------------------------------------------------------
  // End of the run

  /** Releases every session the supervisor has (STATUS lists them). */
  async releaseAll(): Promise<void> {
    if (!this.supervisorAlive()) return;
    const why = await this.statusCheck();
    if (why || !this.lastStatus) {
      this.report.health.failures.push(`final STATUS: ${why}`);
      return;
    }
    const c = await this.connect();
    try {
      const hello = await this.#raw(c, encodeMessage({ type: 'hello', minVersion: 1, maxVersion: 1, role: 'cli', clientName: 'fuzz cleanup' }, c.rid()));
      if (!hello) return;
      for (const e of this.lastStatus.sessions) {
        const rel = await this.#raw(c, encodeMessage({ type: 'release', name: e.name }, c.rid()));
        if (rel?.type === 'ok') this.report.sessions.released++;
        else this.report.health.failures.push(`RELEASE ${e.name} at the end: ${rel ? describeMessage(rel) : 'no answer'}`);
      }
    } finally {
      this.done(c);
    }
  }

  /** One request outside the budget and the statistics: its reply. */
  async #raw(c: FuzzConn, frame: Buffer): Promise<ControlMessage | null> {
    const rid = frame.readUInt32LE(8);
    const step = new Step(this, c, 'cleanup', rid, { kind: 'reply', strict: false });
    const ok = await c.send(step, frame, [], 'cleanup', 'cleanup', false);
    if (!ok) return null;
    await step.promise;
    this.report.outcomes[step.outcome!]--;
    return step.reply;
  }

  scanLog(): void {
    let text = '';
    try {
      text = readFileSync(this.logPath, 'utf8');
    } catch {
      return;
    }
    const sup = this.report.supervisor;
    for (const line of text.split('\n')) {
      if (!line) continue;
      sup.logLines++;
      let o: { level?: number; event?: string };
      try {
        o = JSON.parse(line) as { level?: number; event?: string };
      } catch {
        // Not pino: a crash trace or a Node warning.
        if (/fatal|uncaught|unhandled|Error:|panic|abort/i.test(line)) sup.fatalLines++;
        continue;
      }
      if ((o.level ?? 0) >= 60) sup.fatalLines++;
      if ((o.level ?? 0) >= 50) inc(sup.errorEvents, o.event ?? '(no event)');
      if (o.event === 'supervisor.internal_error') sup.internalErrors++;
    }
  }

  cleanupMounts(): string[] {
    const left = mountsBelow(this.dir);
    for (const m of left) {
      const id = connectionId(m);
      try {
        if (id !== undefined) {
          ensureFusectl();
          abortConnection(id);
        }
      } catch {
        // gone
      }
      try {
        unmountFuse(m, true);
      } catch {
        // gone
      }
    }
    return left;
  }
}

interface StatusJson {
  supervisor?: Record<string, unknown>;
  sessions: { name: string; generation: number; checkpointKeys: number; checkpointBytes: number; liveBackingIds: number; state: string }[];
}

// ---------------------------------------------------------------------------------------------

/** Runs the fuzzer; see the file comment. Needs root, /dev/fuse and a build (npm run prepare). */
export async function runFuzz(options: FuzzOptions): Promise<FuzzReport> {
  const cli = options.cli ?? new URL('../../../bin/fusekeeper.js', import.meta.url).pathname;
  const dist = new URL('../../../dist/native/index.js', import.meta.url).pathname;
  if (!existsSync(dist)) throw new Error(`${dist} is missing: run \`npm run prepare\` first`);
  const opts = {
    count: options.count,
    seed: options.seed >>> 0,
    concurrency: options.concurrency ?? 16,
    deadlineMs: options.deadlineMs ?? 5000,
    sessions: options.sessions ?? true,
    healthEveryMs: options.healthEveryMs ?? 1000,
    cliStatusEveryMs: options.cliStatusEveryMs ?? 15_000,
    cli,
    keepTemp: options.keepTemp ?? false,
    progress: options.progress,
  };
  const ownBefore = fdTable('self');
  const f = new Fuzzer(opts);
  const report = f.report;
  const fail = (why: string): void => {
    report.failures.push(why);
  };
  let started = 0;
  // Killed mid-run (Ctrl-C, a test timeout): take the supervisor, the helpers and the mounts along.
  const onSignal = (signal: NodeJS.Signals): void => {
    f.supervisor?.kill('SIGKILL');
    for (const h of f.helpers) if (!h.exited) h.child.kill('SIGKILL');
    f.cleanupMounts();
    console.error(`fuzz: ${signal}: stopped; supervisor log in ${f.dir}`);
    process.exit(130);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    f.fdSources = openFdSources(f.dir);
    await f.startSupervisor();
    const baseline = await f.settledFds(5000);
    report.fds.baselineCount = baseline.table.size;
    report.fds.baselineCompared = baseline.compared.length;

    started = Date.now();
    const counter = { next: 0 };
    const health = f.healthLoop();
    await Promise.all(Array.from({ length: opts.concurrency }, () => f.worker(opts.seed, counter)));
    report.durationMs = Date.now() - started;
    report.msgsPerSec = Math.round(report.messagesSent / (report.durationMs / 1000));
    f.budget.left = 0;
    await health;

    // Whatever is still open (nothing, normally) goes; helpers go.
    for (const c of [...f.openConns]) f.done(c);
    for (const fd of [...f.heldFuseFds]) {
      f.heldFuseFds.delete(fd);
      closeFd(fd);
    }
    for (const h of f.helpers) f.killHelper(h);
    await Promise.all([...f.helpers].map((h) => Promise.race([h.exit, later(5000)])));

    if (f.supervisorAlive()) {
      const why = await f.statusCheck();
      if (why) fail(`STATUS after the run: ${why}`);
      report.health.cliChecks++;
      const e = await f.cliStatus();
      if (e) fail(`fusekeeper status after the run: ${e}`);
      await f.releaseAll();
      await sleep(100);
      const left = mountsBelow(f.dir);
      report.leftoverMounts = left;
      const fin = await f.settledFds(5000, baseline.compared);
      report.fds.finalCount = fin.table.size;
      report.fds.finalCompared = fin.compared.length;
      report.fds.settleMs = fin.ms;
      report.fds.leaked = minus(fin.compared, baseline.compared);
      report.fds.missing = minus(baseline.compared, fin.compared);
      report.supervisor.aliveAtEnd = f.supervisorAlive();
    }
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    for (const c of [...f.openConns]) f.done(c);
    for (const h of f.helpers) f.killHelper(h);
    for (const fd of f.heldFuseFds) closeFd(fd);
    f.heldFuseFds.clear();
    if (f.supervisor && !f.supervisorExit) {
      f.supervisor.kill('SIGTERM');
      const exited = await Promise.race([new Promise<boolean>((r) => f.supervisor!.once('exit', () => r(true))), later(10_000).then(() => false)]);
      if (!exited) f.supervisor.kill('SIGKILL');
    }
    if (f.supervisorExit) {
      report.supervisor.exitCode = f.supervisorExit.code;
      report.supervisor.exitSignal = f.supervisorExit.signal;
    }
    f.scanLog();
    const stillMounted = f.cleanupMounts();
    for (const m of stillMounted) if (!report.leftoverMounts.includes(m)) report.leftoverMounts.push(m);
    f.fdSources?.close();
    f.closeTrace();
    report.fuzzerLeakedFds = minus(comparable(fdTable('self')), comparable(ownBefore));
  }

  if (!report.supervisor.aliveAtEnd) fail(`the supervisor died (exit ${report.supervisor.exitCode ?? '?'} signal ${report.supervisor.exitSignal ?? '-'})`);
  if (report.supervisor.exitCode !== 0 && report.supervisor.exitCode !== null) fail(`the supervisor exited ${report.supervisor.exitCode} on SIGTERM`);
  if (report.supervisor.fatalLines > 0) fail(`${report.supervisor.fatalLines} fatal lines in the supervisor's output`);
  if (report.supervisor.internalErrors > 0) fail(`${report.supervisor.internalErrors} internal errors logged by the supervisor`);
  if (report.hangs.length > 0) fail(`${report.hangs.length} frames neither answered nor dropped in time`);
  if (report.health.failures.length > 0) fail(`${report.health.failures.length} failed health checks`);
  if (report.fds.leaked.length > 0 || report.fds.missing.length > 0) fail(`supervisor fds not back to baseline: +[${report.fds.leaked.join(', ')}] -[${report.fds.missing.join(', ')}]`);
  if (report.leftoverMounts.length > 0) fail(`mounts left: ${report.leftoverMounts.join(', ')}`);
  if (report.fuzzerLeakedFds.length > 0) fail(`the fuzzer itself leaked fds: ${report.fuzzerLeakedFds.join(', ')}`);
  if (report.messagesSent !== opts.count) fail(`sent ${report.messagesSent} frames, not ${opts.count}`);
  for (const [type, a] of Object.entries(report.anomalies)) {
    if (SERIOUS_ANOMALIES.some((x) => type.startsWith(x))) fail(`${a.count} x ${type}: ${a.examples[0] ?? ''}`);
  }

  if (report.failures.length === 0 && !opts.keepTemp) rmSync(f.dir, { recursive: true, force: true });
  return report;
}

/** A human-readable summary of a report. */
export function formatReport(r: FuzzReport): string {
  const lines: string[] = [];
  const table = (title: string, o: Record<string, number>): void => {
    const entries = Object.entries(o).filter(([, v]) => v !== 0).sort((a, b) => b[1] - a[1]);
    lines.push(`${title}:`);
    for (const [k, v] of entries) lines.push(`  ${k.padEnd(36)} ${String(v).padStart(8)}`);
  };
  lines.push(`fuzz: seed ${r.seed}, ${r.messagesSent} frames over ${r.connections} connections (${r.concurrency} at once) in ${(r.durationMs / 1000).toFixed(1)} s = ${r.msgsPerSec} frames/s`);
  table('frames by category', r.byCategory);
  table('frames by kind', r.byKind);
  lines.push(`frames with fds: ${r.messagesWithFds} (${r.fdsAttached} fds)`);
  table('fds attached by kind', r.fdsAttachedByKind);
  table('fate of the frames', r.outcomes as unknown as Record<string, number>);
  table('ERROR codes received', r.errorsByCode);
  if (r.lateAnswers) lines.push(`late answers (after a hang): ${r.lateAnswers}`);
  lines.push(`disconnects: by the supervisor ${r.disconnects.byServer}, abrupt by the client ${r.disconnects.abruptByClient}, graceful ${r.disconnects.gracefulByClient}`);
  const s = r.sessions;
  lines.push(`sessions: ${s.created} created, ${s.resumed} resumed (${s.standbyTakeovers} by standby), drains ${s.drainsOk} ok / ${s.drainsTimedOut} timed out, ${s.released} released, ${s.nestedAcquires} nested ACQUIREs, ${s.aborted} aborted, ${s.helpers} owner processes`);
  lines.push(`health: ${r.health.statusChecks} STATUS checks, ${r.health.cliChecks} \`fusekeeper status\` runs, ${r.health.failures.length} failed`);
  lines.push(`supervisor: pid ${r.supervisor.pid}, alive at the end ${r.supervisor.aliveAtEnd}, exit ${r.supervisor.exitCode ?? '-'}/${r.supervisor.exitSignal ?? '-'}, ${r.supervisor.logLines} log lines, ${r.supervisor.fatalLines} fatal, ${r.supervisor.internalErrors} internal errors`);
  if (Object.keys(r.supervisor.errorEvents).length) table('supervisor error-level events', r.supervisor.errorEvents);
  lines.push(`supervisor fds: baseline ${r.fds.baselineCount} (${r.fds.baselineCompared} compared), end ${r.fds.finalCount} (${r.fds.finalCompared} compared) after ${r.fds.settleMs} ms; leaked [${r.fds.leaked.join(', ')}], missing [${r.fds.missing.join(', ')}]`);
  lines.push(`leftover mounts: ${r.leftoverMounts.length}`);
  if (r.hangs.length) lines.push(`hangs (${r.hangs.length}):`, ...r.hangs.slice(0, 10).map((h) => `  ${h}`));
  const an = Object.entries(r.anomalies);
  if (an.length) {
    lines.push('anomalies (answers that differ from docs/protocol.md or from the model; see SERIOUS_ANOMALIES for the failing kinds):');
    for (const [k, v] of an) lines.push(`  ${k}: ${v.count}`, ...v.examples.map((e) => `      ${e}`));
  }
  lines.push(r.failures.length ? `FAILED:\n${r.failures.map((x) => `  - ${x}`).join('\n')}` : 'PASSED: 0 crashes, 0 hangs, fds back to baseline, no mounts left');
  return lines.join('\n');
}

export type { StatusJson };
