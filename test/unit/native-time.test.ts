// threadCpuTimeNs (native/timer.ts), which the supervisor's real-time guard reads every
// 100 ms: it counts this thread's CPU time only, in nanoseconds, and not time asleep.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { threadCpuTimeNs } from '../../native/index.ts';

test('threadCpuTimeNs grows by about the time spent computing, not by the time spent waiting', () => {
  assert.ok(Number.isInteger(threadCpuTimeNs()) && threadCpuTimeNs() > 0);
  // The wall clock is read around the CPU clock, so that the CPU time spans less of it.
  const wall0 = performance.now();
  const t0 = threadCpuTimeNs();
  while (performance.now() < wall0 + 50);
  const busy = threadCpuTimeNs() - t0;
  const wallNs = (performance.now() - wall0) * 1e6;
  // A thread's CPU time never exceeds the wall time it spans; a host that takes the CPU
  // away (steal) makes it smaller, so the lower bound is loose.
  assert.ok(busy >= 10e6 && busy <= wallNs + 1e6, `${wallNs} ns of spinning counted ${busy} ns`);
  // Atomics.wait blocks this thread in futex(2): nothing else of this process runs on it
  // meanwhile, which an awaited timer does not promise (the runtime may use the time).
  const t1 = threadCpuTimeNs();
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 100);
  const asleep = threadCpuTimeNs() - t1;
  assert.ok(asleep < 5e6, `100 ms asleep counted ${asleep} ns`);
});
