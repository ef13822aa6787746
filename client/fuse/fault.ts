// TEST-ONLY fault injection. Inert unless the environment variable FUSEKEEPER_FAULT is set
// when this module loads; nothing in production sets it. The recovery tests use it to kill
// a daemon at the exact points where a crash is hardest to recover from:
//
//   FUSEKEEPER_FAULT=after-exec:<op>       e.g. after-exec:mkdir: SIGKILL after the handler of
//                                          a (not replayed) <op> request ran, before its reply
//                                          is written
//   FUSEKEEPER_FAULT=after-backing-open    SIGKILL right after FUSE_DEV_IOC_BACKING_OPEN
//                                          returned an id, before the id is journaled
//   FUSEKEEPER_FAULT=skip-adopt            not a kill: a resumed daemon adopts no journaled
//                                          backing id, as one without the journal strategy
//                                          (the supervisor then closes them all)
//
// With FUSEKEEPER_FAULT_ONCE=PATH the fault fires only in the process that manages to create
// PATH (O_EXCL), so a restarted daemon with the same environment runs clean.
import { closeSync, openSync } from 'node:fs';

const point = process.env.FUSEKEEPER_FAULT;
const oncePath = process.env.FUSEKEEPER_FAULT_ONCE;

/** Test-only: whether FUSEKEEPER_FAULT names `name`, for the faults that change behaviour. */
export function faultArmed(name: string): boolean {
  return point === name;
}

/** Test-only: SIGKILLs this process when FUSEKEEPER_FAULT names `name`. */
export function faultPoint(name: string): void {
  if (!faultArmed(name)) return;
  if (oncePath) {
    try {
      closeSync(openSync(oncePath, 'wx'));
    } catch {
      return; // another process fired it already
    }
  }
  process.kill(process.pid, 'SIGKILL');
}
