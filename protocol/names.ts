// Session names, checkpoint keys and mountpoints: the validity rules both sides apply, and a
// deterministic session name for a mountpoint.
import { createHash } from 'node:crypto';
import { ProtocolError } from './errors.ts';
import { MAX_KEY_BYTES, MAX_NAME_BYTES, MAX_PATH_BYTES, NAME_PATTERN } from './limits.ts';

/** A lone UTF-16 surrogate: such a string has no UTF-8 encoding. */
const LONE_SURROGATE = /\p{Cs}/u;

/** True when `s` encodes to UTF-8 losslessly and contains no NUL. */
export function isWireString(s: string): boolean {
  return !s.includes('\0') && !LONE_SURROGATE.test(s);
}

/** True when `name` is a valid session name (NAME_PATTERN). */
export function isValidSessionName(name: string): boolean {
  return NAME_PATTERN.test(name);
}

/** True when `key` is a valid checkpoint key: 1..MAX_KEY_BYTES bytes of UTF-8, no NUL. */
export function isValidCheckpointKey(key: string): boolean {
  if (key.length === 0 || !isWireString(key)) return false;
  return Buffer.byteLength(key, 'utf8') <= MAX_KEY_BYTES;
}

/**
 * True when `path` is a canonical absolute path: starts with `/`, at most MAX_PATH_BYTES
 * bytes, no NUL, no empty, `.` or `..` component, no trailing slash (except `/` itself).
 * Canonical spelling makes "same mountpoint" a string comparison.
 */
export function isCanonicalMountpoint(path: string): boolean {
  if (!path.startsWith('/') || !isWireString(path)) return false;
  if (Buffer.byteLength(path, 'utf8') > MAX_PATH_BYTES) return false;
  if (path === '/') return true;
  const parts = path.split('/');
  for (let i = 1; i < parts.length; i++) {
    const p = parts[i];
    if (p === '' || p === '.' || p === '..') return false;
  }
  return true;
}

/** Characters that map to themselves in a lossless derived name ('-' is the separator, '@' marks a hash). */
const LOSSLESS_COMPONENT = /^[A-Za-z0-9_.:]+$/;
const HASH_HEX = 12;

/**
 * A valid session name derived from a mountpoint, deterministically.
 *
 * The path is normalised lexically (repeated slashes, `.` and `..` components, trailing
 * slash). When every component consists of `[A-Za-z0-9_.:]`, the name is the components
 * joined with `-` (`/mnt/data` -> `mnt-data`), which is reversible. Otherwise (other
 * characters, a `-` or `@` in a component, a name starting with `.`/`_`/`:`, or too long)
 * information would be lost, so the sanitised form (other characters become `_`) is cut to
 * fit and followed by `@` and 12 hex digits of the SHA-256 of the normalised path:
 * `/mnt/data x` -> `mnt-data_x@<hash>`. `@` never appears in a lossless name, so the two forms
 * cannot collide. `/` gives `root`. Throws ProtocolError EINVAL for a relative path.
 */
export function sessionNameFromMountpoint(path: string): string {
  if (!path.startsWith('/')) throw new ProtocolError('EINVAL', 'invalid path', `not absolute: ${JSON.stringify(path)}`);
  const parts: string[] = [];
  for (const p of path.split('/')) {
    if (p === '' || p === '.') continue;
    if (p === '..') parts.pop();
    else parts.push(p);
  }
  if (parts.length === 0) return 'root';
  const joined = parts.join('-');
  if (parts.every((p) => LOSSLESS_COMPONENT.test(p)) && NAME_PATTERN.test(joined)) return joined;
  const canonical = '/' + parts.join('/');
  const hash = createHash('sha256').update(canonical, 'utf8').digest('hex').slice(0, HASH_HEX);
  let prefix = parts
    .map((p) => p.replace(/[^A-Za-z0-9_.:-]/gu, '_'))
    .join('-')
    .replace(/^[^A-Za-z0-9]+/, '');
  if (prefix === '') prefix = 'mnt';
  return `${prefix.slice(0, MAX_NAME_BYTES - HASH_HEX - 1)}@${hash}`;
}
