// supervisor/realtime.ts: when the main thread stays on SCHED_FIFO, and how much of a CPU a
// cgroup's real-time runtime allows it. The kernel tier (test/kernel/realtime.test.ts) runs
// the policy changes themselves.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RealtimeLender, REALTIME_MAX_SHARE, realtimeShareLimit, staysRealtime } from '../../supervisor/realtime.ts';

test('staysRealtime: real-time up to the limit; back only under half of it', () => {
  assert.equal(staysRealtime(true, 0.25, 0.25), true);
  assert.equal(staysRealtime(true, 0.26, 0.25), false);
  assert.equal(staysRealtime(false, 0.2, 0.25), false, 'no flapping around the limit');
  assert.equal(staysRealtime(false, 0.12, 0.25), true);
});

test('realtimeShareLimit: half a v1 cgroup runtime, at most REALTIME_MAX_SHARE; no limit without one', () => {
  const files: Record<string, string> = {
    '/sys/fs/cgroup/cpu/init.scope/cpu.rt_runtime_us': '100000\n',
    '/sys/fs/cgroup/cpu/init.scope/cpu.rt_period_us': '1000000\n',
    '/sys/fs/cgroup/cpu,cpuacct/system.slice/cpu.rt_runtime_us': '950000\n',
    '/sys/fs/cgroup/cpu,cpuacct/system.slice/cpu.rt_period_us': '1000000\n',
    '/sys/fs/cgroup/cpu/cpu.rt_runtime_us': '-1\n',
    '/sys/fs/cgroup/cpu/cpu.rt_period_us': '1000000\n',
  };
  const read = (p: string): string => {
    const v = files[p];
    if (v === undefined) throw Object.assign(new Error(`ENOENT ${p}`), { code: 'ENOENT' });
    return v;
  };
  assert.equal(realtimeShareLimit('4:memory:/x\n1:cpu:/init.scope\n0::/init.scope\n', read), 0.05);
  assert.equal(realtimeShareLimit('2:cpu,cpuacct:/system.slice\n', read), REALTIME_MAX_SHARE);
  assert.equal(realtimeShareLimit('1:cpu:/\n', read), REALTIME_MAX_SHARE, '-1: unlimited');
  assert.equal(realtimeShareLimit('0::/system.slice/fusekeeper.service\n', read), REALTIME_MAX_SHARE, 'cgroup v2: no per-cgroup runtime');
  assert.equal(realtimeShareLimit('1:cpu:/gone\n', read), REALTIME_MAX_SHARE);
});

test('RealtimeLender: lends nothing with realtimePriority 0 or to the only CPU, and says why (touching no thread)', () => {
  assert.equal(new RealtimeLender(4).lend(process.pid, 0), 'realtimePriority is 0');
  const single = new RealtimeLender(1);
  assert.equal(single.lend(process.pid, 1), 'the supervisor has one CPU');
  assert.equal(single.outstanding, 0);
  assert.equal(new RealtimeLender(0).lend(process.pid, 1), 'the supervisor has one CPU');
});
