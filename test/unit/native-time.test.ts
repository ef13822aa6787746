// threadCpuTimeNs (native/timer.ts), which the supervisor's real-time guard reads every
// 100 ms: it counts this thread's CPU time only, in nanoseconds, and not time asleep.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { threadCpuTimeNs } from '../../native/index.ts';

test('threadCpuTimeNs grows by about the time spent computing, not by the time spent waiting', async () => {
  const spin = (ms: number): void => {
    const until = performance.now() + ms;
    while (performance.now() < until);
  };
  const t0 = threadCpuTimeNs();
  spin(50);
  const busy = threadCpuTimeNs() - t0;
  assert.ok(busy >= 20e6 && busy <= 60e6, `50 ms of spinning counted ${busy} ns`);
  const t1 = threadCpuTimeNs();
  await new Promise((r) => setTimeout(r, 100));
  const asleep = threadCpuTimeNs() - t1;
  assert.ok(asleep < 20e6, `100 ms asleep counted ${asleep} ns`);
  assert.ok(Number.isInteger(t0) && t0 > 0);
});
