// Cost of the native seam: a SEQPACKET round trip (send + receive on a socket pair, so no
// scheduler hop) with and without an fd attached, next to Node's own fs.fstatSync as a
// baseline for "one syscall from JS", and the FUSE ioctls on a mounted passthrough connection.
// Run: npm run bench -- seam   (root, /dev/fuse)
import { fstatSync, writeFileSync, openSync, closeSync } from 'node:fs';
import { join } from 'node:path';
import { createSocketPair, sendMessage, receiveMessage, closeAll, openFd, O, fstatFd, ioctl, NativeError } from '../native/index.ts';
import { backingOpen, backingClose } from '../kernel/backing.ts';
import { FUSE_DEV_IOC_BACKING_CLOSE_ALL } from '../kernel/abi.ts';
import { mountTestConnection } from '../test/kernel/helpers/connection.ts';
import { nsPerOp, writeResult } from './lib.ts';

export async function run(): Promise<void> {
  const [a, b] = createSocketPair('seqpacket');
  const payload = { data: Buffer.alloc(64, 7), fds: [] as number[] };
  const file = openFd('/proc/self/status', O.RDONLY);
  const withFd = { data: Buffer.alloc(64, 7), fds: [file] };
  const recvOpts = { maxBytes: 4096, maxFds: 4 };
  const roundTrip = nsPerOp(() => {
    sendMessage(a, payload);
    receiveMessage(b, recvOpts);
  }, 20_000);
  const roundTripFd = nsPerOp(() => {
    sendMessage(a, withFd);
    const m = receiveMessage(b, recvOpts);
    if (m.kind === 'message') closeAll(m.fds);
  }, 20_000);
  const nodeFd = openSync('/proc/self/status', 'r');
  const nodeFstat = nsPerOp(() => fstatSync(nodeFd), 50_000);
  const seamFstat = nsPerOp(() => fstatFd(file), 50_000);
  closeSync(nodeFd);
  closeAll([a, b, file]);

  const conn = await mountTestConnection();
  let backingPair = NaN;
  let enotty = NaN;
  try {
    writeFileSync(join(conn.dir, 'backing'), 'x');
    const backing = openFd(join(conn.dir, 'backing'), O.RDONLY);
    backingPair = nsPerOp(() => backingClose(conn.fd, backingOpen(conn.fd, backing)), 20_000);
    enotty = nsPerOp(() => {
      try {
        ioctl(conn.fd, FUSE_DEV_IOC_BACKING_CLOSE_ALL, 0);
      } catch (err) {
        if (!(err instanceof NativeError)) throw err;
      }
    }, 20_000);
    closeAll([backing]);
  } finally {
    conn.cleanup();
  }
  const figures = {
    seqpacketRoundTripNs: Math.round(roundTrip),
    seqpacketRoundTripWithFdNs: Math.round(roundTripFd),
    fdCostNs: Math.round(roundTripFd - roundTrip),
    seamFstatNs: Math.round(seamFstat),
    nodeFstatSyncNs: Math.round(nodeFstat),
    seamVsNodeFstatRatio: Number((seamFstat / nodeFstat).toFixed(2)),
    backingOpenPlusCloseNs: Math.round(backingPair),
    failingIoctlNs: Math.round(enotty),
  };
  console.table(figures);
  writeResult('seam', figures);
}
