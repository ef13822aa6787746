#!/usr/bin/env -S node --max-semi-space-size=1
// --max-semi-space-size=1 caps V8's young generation at 2 MB for this process only (flags on
// the command line, unlike NODE_OPTIONS, are not inherited by the daemons it starts; set at
// runtime with v8.setFlagsFromString it has no effect). Measured at 100k journaled ids it is
// the difference between ~95 and ~75 MiB; `npm start` and the test helper pass it too.
// Compiled by `npm ci` (the `prepare` script) into dist/.
import { main } from '../dist/bin/cli/fusekeeper.js';
process.exitCode = await main(process.argv.slice(2));
