// A mounted, initialised FUSE connection under a temp dir, for tests that need a real
// /dev/fuse fd without a FUSE server. Nobody answers requests on it: tests must not touch
// the mountpoint itself.
import { mkdtempSync, mkdirSync, rmSync, readdirSync } from 'node:fs';
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

/** Number of open fds of this process. */
export function openFdCount(): number {
  return readdirSync('/proc/self/fd').length;
}
