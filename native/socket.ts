import { sys, lastErrno, allocBlock, type NativeBlock } from './libc.ts';
import { NativeError, errnoValue } from './errors.ts';

const AF_UNIX = 1;
const SOCK_DGRAM = 2;
const SOCK_SEQPACKET = 5;
const SOCK_NONBLOCK = 0o4000;
const SOCK_CLOEXEC = 0o2000000;
const SOL_SOCKET = 1;
const SO_PEERCRED = 17;
const SO_SNDBUF = 7;
const SO_RCVBUF = 8;
const SCM_RIGHTS = 1;
const MSG_CTRUNC = 0x8;
const MSG_TRUNC = 0x20;
const MSG_NOSIGNAL = 0x4000;
const MSG_CMSG_CLOEXEC = 0x40000000;

/** Most fds one SCM_RIGHTS message can carry (the kernel's SCM_MAX_FD). */
export const SCM_MAX_FD = 253;
/** Longest `sun_path`, including the leading NUL of an abstract address. */
export const UNIX_PATH_MAX = 108;

/** x86_64 layouts, checked by test/unit/native-layout.test.ts. */
export const LAYOUT = {
  msghdr: { size: 56, name: 0, namelen: 8, iov: 16, iovlen: 24, control: 32, controllen: 40, flags: 48 },
  iovec: { size: 16, base: 0, len: 8 },
  cmsghdr: { size: 16, len: 0, level: 8, type: 12 },
  ucred: { size: 12, pid: 0, uid: 4, gid: 8 },
  sockaddrUn: { size: 110, family: 0, path: 2 },
} as const;

/** `CMSG_SPACE(n)`: bytes a control message with `n` payload bytes occupies. */
export function cmsgSpace(n: number): number {
  return LAYOUT.cmsghdr.size + ((n + 7) & ~7);
}

/** The two socket kinds fusekeeper uses. */
export type SocketKind = 'seqpacket' | 'dgram';

/** A message on the wire: bytes plus the fds attached with SCM_RIGHTS. */
export interface Message {
  data: Buffer;
  fds: number[];
}

/** What `receiveMessage` read. */
export type Received =
  | {
      kind: 'message';
      data: Buffer;
      /** Received fds the caller now owns (at most `maxFds`, close-on-exec). */
      fds: number[];
      /** The message was longer than `maxBytes`; the rest was discarded by the kernel. */
      truncated: boolean;
      /** Fds beyond `maxFds` that arrived and were closed here. */
      extraFdsClosed: number;
      /** The kernel dropped fds for lack of control space (only possible beyond SCM_MAX_FD). */
      controlTruncated: boolean;
    }
  | { kind: 'again' }
  | { kind: 'eof' };

const NO_FDS: number[] = [];

// One scratch area serves every call: Node runs these synchronously on one thread.
const HEADER_AREA = 64 + 16 + 128;
const CONTROL_CAPACITY = cmsgSpace(4 * SCM_MAX_FD);
const scratch = allocBlock(HEADER_AREA + CONTROL_CAPACITY);
const MSG_OFF = 0;
const IOV_OFF = 64;
const NAME_OFF = 80;
const CONTROL_OFF = HEADER_AREA;
let dataBlock: NativeBlock = allocBlock(64 * 1024);
let dataAddress = Number(dataBlock.address);

function dataCapacity(n: number): NativeBlock {
  if (n > dataBlock.view.length) {
    sys.free(dataBlock.ptr);
    dataBlock = allocBlock(Math.max(n, dataBlock.view.length * 2));
    dataAddress = Number(dataBlock.address);
  }
  return dataBlock;
}

/**
 * Encodes a `sockaddr_un` for `address`: a filesystem path, or `@name` for the abstract
 * namespace (the `@` becomes the leading NUL; no trailing NUL is counted). Returns the
 * address length. Throws `RangeError` for an empty or too long address.
 */
export function encodeUnixAddress(address: string, out: Buffer): number {
  const abstract = address.startsWith('@');
  const name = Buffer.from(abstract ? address.slice(1) : address, 'utf8');
  if (name.length === 0) throw new RangeError('empty unix socket address');
  // A path carries its trailing NUL; an abstract name its leading NUL and no trailing one.
  const used = name.length + 1;
  if (used > UNIX_PATH_MAX) throw new RangeError(`unix socket address too long (${used} > ${UNIX_PATH_MAX} bytes): ${address}`);
  out.fill(0, 0, LAYOUT.sockaddrUn.size);
  out.writeUInt16LE(AF_UNIX, LAYOUT.sockaddrUn.family);
  name.copy(out, LAYOUT.sockaddrUn.path + (abstract ? 1 : 0));
  return LAYOUT.sockaddrUn.path + used;
}

