/**
 * The FUSE opcode table: per opcode, the fixed argument size that follows the in header,
 * how many NUL-terminated names follow it, and whether the kernel waits for a reply. It drives
 * request parsing, size checks and debug printing.
 */
import {
  CUSE_INIT_IN_SIZE,
  FUSE_ACCESS_IN_SIZE,
  FUSE_BATCH_FORGET_IN_SIZE,
  FUSE_BMAP_IN_SIZE,
  FUSE_COMPAT_INIT_IN_SIZE,
  FUSE_COMPAT_SETXATTR_IN_SIZE,
  FUSE_COPY_FILE_RANGE_IN_SIZE,
  FUSE_CREATE_IN_SIZE,
  FUSE_FALLOCATE_IN_SIZE,
  FUSE_FLUSH_IN_SIZE,
  FUSE_FORGET_IN_SIZE,
  FUSE_FSYNC_IN_SIZE,
  FUSE_GETATTR_IN_SIZE,
  FUSE_GETXATTR_IN_SIZE,
  FUSE_INTERRUPT_IN_SIZE,
  FUSE_IOCTL_IN_SIZE,
  FUSE_LINK_IN_SIZE,
  FUSE_LK_IN_SIZE,
  FUSE_LSEEK_IN_SIZE,
  FUSE_MKDIR_IN_SIZE,
  FUSE_MKNOD_IN_SIZE,
  FUSE_NOTIFY_RETRIEVE_IN_SIZE,
  FUSE_OPEN_IN_SIZE,
  FUSE_POLL_IN_SIZE,
  FUSE_READ_IN_SIZE,
  FUSE_RELEASE_IN_SIZE,
  FUSE_REMOVEMAPPING_IN_SIZE,
  FUSE_RENAME2_IN_SIZE,
  FUSE_RENAME_IN_SIZE,
  FUSE_SETATTR_IN_SIZE,
  FUSE_SETUPMAPPING_IN_SIZE,
  FUSE_STATX_IN_SIZE,
  FUSE_SYNCFS_IN_SIZE,
  FUSE_WRITE_IN_SIZE,
  Opcode,
  type OpcodeName,
} from '../../kernel/abi.ts';

/** One row of the opcode table. */
export interface OpcodeInfo {
  /** Opcode number. */
  readonly code: number;
  /** Kernel name without the `FUSE_` prefix. */
  readonly name: OpcodeName;
  /**
   * Fixed argument bytes after the in header: the smallest layout the kernel sends at 7.23+
   * (SETXATTR: 8, 16 with `FUSE_SETXATTR_EXT`; INIT: 16, 64 from 7.36).
   */
  readonly inSize: number;
  /** NUL-terminated names following the fixed argument. */
  readonly names: 0 | 1 | 2;
  /**
   * The kernel waits for an answer. False for FORGET and BATCH_FORGET (never answered),
   * NOTIFY_REPLY (sent with `noreply`) and INTERRUPT (answered only with ENOSYS or EAGAIN).
   */
  readonly reply: boolean;
  /** `parseRequest` decodes it into a typed request; other opcodes come out as op `unknown`. */
  readonly parsed: boolean;
}

function row(name: OpcodeName, inSize: number, names: 0 | 1 | 2 = 0, reply = true, parsed = true): OpcodeInfo {
  return Object.freeze({ code: Opcode[name], name, inSize, names, reply, parsed });
}

