import { parseArgs } from 'node:util';
import { runMirror, validateMirrorArgs, UsageError } from '../../examples/mirrorfs/run.ts';
import type { FuseLogger } from '../../client/fuse/server.ts';

const USAGE = `usage: fusekeeper-mirrorfs SOURCE MOUNTPOINT [options]

Mirrors the directory SOURCE read-write on MOUNTPOINT through FUSE, with kernel
passthrough for file data. Runs in the foreground; SIGINT/SIGTERM unmount and exit.

options:
  --debug            print every request and reply, one line each (stderr)
  --no-passthrough   serve reads and writes through the daemon
  --allow-other      let users other than the mounting one use the mount
  --stats FILE       write the daemon's counters (JSON) to FILE on SIGUSR2 and at exit
  -h, --help         this text`;

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
        'allow-other': { type: 'boolean' },
        stats: { type: 'string' },
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
  try {
    const { source, mountpoint } = validateMirrorArgs(parsed.positionals[0]!, parsed.positionals[1]!);
    return await runMirror({
      source,
      mountpoint,
      debug: parsed.values.debug ?? false,
      passthrough: !parsed.values['no-passthrough'],
      allowOther: parsed.values['allow-other'] ?? false,
      statsFile: parsed.values.stats,
      log: stderrLogger(),
    });
  } catch (err) {
    const e = err as Error & { code?: string };
    process.stderr.write(`fusekeeper-mirrorfs: ${e.message}${e instanceof UsageError || !e.code ? '' : ` [${e.code}]`}\n`);
    return 1;
  }
}
