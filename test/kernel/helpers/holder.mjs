// An application for the recovery tests, as a child process: opens argv[2] (through the
// mount), prints "open <size>" once it has, then reads the whole file again and again
// (checking each read returns the size it had at open) until the file argv[3] exists. Then
// it closes the file and prints one JSON line: { reads, errors, firstError }. Blocking
// syscalls are fine here: nothing else runs in this process. Plain JavaScript, run without tsx:
// under the VM tier's emulated CPU, loading tsx alone takes seconds.
import { closeSync, existsSync, fstatSync, openSync, readSync, writeSync } from 'node:fs';

const [path, stopFile] = process.argv.slice(2);
const fd = openSync(path, 'r');
const size = fstatSync(fd).size;
writeSync(1, `open ${size}\n`);
const buf = Buffer.alloc(Math.max(1, size));
let reads = 0;
let errors = 0;
/** @type {string | null} */
let firstError = null;
while (!existsSync(stopFile)) {
  try {
    let got = 0;
    while (got < size) {
      const n = readSync(fd, buf, got, size - got, got);
      if (n === 0) break;
      got += n;
    }
    if (got !== size) throw new Error(`short read: ${got} of ${size}`);
    reads++;
  } catch (err) {
    errors++;
    firstError ??= String(err);
  }
}
closeSync(fd);
writeSync(1, `${JSON.stringify({ reads, errors, firstError })}\n`);
