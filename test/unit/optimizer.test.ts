import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { optimizerFlagsGiven } from '../../client/optimizer.ts';

const OPTIMIZER_MODULE = fileURLToPath(new URL('../../client/optimizer.ts', import.meta.url));

/**
 * Runs `body` in a fresh Node process (natives syntax on) with the optimizer module as `o`,
 * two functions to make hot (`hot`, `fresh`), and `warm(ms, f = hot)`: calls `f` until V8 has
 * TurboFan code for it or `ms` passed, resolving with whether it has. Returns what the body
 * prints.
 */
function runHot(body: string): string[] {
  const script = `const o = await import(${JSON.stringify(OPTIMIZER_MODULE)});
function hot(a) { let s = 0; for (let i = 0; i < 100; i++) s += (a * i) % 7; return s; }
function fresh(a) { let s = 0; for (let i = 0; i < 100; i++) s += (a * i) % 5; return s; }
// Bit 6 of V8's OptimizationStatus: the function runs TurboFan code.
const turbofanned = (f = hot) => (%GetOptimizationStatus(f) & 64) !== 0;
async function warm(ms, f = hot) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    for (let i = 0; i < 20000; i++) f(i);
    if (turbofanned(f)) return true;
    await new Promise((r) => setImmediate(r));
  }
  return turbofanned(f);
}
${body}`;
  const r = spawnSync(process.execPath, ['--allow-natives-syntax', '--import', 'tsx', '--input-type=module', '-e', script], { encoding: 'utf8', timeout: 30_000 });
  assert.equal(r.stderr.replace(/^.*ExperimentalWarning.*\n?/gm, ''), '', 'no error output');
  assert.equal(r.status, 0);
  return r.stdout.split('\n').filter(Boolean);
}

// A function made hot during the hold is not asked about afterwards: Node 24's V8 gives it
// Maglev code meanwhile, and did not move it on to TurboFan within 10 s of the release.
test('optimizer: a held process compiles nothing with TurboFan; released, it does', () => {
  const out = runHot(`
console.log('held', o.holdOptimizer([]), o.optimizerHeld());
console.log('optimized while held', await warm(1500));
o.releaseOptimizer(0);
console.log('released', o.optimizerHeld());
console.log('optimized after', await warm(10000, fresh));`);
  assert.deepEqual(out, ['held true true', 'optimized while held false', 'released false', 'optimized after true']);
});

test('optimizer: code optimized before the hold keeps running optimized', () => {
  const out = runHot(`
console.log('optimized before', await warm(10000));
o.holdOptimizer([]);
for (let i = 0; i < 100000; i++) hot(i);
console.log('still', (%GetOptimizationStatus(hot) & 64) !== 0);`);
  assert.deepEqual(out, ['optimized before true', 'still true']);
});

test('optimizer: a release after a delay holds until then', () => {
  const out = runHot(`
o.holdOptimizer([]);
o.releaseOptimizer(200);
console.log('held', o.optimizerHeld());
await new Promise((r) => setTimeout(r, 400));
console.log('held', o.optimizerHeld());`);
  assert.deepEqual(out, ['held true', 'held false']);
});

test('optimizer: flags that set the optimizing tiers leave TurboFan alone', () => {
  const out = runHot(`
console.log(o.holdOptimizer(['--max-opt=1']), o.optimizerHeld());
o.releaseOptimizer(0);
console.log(o.optimizerHeld());`);
  assert.deepEqual(out, ['false false', 'false']);
  for (const given of [['--max-opt=1'], ['--no-turbofan'], ['--no-opt'], ['--jitless'], ['--turbofan'], ['--max_opt=2'], ['--no_turbofan'], ['--maglev'], ['--expose-gc', '--always-turbofan']]) {
    assert.equal(optimizerFlagsGiven(given), true, given.join(' '));
  }
  for (const other of [[], ['--import', 'tsx'], ['--no-lazy', '--always-sparkplug', '--no-flush-bytecode'], ['--optimize-for-size'], ['--max-old-space-size=64'], ['']]) {
    assert.equal(optimizerFlagsGiven(other), false, other.join(' '));
  }
});
