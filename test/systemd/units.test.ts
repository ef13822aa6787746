// `systemd-analyze verify` of units/: clean means exit 0 and not one line of output (systemd
// only warns about unknown keys or bad values, with exit 0, so the output is what counts).
// The units are verified as system units in a scratch root that has the system's unit
// directory and fusekeeper installed by scripts/install.sh; the test configuration (the same
// files plus the test drop-ins) is verified as user units, as the user manager loads them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ROOT, startUserManager, UNITS_DIR } from './helpers/user-manager.ts';

const UNITS = ['fusekeeper.service', 'fusekeeper.socket', 'fusekeeper-mirrorfs@data.service'];

function verify(args: string[], env: Record<string, string> = {}): { status: number | null; output: string } {
  const r = spawnSync('systemd-analyze', ['--man=no', ...args], { encoding: 'utf8', env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', ...env } });
  return { status: r.status, output: `${r.stdout}${r.stderr}`.trim() };
}

/**
 * A scratch root with the system's unit directory and fusekeeper installed into it by
 * scripts/install.sh (units in /etc/systemd/system, binaries in /usr/local/bin).
 */
function scratchRoot(extraUnits: Record<string, string> = {}): string {
  const root = mkdtempSync(join(tmpdir(), 'fusekeeper-verify-'));
  const install = spawnSync(join(ROOT, 'scripts/install.sh'), ['--destdir', root], { encoding: 'utf8' });
  assert.equal(install.status, 0, `scripts/install.sh failed:\n${install.stdout}${install.stderr}`);
  mkdirSync(join(root, 'usr/lib/systemd'), { recursive: true });
  cpSync('/usr/lib/systemd/system', join(root, 'usr/lib/systemd/system'), { recursive: true, verbatimSymlinks: true });
  for (const [name, text] of Object.entries(extraUnits)) writeFileSync(join(root, 'etc/systemd/system', name), text);
  // ExecReload= names /bin/kill.
  mkdirSync(join(root, 'bin'), { recursive: true });
  writeFileSync(join(root, 'bin/kill'), '#!/bin/sh\n');
  chmodSync(join(root, 'bin/kill'), 0o755);
  return root;
}

test('systemd-analyze verify: the units as scripts/install.sh installs them are clean system units; the installed CLI runs', () => {
  const root = scratchRoot({ 'broken-control.service': '[Service]\nBogus=1\nExecStart=/usr/local/bin/fusekeeper serve\n' });
  try {
    const version = spawnSync(join(root, 'usr/local/bin/fusekeeper'), ['--version'], { encoding: 'utf8' });
    assert.equal(version.status, 0, version.stderr);
    assert.match(version.stdout, /^\d+\.\d+\.\d+\n$/);
    for (const f of readdirSync(UNITS_DIR)) assert.equal(readFileSync(join(root, 'etc/systemd/system', f), 'utf8'), readFileSync(join(UNITS_DIR, f), 'utf8'), `${f} installed unchanged`);
    // The check has teeth: a unit with an unknown key is reported.
    const control = verify(['verify', `--root=${root}`, 'broken-control.service']);
    assert.match(control.output, /Unknown key 'Bogus'/);
    const r = verify(['verify', `--root=${root}`, ...UNITS]);
    assert.equal(r.output, '', `systemd-analyze verify reported:\n${r.output}`);
    assert.equal(r.status, 0);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('systemd-analyze --user verify: the test configuration (units/ + drop-ins) is clean', async () => {
  const um = await startUserManager();
  try {
    const r = verify(['--user', 'verify', ...UNITS], { XDG_CONFIG_HOME: join(um.dir, 'cfg'), XDG_RUNTIME_DIR: um.runtimeDir, HOME: um.dir });
    assert.equal(r.output, '', `systemd-analyze --user verify reported:\n${r.output}`);
    assert.equal(r.status, 0);
    // The drop-ins change only the binary location and paths.
    const cat = um.systemctl('cat', 'fusekeeper.service');
    assert.equal(cat.status, 0, cat.stderr);
    const dropIn = cat.stdout.slice(cat.stdout.indexOf('fusekeeper.service.d/test.conf'));
    const keys = dropIn.split('\n').filter((l) => /^[A-Za-z]+=/.test(l)).map((l) => l.slice(0, l.indexOf('=')));
    assert.deepEqual([...new Set(keys)].sort(), ['ExecStart', 'StandardError', 'StandardOutput']);
  } finally {
    await um.stop();
  }
});

test('why fusekeeper.service has no ProtectSystem= & co.: a mount made under any of them is invisible outside the service; under the hardening it uses, it is visible', async () => {
  const um = await startUserManager();
  const target = join(um.dir, 'probe-mnt');
  mkdirSync(target);
  const visible = (props: string[]): boolean => {
    const r = spawnSync('systemd-run', ['--user', '--wait', '--quiet', ...props.flatMap((p) => ['-p', p]), '/bin/sh', '-c', `mkdir -p ${target} && mount -t tmpfs fusekeeper-probe ${target}`], {
      encoding: 'utf8',
      env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', XDG_RUNTIME_DIR: um.runtimeDir },
    });
    assert.equal(r.status, 0, `systemd-run ${props.join(' ')}: ${r.stderr}`);
    const mounted = readFileSync('/proc/self/mountinfo', 'utf8').includes(` ${target} `);
    if (mounted) spawnSync('umount', [target]);
    return mounted;
  };
  try {
    for (const p of ['ProtectSystem=full', 'ProtectHome=yes', 'PrivateTmp=yes', 'PrivateDevices=yes', 'PrivateMounts=yes', 'ProtectKernelTunables=yes', 'ProtectKernelModules=yes', 'ProtectKernelLogs=yes', 'ProtectControlGroups=yes']) {
      assert.equal(visible([p]), false, `${p} should hide the mount`);
    }
    // The hardening fusekeeper.service does use, as the unit says it, all at once.
    const used = readFileSync(join(UNITS_DIR, 'fusekeeper.service'), 'utf8')
      .split('\n')
      .filter((l) => /^(NoNewPrivileges|DevicePolicy|DeviceAllow|Restrict\w+|LockPersonality|Protect\w+|SystemCall\w+|CapabilityBoundingSet)=/.test(l));
    assert.ok(used.length >= 12, `the unit's hardening: ${used.join(' ')}`);
    assert.equal(visible(used), true, 'the hardening in use keeps mounts visible');
  } finally {
    await um.stop();
  }
});