/** Every opcode of protocol 7.45, in opcode order. */
export const OPCODE_TABLE: readonly OpcodeInfo[] = Object.freeze([
  row('LOOKUP', 0, 1),
  row('FORGET', FUSE_FORGET_IN_SIZE, 0, false),
  row('GETATTR', FUSE_GETATTR_IN_SIZE),
  row('SETATTR', FUSE_SETATTR_IN_SIZE),
  row('READLINK', 0),
  row('SYMLINK', 0, 2),
  row('MKNOD', FUSE_MKNOD_IN_SIZE, 1),
  row('MKDIR', FUSE_MKDIR_IN_SIZE, 1),
  row('UNLINK', 0, 1),
  row('RMDIR', 0, 1),
  row('RENAME', FUSE_RENAME_IN_SIZE, 2),
  row('LINK', FUSE_LINK_IN_SIZE, 1),
  row('OPEN', FUSE_OPEN_IN_SIZE),
  row('READ', FUSE_READ_IN_SIZE),
  row('WRITE', FUSE_WRITE_IN_SIZE),
  row('STATFS', 0),
  row('RELEASE', FUSE_RELEASE_IN_SIZE),
  row('FSYNC', FUSE_FSYNC_IN_SIZE),
  row('SETXATTR', FUSE_COMPAT_SETXATTR_IN_SIZE, 1),
  row('GETXATTR', FUSE_GETXATTR_IN_SIZE, 1),
  row('LISTXATTR', FUSE_GETXATTR_IN_SIZE),
  row('REMOVEXATTR', 0, 1),
  row('FLUSH', FUSE_FLUSH_IN_SIZE),
  row('INIT', FUSE_COMPAT_INIT_IN_SIZE),
  row('OPENDIR', FUSE_OPEN_IN_SIZE),
  row('READDIR', FUSE_READ_IN_SIZE),
  row('RELEASEDIR', FUSE_RELEASE_IN_SIZE),
  row('FSYNCDIR', FUSE_FSYNC_IN_SIZE),
  row('GETLK', FUSE_LK_IN_SIZE),
  row('SETLK', FUSE_LK_IN_SIZE),
  row('SETLKW', FUSE_LK_IN_SIZE),
  row('ACCESS', FUSE_ACCESS_IN_SIZE),
  row('CREATE', FUSE_CREATE_IN_SIZE, 1),
  row('INTERRUPT', FUSE_INTERRUPT_IN_SIZE, 0, false),
  row('BMAP', FUSE_BMAP_IN_SIZE),
  row('DESTROY', 0),
  row('IOCTL', FUSE_IOCTL_IN_SIZE, 0, true, false),
  row('POLL', FUSE_POLL_IN_SIZE),
  row('NOTIFY_REPLY', FUSE_NOTIFY_RETRIEVE_IN_SIZE, 0, false, false),
  row('BATCH_FORGET', FUSE_BATCH_FORGET_IN_SIZE, 0, false),
  row('FALLOCATE', FUSE_FALLOCATE_IN_SIZE),
  row('READDIRPLUS', FUSE_READ_IN_SIZE),
  row('RENAME2', FUSE_RENAME2_IN_SIZE, 2),
  row('LSEEK', FUSE_LSEEK_IN_SIZE),
  row('COPY_FILE_RANGE', FUSE_COPY_FILE_RANGE_IN_SIZE),
  row('SETUPMAPPING', FUSE_SETUPMAPPING_IN_SIZE, 0, true, false),
  row('REMOVEMAPPING', FUSE_REMOVEMAPPING_IN_SIZE, 0, true, false),
  row('SYNCFS', FUSE_SYNCFS_IN_SIZE),
  row('TMPFILE', FUSE_CREATE_IN_SIZE, 1),
  row('STATX', FUSE_STATX_IN_SIZE),
  row('COPY_FILE_RANGE_64', FUSE_COPY_FILE_RANGE_IN_SIZE),
  row('CUSE_INIT', CUSE_INIT_IN_SIZE, 0, true, false),
]);

const byCode = new Map<number, OpcodeInfo>(OPCODE_TABLE.map((r) => [r.code, r]));

/** The table row of `opcode`, or undefined for an opcode this protocol version does not define. */
export function opcodeInfo(opcode: number): OpcodeInfo | undefined {
  return byCode.get(opcode);
}

/** Kernel name of `opcode` (`LOOKUP`, ...), or `OPCODE_<n>` when unknown. */
export function opcodeName(opcode: number): string {
  return byCode.get(opcode)?.name ?? `OPCODE_${opcode}`;
}

/**
 * Whether the kernel waits for an answer to `opcode`. Unknown opcodes count as answered
 * (ENOSYS): the kernel only sends opcodes it expects answers to unless the table says otherwise.
 */
export function expectsReply(opcode: number): boolean {
  return byCode.get(opcode)?.reply ?? true;
}
