import { backingCloseIfOpen, backingCloseAll } from '../kernel/backing.ts';
import { FuseKernelError } from '../kernel/errors.ts';
import type { BackingJournal } from './journal.ts';

/** How many consecutive unallocated ids end the probe above the journal. */
export const PROBE_WINDOW = 64;

/** What a cleanup did, for logs, status and metrics. */
export interface CleanupReport {
  strategy: 'close-all' | 'journal' | 'none';
  /** Journaled ids closed because the new owner did not adopt them. */
  closed: number;
  /** Ids found above the journal (opened, never reported) and closed. */
  probed: number;
  /** Journaled ids the kernel no longer knew (closed before the report reached us). */
  alreadyGone: number;
}

/**
 * Closes ids a dead owner opened but never reported: probes upwards from the journal's
 * `probeFrom` until `PROBE_WINDOW` consecutive ids are unknown to the kernel. Must run while
 * no owner holds the connection, or it would close the new owner's fresh ids.
 */
export function probeUnreported(fuseFd: number, journal: BackingJournal, window = PROBE_WINDOW): number {
  let probed = 0;
  let misses = 0;
  for (let id = journal.probeFrom; misses < window && id <= 0x7fffffff; id++) {
    if (journal.has(id)) continue;
    if (backingCloseIfOpen(fuseFd, id)) {
      probed++;
      misses = 0;
    } else {
      misses++;
    }
  }
  return probed;
}

/**
 * Closes each of `ids` (inherited ids the new owner did not adopt, from
 * `BackingJournal.settle`) that is still journaled, and removes it from the journal. Ids the
 * kernel no longer knows are dropped too.
 */
export function closeUnadopted(fuseFd: number, journal: BackingJournal, ids: Iterable<number>): { closed: number; alreadyGone: number } {
  let closed = 0;
  let alreadyGone = 0;
  for (const id of ids) {
    if (!journal.has(id)) continue;
    if (backingCloseIfOpen(fuseFd, id)) closed++;
    else alreadyGone++;
    journal.close(id);
  }
  return { closed, alreadyGone };
}

/**
 * The close-all strategy: one FUSE_DEV_IOC_BACKING_CLOSE_ALL. Returns null when the kernel
 * lacks the ioctl (the caller falls back to the journal strategy); throws `FuseKernelError`
 * when the kernel refused.
 */
export function closeAllBacking(fuseFd: number, journal: BackingJournal): CleanupReport | null {
  const result = backingCloseAll(fuseFd);
  if (result.status === 'unsupported') return null;
  if (result.status === 'not-permitted') {
    throw new FuseKernelError('ERR_PASSTHROUGH_NOT_READY', 'FUSE_DEV_IOC_BACKING_CLOSE_ALL refused (EPERM): passthrough not negotiated on this connection, or no CAP_SYS_ADMIN', 'EPERM');
  }
  if (result.status !== 'closed') {
    throw new FuseKernelError('ERR_KERNEL', `FUSE_DEV_IOC_BACKING_CLOSE_ALL failed: ${result.errno}`, result.errno);
  }
  const closed = journal.size;
  journal.clear();
  return { strategy: 'close-all', closed, probed: 0, alreadyGone: 0 };
}
