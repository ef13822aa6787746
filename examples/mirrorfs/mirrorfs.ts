// mirrorfs: mirrors a source directory read-write through FUSE, with kernel passthrough for
// file data. Metadata goes through this daemon; reads and writes of open files go straight
// to the source file in the kernel when passthrough is on.
import { promises as fsp, constants as fsc, closeSync, openSync as openFdSync, statSync, lstatSync, fstatSync, open as openCb, close as closeCb, read as readCb, write as writeCb, fsync as fsyncCb, fdatasync as fdatasyncCb, ftruncate as ftruncateCb, fstat as fstatCb, fchmod as fchmodCb, fchown as fchownCb, type BigIntStats } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { fstatFd, setNonBlocking, fileHandleOf, openByHandle, mknod, rename2, getXattr, setXattr, listXattr, removeXattr, fallocate, lseek, copyFileRange, setTimes, type TimeSpec } from '../../native/index.ts';
import { FATTR, FOPEN, FUSE_FSYNC_FDATASYNC, FUSE_UNIQUE_RESEND, RENAME_EXCHANGE, RENAME_NOREPLACE, type Attr } from '../../kernel/abi.ts';
import {
  DirentBuilder,
  replyAttr,
  replyCreate,
  replyData,
  replyEmpty,
  replyEntry,
  replyLseek,
  replyOpen,
  replyStatfs,
  replyWrite,
  replyXattrSize,
  replyCopyFileRange64,
  isResend,
  type EntryOut,
  type FuseRequest,
} from '../../client/fuse/codec.ts';
import { FuseError } from '../../client/fuse/errors.ts';
import type { FuseOperations, RequestOf } from '../../client/fuse/server.ts';
import type { BackingTable } from '../../client/fuse/passthrough.ts';
import { NodeTable, type Node } from './nodes.ts';
import { CheckpointWriter, type CheckpointSink, type HandleRecord, type MirrorCheckpoint } from './checkpoint.ts';

const openFd = promisify(openCb) as (path: string, flags: number, mode?: number) => Promise<number>;
const closeFd = promisify(closeCb);
// Promisified fs.read/fs.write resolve to { bytesRead | bytesWritten, buffer }, not a count,
// and fs.write treats a non-number position (a bigint) as "the current file position".
const readP = promisify(readCb);
const writeP = promisify(writeCb);
const readAt = async (fd: number, buf: Buffer, pos: bigint): Promise<number> => (await readP(fd, buf, 0, buf.length, filePosition(pos))).bytesRead;
const writeAt = async (fd: number, buf: Buffer, pos: bigint): Promise<number> => (await writeP(fd, buf, 0, buf.length, filePosition(pos))).bytesWritten;

function filePosition(pos: bigint): number {
  if (pos > BigInt(Number.MAX_SAFE_INTEGER)) throw new FuseError('EFBIG');
  return Number(pos);
}
const fsyncFd = promisify(fsyncCb);
const fdatasyncFd = promisify(fdatasyncCb);
const ftruncateFd = promisify(ftruncateCb);
const fchmodFd = promisify(fchmodCb);
const fchownFd = promisify(fchownCb);

type Req<K extends FuseRequest['op']> = RequestOf<K>;

/** Seconds the kernel may cache names and attributes. */
const TTL = 1;
const O_ACCMODE = 3;
/**
 * open(2) flags the kernel handles itself, or that make no sense on an existing file. O_TRUNC
 * is kept: with FUSE_ATOMIC_O_TRUNC the kernel leaves truncating to the daemon (and clears
 * O_TRUNC itself when that flag was not granted).
 */
const OPEN_FLAGS_DROPPED = fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOCTTY;
/** Reopening a restored handle's file must neither create nor truncate it again. */
const REOPEN_FLAGS_DROPPED = OPEN_FLAGS_DROPPED | fsc.O_TRUNC;
const XATTR_SIZE_MAX = 65536;
const O_CLOEXEC = 0o2000000;

/** What every handle knows about where it came from. */
interface HandleOrigin {
  nodeid: bigint;
  /** `unique` (bit 63 cleared) of the request that opened it. */
  unique: bigint;
  /** Opened by a previous daemon, restored from the checkpoint. */
  restored: boolean;
}

/** An open file handle. */
interface FileHandle extends HandleOrigin {
  kind: 'file';
  /** The source file, or -1 for a restored handle whose file could not be reopened (I/O on it: EIO). */
  fd: number;
  /** open(2) flags `fd` was opened with. */
  flags: number;
  dev: bigint;
  ino: bigint;
  backingId: number;
  /** The source file's handle (name_to_handle_at), for reopening it after a crash without a path. */
  handle: Buffer | undefined;
}

/** An open directory handle: entries are read once per rewind (and after a restore). */
interface DirHandle extends HandleOrigin {
  kind: 'dir';
  entries: { name: string; type: number }[] | undefined;
}

