// A mounted, initialised FUSE connection under a temp dir, for tests that need a real
// /dev/fuse fd without a FUSE server. Nobody answers requests on it: tests must not touch
// the mountpoint itself.
import { mkdtempSync, mkdirSync, rmSync, readdirSync, readlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { closeFd } from '../../../native/index.ts';
import { openFuseDevice } from '../../../kernel/device.ts';
import { mountFuse, unmountFuse, findMount } from '../../../kernel/mount.ts';
import { answerInit, type InitAgreement } from '../../../kernel/handshake.ts';
import { InitFlags } from '../../../kernel/abi.ts';

export interface TestConnection {
  fd: number;
  dir: string;
  mountpoint: string;
  agreed: InitAgreement;
  /** Unmounts, closes the fd and removes the temp dir. Idempotent. */
  cleanup(): void;
}

/** Mounts a connection and answers INIT asking for `flags` (default: passthrough). */
export async function mountTestConnection(flags = InitFlags.INIT_EXT | InitFlags.PASSTHROUGH): Promise<TestConnection> {
  const dir = mkdtempSync(join(tmpdir(), 'fusekeeper-test-'));
  const mountpoint = join(dir, 'mnt');
  mkdirSync(mountpoint);
  const fd = openFuseDevice();
  let done = false;
  const cleanup = (): void => {
    if (done) return;
    done = true;
    if (findMount(mountpoint)) unmountFuse(mountpoint, true);
    closeFd(fd);
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    mountFuse(fd, { mountpoint, fsName: 'fusekeeper-test', subtype: 'test' });
    const agreed = await answerInit(fd, flags);
    return { fd, dir, mountpoint, agreed, cleanup };
  } catch (err) {
    cleanup();
    throw err;
  }
}

/** This process's open fds and what each refers to. */
export function fdSnapshot(): Map<number, string> {
  const fds = new Map<number, string>();
  for (const name of readdirSync('/proc/self/fd')) {
    try {
      fds.set(Number(name), readlinkSync(`/proc/self/fd/${name}`));
    } catch {
      // the fd readdir used to list the directory, closed by now
    }
  }
  return fds;
}

// The runtime opens and closes these on its own (libuv loops, worker threads, io_uring).
const RUNTIME_FD = /^anon_inode:\[(eventpoll|eventfd|timerfd|io_uring)\]$/;

/**
 * Fds open now that were not open (with the same target) at `before`, runtime-internal
 * ones excepted: `fd -> target` strings, empty when nothing leaked. Counting fds alone is
 * not reliable: Node itself opens and closes some lazily.
 */
export function newFds(before: Map<number, string>): string[] {
  return [...fdSnapshot()]
    .filter(([fd, target]) => before.get(fd) !== target && !RUNTIME_FD.test(target))
    .map(([fd, target]) => `${fd} -> ${target}`);
}
