// A real systemd (Debian 12's 252) as a user manager for the systemd tier, per DESIGN.md
// section 5: in a private mount namespace, a tmpfs on /run/systemd with /run/systemd/system,
// then `systemd --user` with its own XDG_RUNTIME_DIR and XDG_CONFIG_HOME. The units are the
// real ones from units/, copied unchanged; test-only drop-ins change only the ExecStart binary
// location and paths (EnvironmentFile=, and log files, since no journald runs here).
//
// The mount namespace: the supervisor mounts FUSE connections in the namespace it runs in,
// and those mounts are visible only there. The whole test tier therefore runs inside one
// private namespace (scripts/test.mjs starts `node --test` under `unshare --mount
// --propagation private`): the test driver, systemd, the supervisor, the daemons and the
// applications all see the same mounts, and nothing leaks into the host's namespace; when the
// tier ends the namespace and every mount in it go away. `requirePrivateMountNamespace`
// refuses to run anywhere else.
//
// Everything started here is stopped by pid; everything mounted is under the temp dir (plus
// the /run/systemd tmpfs and a bind mount on /dev/kmsg, both inside the private namespace).
import { spawn, spawnSync, type ChildProcess, type SpawnSyncReturns } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, openSync, closeSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { findMount, parseMountInfo, unmountFuse } from '../../../kernel/mount.ts';
import { mknod, mountFs, unmountFs } from '../../../native/index.ts';
import { waitUntil as poll } from '../../kernel/helpers/supervisor.ts';

/** The kernel tier's `waitUntil` with a longer default: systemd restarts take seconds. */
export function waitUntil<T>(check: () => T | Promise<T>, what: string, timeoutMs = 15_000, everyMs = 25): Promise<NonNullable<T>> {
  return poll(check, what, timeoutMs, everyMs);
}

export const ROOT = new URL('../../../', import.meta.url).pathname.replace(/\/$/, '');
export const UNITS_DIR = join(ROOT, 'units');
export const SYSTEMD_BINARY = '/lib/systemd/systemd';
const MS_BIND = 4096;

/** The host's mount namespace as scripts/test.mjs saw it before `unshare`. */
export const HOST_MOUNT_NS_ENV = 'FUSEKEEPER_HOST_MOUNT_NS';

/** Throws unless this process runs in a private mount namespace made for the tier. */
export function requirePrivateMountNamespace(): void {
  const host = process.env[HOST_MOUNT_NS_ENV];
  const mine = readlinkSync('/proc/self/ns/mnt');
  if (!host || host === mine) {
    throw new Error(
      'the systemd tier must run in a private mount namespace (FUSE mounts made by the supervisor are only visible there): ' +
        'run it with `node scripts/test.mjs systemd`, which starts the tests under `unshare --mount --propagation private`',
    );
  }
}

export interface UserManager {
  /** Temp dir holding everything: rt/ (XDG_RUNTIME_DIR), cfg/ (XDG_CONFIG_HOME), logs/, env/, data. */
  dir: string;
  runtimeDir: string;
  unitDir: string;
  pid: number;
  /** The supervisor's control socket (%t/fusekeeper/control.sock). */
  controlSocket: string;
  /** State directory of the supervisor (RuntimeDirectory=fusekeeper + /sessions). */
  stateDir: string;
  systemctl(...args: string[]): SpawnSyncReturns<string>;
  /** `systemctl --user show -p ...` as an object. */
  show(unit: string, ...props: string[]): Record<string, string>;
  mainPid(unit: string): number;
  /** Log file contents: `systemd`, `fusekeeper`, `mirrorfs-<instance>`. */
  log(name: string): string;
  /** Writes env/<instance>.env for fusekeeper-mirrorfs@<instance>. */
  mirrorEnv(instance: string, source: string, mountpoint: string): void;
  /** Stops systemd (and with it every unit), unmounts what is left under `dir`, removes it. */
  stop(): Promise<void>;
}

