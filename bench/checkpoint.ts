// A resumed ACQUIRE's checkpoint in frames (one CHECKPOINT_ENTRY per key) or in one sealed
// memfd (CHECKPOINT_FILE), side by side, for checkpoints of 8 to 20000 keys: what picks
// MAX_CHECKPOINT_FRAMES. Entries look like mirrorfs's (`node/<n>` keys, 120-byte
// values). Both ends run in this process over a real AF_UNIX SOCK_SEQPACKET pair with the
// supervisor's 512 KiB send buffer; each side's CPU is timed apart:
//   supervisorMs  encoding the whole sequence, the memfd (create, write, seal) and every sendmsg
//   ownerMs       every recvmsg, decode, the memfd's read and decode (the SDK's readStateFile),
//                 the AcquireCollector
// When the socket is full, the sender stops and the owner drains it (in the real hand-over
// the owner waits for the supervisor's next write meanwhile). Variants alternate within each
// round; medians of ROUNDS after WARMUP rounds.
// Run: npm run bench -- checkpoint
import { closeAll, closeFd, createSealedFile, createSocketPair, receiveMessage, sendMessage, setSocketBuffer } from '../native/index.ts';
import { readStateFile } from '../client/supervisor.ts';
import {
  AcquireCollector,
  acquireAttachment,
  MAX_CHECKPOINT_FRAMES,
  decodeMessage,
  encodeAcquireSequence,
  encodeCheckpointFile,
  MAX_MESSAGE,
  type AcquireState,
} from '../protocol/index.ts';
import { summarize, writeResult } from './lib.ts';

const SIZES = [8, 16, 32, 64, 128, 512, 2000, 6000, 20_000];
const ROUNDS = 40;
const WARMUP = 5;
/** What the supervisor asks for with SO_SNDBUF (supervisor/server.ts). */
const SEND_BUFFER = 512 * 1024;

type Variant = 'frames' | 'file';

function stateOf(keys: number): AcquireState {
  const checkpoint = new Map<string, Buffer>();
  for (let i = 0; i < keys; i++) checkpoint.set(`node/${i}`, Buffer.alloc(120, 0x41 + (i % 26)));
  return { acquired: { type: 'acquired', generation: 2, resumed: true, strategy: 'journal' }, initParams: Buffer.alloc(64), checkpoint, journal: [{ id: 1, dev: 1n, ino: 1n }] };
}

/** One hand-over of `state` from `tx` to `rx`; the two sides' milliseconds. */
function handOver(state: AcquireState, variant: Variant, tx: number, rx: number, fuseFd: number): { supervisorMs: number; ownerMs: number } {
  let supervisorNs = 0n;
  let ownerNs = 0n;
  let t0 = process.hrtime.bigint();
  const file = variant === 'file' ? createSealedFile('fusekeeper-bench', encodeCheckpointFile(state.checkpoint)) : -1;
  const frames = encodeAcquireSequence(1, state, { checkpointFile: file >= 0 });
  supervisorNs += process.hrtime.bigint() - t0;
  const collector = new AcquireCollector();
  let done = false;
  const drain = (): void => {
    const t = process.hrtime.bigint();
    for (;;) {
      const r = receiveMessage(rx, { maxBytes: MAX_MESSAGE, maxFds: 4 });
      if (r.kind !== 'message') break;
      const d = decodeMessage(r.data, r.fds.length, { from: 'supervisor', packedJournal: true });
      if (!d.ok) throw d.error;
      const contents = readStateFile(d.message, r.fds);
      if (d.message.type === 'acquired') closeAll(r.fds);
      if (contents instanceof Error) throw contents;
      const p = collector.push(d.message, contents);
      if (p.done) {
        if (!('state' in p) || p.state.checkpoint.size !== state.checkpoint.size) throw new Error('the checkpoint did not arrive whole');
        done = true;
        break;
      }
    }
    ownerNs += process.hrtime.bigint() - t;
  };
  try {
    t0 = process.hrtime.bigint();
    for (const f of frames) {
      const attach = acquireAttachment(f);
      const fds = attach === 'fuse-device' ? [fuseFd] : attach === 'checkpoint-file' ? [file] : [];
      while (sendMessage(tx, { data: f, fds }) === null) {
        supervisorNs += process.hrtime.bigint() - t0;
        drain();
        t0 = process.hrtime.bigint();
      }
    }
    supervisorNs += process.hrtime.bigint() - t0;
  } finally {
    if (file >= 0) closeFd(file);
  }
  drain();
  if (!done) throw new Error('the sequence did not complete');
  return { supervisorMs: Number(supervisorNs) / 1e6, ownerMs: Number(ownerNs) / 1e6 };
}

export async function run(): Promise<void> {
  const [tx, rx] = createSocketPair('seqpacket');
  const [fuseStandIn, other] = createSocketPair('seqpacket');
  setSocketBuffer(tx, 'send', SEND_BUFFER);
  const rows: Record<string, Record<string, number>> = {};
  try {
    for (const keys of SIZES) {
      const state = stateOf(keys);
      const samples: Record<string, number[]> = { framesSupervisorMs: [], framesOwnerMs: [], fileSupervisorMs: [], fileOwnerMs: [] };
      for (let round = 0; round < WARMUP + ROUNDS; round++) {
        for (const variant of (round % 2 ? ['file', 'frames'] : ['frames', 'file']) as Variant[]) {
          const r = handOver(state, variant, tx, rx, fuseStandIn);
          if (round < WARMUP) continue;
          samples[`${variant}SupervisorMs`]!.push(r.supervisorMs);
          samples[`${variant}OwnerMs`]!.push(r.ownerMs);
        }
      }
      const row: Record<string, number> = {};
      for (const [k, v] of Object.entries(samples)) row[k] = Number(summarize(v).median.toFixed(3));
      row.framesTotalMs = Number((row.framesSupervisorMs! + row.framesOwnerMs!).toFixed(3));
      row.fileTotalMs = Number((row.fileSupervisorMs! + row.fileOwnerMs!).toFixed(3));
      row.fileOverFrames = Number((row.fileTotalMs / row.framesTotalMs).toFixed(2));
      rows[`keys${keys}`] = row;
    }
  } finally {
    closeAll([tx, rx, fuseStandIn, other]);
  }
  console.log(`checkpoint hand-over, frames vs CHECKPOINT_FILE (ms, medians of ${ROUNDS}; the supervisor switches above ${MAX_CHECKPOINT_FRAMES} keys):`);
  console.table(rows);
  writeResult('checkpoint', { rounds: ROUNDS, valueBytes: 120, sendBuffer: SEND_BUFFER, maxCheckpointFrames: MAX_CHECKPOINT_FRAMES, sizes: rows });
}
