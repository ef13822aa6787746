// Metadata operations side by side in one run: on the source directory itself, through
// mirrorfs (passthrough on), and through fuse-overlayfs over the same directory (as its
// upper layer, with an empty lower layer, so creates land in the same place). A small C
// driver (bench/drivers/metadriver.c, compiled here with cc) does the timed loops in a
// process of its own: stat of 10k files (cold after dropping caches, and warm), open+close,
// full listings of a 10k-entry directory, create and unlink of 10k files.
// Run: npm run bench -- metadata   (root, /dev/fuse, cc, fuse-overlayfs)
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { startMirror, isMounted, type MirrorProcess } from '../test/kernel/helpers/mirror.ts';
import { unmountFuse } from '../kernel/mount.ts';
import { writeResult } from './lib.ts';

const FILES = 10_000;
const LISTINGS = 5;
const ROUNDS = 3;

type Op = 'stat cold' | 'stat warm' | 'open+close' | 'readdir (entries)' | 'create' | 'unlink';
const OPS: Op[] = ['stat cold', 'stat warm', 'open+close', 'readdir (entries)', 'create', 'unlink'];

/** Runs the driver; operations per second. */
function drive(driver: string, args: string[]): number {
  const r = spawnSync(driver, args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`metadriver ${args.join(' ')} failed: ${r.stderr}`);
  const [ops, ns] = r.stdout.trim().split(' ').map(Number);
  return ops! / (ns! / 1e9);
}

function dropCaches(): void {
  spawnSync('sync');
  writeFileSync('/proc/sys/vm/drop_caches', '3');
}

/** Every operation on `root` (holding many/ and an empty scratch/); best of ROUNDS, ops/s. */
function measure(driver: string, root: string): Record<Op, number> {
  const many = join(root, 'many');
  const scratch = join(root, 'scratch');
  dropCaches();
  const out = {} as Record<Op, number>;
  out['stat cold'] = drive(driver, ['stat', many, String(FILES), 'f']);
  const best = (args: string[]): number => Math.max(...Array.from({ length: ROUNDS }, () => drive(driver, args)));
  out['stat warm'] = best(['stat', many, String(FILES), 'f']);
  out['open+close'] = best(['open', many, String(FILES), 'f']);
  out['readdir (entries)'] = best(['readdir', many, String(LISTINGS)]);
  let create = 0;
  let unlink = 0;
  for (let r = 0; r < ROUNDS; r++) {
    create = Math.max(create, drive(driver, ['create', scratch, String(FILES), `r${r}-`]));
    unlink = Math.max(unlink, drive(driver, ['unlink', scratch, String(FILES), `r${r}-`]));
  }
  out.create = create;
  out.unlink = unlink;
  return out;
}

/** fuse-overlayfs in the foreground: empty lower layer, `upper` as the upper layer. */
async function startOverlay(dir: string, upper: string): Promise<{ mountpoint: string; stop(): Promise<void> }> {
  const lower = join(dir, 'ovl-lower');
  const work = join(dir, 'ovl-work');
  const mountpoint = join(dir, 'ovl-mnt');
  for (const d of [lower, work, mountpoint]) mkdirSync(d);
  const child: ChildProcess = spawn('fuse-overlayfs', ['-f', '-o', `lowerdir=${lower},upperdir=${upper},workdir=${work}`, mountpoint], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (b: Buffer) => (stderr += b.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const stop = async (): Promise<void> => {
    if (isMounted(mountpoint)) {
      try {
        unmountFuse(mountpoint);
      } catch {
        unmountFuse(mountpoint, true);
      }
    }
    if (child.exitCode === null && child.signalCode === null) {
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      child.kill('SIGTERM');
      await exited;
      clearTimeout(timer);
    }
  };
  const deadline = Date.now() + 10_000;
  while (!isMounted(mountpoint)) {
    if (child.exitCode !== null || Date.now() > deadline) {
      await stop();
      throw new Error(`fuse-overlayfs did not mount: ${stderr}`);
    }
    await sleep(20);
  }
  return { mountpoint, stop };
}

const ratio = (a: number, b: number): number => Math.round((a / b) * 100) / 100;

export async function run(): Promise<void> {
  if (spawnSync('sh', ['-c', 'command -v fuse-overlayfs']).status !== 0) throw new Error('fuse-overlayfs is not installed (scripts/install-deps.sh)');
  const dir = mkdtempSync(join(tmpdir(), 'fusekeeper-bench-md-'));
  let mirror: MirrorProcess | undefined;
  let overlay: { stop(): Promise<void> } | undefined;
  try {
    const driver = join(dir, 'metadriver');
    const cc = spawnSync('cc', ['-O2', '-o', driver, new URL('./drivers/metadriver.c', import.meta.url).pathname], { encoding: 'utf8' });
    if (cc.status !== 0) throw new Error(`cc failed: ${cc.stderr}`);
    const source = join(dir, 'src');
    mkdirSync(join(source, 'many'), { recursive: true });
    mkdirSync(join(source, 'scratch'));
    for (let i = 0; i < FILES; i++) writeFileSync(join(source, 'many', `f${String(i).padStart(6, '0')}`), '');

    const results: Record<string, Record<Op, number>> = {};
    results.source = measure(driver, source);
    mirror = await startMirror({ source, passthrough: true });
    const before = await mirror.stats();
    results.mirrorfs = measure(driver, mirror.mountpoint);
    const after = await mirror.stats();
    await mirror.stop();
    const o = await startOverlay(dir, source);
    overlay = o;
    results['fuse-overlayfs'] = measure(driver, o.mountpoint);
    await o.stop();

    const table: Record<string, Record<string, number | string>> = {};
    const figures: Record<string, unknown> = { files: FILES, listings: LISTINGS, rounds: ROUNDS, unit: 'operations per second (readdir: entries per second), best of rounds; stat cold: one pass after dropping caches' };
    for (const op of OPS) {
      const src = results.source![op];
      table[op] = {
        'source ops/s': Math.round(src),
        'mirrorfs ops/s': Math.round(results.mirrorfs![op]),
        'mirrorfs ratio': ratio(results.mirrorfs![op], src),
        'fuse-overlayfs ops/s': Math.round(results['fuse-overlayfs']![op]),
        'fuse-overlayfs ratio': ratio(results['fuse-overlayfs']![op], src),
        'mirrorfs / fuse-overlayfs': ratio(results.mirrorfs![op], results['fuse-overlayfs']![op]),
      };
      figures[op] = {
        sourceOpsPerSec: Math.round(src),
        mirrorfsOpsPerSec: Math.round(results.mirrorfs![op]),
        fuseOverlayfsOpsPerSec: Math.round(results['fuse-overlayfs']![op]),
        mirrorfsRatioVsSource: ratio(results.mirrorfs![op], src),
        fuseOverlayfsRatioVsSource: ratio(results['fuse-overlayfs']![op], src),
        mirrorfsVsFuseOverlayfs: ratio(results.mirrorfs![op], results['fuse-overlayfs']![op]),
      };
    }
    figures.mirrorfsRequests = after.requests - before.requests;
    console.table(table);
    console.log(`mirrorfs answered ${after.requests - before.requests} requests during its phase`);
    writeResult('metadata', figures);
  } finally {
    await mirror?.cleanup();
    await overlay?.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}