function ensureRunSystemd(): void {
  const marker = '/run/systemd/.fusekeeper-test-tmpfs';
  if (findMount('/run/systemd')?.fstype !== 'tmpfs' || !existsSync(marker)) {
    mkdirSync('/run/systemd', { recursive: true });
    mountFs('tmpfs', '/run/systemd', 'tmpfs', 0, 'mode=0755');
    writeFileSync(marker, `${process.pid}\n`);
  }
  mkdirSync('/run/systemd/system', { recursive: true });
  // What PID 1 creates at boot and sandboxing options (ProtectHome=, InaccessiblePaths=, ...)
  // mount over what they hide.
  const inaccessible = '/run/systemd/inaccessible';
  if (!existsSync(`${inaccessible}/dir`)) {
    mkdirSync(inaccessible, { recursive: true, mode: 0o755 });
    mkdirSync(`${inaccessible}/dir`, { mode: 0 });
    writeFileSync(`${inaccessible}/reg`, '', { mode: 0 });
    mknod(`${inaccessible}/fifo`, 0o010000, 0);
    mknod(`${inaccessible}/sock`, 0o140000, 0);
    mknod(`${inaccessible}/chr`, 0o020000, 0);
    mknod(`${inaccessible}/blk`, 0o060000, 0);
  }
}

/** Drop-ins: ExecStart binary location and paths only. */
function writeDropIns(unitDir: string, dir: string): void {
  const node = process.execPath;
  const svc = join(unitDir, 'fusekeeper.service.d');
  mkdirSync(svc, { recursive: true });
  writeFileSync(
    join(svc, 'test.conf'),
    [
      '# Test only: the binary location (this checkout, run by this node) and log files',
      '# (no journald in the test namespace). Nothing else differs from units/.',
      '[Service]',
      'ExecStart=',
      // The node flag bin/fusekeeper.js's shebang passes (the installed unit runs the bin itself).
      `ExecStart=${node} --max-semi-space-size=1 ${ROOT}/bin/fusekeeper.js serve --socket %t/fusekeeper/control.sock`,
      `StandardOutput=append:${dir}/logs/fusekeeper.log`,
      `StandardError=append:${dir}/logs/fusekeeper.log`,
      '',
    ].join('\n'),
  );
  const mirror = join(unitDir, 'fusekeeper-mirrorfs@.service.d');
  mkdirSync(mirror, { recursive: true });
  writeFileSync(
    join(mirror, 'test.conf'),
    [
      '# Test only: the binary location, where the instance settings live, and log files.',
      '[Service]',
      'EnvironmentFile=',
      `EnvironmentFile=${dir}/env/%i.env`,
      'ExecStart=',
      `ExecStart=${node} ${ROOT}/bin/fusekeeper-mirrorfs.js \${SOURCE} \${MOUNTPOINT} --socket %t/fusekeeper/control.sock --name %i`,
      `StandardOutput=append:${dir}/logs/mirrorfs-%i.log`,
      `StandardError=append:${dir}/logs/mirrorfs-%i.log`,
      '',
    ].join('\n'),
  );
}

function exited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null;
}

