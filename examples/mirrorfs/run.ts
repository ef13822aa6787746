// Runs mirrorfs, standalone or supervised.
//
// Standalone: validates the arguments, mounts, serves until SIGINT/SIGTERM or an external
// unmount, then unmounts and closes everything.
//
// Supervised (`socket`): acquires the session from the fusekeeper supervisor, which mounts
// the connection itself and keeps it across daemon crashes. A fresh session is served from
// INIT on; a resumed one restores the previous daemon's nodes and handles from the
// checkpoint, adopts its journaled backing ids, and is served without INIT. Exiting never
// unmounts: only `fusekeeper release NAME` does.
import { realpathSync, statSync, writeFileSync, promises as fsp } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { closeFd, createSocketPair } from '../../native/index.ts';
import { InitFlags } from '../../kernel/abi.ts';
import { openFuseDevice } from '../../kernel/device.ts';
import { mountFuse, unmountFuse, findMount } from '../../kernel/mount.ts';
import { hasCapSysAdmin } from '../../kernel/doctor.ts';
import { JournalEntries, sessionNameFromMountpoint, type MountSpec } from '../../protocol/index.ts';
import { connectSupervisor, type SupervisorClient } from '../../client/supervisor.ts';
import type { AcquiredSession, SessionLink } from '../../client/session.ts';
import { FuseServer, QUIET_LOGGER, type FuseLogger, type FuseServerOptions, type SessionInit, type StopReason } from '../../client/fuse/server.ts';
import { BackingTable, journalHooks, type BackingHooks } from '../../client/fuse/passthrough.ts';
import { decodeSessionInit, encodeSessionInit } from '../../client/fuse/session-init.ts';
import type { InitWanted } from '../../client/fuse/codec.ts';
import { MirrorFs } from './mirrorfs.ts';
import { HANDLE_KEY_PREFIX, readCheckpoint, type CheckpointSink } from './checkpoint.ts';

export interface MirrorRunOptions {
  source: string;
  mountpoint: string;
  debug: boolean;
  passthrough: boolean;
  /** Where the source's files are looked up, stat'ed and opened (MirrorOptions.metadataCalls); default `'pool'`. */
  metadataCalls?: 'main' | 'pool';
  allowOther: boolean;
  /** Where to write the daemon's counters (JSON) on SIGUSR2 and at exit. */
  statsFile?: string;
  log: FuseLogger;
  /** Supervised: the supervisor's control socket (a path or `@abstract`). */
  socket?: string;
  /** Supervised: the session name; default `sessionNameFromMountpoint(mountpoint)`. */
  name?: string;
  /**
   * Supervised: a standby. The ACQUIRE waits while the session has a live owner and is
   * answered the moment it dies.
   */
  standby?: boolean;
  /**
   * With `standby`: a warm spare, which does everything that does not need the session
   * before it asks (prepareStandby). A daemon restarted without a spare skips that: it
   * would only delay a session that is waiting for it.
   */
  spare?: boolean;
}

/** A bad argument or environment, reported as one line with a non-zero exit. */
export class UsageError extends Error {}

/**
 * Checks the arguments before anything is opened or mounted. Supervised, the mountpoint may
 * already be mounted (a session to resume) and is not touched: a stat of a mounted FUSE
 * directory would wait for the daemon that is about to serve it. It is made absolute, with
 * its parent's symlinks resolved, as the supervisor and /proc/self/mountinfo spell it.
 */
