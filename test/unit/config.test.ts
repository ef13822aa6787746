// supervisor/config.ts: defaults, and a clear error for a bad value (exitEvents here; the
// kernel tier runs `fusekeeper serve --config` with a broken file).
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
