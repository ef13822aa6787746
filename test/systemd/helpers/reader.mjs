// An application reading through a FUSE mount, for the systemd tier: holds one file open
// and re-reads it, opens, reads and closes every other file in turn, looks up names that do
// not exist (ENOENT is the expected answer) and lists the directory, checking every byte
// against the source. Each step is a plain synchronous syscall, so while the daemon or the
// supervisor is away a step simply waits. Any other outcome (EIO, ENOTCONN, wrong data) is
// an error. Prints a JSON progress line every 100 ms and a final one on SIGTERM.
//
// usage: node reader.mjs MOUNTPOINT SOURCE
import { closeSync, openSync, readdirSync, readFileSync, readSync, statSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';

const [mountpoint, source] = process.argv.slice(2);
const names = readdirSync(source).filter((n) => n.startsWith('f')).sort();
const digest = (b) => createHash('sha256').update(b).digest('hex');
const expected = new Map(names.map((n) => [n, digest(readFileSync(join(source, n)))]));
const held = names[0];
const heldSize = readFileSync(join(source, held)).length;
const heldFd = openSync(join(mountpoint, held), 'r');
const buf = Buffer.alloc(heldSize);

const st = { iterations: 0, errors: 0, firstErrors: [], maxGapMs: 0, slow: [], startedAt: Date.now(), last: Date.now(), done: false };
let stop = false;
let lastEnd = Date.now();

function fail(what, err) {
  st.errors++;
  if (st.firstErrors.length < 20) st.firstErrors.push(`${new Date().toISOString()} ${what}: ${err instanceof Error ? `${err.code ?? ''} ${err.message}` : String(err)}`);
}

function step() {
  const i = st.iterations;
  try {
    const n = readSync(heldFd, buf, 0, heldSize, 0);
    if (n !== heldSize || digest(buf) !== expected.get(held)) fail('held file', new Error(`read ${n} bytes, content differs`));
  } catch (err) {
    fail('held file', err);
  }
  const name = names[i % names.length];
  try {
    if (digest(readFileSync(join(mountpoint, name))) !== expected.get(name)) fail(`read ${name}`, new Error('content differs'));
  } catch (err) {
    fail(`read ${name}`, err);
  }
  try {
    statSync(join(mountpoint, `missing-${process.pid}-${i}`));
    fail('lookup', new Error('a missing name exists'));
  } catch (err) {
    if (err.code !== 'ENOENT') fail('lookup', err);
  }
  if (i % 10 === 0) {
    try {
      const listed = readdirSync(mountpoint).filter((n) => n.startsWith('f')).length;
      if (listed !== names.length) fail('readdir', new Error(`${listed} entries, expected ${names.length}`));
    } catch (err) {
      fail('readdir', err);
    }
  }
  const now = Date.now();
  st.maxGapMs = Math.max(st.maxGapMs, now - lastEnd);
  // Steps that waited (the daemon or supervisor away): when, and how long.
  if (now - lastEnd > 100 && st.slow.length < 50) st.slow.push({ at: new Date(lastEnd).toISOString(), ms: now - lastEnd });
  lastEnd = now;
  st.iterations++;
  st.last = now;
}

const report = () => process.stdout.write(`${JSON.stringify(st)}\n`);
const progress = setInterval(report, 100);
process.on('SIGTERM', () => {
  stop = true;
});

function loop() {
  if (stop) {
    clearInterval(progress);
    closeSync(heldFd);
    st.done = true;
    report();
    return;
  }
  step();
  setTimeout(loop, 2);
}
report();
loop();
