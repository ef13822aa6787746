// Runs benchmarks by name: `npm run bench -- seam`. Without a name, lists them.
const benches: Record<string, () => Promise<{ run(): Promise<void> }>> = {
  seam: () => import('./seam.ts'),
  passthrough: () => import('./passthrough.ts'),
  metadata: () => import('./metadata.ts'),
  journal: () => import('./journal.ts'),
  checkpoint: () => import('./checkpoint.ts'),
  fuzz: () => import('./fuzz.ts'),
  handover: () => import('./handover.ts'),
  failover: () => import('./failover.ts'),
  dispatch: () => import('./dispatch.ts'),
  reap: () => import('./reap.ts'),
};
const names = process.argv.slice(2);
if (names.length === 0 || names.some((n) => !benches[n])) {
  console.error(`usage: npm run bench -- NAME...   (benchmarks: ${Object.keys(benches).join(', ')})`);
  process.exit(names.length === 0 ? 0 : 2);
}
for (const name of names) {
  console.log(`== ${name}`);
  await (await benches[name]!()).run();
}