export function validateMirrorArgs(sourceArg: string, mountpointArg: string, opts: { supervised?: boolean } = {}): { source: string; mountpoint: string } {
  let source: string;
  try {
    source = realpathSync(sourceArg);
  } catch {
    throw new UsageError(`source ${sourceArg} does not exist`);
  }
  if (!statSync(source).isDirectory()) throw new UsageError(`source ${sourceArg} is not a directory`);
  let mountpoint = resolve(mountpointArg);
  if (opts.supervised && mountpoint !== '/') {
    try {
      mountpoint = join(realpathSync(dirname(mountpoint)), basename(mountpoint));
    } catch {
      throw new UsageError(`mountpoint ${mountpointArg} does not exist`);
    }
  }
  const mounted = findMount(mountpoint) !== undefined;
  if (!(opts.supervised && mounted)) {
    let st;
    try {
      st = statSync(mountpoint);
    } catch {
      throw new UsageError(`mountpoint ${mountpointArg} does not exist`);
    }
    if (!st.isDirectory()) throw new UsageError(`mountpoint ${mountpointArg} is not a directory`);
  }
  if (!opts.supervised && mounted) throw new UsageError(`mountpoint ${mountpointArg} is busy: something is already mounted there`);
  if (mountpoint === source || mountpoint.startsWith(`${source}/`)) throw new UsageError(`mountpoint ${mountpointArg} is inside the source; mirroring it would recurse`);
  // Supervised, the supervisor mounts; without CAP_SYS_ADMIN the kernel refuses backing
  // files and reads and writes go through the daemon.
  if (!opts.supervised && !hasCapSysAdmin()) throw new UsageError('mounting needs root or CAP_SYS_ADMIN');
  return { source, mountpoint };
}

/** What mirrorfs asks for in INIT. */
function initWanted(passthrough: boolean): InitWanted {
  return {
    flags:
      (passthrough ? InitFlags.PASSTHROUGH : 0n) |
      InitFlags.HAS_RESEND |
      InitFlags.ASYNC_READ |
      InitFlags.PARALLEL_DIROPS |
      InitFlags.DO_READDIRPLUS |
      InitFlags.READDIRPLUS_AUTO |
      InitFlags.BIG_WRITES |
      InitFlags.ATOMIC_O_TRUNC |
      InitFlags.EXPORT_SUPPORT |
      InitFlags.HANDLE_KILLPRIV_V2 |
      InitFlags.SETXATTR_EXT,
    maxWrite: 1024 * 1024,
  };
}

/** How the mount of a supervised mirrorfs session is set up. */
export function mirrorMountSpec(opts: Pick<MirrorRunOptions, 'mountpoint' | 'allowOther'>): MountSpec {
  return {
    mountpoint: opts.mountpoint,
    fsName: 'mirrorfs',
    subtype: 'mirrorfs',
    rootMode: 0o40755,
    uid: process.getuid?.() ?? 0,
    gid: process.getgid?.() ?? 0,
    allowOther: opts.allowOther,
    defaultPermissions: true,
    readOnly: false,
    maxRead: 0,
  };
}

interface ServeParams {
  fd: number;
  mirror: MirrorFs;
  opts: MirrorRunOptions;
  /** Resume, link, checkpoint, replay hook: what the supervised mode adds. */
  server?: Pick<FuseServerOptions, 'resume' | 'link' | 'checkpoint' | 'onReplayed' | 'onFirstReply'>;
  /** Journal hooks for the backing table made once INIT grants passthrough. */
  backingHooks?: BackingHooks;
  /** SIGINT/SIGTERM. */
  onSignal(server: FuseServer): void;
  /** The server is reading. */
  started?(server: FuseServer): void;
}

/** Serves until the loop ends; then waits for in-flight requests and closes the handles' fds. */
async function serveMirror(p: ServeParams): Promise<{ server: FuseServer; reason: StopReason }> {
  const { fd, mirror, opts } = p;
  const server = new FuseServer(fd, mirror, {
    ...p.server,
    init: initWanted(opts.passthrough),
    debug: opts.debug,
    log: opts.log,
    onInit: (init: SessionInit) => {
      if (init.passthrough && !mirror.hasBacking) mirror.setBacking(new BackingTable(fd, true, p.backingHooks, opts.log));
      opts.log.info({ event: 'mirrorfs.ready', source: opts.source, mountpoint: opts.mountpoint, passthrough: init.passthrough }, 'mirrorfs serving');
    },
  });
  const writeStats = (): void => {
    if (opts.statsFile) writeFileSync(opts.statsFile, `${JSON.stringify({ ...mirror.stats, requests: server.requests, nodes: mirror.nodes.size, openHandles: mirror.openHandles })}\n`);
  };
  const onSignal = (): void => p.onSignal(server);
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  process.on('SIGUSR2', writeStats);
  try {
    server.start();
    p.started?.(server);
    const reason = await server.done;
    await server.idle();
    await mirror.closeAll();
    writeStats();
    return { server, reason };
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    process.off('SIGUSR2', writeStats);
  }
}