/** The type argument of socket(2) for a non-blocking, close-on-exec socket of `kind`. */
export function socketType(kind: SocketKind): number {
  return (kind === 'seqpacket' ? SOCK_SEQPACKET : SOCK_DGRAM) | SOCK_NONBLOCK | SOCK_CLOEXEC;
}

/** A new non-blocking, close-on-exec AF_UNIX socket. The caller owns it. Throws `NativeError`. */
export function createSocket(kind: SocketKind): number {
  const fd = sys.socket(AF_UNIX, socketType(kind), 0) as number;
  if (fd < 0) throw new NativeError('socket', lastErrno());
  return fd;
}

/** A connected pair of non-blocking, close-on-exec AF_UNIX sockets. The caller owns both. */
export function createSocketPair(kind: SocketKind): [number, number] {
  const sv = [-1, -1];
  if (sys.socketpair(AF_UNIX, socketType(kind), 0, sv) !== 0) throw new NativeError('socketpair', lastErrno());
  return [sv[0]!, sv[1]!];
}

/** Binds `fd` to `address` (path or `@abstract`). Throws `NativeError`; `fd` stays the caller's. */
export function bindSocket(fd: number, address: string): void {
  const addr = Buffer.alloc(LAYOUT.sockaddrUn.size);
  const len = encodeUnixAddress(address, addr);
  if (sys.bind(fd, addr, len) !== 0) throw new NativeError('bind', lastErrno(), address);
}

/** listen(2). Throws `NativeError`. */
export function listenSocket(fd: number, backlog = 128): void {
  if (sys.listen(fd, backlog) !== 0) throw new NativeError('listen', lastErrno());
}

/**
 * Accepts one connection: a non-blocking, close-on-exec fd the caller owns, or `null` when
 * none is pending. Throws `NativeError` for other errors.
 */
export function acceptConnection(fd: number): number | null {
  const conn = sys.accept4(fd, null, null, SOCK_NONBLOCK | SOCK_CLOEXEC) as number;
  if (conn >= 0) return conn;
  const errno = lastErrno();
  if (errno === errnoValue('EAGAIN') || errno === errnoValue('ECONNABORTED')) return null;
  throw new NativeError('accept4', errno);
}

/**
 * Connects `fd` to `address`. Unix sockets connect synchronously, even non-blocking ones,
 * except that a full listen backlog gives `EAGAIN`. Throws `NativeError`.
 */
export function connectSocket(fd: number, address: string): void {
  const addr = Buffer.alloc(LAYOUT.sockaddrUn.size);
  const len = encodeUnixAddress(address, addr);
  if (sys.connect(fd, addr, len) !== 0) throw new NativeError('connect', lastErrno(), address);
}

/** Stores `n` (a byte count or an address below 2^53) as a u64 without making BigInts. */
function writeU64(v: Buffer, at: number, n: number): void {
  v.writeUInt32LE(n % 0x1_0000_0000, at);
  v.writeUInt32LE(Math.floor(n / 0x1_0000_0000), at + 4);
}

/** A u64 length field that is known to be small (msg_controllen, cmsg_len). */
function readLength(v: Buffer, at: number): number {
  return v.readUInt32LE(at) + v.readUInt32LE(at + 4) * 0x1_0000_0000;
}

// Addresses as Numbers (user-space addresses are below 2^47): writing a msghdr then makes no
// BigInt, which matters at 100k+ JOURNAL_OPEN frames per hand-over (one recvmsg each).
const scratchAddress = Number(scratch.address);

function writeMsghdr(nameLen: number, dataLen: number, controlLen: number): void {
  const v = scratch.view;
  const m = LAYOUT.msghdr;
  v.fill(0, MSG_OFF, MSG_OFF + m.size);
  if (nameLen > 0) {
    writeU64(v, MSG_OFF + m.name, scratchAddress + NAME_OFF);
    v.writeUInt32LE(nameLen, MSG_OFF + m.namelen);
  }
  writeU64(v, MSG_OFF + m.iov, scratchAddress + IOV_OFF);
  writeU64(v, MSG_OFF + m.iovlen, 1);
  writeU64(v, IOV_OFF + LAYOUT.iovec.base, dataAddress);
  writeU64(v, IOV_OFF + LAYOUT.iovec.len, dataLen);
  if (controlLen > 0) {
    writeU64(v, MSG_OFF + m.control, scratchAddress + CONTROL_OFF);
    writeU64(v, MSG_OFF + m.controllen, controlLen);
  }
}

