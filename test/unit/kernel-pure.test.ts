import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fuseMountData, parseMountInfo } from '../../kernel/mount.ts';
import { chooseStrategy } from '../../kernel/doctor.ts';

test('fuse mount data carries fd, rootmode in octal, owner and the flags asked for', () => {
  assert.equal(
    fuseMountData(7, { mountpoint: '/m', rootMode: 0o40755, userId: 1000, groupId: 100, allowOther: true, defaultPermissions: true, maxRead: 131072 }),
    'fd=7,rootmode=40755,user_id=1000,group_id=100,allow_other,default_permissions,max_read=131072',
  );
  assert.equal(fuseMountData(3, { mountpoint: '/m', userId: 0, groupId: 0 }), 'fd=3,rootmode=40755,user_id=0,group_id=0');
});

test('mountinfo parsing unescapes paths and finds the fuse type, device minor and super options', () => {
  const text = [
    '22 1 0:21 / /proc rw,nosuid - proc proc rw',
    '97 30 0:55 / /tmp/with\\040space/mnt rw,nosuid,nodev,noatime shared:1 - fuse.mirrorfs fusekeeper-x rw,user_id=0,group_id=0',
    'garbage line',
  ].join('\n');
  const mounts = parseMountInfo(text);
  assert.equal(mounts.length, 2);
  assert.deepEqual(mounts[1], { mountId: 97, major: 0, minor: 55, mountpoint: '/tmp/with space/mnt', fstype: 'fuse.mirrorfs', source: 'fusekeeper-x', superOptions: 'rw,user_id=0,group_id=0' });
});

test('the cleanup strategy follows the kernel: close-all, journal, or none without passthrough', () => {
  assert.equal(chooseStrategy(true, true), 'close-all');
  assert.equal(chooseStrategy(true, false), 'journal');
  assert.equal(chooseStrategy(false, false), 'none');
});