/** Runs mirrorfs standalone or, with `opts.socket`, supervised; resolves with the exit status. */
export async function runMirror(opts: MirrorRunOptions): Promise<number> {
  return opts.socket === undefined ? runStandalone(opts) : runSupervised(opts, opts.socket);
}

/** Mounts and serves; resolves with the exit status once unmounted. */
async function runStandalone(opts: MirrorRunOptions): Promise<number> {
  const mirror = await MirrorFs.create({ source: opts.source, metadataCalls: opts.metadataCalls, backing: null });
  const fd = openFuseDevice();
  let mounted = false;
  try {
    mountFuse(fd, { mountpoint: opts.mountpoint, fsName: 'mirrorfs', subtype: 'mirrorfs', allowOther: opts.allowOther, defaultPermissions: true });
    mounted = true;
    const { reason } = await serveMirror({
      fd,
      mirror,
      opts,
      onSignal: (server) => {
        try {
          unmountFuse(opts.mountpoint);
        } catch {
          unmountFuse(opts.mountpoint, true);
        }
        mounted = false;
        server.stop('stopped');
      },
    });
    if (reason === 'unmounted') mounted = findMount(opts.mountpoint) !== undefined;
    return reason === 'error' ? 1 : 0;
  } finally {
    if (mounted) {
      try {
        unmountFuse(opts.mountpoint);
      } catch {
        unmountFuse(opts.mountpoint, true);
      }
    }
    closeFd(fd);
  }
}

/** Acquires the session from the supervisor and serves it; never unmounts. */
async function runSupervised(opts: MirrorRunOptions, socket: string): Promise<number> {
  const name = opts.name ?? sessionNameFromMountpoint(opts.mountpoint);
  let client: SupervisorClient;
  try {
    client = await connectSupervisor({ socket, clientName: `fusekeeper-mirrorfs[${process.pid}]`, log: opts.log });
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === 'ENOENT' || code === 'ECONNREFUSED') throw new UsageError(`no supervisor is listening on ${socket} (start one with \`fusekeeper serve\`)`);
    throw err;
  }
  try {
    // SIGINT or SIGTERM while the spare prepared: it stops before taking a session.
    if (opts.spare && !(await prepareStandby(opts))) return 0;
    const session = await client.acquire(name, mirrorMountSpec(opts), { standby: opts.standby === true, rehearse: opts.spare === true });
    try {
      return await serveSession(client, session, opts, process.hrtime.bigint());
    } finally {
      closeFd(session.fd);
    }
  } finally {
    // Disconnecting is how an owner leaves: the supervisor keeps the session mounted.
    client.close();
  }
}

/**
 * How many times a standby runs its rehearsal. V8 fills its property caches and moves a
 * function to faster code as it runs more often; on the failover bench 10 rehearsals against
 * 1 brought the standby from reading the first request to answering it from a p90 of 2.9 ms
 * to 0.25 ms, and the blackout median from 9.3 to 7.2 ms (about 50 ms more start-up).
 */
const STANDBY_REHEARSALS = 10;

/**
 * What a warm standby does before it waits, so that taking over costs only what needs the
 * session: the process is started, every module loaded and the supervisor connected by now;
 * this also starts libuv's thread pool (the first fs call on it creates the threads), checks
 * the source directory, and rehearses the request path (FuseServer.rehearse) on a scratch
 * mirror of the source that is thrown away: a few read-only requests, looking up and reading
 * the first regular file of the source root if there is one; then takes over a made-up
 * session resumed from that mirror's checkpoint (rehearseResume). All of it
 * STANDBY_REHEARSALS times. Resolves false when SIGINT or SIGTERM came during the take-over
 * rehearsal, whose handlers took it.
 */
