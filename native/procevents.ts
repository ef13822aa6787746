// The kernel's process events connector (CN_PROC, include/uapi/linux/cn_proc.h): a netlink
// socket on which the kernel reports, among others, every thread that exits, from do_exit()
// after the thread has set PF_EXITING and before it frees the process's memory. A SIGKILLed
// daemon's threads are reported about 0.15 ms after the kill; its fds close only once the
// last thread has torn down the address space, about 65 us per MB of resident memory on a
// small VM (3-7 ms for a Node daemon, 14 ms for one with a 50 MB heap).
//
// Subscribing needs the initial user and pid namespaces (the kernel ignores requests from
// others, silently) and CONFIG_PROC_EVENTS. From Linux 6.6 the subscription can ask the
// kernel to filter: only exits with a non-zero exit code (a signal, or exit(n) with n != 0)
// are then sent, so normal thread exits elsewhere on the machine cost nothing here.
import { release } from 'node:os';
import { sys, lastErrno } from './libc.ts';
import { NativeError, errnoValue } from './errors.ts';
import { setSocketBuffer, socketType } from './socket.ts';

const AF_NETLINK = 16;
const NETLINK_CONNECTOR = 11;
const NLMSG_DONE = 3;
const NLMSG_HDRLEN = 16;
const CN_MSG_LEN = 20;
const CN_IDX_PROC = 1;
const CN_VAL_PROC = 1;
const PROC_CN_MCAST_LISTEN = 1;
const PROC_EVENT_NONZERO_EXIT = 0x20000000;
const PROC_EVENT_EXIT = 0x80000000;
/** struct proc_event: what u32, cpu u32, timestamp_ns u64, then the event's data. */
const EVENT_DATA = 16;

/** One thread's exit as the kernel reported it. */
export interface ThreadExit {
  /** The thread's id (equal to `pid` for the main thread). */
  tid: number;
  /** The process (thread group) id. */
  pid: number;
  /** The wait status: the signal number for a thread killed by one, `n << 8` for exit(n). */
  exitCode: number;
  /** When it exited: the event's `timestamp_ns` (ktime_get_ns(), CLOCK_MONOTONIC). */
  atNs: bigint;
}

/** Whether this kernel filters process events for a listener (Linux 6.6, `struct proc_input`). */
function kernelFilters(): boolean {
  const m = /^(\d+)\.(\d+)/.exec(release());
  return m !== null && (Number(m[1]) > 6 || (Number(m[1]) === 6 && Number(m[2]) >= 6));
}

/**
 * A non-blocking netlink socket subscribed to the kernel's thread exit events: only non-zero
 * exits where the kernel can filter them (6.6+), every process event before that. The caller
 * owns the fd; read it with `readThreadExits` when it polls readable. Throws `NativeError`:
 * EPROTONOSUPPORT without CONFIG_PROC_EVENTS, EPERM where netlink multicast is not allowed.
 * A subscription from outside the initial namespaces is accepted but never delivers.
 */
export function subscribeThreadExits(): number {
  const fd = sys.socket(AF_NETLINK, socketType('dgram'), NETLINK_CONNECTOR) as number;
  if (fd < 0) throw new NativeError('socket(AF_NETLINK, NETLINK_CONNECTOR)', lastErrno());
  try {
    // Room for a burst: each event is a 76-byte datagram (about 1 KB of buffer accounting
    // each). Best effort: the default is smaller but works, and an overflow is reported.
    try {
      setSocketBuffer(fd, 'receive', 1 << 20);
    } catch {
      // keep the default
    }
    // struct sockaddr_nl: family, pad, port id (0: the kernel assigns one), multicast groups.
    const addr = Buffer.alloc(12);
    addr.writeUInt16LE(AF_NETLINK, 0);
    addr.writeUInt32LE(CN_IDX_PROC, 8);
    if (sys.bind(fd, addr, addr.length) !== 0) throw new NativeError('bind(netlink CN_IDX_PROC)', lastErrno());
    const filtered = kernelFilters();
    const payload = filtered ? 8 : 4;
    const msg = Buffer.alloc(NLMSG_HDRLEN + CN_MSG_LEN + payload);
    msg.writeUInt32LE(msg.length, 0);
    msg.writeUInt16LE(NLMSG_DONE, 4);
    msg.writeUInt32LE(CN_IDX_PROC, NLMSG_HDRLEN);
    msg.writeUInt32LE(CN_VAL_PROC, NLMSG_HDRLEN + 4);
    msg.writeUInt16LE(payload, NLMSG_HDRLEN + 16);
    msg.writeUInt32LE(PROC_CN_MCAST_LISTEN, NLMSG_HDRLEN + CN_MSG_LEN);
    if (filtered) msg.writeUInt32LE(PROC_EVENT_NONZERO_EXIT, NLMSG_HDRLEN + CN_MSG_LEN + 4);
    const n = Number(sys.write(fd, msg, msg.length));
    if (n !== msg.length) throw new NativeError('send(PROC_CN_MCAST_LISTEN)', n < 0 ? lastErrno() : errnoValue('EIO'));
    return fd;
  } catch (err) {
    sys.close(fd);
    throw err;
  }
}

/**
 * The thread exits in `bytes` (one or more netlink messages as read from the socket); other
 * events are skipped. Pure.
 */
export function parseThreadExits(bytes: Buffer): ThreadExit[] {
  const out: ThreadExit[] = [];
  for (let at = 0; at + NLMSG_HDRLEN <= bytes.length; ) {
    const len = bytes.readUInt32LE(at);
    if (len < NLMSG_HDRLEN || at + len > bytes.length) break;
    const cn = at + NLMSG_HDRLEN;
    const ev = cn + CN_MSG_LEN;
    if (
      len >= NLMSG_HDRLEN + CN_MSG_LEN + EVENT_DATA + 12 &&
      bytes.readUInt32LE(cn) === CN_IDX_PROC &&
      bytes.readUInt32LE(cn + 4) === CN_VAL_PROC &&
      bytes.readUInt32LE(ev) === PROC_EVENT_EXIT
    ) {
      out.push({ tid: bytes.readInt32LE(ev + EVENT_DATA), pid: bytes.readInt32LE(ev + EVENT_DATA + 4), exitCode: bytes.readUInt32LE(ev + EVENT_DATA + 8), atNs: bytes.readBigUInt64LE(ev + 8) });
    }
    at += (len + 3) & ~3;
  }
  return out;
}

/**
 * Reads every pending datagram of a `subscribeThreadExits` socket into `buf` and returns
 * the thread exits in them. ENOBUFS (the socket overflowed: events were lost) is reported as
 * `lost: true`, not thrown; other errors throw `NativeError`.
 */
export function readThreadExits(fd: number, buf: Buffer): { exits: ThreadExit[]; lost: boolean } {
  const exits: ThreadExit[] = [];
  let lost = false;
  for (;;) {
    const n = Number(sys.read(fd, buf, buf.length));
    if (n < 0) {
      const errno = lastErrno();
      if (errno === errnoValue('EAGAIN')) break;
      if (errno === errnoValue('ENOBUFS')) {
        lost = true;
        continue;
      }
      throw new NativeError('read(netlink)', errno);
    }
    if (n === 0) break;
    for (const e of parseThreadExits(buf.subarray(0, n))) exits.push(e);
  }
  return { exits, lost };
}
