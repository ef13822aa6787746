#!/usr/bin/env node
// Boots a kernel under qemu (TCG) with the host's root shared read-only over 9p as the guest's
// root, runs one command inside as init's child, and returns its exit status.
//
//   node test/vm/run.mjs --kernel <bzImage|patched|unpatched> [--timeout <s>] [--cwd <dir>]
//                        [--env K=V ...] [--mem <MiB>] [--cpus <n>] -- <command> [args...]
//
// The guest's init (test/vm/guest/init.sh) mounts proc, sysfs, devtmpfs, tmpfs on /tmp, /run and
// /dev/shm, fusectl, and a second, writable 9p share (a fresh host temp dir, `/run/vm-results`
// in the guest) where the host put `command.sh` and where init writes the exit status. Files the
// command writes to $FUSEKEEPER_VM_RESULTS stay in that dir for the host to read. Every console
// line is printed with a `vm:<label>| ` prefix. Exit status: the command's; 124 on timeout;
// 125 when the guest ended without reporting one (panic, init failure).
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, realpathSync } from 'node:fs';
import { cpus } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { StringDecoder } from 'node:string_decoder';
import { fileURLToPath } from 'node:url';
import { cacheDir, imagePath, VARIANTS } from './build-kernel.mjs';

const here = dirname(fileURLToPath(import.meta.url));
export const INIT_SCRIPT = join(here, 'guest', 'init.sh');
export const GUEST_RESULTS = '/run/vm-results';
export const QEMU = 'qemu-system-x86_64';

