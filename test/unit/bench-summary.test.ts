// The percentiles every benchmark reports (bench/lib.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { summarize } from '../../bench/lib.ts';

const range = (n: number): number[] => Array.from({ length: n }, (_, i) => n - i); // n..1, unsorted

test('p99 is the nearest rank: the second largest of 100, not the largest', () => {
  assert.deepEqual(summarize(range(100)), { n: 100, min: 1, median: 50.5, p99: 99, max: 100 });
  assert.equal(summarize(range(1000)).p99, 990);
  assert.equal(summarize(range(50)).p99, 50, 'below 100 values, p99 is the largest');
});

test('the median of an odd count is the middle value', () => {
  assert.deepEqual(summarize([3, 1, 2]), { n: 3, min: 1, median: 2, p99: 3, max: 3 });
  assert.deepEqual(summarize([7]), { n: 1, min: 7, median: 7, p99: 7, max: 7 });
});

test('an empty sample has no figures', () => {
  const s = summarize([]);
  assert.equal(s.n, 0);
  assert.ok([s.min, s.median, s.p99, s.max].every(Number.isNaN));
});
