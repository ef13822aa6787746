// The kernel facts the fast fence relies on (supervisor/recovery.ts, native/procevents.ts):
// a live process is not dying, and its threads parked in a wait are not parked for the
// fence (no SIGKILL pending); a SIGKILLed one is reported by thread exit events, and every
// thread of it is exiting or parked soon after, while it still holds its fds (they close
// after its memory is freed); a dead process that is not yet reaped is dying too. A process
// with an io_uring instance has no parked threads. Such a process's threads can still be
// moved to SCHED_IDLE (and back), and off a CPU (and back).
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { readFileSync, readdirSync, rmSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { isDying, moveOffCpu, parkedAt, restoreThreads, ringInFileTables, scanThreads, statFields, threadsFenced, usesIoUring, yieldExitingThreads, type ThreadScan } from '../../supervisor/recovery.ts';
import { closeFd, cpuAffinity, NativeError, readThreadExits, sameFileTable, setCpuAffinity, subscribeThreadExits, watchFd, type ThreadExit } from '../../native/index.ts';
import { waitUntil, tempDir } from './helpers/supervisor.ts';

test('a live process is not dying: its sleeping thread waits where a parked one would, but has no SIGKILL pending', async (t) => {
  const child = spawn('sleep', ['30'], { stdio: 'ignore' });
  t.after(() => child.kill('SIGKILL'));
  await new Promise((r) => child.once('spawn', r));
  await waitUntil(() => parkedAt(readFileSync(`/proc/${child.pid}/stack`, 'utf8')), 'sleep to be in nanosleep', 5000, 5);
  assert.equal(isDying(child.pid!), false);
  assert.equal(threadsFenced(child.pid!), false);
  assert.deepEqual(scanThreads(child.pid!), { exiting: [], parked: [], others: 1, runnable: [] }, 'sleep runs one thread, neither exiting nor parked (nor SIGKILLed)');
});

/**
 * The heap of the Node processes the fence tests kill: 200 MB, so that freeing it takes the
 * last thread milliseconds and the process's fds stay open that long. Run at nice 19 (the
 * supervisor idles such threads too), so that on a 1-CPU VM guest the test gets the CPU to
 * look before that teardown is done: in one CI run at nice 0 it did not, and found the fds
 * closed.
 */
const BIG_NODE = ['nice', '-n', '19', process.execPath, '-e', 'globalThis.k=[];for(let i=0;i<200;i++)k.push(Buffer.alloc(1<<20,1).toString("latin1"));console.log("ready");setInterval(()=>{},1e6)'];

interface FencedLook {
  /** The first thread exit event of the process. */
  exit: ThreadExit;
  /** Its fds still open, threads and scan at the look that found none of them other. */
  fds: number;
  threads: number;
  scan: ThreadScan;
  /** How many looks it took. */
  looks: number;
  /** Its exiting threads moved to SCHED_IDLE, and their policies afterwards. */
  yielded: number;
  policies: number[];
}

/**
 * SIGKILLs `child` (printed "ready" already) and, as the supervisor does, looks at its threads
 * at each batch of thread exit events and every millisecond after the first, until every
 * thread is exiting or parked (scanThreads).
 */
async function killAndLook(t: TestContext, child: ChildProcess): Promise<FencedLook & { killedAt: bigint }> {
  const events = subscribeThreadExits();
  const buf = Buffer.alloc(64 * 1024);
  let poll: ReturnType<typeof watchFd> | undefined;
  let timer: NodeJS.Timeout | undefined;
  t.after(() => {
    poll?.close();
    clearInterval(timer);
    child.kill('SIGKILL');
    closeFd(events);
  });
  const pid = child.pid!;
  let killedAt = 0n;
  let looks = 0;
  const seen = await new Promise<FencedLook>((resolve, reject) => {
    let first: ThreadExit | undefined;
    const deadline = Date.now() + 5000;
    const check = (): void => {
      if (Date.now() > deadline) {
        clearInterval(timer);
        reject(new Error(first ? 'not every thread was exiting or parked 5 s after the first exit event' : 'no thread exit event within 5 s of SIGKILL'));
        return;
      }
      if (!first) return;
      const threads = threadCount(pid);
      const scan = scanThreads(pid);
      looks++;
      if (scan.others > 0) return;
      poll!.close();
      poll = undefined;
      clearInterval(timer);
      const yielded = yieldExitingThreads(scan.exiting);
      resolve({ exit: first, fds: openFds(pid), threads, scan, looks, yielded: yielded.length, policies: schedPolicies(pid, yielded) });
    };
    poll = watchFd(events, { readable: true }, () => {
      const exit = readThreadExits(events, buf).exits.find((e) => e.pid === pid);
      first ??= exit;
      check();
    });
    timer = setInterval(check, 1);
    killedAt = process.hrtime.bigint();
    child.kill('SIGKILL');
  });
  return { ...seen, killedAt };
}

test('a SIGKILLed Node process: thread exit events come, and every thread is exiting or parked while its fds are still open', async (t) => {
  const child = spawn(BIG_NODE[0]!, BIG_NODE.slice(1), { stdio: ['ignore', 'pipe', 'ignore'] });
  t.after(() => child.kill('SIGKILL'));
  await new Promise((r) => child.stdout!.once('data', r));
  const pid = child.pid!;
  assert.ok(readdirSync(`/proc/${pid}/task`).length > 1, 'Node runs several threads');
  assert.equal(threadsFenced(pid), false);
  const seen = await killAndLook(t, child);
  assert.equal(seen.exit.exitCode, 9, 'a thread killed by SIGKILL exits with code 9');
  // Not before the kill: equal is possible where the clock ticks coarsely (the VM guests').
  assert.ok(seen.exit.atNs >= seen.killedAt && seen.exit.atNs <= process.hrtime.bigint(), `the event's timestamp (${seen.exit.atNs}) is on this process's CLOCK_MONOTONIC, not before the kill (${seen.killedAt})`);
  assert.ok(seen.fds > 0, 'its fds are still open once every thread is exiting or parked: they close after the memory is freed');
  assert.ok(seen.scan.exiting.length + seen.scan.parked.length <= seen.threads, `${JSON.stringify(seen.scan)} of ${seen.threads} threads`);
  assert.equal(seen.yielded, seen.scan.exiting.length, 'each exiting thread can be moved to SCHED_IDLE');
  assert.deepEqual(seen.policies, seen.policies.map(() => SCHED_IDLE), 'and is SCHED_IDLE then');
  await new Promise((r) => child.once('exit', r));
  assert.equal(isDying(pid), true, 'reaped: gone counts as dying');
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

test('moveOffCpu takes a thread off the given CPU if it last ran there and may run elsewhere; restoreThreads gives its CPUs back', async (t) => {
  const cpus = availableParallelism();
  const child = spawn('sleep', ['30'], { stdio: 'ignore' });
  t.after(() => child.kill('SIGKILL'));
  await new Promise((r) => child.once('spawn', r));
  const pid = child.pid!;
  const allowed = (): number[] => [...Array(cpus).keys()].filter((c) => (cpuAffinity(pid)[c >> 3]! & (1 << (c & 7))) !== 0);
  const before = allowed();
  // Asleep, it stays where it last ran.
  const st = await waitUntil(() => {
    const f = statFields(readFileSync(`/proc/${pid}/stat`, 'utf8'));
    return f.state === 'S' ? f : undefined;
  }, 'sleep to sleep', 5000, 5);
  assert.ok(before.includes(st.cpu), `it last ran on CPU ${st.cpu}, one it may use (${before})`);
  if (before.length < 2) {
    // One CPU (the VM tier's guests): nowhere to move it.
    assert.equal(moveOffCpu([{ tid: pid, cpu: st.cpu }], st.cpu).size, 0, 'a thread with no other CPU stays');
    assert.deepEqual(allowed(), before);
    return;
  }
  assert.equal(moveOffCpu([{ tid: pid, cpu: (st.cpu + 1) % cpus }], st.cpu).size, 0, 'a thread that last ran on another CPU stays');
  const moved = moveOffCpu([{ tid: pid, cpu: st.cpu }], st.cpu);
  assert.deepEqual([...moved.keys()], [pid]);
  assert.deepEqual(allowed(), before.filter((c) => c !== st.cpu), 'every CPU it had but that one');
  assert.equal(moveOffCpu([{ tid: pid, cpu: st.cpu }], st.cpu).size, 0, 'not moved again off a CPU it no longer has');
  assert.equal(restoreThreads([pid], moved), 1);
  assert.deepEqual(allowed(), before, 'its CPUs back');
  const only = Buffer.alloc(128);
  only[st.cpu >> 3] = 1 << (st.cpu & 7);
  setCpuAffinity(pid, only);
  assert.equal(moveOffCpu([{ tid: pid, cpu: st.cpu }], st.cpu).size, 0, 'a thread with no other CPU stays');
  assert.equal(moveOffCpu([{ tid: 0x7fffffff, cpu: st.cpu }], st.cpu).size, 0, 'no such thread: nothing moved, no error');
});

test('a zombie (exited, not reaped) is dying and has no fd in any thread', async (t) => {
  // `sleep 30` never waits for its child, so the short sleep stays a zombie until sh's exec'd
  // process exits.
  const parent = spawn('sh', ['-c', 'sleep 0.05 & echo $!; exec sleep 30'], { stdio: ['ignore', 'pipe', 'ignore'] });
  t.after(() => parent.kill('SIGKILL'));
  const zombie = Number(await new Promise<string>((r) => parent.stdout!.once('data', (d: Buffer) => r(d.toString()))));
  await waitUntil(() => /^State:\s+Z/m.test(readStatus(zombie)), 'the child to become a zombie', 5000, 5);
  assert.equal(isDying(zombie), true);
  assert.equal(threadsFenced(zombie), true);
});

test("usesIoUring finds an io_uring instance among a process's fds (scanThreads then parks none of its threads)", async (t) => {
  const child = await startHelper(t, 'io-uring-holder');
  assert.equal(usesIoUring(child.pid!), true);
  const sleeper = spawn('sleep', ['30'], { stdio: 'ignore' });
  t.after(() => sleeper.kill('SIGKILL'));
  await new Promise((r) => sleeper.once('spawn', r));
  assert.equal(usesIoUring(sleeper.pid!), false);
  assert.equal(usesIoUring(0x7fffffff), true, 'fds that cannot be listed count as a ring');
});

test("ringInFileTables finds a ring through any thread of the process; kcmp tells which threads share an fd table", async (t) => {
  const child = await startHelper(t, 'io-uring-holder', [process.execPath, '-e', 'console.log("ready");setInterval(()=>{},1e6)']);
  const tids = readdirSync(`/proc/${child.pid}/task`).map(Number);
  assert.ok(tids.length > 1, 'Node runs several threads');
  let kcmp = true;
  try {
    sameFileTable(process.pid, process.pid);
  } catch (err) {
    // The VM tier's kernels are built without CONFIG_KCMP: each thread's table is listed then.
    assert.ok(err instanceof NativeError && err.code === 'ENOSYS', String(err));
    kcmp = false;
  }
  if (kcmp) {
    assert.ok(tids.every((tid) => sameFileTable(child.pid!, tid)), "a process's threads share one fd table");
    assert.equal(sameFileTable(process.pid, child.pid!), false, 'two processes do not');
    assert.throws(() => sameFileTable(process.pid, 0x7fffffff), (err: unknown) => err instanceof NativeError && err.code === 'ESRCH');
  }
  assert.equal(ringInFileTables(tids.filter((tid) => tid !== child.pid)), true, 'the ring is found through any thread, not only the leader');
  assert.equal(ringInFileTables([process.pid, ...readdirSync(`/proc/${process.pid}/task`).map(Number)]), false, 'this process holds none');
  assert.equal(ringInFileTables([0x7fffffff]), true, 'a thread whose fds cannot be listed counts as a ring');
});

test('a SIGKILLed Node process holding an io_uring instance has no parked thread: it is fenced once every thread is exiting', async (t) => {
  const child = await startHelper(t, 'io-uring-holder', BIG_NODE);
  assert.equal(usesIoUring(child.pid!), true, 'Node inherited the ring');
  const seen = await killAndLook(t, child);
  assert.ok(seen.fds > 0, 'its fds are still open then');
  // A look that failed (another thread found) may list some as parked: it stopped before the fds.
  assert.deepEqual(seen.scan.parked, [], `the look that found no other thread (of ${seen.looks}) found none parked`);
  assert.ok(seen.scan.exiting.length > 0 && seen.scan.exiting.length <= seen.threads, `every thread left was exiting: ${JSON.stringify(seen.scan)} of ${seen.threads} threads`);
});

test("a thread's own pending signals are in field 31 of its /proc stat", async (t) => {
  const child = await startHelper(t, 'pending-signal');
  const SIGUSR1 = 10;
  assert.equal(statFields(readFileSync(`/proc/${child.pid}/task/${child.pid}/stat`, 'utf8')).pending, 1 << (SIGUSR1 - 1));
  assert.equal(statFields(readFileSync(`/proc/${process.pid}/stat`, 'utf8')).pending, 0, 'this process has none pending');
});

test('parkedAt: switched out in a wait a fatal signal ends, with no FUSE frame', () => {
  const frames = (...names: string[]): string => names.map((n) => `[<0>] ${n}+0x1d/0x40\n`).join('');
  assert.equal(parkedAt(frames('futex_do_wait', '__futex_wait', 'futex_wait', 'do_futex', '__x64_sys_futex', 'do_syscall_64', 'entry_SYSCALL_64_after_hwframe')), true);
  assert.equal(parkedAt(frames('do_epoll_wait', 'do_compat_epoll_pwait.part.0', '__x64_sys_epoll_pwait', 'do_syscall_64')), true);
  assert.equal(parkedAt(frames('exit_to_user_mode_loop', 'do_syscall_64', 'entry_SYSCALL_64_after_hwframe')), true);
  assert.equal(parkedAt(frames('poll_schedule_timeout.constprop.0', 'do_sys_poll', '__x64_sys_poll')), true, 'a suffix from the compiler');
  assert.equal(parkedAt(frames('hrtimer_nanosleep', 'common_nsleep', '__x64_sys_clock_nanosleep')), true);
  assert.equal(parkedAt(frames('fuse_dev_do_read', 'fuse_dev_read', 'vfs_read', 'ksys_read', 'do_syscall_64')), false, 'waiting for a request in the FUSE device');
  assert.equal(parkedAt(frames('exit_to_user_mode_loop', 'fuse_dev_ioctl', 'do_syscall_64')), false, 'a FUSE frame anywhere');
  assert.equal(parkedAt(frames('__cond_resched', 'copy_page_to_iter', 'fuse_copy_do', 'fuse_dev_do_read')), false, 'switched out inside a read');
  assert.equal(parkedAt(frames('io_cqring_wait', '__do_sys_io_uring_enter', 'do_syscall_64')), false, 'a wait not on the list');
  assert.equal(parkedAt(''), false, 'on a CPU: the unwinder shows nothing');
  assert.equal(parkedAt('[<0>] 0xffffffff81234567\n'), false, 'no symbol names');
});

test('a pid that names no process counts as gone', () => {
  // pid_max is at most 2^22 on 64-bit Linux.
  assert.equal(threadsFenced(0x7fffffff), true);
  assert.deepEqual(scanThreads(0x7fffffff), { exiting: [], parked: [], others: 0, runnable: [] });
  assert.equal(isDying(0x7fffffff), true);
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

/** Compiles helpers/<name>.c, starts it with `args`, and waits for its "ready" line; it is killed after the test. */
async function startHelper(t: TestContext, name: string, args: string[] = []): Promise<ChildProcess> {
  const dir = tempDir('fusekeeper-fence-');
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const bin = join(dir, name);
  const cc = spawnSync('cc', ['-O1', '-o', bin, new URL(`./helpers/${name}.c`, import.meta.url).pathname], { encoding: 'utf8' });
  assert.equal(cc.status, 0, `cc: ${cc.stderr}`);
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  t.after(() => child.kill('SIGKILL'));
  await new Promise((r) => child.stdout!.once('data', r));
  return child;
}

function threadCount(pid: number): number {
  try {
    return readdirSync(`/proc/${pid}/task`).length;
  } catch {
    return 0;
  }
}

/** include/uapi/linux/sched.h */
const SCHED_NORMAL = 0;
const SCHED_IDLE = 5;

/** The scheduling policy of each thread of `pid` still there (field 41 of its stat), or of `tids` of it. */
function schedPolicies(pid: number, tids?: number[]): number[] {
  const policies: number[] = [];
  try {
    for (const tid of tids ?? readdirSync(`/proc/${pid}/task`)) {
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
