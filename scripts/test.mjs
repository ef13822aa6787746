#!/usr/bin/env node
// Runs the test tiers in order. A tier whose requirements are missing is skipped
// with a loud line locally, and is a failure when CI=true (no tier may be skipped there).
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, accessSync, constants } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const ci = process.env.CI === 'true';

/**
 * Each tier: its test files, what it needs, and whether it runs by default (`smoke` is the
 * kernel subset CI repeats under the current LTS).
 * @type {Record<string, { dir: string, only?: string[], requires: () => string | null, concurrency: number, byDefault: boolean }>}
 */
const tiers = {
  unit: { dir: 'test/unit', requires: () => null, concurrency: 2, byDefault: true },
  kernel: { dir: 'test/kernel', requires: kernelRequirements, concurrency: 1, byDefault: true },
  smoke: { dir: 'test/kernel', only: ['native.test.ts', 'doctor.test.ts'], requires: kernelRequirements, concurrency: 1, byDefault: false },
};

function kernelRequirements() {
  if (process.getuid?.() !== 0) return 'needs root (CAP_SYS_ADMIN) to mount FUSE connections';
  try {
    accessSync('/dev/fuse', constants.R_OK | constants.W_OK);
  } catch {
    return '/dev/fuse is missing or not accessible';
  }
  return null;
}

function run(cmd, args) {
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit' });
  return r.status ?? 1;
}

const args = process.argv.slice(2);
let node = process.execPath;
const nodeFlag = args.indexOf('--node');
if (nodeFlag >= 0) {
  node = args[nodeFlag + 1];
  args.splice(nodeFlag, 2);
}
const wanted = args.length ? args : Object.keys(tiers).filter((t) => tiers[t].byDefault);
for (const name of wanted) {
  if (!tiers[name]) {
    console.error(`test: unknown tier "${name}" (tiers: ${Object.keys(tiers).join(', ')})`);
    process.exit(2);
  }
}

if (run(node, [join(root, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.build.json']) !== 0) {
  console.error('test: build failed');
  process.exit(1);
}
if (run(node, [join(root, 'node_modules/typescript/bin/tsc'), '--noEmit']) !== 0) {
  console.error('test: typecheck failed');
  process.exit(1);
}

let failed = [];
for (const name of wanted) {
  const tier = tiers[name];
  const missing = tier.requires();
  if (missing) {
    if (ci) {
      console.error(`test: tier ${name} cannot run: ${missing} (CI=true: this is a failure, not a skip)`);
      failed.push(name);
    } else {
      console.error(`test: SKIPPING tier ${name}: ${missing}`);
    }
    continue;
  }
  const dir = join(root, tier.dir);
  const files = existsSync(dir)
    ? readdirSync(dir).filter((f) => f.endsWith('.test.ts') && (!tier.only || tier.only.includes(f))).sort().map((f) => join(tier.dir, f))
    : [];
  if (files.length === 0) {
    console.error(`test: tier ${name} has no tests`);
    failed.push(name);
    continue;
  }
  console.log(`test: tier ${name} (${files.length} files, node ${node === process.execPath ? process.version : node})`);
  const status = run(node, [
    '--import', 'tsx', '--test', `--test-concurrency=${tier.concurrency}`, ...files,
  ]);
  if (status !== 0) failed.push(name);
}
if (failed.length) {
  console.error(`test: failed tiers: ${failed.join(', ')}`);
  process.exit(1);
}
console.log(`test: all tiers passed (${wanted.join(', ')})`);
