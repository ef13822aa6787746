import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * The package root (where package.json and bin/ are), found upward from this module's
 * location: the module runs from dist/bin/cli/ when compiled and from dist/bundle/ when
 * bundled, so no fixed relative path fits both.
 */
export function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'bin', 'fusekeeper.js'))) return dir;
    dir = dirname(dir);
  }
  throw new Error('cannot find the fusekeeper package root');
}
