// A rehearsal of the request path, for warm standbys. V8 compiles a function on its first
// call and collects type feedback as it runs, so the first requests a process ever serves
// are slow: measured on the bench's bare standby, the first stat() and open() after a
// take-over took 1-5 ms each, against 0.2 ms a few requests later. A standby that has
// already run its own handlers once pays none of that when the session falls to it.
//
// The script is read-only: INIT, GETATTR and STATFS of the root, OPENDIR, READDIR (and
// READDIRPLUS if the daemon asks for it) and RELEASEDIR of the root, and for a named root entry LOOKUP, GETATTR, OPEN (O_RDONLY), READ, FLUSH,
// RELEASE and FORGET, plus one GETATTR marked as a replay (bit 63 of unique, as after
// FUSE_NOTIFY_RESEND). Frames are built as the kernel sends them (include/uapi/linux/fuse.h).
import { constants as fsConstants } from 'node:fs';
import { constants } from 'node:os';

const { O_RDONLY, O_DIRECTORY } = fsConstants;
import {
  FUSE_FLUSH_IN_SIZE,
  FUSE_FORGET_IN_SIZE,
  FUSE_GETATTR_IN_SIZE,
  FUSE_IN_HEADER_SIZE,
  FUSE_INIT_IN_SIZE,
  FUSE_KERNEL_MINOR_VERSION,
  FUSE_KERNEL_VERSION,
  FUSE_OPEN_IN_SIZE,
  FUSE_OUT_HEADER_SIZE,
  FUSE_READ_IN_SIZE,
  FUSE_RELEASE_IN_SIZE,
  FUSE_UNIQUE_RESEND,
  InitFlags,
  Opcode,
} from '../../kernel/abi.ts';
import { errnoName } from '../../native/index.ts';
import { opcodeName } from './opcodes.ts';

/** What a rehearsal ran. */
export interface RehearsalReport {
  /** Requests run (replies received, or dispatched for FORGET). */
  requests: number;
  /** Requests answered with an error, as `OPCODE errno` (an empty directory has no entry to look up). */
  errors: string[];
  durationUs: number;
}

/** Runs one request frame through a server; resolves with its reply, or null for FORGET. */
export type RehearsalSend = (frame: Buffer) => Promise<Buffer | null>;

const ROOT = 1n;
const READ_SIZE = 4096;

/** The caller a rehearsal's requests claim to come from: this process. */
function inHeader(len: number, opcode: number, unique: bigint, nodeid: bigint): Buffer {
  const b = Buffer.alloc(FUSE_IN_HEADER_SIZE);
  b.writeUInt32LE(len, 0);
  b.writeUInt32LE(opcode, 4);
  b.writeBigUInt64LE(unique, 8);
  b.writeBigUInt64LE(nodeid, 16);
  b.writeUInt32LE(process.getuid?.() ?? 0, 24);
  b.writeUInt32LE(process.getgid?.() ?? 0, 28);
  b.writeUInt32LE(process.pid, 32);
  return b;
}

function frame(opcode: number, unique: bigint, nodeid: bigint, body: Buffer = Buffer.alloc(0)): Buffer {
  return Buffer.concat([inHeader(FUSE_IN_HEADER_SIZE + body.length, opcode, unique, nodeid), body]);
}

/** struct fuse_init_in: major, minor, max_readahead, flags, flags2, unused[11]. */
function initIn(offered: bigint): Buffer {
  const b = Buffer.alloc(FUSE_INIT_IN_SIZE);
  b.writeUInt32LE(FUSE_KERNEL_VERSION, 0);
  b.writeUInt32LE(FUSE_KERNEL_MINOR_VERSION, 4);
  b.writeUInt32LE(128 * 1024, 8);
  b.writeUInt32LE(Number(offered & 0xffffffffn), 12);
  b.writeUInt32LE(Number(offered >> 32n), 16);
  return b;
}

/** struct fuse_read_in: fh, offset, size, read_flags, lock_owner, flags, padding. */
function readIn(fh: bigint, size: number, flags: number): Buffer {
  const b = Buffer.alloc(FUSE_READ_IN_SIZE);
  b.writeBigUInt64LE(fh, 0);
  b.writeUInt32LE(size, 16);
  b.writeUInt32LE(flags, 32);
  return b;
}

