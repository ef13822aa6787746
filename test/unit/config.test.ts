// supervisor/config.ts: defaults, and a clear error for a bad value (exitEvents,
// realtimePriority and takeoverRealtimeMs here; the kernel tier runs `fusekeeper serve
// --config` with a broken file).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ConfigError, DEFAULT_CONFIG, parseConfig } from '../../supervisor/config.ts';

test('exitEvents: on by default, false turns it off, anything else is refused with its path', () => {
  assert.equal(DEFAULT_CONFIG.exitEvents, true);
  assert.equal(parseConfig({}).exitEvents, true);
  assert.equal(parseConfig({ exitEvents: false }).exitEvents, false);
  assert.throws(() => parseConfig({ exitEvents: 'no' }, 'fk.json'), (err: unknown) => err instanceof ConfigError && /fk\.json\.exitEvents: expected true or false/.test(err.message));
  assert.throws(() => parseConfig({ exitEvent: true }, 'fk.json'), (err: unknown) => err instanceof ConfigError && /exitEvent/.test(err.message));
});

test('realtimePriority: 1 by default, 0 turns it off, 1-99 only', () => {
  assert.equal(DEFAULT_CONFIG.realtimePriority, 1);
  assert.equal(parseConfig({ realtimePriority: 0 }).realtimePriority, 0);
  assert.equal(parseConfig({ realtimePriority: 99 }).realtimePriority, 99);
  for (const bad of [100, -1, 1.5, '1', true]) {
    assert.throws(() => parseConfig({ realtimePriority: bad }, 'fk.json'), (err: unknown) => err instanceof ConfigError && /fk\.json\.realtimePriority: expected an integer in 0\.\.99/.test(err.message));
  }
});

test('takeoverRealtimeMs: 30 by default, 0 lends none, 0-10000 only', () => {
  assert.equal(DEFAULT_CONFIG.takeoverRealtimeMs, 30);
  assert.equal(parseConfig({ takeoverRealtimeMs: 0 }).takeoverRealtimeMs, 0);
  assert.equal(parseConfig({ takeoverRealtimeMs: 10_000 }).takeoverRealtimeMs, 10_000);
  for (const bad of [10_001, -1, 2.5, '30', null]) {
    assert.throws(() => parseConfig({ takeoverRealtimeMs: bad }, 'fk.json'), (err: unknown) => err instanceof ConfigError && /fk\.json\.takeoverRealtimeMs: expected an integer in 0\.\.10000/.test(err.message));
  }
});
