// The supervisor's start-up rehearsal of the recovery path (supervisor/rehearsal.ts): it must
// change nothing a recovery or anything else could notice.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readlinkSync } from 'node:fs';
import { threadScheduling } from '../../native/index.ts';
import { rehearseRecovery } from '../../supervisor/rehearsal.ts';

/** This process's open fds and what they point at (the listing's own fd is gone by the time it is read). */
function openFds(): string[] {
  return readdirSync('/proc/self/fd')
    .map((fd) => {
      try {
        return `${fd} ${readlinkSync(`/proc/self/fd/${fd}`)}`;
      } catch {
        return null;
      }
    })
    .filter((x) => x !== null)
    .sort();
}

/** Each of this process's threads with its scheduling policy and priority. */
function schedulingOfThreads(): string[] {
  return readdirSync('/proc/self/task').map((tid) => `${tid} ${JSON.stringify(threadScheduling(Number(tid)))}`).sort();
}

test('rehearseRecovery leaves no fd open and no thread of this process moved', () => {
  const fds = openFds();
  const threads = schedulingOfThreads();
  rehearseRecovery();
  rehearseRecovery();
  assert.deepEqual(openFds(), fds);
  assert.deepEqual(schedulingOfThreads(), threads);
});
