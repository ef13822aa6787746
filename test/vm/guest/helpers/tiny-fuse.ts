// A tiny FUSE server for the guest's kernel tests: one flat directory of regular files, each
// served in passthrough mode; every OPEN is answered with the backing id the test chose for it
// (`answerNextOpen`). Runs on the test's own event loop: the application side of a test must use
// asynchronous fs calls (fs.promises), which run on the libuv pool while this loop answers.
import { statSync } from 'node:fs';
import { errnoName, readFd, watchFd, writeFd, type PollHandle } from '../../../../native/index.ts';
import { FOPEN_PASSTHROUGH, FUSE_ROOT_ID, type Attr } from '../../../../kernel/abi.ts';
import { FUSE_READ_BUFFER } from '../../../../kernel/handshake.ts';
import { opcodeInfo, parseRequest, replyAttr, replyEmpty, replyEntry, replyError, replyOpen } from '../../../../client/fuse/codec.ts';
import { mountTestConnection, type TestConnection } from '../../../kernel/helpers/connection.ts';

const ENOENT = 2;
const EIO = 5;
const ENOSYS = 38;
const EAGAIN = 11;

export interface TinyFile {
  /** Name in the root directory. */
  name: string;
  /** File whose size the GETATTR/LOOKUP answers report (the test's backing file). */
  backingPath: string;
}

export interface OpenRecord {
  name: string;
  backingId: number;
}

export class TinyFuse {
  /** Every OPEN answered, in order. */
  readonly opens: OpenRecord[] = [];
  /** Requests that must not reach a passthrough server (READ/WRITE), and framing errors. */
  readonly unexpected: string[] = [];
  private readonly nodes = new Map<bigint, TinyFile>();
  private readonly byName = new Map<string, bigint>();
  private readonly nextOpen = new Map<string, number[]>();
  private readonly buf = Buffer.alloc(FUSE_READ_BUFFER);
  private poll: PollHandle | null = null;
  private nextFh = 1n;

  private constructor(readonly conn: TestConnection, files: TinyFile[]) {
    let nodeid = 2n;
    for (const f of files) {
      this.nodes.set(nodeid, f);
      this.byName.set(f.name, nodeid);
      nodeid++;
    }
  }

  /** Mounts a passthrough connection (INIT answered) and starts answering on it. */
  static async mount(files: TinyFile[]): Promise<TinyFuse> {
    const conn = await mountTestConnection();
    const fs = new TinyFuse(conn, files);
    fs.poll = watchFd(conn.fd, { readable: true }, () => fs.drain());
    return fs;
  }

  get fd(): number {
    return this.conn.fd;
  }

  path(name: string): string {
    return `${this.conn.mountpoint}/${name}`;
  }

  /** The next OPEN of `name` is answered with FOPEN_PASSTHROUGH and `backingId`. */
  answerNextOpen(name: string, backingId: number): void {
    const q = this.nextOpen.get(name) ?? [];
    q.push(backingId);
    this.nextOpen.set(name, q);
  }

  /** Stops answering, unmounts, closes the fd, removes the temp dir. */
  close(): void {
    this.poll?.close();
    this.poll = null;
    this.conn.cleanup();
  }

  private attr(nodeid: bigint): Attr | null {
    const base = { blocks: 0, atime: 0, mtime: 0, ctime: 0, atimensec: 0, mtimensec: 0, ctimensec: 0, uid: 0, gid: 0, rdev: 0, blksize: 0, flags: 0 };
    if (nodeid === FUSE_ROOT_ID) return { ...base, ino: 1, size: 0, mode: 0o40755, nlink: 2 };
    const f = this.nodes.get(nodeid);
    if (!f) return null;
    return { ...base, ino: nodeid, size: statSync(f.backingPath).size, mode: 0o100644, nlink: 1 };
  }

  private drain(): void {
    for (;;) {
      const n = readFd(this.conn.fd, this.buf);
      if (n === -EAGAIN) return;
      if (n < 0) {
        // ENODEV: unmounted; anything else ends the loop too.
        this.poll?.close();
        this.poll = null;
        return;
      }
      const reply = this.handle(this.buf.subarray(0, n));
      if (reply) {
        const w = writeFd(this.conn.fd, reply);
        if (w !== reply.length) this.unexpected.push(`reply write failed: ${w < 0 ? errnoName(-w) : `short ${w}`}`);
      }
    }
  }

  private handle(raw: Buffer): Buffer | null {
    const parsed = parseRequest(raw, { minor: this.conn.agreed.minor, flags: this.conn.agreed.flags });
    if (!parsed.ok) {
      this.unexpected.push(`framing: ${parsed.error.message}`);
      const unique = raw.length >= 16 ? raw.readBigUInt64LE(8) : 0n;
      const opcode = raw.length >= 8 ? raw.readUInt32LE(4) : 0;
      return unique && opcodeInfo(opcode)?.reply !== false ? replyError(unique, EIO) : null;
    }
    const req = parsed.request;
    const { unique, nodeid } = req.header;
    switch (req.op) {
      case 'lookup': {
        const id = nodeid === FUSE_ROOT_ID ? this.byName.get(req.name) : undefined;
        const attr = id !== undefined ? this.attr(id) : null;
        if (id === undefined || !attr) return replyError(unique, ENOENT);
        return replyEntry(unique, { nodeid: id, entryValid: 3600, attrValid: 3600, attr });
      }
      case 'getattr': {
        const attr = this.attr(nodeid);
        return attr ? replyAttr(unique, { attrValid: 3600, attr }) : replyError(unique, ENOENT);
      }
      case 'open': {
        const f = this.nodes.get(nodeid);
        const backingId = f ? this.nextOpen.get(f.name)?.shift() : undefined;
        if (!f || backingId === undefined) {
          this.unexpected.push(`OPEN of node ${nodeid} without a backing id chosen by the test`);
          return replyError(unique, EIO);
        }
        this.opens.push({ name: f.name, backingId });
        return replyOpen(unique, { fh: this.nextFh++, openFlags: FOPEN_PASSTHROUGH, backingId });
      }
      case 'flush':
      case 'release':
        return replyEmpty(unique);
      case 'forget':
      case 'batch_forget':
      case 'interrupt':
        return null;
      case 'read':
      case 'write':
        this.unexpected.push(`${req.op.toUpperCase()} reached the server: passthrough is not in effect`);
        return replyError(unique, EIO);
      default:
        return opcodeInfo(req.header.opcode)?.reply === false ? null : replyError(unique, ENOSYS);
    }
  }
}