/** Counters the tests and benchmarks read. */
export interface MirrorStats {
  reads: number;
  writes: number;
  opens: number;
  passthroughOpens: number;
}

export interface MirrorOptions {
  /** Absolute, resolved source directory. */
  source: string;
  /** Passthrough backing ids (null: no passthrough, reads go through the daemon). */
  backing: BackingTable | null;
  /**
   * Supervised: nodes and handles are kept in the session checkpoint through `sink`. With
   * `previous` (a resumed session) the tables are first restored from it.
   */
  checkpoint?: { sink: CheckpointSink; previous?: MirrorCheckpoint };
  /**
   * Where the source's files are looked up, stat'ed and opened (LOOKUP, GETATTR, OPEN,
   * CREATE and the stats of the other requests): `'pool'` (default), on libuv's thread pool,
   * or `'main'`, on the thread that reads /dev/fuse. On a local source these calls take
   * microseconds, and a hop through the pool costs two thread wake-ups each: on the failover
   * bench's warm scenario `'main'` took the slowest call of the probe in the 40 ms after the
   * new owner's first answer from 3.5-4.0 to 1.9-2.3 ms (median of 100 crashes). But the
   * calls no longer run side by side: in the crash-loop harness's concurrent workloads fio
   * completed 15% fewer runs, and the supervisor's RSS grew by 35-40 MiB meanwhile (not
   * understood yet; docs/systemd.md). A source where such a call can wait (a network
   * filesystem) would hold up every other request with `'main'`.
   */
  metadataCalls?: 'main' | 'pool';
}

/** What `MirrorFs.create` restored from a previous daemon's checkpoint. */
export interface RestoreSummary {
  nodes: number;
  files: number;
  dirs: number;
  /** Restored file handles whose source file could not be reopened (reads and writes on them: EIO). */
  unavailable: number;
  /** Checkpoint keys of mirrorfs that did not decode. */
  malformed: string[];
}

/** The checkpoint belongs to a session that mirrors another directory. */
export class SourceMismatchError extends Error {}

function attrOf(st: BigIntStats): Attr {
  return {
    ino: st.ino,
    size: st.size,
    blocks: st.blocks,
    atime: st.atimeNs / 1_000_000_000n,
    mtime: st.mtimeNs / 1_000_000_000n,
    ctime: st.ctimeNs / 1_000_000_000n,
    atimensec: Number(st.atimeNs % 1_000_000_000n),
    mtimensec: Number(st.mtimeNs % 1_000_000_000n),
    ctimensec: Number(st.ctimeNs % 1_000_000_000n),
    mode: Number(st.mode),
    nlink: Number(st.nlink),
    uid: Number(st.uid),
    gid: Number(st.gid),
    rdev: Number(st.rdev & 0xffffffffn),
    blksize: Number(st.blksize),
    flags: 0,
  };
}

/** A SETATTR time: given, now, or unchanged (nanoseconds kept: `fs.utimes` rounds them away). */
function timeSpec(set: boolean, now: boolean, sec: bigint, nsec: number): TimeSpec {
  if (now) return 'now';
  return set ? { sec, nsec } : 'omit';
}

export class MirrorFs implements FuseOperations {
  readonly source: string;
  readonly nodes: NodeTable;
  readonly stats: MirrorStats = { reads: 0, writes: 0, opens: 0, passthroughOpens: 0 };
  #backing: BackingTable | null;
  readonly #handles = new Map<bigint, FileHandle | DirHandle>();
  #nextFh = 1n;
  readonly #asRoot = process.getuid?.() === 0;
  #checkpoint: CheckpointWriter | undefined;
  readonly #metadataOnMain: boolean;
  /** Set when the tables were restored from a previous daemon's checkpoint. */
  restored: RestoreSummary | undefined;

  constructor(opts: MirrorOptions, root: BigIntStats) {
    this.source = opts.source;
    this.#backing = opts.backing;
    this.#metadataOnMain = opts.metadataCalls === 'main';
    this.nodes = new NodeTable(root.dev, root.ino);
  }

  /**
   * Opens mirrorfs over `source` (must be an existing directory). With `checkpoint.previous`
   * the node and handle tables are restored first; with `checkpoint` every later change is
   * recorded. Throws SourceMismatchError when the checkpoint is of another source directory.
   */
  static async create(opts: MirrorOptions): Promise<MirrorFs> {
    // Synchronous: nothing is served yet, and a resuming daemon's blackout is what this costs.
    const root = statSync(opts.source, { bigint: true });
    if (!root.isDirectory()) throw new FuseError('ENOTDIR', `${opts.source} is not a directory`);
    const mirror = new MirrorFs(opts, root);
    const cp = opts.checkpoint;
    if (!cp) return mirror;
    const prev = cp.previous;
    if (prev?.source && (prev.source.dev !== root.dev || prev.source.ino !== root.ino)) {
      throw new SourceMismatchError(`the session mirrors ${prev.source.path} (inode ${prev.source.dev}:${prev.source.ino}), not ${opts.source}`);
    }
    if (prev) mirror.restored = mirror.#restore(prev);
    mirror.#checkpoint = new CheckpointWriter(cp.sink, prev?.nextNodeid ?? 0n);
    mirror.#checkpoint.attach(mirror.nodes);
    if (!prev?.source) mirror.#checkpoint.putSource({ path: opts.source, dev: root.dev, ino: root.ino });
    return mirror;
  }