/** struct fuse_open_in: flags, open_flags. */
function openIn(flags: number): Buffer {
  const b = Buffer.alloc(FUSE_OPEN_IN_SIZE);
  b.writeUInt32LE(flags, 0);
  return b;
}

/** struct fuse_release_in (fh, flags, release_flags, lock_owner); fuse_flush_in has fh first too. */
function fhIn(size: number, fh: bigint, flags = 0): Buffer {
  const b = Buffer.alloc(size);
  b.writeBigUInt64LE(fh, 0);
  if (size === FUSE_RELEASE_IN_SIZE) b.writeUInt32LE(flags, 8);
  return b;
}

function cstring(s: string): Buffer {
  return Buffer.concat([Buffer.from(s, 'utf8'), Buffer.alloc(1)]);
}

/** fuse_out_header.error (negative errno), or 0. */
function replyErrno(reply: Buffer): number {
  return reply.length >= FUSE_OUT_HEADER_SIZE ? -reply.readInt32LE(4) : constants.errno.EIO;
}

/**
 * Runs the rehearsal script through `send`. `initFlags`: the flags the daemon asks for in
 * INIT, offered back as a kernel would (with INIT_EXT). `name`: an entry of the root to
 * look up, open and read; without it only the root is visited.
 */
export async function rehearseRequests(send: RehearsalSend, initFlags: bigint, name?: string): Promise<RehearsalReport> {
  const started = process.hrtime.bigint();
  const report: RehearsalReport = { requests: 0, errors: [], durationUs: 0 };
  let unique = 2n;
  const run = async (opcode: number, nodeid: bigint, body?: Buffer, resend = false): Promise<Buffer | null> => {
    unique += 2n;
    const reply = await send(frame(opcode, resend ? unique | FUSE_UNIQUE_RESEND : unique, nodeid, body));
    report.requests++;
    if (reply) {
      const errno = replyErrno(reply);
      if (errno !== 0) report.errors.push(`${opcodeName(opcode)} ${errnoName(errno)}`);
      return errno === 0 ? reply : null;
    }
    return null;
  };
  const fhOf = (reply: Buffer | null): bigint | undefined => reply?.readBigUInt64LE(FUSE_OUT_HEADER_SIZE);

  await run(Opcode.INIT, 0n, initIn(initFlags | InitFlags.INIT_EXT));
  const getattr = Buffer.alloc(FUSE_GETATTR_IN_SIZE);
  await run(Opcode.GETATTR, ROOT, getattr);
  await run(Opcode.STATFS, ROOT);
  const dir = fhOf(await run(Opcode.OPENDIR, ROOT, openIn(O_RDONLY | O_DIRECTORY)));
  if (dir !== undefined) {
    await run(Opcode.READDIR, ROOT, readIn(dir, READ_SIZE, 0));
    if ((initFlags & InitFlags.DO_READDIRPLUS) !== 0n) await run(Opcode.READDIRPLUS, ROOT, readIn(dir, READ_SIZE, 0));
    await run(Opcode.RELEASEDIR, ROOT, fhIn(FUSE_RELEASE_IN_SIZE, dir, O_RDONLY | O_DIRECTORY));
  }
  if (name !== undefined) {
    // struct fuse_entry_out starts with the nodeid.
    const nodeid = (await run(Opcode.LOOKUP, ROOT, cstring(name)))?.readBigUInt64LE(FUSE_OUT_HEADER_SIZE);
    if (nodeid !== undefined) {
      await run(Opcode.GETATTR, nodeid, getattr);
      await run(Opcode.GETATTR, nodeid, getattr, true);
      const fh = fhOf(await run(Opcode.OPEN, nodeid, openIn(O_RDONLY)));
      if (fh !== undefined) {
        await run(Opcode.READ, nodeid, readIn(fh, READ_SIZE, O_RDONLY));
        await run(Opcode.FLUSH, nodeid, fhIn(FUSE_FLUSH_IN_SIZE, fh));
        await run(Opcode.RELEASE, nodeid, fhIn(FUSE_RELEASE_IN_SIZE, fh, O_RDONLY));
      }
      const forget = Buffer.alloc(FUSE_FORGET_IN_SIZE);
      forget.writeBigUInt64LE(1n, 0);
      await run(Opcode.FORGET, nodeid, forget);
    }
  }
  report.durationUs = Math.round(Number(process.hrtime.bigint() - started) / 1000);
  return report;
}

