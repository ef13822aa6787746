// FuseServer with a session link, over a socket pair that stands in for /dev/fuse: INIT is
// saved before it is answered, a resumed server serves without INIT, intent records wrap
// non-idempotent requests, replays with a record are resolved, and the test-only fault hook
// kills the process between executing and answering.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FUSE_UNIQUE_RESEND, InitFlags, Opcode } from '../../kernel/abi.ts';
import type { SessionInit } from '../../client/fuse/server.ts';
import { decodeSessionInit } from '../../client/fuse/session-init.ts';
import { encodeIntent, intentOf } from '../../client/fuse/replay.ts';
import { parseRequest } from '../../client/fuse/codec.ts';
import type { SessionLink } from '../../client/session.ts';
import { MemFs, S_IFDIR } from './fixtures/memfs.ts';
import { settledInit, socketServer, type SocketServer } from './fixtures/socket-server.ts';
import { cstr, initIn, mkdirIn, request } from './fixtures/fuse-builder.ts';

const R = FUSE_UNIQUE_RESEND;
const mkdirReq = (unique: bigint, name: string): Buffer => request(Opcode.MKDIR, unique, 1n, [mkdirIn(0o755, 0), cstr(name)]);
const lookupReq = (unique: bigint, name: string): Buffer => request(Opcode.LOOKUP, unique, 1n, [cstr(name)]);

interface Recorded extends SessionLink {
  calls: string[];
  saved: Buffer[];
  /** Hook run inside each call, after recording it. */
  during?: (call: string) => void;
}

function recordingLink(): Recorded {
  const link: Recorded = {
    calls: [],
    saved: [],
    journalOpen: (id) => void link.calls.push(`journalOpen ${id}`),
    journalClose: (id) => void link.calls.push(`journalClose ${id}`),
    saveInit: (params) => {
      link.calls.push('saveInit');
      link.saved.push(params);
      link.during?.('saveInit');
    },
    checkpointPut: (key) => {
      link.calls.push(`put ${key}`);
      link.during?.(`put ${key}`);
    },
    checkpointDelete: (key) => {
      link.calls.push(`delete ${key}`);
      link.during?.(`delete ${key}`);
    },
    adopt: async () => ({ closed: 0, probed: 0 }),
  };
  return link;
}


async function withServer(s: SocketServer, f: () => Promise<void>): Promise<void> {
  try {
    await f();
  } finally {
    await s.close();
  }
}

