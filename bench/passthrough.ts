// Sequential read throughput of one 256 MiB file, side by side in one run: straight from the
// source directory, through mirrorfs with kernel passthrough, and through mirrorfs with
// --no-passthrough (every READ answered by the daemon). The page cache is dropped before
// every cold read; the modes take turns within each round so drift hits them alike. Also
// reports warm reads (page cache kept) and the READ requests the daemon counted.
// Target: passthrough >= 0.9x direct. Run: npm run bench -- passthrough   (root, /dev/fuse)
import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { startMirror, type MirrorProcess } from '../test/kernel/helpers/mirror.ts';
import { summarize, writeResult } from './lib.ts';

const SIZE_MIB = 256;
const ROUNDS = 5;

/** Reads `file` with dd (1 MiB blocks) in a child process; MiB/s as dd measured it. */
function ddRead(file: string): number {
  const r = spawnSync('dd', [`if=${file}`, 'of=/dev/null', 'bs=1M'], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`dd ${file} failed: ${r.stderr}`);
  const m = /^(\d+) bytes .* copied, ([\d.e-]+) s/m.exec(r.stderr);
  if (!m || Number(m[1]) !== SIZE_MIB * 1024 * 1024) throw new Error(`dd ${file}: unexpected output ${r.stderr}`);
  return SIZE_MIB / Number(m[2]);
}

function dropCaches(): void {
  spawnSync('sync');
  writeFileSync('/proc/sys/vm/drop_caches', '3');
}

interface ModeResult {
  cold: number[];
  warm: number[];
  reads: number;
}

const round1 = (x: number): number => Math.round(x * 10) / 10;
const ratio = (a: number, b: number): number => Math.round((a / b) * 100) / 100;

export async function run(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'fusekeeper-bench-pt-'));
  const mirrors: MirrorProcess[] = [];
  try {
    const source = join(dir, 'src');
    spawnSync('mkdir', [source]);
    const fd = openSync(join(source, 'big'), 'w');
    const chunk = Buffer.alloc(1024 * 1024);
    for (let i = 0; i < SIZE_MIB; i++) {
      chunk.fill(i & 0xff);
      writeSync(fd, chunk);
    }
    closeSync(fd);
    const passthrough = await startMirror({ source, passthrough: true });
    mirrors.push(passthrough);
    const noPassthrough = await startMirror({ source, passthrough: false });
    mirrors.push(noPassthrough);
    const modes: { name: string; file: string; mirror?: MirrorProcess }[] = [
      { name: 'direct', file: join(source, 'big') },
      { name: 'mirrorfs passthrough', file: join(passthrough.mountpoint, 'big'), mirror: passthrough },
      { name: 'mirrorfs no passthrough', file: join(noPassthrough.mountpoint, 'big'), mirror: noPassthrough },
    ];
    const results = new Map<string, ModeResult>(modes.map((m) => [m.name, { cold: [], warm: [], reads: 0 }]));
    const readsBefore = new Map<string, number>();
    for (const m of modes) if (m.mirror) readsBefore.set(m.name, (await m.mirror.stats()).reads);
    for (let r = 0; r < ROUNDS; r++) {
      for (const m of modes) {
        dropCaches();
        results.get(m.name)!.cold.push(ddRead(m.file));
        results.get(m.name)!.warm.push(ddRead(m.file));
      }
    }
    for (const m of modes) if (m.mirror) results.get(m.name)!.reads = (await m.mirror.stats()).reads - readsBefore.get(m.name)!;

    const direct = summarize(results.get('direct')!.cold);
    const directWarm = summarize(results.get('direct')!.warm);
    const rows: Record<string, Record<string, number>> = {};
    const figures: Record<string, unknown> = { fileMiB: SIZE_MIB, rounds: ROUNDS };
    for (const m of modes) {
      const res = results.get(m.name)!;
      const cold = summarize(res.cold);
      const warm = summarize(res.warm);
      rows[m.name] = {
        'cold best MiB/s': round1(cold.max),
        'cold median MiB/s': round1(cold.median),
        'cold ratio (median)': ratio(cold.median, direct.median),
        'warm median MiB/s': round1(warm.median),
        'warm ratio (median)': ratio(warm.median, directWarm.median),
        'READ requests / read': m.mirror ? Math.round(res.reads / (2 * ROUNDS)) : 0,
      };
      figures[m.name.replace(/ (\w)/g, (_s, c: string) => c.toUpperCase())] = {
        coldMiBs: { best: round1(cold.max), median: round1(cold.median), worst: round1(cold.min), samples: res.cold.map(round1) },
        warmMiBs: { best: round1(warm.max), median: round1(warm.median), worst: round1(warm.min), samples: res.warm.map(round1) },
        coldRatioVsDirect: { best: ratio(cold.max, direct.max), median: ratio(cold.median, direct.median) },
        warmRatioVsDirect: { median: ratio(warm.median, directWarm.median) },
        ...(m.mirror ? { readRequests: res.reads, readRequestsPerFileRead: Math.round(res.reads / (2 * ROUNDS)) } : {}),
      };
    }
    const pt = results.get('mirrorfs passthrough')!;
    const ptRatio = ratio(summarize(pt.cold).median, direct.median);
    figures.target = { passthroughColdRatioAtLeast: 0.9, met: ptRatio >= 0.9 };
    console.table(rows);
    console.log(`passthrough vs direct (cold, median): ${ptRatio}x (target >= 0.9x: ${ptRatio >= 0.9 ? 'met' : 'NOT met'}); READ requests with passthrough: ${pt.reads}`);
    for (const m of mirrors) await m.stop();
    writeResult('passthrough', figures);
  } finally {
    for (const m of mirrors) await m.cleanup();
    rmSync(dir, { recursive: true, force: true });
  }
}