  /**
   * Rebuilds the tables a previous daemon checkpointed. Each file handle's source file is
   * reopened by its node's path with the saved flags minus O_CREAT, O_EXCL and O_TRUNC, and
   * accepted only if it is still the same inode; otherwise the handle stays known (so its
   * RELEASE is answered) with reads and writes failing EIO. Directory handles re-list on
   * their next READDIR.
   */
  #restore(cp: MirrorCheckpoint): RestoreSummary {
    this.nodes.restore(cp.nodes);
    this.nodes.continueFrom(cp.nextNodeid);
    const summary: RestoreSummary = { nodes: this.nodes.size, files: 0, dirs: 0, unavailable: 0, malformed: cp.malformed };
    for (const [fh, rec] of cp.handles) {
      if (fh >= this.#nextFh) this.#nextFh = fh + 1n;
      const origin = { nodeid: rec.nodeid, unique: rec.unique, restored: true };
      if (rec.kind === 'dir') {
        this.#handles.set(fh, { kind: 'dir', ...origin, entries: undefined });
        summary.dirs++;
        continue;
      }
      const fd = this.#reopen(rec);
      this.#handles.set(fh, { kind: 'file', ...origin, fd, flags: rec.flags, dev: rec.dev, ino: rec.ino, backingId: rec.backingId, handle: rec.handle });
      summary.files++;
      if (fd < 0) summary.unavailable++;
    }
    return summary;
  }

  /**
   * The restored handle's source file opened again, or -1: by its node's path, else (no
   * path left: unlinked while open, or the name leads elsewhere) by its file handle.
   */
  #reopen(rec: HandleRecord): number {
    // Synchronous, like the whole restore: nothing is served until it is done.
    const node = this.nodes.get(rec.nodeid);
    const flags = rec.flags & ~REOPEN_FLAGS_DROPPED;
    if (node && !node.removed) {
      let fd = -1;
      try {
        fd = openFdSync(this.#abs(node.path), flags | fsc.O_NOFOLLOW);
      } catch {
        // gone or replaced: try the handle
      }
      if (fd >= 0) {
        const st = fstatFd(fd);
        if (st.dev === rec.dev && st.ino === rec.ino) return fd;
        // The name leads to another file by now.
        closeSync(fd);
      }
    }
    if (!rec.handle || !this.#asRoot) return -1;
    let fd: number;
    try {
      this.#sourceFd ??= openFdSync(this.source, fsc.O_RDONLY | fsc.O_DIRECTORY);
      fd = openByHandle(this.#sourceFd, rec.handle, flags | O_CLOEXEC);
    } catch {
      return -1;
    }
    const st = fstatFd(fd);
    if (st.dev === rec.dev && st.ino === rec.ino) return fd;
    closeSync(fd);
    return -1;
  }

  /** The source directory, open while restoring handles by file handle. */
  #sourceFd: number | undefined;

  /**
   * Restored file handles with a passthrough backing id on the inode (dev, ino): each will
   * release it once. For `BackingTable.adoptJournal`.
   */
  restoredBackingRefs(dev: bigint, ino: bigint): number {
    let n = 0;
    for (const h of this.#handles.values()) if (h.kind === 'file' && h.restored && h.backingId !== 0 && h.dev === dev && h.ino === ino) n++;
    return n;
  }

  /**
   * Uses `backing` for passthrough from now on (set once INIT settled whether passthrough is
   * on, or after adopting journaled ids). A restored handle keeps its backing id only where
   * `backing` holds one for its inode (adopted); otherwise the id is gone (the supervisor
   * closed it) and the handle's RELEASE has none to drop.
   */
  setBacking(backing: BackingTable | null): void {
    this.#backing = backing;
    for (const [fh, h] of this.#handles) {
      if (h.kind !== 'file' || !h.restored || h.backingId === 0) continue;
      const id = backing?.idOf(h.dev, h.ino) ?? 0;
      if (id === h.backingId) continue;
      h.backingId = id;
      this.#checkpoint?.putHandle(fh, handleRecord(h));
    }
  }

  /** Whether a backing table is set. */
  get hasBacking(): boolean {
    return this.#backing !== null;
  }

  /**
   * For `FuseServerOptions.onReplayed`: request `unique` is back, so the kernel never got the
   * previous daemon's reply to it, and a handle that daemon opened for it will never be
   * released by the kernel. Such handles are closed here (and their backing references
   * dropped) before the request runs again.
   */
  replayed = (unique: bigint): void => {
    for (const [fh, h] of this.#handles) {
      if (!h.restored || h.unique !== unique) continue;
      this.#dropHandle(fh, h);
    }
  };

  /** Forgets handle `fh`: its record, its backing reference, its fd. */
  #dropHandle(fh: bigint, h: FileHandle | DirHandle): void {
    this.#handles.delete(fh);
    this.#checkpoint?.deleteHandle(fh);
    if (h.kind !== 'file') return;
    if (h.backingId) this.#backing?.release(h.dev, h.ino);
    if (h.fd >= 0) closeSync(h.fd);
  }

  /** Open handles (files and directories). */
  get openHandles(): number {
    return this.#handles.size;
  }

  #node(nodeid: bigint): Node {
    const node = this.nodes.get(nodeid);
    if (!node) throw new FuseError('ESTALE', `unknown nodeid ${nodeid}`);
    // Every name it had is gone: its old path may name another file by now.
    if (node.removed) throw new FuseError('ENOENT', `nodeid ${nodeid} was removed`);
    return node;
  }

  #abs(rel: string): string {
    return rel === '' ? this.source : join(this.source, rel);
  }

