// Runs mirrorfs standalone: validates the arguments, mounts, serves until SIGINT/SIGTERM or
// an external unmount, then unmounts and closes everything.
import { realpathSync, statSync, writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { closeFd } from '../../native/index.ts';
import { InitFlags } from '../../kernel/abi.ts';
import { openFuseDevice } from '../../kernel/device.ts';
import { mountFuse, unmountFuse, findMount } from '../../kernel/mount.ts';
import { hasCapSysAdmin } from '../../kernel/doctor.ts';
import { FuseServer, type FuseLogger } from '../../client/fuse/server.ts';
import { BackingTable } from '../../client/fuse/passthrough.ts';
import { MirrorFs } from './mirrorfs.ts';

export interface MirrorRunOptions {
  source: string;
  mountpoint: string;
  debug: boolean;
  passthrough: boolean;
  allowOther: boolean;
  /** Where to write the daemon's counters (JSON) on SIGUSR2 and at exit. */
  statsFile?: string;
  log: FuseLogger;
}

/** A bad argument or environment, reported as one line with a non-zero exit. */
export class UsageError extends Error {}

/** Checks the arguments before anything is opened or mounted. */
export function validateMirrorArgs(sourceArg: string, mountpointArg: string): { source: string; mountpoint: string } {
  let source: string;
  try {
    source = realpathSync(sourceArg);
  } catch {
    throw new UsageError(`source ${sourceArg} does not exist`);
  }
  if (!statSync(source).isDirectory()) throw new UsageError(`source ${sourceArg} is not a directory`);
  const mountpoint = resolve(mountpointArg);
  let st;
  try {
    st = statSync(mountpoint);
  } catch {
    throw new UsageError(`mountpoint ${mountpointArg} does not exist`);
  }
  if (!st.isDirectory()) throw new UsageError(`mountpoint ${mountpointArg} is not a directory`);
  if (findMount(mountpoint)) throw new UsageError(`mountpoint ${mountpointArg} is busy: something is already mounted there`);
  if (mountpoint === source || mountpoint.startsWith(`${source}/`)) throw new UsageError(`mountpoint ${mountpointArg} is inside the source; mirroring it would recurse`);
  if (!hasCapSysAdmin()) throw new UsageError('mounting needs root or CAP_SYS_ADMIN');
  return { source, mountpoint };
}

/** Mounts and serves; resolves with the exit status once unmounted. */
export async function runMirror(opts: MirrorRunOptions): Promise<number> {
  const mirror = await MirrorFs.create({ source: opts.source, backing: null });
  const fd = openFuseDevice();
  let mounted = false;
  try {
    mountFuse(fd, { mountpoint: opts.mountpoint, fsName: 'mirrorfs', subtype: 'mirrorfs', allowOther: opts.allowOther, defaultPermissions: true });
    mounted = true;
    const server = new FuseServer(fd, mirror, {
      init: { flags: (opts.passthrough ? InitFlags.PASSTHROUGH : 0n) | InitFlags.HAS_RESEND | InitFlags.ASYNC_READ | InitFlags.PARALLEL_DIROPS | InitFlags.DO_READDIRPLUS | InitFlags.READDIRPLUS_AUTO | InitFlags.BIG_WRITES | InitFlags.ATOMIC_O_TRUNC | InitFlags.EXPORT_SUPPORT | InitFlags.HANDLE_KILLPRIV_V2 | InitFlags.SETXATTR_EXT, maxWrite: 1024 * 1024 },
      debug: opts.debug,
      log: opts.log,
      onInit: (init) => {
        if (init.passthrough) mirror.setBacking(new BackingTable(fd, true, {}, opts.log));
        opts.log.info({ event: 'mirrorfs.ready', source: opts.source, mountpoint: opts.mountpoint, passthrough: init.passthrough }, 'mirrorfs serving');
      },
    });
    const writeStats = (): void => {
      if (opts.statsFile) writeFileSync(opts.statsFile, `${JSON.stringify({ ...mirror.stats, requests: server.requests, nodes: mirror.nodes.size, openHandles: mirror.openHandles })}\n`);
    };
    const onSignal = (): void => {
      try {
        unmountFuse(opts.mountpoint);
      } catch {
        unmountFuse(opts.mountpoint, true);
      }
      mounted = false;
      server.stop('stopped');
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    process.on('SIGUSR2', writeStats);
    server.start();
    const reason = await server.done;
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    process.off('SIGUSR2', writeStats);
    if (reason === 'unmounted') mounted = findMount(opts.mountpoint) !== undefined;
    await server.idle();
    await mirror.closeAll();
    writeStats();
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