/** Single-quotes `s` for /bin/sh. */
function shq(s) {
  return `'${String(s).replace(/'/g, `'\\''`)}'`;
}

/**
 * Boots `kernel` and runs `command` (argv) in `cwd` with `env` (added to a minimal environment).
 * Resolves `{ status, timedOut, bootSeconds, seconds, resultsDir, console }`; `resultsDir` is
 * removed unless `keepResults` (the caller then removes it).
 */
export async function runInVm({
  kernel,
  command,
  cwd = process.cwd(),
  env = {},
  timeoutMs = 15 * 60_000,
  memoryMb = 2048,
  cpuCount = Math.min(2, cpus().length || 1),
  label = 'guest',
  keepResults = false,
  print = true,
}) {
  if (!existsSync(kernel)) throw new Error(`kernel ${kernel} does not exist (build it: node test/vm/build-kernel.mjs)`);
  if (!existsSync(INIT_SCRIPT)) throw new Error(`${INIT_SCRIPT} is missing`);
  for (const p of [INIT_SCRIPT, cwd]) {
    if (/[\s'"\\]/.test(p)) throw new Error(`path ${p} has whitespace or quotes: it cannot go on the kernel command line / into the guest script`);
  }
  mkdirSync(join(cacheDir(), 'runs'), { recursive: true });
  const resultsDir = mkdtempSync(join(cacheDir(), 'runs', `${label}-`));
  const guestEnv = {
    PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
    HOME: '/root',
    TMPDIR: '/tmp',
    LANG: 'C.UTF-8',
    FUSEKEEPER_VM_RESULTS: GUEST_RESULTS,
    ...env,
  };
  const script = [
    '# written by test/vm/run.mjs on the host',
    `cd ${shq(cwd)} || exit 126`,
    ...Object.entries(guestEnv).map(([k, v]) => {
      if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(k)) throw new Error(`bad environment name ${k}`);
      return `export ${k}=${shq(v)}`;
    }),
    `exec ${command.map(shq).join(' ')}`,
    '',
  ].join('\n');
  writeFileSync(join(resultsDir, 'command.sh'), script);
  // The guest mounts fresh tmpfs on /tmp and /run, which would hide a checkout below them
  // (CI may clone there): init mounts the checkout's own share back at the same path.
  writeFileSync(join(resultsDir, 'checkout'), `${cwd}\n`);

  const append = [
    'console=ttyS0',
    'root=root',
    'rootfstype=9p',
    'rootflags=trans=virtio,version=9p2000.L,msize=262144,cache=loose',
    'ro',
    'panic=-1',
    'loglevel=4',
    'tsc=reliable',
    `init=/bin/sh`,
    '--',
    INIT_SCRIPT,
  ].join(' ');
  const args = [
    '-machine', 'pc,accel=tcg',
    '-cpu', 'max',
    '-smp', String(cpuCount),
    '-m', String(memoryMb),
    '-nodefaults', '-no-user-config', '-display', 'none', '-no-reboot',
    '-serial', 'stdio', '-monitor', 'none',
    '-kernel', kernel,
    '-append', append,
    '-virtfs', 'local,path=/,mount_tag=root,security_model=none,readonly=on,multidevs=remap',
    '-virtfs', `local,path=${resultsDir},mount_tag=results,security_model=none,multidevs=remap`,
    '-virtfs', `local,path=${cwd},mount_tag=checkout,security_model=none,readonly=on,multidevs=remap`,
  ];

  const t0 = Date.now();
  let bootSeconds = null;
  let consoleText = '';
  let timedOut = false;
  const prefix = `vm:${label}| `;
  const child = spawn(QEMU, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  let partial = '';
  const decoder = new StringDecoder('utf8'); // a chunk may end inside a multi-byte character
  const onData = (chunk) => {
    const text = partial + (typeof chunk === 'string' ? chunk : decoder.write(chunk)).replace(/\r/g, '');
    const lines = text.split('\n');
    partial = lines.pop() ?? '';
    for (const line of lines) {
      consoleText += `${line}\n`;
      if (bootSeconds === null && line.includes('fusekeeper-vm: init up')) bootSeconds = (Date.now() - t0) / 1000;
      if (print) console.log(prefix + line);
    }
  };
  child.stdout.on('data', onData);
  child.stderr.on('data', (chunk) => onData(chunk.toString('utf8')));
  const timer = setTimeout(() => {
    timedOut = true;
    if (print) console.log(`${prefix}TIMEOUT after ${timeoutMs / 1000}s: killing qemu (pid ${child.pid})`);
    child.kill('SIGKILL');
  }, timeoutMs);
  // Interrupted (Ctrl-C, CI cancel): take our qemu down with us, then die of the same signal.
  const onSignal = (sig) => {
    child.kill('SIGKILL');
    process.kill(process.pid, sig);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const exit = await new Promise((resolveExit, reject) => {
    child.on('error', (err) => reject(new Error(`cannot start ${QEMU}: ${err.message} (apt-get install qemu-system-x86)`)));
    child.on('close', (code, signal) => resolveExit({ code, signal }));
  }).finally(() => {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  });
  clearTimeout(timer);
  if (partial) onData('\n');
  const seconds = (Date.now() - t0) / 1000;

  let status;
  const statusFile = join(resultsDir, 'status');
  if (timedOut) status = 124;
  else if (existsSync(statusFile)) status = Number(readFileSync(statusFile, 'utf8').trim());
  else {
    status = 125;
    const why = /Kernel panic[^\n]*/.exec(consoleText)?.[0] ?? `qemu exited ${exit.code ?? exit.signal} without a status from the guest`;
    if (print) console.log(`${prefix}NO EXIT STATUS: ${why}`);
  }
  if (!keepResults) rmSync(resultsDir, { recursive: true, force: true });
  return { status, timedOut, bootSeconds, seconds, resultsDir, console: consoleText };
}

/** `patched`/`unpatched` name the cached builds; anything else is a path. */
export function resolveKernel(k) {
  if (VARIANTS.includes(k)) {
    const p = imagePath(k);
    if (!existsSync(p)) throw new Error(`no cached ${k} kernel at ${p}: run node test/vm/build-kernel.mjs ${k}`);
    return p;
  }
  return resolve(k);
}

async function main(argv) {
  const sep = argv.indexOf('--');
  const opts = sep >= 0 ? argv.slice(0, sep) : argv;
  const command = sep >= 0 ? argv.slice(sep + 1) : [];
  const take = (name) => {
    const i = opts.indexOf(name);
    if (i < 0) return undefined;
    const v = opts[i + 1];
    opts.splice(i, 2);
    return v;
  };
  const kernel = take('--kernel');
  const timeout = take('--timeout');
  const cwd = take('--cwd');
  const mem = take('--mem');
  const cpuOpt = take('--cpus');
  const env = {};
  for (let v = take('--env'); v !== undefined; v = take('--env')) {
    const eq = v.indexOf('=');
    if (eq <= 0) throw new Error(`--env wants K=V, got ${v}`);
    env[v.slice(0, eq)] = v.slice(eq + 1);
  }
  if (!kernel || command.length === 0 || opts.length) {
    console.error('usage: node test/vm/run.mjs --kernel <bzImage|patched|unpatched> [--timeout s] [--cwd dir] [--env K=V] [--mem MiB] [--cpus n] -- command [args...]');
    return 2;
  }
  const path = resolveKernel(kernel);
  const r = await runInVm({
    kernel: path,
    command,
    cwd: cwd ? realpathSync(cwd) : process.cwd(),
    env,
    label: VARIANTS.includes(kernel) ? kernel : 'guest',
    ...(timeout ? { timeoutMs: Number(timeout) * 1000 } : {}),
    ...(mem ? { memoryMb: Number(mem) } : {}),
    ...(cpuOpt ? { cpuCount: Number(cpuOpt) } : {}),
  });
  console.log(`vm: guest command exited ${r.status}${r.timedOut ? ' (timeout)' : ''}; init up after ${r.bootSeconds?.toFixed(1) ?? '?'}s, total ${r.seconds.toFixed(1)}s`);
  return r.status;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  main(process.argv.slice(2)).then((code) => process.exit(code), (err) => {
    console.error(`vm: ${err.message}`);
    process.exit(1);
  });
}
