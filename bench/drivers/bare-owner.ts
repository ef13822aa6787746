// The minimal daemon of bench/failover.ts's "bare hand-over": no filesystem to restore, no
// modules beyond the SDK and the FUSE request loop. It connects, acquires as a warm standby,
// and serves a tiny in-memory filesystem (files p0..p15 of 4 KiB in the root, every entry and
// attribute with a zero timeout, so each stat/open of the probe reaches the daemon). On a
// resumed session it sends ADOPT with no backing id (the supervisor closes every journaled
// one) and serves without waiting for ADOPTED, as a daemon with nothing open would. With `backing` it then registers COUNT real
// backing ids on files of DIR and journals each, so that the next hand-over has them to clean.
// Prints JSON lines with CLOCK_MONOTONIC times (ns, process.hrtime.bigint()):
//   {"event":"serving", pid, generation, resumed, acquiredAt, servingAt}
//   {"event":"adopted", adoptedAt}   (resumed: when ADOPTED arrived)
//   {"event":"first-request", op, firstRequestAt}   (resumed: its first request reached a handler,
//                                                     whose answer is written in the same turn)
//   {"event":"registered", count}
// With `hold` it instead acquires that many extra sessions (HOLD_DIR/<i>, named NAME-<i>),
// answers nothing, prints {"event":"holding"} and sleeps: sessions that only make the
// supervisor hold more.
//   argv: JSON { socket, name, mount, backing?: { dir, count, delayMs }, hold?: { count, dir } }
// (a resumed owner registers its backing ids `delayMs` after it started serving, so that
// registering does not overlap the hand-over being measured)
import { openSync, closeSync, fstatSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { connectSupervisor } from '../../client/supervisor.ts';
import { FuseServer, type FuseOperations, type RequestOf } from '../../client/fuse/server.ts';
import { replyAttr, replyData, replyEmpty, replyEntry, replyOpen } from '../../client/fuse/codec.ts';
import { FuseError } from '../../client/fuse/errors.ts';
import { decodeSessionInit } from '../../client/fuse/session-init.ts';
import { backingOpen } from '../../kernel/backing.ts';
import { InitFlags, type Attr } from '../../kernel/abi.ts';
import type { MountSpec } from '../../protocol/index.ts';

interface Config {
  socket: string;
  name: string;
  mount: MountSpec;
  backing?: { dir: string; count: number; delayMs?: number };
  hold?: { count: number; dir: string };
}

const cfg = JSON.parse(process.argv[2]!) as Config;
const out = (o: Record<string, unknown>): void => {
  process.stdout.write(`${JSON.stringify(o, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v))}\n`);
};

if (cfg.hold) {
  const clients = [];
  for (let i = 0; i < cfg.hold.count; i++) {
    const mountpoint = join(cfg.hold.dir, String(i));
    mkdirSync(mountpoint, { recursive: true });
    const c = await connectSupervisor({ socket: cfg.socket, clientName: `bare hold ${i}`, heartbeatMs: 0, reconnect: false });
    await c.acquire(`${cfg.name}-${i}`, { ...cfg.mount, mountpoint });
    clients.push(c);
  }
  out({ event: 'holding', count: clients.length });
  setInterval(() => {}, 1 << 30);
} else {
  const FILES = 16;
  const SIZE = 4096;
  const data = Buffer.alloc(SIZE, 0x62);
  const attr = (nodeid: bigint): Attr => ({
    ino: nodeid,
    size: nodeid === 1n ? 0n : BigInt(SIZE),
    blocks: nodeid === 1n ? 0n : 8n,
    atime: 0n,
    mtime: 0n,
    ctime: 0n,
    atimensec: 0,
    mtimensec: 0,
    ctimensec: 0,
    mode: nodeid === 1n ? 0o40755 : 0o100644,
    nlink: nodeid === 1n ? 2 : 1,
    uid: 0,
    gid: 0,
    rdev: 0,
    blksize: 4096,
    flags: 0,
  });
  const file = (nodeid: bigint): bigint => {
    if (nodeid < 1n || nodeid > BigInt(FILES + 1)) throw new FuseError('ENOENT');
    return nodeid;
  };
  const ops: FuseOperations = {
    lookup: (req: RequestOf<'lookup'>) => {
      const m = /^p(\d+)$/.exec(req.name);
      if (req.header.nodeid !== 1n || !m || Number(m[1]) >= FILES) throw new FuseError('ENOENT');
      const nodeid = BigInt(Number(m[1]) + 2);
      return replyEntry(req.header.unique, { nodeid, generation: 0n, entryValid: 0n, attrValid: 0n, attr: attr(nodeid) });
    },
    getattr: (req: RequestOf<'getattr'>) => replyAttr(req.header.unique, { attrValid: 0n, attr: attr(file(req.header.nodeid)) }),
    open: (req: RequestOf<'open'>) => replyOpen(req.header.unique, { fh: file(req.header.nodeid), openFlags: 0 }),
    read: (req: RequestOf<'read'>) => {
      const off = Math.min(SIZE, Number(req.offset));
      return replyData(req.header.unique, data.subarray(off, Math.min(SIZE, off + req.size)));
    },
    flush: (req: RequestOf<'flush'>) => replyEmpty(req.header.unique),
    release: (req: RequestOf<'release'>) => replyEmpty(req.header.unique),
    forget: () => {},
    batch_forget: () => {},
  };

  // After a take-over, the first request to reach a handler is stamped (then no more).
  let stampNextRequest = false;
  for (const [name, handler] of Object.entries(ops) as [string, (...args: unknown[]) => unknown][]) {
    (ops as Record<string, unknown>)[name] = (...args: unknown[]): unknown => {
      if (stampNextRequest) {
        stampNextRequest = false;
        const firstRequestAt = process.hrtime.bigint();
        setImmediate(() => out({ event: 'first-request', op: name, firstRequestAt }));
      }
      return handler(...args);
    };
  }

  const init = { flags: InitFlags.PASSTHROUGH | InitFlags.HAS_RESEND | InitFlags.ASYNC_READ, maxWrite: 128 * 1024 };
  // A warm standby has run its request path once before it waits (client/fuse/rehearsal.ts).
  await FuseServer.rehearse(ops, { init, name: 'p0' });
  const client = await connectSupervisor({ socket: cfg.socket, clientName: `bare owner ${process.pid}`, heartbeatMs: 0, reconnect: false });
  out({ event: 'connected', pid: process.pid });
  const session = await client.acquire(cfg.name, cfg.mount, { standby: true, rehearse: true });
  const acquiredAt = process.hrtime.bigint();
  const register = (): void => {
    if (!cfg.backing) return;
    for (let i = 0; i < cfg.backing.count; i++) {
      const fd = openSync(join(cfg.backing.dir, String(i)), 'r');
      const id = backingOpen(session.fd, fd);
      const st = fstatSync(fd, { bigint: true });
      session.journalOpen(id, st.dev, st.ino);
      closeSync(fd);
    }
    out({ event: 'registered', count: cfg.backing.count });
  };
  const resume = session.resumed && session.init ? decodeSessionInit(session.init) : undefined;
  if (session.resumed && session.strategy === 'journal') {
    session.adopt([]).then(
      () => out({ event: 'adopted', adoptedAt: process.hrtime.bigint() }),
      (err: Error) => {
        process.stderr.write(`ADOPT failed: ${err.message}\n`);
        process.exit(1);
      },
    );
  }
  const server = new FuseServer(session.fd, ops, {
    init,
    resume,
    link: session,
    log: { info() {}, warn: (o, m) => process.stderr.write(`${m} ${JSON.stringify(o)}\n`), error: (o, m) => process.stderr.write(`${m} ${JSON.stringify(o)}\n`) },
    onInit: (init) => {
      if (!session.resumed && init.passthrough) setImmediate(register);
    },
  });
  server.start();
  stampNextRequest = session.resumed;
  const servingAt = process.hrtime.bigint();
  out({ event: 'serving', pid: process.pid, generation: session.generation, resumed: session.resumed, acquiredAt, servingAt });
  if (session.resumed) setTimeout(register, cfg.backing?.delayMs ?? 0);
}