async function prepareStandby(opts: MirrorRunOptions): Promise<boolean> {
  const root = await fsp.stat(opts.source);
  if (!root.isDirectory()) throw new UsageError(`source ${opts.source} is not a directory`);
  let name: string | undefined;
  const dir = await fsp.opendir(opts.source);
  for await (const e of dir) {
    name ??= e.name;
    if (e.isFile()) {
      name = e.name;
      break;
    }
  }
  // The scratch mirror's checkpoint as it stood while the rehearsal held the file open, so
  // that the resume path (decoding a checkpoint, restoring the tables, reopening a file
  // handle) is rehearsed too (measured on the failover bench: ACQUIRE answered -> serving
  // went from 2.5 to 2.1 ms median).
  const recorded = new Map<string, Buffer>();
  let whileOpen: Map<string, Buffer> | undefined;
  const recorder: CheckpointSink = {
    checkpointPut(key, value) {
      recorded.set(key, Buffer.from(value));
      if (key.startsWith(HANDLE_KEY_PREFIX)) whileOpen = new Map(recorded);
    },
    checkpointDelete(key) {
      recorded.delete(key);
    },
  };
  let rehearsal;
  for (let i = 0; i < STANDBY_REHEARSALS; i++) {
    recorded.clear();
    whileOpen = undefined;
    let settled: SessionInit | undefined;
    const scratch = await MirrorFs.create({ source: opts.source, metadataCalls: opts.metadataCalls, backing: null, checkpoint: { sink: recorder } });
    try {
      rehearsal = await FuseServer.rehearse(scratch, { init: initWanted(opts.passthrough), name, onInit: (init) => (settled = init) });
    } finally {
      await scratch.closeAll();
    }
    if (!(await rehearseResume(opts, whileOpen ?? recorded, settled))) return false;
  }
  opts.log.info({ event: 'mirrorfs.standby', source: opts.source, mountpoint: opts.mountpoint, pid: process.pid, rehearsal }, 'warm standby: waiting for the session');
  return true;
}

/**
 * Takes over a made-up session as a spare takes over the real one (serveSession), so that
 * the code a take-over runs once has run before it: decoding the checkpoint and the INIT
 * settlement, restoring the tables and reopening the handles, adopting, starting to serve
 * (Node's signal handling included). Measured on the failover bench (perf): at the take-over,
 * serveSession and serveMirror missed their property caches, built their object literals'
 * boilerplates and loaded Node's signal binding, which they had never run. The session is
 * resumed from `checkpoint` with settlement `init`, served on one end of a socket pair that
 * never turns readable, drained at once, and logs nothing; nothing reaches the supervisor.
 * Resolves false when SIGINT or SIGTERM came meanwhile.
 */
