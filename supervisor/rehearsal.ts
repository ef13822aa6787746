// The recovery path run once at start-up, on targets it cannot harm, so that the first crash
// the supervisor recovers does not pay for running that code for the first time. Compiled at
// load (bin/warm-code.js), the code still fills V8's property caches and koffi's call paths
// on its first run. On the failover bench the first recovery of a run had its looks, steps and
// hand-over 1.5-2 times slower than the later ones, and was among the 5 worst rounds of 100
// in 11 of 14 runs. Run for the first time and then again in a fresh process with the
// supervisor's flags, a look at a live process took 739 then 251 µs, the id probe 921 then
// 84, the hand-over's frames through a socket pair 1455 then 168 (stop 25).
import { closeAll, closeFd, createSealedFile, createSocketPair, currentCpu, openFd, O, receiveMessage, sendMessage } from '../native/index.ts';
import { notifyResend } from '../kernel/backing.ts';
import { acquireAttachment, encodeAcquireSequence, encodeCheckpointFile, JournalEntries, MAX_MESSAGE } from '../protocol/index.ts';
import { probeUnreported } from './cleanup.ts';
import { BackingJournal } from './journal.ts';
import { isDying, moveOffCpu, parkedAt, restoreThreads, ringInFileTables, scanThreads, yieldExitingThreads } from './recovery.ts';

/** A thread id above any pid_max (at most 2^22): every scheduling call on it fails with ESRCH. */
const NO_SUCH_TID = 0x3fffffff;

/** A kernel stack as /proc/<tid>/stack shows one of a thread parked in a futex wait. */
const PARKED_STACK = '[<0>] futex_wait_queue+0x6d/0xa0\n[<0>] __futex_wait+0x8e/0x110\n[<0>] futex_wait+0x6b/0x110\n[<0>] do_syscall_64+0x82/0x190\n';

/**
 * Runs the recovery's steps once where they change nothing: looks at this process's own
 * threads, moves a thread that does not exist, probes and replays on /dev/null (the probe's
 * ioctl fails ENOTTY there, the replay's notification is written away), and sends a made-up
 * resumed hand-over, frames and sealed files, through a socket pair to itself. Nothing it
 * does can fail the supervisor: a step that throws is skipped.
 */
export function rehearseRecovery(): void {
  const step = (run: () => unknown): void => {
    try {
      run();
    } catch {
      // Only the code's first run matters here, failed or not.
    }
  };
  const self = process.pid;
  step(() => scanThreads(self));
  step(() => isDying(self));
  // The second is found to share the first's table (kcmp), which is listed once.
  step(() => ringInFileTables([self, self]));
  step(() => parkedAt(PARKED_STACK));
  step(() => {
    const cpu = currentCpu();
    yieldExitingThreads([NO_SUCH_TID]);
    moveOffCpu([{ tid: NO_SUCH_TID, cpu }], cpu);
    restoreThreads([NO_SUCH_TID], new Map([[NO_SUCH_TID, Buffer.alloc(128)]]));
  });
  let devNull = -1;
  step(() => (devNull = openFd('/dev/null', O.RDWR)));
  if (devNull >= 0) {
    step(() => probeUnreported(devNull, new BackingJournal()));
    step(() => notifyResend(devNull));
    step(() => sendHandover(devNull));
    closeFd(devNull);
  }
}

/** A resumed hand-over with `deviceFd` as the session's fd, once in frames and once in files, sent to a socket pair's other end and received there. */
function sendHandover(deviceFd: number): void {
  const checkpoint = new Map([['rehearsal', Buffer.alloc(48)]]);
  const journal = JournalEntries.from([{ id: 1, dev: 1n, ino: 1n }]);
  const [to, from] = createSocketPair('seqpacket');
  try {
    for (const inFiles of [false, true]) {
      const frames = encodeAcquireSequence(1, { acquired: { type: 'acquired', generation: 2, resumed: true, strategy: 'journal' }, initParams: Buffer.alloc(16), checkpoint, journal }, { checkpointFile: inFiles, journalFile: inFiles });
      for (const frame of frames) {
        const attach = acquireAttachment(frame);
        const file = attach === 'checkpoint-file' ? encodeCheckpointFile(checkpoint) : attach === 'journal-file' ? journal.bytes : null;
        const fds = attach === 'fuse-device' ? [deviceFd] : file ? [createSealedFile('fusekeeper-rehearsal', file)] : [];
        try {
          sendMessage(to, { data: frame, fds });
        } finally {
          if (file) closeAll(fds);
        }
        const r = receiveMessage(from, { maxBytes: MAX_MESSAGE, maxFds: 4 });
        if (r.kind === 'message') closeAll(r.fds);
      }
    }
  } finally {
    closeFd(to);
    closeFd(from);
  }
}