/** Starts `systemd --user` with the real units installed; resolves once it answers. */
export async function startUserManager(): Promise<UserManager> {
  requirePrivateMountNamespace();
  ensureRunSystemd();
  const dir = mkdtempSync(join(tmpdir(), 'fusekeeper-systemd-'));
  chmodSync(dir, 0o755);
  const runtimeDir = join(dir, 'rt');
  const unitDir = join(dir, 'cfg/systemd/user');
  for (const d of [runtimeDir, unitDir, join(dir, 'logs'), join(dir, 'env')]) mkdirSync(d, { recursive: true });
  chmodSync(runtimeDir, 0o700);
  for (const f of readdirSync(UNITS_DIR)) copyFileSync(join(UNITS_DIR, f), join(unitDir, f));
  writeDropIns(unitDir, dir);
  // No journald here: systemd --user logs to /dev/kmsg (SYSTEMD_LOG_TARGET=kmsg), which in this
  // namespace is a FIFO that `cat` copies to logs/systemd.log. (A plain file would be
  // overwritten from offset 0 by every process that opens it; /dev/console is not written
  // unless it is a terminal.) This process keeps the FIFO open read-write, so `cat` never sees
  // EOF and no writer ever blocks in open().
  const systemdLog = join(dir, 'logs/systemd.log');
  const fifo = join(dir, 'logs/kmsg.fifo');
  if (spawnSync('mkfifo', ['-m', '0600', fifo]).status !== 0) throw new Error(`mkfifo ${fifo} failed`);
  const logFd = openSync(systemdLog, 'a');
  const copier = spawn('cat', [fifo], { stdio: ['ignore', logFd, 'ignore'] });
  closeSync(logFd);
  const fifoHold = openSync(fifo, 'r+');
  mountFs(fifo, '/dev/kmsg', '', MS_BIND, '');
  const env = {
    PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
    HOME: dir,
    LANG: 'C.UTF-8',
    XDG_RUNTIME_DIR: runtimeDir,
    XDG_CONFIG_HOME: join(dir, 'cfg'),
    XDG_DATA_HOME: join(dir, 'data'),
    SYSTEMD_LOG_TARGET: 'kmsg',
    SYSTEMD_LOG_LEVEL: 'info',
  };
  const out = openSync(join(dir, 'logs/systemd.stderr'), 'a');
  const child = spawn(SYSTEMD_BINARY, ['--user'], { env, stdio: ['ignore', out, out] });
  closeSync(out);
  const ctlEnv = { PATH: env.PATH, XDG_RUNTIME_DIR: runtimeDir, SYSTEMD_PAGER: '', SYSTEMD_COLORS: '0', LANG: 'C.UTF-8' };
  const systemctl = (...args: string[]): SpawnSyncReturns<string> => spawnSync('systemctl', ['--user', '--no-pager', ...args], { env: ctlEnv, encoding: 'utf8', timeout: 30_000 });
  let stopped = false;
  const um: UserManager = {
    dir,
    runtimeDir,
    unitDir,
    pid: child.pid ?? -1,
    controlSocket: join(runtimeDir, 'fusekeeper/control.sock'),
    stateDir: join(runtimeDir, 'fusekeeper/sessions'),
    systemctl,
    show(unit, ...props) {
      const r = systemctl('show', unit, ...props.map((p) => `--property=${p}`));
      if (r.status !== 0) throw new Error(`systemctl show ${unit} failed: ${r.stderr}`);
      const o: Record<string, string> = {};
      for (const line of r.stdout.split('\n')) {
        const i = line.indexOf('=');
        if (i > 0) o[line.slice(0, i)] = line.slice(i + 1);
      }
      return o;
    },
    mainPid(unit) {
      return Number(um.show(unit, 'MainPID').MainPID);
    },
    log(name) {
      try {
        return readFileSync(join(dir, 'logs', `${name}.log`), 'utf8');
      } catch {
        return '';
      }
    },
    mirrorEnv(instance, source, mountpoint) {
      writeFileSync(join(dir, 'env', `${instance}.env`), `SOURCE=${source}\nMOUNTPOINT=${mountpoint}\n`);
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      if (!exited(child)) {
        child.kill('SIGTERM');
        const timer = new AbortController();
        const gone = await Promise.race([new Promise<boolean>((r) => child.once('exit', () => r(true))), sleep(30_000, false, { signal: timer.signal }).catch(() => false)]);
        timer.abort();
        if (!gone && !exited(child)) {
          child.kill('SIGKILL');
          await new Promise((r) => child.once('exit', r));
        }
      }
      // Whatever a killed unit left mounted under the temp dir (FUSE mounts of dead daemons).
      const leftovers = parseMountInfo(readFileSync('/proc/self/mountinfo', 'utf8'))
        .filter((m) => m.mountpoint.startsWith(`${dir}/`))
        .map((m) => m.mountpoint)
        .reverse();
      for (const m of leftovers) {
        try {
          unmountFuse(m, true);
        } catch {
          // already gone
        }
      }
      try {
        unmountFs('/dev/kmsg', 2 /* MNT_DETACH */);
      } catch {
        // not bound
      }
      closeSync(fifoHold);
      if (!exited(copier)) {
        const done = new Promise((r) => copier.once('exit', r));
        const t = setTimeout(() => copier.kill('SIGKILL'), 2000);
        await done;
        clearTimeout(t);
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
  try {
    await waitUntil(() => {
      if (exited(child)) throw new Error(`systemd --user exited (${child.exitCode ?? child.signalCode}):\n${um.log('systemd')}`);
      const r = systemctl('is-system-running');
      return ['running', 'degraded'].includes(r.stdout.trim());
    }, 'systemd --user to finish starting up', 20_000, 50);
  } catch (err) {
    await um.stop();
    throw err;
  }
  return um;
}
