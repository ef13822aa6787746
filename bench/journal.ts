// Cost of the backing-id journal per backing open, side by side in one run, on a mounted
// FUSE connection with passthrough:
//   bare       FUSE_DEV_IOC_BACKING_OPEN + FUSE_DEV_IOC_BACKING_CLOSE (kernel/backing.ts)
//   journaled  the same ioctls plus what the SDK sends for them: encodeJournalOpen(id, dev,
//              ino) after the open and encodeJournalClose(id) after the close, each one
//              sendMessage on an AF_UNIX SOCK_SEQPACKET socket
//   sendOnly   the two encodes + sends alone
//   encodeOnly the two encodes alone
// The journal socket's other end is drained two ways, each its own socket pair:
//   inProcess  this process drains with receiveMessage every DRAIN_EVERY pairs, so the figure
//              holds both ends' CPU (send + the supervisor's receive): an upper bound
//   childReader a separate process (bench/drivers/journalreader.c, compiled with cc) blocks
//              in recvmmsg on it, as the supervisor waits in epoll: the figure is what the
//              daemon's thread pays, wake-ups of the reader included
// The variants take turns within each round so drift hits them alike; best of ROUNDS.
// The dev/ino come from an fstat made once (a daemon has them from its LOOKUP/OPEN anyway).
//
// Before those, the hand-over section (pure, no kernel): for journals of 10k and 100k entries,
// the milliseconds of the supervisor's hand-over (marking the ids inherited, encoding the
// ACQUIRE reply sequence), the client's decode + AcquireCollector, the ClientSession
// construction, the supervisor's ADOPT settlement (no id adopted, and every id adopted), and
// the heap/RSS a BackingJournal of that many entries holds. Medians of HANDOVER_ROUNDS.
// Run: npm run bench -- journal   (root, /dev/fuse, cc)
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createSocketPair, sendMessage, receiveMessage, closeAll, closeFd, openFd, O, fstatFd } from '../native/index.ts';
import { backingOpen, backingClose } from '../kernel/backing.ts';
import { AcquireCollector, decodeMessage, encodeAcquireSequence, encodeJournalOpen, encodeJournalClose, type JournalEntries } from '../protocol/index.ts';
import { BackingJournal } from '../supervisor/journal.ts';
import { ClientSession, type SupervisorClient } from '../client/supervisor.ts';
import { MAX_BACKING_ID } from '../protocol/limits.ts';
import { mountTestConnection } from '../test/kernel/helpers/connection.ts';
import { summarize, writeResult } from './lib.ts';

const ITERATIONS = 20_000;
const ROUNDS = 7;
/** In-process drain: every this many open/close pairs (2 messages each), well inside the socket buffer. */
const DRAIN_EVERY = 32;
const RECV = { maxBytes: 256, maxFds: 0 };

/** A SEQPACKET journal socket: `send` puts one message in it, never dropping one. */
interface JournalSocket {
  send(msg: Buffer): void;
  /** Called once per open/close pair; the in-process variant drains here. */
  tick(): void;
  sent: number;
  /** Sends that found the buffer full (EAGAIN) and were retried: the reader fell behind for a moment. */
  stalls: number;
}

function inProcessSocket(): JournalSocket & { received: number; close(): void } {
  const [tx, rx] = createSocketPair('seqpacket');
  let pairs = 0;
  let closed = false;
  const drain = (): void => {
    for (;;) {
      const m = receiveMessage(rx, RECV);
      if (m.kind !== 'message') break;
      s.received++;
    }
  };
  const s = {
    sent: 0,
    stalls: 0,
    received: 0,
    send(msg: Buffer): void {
      const payload = { data: msg, fds: [] as number[] };
      while (sendMessage(tx, payload) === null) {
        s.stalls++;
        drain();
      }
      s.sent++;
    },
    tick(): void {
      if (++pairs % DRAIN_EVERY === 0) drain();
    },
    close(): void {
      if (closed) return;
      closed = true;
      drain();
      closeAll([tx, rx]);
    },
  };
  return s;
}

/** Compiles bench/drivers/journalreader.c into `dir`; returns the binary's path. */
function buildReader(dir: string): string {
  const bin = join(dir, 'journalreader');
  const src = new URL('./drivers/journalreader.c', import.meta.url).pathname;
  const cc = spawnSync('cc', ['-O2', '-o', bin, src], { encoding: 'utf8' });
  if (cc.status !== 0) throw new Error(`cc failed: ${cc.stderr}`);
  return bin;
}

