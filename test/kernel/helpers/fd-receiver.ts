// Child process for native.test.ts: connects to the SEQPACKET address in argv[2], receives
// one message with fds, uses them as told by the message text, reports back, and exits.
//   "read"    : read the attached regular file, reply with its content
//   "backing" : attached /dev/fuse fd (mounted, passthrough) + a regular file: backingOpen,
//               backingClose, reply "id=<n>"
import { readSync } from 'node:fs';
import { createSocket, connectSocket, receiveMessage, sendMessage, closeAll } from '../../../native/index.ts';
import { waitReadable } from '../../../kernel/handshake.ts';
import { backingOpen, backingClose } from '../../../kernel/backing.ts';

const sock = createSocket('seqpacket');
connectSocket(sock, process.argv[2]!);
await waitReadable(sock, 10_000);
const msg = receiveMessage(sock, { maxBytes: 4096, maxFds: 2 });
if (msg.kind !== 'message') throw new Error(`expected a message, got ${msg.kind}`);
let answer: string;
const verb = msg.data.toString();
if (verb === 'read') {
  const buf = Buffer.alloc(4096);
  const n = readSync(msg.fds[0]!, buf, 0, buf.length, 0);
  answer = buf.subarray(0, n).toString();
} else if (verb === 'backing') {
  const id = backingOpen(msg.fds[0]!, msg.fds[1]!);
  backingClose(msg.fds[0]!, id);
  answer = `id=${id}`;
} else {
  answer = `unknown verb ${verb}`;
}
closeAll(msg.fds);
sendMessage(sock, { data: Buffer.from(answer), fds: [] });
