// mirrorfs state in the session checkpoint (examples/mirrorfs/checkpoint.ts): record round
// trips, a NodeTable kept in step through its observer and restored from what was written,
// and a MirrorFs restored from another's checkpoint over a real temp dir (no FUSE needed:
// the operations are called directly with requests from the wire builder).
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { constants as fsc, mkdtempSync, mkdirSync, renameSync, rmSync, writeFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FUSE_UNIQUE_RESEND, Opcode } from '../../kernel/abi.ts';
import { MAX_CHECKPOINT_VALUE } from '../../protocol/limits.ts';
import type { FuseRequest } from '../../client/fuse/codec.ts';
import { NodeTable, type NodeRecord } from '../../examples/mirrorfs/nodes.ts';
import {
  CheckpointWriter,
  NODEID_LEASE,
  decodeHandleRecord,
  decodeNodeRecord,
  encodeHandleRecord,
  encodeNodeRecord,
  readCheckpoint,
  type CheckpointSink,
  type HandleRecord,
} from '../../examples/mirrorfs/checkpoint.ts';
import { MirrorFs, SourceMismatchError } from '../../examples/mirrorfs/mirrorfs.ts';
import { fhOf, mirrorRequest, nodeidOf, runOp } from './fixtures/mirror-requests.ts';

const DEV = 42n;

/** A checkpoint as the supervisor keeps it: the last put per key, deletes applied. */
function mapSink(): CheckpointSink & { map: Map<string, Buffer>; puts: string[]; values: Buffer[] } {
  const map = new Map<string, Buffer>();
  const puts: string[] = [];
  const values: Buffer[] = [];
  return {
    map,
    puts,
    values,
    checkpointPut: (k, v) => {
      puts.push(k);
      values.push(v);
      map.set(k, Buffer.from(v));
    },
    checkpointDelete: (k) => void map.delete(k),
  };
}

const sorted = (recs: NodeRecord[]): NodeRecord[] => [...recs].sort((a, b) => Number(BigInt(a[0]) - BigInt(b[0])));

describe('checkpoint records', () => {
  test('node records round trip, with and without links and the removed mark', () => {
    for (const rec of [['2', 'a/b', '42', '10', '3'], ['3', 'x', '42', '11', '1', { links: ['y', 'z/w'] }], ['4', 'gone', '42', '12', '2', { removed: true }]] as NodeRecord[]) {
      assert.deepEqual(decodeNodeRecord(encodeNodeRecord(rec)), rec);
    }
  });

  test('a node record over the value limit sheds hard-link names until it fits', () => {
    const long = 'n'.repeat(4000);
    const links = Array.from({ length: 20 }, (_, i) => `${long}${i}`);
    const buf = encodeNodeRecord(['5', 'p', '42', '13', '1', { links, removed: true }]);
    assert.ok(buf.length <= MAX_CHECKPOINT_VALUE);
    const back = decodeNodeRecord(buf);
    assert.deepEqual(back.slice(0, 5), ['5', 'p', '42', '13', '1']);
    const extra = back[5]!;
    assert.equal(extra.removed, true);
    assert.deepEqual(extra.links, links.slice(0, extra.links!.length));
    assert.ok(extra.links!.length < 20 && extra.links!.length > 10);
  });

  test('handle records round trip 64-bit fields; garbage is refused', () => {
    const h: HandleRecord = { kind: 'file', nodeid: (1n << 64n) - 1n, flags: fsc.O_RDWR | fsc.O_APPEND, dev: 1n << 40n, ino: 1n << 63n, backingId: 0x7fffffff, unique: (1n << 63n) - 2n };
    assert.deepEqual(decodeHandleRecord(encodeHandleRecord(h)), h);
    for (const bad of ['null', '[]', '{"kind":"pipe"}', JSON.stringify({ ...JSON.parse(encodeHandleRecord(h).toString()), nodeid: 5 }), JSON.stringify({ ...JSON.parse(encodeHandleRecord(h).toString()), backingId: -1 })]) {
      assert.throws(() => decodeHandleRecord(Buffer.from(bad)), TypeError, bad);
    }
    for (const bad of ['{}', '["2","p","42"]', '["2",5,"42","10","1"]', '["2","p","42","10","x"]', '["2","p","42","10","1",{"links":[1]}]']) {
      assert.throws(() => decodeNodeRecord(Buffer.from(bad)), TypeError, bad);
    }
  });

  test('readCheckpoint takes our keys, leaves intent records alone and lists what does not decode', () => {
    const cp = readCheckpoint(
      new Map([
        ['node/2', encodeNodeRecord(['2', 'a', '42', '10', '1'])],
        ['node/3', encodeNodeRecord(['4', 'b', '42', '11', '1'])],
        ['fh/7', encodeHandleRecord({ kind: 'dir', nodeid: 2n, flags: 0, dev: 0n, ino: 0n, backingId: 0, unique: 9n })],
        ['fh/x', encodeHandleRecord({ kind: 'dir', nodeid: 2n, flags: 0, dev: 0n, ino: 0n, backingId: 0, unique: 9n })],
        ['nodes/next', Buffer.from('"1026"')],
        ['intent/5', Buffer.from([1, 2, 3])],
      ]),
    );
    assert.deepEqual(cp.nodes, [['2', 'a', '42', '10', '1']]);
    assert.deepEqual([...cp.handles.keys()], [7n]);
    assert.equal(cp.nextNodeid, 1026n);
    assert.deepEqual(cp.malformed.sort(), ['fh/x', 'node/3']);
  });
});

