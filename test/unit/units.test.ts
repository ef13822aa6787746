// units/: what the systemd integration relies on is really in the unit files, and nothing
// that would hide the supervisor's mounts from the host (docs/systemd.md, "Hardening").
// `systemd-analyze verify` runs in the systemd tier.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { CONTROL_FD_NAME } from '../../supervisor/systemd.ts';

type Unit = Map<string, Map<string, string[]>>;

function parseUnit(name: string): Unit {
  const text = readFileSync(new URL(`../../units/${name}`, import.meta.url), 'utf8');
  const unit: Unit = new Map();
  let section: Map<string, string[]> | undefined;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#') || line.startsWith(';')) continue;
    const header = /^\[(.+)\]$/.exec(line);
    if (header) {
      section = new Map();
      unit.set(header[1]!, section);
      continue;
    }
    const i = line.indexOf('=');
    assert.ok(section && i > 0, `${name}: stray line ${line}`);
    const key = line.slice(0, i);
    section.set(key, [...(section.get(key) ?? []), line.slice(i + 1)]);
  }
  return unit;
}

const one = (u: Unit, section: string, key: string): string | undefined => u.get(section)?.get(key)?.at(-1);

/**
 * Options that give the service a mount namespace of its own. systemd makes it a slave of the
 * host's: mounts made inside never reach the host, so a supervisor under any of these would
 * mount FUSE connections nobody else can see.
 */
const MOUNT_NAMESPACE_OPTIONS = [
  'ProtectSystem', 'ProtectHome', 'PrivateTmp', 'PrivateDevices', 'PrivateMounts', 'PrivateUsers', 'ProtectKernelTunables',
  'ProtectKernelModules', 'ProtectKernelLogs', 'ProtectControlGroups', 'ProtectProc', 'ProcSubset', 'ReadOnlyPaths',
  'ReadWritePaths', 'InaccessiblePaths', 'ExecPaths', 'NoExecPaths', 'TemporaryFileSystem', 'BindPaths', 'BindReadOnlyPaths',
  'MountFlags', 'RootDirectory', 'RootImage', 'DynamicUser', 'MountAPIVFS', 'PrivateIPC', 'NetworkNamespacePath', 'LogNamespace',
];

test('fusekeeper.service: Type=notify from the main process, fd store, watchdog, restart, preserved runtime directory', () => {
  const u = parseUnit('fusekeeper.service');
  assert.equal(one(u, 'Service', 'Type'), 'notify');
  assert.equal(one(u, 'Service', 'NotifyAccess'), 'main');
  assert.ok(Number(one(u, 'Service', 'FileDescriptorStoreMax')) >= 4096, 'room for one fd per session (MAX_SESSIONS = 4096)');
  assert.match(one(u, 'Service', 'WatchdogSec') ?? '', /^\d+s$/);
  assert.equal(one(u, 'Service', 'Restart'), 'always');
  assert.equal(one(u, 'Service', 'RuntimeDirectory'), 'fusekeeper');
  assert.equal(one(u, 'Service', 'RuntimeDirectoryPreserve'), 'yes');
  assert.equal(one(u, 'Service', 'DeviceAllow'), '/dev/fuse rw');
  assert.equal(one(u, 'Service', 'DevicePolicy'), 'closed');
  assert.ok((one(u, 'Service', 'CapabilityBoundingSet') ?? '').split(/\s+/).includes('CAP_SYS_ADMIN'));
  assert.match(one(u, 'Service', 'SystemCallFilter') ?? '', /@mount/);
  assert.notEqual(one(u, 'Service', 'MemoryDenyWriteExecute'), 'yes', "V8's JIT needs W+X memory");
  for (const k of MOUNT_NAMESPACE_OPTIONS) assert.equal(u.get('Service')?.has(k), false, `${k}= would give the supervisor a private mount namespace`);
});

test('fusekeeper.socket: a SEQPACKET socket named for the supervisor, on the path the service is told', () => {
  const sock = parseUnit('fusekeeper.socket');
  const svc = parseUnit('fusekeeper.service');
  const listen = one(sock, 'Socket', 'ListenSequentialPacket');
  assert.equal(listen, '%t/fusekeeper/control.sock');
  assert.equal(one(sock, 'Socket', 'FileDescriptorName'), CONTROL_FD_NAME);
  assert.equal(one(sock, 'Socket', 'SocketMode'), '0666');
  assert.match(one(svc, 'Service', 'ExecStart') ?? '', new RegExp(` --socket ${listen!.replace(/[.%]/g, '\\$&')}( |$)`));
});

test('fusekeeper-mirrorfs@.service: the instance is the session, restarted always, connecting through the socket', () => {
  const u = parseUnit('fusekeeper-mirrorfs@.service');
  assert.equal(one(u, 'Service', 'Restart'), 'always');
  const exec = one(u, 'Service', 'ExecStart') ?? '';
  assert.match(exec, /fusekeeper-mirrorfs \$\{SOURCE\} \$\{MOUNTPOINT\} --socket %t\/fusekeeper\/control\.sock --name %i$/);
  assert.equal(one(u, 'Service', 'EnvironmentFile'), '/etc/fusekeeper/mirrorfs/%i.env');
  assert.match(one(u, 'Unit', 'After') ?? '', /fusekeeper\.service/);
});
