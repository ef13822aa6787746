// Warm standby, as a user configures it: `fusekeeper serve --config` with a managed
// `fusekeeper-mirrorfs SOURCE MNT` and `"standby": true`. The supervisor starts two processes;
// both acquire as standbys (FUSEKEEPER_STANDBY=1 in their environment): the first creates the
// session, the second waits connected. The owner is SIGKILLed while an application reads a
// passthrough file in a loop: the spare takes the session over (generation 2), a new spare is
// started in the background, and the application never sees an error.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync, rmSync, promises as fsp } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { startSupervisor, runCli, sessionDir, tempDir, waitUntil, findMount } from './helpers/supervisor.ts';
import { MIRRORFS_CLI } from './helpers/mirror.ts';
import { startSupervisedMirror } from './helpers/supervised-mirror.ts';
import type { SessionStatus } from '../../supervisor/session.ts';
import { sessionNameFromMountpoint } from '../../protocol/index.ts';

const HOLDER = new URL('./helpers/holder.mjs', import.meta.url).pathname;

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

test('managed mirrorfs with a warm standby: the owner is SIGKILLed, the spare takes over as generation 2, a new spare starts; the reader sees no error', async (t) => {
  const dir = tempDir('fusekeeper-standby-');
  const { mountpoint } = sessionDir(dir, 'standby');
  const source = join(dir, 'src');
  mkdirSync(source);
  const content = randomBytes(1 << 20);
  writeFileSync(join(source, 'data.bin'), content);
  const sup = await startSupervisor({
    dir,
    config: { daemons: [{ name: 'warm', command: [process.execPath, MIRRORFS_CLI, source, mountpoint], standby: true, backoffMs: 100 }] },
  }).catch((err: Error) => {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  });
  let reader: ReturnType<typeof spawn> | undefined;
  const daemonPids = (): number[] => sup.events().filter((e) => e.event === 'daemon.started').map((e) => e.child as number);
  try {
    const session = async (): Promise<SessionStatus | undefined> => {
      const r = await runCli(['status', '--json', '--socket', sup.socket]);
      return (JSON.parse(r.stdout) as { sessions: SessionStatus[] }).sessions.find((s) => s.name === 'warm');
    };
    const first = await waitUntil(async () => {
      const s = await session();
      return s?.state === 'owned' && s.standbys === 1 ? s : undefined;
    }, 'an owner and a waiting spare', 30_000, 50);
    assert.equal(first.generation, 1);
    assert.equal(daemonPids().length, 2);
    const ownerPid = first.owner!.pid;
    const sparePid = daemonPids().find((p) => p !== ownerPid)!;
    assert.ok(daemonPids().includes(ownerPid));
    assert.match(sup.stderr(), /"event":"mirrorfs.standby"/, 'the spare said it waits');
    assert.match(readFileSync(`/proc/${sparePid}/environ`, 'utf8'), /(^|\0)FUSEKEEPER_SPARE=1\0/, 'a daemon configured with a spare is told to prepare as one');

    const stop = join(dir, 'stop');
    reader = spawn(process.execPath, [HOLDER, join(mountpoint, 'data.bin'), stop], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    reader.stdout!.setEncoding('utf8').on('data', (c: string) => (out += c));
    reader.stderr!.setEncoding('utf8').on('data', (c: string) => (err += c));
    const readerExit = new Promise<number | null>((r) => reader!.once('exit', (code) => r(code)));
    await waitUntil(() => out.startsWith('open'), `the reader to open the file (stderr: ${err})`, 20_000);
    await sleep(100);

    const killedAt = Date.now();
    process.kill(ownerPid, 'SIGKILL');
    const recovered = await sup.waitEvent('session.recovered', (e) => e.session === 'warm');
    assert.equal(recovered.owner, sparePid, 'the spare took the session over');
    assert.equal(recovered.generation, 2);
    const tookMs = (recovered.time as number) - killedAt;
    // A new spare is started in the background and waits in turn.
    const second = await waitUntil(async () => {
      const s = await session();
      return s?.state === 'owned' && s.standbys === 1 && daemonPids().length === 3 ? s : undefined;
    }, 'a new spare', 30_000, 50);
    assert.equal(second.generation, 2);
    assert.equal(second.owner!.pid, sparePid);
    assert.equal(alive(ownerPid), false);

    // The session works for new opens (the spare adopted the reader's backing id) and the
    // reader saw no error.
    assert.ok((await fsp.readFile(join(mountpoint, 'data.bin'))).equals(content));
    writeFileSync(stop, '');
    assert.equal(await readerExit, 0, err);
    const result = JSON.parse(out.trim().split('\n').at(-1)!) as { reads: number; errors: number; firstError: string | null };
    assert.equal(result.errors, 0, result.firstError ?? '');
    assert.ok(result.reads > 0);
    const ev = sup.events();
    assert.equal(ev.filter((e) => e.event === 'daemon.exited').length, 1, 'only the killed owner exited');
    t.diagnostic(`kill -> session.recovered in the supervisor's log: ${tookMs} ms`);

    // Stopping the supervisor stops both daemons and releases the ownerless session.
    const pids = daemonPids();
    assert.deepEqual(await sup.stop(), { code: 0, signal: null }, sup.stderr());
    await waitUntil(() => pids.every((p) => !alive(p)), 'every daemon to be gone', 10_000);
    await waitUntil(() => findMount(mountpoint) === undefined, 'the mount to be gone', 5_000);
  } finally {
    if (reader && reader.exitCode === null) reader.kill('SIGKILL');
    await sup.cleanup();
    rmSync(dir, { recursive: true, force: true });
  }
});

// Found by bench/chaos.ts (stress-ng hdd: "fstat failed, errno=2"): a file unlinked while
// open has no path left, so a restarted daemon could neither reopen its handle nor stat it.
// The handle's file handle (name_to_handle_at, taken at open) leads back to it.
test('a file unlinked while open survives a daemon crash: fstat, read and write through the open fd work', async () => {
  const sup = await startSupervisor();
  const { dir, mountpoint } = sessionDir(sup.dir, 'unlinked');
  const source = join(dir, 'src');
  mkdirSync(source);
  const daemons: Awaited<ReturnType<typeof startSupervisedMirror>>[] = [];
  let app: ReturnType<typeof spawn> | undefined;
  try {
    daemons.push(await startSupervisedMirror({ source, mountpoint, socket: sup.socket }));
    const go = join(dir, 'go');
    const code = `
      const fs = require('fs');
      const [file, go] = process.argv.slice(1);
      const fd = fs.openSync(file, 'w+');
      fs.writeSync(fd, 'before the crash', 0);
      fs.unlinkSync(file);
      console.log('ready');
      const wait = () => {
        if (!fs.existsSync(go)) return setTimeout(wait, 10);
        const size = fs.fstatSync(fd).size;
        const buf = Buffer.alloc(64);
        const n = fs.readSync(fd, buf, 0, 64, 0);
        fs.writeSync(fd, ' and after', size);
        console.log(JSON.stringify({ size, read: buf.subarray(0, n).toString(), after: fs.fstatSync(fd).size }));
        fs.closeSync(fd);
      };
      wait();`;
    app = spawn(process.execPath, ['-e', code, join(mountpoint, 'gone.txt'), go], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    app.stdout!.setEncoding('utf8').on('data', (c: string) => (out += c));
    app.stderr!.setEncoding('utf8').on('data', (c: string) => (err += c));
    const exit = new Promise<number | null>((r) => app!.once('exit', (c) => r(c)));
    await waitUntil(() => out.includes('ready'), `the application to unlink its open file (${err})`);
    await daemons[0]!.kill('SIGKILL');
    daemons.push(await startSupervisedMirror({ source, mountpoint, socket: sup.socket }));
    writeFileSync(go, '');
    assert.equal(await exit, 0, err);
    assert.deepEqual(JSON.parse(out.trim().split('\n').at(-1)!), { size: 16, read: 'before the crash', after: 26 });
  } finally {
    if (app && app.exitCode === null) app.kill('SIGKILL');
    if (findMount(mountpoint)) await runCli(['release', sessionNameFromMountpoint(mountpoint), '--socket', sup.socket]);
    for (const d of daemons) await d.kill('SIGKILL');
    await sup.cleanup();
  }
});