  /** The file handle `fh`; with `io`, one whose source file is open (EIO otherwise). */
  #file(fh: bigint, io = true): FileHandle {
    const h = this.#handles.get(fh);
    if (!h || h.kind !== 'file') throw new FuseError('EBADF', `unknown file handle ${fh}`);
    if (io && h.fd < 0) throw new FuseError('EIO', `file handle ${fh} was restored without its source file`);
    return h;
  }

  /** An fd for `fh` to stat or change the file through, if it is an open file handle. */
  #fdOf(fh: bigint): number | undefined {
    const h = this.#handles.get(fh);
    return h?.kind === 'file' && h.fd >= 0 ? h.fd : undefined;
  }

  /**
   * An open source fd of node `nodeid` when every name it had is gone (unlinked while open):
   * the file lives on, as on a local filesystem, and can only be reached through a handle.
   */
  #fdOfRemoved(nodeid: bigint): number | undefined {
    return this.nodes.get(nodeid)?.removed ? this.#fdOfNode(nodeid) : undefined;
  }

  /** An open source fd of node `nodeid`, if any handle has one. */
  #fdOfNode(nodeid: bigint): number | undefined {
    for (const h of this.#handles.values()) if (h.kind === 'file' && h.nodeid === nodeid && h.fd >= 0) return h.fd;
    return undefined;
  }

  #dir(fh: bigint): DirHandle {
    const h = this.#handles.get(fh);
    if (!h || h.kind !== 'dir') throw new FuseError('EBADF', `unknown directory handle ${fh}`);
    return h;
  }

  #entry(node: Node, st: BigIntStats): EntryOut {
    return { nodeid: node.nodeid, generation: 0n, entryValid: TTL, attrValid: TTL, attr: attrOf(st) };
  }

  /** lstat(2) of `abs`, where MirrorOptions.metadataCalls says. */
  async #lstat(abs: string): Promise<BigIntStats> {
    return this.#metadataOnMain ? lstatSync(abs, { bigint: true }) : fsp.lstat(abs, { bigint: true });
  }

  /** fstat(2) of `fd`, where MirrorOptions.metadataCalls says. */
  async #fstat(fd: number): Promise<BigIntStats> {
    return this.#metadataOnMain ? fstatSync(fd, { bigint: true }) : fstatBig(fd, { bigint: true });
  }

  /**
   * open(2) of source file `abs`, where MirrorOptions.metadataCalls says. On the main thread
   * it is opened with O_NONBLOCK (cleared again unless asked for), so that it never waits
   * there: an open(2) that would wait for another process's lease to break fails
   * EWOULDBLOCK instead, and the kernel sends OPEN and CREATE only for regular files, so
   * what turns out to be anything else was put in the source meanwhile. Both are opened as
   * asked on the pool instead.
   */
  async #openSource(abs: string, flags: number, mode?: number): Promise<number> {
    if (!this.#metadataOnMain) return openFd(abs, flags, mode);
    let fd: number;
    try {
      fd = openFdSync(abs, flags | fsc.O_NONBLOCK, mode);
    } catch (err) {
      // EAGAIN is EWOULDBLOCK on Linux. ENXIO: a FIFO without a reader, opened for writing.
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EAGAIN' || code === 'ENXIO') return openFd(abs, flags, mode);
      throw err;
    }
    let regular: boolean;
    try {
      regular = (fstatFd(fd).mode & fsc.S_IFMT) === fsc.S_IFREG;
      if (regular && !(flags & fsc.O_NONBLOCK)) setNonBlocking(fd, false);
    } catch (err) {
      closeSync(fd);
      throw err;
    }
    if (regular) return fd;
    closeSync(fd);
    return openFd(abs, flags, mode);
  }

  /** Looks `rel` up in the source and counts one kernel lookup of it. */
  async #lookupPath(rel: string): Promise<EntryOut> {
    const st = await this.#lstat(this.#abs(rel));
    return this.#entry(this.nodes.remember(rel, st.dev, st.ino), st);
  }

  /** New files belong to the caller, as on a local filesystem (the daemon runs as root). */
  async #own(abs: string, uid: number, gid: number): Promise<void> {
    if (this.#asRoot) await fsp.lchown(abs, uid, gid);
  }

  lookup = async (req: Req<'lookup'>): Promise<Buffer> => {
    const parent = this.#node(req.header.nodeid);
    return replyEntry(req.header.unique, await this.#lookupPath(this.nodes.childPath(parent, req.name)));
  };

  forget = (req: Req<'forget'>): void => {
    this.nodes.forget(req.header.nodeid, req.nlookup);
  };

  batch_forget = (req: Req<'batch_forget'>): void => {
    for (const f of req.forgets) this.nodes.forget(f.nodeid, f.nlookup);
  };

  getattr = async (req: Req<'getattr'>): Promise<Buffer> => {
    // fstat(2) of a file unlinked while open comes without a handle: stat it through one.
    const fd = this.#fdOf(req.fh) ?? this.#fdOfRemoved(req.header.nodeid);
    let st: BigIntStats;
    if (fd !== undefined) st = await this.#fstat(fd);
    else {
      try {
        st = await this.#lstat(this.#abs(this.#node(req.header.nodeid).path));
      } catch (err) {
        // The name went away without this daemon seeing an UNLINK (a replayed one, answered
        // from the filesystem, or a change in the source): an open handle still leads to it.
        const open = (err as NodeJS.ErrnoException).code === 'ENOENT' ? this.#fdOfNode(req.header.nodeid) : undefined;
        if (open === undefined) throw err;
        st = await this.#fstat(open);
      }
    }
    return replyAttr(req.header.unique, { attrValid: TTL, attr: attrOf(st) });
  };

  setattr = async (req: Req<'setattr'>): Promise<Buffer> => {
    // A file unlinked while open has no path left: it is changed through an open handle.
    const orphanFd = this.#fdOfRemoved(req.header.nodeid);
    const abs = orphanFd === undefined ? this.#abs(this.#node(req.header.nodeid).path) : undefined;
    const fd = (req.valid & FATTR.FH ? this.#fdOf(req.fh) : undefined) ?? orphanFd;
    if (req.valid & FATTR.MODE) {
      if (abs === undefined) await fchmodFd(fd!, req.mode & 0o7777);
      else await fsp.chmod(abs, req.mode & 0o7777);
    }
    if (req.valid & (FATTR.UID | FATTR.GID)) {
      const uid = req.valid & FATTR.UID ? req.uid : -1;
      const gid = req.valid & FATTR.GID ? req.gid : -1;
      if (abs === undefined) await fchownFd(fd!, uid, gid);
      else await fsp.lchown(abs, uid, gid);
    }
    if (req.valid & FATTR.SIZE) {
      if (fd !== undefined) await ftruncateFd(fd, Number(req.size));
      else await fsp.truncate(abs!, Number(req.size));
    }
    if (req.valid & (FATTR.ATIME | FATTR.MTIME)) {
      const atime = timeSpec((req.valid & FATTR.ATIME) !== 0, (req.valid & FATTR.ATIME_NOW) !== 0, req.atime, req.atimensec);
      const mtime = timeSpec((req.valid & FATTR.MTIME) !== 0, (req.valid & FATTR.MTIME_NOW) !== 0, req.mtime, req.mtimensec);
      setTimes(fd ?? abs!, atime, mtime);
    }
    const st = fd !== undefined ? await this.#fstat(fd) : await this.#lstat(abs!);
    return replyAttr(req.header.unique, { attrValid: TTL, attr: attrOf(st) });
  };

  readlink = async (req: Req<'readlink'>): Promise<Buffer> => {
    const target = await fsp.readlink(this.#abs(this.#node(req.header.nodeid).path), { encoding: 'buffer' });
    return replyData(req.header.unique, target);
  };

  symlink = async (req: Req<'symlink'>): Promise<Buffer> => {
    const rel = this.nodes.childPath(this.#node(req.header.nodeid), req.name);
    await fsp.symlink(req.target, this.#abs(rel));
    await this.#own(this.#abs(rel), req.header.uid, req.header.gid);
    return replyEntry(req.header.unique, await this.#lookupPath(rel));
  };

  mknod = async (req: Req<'mknod'>): Promise<Buffer> => {
    const rel = this.nodes.childPath(this.#node(req.header.nodeid), req.name);
    mknod(this.#abs(rel), req.mode & ~req.umask, req.rdev);
    await this.#own(this.#abs(rel), req.header.uid, req.header.gid);
    return replyEntry(req.header.unique, await this.#lookupPath(rel));
  };

  mkdir = async (req: Req<'mkdir'>): Promise<Buffer> => {
    const rel = this.nodes.childPath(this.#node(req.header.nodeid), req.name);
    await fsp.mkdir(this.#abs(rel), req.mode & ~req.umask & 0o7777);
    await this.#own(this.#abs(rel), req.header.uid, req.header.gid);
    return replyEntry(req.header.unique, await this.#lookupPath(rel));
  };

  unlink = async (req: Req<'unlink'>): Promise<Buffer> => {
    const rel = this.nodes.childPath(this.#node(req.header.nodeid), req.name);
    await fsp.unlink(this.#abs(rel));
    this.nodes.unlinked(rel);
    return replyEmpty(req.header.unique);
  };

  rmdir = async (req: Req<'rmdir'>): Promise<Buffer> => {
    const rel = this.nodes.childPath(this.#node(req.header.nodeid), req.name);
    await fsp.rmdir(this.#abs(rel));
    this.nodes.unlinked(rel);
    return replyEmpty(req.header.unique);
  };

  #rename = async (req: Req<'rename' | 'rename2'>): Promise<Buffer> => {
    const from = this.nodes.childPath(this.#node(req.header.nodeid), req.name);
    const to = this.nodes.childPath(this.#node(req.newdir), req.newname);
    if (req.flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE)) throw new FuseError('EINVAL');
    if (req.flags) rename2(this.#abs(from), this.#abs(to), req.flags);
    else await fsp.rename(this.#abs(from), this.#abs(to));
    if (req.flags & RENAME_EXCHANGE) this.nodes.exchanged(from, to);
    else this.nodes.renamed(from, to);
    return replyEmpty(req.header.unique);
  };
  rename = this.#rename;
  rename2 = this.#rename;

  link = async (req: Req<'link'>): Promise<Buffer> => {
    const target = this.#node(req.oldnodeid);
    const rel = this.nodes.childPath(this.#node(req.header.nodeid), req.newname);
    await fsp.link(this.#abs(target.path), this.#abs(rel));
    return replyEntry(req.header.unique, await this.#lookupPath(rel));
  };

  /**
   * Registers `fd` (opened with `flags` for request `unique`) as a handle, with a passthrough
   * backing id when possible. The handle record is in the checkpoint when this returns, before
   * the reply that hands the handle to the kernel.
   */
  async #openHandle(fd: number, flags: number, nodeid: bigint, unique: bigint): Promise<{ fh: bigint; openFlags: number; backingId: number }> {
    const st = fstatFd(fd);
    let backingId = 0;
    try {
      backingId = this.#backing ? await this.#backing.acquire(fd, st.dev, st.ino) : 0;
    } catch (err) {
      await closeFd(fd);
      throw err;
    }
    const fh = this.#nextFh++;
    // Taken now: once the file is unlinked, only its handle leads back to it after a crash.
    const handle = this.#asRoot ? fileHandleOrNone(fd) : undefined;
    const h: FileHandle = { kind: 'file', fd, flags, nodeid, unique: unique & ~FUSE_UNIQUE_RESEND, restored: false, dev: st.dev, ino: st.ino, backingId, handle };
    this.#handles.set(fh, h);
    this.#checkpoint?.putHandle(fh, handleRecord(h));
    this.stats.opens++;
    if (backingId) this.stats.passthroughOpens++;
    return { fh, openFlags: backingId ? FOPEN.PASSTHROUGH : 0, backingId };
  }

  open = async (req: Req<'open'>): Promise<Buffer> => {
    const node = this.#node(req.header.nodeid);
    const flags = (req.flags & ~OPEN_FLAGS_DROPPED) | fsc.O_NOFOLLOW;
    const fd = await this.#openSource(this.#abs(node.path), flags);
    return replyOpen(req.header.unique, await this.#openHandle(fd, flags, node.nodeid, req.header.unique));
  };

  create = async (req: Req<'create'>): Promise<Buffer> => {
    const rel = this.nodes.childPath(this.#node(req.header.nodeid), req.name);
    const abs = this.#abs(rel);
    const flags = (req.flags & ~fsc.O_NOCTTY) | fsc.O_CREAT | fsc.O_NOFOLLOW;
    const fd = await this.#openSource(abs, flags, req.mode & ~req.umask & 0o7777);
    try {
      await this.#own(abs, req.header.uid, req.header.gid);
    } catch (err) {
      await closeFd(fd);
      throw err;
    }
    const st = await this.#fstat(fd);
    const node = this.nodes.remember(rel, st.dev, st.ino);
    const open = await this.#openHandle(fd, flags, node.nodeid, req.header.unique);
    return replyCreate(req.header.unique, this.#entry(node, st), open);
  };

  read = async (req: Req<'read'>): Promise<Buffer> => {
    const h = this.#file(req.fh);
    this.stats.reads++;
    const buf = Buffer.allocUnsafe(req.size);
    const n = await readAt(h.fd, buf, req.offset);
    return replyData(req.header.unique, buf.subarray(0, n));
  };

  write = async (req: Req<'write'>): Promise<Buffer> => {
    const h = this.#file(req.fh);
    this.stats.writes++;
    const n = await writeAt(h.fd, req.data, req.offset);
    return replyWrite(req.header.unique, n);
  };

  flush = (req: Req<'flush'>): Buffer => {
    this.#file(req.fh, false);
    return replyEmpty(req.header.unique);
  };

  fsync = async (req: Req<'fsync'>): Promise<Buffer> => {
    const h = this.#file(req.fh);
    await (req.fsyncFlags & FUSE_FSYNC_FDATASYNC ? fdatasyncFd(h.fd) : fsyncFd(h.fd));
    return replyEmpty(req.header.unique);
  };

  release = (req: Req<'release'>): Buffer => {
    // A replayed RELEASE whose handle is gone was done before the crash.
    if (isResend(req.header.unique) && !this.#handles.has(req.fh)) return replyEmpty(req.header.unique);
    this.#dropHandle(req.fh, this.#file(req.fh, false));
    return replyEmpty(req.header.unique);
  };

  opendir = async (req: Req<'opendir'>): Promise<Buffer> => {
    const node = this.#node(req.header.nodeid);
    const st = await this.#lstat(this.#abs(node.path));
    if (!st.isDirectory()) throw new FuseError('ENOTDIR');
    const fh = this.#nextFh++;
    const h: DirHandle = { kind: 'dir', nodeid: node.nodeid, unique: req.header.unique & ~FUSE_UNIQUE_RESEND, restored: false, entries: undefined };
    this.#handles.set(fh, h);
    this.#checkpoint?.putHandle(fh, handleRecord(h));
    return replyOpen(req.header.unique, { fh, openFlags: 0 });
  };

  async #dirEntries(h: DirHandle, offset: bigint): Promise<{ name: string; type: number }[]> {
    if (offset === 0n || !h.entries) {
      const dirents = await fsp.readdir(this.#abs(this.#node(h.nodeid).path), { withFileTypes: true });
      h.entries = [{ name: '.', type: 4 }, { name: '..', type: 4 }, ...dirents.map((d) => ({ name: d.name, type: direntTypeOf(d) }))];
    }
    return h.entries;
  }

  readdir = async (req: Req<'readdir'>): Promise<Buffer> => {
    const h = this.#dir(req.fh);
    const entries = await this.#dirEntries(h, req.offset);
    const out = new DirentBuilder(req.header.unique, req.size);
    for (let i = Number(req.offset); i < entries.length; i++) {
      const e = entries[i]!;
      if (!out.add({ name: e.name, off: i + 1, ino: 0xffffffffn, type: e.type })) break;
    }
    return out.finish();
  };

  readdirplus = async (req: Req<'readdirplus'>): Promise<Buffer> => {
    const h = this.#dir(req.fh);
    const dir = this.#node(h.nodeid);
    const entries = await this.#dirEntries(h, req.offset);
    const out = new DirentBuilder(req.header.unique, req.size, true);
    for (let i = Number(req.offset); i < entries.length; i++) {
      const e = entries[i]!;
      if (e.name === '.' || e.name === '..') {
        if (!out.add({ name: e.name, off: i + 1, ino: 0xffffffffn, type: e.type })) break;
        continue;
      }
      const rel = this.nodes.childPath(dir, e.name);
      let st: BigIntStats;
      try {
        st = await this.#lstat(this.#abs(rel));
      } catch {
        continue; // removed since readdir
      }
      const node = this.nodes.remember(rel, st.dev, st.ino);
      if (!out.add({ name: e.name, off: i + 1, entry: this.#entry(node, st) })) {
        this.nodes.forget(node.nodeid, 1n);
        break;
      }
    }
    return out.finish();
  };

  releasedir = (req: Req<'releasedir'>): Buffer => {
    const h = this.#handles.get(req.fh);
    if (h?.kind === 'dir') this.#dropHandle(req.fh, h);
    return replyEmpty(req.header.unique);
  };

  fsyncdir = (req: Req<'fsyncdir'>): Buffer => replyEmpty(req.header.unique);

  statfs = async (req: Req<'statfs'>): Promise<Buffer> => {
    const st = await fsp.statfs(this.source, { bigint: true });
    return replyStatfs(req.header.unique, {
      blocks: st.blocks,
      bfree: st.bfree,
      bavail: st.bavail,
      files: st.files,
      ffree: st.ffree,
      bsize: Number(st.bsize),
      namelen: 255,
      frsize: Number(st.bsize),
    });
  };

  setxattr = (req: Req<'setxattr'>): Buffer => {
    setXattr(this.#abs(this.#node(req.header.nodeid).path), req.name, req.value, req.flags);
    return replyEmpty(req.header.unique);
  };

  getxattr = (req: Req<'getxattr'>): Buffer => {
    const value = getXattr(this.#abs(this.#node(req.header.nodeid).path), req.name, Math.min(req.size, XATTR_SIZE_MAX));
    return typeof value === 'number' ? replyXattrSize(req.header.unique, value) : replyData(req.header.unique, value);
  };

  listxattr = (req: Req<'listxattr'>): Buffer => {
    const list = listXattr(this.#abs(this.#node(req.header.nodeid).path), Math.min(req.size, XATTR_SIZE_MAX));
    return typeof list === 'number' ? replyXattrSize(req.header.unique, list) : replyData(req.header.unique, list);
  };

  removexattr = (req: Req<'removexattr'>): Buffer => {
    removeXattr(this.#abs(this.#node(req.header.nodeid).path), req.name);
    return replyEmpty(req.header.unique);
  };

  access = async (req: Req<'access'>): Promise<Buffer> => {
    await fsp.access(this.#abs(this.#node(req.header.nodeid).path), req.mask);
    return replyEmpty(req.header.unique);
  };

  fallocate = (req: Req<'fallocate'>): Buffer => {
    fallocate(this.#file(req.fh).fd, req.mode, req.offset, req.length);
    return replyEmpty(req.header.unique);
  };

  lseek = (req: Req<'lseek'>): Buffer => replyLseek(req.header.unique, lseek(this.#file(req.fh).fd, req.offset, req.whence));

  copy_file_range = (req: Req<'copy_file_range'>): Buffer => {
    const n = copyFileRange(this.#file(req.fhIn).fd, req.offIn, this.#file(req.fhOut).fd, req.offOut, Number(req.len > 0x7ffff000n ? 0x7ffff000n : req.len));
    return replyWrite(req.header.unique, n);
  };

  copy_file_range_64 = (req: Req<'copy_file_range_64'>): Buffer => {
    const n = copyFileRange(this.#file(req.fhIn).fd, req.offIn, this.#file(req.fhOut).fd, req.offOut, Number(req.len > 0x7ffff000n ? 0x7ffff000n : req.len));
    return replyCopyFileRange64(req.header.unique, n);
  };

  /** Closes every open handle's fd (at shutdown). */
  async closeAll(): Promise<void> {
    for (const [fh, h] of this.#handles) {
      this.#handles.delete(fh);
      if (h.kind === 'file' && h.fd >= 0) await closeFd(h.fd).catch(() => {});
    }
    if (this.#sourceFd !== undefined) closeSync(this.#sourceFd);
    this.#sourceFd = undefined;
  }
}

/** The file handle of an open source file, or undefined where the filesystem has none. */
function fileHandleOrNone(fd: number): Buffer | undefined {
  try {
    return fileHandleOf(fd) ?? undefined;
  } catch {
    return undefined;
  }
}

/** A handle as its checkpoint record. */
function handleRecord(h: FileHandle | DirHandle): HandleRecord {
  return h.kind === 'file'
    ? { kind: 'file', nodeid: h.nodeid, flags: h.flags, dev: h.dev, ino: h.ino, backingId: h.backingId, unique: h.unique, ...(h.handle ? { handle: h.handle } : {}) }
    : { kind: 'dir', nodeid: h.nodeid, flags: 0, dev: 0n, ino: 0n, backingId: 0, unique: h.unique };
}

const fstatBig = promisify(fstatCb as (fd: number, o: { bigint: true }, cb: (e: NodeJS.ErrnoException | null, s: BigIntStats) => void) => void) as (fd: number, o: { bigint: true }) => Promise<BigIntStats>;

function direntTypeOf(d: { isFile(): boolean; isDirectory(): boolean; isSymbolicLink(): boolean; isFIFO(): boolean; isSocket(): boolean; isCharacterDevice(): boolean; isBlockDevice(): boolean }): number {
  if (d.isFile()) return 8;
  if (d.isDirectory()) return 4;
  if (d.isSymbolicLink()) return 10;
  if (d.isFIFO()) return 1;
  if (d.isSocket()) return 12;
  if (d.isCharacterDevice()) return 2;
  if (d.isBlockDevice()) return 6;
  return 0;
}