/**
 * Sends one message with its fds attached (SCM_RIGHTS). The kernel duplicates the fds into
 * the message: they stay owned by the caller on every path, sent or not. Returns the bytes
 * sent, or `null` when the socket buffer is full (`EAGAIN`; nothing was sent). `address`
 * is for unconnected datagram sockets. Throws `NativeError` (`EPIPE`, `ECONNREFUSED`, ...).
 */
export function sendMessage(fd: number, msg: Message, address?: string): number | null {
  if (msg.fds.length > SCM_MAX_FD) throw new RangeError(`at most ${SCM_MAX_FD} fds per message (got ${msg.fds.length})`);
  const data = dataCapacity(msg.data.length);
  msg.data.copy(data.view, 0);
  let nameLen = 0;
  if (address !== undefined) nameLen = encodeUnixAddress(address, scratch.view.subarray(NAME_OFF, NAME_OFF + 128));
  let controlLen = 0;
  if (msg.fds.length > 0) {
    const c = CONTROL_OFF;
    controlLen = cmsgSpace(4 * msg.fds.length);
    scratch.view.fill(0, c, c + controlLen);
    writeU64(scratch.view, c + LAYOUT.cmsghdr.len, LAYOUT.cmsghdr.size + 4 * msg.fds.length);
    scratch.view.writeInt32LE(SOL_SOCKET, c + LAYOUT.cmsghdr.level);
    scratch.view.writeInt32LE(SCM_RIGHTS, c + LAYOUT.cmsghdr.type);
    msg.fds.forEach((f, i) => scratch.view.writeInt32LE(f, c + LAYOUT.cmsghdr.size + 4 * i));
  }
  writeMsghdr(nameLen, msg.data.length, controlLen);
  const n = Number(sys.sendmsg(fd, scratch.ptr, MSG_NOSIGNAL));
  if (n >= 0) return n;
  const errno = lastErrno();
  if (errno === errnoValue('EAGAIN')) return null;
  throw new NativeError('sendmsg', errno, address);
}

/**
 * Receives one message. Fds arrive close-on-exec; the caller owns the returned `fds`, and
 * fds beyond `maxFds` are closed here (counted in `extraFdsClosed`). On `again`/`eof` and on
 * a thrown `NativeError` no fd was received. With `view`, `data` is a view of this module's
 * buffer, valid only until the next `receiveMessage` or `sendMessage` (copy what is kept).
 */
export function receiveMessage(fd: number, opts: { maxBytes: number; maxFds: number; view?: boolean }): Received {
  const data = dataCapacity(opts.maxBytes);
  scratch.view.fill(0, CONTROL_OFF, CONTROL_OFF + CONTROL_CAPACITY);
  writeMsghdr(0, opts.maxBytes, CONTROL_CAPACITY);
  const n = Number(sys.recvmsg(fd, scratch.ptr, MSG_CMSG_CLOEXEC));
  if (n < 0) {
    const errno = lastErrno();
    if (errno === errnoValue('EAGAIN')) return { kind: 'again' };
    throw new NativeError('recvmsg', errno);
  }
  const v = scratch.view;
  const flags = v.readInt32LE(MSG_OFF + LAYOUT.msghdr.flags);
  const controlLen = readLength(v, MSG_OFF + LAYOUT.msghdr.controllen);
  const received: number[] = controlLen === 0 ? NO_FDS : [];
  for (let off = 0; off + LAYOUT.cmsghdr.size <= controlLen; ) {
    const base = CONTROL_OFF + off;
    const len = readLength(v, base + LAYOUT.cmsghdr.len);
    if (len < LAYOUT.cmsghdr.size) break;
    if (v.readInt32LE(base + LAYOUT.cmsghdr.level) === SOL_SOCKET && v.readInt32LE(base + LAYOUT.cmsghdr.type) === SCM_RIGHTS) {
      for (let i = LAYOUT.cmsghdr.size; i + 4 <= len; i += 4) received.push(v.readInt32LE(base + i));
    }
    off += (len + 7) & ~7;
  }
  const keep = received.length <= opts.maxFds ? (received.length === 0 ? [] : received) : received.slice(0, Math.max(0, opts.maxFds));
  const extra = keep === received ? 0 : received.length - keep.length;
  for (let i = keep.length; i < received.length; i++) sys.close(received[i]!);
  if (n === 0 && received.length === 0) return { kind: 'eof' };
  const bytes = data.view.subarray(0, Math.min(n, opts.maxBytes));
  return {
    kind: 'message',
    data: opts.view ? bytes : Buffer.from(bytes),
    fds: keep,
    truncated: (flags & MSG_TRUNC) !== 0,
    extraFdsClosed: extra,
    controlTruncated: (flags & MSG_CTRUNC) !== 0,
  };
}