async function childReaderSocket(reader: string): Promise<JournalSocket & { finish(): Promise<number> }> {
  const [tx, rx] = createSocketPair('seqpacket');
  // rx becomes the reader's fd 3 (it makes it blocking: that description is no longer ours).
  const child: ChildProcess = spawn(reader, ['3'], { stdio: ['ignore', 'pipe', 'inherit', rx] });
  closeFd(rx);
  let out = '';
  child.stdout!.setEncoding('utf8');
  child.stdout!.on('data', (d: string) => (out += d));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const deadline = Date.now() + 10_000;
  while (!out.includes('ready\n')) {
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`journal reader did not start (exit ${child.exitCode})`);
    }
    await new Promise((r) => setTimeout(r, 10));
  }
  const s = {
    sent: 0,
    stalls: 0,
    send(msg: Buffer): void {
      const payload = { data: msg, fds: [] as number[] };
      // The reader is another process: spin until it has made room (counted).
      while (sendMessage(tx, payload) === null) s.stalls++;
      s.sent++;
    },
    tick(): void {},
    async finish(): Promise<number> {
      closeFd(tx); // EOF for the reader
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      const code = await exited;
      clearTimeout(timer);
      if (code !== 0) throw new Error(`journal reader exited with ${code}`);
      return Number(out.trim().split('\n').at(-1));
    },
  };
  return s;
}

const HANDOVER_ROUNDS = 9;
const HANDOVER_SIZES = [10_000, 100_000];

function msSince(t0: bigint): number {
  return Number(process.hrtime.bigint() - t0) / 1e6;
}

function filledJournal(n: number): BackingJournal {
  const j = new BackingJournal();
  for (let i = 0; i < n; i++) j.open({ id: i + 1, dev: 2049n, ino: BigInt(1_000_000 + i * 7) });
  return j;
}

/** The hand-over section: figures per journal size (see the top of the file). */
function handoverFigures(): Record<string, Record<string, number>> {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  const mount = { mountpoint: '/mnt/bench', fsName: 'bench', subtype: 'bench', rootMode: 0o40755, uid: 0, gid: 0, allowOther: false, defaultPermissions: false, readOnly: false, maxRead: 0 };
  const out: Record<string, Record<string, number>> = {};
  for (const n of HANDOVER_SIZES) {
    const samples: Record<string, number[]> = { supervisorEncodeMs: [], clientDecodeCollectMs: [], clientSessionMs: [], adoptNoneMs: [], adoptAllMs: [] };
    for (let r = 0; r < HANDOVER_ROUNDS; r++) {
      const j = filledJournal(n);
      let t0 = process.hrtime.bigint();
      j.handOver();
      const frames = encodeAcquireSequence(7, { acquired: { type: 'acquired', generation: 2, resumed: true, strategy: 'journal' }, initParams: null, checkpoint: new Map(), journal: j.snapshot() });
      samples.supervisorEncodeMs!.push(msSince(t0));

      t0 = process.hrtime.bigint();
      const collector = new AcquireCollector();
      let state: { checkpoint: Map<string, Buffer>; journal: JournalEntries } | undefined;
      frames.forEach((f, i) => {
        const d = decodeMessage(f, i === 0 ? 1 : 0, { from: 'supervisor', packedJournal: true });
        if (!d.ok) throw d.error;
        const p = collector.push(d.message);
        if (p.done && 'state' in p) state = p.state;
      });
      samples.clientDecodeCollectMs!.push(msSince(t0));
      if (state?.journal.length !== n) throw new Error('the collector lost entries');

      t0 = process.hrtime.bigint();
      const session = new ClientSession(null as unknown as SupervisorClient, 'bench', mount, -1, { resumed: true, generation: 2, strategy: 'journal', init: null, checkpoint: state.checkpoint, journal: state.journal });
      samples.clientSessionMs!.push(msSince(t0));
      if (session.journal.length !== n) throw new Error('the session lost entries');

      // ADOPT with no id (the failover benchmark's bare owner): every inherited id is to close.
      t0 = process.hrtime.bigint();
      if (j.adopt([]) !== 0 || j.settle().length !== n) throw new Error('adopt none');
      samples.adoptNoneMs!.push(msSince(t0));

      const ids = state.journal.ids();
      j.handOver();
      t0 = process.hrtime.bigint();
      if (j.adopt(ids) !== 0 || j.settle().length !== 0) throw new Error('adopt all');
      samples.adoptAllMs!.push(msSince(t0));
    }
    const figures: Record<string, number> = {};
    for (const [k, v] of Object.entries(samples)) figures[k] = Number(summarize(v).median.toFixed(2));

    gc();
    gc();
    const m0 = process.memoryUsage();
    let held: BackingJournal | null = filledJournal(n);
    gc();
    gc();
    const m1 = process.memoryUsage();
    if (held.size !== n) throw new Error('unreachable');
    held = null;
    const mib = (b: number): number => Number((b / 2 ** 20).toFixed(2));
    figures.heldHeapMiB = mib(m1.heapUsed - m0.heapUsed);
    figures.heldExternalMiB = mib(m1.external - m0.external);
    figures.heldRssMiB = mib(m1.rss - m0.rss);
    out[`entries${n}`] = figures;
  }
  return out;
}

