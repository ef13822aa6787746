#!/usr/bin/env node
// Builds what the executables in bin/ run: `tsc -p tsconfig.build.json` compiles every layer
// into dist/, then each CLI's module graph is bundled into one file in dist/bundle/ (the
// packages in node_modules stay outside: koffi loads a native addon from its own directory).
// Why one file: Node 20 resolves, reads and links every ES module of a graph separately. On
// the 2-vCPU machine of bench/results, importing mirrorfs's 43 compiled modules took
// 59 ms and its bundle 31 ms; the supervisor CLI's, 67 and 47 ms. A crashed daemon that is
// restarted cold pays that on every restart, inside the blackout its applications see.
// `npm run prepare` and `npm test` run this.
import { spawnSync } from 'node:child_process';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

/** Entry (compiled) -> bundle; bin/<name>.js imports the bundle. */
const BUNDLES = {
  'dist/bin/cli/fusekeeper.js': 'dist/bundle/fusekeeper.mjs',
  'dist/bin/cli/mirrorfs.js': 'dist/bundle/fusekeeper-mirrorfs.mjs',
};

const tsc = spawnSync(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.build.json'], { cwd: root, stdio: 'inherit' });
if (tsc.status !== 0) {
  console.error('build: tsc failed');
  process.exit(1);
}
try {
  for (const [entry, out] of Object.entries(BUNDLES)) {
    await build({
      absWorkingDir: root,
      entryPoints: [entry],
      outfile: out,
      bundle: true,
      platform: 'node',
      target: 'node20',
      format: 'esm',
      packages: 'external',
      // Stack traces name the TypeScript sources: esbuild follows dist/'s own source maps.
      sourcemap: 'linked',
      logLevel: 'warning',
    });
  }
} catch (err) {
  console.error(`build: bundling failed: ${err instanceof Error ? err.message : err}`);
  process.exit(1);
}