/** Credentials of the peer of a connected unix socket, as the kernel recorded them at connect(). */
export interface PeerCredentials {
  pid: number;
  uid: number;
  gid: number;
}

/** SO_PEERCRED of `fd`. Throws `NativeError`. */
export function peerCredentials(fd: number): PeerCredentials {
  const buf = Buffer.alloc(LAYOUT.ucred.size);
  const len = [LAYOUT.ucred.size];
  if (sys.getsockopt(fd, SOL_SOCKET, SO_PEERCRED, buf, len) !== 0) throw new NativeError('getsockopt(SO_PEERCRED)', lastErrno());
  return { pid: buf.readInt32LE(LAYOUT.ucred.pid), uid: buf.readUInt32LE(LAYOUT.ucred.uid), gid: buf.readUInt32LE(LAYOUT.ucred.gid) };
}

const POLLOUT = 0x004;

/**
 * Blocks the thread in poll(2) until `fd` is writable or `timeoutMs` passed; true when
 * writable (or in error: the next send reports it). For the rare full socket buffer on a
 * path that must not yield to the event loop.
 */
export function waitWritableSync(fd: number, timeoutMs: number): boolean {
  const pfd = Buffer.alloc(8);
  pfd.writeInt32LE(fd, 0);
  pfd.writeInt16LE(POLLOUT, 4);
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const n = sys.poll(pfd, 1, Math.max(0, deadline - Date.now())) as number;
    if (n > 0) return true;
    if (n === 0) return false;
    if (lastErrno() !== errnoValue('EINTR')) throw new NativeError('poll', lastErrno());
  }
}

/** shutdown(2) both directions; errors (already closed peer) are ignored. */
export function shutdownSocket(fd: number): void {
  sys.shutdown(fd, 2);
}

const SO_TYPE = 3;
const SO_ACCEPTCONN = 30;
const SO_DOMAIN = 39;

/** What kind of socket `fd` is: for checking fds inherited from systemd (LISTEN_FDS). */
export interface SocketInfo {
  /** `unix` for AF_UNIX, otherwise the address family number. */
  family: 'unix' | number;
  kind: SocketKind | 'stream' | number;
  /** listen(2) was called on it. */
  listening: boolean;
}

function intOption(fd: number, name: number): number {
  const buf = Buffer.alloc(4);
  const len = [4];
  if (sys.getsockopt(fd, SOL_SOCKET, name, buf, len) !== 0) throw new NativeError('getsockopt', lastErrno(), String(fd));
  return buf.readInt32LE(0);
}

/**
 * Asks for a send or receive buffer of `bytes` (SO_SNDBUF / SO_RCVBUF; the kernel caps the
 * request at net.core.wmem_max / rmem_max and doubles it for its own accounting). Returns
 * the size now in force. Throws `NativeError`.
 */
export function setSocketBuffer(fd: number, which: 'send' | 'receive', bytes: number): number {
  const name = which === 'send' ? SO_SNDBUF : SO_RCVBUF;
  const buf = Buffer.alloc(4);
  buf.writeInt32LE(bytes, 0);
  if (sys.setsockopt(fd, SOL_SOCKET, name, buf, 4) !== 0) throw new NativeError(`setsockopt(${which === 'send' ? 'SO_SNDBUF' : 'SO_RCVBUF'})`, lastErrno(), String(fd));
  return intOption(fd, name);
}

/** Family, type and listening state of socket `fd`. Throws `NativeError` (`ENOTSOCK`, `EBADF`). */
export function socketInfo(fd: number): SocketInfo {
  const family = intOption(fd, SO_DOMAIN);
  const type = intOption(fd, SO_TYPE);
  return {
    family: family === AF_UNIX ? 'unix' : family,
    kind: type === SOCK_SEQPACKET ? 'seqpacket' : type === SOCK_DGRAM ? 'dgram' : type === 1 ? 'stream' : type,
    listening: intOption(fd, SO_ACCEPTCONN) !== 0,
  };
}