export async function run(): Promise<void> {
  const handover = handoverFigures();
  console.log('hand-over of a journal (ms, medians; memory of a held BackingJournal in MiB):');
  console.table(handover);
  const conn = await mountTestConnection();
  const local = inProcessSocket();
  let remote: Awaited<ReturnType<typeof childReaderSocket>> | null = null;
  const backingPath = join(conn.dir, 'backing');
  writeFileSync(backingPath, 'x');
  const backing = openFd(backingPath, O.RDONLY);
  try {
    remote = await childReaderSocket(buildReader(conn.dir));
    const { dev, ino } = fstatFd(backing);
    const fuse = conn.fd;
    let fakeId = 0;
    const nextFakeId = (): number => (fakeId = (fakeId % MAX_BACKING_ID) + 1);

    const journaled = (sock: JournalSocket) => (): void => {
      const id = backingOpen(fuse, backing);
      sock.send(encodeJournalOpen(id, dev, ino));
      backingClose(fuse, id);
      sock.send(encodeJournalClose(id));
      sock.tick();
    };
    const sendOnly = (sock: JournalSocket) => (): void => {
      const id = nextFakeId();
      sock.send(encodeJournalOpen(id, dev, ino));
      sock.send(encodeJournalClose(id));
      sock.tick();
    };
    let sink = 0;
    const variants: Record<string, () => void> = {
      bare: () => backingClose(fuse, backingOpen(fuse, backing)),
      journaledInProcess: journaled(local),
      journaledChildReader: journaled(remote),
      sendOnlyInProcess: sendOnly(local),
      sendOnlyChildReader: sendOnly(remote),
      encodeOnly: () => {
        const id = nextFakeId();
        sink += encodeJournalOpen(id, dev, ino).length + encodeJournalClose(id).length;
      },
    };

    // Warm-up, then ROUNDS rounds in which every variant takes its turn.
    for (const fn of Object.values(variants)) for (let i = 0; i < 2000; i++) fn();
    const samples: Record<string, number[]> = Object.fromEntries(Object.keys(variants).map((k) => [k, []]));
    for (let r = 0; r < ROUNDS; r++) {
      for (const [name, fn] of Object.entries(variants)) {
        const t0 = process.hrtime.bigint();
        for (let i = 0; i < ITERATIONS; i++) fn();
        samples[name]!.push(Number(process.hrtime.bigint() - t0) / ITERATIONS);
      }
    }
    if (sink === 0) throw new Error('unreachable');

    local.close();
    const remoteSent = remote.sent;
    const remoteStalls = remote.stalls;
    const remoteReceived = await remote.finish();
    remote = null;
    if (local.received !== local.sent) throw new Error(`in-process reader got ${local.received} of ${local.sent} messages`);
    if (remoteReceived !== remoteSent) throw new Error(`child reader got ${remoteReceived} of ${remoteSent} messages`);

    const best = (k: string): number => summarize(samples[k]!).min;
    const median = (k: string): number => summarize(samples[k]!).median;
    const bare = best('bare');
    const ratio = (x: number): number => Number((x / bare).toFixed(2));
    const figures = {
      iterations: ITERATIONS,
      rounds: ROUNDS,
      unit: 'nanoseconds per backing open+close pair (2 journal messages), best of rounds; medians alongside',
      bareIoctlPairNs: Math.round(bare),
      journaledPairInProcessNs: Math.round(best('journaledInProcess')),
      journaledPairChildReaderNs: Math.round(best('journaledChildReader')),
      sendOnlyInProcessNs: Math.round(best('sendOnlyInProcess')),
      sendOnlyChildReaderNs: Math.round(best('sendOnlyChildReader')),
      encodeOnlyNs: Math.round(best('encodeOnly')),
      journalOverheadInProcessNs: Math.round(best('journaledInProcess') - bare),
      journalOverheadChildReaderNs: Math.round(best('journaledChildReader') - bare),
      journaledVsBareInProcessRatio: ratio(best('journaledInProcess')),
      journaledVsBareChildReaderRatio: ratio(best('journaledChildReader')),
      median: {
        bareIoctlPairNs: Math.round(median('bare')),
        journaledPairInProcessNs: Math.round(median('journaledInProcess')),
        journaledPairChildReaderNs: Math.round(median('journaledChildReader')),
        sendOnlyInProcessNs: Math.round(median('sendOnlyInProcess')),
        sendOnlyChildReaderNs: Math.round(median('sendOnlyChildReader')),
        encodeOnlyNs: Math.round(median('encodeOnly')),
      },
      messagesSent: { inProcess: local.sent, childReader: remoteSent },
      sendStalls: { inProcess: local.stalls, childReader: remoteStalls },
      drainEveryPairs: DRAIN_EVERY,
      handover,
    };
    const { median: med, messagesSent, sendStalls, handover: _handover, ...flat } = figures;
    console.table(flat);
    console.table({ median: med });
    console.log('messages sent', messagesSent, 'send stalls (buffer full)', sendStalls);
    writeResult('journal', figures);
  } finally {
    local.close();
    if (remote) await remote.finish().catch(() => {});
    closeAll([backing]);
    conn.cleanup();
  }
}
