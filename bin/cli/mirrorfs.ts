import { parseArgs } from 'node:util';
import { runMirror, validateMirrorArgs, UsageError } from '../../examples/mirrorfs/run.ts';
import type { FuseLogger } from '../../client/fuse/server.ts';
import { isValidSessionName } from '../../protocol/names.ts';

const USAGE = `usage: fusekeeper-mirrorfs SOURCE MOUNTPOINT [options]

Mirrors the directory SOURCE read-write on MOUNTPOINT through FUSE, with kernel
passthrough for file data. Runs in the foreground.

Standalone (no --socket): mounts MOUNTPOINT itself; SIGINT/SIGTERM unmount and exit.

Supervised (--socket): the fusekeeper supervisor mounts MOUNTPOINT and keeps the
connection when this daemon dies; started again, the daemon resumes the session
(open files, including passthrough ones, keep working; requests in flight are
replayed). SIGINT/SIGTERM stop serving and exit WITHOUT unmounting: the mount
stays, waiting for the next daemon. Only \`fusekeeper release NAME\` unmounts.
On \`fusekeeper upgrade NAME\` the daemon finishes what it read and exits 0.

A warm standby (--standby) is a spare: it starts with its code compiled eagerly,
connects, runs a few read-only requests through its own code on a scratch mirror
of SOURCE, ten times (so that nothing is compiled for the first time after a
take-over), and waits until the session's owner dies, then takes the session over
at once (the supervisor runs the recovery sequence and answers its waiting
request). If the session does not exist yet, the first daemon to ask creates it,
standby or not.

options:
  --socket PATH      run supervised by the fusekeeper supervisor listening on PATH
                     (a socket path, or @NAME for an abstract socket)
  --name NAME        session name (supervised only); default: derived from
                     MOUNTPOINT, e.g. /mnt/data -> mnt-data
  --standby          supervised only: wait as a warm standby while the session has
                     a live owner, instead of failing with EBUSY
  --debug            print every request and reply, one line each (stderr)
  --no-passthrough   serve reads and writes through the daemon
  --metadata-on-main look up, stat and open SOURCE's files on the thread that
                     reads /dev/fuse instead of libuv's thread pool: each such
                     request is answered sooner, but they no longer run side by
                     side (slower under concurrent load; a slow SOURCE, such as a
                     network filesystem, holds up every other request)
  --allow-other      let users other than the mounting one use the mount
  --stats FILE       write the daemon's counters (JSON) to FILE on SIGUSR2 and at exit
  -h, --help         this text

environment (how \`fusekeeper serve\` starts the daemons of its configuration):
  FUSEKEEPER_SOCKET=PATH   as --socket, when --socket is not given
  FUSEKEEPER_SESSION=NAME  as --name, when --name is not given (supervised only)
  FUSEKEEPER_STANDBY=1     wait while the session has a live owner, instead of
                           failing with EBUSY (supervised only)
  FUSEKEEPER_SPARE=1       with FUSEKEEPER_STANDBY=1: as --standby (prepare for the
                           take-over first); set for daemons configured with a spare`;

function stderrLogger(): FuseLogger {
  const line = (level: string) => (obj: object, msg?: string) => {
    process.stderr.write(`mirrorfs ${level}: ${msg ?? ''} ${JSON.stringify(obj, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v))}\n`);
  };
  return { info: line('info'), warn: line('warn'), error: line('error') };
}

/** Runs `fusekeeper-mirrorfs` with `argv`; resolves to the exit status. */
export async function main(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        debug: { type: 'boolean' },
        'no-passthrough': { type: 'boolean' },
        'metadata-on-main': { type: 'boolean' },
        'allow-other': { type: 'boolean' },
        stats: { type: 'string' },
        socket: { type: 'string' },
        name: { type: 'string' },
        standby: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (err) {
    process.stderr.write(`fusekeeper-mirrorfs: ${(err as Error).message}\n${USAGE}\n`);
    return 2;
  }
  if (parsed.values.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  if (parsed.positionals.length !== 2) {
    process.stderr.write(`fusekeeper-mirrorfs: expected SOURCE and MOUNTPOINT\n${USAGE}\n`);
    return 2;
  }
  if (parsed.values.name !== undefined && parsed.values.socket === undefined && !process.env.FUSEKEEPER_SOCKET) {
    process.stderr.write(`fusekeeper-mirrorfs: --name needs --socket\n${USAGE}\n`);
    return 2;
  }
  if (parsed.values.standby && parsed.values.socket === undefined && !process.env.FUSEKEEPER_SOCKET) {
    process.stderr.write(`fusekeeper-mirrorfs: --standby needs --socket\n${USAGE}\n`);
    return 2;
  }
  // The supervisor's managed daemons get their socket, session and standby role by environment.
  const socket = parsed.values.socket ?? (process.env.FUSEKEEPER_SOCKET || undefined);
  const name = socket === undefined ? undefined : (parsed.values.name ?? (process.env.FUSEKEEPER_SESSION || undefined));
  const standby = socket !== undefined && (parsed.values.standby === true || process.env.FUSEKEEPER_STANDBY === '1');
  const spare = standby && (parsed.values.standby === true || process.env.FUSEKEEPER_SPARE === '1');
  if (name !== undefined && !isValidSessionName(name)) {
    process.stderr.write(`fusekeeper-mirrorfs: invalid session name ${JSON.stringify(name)}: 1..128 of [A-Za-z0-9_.@:-], starting with a letter or digit\n`);
    return 2;
  }
  try {
    const { source, mountpoint } = validateMirrorArgs(parsed.positionals[0]!, parsed.positionals[1]!, { supervised: socket !== undefined });
    return await runMirror({
      source,
      mountpoint,
      debug: parsed.values.debug ?? false,
      passthrough: !parsed.values['no-passthrough'],
      metadataCalls: parsed.values['metadata-on-main'] ? 'main' : 'pool',
      allowOther: parsed.values['allow-other'] ?? false,
      statsFile: parsed.values.stats,
      log: stderrLogger(),
      socket,
      name,
      standby,
      spare,
    });
  } catch (err) {
    const e = err as Error & { code?: string };
    process.stderr.write(`fusekeeper-mirrorfs: ${e.message}${e instanceof UsageError || !e.code ? '' : ` [${e.code}]`}\n`);
    return 1;
  }
}
