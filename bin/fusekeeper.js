#!/usr/bin/env -S node --max-semi-space-size=1
// --max-semi-space-size=1 caps V8's young generation at 2 MB for this process only (flags on
// the command line, unlike NODE_OPTIONS, are not inherited by the daemons it starts; set at
// runtime with v8.setFlagsFromString it has no effect). Measured at 100k journaled ids it is
// the difference between ~95 and ~75 MiB; `npm start` and the test helper pass it too.
// Built by `npm ci` (the `prepare` script, scripts/build.mjs) into one module in dist/bundle/.
import { compileEagerly, SUPERVISOR_COMPILE_FLAGS } from './warm-code.js';

if (process.argv[2] === 'serve') compileEagerly(SUPERVISOR_COMPILE_FLAGS);
const { main } = await import('../dist/bundle/fusekeeper.mjs');
process.exitCode = await main(process.argv.slice(2));
