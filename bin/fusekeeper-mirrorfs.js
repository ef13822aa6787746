#!/usr/bin/env node
// Built by `npm ci` (the `prepare` script, scripts/build.mjs) into one module in dist/bundle/.
import { compileEagerly } from './warm-code.js';

// A warm standby's start-up costs nothing anyone waits for; its take-over is a blackout.
if (process.argv.includes('--standby') || (process.env.FUSEKEEPER_STANDBY === '1' && process.env.FUSEKEEPER_SPARE === '1')) compileEagerly();
const { main } = await import('../dist/bundle/fusekeeper-mirrorfs.mjs');
process.exitCode = await main(process.argv.slice(2));
