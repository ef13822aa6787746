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
// Run: npm run bench -- journal   (root, /dev/fuse, cc)
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createSocketPair, sendMessage, receiveMessage, closeAll, closeFd, openFd, O, fstatFd } from '../native/index.ts';
import { backingOpen, backingClose } from '../kernel/backing.ts';
import { encodeJournalOpen, encodeJournalClose } from '../protocol/index.ts';
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

export async function run(): Promise<void> {
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
    };
    const { median: med, messagesSent, sendStalls, ...flat } = figures;
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