describe('FuseServer with a session link', () => {
  test('INIT is saved through the link before the reply is written, and decodes to the settlement', async () => {
    const link = recordingLink();
    let replyBeforeSave: Buffer | undefined;
    const s = socketServer(new MemFs(), { init: { flags: InitFlags.HAS_RESEND, maxWrite: 4096 }, link });
    link.during = (call) => {
      if (call === 'saveInit') replyBeforeSave = s.tryReply();
    };
    await withServer(s, async () => {
      s.send(request(Opcode.INIT, 1n, 0n, [initIn(7, 45, 65536, Number(InitFlags.INIT_EXT), Number(InitFlags.HAS_RESEND >> 32n))]));
      const reply = await s.reply();
      assert.equal(reply.readInt32LE(4), 0);
      assert.equal(replyBeforeSave, undefined, 'no INIT reply was written before saveInit');
      assert.deepEqual(link.calls, ['saveInit']);
      assert.deepEqual(decodeSessionInit(link.saved[0]!), s.server.init);
      assert.ok((s.server.init!.flags & InitFlags.HAS_RESEND) !== 0n);
    });
  });

  test('a resumed server serves without INIT and reports the restored settlement', async () => {
    const fs = new MemFs();
    const d = fs.add(1n, 'd', S_IFDIR | 0o755);
    const link = recordingLink();
    const inits: SessionInit[] = [];
    const resume = settledInit();
    const s = socketServer(fs, { resume, link, onInit: (i) => inits.push(i) });
    await withServer(s, async () => {
      assert.deepEqual(inits, [resume]);
      s.send(lookupReq(2n, 'd'));
      const reply = await s.reply();
      assert.equal(reply.readInt32LE(4), 0);
      assert.equal(reply.readBigUInt64LE(16), d.nodeid);
      assert.deepEqual(link.calls, [], 'nothing saved again');
    });
  });

  test('onFirstReply fires once, after the first reply is written, with when its request was read', async () => {
    const fs = new MemFs();
    fs.add(1n, 'd', S_IFDIR | 0o755);
    const firsts: { readAt: bigint; repliedAt: bigint; op: string; replyWritten: boolean }[] = [];
    const startedAt = process.hrtime.bigint();
    const s: SocketServer = socketServer(fs, {
      resume: settledInit(),
      onFirstReply: (readAt, repliedAt, op) => firsts.push({ readAt, repliedAt, op, replyWritten: s.tryReply() !== undefined }),
    });
    await withServer(s, async () => {
      s.send(lookupReq(2n, 'd'));
      await new Promise((r) => setTimeout(r, 20));
      s.send(lookupReq(3n, 'missing'));
      assert.equal((await s.reply()).readBigUInt64LE(8), 3n);
      assert.equal(firsts.length, 1, 'once');
      const [first] = firsts;
      assert.equal(first!.op, 'lookup');
      assert.ok(first!.replyWritten, 'the reply was out when it fired');
      assert.ok(startedAt < first!.readAt && first!.readAt <= first!.repliedAt);
    });
  });

  test('a mkdir runs after its intent record is out, and the record goes after the reply is written', async () => {
    const fs = new MemFs();
    const link = recordingLink();
    const s = socketServer(fs, { resume: settledInit(), link });
    let callsWhenRun: string[] = [];
    let replyAtDelete: Buffer | undefined;
    const mkdir = fs.mkdir;
    fs.mkdir = (req) => {
      callsWhenRun = [...link.calls];
      return mkdir(req);
    };
    link.during = (call) => {
      if (call.startsWith('delete')) replyAtDelete = s.tryReply();
    };
    await withServer(s, async () => {
      s.send(mkdirReq(4n, 'd'));
      await new Promise((r) => setTimeout(r, 20));
      assert.deepEqual(callsWhenRun, ['put intent/4']);
      assert.ok(replyAtDelete, 'the reply was written when the record was deleted');
      assert.equal(replyAtDelete.readBigUInt64LE(8), 4n);
      assert.deepEqual(link.calls, ['put intent/4', 'delete intent/4']);
    });
  });

  test('a replayed mkdir the dead owner had done is answered from LOOKUP; stale records go with the first new request', async () => {
    const fs = new MemFs();
    const d = fs.add(1n, 'd', S_IFDIR | 0o755);
    const intent = (buf: Buffer): Buffer => {
      const r = parseRequest(buf);
      assert.ok(r.ok);
      return encodeIntent(intentOf(r.request)!);
    };
    const checkpoint = new Map([
      ['intent/8', intent(mkdirReq(8n, 'd'))],
      ['intent/6', intent(mkdirReq(6n, 'answered-before-the-crash'))],
    ]);
    const link = recordingLink();
    const replayed: bigint[] = [];
    const s = socketServer(fs, { resume: settledInit(), link, checkpoint, onReplayed: (u) => replayed.push(u) });
    await withServer(s, async () => {
      s.send(mkdirReq(8n | R, 'd'));
      const reply = await s.reply();
      assert.equal(reply.readInt32LE(4), 0, 'success, not EEXIST');
      assert.equal(reply.readBigUInt64LE(8), 8n | R);
      assert.equal(reply.readBigUInt64LE(16), d.nodeid);
      assert.equal(fs.ran.get('mkdir'), undefined);
      assert.deepEqual(replayed, [8n]);
      await new Promise((r) => setTimeout(r, 5));
      assert.deepEqual(link.calls, ['delete intent/8']);
      s.send(lookupReq(20n, 'd'));
      await s.reply();
      assert.deepEqual(link.calls, ['delete intent/8', 'delete intent/6']);
      // A replayed mkdir without a record never ran: it runs (and its own record is written).
      s.send(mkdirReq(9n | R, 'e'));
      assert.equal((await s.reply()).readInt32LE(4), 0);
      assert.equal(fs.ran.get('mkdir'), 1);
    });
  });

  test('a mkdir of a name that exists gets no intent record, so its replay fails with EEXIST too', async () => {
    const fs = new MemFs();
    fs.add(1n, 'd', S_IFDIR | 0o755);
    const link = recordingLink();
    const s = socketServer(fs, { resume: settledInit(), link });
    await withServer(s, async () => {
      s.send(mkdirReq(4n, 'd'));
      assert.equal((await s.reply()).readInt32LE(4), -17);
      await new Promise((r) => setTimeout(r, 5));
      assert.deepEqual(link.calls, [], 'no record written, none to delete');
    });
    // The owner died before answering; the next one gets the request again, and no record.
    const next = socketServer(fs, { resume: settledInit(), link, checkpoint: new Map() });
    await withServer(next, async () => {
      next.send(mkdirReq(4n | R, 'd'));
      assert.equal((await next.reply()).readInt32LE(4), -17, 'EEXIST, as the application was owed');
    });
  });
});

describe('test-only fault hook', () => {
  const child = new URL('./fixtures/fault-child.ts', import.meta.url).pathname;
  const run = (env: Record<string, string>, arg = 'mkdir') => spawnSync(process.execPath, ['--import', 'tsx', child, arg], { encoding: 'utf8', env: { ...process.env, ...env }, timeout: 30_000 });

  test('after-exec:mkdir kills the daemon after the handler ran and before the reply', () => {
    const r = run({ FUSEKEEPER_FAULT: 'after-exec:mkdir' });
    assert.equal(r.signal, 'SIGKILL', r.stderr);
    assert.equal(r.stdout, 'handler ran\n');
  });

  test('inert without the variable, for other ops, and for replayed requests', () => {
    for (const [env, arg] of [[{}, 'mkdir'], [{ FUSEKEEPER_FAULT: 'after-exec:unlink' }, 'mkdir'], [{ FUSEKEEPER_FAULT: 'after-exec:mkdir' }, 'mkdir-resent']] as const) {
      const r = run(env, arg);
      assert.equal(r.status, 0, `${JSON.stringify(env)} ${arg}: ${r.stderr}`);
      assert.equal(r.stdout, 'handler ran\nreplied\n');
    }
  });

  test('FUSEKEEPER_FAULT_ONCE fires in one process only', () => {
    const dir = mkdtempSync(join(tmpdir(), 'fusekeeper-fault-'));
    try {
      const env = { FUSEKEEPER_FAULT: 'after-exec:mkdir', FUSEKEEPER_FAULT_ONCE: join(dir, 'fired') };
      assert.equal(run(env).signal, 'SIGKILL');
      assert.ok(existsSync(join(dir, 'fired')));
      assert.equal(run(env).status, 0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
