import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import { findMount } from './mount.ts';
import { mountFs } from '../native/index.ts';

/** Where the kernel's fusectl filesystem is normally mounted. */
export const FUSECTL_DIR = '/sys/fs/fuse/connections';

/**
 * The FUSE connection id of the mount at `mountpoint`: the minor number of its anonymous
 * device, which names its directory under /sys/fs/fuse/connections. `undefined` when
 * nothing FUSE is mounted there.
 */
export function connectionId(mountpoint: string): number | undefined {
  const m = findMount(mountpoint);
  if (!m || !(m.fstype === 'fuse' || m.fstype.startsWith('fuse.'))) return undefined;
  return m.minor;
}

/** Mounts fusectl on /sys/fs/fuse/connections if it is not there yet. Throws `NativeError`. */
export function ensureFusectl(): void {
  if (existsSync(`${FUSECTL_DIR}/`) && findMount(FUSECTL_DIR)) return;
  mountFs('fusectl', FUSECTL_DIR, 'fusectl', 0, '');
}

/** Number of requests of connection `id` waiting for an answer (`waiting` in fusectl). */
export function waitingRequests(id: number): number {
  return Number(readFileSync(`${FUSECTL_DIR}/${id}/waiting`, 'utf8').trim());
}

/**
 * Aborts connection `id`: requests already waiting fail with `ECONNABORTED`, later ones with
 * `ENOTCONN`, and the daemon's reads get `ENODEV`. For a daemon that never comes back.
 */
export function abortConnection(id: number): void {
  writeFileSync(`${FUSECTL_DIR}/${id}/abort`, '1');
}