async function rehearseResume(opts: MirrorRunOptions, checkpoint: ReadonlyMap<string, Buffer>, init: SessionInit | undefined): Promise<boolean> {
  let pair: [number, number];
  try {
    pair = createSocketPair('seqpacket');
  } catch {
    return true; // no fds left now (EMFILE?): the rehearsal only warms the code up
  }
  const [fd, peer] = pair;
  let signalled = false;
  const onSignal = (): void => {
    signalled = true;
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    const session: AcquiredSession & SessionLink = {
      name: 'rehearsal',
      fd,
      resumed: true,
      generation: 0,
      strategy: 'journal',
      init: init ? encodeSessionInit(init) : null,
      checkpoint,
      journal: JournalEntries.EMPTY,
      journalOpen() {},
      journalClose() {},
      saveInit() {},
      checkpointPut() {},
      checkpointDelete() {},
      adopt: () => Promise.resolve({ closed: 0, probed: 0 }),
    };
    const drainAtOnce = { onDrainRequest: (cb: (name: string) => void) => cb(session.name), drained() {} };
    await serveSession(drainAtOnce, session, { ...opts, statsFile: undefined, log: QUIET_LOGGER }, process.hrtime.bigint());
  } finally {
    closeFd(fd);
    closeFd(peer);
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
  return !signalled;
}

async function serveSession(client: Pick<SupervisorClient, 'onDrainRequest' | 'drained'>, session: AcquiredSession & SessionLink, opts: MirrorRunOptions, acquiredAt: bigint): Promise<number> {
  const us = (): number => Number((process.hrtime.bigint() - acquiredAt) / 1000n);
  const resumeUs: Record<string, number> = {};
  const { fd, resumed } = session;
  // Resumed without saved INIT parameters: the previous owner died before answering INIT,
  // so the kernel sends it (again) and it is answered as on a fresh connection.
  const init = resumed && session.init ? decodeSessionInit(session.init) : undefined;
  const previous = resumed ? readCheckpoint(session.checkpoint) : undefined;
  resumeUs.checkpointRead = us();
  const mirror = await MirrorFs.create({ source: opts.source, metadataCalls: opts.metadataCalls, backing: null, checkpoint: { sink: session, previous } });
  resumeUs.restored = us();
  const backingHooks = journalHooks(session);
  opts.log.info(
    { event: 'mirrorfs.session', name: session.name, generation: session.generation, resumed, strategy: session.strategy, ...(mirror.restored ? { restored: mirror.restored } : {}) },
    resumed ? 'resuming the session of a previous daemon' : 'fresh session',
  );
  // A planned hand-over: stop reading, answer what was read, then say DRAINED and exit.
  let draining = false;
  let server: FuseServer | undefined;
  let adoptRefused = false;
  if (resumed) {
    const backing = init?.passthrough ? new BackingTable(fd, true, backingHooks, opts.log) : null;
    const adopted = backing && session.strategy === 'journal' ? backing.adoptJournal(session.journal, (dev, ino) => mirror.restoredBackingRefs(dev, ino)) : [];
    mirror.setBacking(backing);
    if (session.strategy === 'journal') {
      // Every ADOPT frame is sent before serving starts; ADOPTED is not waited for
      // (docs/protocol.md, ADOPT).
      resumeUs.adoptSent = us();
      session.adopt(adopted.map((e) => e.id)).then(
        ({ closed, probed }) => opts.log.info({ event: 'mirrorfs.adopted', adopted: adopted.length, closed, probed, afterUs: us() }, 'backing ids adopted'),
        (err: Error & { code?: string }) => {
          if (err.code !== 'EINVAL') {
            // The link broke; the client re-sends the kept journal when it reconnects.
            opts.log.warn({ event: 'mirrorfs.adopt_unanswered', err: err.message }, 'ADOPT was not answered');
            return;
          }
          // The supervisor did not take the list: ids in use here may be closed. Give the
          // session up so that the next owner adopts from an intact journal.
          adoptRefused = true;
          opts.log.error({ event: 'mirrorfs.adopt_refused', err: err.message }, 'the supervisor refused ADOPT; stopping');
          server?.stop('error');
        },
      );
    }
  }
  client.onDrainRequest(() => {
    draining = true;
    server?.stop('stopped');
  });
  const { reason } = await serveMirror({
    fd,
    mirror,
    opts,
    server: {
      resume: init,
      link: session,
      checkpoint: resumed ? session.checkpoint : undefined,
      onReplayed: mirror.replayed,
      // The end of a take-over as applications see it: their first answer.
      onFirstReply: resumed
        ? (readAt, repliedAt, op) => {
            const sinceAcquired = (t: bigint): number => Number((t - acquiredAt) / 1000n);
            // acquiredAt: CLOCK_MONOTONIC ns, to line the take-over up with other processes' clocks.
            opts.log.info(
              { event: 'mirrorfs.first_reply', generation: session.generation, op, acquiredAt: String(acquiredAt), resumeUs: { firstRead: sinceAcquired(readAt), firstReply: sinceAcquired(repliedAt) } },
              'answered the first request of the resumed session',
            );
          }
        : undefined,
    },
    backingHooks,
    started: (s) => {
      server = s;
      if (adoptRefused) s.stop('error');
      if (resumed) {
        resumeUs.serving = us();
        // From the ACQUIRE state sequence received to reading /dev/fuse, per step (µs).
        opts.log.info({ event: 'mirrorfs.resumed', generation: session.generation, checkpointKeys: session.checkpoint.size, journal: session.journal.length, resumeUs }, 'serving the resumed session');
      }
      if (draining) s.stop('stopped');
    },
    // Stop serving; the session stays mounted for the next daemon.
    onSignal: (s) => s.stop('stopped'),
  });
  if (draining) {
    // Every request read is answered and its state sent: the next owner can take over.
    client.drained();
    opts.log.info({ event: 'mirrorfs.drained', name: session.name }, 'drained; exiting for the next daemon');
  }
  return reason === 'error' ? 1 : 0;
}
