// The owner bench/handover.ts kills: acquires a fresh session through the SDK, answers
// FUSE_INIT with passthrough, registers backing files 0..COUNT-1 of DIR as backing ids and
// journals each (a real JOURNAL_OPEN per id, as a daemon does before its OPEN reply), prints
// "ready" and sleeps until killed.
//   argv: SOCKET NAME MOUNTSPEC_JSON DIR COUNT
import { openSync, closeSync, fstatSync } from 'node:fs';
import { join } from 'node:path';
import { connectSupervisor } from '../../client/supervisor.ts';
import { answerInit } from '../../kernel/handshake.ts';
import { backingOpen } from '../../kernel/backing.ts';
import { InitFlags } from '../../kernel/abi.ts';
import type { MountSpec } from '../../protocol/index.ts';

const [socket, name, specJson, dir, count] = process.argv.slice(2);
const client = await connectSupervisor({ socket: socket!, clientName: 'handover-bench owner', heartbeatMs: 0, reconnect: false });
const session = await client.acquire(name!, JSON.parse(specJson!) as MountSpec);
const agreed = await answerInit(session.fd, InitFlags.INIT_EXT | InitFlags.PASSTHROUGH);
session.saveInit(Buffer.from(`minor=${agreed.minor};flags=${agreed.flags.toString(16)}`));
for (let i = 0; i < Number(count); i++) {
  const fd = openSync(join(dir!, String(i)), 'r');
  const id = backingOpen(session.fd, fd);
  const st = fstatSync(fd, { bigint: true });
  session.journalOpen(id, st.dev, st.ino);
  closeSync(fd);
}
session.checkpointPut('nodes', Buffer.alloc(4096, 1));
process.stdout.write('ready\n');
setInterval(() => {}, 1 << 30);
