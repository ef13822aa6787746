#!/usr/bin/env node
// Compiled by `npm ci` (the `prepare` script) into dist/.
import { main } from '../dist/bin/cli/fusekeeper.js';
process.exitCode = await main(process.argv.slice(2));