describe('NodeTable through CheckpointWriter', () => {
  test('every change reaches the checkpoint; a table restored from it is the same table', () => {
    const sink = mapSink();
    const t = new NodeTable(DEV, 2n);
    new CheckpointWriter(sink).attach(t);
    const a = t.remember('a', DEV, 10n);
    t.remember('a/b', DEV, 11n);
    t.remember('a/b/c', DEV, 12n);
    t.remember('a', DEV, 10n); // nlookup 2
    const h = t.remember('h1', DEV, 13n);
    t.remember('h2', DEV, 13n); // a hard link: h1 becomes an alternative name
    const gone = t.remember('gone', DEV, 14n);
    t.forget(gone.nodeid, 1n);
    t.renamed('a', 'z'); // moves the subtree
    t.remember('x', DEV, 15n);
    t.remember('y', DEV, 16n);
    t.exchanged('x', 'y');
    t.unlinked('h2');
    t.forget(a.nodeid, 1n);
    assert.equal(sink.map.has(`node/${gone.nodeid}`), false, 'a forgotten node is deleted');
    const paths = sink.puts.flatMap((k, i) => (k.startsWith('node/') ? [decodeNodeRecord(sink.values[i]!)[1]] : []));
    assert.ok(paths.includes('y') && !paths.some((p) => p.includes('\0')), 'no intermediate state of an exchange is put');
    const cp = readCheckpoint(sink.map);
    assert.deepEqual(cp.malformed, []);
    const restored = new NodeTable(DEV, 2n);
    restored.restore(cp.nodes);
    assert.deepEqual(sorted(restored.records()), sorted(t.records()));
    assert.equal(restored.get(h.nodeid)!.path, 'h1');
    assert.equal(restored.get(1n)!.ino, 2n, 'the root stays without a record');
  });

  test('nodeids are leased ahead: after a restore no nodeid is handed out twice, forgotten ones included', () => {
    const sink = mapSink();
    const t = new NodeTable(DEV, 2n);
    new CheckpointWriter(sink).attach(t);
    const ids: bigint[] = [];
    for (let i = 0; i < 5; i++) ids.push(t.remember(`f${i}`, DEV, 100n + BigInt(i)).nodeid);
    for (const id of ids.slice(1)) t.forget(id, 1n);
    const leasePuts = sink.puts.filter((k) => k === 'nodes/next').length;
    assert.equal(leasePuts, 1, 'one lease put covers many new nodes');
    const cp = readCheckpoint(sink.map);
    assert.equal(cp.nextNodeid, 2n + NODEID_LEASE);
    const r = new NodeTable(DEV, 2n);
    r.restore(cp.nodes);
    r.continueFrom(cp.nextNodeid);
    const writer = new CheckpointWriter(sink, cp.nextNodeid);
    writer.attach(r);
    assert.equal(readCheckpoint(sink.map).nextNodeid, cp.nextNodeid + NODEID_LEASE, 'the new owner leases past the old lease at once');
    const fresh = r.remember('new', DEV, 200n);
    assert.ok(fresh.nodeid >= cp.nextNodeid && !ids.includes(fresh.nodeid));
  });
});

