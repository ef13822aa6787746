#!/usr/bin/env node
// Runs the test tiers in order. A tier whose requirements are missing is skipped
// with a loud line locally, and is a failure when CI=true (no tier may be skipped there).
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, accessSync, constants, readlinkSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { vmRequirements } from '../test/vm/build-kernel.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const ci = process.env.CI === 'true';

/**
 * Each tier: its test files, what it needs, and whether it runs by default (`smoke` is the
 * kernel subset CI repeats under the current LTS). A tier with `script` runs that script
 * instead of `node --test` (`vm`: builds two kernels, boots each under qemu, runs the guest
 * tests inside; see test/vm/tier.mjs).
 * A tier with `privateMounts` runs in its own mount namespace (`systemd`: the user manager,
 * the supervisor, its FUSE mounts and the test driver must all see the same mounts, and none
 * may leak into the host; see test/systemd/helpers/user-manager.ts).
 * @type {Record<string, { dir?: string, script?: string, only?: string[], requires: () => string | null, concurrency: number, byDefault: boolean, privateMounts?: boolean }>}
 */
const tiers = {
  unit: { dir: 'test/unit', requires: () => null, concurrency: 2, byDefault: true },
  kernel: { dir: 'test/kernel', requires: kernelRequirements, concurrency: 1, byDefault: true },
  systemd: { dir: 'test/systemd', requires: systemdRequirements, concurrency: 1, byDefault: true, privateMounts: true },
  smoke: { dir: 'test/kernel', only: ['native.test.ts', 'doctor.test.ts'], requires: kernelRequirements, concurrency: 1, byDefault: false },
  vm: { script: 'test/vm/tier.mjs', requires: vmRequirements, concurrency: 1, byDefault: true },
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

/** Root, /dev/fuse, systemd 252+ and the tools the systemd tier drives it with. */
function systemdRequirements() {
  const kernel = kernelRequirements();
  if (kernel) return kernel;
  for (const bin of ['/lib/systemd/systemd', '/usr/bin/systemctl', '/usr/bin/systemd-analyze', '/usr/bin/unshare']) {
    if (!existsSync(bin)) return `${bin} is missing (scripts/install-deps.sh installs systemd and util-linux)`;
  }
  const v = spawnSync('systemctl', ['--version'], { encoding: 'utf8' });
  const major = Number(/^systemd (\d+)/.exec(v.stdout ?? '')?.[1] ?? 0);
  if (major < 252) return `systemd ${major || '(unknown)'} is too old: the tier needs 252 or later`;
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

if (run(node, [join(root, 'scripts/build.mjs')]) !== 0) {
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
  if (tier.script) {
    console.log(`test: tier ${name} (${tier.script}, node ${node === process.execPath ? process.version : node})`);
    if (run(node, [join(root, tier.script)]) !== 0) failed.push(name);
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
  console.log(`test: tier ${name} (${files.length} files, node ${node === process.execPath ? process.version : node}${tier.privateMounts ? ', private mount namespace' : ''})`);
  const testArgs = ['--import', 'tsx', '--test', `--test-concurrency=${tier.concurrency}`, ...files];
  let status;
  if (tier.privateMounts) {
    process.env.FUSEKEEPER_HOST_MOUNT_NS = readlinkSync('/proc/self/ns/mnt');
    status = run('unshare', ['--mount', '--propagation', 'private', '--', node, ...testArgs]);
  } else {
    status = run(node, testArgs);
  }
  if (status !== 0) failed.push(name);
}
if (failed.length) {
  console.error(`test: failed tiers: ${failed.join(', ')}`);
  process.exit(1);
}
console.log(`test: all tiers passed (${wanted.join(', ')})`);
