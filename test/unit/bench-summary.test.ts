// The percentiles every benchmark reports (bench/lib.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { summarize, summarizeRounded } from '../../bench/lib.ts';

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

test('summarizeRounded rounds every figure but n, to 2 places unless told', () => {
  assert.deepEqual(summarizeRounded([1.234, 2.345, 3.456]), { n: 3, min: 1.23, median: 2.35, p99: 3.46, max: 3.46 });
  assert.deepEqual(summarizeRounded([1.26, 2.34], 1), { n: 2, min: 1.3, median: 1.8, p99: 2.3, max: 2.3 });
});
