import { readFileSync } from 'node:fs';
import { mountFs, unmountFs, MS, MNT, NativeError } from '../native/index.ts';
import { FuseKernelError } from './errors.ts';
import { assertFuseDevice } from './device.ts';

/** How to mount a FUSE connection. */
export interface FuseMountOptions {
  /** Mounted-on directory (absolute path). */
  mountpoint: string;
  /** Shown as the source in /proc/mounts (`fsname`). Default `fusekeeper`. */
  fsName?: string;
  /** The type becomes `fuse.<subtype>`. Default `fusekeeper`. */
  subtype?: string;
  /** File mode of the root directory, type bits included. Default `0o40755`. */
  rootMode?: number;
  /** Owner uid/gid of the connection: the kernel only lets this user in unless `allowOther`. Default: this process. */
  userId?: number;
  groupId?: number;
  /** Let users other than `userId` access the mount. */
  allowOther?: boolean;
  /** Let the kernel check permissions from the file modes. */
  defaultPermissions?: boolean;
  /** Largest READ the kernel sends. */
  maxRead?: number;
  readOnly?: boolean;
  noSuid?: boolean;
  noDev?: boolean;
  noExec?: boolean;
}

const SAFE_NAME = /^[A-Za-z0-9_.@:+-]{1,64}$/;

/** The mount(2) data string for `fd` and `opts` (pure; exported for tests). */
export function fuseMountData(fd: number, opts: FuseMountOptions): string {
  const parts = [
    `fd=${fd}`,
    `rootmode=${(opts.rootMode ?? 0o40755).toString(8)}`,
    `user_id=${opts.userId ?? process.getuid?.() ?? 0}`,
    `group_id=${opts.groupId ?? process.getgid?.() ?? 0}`,
  ];
  if (opts.allowOther) parts.push('allow_other');
  if (opts.defaultPermissions) parts.push('default_permissions');
  if (opts.maxRead !== undefined) parts.push(`max_read=${opts.maxRead}`);
  return parts.join(',');
}

/**
 * Mounts the FUSE connection behind `fuseFd` (an open `/dev/fuse` fd) on `opts.mountpoint`.
 * The kernel queues `FUSE_INIT` on the fd when this returns. `fuseFd` stays owned by the
 * caller on every path. Throws `FuseKernelError`.
 */
export function mountFuse(fuseFd: number, opts: FuseMountOptions): void {
  assertFuseDevice(fuseFd, 'FUSE fd');
  const fsName = opts.fsName ?? 'fusekeeper';
  const subtype = opts.subtype ?? 'fusekeeper';
  for (const [what, value] of [['fs name', fsName], ['subtype', subtype]] as const) {
    if (!SAFE_NAME.test(value)) throw new FuseKernelError('ERR_MOUNT', `invalid ${what} ${JSON.stringify(value)}: use 1-64 of [A-Za-z0-9_.@:+-]`, 'EINVAL');
  }
  let flags = MS.NOATIME;
  if (opts.readOnly) flags |= MS.RDONLY;
  if (opts.noSuid ?? true) flags |= MS.NOSUID;
  if (opts.noDev ?? true) flags |= MS.NODEV;
  if (opts.noExec) flags |= MS.NOEXEC;
  try {
    mountFs(fsName, opts.mountpoint, `fuse.${subtype}`, flags, fuseMountData(fuseFd, opts));
  } catch (err) {
    if (!(err instanceof NativeError)) throw err;
    throw new FuseKernelError('ERR_MOUNT', `cannot mount FUSE on ${opts.mountpoint}: ${err.code}${mountHint(err.code)}`, err.code, { cause: err });
  }
}

function mountHint(code: string): string {
  switch (code) {
    case 'EPERM': return ' (needs root or CAP_SYS_ADMIN)';
    case 'ENOENT': return ' (mountpoint does not exist)';
    case 'ENOTDIR': return ' (mountpoint is not a directory)';
    case 'ENODEV': return ' (kernel without FUSE)';
    default: return '';
  }
}

/**
 * Unmounts `mountpoint`. `lazy` detaches it even while busy (MNT_DETACH). Throws
 * `FuseKernelError` (`EINVAL`: not a mountpoint; `EBUSY`: in use and not lazy).
 */
export function unmountFuse(mountpoint: string, lazy = false): void {
  try {
    unmountFs(mountpoint, (lazy ? MNT.DETACH : 0) | MNT.NOFOLLOW);
  } catch (err) {
    if (!(err instanceof NativeError)) throw err;
    throw new FuseKernelError('ERR_MOUNT', `cannot unmount ${mountpoint}: ${err.code}`, err.code, { cause: err });
  }
}

/** One line of /proc/self/mountinfo. */
export interface MountInfo {
  mountId: number;
  major: number;
  minor: number;
  mountpoint: string;
  fstype: string;
  source: string;
  /** Per-superblock options (for FUSE: `user_id=`, `group_id=`, `allow_other`, ...). */
  superOptions: string;
}

function unescapeMountField(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

/** Parses /proc/self/mountinfo text (pure; exported for tests). */
export function parseMountInfo(text: string): MountInfo[] {
  const out: MountInfo[] = [];
  for (const line of text.split('\n')) {
    if (!line) continue;
    const fields = line.split(' ');
    const sep = fields.indexOf('-');
    if (sep < 6 || fields.length < sep + 3) continue;
    const [major, minor] = fields[2]!.split(':').map(Number);
    out.push({
      mountId: Number(fields[0]),
      major: major!,
      minor: minor!,
      mountpoint: unescapeMountField(fields[4]!),
      fstype: fields[sep + 1]!,
      source: unescapeMountField(fields[sep + 2]!),
      superOptions: fields[sep + 3] ?? '',
    });
  }
  return out;
}

/**
 * The mount at exactly `mountpoint` in this process's namespace, read from
 * /proc/self/mountinfo (no stat(2) of the mountpoint, which would send a request to the
 * FUSE daemon and block a single-threaded one). The last match wins (stacked mounts).
 */
export function findMount(mountpoint: string): MountInfo | undefined {
  return parseMountInfo(readFileSync('/proc/self/mountinfo', 'utf8')).filter((m) => m.mountpoint === mountpoint).at(-1);
}
