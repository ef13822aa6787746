import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const LOG_MODULE = fileURLToPath(new URL('../../supervisor/log.ts', import.meta.url));

/** Runs `body` in a fresh Node process with `createLogger` and `holdLogsThisTurn` in scope; its stdout lines. */
function runWithLogger(body: string): { lines: string[]; records: Record<string, unknown>[]; status: number | null } {
  const script = `import { writeSync } from 'node:fs';
const { createLogger, holdLogsThisTurn } = await import(${JSON.stringify(LOG_MODULE)});
const log = createLogger('info');
const mark = (s) => writeSync(1, s + '\\n');
${body}`;
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { encoding: 'utf8' });
  assert.equal(r.stderr.replace(/^.*ExperimentalWarning.*\n?/gm, ''), '', 'no error output');
  const raw = r.stdout.split('\n').filter(Boolean);
  const lines = raw.map((l) => (l.startsWith('{') ? (JSON.parse(l) as { msg: string }).msg : l));
  const records = raw.filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);
  return { lines, records, status: r.status };
}

test('log: without a hold, each line is written as it is logged', () => {
  const { lines } = runWithLogger(`log.info('one'); mark('between'); log.info('two');`);
  assert.deepEqual(lines, ['one', 'between', 'two']);
});

test('log: held lines are written in order when the turn of the event loop ends, before later callbacks', () => {
  const { lines } = runWithLogger(`
log.info('before');
holdLogsThisTurn(log);
log.info('held 1');
holdLogsThisTurn(log);
log.warn('held 2');
mark('same turn');
Promise.resolve().then(() => { log.info('held 3, from a microtask'); mark('microtask'); });
setImmediate(() => { mark('next immediate'); log.info('not held'); });`);
  assert.deepEqual(lines, ['before', 'same turn', 'microtask', 'held 1', 'held 2', 'held 3, from a microtask', 'next immediate', 'not held']);
});

test('log: held lines are not lost when the process exits in the same turn', () => {
  const { lines, status } = runWithLogger(`holdLogsThisTurn(log); log.error('last words'); mark('exiting'); process.exit(3);`);
  assert.equal(status, 3);
  assert.deepEqual(lines, ['exiting', 'last words']);
});

test('log: a held call is formatted when the hold ends, with the time and the field values of the moment it was made', () => {
  const { lines, records } = runWithLogger(`
holdLogsThisTurn(log);
const fields = { event: 'x', count: 1, formatted: { toJSON() { mark('formatting'); return 'yes'; } } };
log.info(fields, 'held');
fields.count = 2;
mark('same turn');
const until = Date.now() + 60;
while (Date.now() < until);
setImmediate(() => log.info('not held'));`);
  assert.deepEqual(lines, ['same turn', 'formatting', 'held', 'not held']);
  const [held, later] = records as [{ time: number; count: number; formatted: string }, { time: number }];
  assert.equal(held.count, 1);
  assert.equal(held.formatted, 'yes');
  assert.ok(later.time - held.time >= 60, `the held line keeps its own time (${held.time}, then ${later.time})`);
});