describe('MirrorFs restored from a checkpoint', () => {
  let dir: string;
  let source: string;
  const R = FUSE_UNIQUE_RESEND;
  const req = mirrorRequest;
  /** The operation's reply, or an error reply with the errno it threw (EIO without one). */
  const call = async (fs: MirrorFs, r: FuseRequest): Promise<Buffer> => {
    try {
      return await runOp(fs, r);
    } catch (err) {
      const e = err as { errno?: number };
      const b = Buffer.alloc(16);
      b.writeInt32LE(-(e.errno ?? 5), 4);
      return b;
    }
  };
  const errnoOf = (reply: Buffer): number => Math.abs(reply.readInt32LE(4));

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'fusekeeper-cp-'));
    source = join(dir, 'src');
    mkdirSync(join(source, 'sub'), { recursive: true });
    writeFileSync(join(source, 'sub', 'kept.txt'), 'kept contents');
    writeFileSync(join(source, 'replaced.txt'), 'old');
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  test('nodes, lookup counts and handles come back; handles work, RELEASE and FORGET are answered', async () => {
    const sink = mapSink();
    const first = await MirrorFs.create({ source, backing: null, checkpoint: { sink } });
    const sub = nodeidOf(await call(first, req.lookup(2n, 1n, 'sub')));
    const kept = nodeidOf(await call(first, req.lookup(3n, sub, 'kept.txt')));
    await call(first, req.lookup(4n, sub, 'kept.txt'));
    const keptFh = fhOf(await call(first, req.open(5n, kept, fsc.O_RDWR | fsc.O_TRUNC)));
    const replaced = nodeidOf(await call(first, req.lookup(6n, 1n, 'replaced.txt')));
    const replacedFh = fhOf(await call(first, req.open(7n, replaced, fsc.O_RDONLY)));
    const dirFh = fhOf(await call(first, req.opendir(8n, sub)));
    const created = await call(first, req.create(9n, 1n, 'new.txt', fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL));
    assert.equal(errnoOf(created), 0);
    const createdFh = fhOf(created, 16 + 128);
    await call(first, req.mkdir(10n, 1n, 'made'));
    const ownRecords = sorted(first.nodes.records());
    // The previous daemon "dies": its fds go, its checkpoint stays. Meanwhile replaced.txt is
    // replaced by another file under the same name.
    await first.closeAll();
    writeFileSync(join(source, 'sub', 'kept.txt'), 'kept contents');
    renameSync(join(source, 'replaced.txt'), join(dir, 'moved-away'));
    writeFileSync(join(source, 'replaced.txt'), 'another file');
    // ...and the old file is gone for good (kept, a root daemon would find it by its file handle).
    rmSync(join(dir, 'moved-away'));

    const sink2 = mapSink();
    for (const [k, v] of sink.map) sink2.map.set(k, v);
    const second = await MirrorFs.create({ source, backing: null, checkpoint: { sink: sink2, previous: readCheckpoint(sink.map) } });
    assert.deepEqual(second.restored, { nodes: ownRecords.length, files: 3, dirs: 1, unavailable: 1, malformed: [] });
    assert.deepEqual(sorted(second.nodes.records()), ownRecords);
    assert.equal(second.nodes.get(kept)!.nlookup, 2n);

    const data = await call(second, req.read(20n, keptFh, 100));
    assert.equal(data.subarray(16).toString(), 'kept contents', 'reopening with the saved flags did not truncate again');
    assert.equal(errnoOf(await call(second, req.read(21n, replacedFh, 10))), 5, 'a handle whose file is gone reads EIO');
    const listing = await call(second, req.readdir(22n, dirFh, 2n));
    assert.ok(listing.subarray(16).includes(Buffer.from('kept.txt')), 'a restored directory handle re-lists lazily');

    // New handles and nodes continue above the restored ones.
    const newFh = fhOf(await call(second, req.open(23n, kept, fsc.O_RDONLY)));
    assert.ok(newFh > createdFh && newFh > dirFh);
    const other = nodeidOf(await call(second, req.lookup(24n, 1n, 'replaced.txt')));
    assert.ok(other > BigInt(ownRecords.at(-1)![0]));

    // RELEASE of the previous generation's handles, available or not, and FORGET of its nodes.
    for (const [fh, op] of [[keptFh, Opcode.RELEASE], [replacedFh, Opcode.RELEASE], [dirFh, Opcode.RELEASEDIR], [createdFh, Opcode.RELEASE]] as const) {
      assert.equal(errnoOf(await call(second, req.release(30n + fh, op, fh))), 0);
      assert.equal(sink2.map.has(`fh/${fh}`), false);
    }
    assert.equal(errnoOf(await call(second, req.release(40n, Opcode.RELEASE, keptFh))), 9, 'released twice: EBADF');
    assert.equal(errnoOf(await call(second, req.release(41n | R, Opcode.RELEASE, keptFh))), 0, 'a replayed RELEASE of a released handle is done');
    await call(second, req.forget(42n, kept, 2n));
    assert.equal(second.nodes.get(kept), undefined);
    assert.equal(sink2.map.has(`node/${kept}`), false);
    await call(second, req.release(43n, Opcode.RELEASE, newFh));
    assert.equal(second.openHandles, 0);
    await second.closeAll();
  });

  test('a handle opened for a request that comes back replayed is dropped before it runs again', async () => {
    const sink = mapSink();
    const first = await MirrorFs.create({ source, backing: null, checkpoint: { sink } });
    const sub = nodeidOf(await call(first, req.lookup(2n, 1n, 'sub')));
    const kept = nodeidOf(await call(first, req.lookup(3n, sub, 'kept.txt')));
    const answered = fhOf(await call(first, req.open(4n, kept, fsc.O_RDONLY)));
    const unanswered = fhOf(await call(first, req.open(5n, kept, fsc.O_RDONLY)));
    await first.closeAll();
    // Pretend both used backing id 3: a journal adoption would count them.
    for (const fh of [answered, unanswered]) {
      const rec = decodeHandleRecord(sink.map.get(`fh/${fh}`)!);
      sink.map.set(`fh/${fh}`, encodeHandleRecord({ ...rec, backingId: 3 }));
    }
    const st = statSync(join(source, 'sub', 'kept.txt'), { bigint: true });
    const second = await MirrorFs.create({ source, backing: null, checkpoint: { sink, previous: readCheckpoint(sink.map) } });
    assert.equal(second.restoredBackingRefs(st.dev, st.ino), 2);
    second.replayed(5n);
    assert.equal(second.openHandles, 1);
    assert.equal(sink.map.has(`fh/${unanswered}`), false);
    assert.equal(second.restoredBackingRefs(st.dev, st.ino), 1);
    // No backing table adopted the id: the handle keeps no id, and its record says so.
    second.setBacking(null);
    assert.equal(second.restoredBackingRefs(st.dev, st.ino), 0);
    assert.equal(decodeHandleRecord(sink.map.get(`fh/${answered}`)!).backingId, 0);
    await second.closeAll();
  });

  test('a checkpoint of another source directory is refused', async () => {
    const sink = mapSink();
    await MirrorFs.create({ source, backing: null, checkpoint: { sink } });
    const other = join(dir, 'other');
    mkdirSync(other);
    await assert.rejects(MirrorFs.create({ source: other, backing: null, checkpoint: { sink: mapSink(), previous: readCheckpoint(sink.map) } }), SourceMismatchError);
  });
});
