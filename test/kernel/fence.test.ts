// The kernel facts the fast fence relies on (supervisor/recovery.ts, native/procevents.ts):
// a live process is not exiting; a SIGKILLed one is reported by thread exit events, and
// every thread of it is exiting soon after (a thread the scheduler has not run since the
// signal is not exiting yet, so not always at the first event) while it still holds its
// fds (they close after its memory is freed); a dead process that is not yet reaped is
// exiting too. Such a process's threads can still be moved to SCHED_IDLE (and back).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { isExiting, restoreThreads, scanThreads, threadsExiting, yieldExitingThreads } from '../../supervisor/recovery.ts';
import { closeFd, readThreadExits, subscribeThreadExits, watchFd, type ThreadExit } from '../../native/index.ts';
import { waitUntil } from './helpers/supervisor.ts';

test('a live process is not exiting', async (t) => {
  const child = spawn('sleep', ['30'], { stdio: 'ignore' });
  t.after(() => child.kill('SIGKILL'));
  await new Promise((r) => child.once('spawn', r));
  assert.equal(isExiting(child.pid!), false);
  assert.equal(threadsExiting(child.pid!), false);
  assert.deepEqual(scanThreads(child.pid!), { exiting: [], others: 1 }, 'sleep runs one thread, not exiting');
});

test('a SIGKILLed Node process: thread exit events come, and every thread is exiting while its fds are still open', async (t) => {
  const events = subscribeThreadExits();
  const buf = Buffer.alloc(64 * 1024);
  // 200 MB of heap: freeing it takes the last thread milliseconds, so its fds stay open that long.
  const child = spawn(process.execPath, ['-e', 'globalThis.k=[];for(let i=0;i<200;i++)k.push(Buffer.alloc(1<<20,1).toString("latin1"));console.log("ready");setInterval(()=>{},1e6)'], { stdio: ['ignore', 'pipe', 'ignore'] });
  let poll: ReturnType<typeof watchFd> | undefined;
  let timer: NodeJS.Timeout | undefined;
  t.after(() => {
    poll?.close();
    clearInterval(timer);
    child.kill('SIGKILL');
    closeFd(events);
  });
  await new Promise((r) => child.stdout!.once('data', r));
  const pid = child.pid!;
  assert.ok(readdirSync(`/proc/${pid}/task`).length > 1, 'Node runs several threads');
  assert.equal(threadsExiting(pid), false);
  // As the supervisor does: look at each batch of exit events, and every millisecond after
  // the first, until every thread is exiting.
  const seen = await new Promise<{ exit: ThreadExit; fds: number; yielded: number; policies: number[] }>((resolve, reject) => {
    let first: ThreadExit | undefined;
    const deadline = Date.now() + 5000;
    const check = (): void => {
      if (Date.now() > deadline) {
        clearInterval(timer);
        reject(new Error(first ? 'not every thread was exiting 5 s after the first exit event' : 'no thread exit event within 5 s of SIGKILL'));
        return;
      }
      if (!first || !threadsExiting(pid)) return;
      poll!.close();
      poll = undefined;
      clearInterval(timer);
      const yielded = yieldExitingThreads(scanThreads(pid).exiting).length;
      resolve({ exit: first, fds: openFds(pid), yielded, policies: schedPolicies(pid) });
    };
    poll = watchFd(events, { readable: true }, () => {
      const exit = readThreadExits(events, buf).exits.find((e) => e.pid === pid);
      first ??= exit;
      check();
    });
    timer = setInterval(check, 1);
    child.kill('SIGKILL');
  });
  assert.equal(seen.exit.exitCode, 9, 'a thread killed by SIGKILL exits with code 9');
  assert.ok(seen.fds > 0, 'its fds are still open once every thread is exiting: they close after the memory is freed');
  assert.ok(seen.yielded >= 1, 'the thread still freeing the memory can be moved to SCHED_IDLE');
  assert.ok(seen.policies.every((p) => p === SCHED_IDLE), `every thread left is SCHED_IDLE: ${seen.policies.join(',')}`);
  await new Promise((r) => child.once('exit', r));
});

test('yieldExitingThreads moves every thread it is given to SCHED_IDLE, restoreThreads moves them back', async (t) => {
  const child = spawn(process.execPath, ['-e', 'console.log("ready");setInterval(()=>{},1e6)'], { stdio: ['ignore', 'pipe', 'ignore'] });
  t.after(() => child.kill('SIGKILL'));
  await new Promise((r) => child.stdout!.once('data', r));
  const tids = readdirSync(`/proc/${child.pid}/task`).map(Number);
  const threads = tids.length;
  assert.ok(threads > 1, 'Node runs several threads');
  assert.ok(schedPolicies(child.pid!).every((p) => p === SCHED_NORMAL));
  assert.deepEqual(yieldExitingThreads(tids), tids);
  assert.deepEqual(schedPolicies(child.pid!), Array(threads).fill(SCHED_IDLE));
  assert.deepEqual(yieldExitingThreads([0x7fffffff]), [], 'no such thread: nothing moved, no error');
  assert.equal(restoreThreads([...tids, 0x7fffffff]), threads, 'every thread moved back; no such thread: no error');
  assert.deepEqual(schedPolicies(child.pid!), Array(threads).fill(SCHED_NORMAL));
});

test('a zombie (exited, not reaped) is exiting and has no fd in any thread', async (t) => {
  // `sleep 30` never waits for its child, so the short sleep stays a zombie until sh's exec'd
  // process exits.
  const parent = spawn('sh', ['-c', 'sleep 0.05 & echo $!; exec sleep 30'], { stdio: ['ignore', 'pipe', 'ignore'] });
  t.after(() => parent.kill('SIGKILL'));
  const zombie = Number(await new Promise<string>((r) => parent.stdout!.once('data', (d: Buffer) => r(d.toString()))));
  await waitUntil(() => /^State:\s+Z/m.test(readStatus(zombie)), 'the child to become a zombie', 5000, 5);
  assert.equal(isExiting(zombie), true);
  assert.equal(threadsExiting(zombie), true);
});

test('a pid that names no process counts as gone', () => {
  // pid_max is at most 2^22 on 64-bit Linux.
  assert.equal(threadsExiting(0x7fffffff), true);
  assert.deepEqual(scanThreads(0x7fffffff), { exiting: [], others: 0 });
  assert.equal(isExiting(0x7fffffff), true);
});

/** The fds still open in any thread (a thread past exit_files lists none, others still may). */
function openFds(pid: number): number {
  let most = 0;
  try {
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      try {
        most = Math.max(most, readdirSync(`/proc/${pid}/task/${tid}/fd`).length);
      } catch {
        // this thread is gone
      }
    }
  } catch {
    // the process is gone
  }
  return most;
}

/** include/uapi/linux/sched.h */
const SCHED_NORMAL = 0;
const SCHED_IDLE = 5;

/** The scheduling policy of each thread of `pid` still there (field 41 of its stat). */
function schedPolicies(pid: number): number[] {
  const policies: number[] = [];
  try {
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      try {
        const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
        policies.push(Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[38]));
      } catch {
        // this thread is gone
      }
    }
  } catch {
    // the process is gone
  }
  return policies;
}

function readStatus(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return '';
  }
}
