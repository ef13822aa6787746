import { parseArgs, type ParseArgsConfig } from 'node:util';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { runDoctor, formatDoctorReport } from '../../kernel/doctor.ts';
import { DEFAULT_SOCKET } from '../../supervisor/config.ts';
import { serve } from '../../supervisor/main.ts';
import type { SessionStatus } from '../../supervisor/session.ts';
import { connectSupervisor, type SupervisorClient } from '../../client/supervisor.ts';
import { runDemo, DEMO_HELP } from './demo.ts';
import { packageRoot } from './package-root.ts';

async function sessionStatus(client: SupervisorClient, name: string): Promise<SessionStatus> {
  const st = (await client.status()) as { sessions: SessionStatus[] };
  const s = st.sessions.find((x) => x.name === name);
  if (!s) throw Object.assign(new Error(`no session named ${name}`), { code: 'ENOENT' });
  return s;
}

/** One `fusekeeper` command: its usage line, summary, options and implementation. */
interface Command {
  usage: string;
  summary: string;
  options: NonNullable<ParseArgsConfig['options']>;
  optionHelp: string[];
  run(values: Record<string, unknown>, positionals: string[]): Promise<number>;
}

const SOCKET_HELP = `--socket PATH   the control socket (default $FUSEKEEPER_SOCKET or ${DEFAULT_SOCKET}; @name for abstract)`;

function socketOf(values: Record<string, unknown>): string {
  return (values.socket as string | undefined) ?? process.env.FUSEKEEPER_SOCKET ?? DEFAULT_SOCKET;
}

async function cliClient(values: Record<string, unknown>): Promise<SupervisorClient> {
  const socket = socketOf(values);
  try {
    return await connectSupervisor({ socket, role: 'cli', clientName: `fusekeeper ${process.argv[2] ?? ''}`.trim(), reconnect: false, heartbeatMs: 0 });
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === 'ENOENT' || code === 'ECONNREFUSED') throw Object.assign(new Error(`no supervisor is listening on ${socket} (start one with \`fusekeeper serve\`)`), { code });
    throw err;
  }
}

function oneName(positionals: string[], usage: string): string {
  if (positionals.length !== 1) throw Object.assign(new Error(`expected one session NAME\nusage: ${usage}`), { code: 'EUSAGE' });
  return positionals[0]!;
}

function ago(iso: string | undefined): string {
  if (!iso) return '-';
  const s = Math.round((Date.now() - Date.parse(iso)) / 1000);
  return s < 120 ? `${s}s ago` : s < 7200 ? `${Math.round(s / 60)}m ago` : `${Math.round(s / 3600)}h ago`;
}

/** The status table: one line per session. */
export function formatStatus(st: { supervisor: Record<string, unknown>; sessions: SessionStatus[] }): string {
  const head = `supervisor ${String(st.supervisor.version)} on ${String(st.supervisor.socket)}, strategy ${String(st.supervisor.strategy)}, ${st.sessions.length} session(s)`;
  if (st.sessions.length === 0) return head;
  const rows = st.sessions.map((s) => [
    s.name,
    s.mountpoint,
    s.state,
    s.owner ? `${s.owner.pid}${s.owner.connected ? '' : ' (gone)'}` : '-',
    String(s.generation),
    String(s.restarts),
    s.strategy,
    String(s.liveBackingIds),
    s.lastRecovery ? `${ago(s.lastRecovery.at)}, ${(s.lastRecovery.durationUs / 1000).toFixed(2)} ms, probed ${s.lastRecovery.cleanup.probed} closed ${s.lastRecovery.cleanup.closed}${s.lastRecovery.fenced ? ', fenced' : ''}` : '-',
  ]);
  const header = ['NAME', 'MOUNTPOINT', 'STATE', 'OWNER', 'GEN', 'RESTARTS', 'STRATEGY', 'BACKING', 'LAST RECOVERY'];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (r: string[]) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ');
  return [head, '', line(header), ...rows.map(line)].join('\n');
}

const commands: Record<string, Command> = {
  serve: {
    usage: 'fusekeeper serve [--socket PATH] [--config FILE] [--metrics HOST:PORT]',
    summary: 'run the supervisor (needs root; no config file needed)',
    options: { socket: { type: 'string' }, config: { type: 'string' }, metrics: { type: 'string' } },
    optionHelp: [SOCKET_HELP, '--config FILE   JSON configuration (managed daemons, allowed uids/gids, timeouts, real-time priority)', '--metrics H:P   serve Prometheus metrics on a loopback address, e.g. 127.0.0.1:9464'],
    async run(values, positionals) {
      if (positionals.length > 0) throw Object.assign(new Error(`unexpected argument ${positionals[0]}`), { code: 'EUSAGE' });
      return serve({ socket: values.socket as string | undefined ?? process.env.FUSEKEEPER_SOCKET, configFile: values.config as string | undefined, metrics: values.metrics as string | undefined, version: version() });
    },
  },
  status: {
    usage: 'fusekeeper status [--json] [--socket PATH]',
    summary: 'sessions, owners, generations, restarts, backing ids, last recovery',
    options: { json: { type: 'boolean' }, socket: { type: 'string' } },
    optionHelp: ['--json          print the stable JSON instead of the table', SOCKET_HELP],
    async run(values) {
      const client = await cliClient(values);
      try {
        const st = (await client.status()) as { supervisor: Record<string, unknown>; sessions: SessionStatus[] };
        process.stdout.write(values.json ? `${JSON.stringify(st, null, 2)}\n` : `${formatStatus(st)}\n`);
        return 0;
      } finally {
        client.close();
      }
    },
  },
  release: {
    usage: 'fusekeeper release NAME [--socket PATH]',
    summary: 'unmount session NAME and forget it (the only way a supervised mount goes away)',
    options: { socket: { type: 'string' } },
    optionHelp: [SOCKET_HELP],
    async run(values, positionals) {
      const name = oneName(positionals, 'fusekeeper release NAME');
      const client = await cliClient(values);
      try {
        await client.release(name);
        process.stdout.write(`released ${name}\n`);
        return 0;
      } finally {
        client.close();
      }
    },
  },
  upgrade: {
    usage: 'fusekeeper upgrade NAME [--timeout SECONDS] [--socket PATH]',
    summary: 'planned hand-over: the owner of NAME drains and exits, the next daemon takes over',
    options: { socket: { type: 'string' }, timeout: { type: 'string' } },
    optionHelp: ['--timeout S     how long to wait for the new owner (default 60)', SOCKET_HELP],
    async run(values, positionals) {
      const name = oneName(positionals, 'fusekeeper upgrade NAME');
      const timeoutS = Number(values.timeout ?? 60);
      if (!(timeoutS > 0)) throw Object.assign(new Error(`--timeout must be a positive number of seconds, got ${String(values.timeout)}`), { code: 'EUSAGE' });
      const client = await cliClient(values);
      try {
        const before = await sessionStatus(client, name);
        process.stdout.write(`draining ${name} (owner ${before.owner?.pid ?? 'none'}, generation ${before.generation})...\n`);
        await client.drain(name);
        const started = Date.now();
        for (;;) {
          const now = await sessionStatus(client, name);
          if (now.generation > before.generation && now.state === 'owned') {
            process.stdout.write(`${name}: generation ${now.generation} served by ${now.owner?.pid} after ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
            return 0;
          }
          if (Date.now() - started > timeoutS * 1000) {
            process.stderr.write(`fusekeeper upgrade: the old owner drained, but no new daemon acquired ${name} within ${timeoutS} s; requests wait in the kernel until one does\n`);
            return 1;
          }
          if (process.stderr.isTTY) process.stderr.write(`\rwaiting for a new owner of ${name}... ${Math.round((Date.now() - started) / 1000)} s`);
          await new Promise((r) => setTimeout(r, 100));
        }
      } finally {
        client.close();
      }
    },
  },
  demo: {
    usage: 'fusekeeper demo [--crashes N]',
    summary: 'a self-contained tour as root: a supervised mirrorfs, a reader, N daemon crashes, a table',
    options: { crashes: { type: 'string' } },
    optionHelp: ['--crashes N     how many times to SIGKILL the serving daemon (default 5, 1..100)', '', ...DEMO_HELP],
    async run(values, positionals) {
      if (positionals.length > 0) throw Object.assign(new Error(`unexpected argument ${positionals[0]}`), { code: 'EUSAGE' });
      const crashes = Number(values.crashes ?? 5);
      if (!Number.isInteger(crashes) || crashes < 1 || crashes > 100) throw Object.assign(new Error(`--crashes must be an integer in 1..100, got ${String(values.crashes)}`), { code: 'EUSAGE' });
      return runDemo({ crashes, out: process.stdout });
    },
  },
  doctor: {
    usage: 'fusekeeper doctor [--json]',
    summary: 'probe this machine: FUSE protocol, passthrough, resend, CLOSE_ALL, cleanup strategy',
    options: { json: { type: 'boolean' } },
    optionHelp: ['--json   print the stable JSON report instead of the table'],
    async run(values) {
      const report = await runDoctor();
      process.stdout.write(values.json ? `${JSON.stringify(report, null, 2)}\n` : `${formatDoctorReport(report)}\n`);
      return report.problems.some((p) => p.severity === 'error') ? 1 : 0;
    },
  },
};

function version(): string {
  const pkg = JSON.parse(readFileSync(join(packageRoot(), 'package.json'), 'utf8')) as { version: string };
  return pkg.version;
}

function help(): string {
  const width = Math.max(...Object.values(commands).map((c) => c.usage.length));
  return [
    'fusekeeper - keeps FUSE filesystems alive across daemon crashes',
    '',
    'usage:',
    ...Object.values(commands).map((c) => `  ${c.usage.padEnd(width)}  ${c.summary}`),
    '  fusekeeper help [COMMAND]',
    '  fusekeeper --version',
  ].join('\n');
}

function commandHelp(name: string, c: Command): string {
  return [`usage: ${c.usage}`, '', c.summary, ...(c.optionHelp.length ? ['', 'options:', ...c.optionHelp.map((o) => `  ${o}`)] : [])].join('\n');
}

/** Runs the CLI with `argv` (without node and script); resolves to the exit status. */
export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === 'help' || name === '--help' || name === '-h') {
    const topic = name === 'help' ? rest[0] : undefined;
    const c = topic ? commands[topic] : undefined;
    if (topic && !c) {
      process.stderr.write(`fusekeeper: unknown command "${topic}"\n${help()}\n`);
      return 2;
    }
    process.stdout.write(`${c ? commandHelp(topic!, c) : help()}\n`);
    return name === undefined ? 2 : 0;
  }
  if (name === '--version' || name === '-V') {
    process.stdout.write(`${version()}\n`);
    return 0;
  }
  const command = commands[name];
  if (!command) {
    process.stderr.write(`fusekeeper: unknown command "${name}"\n${help()}\n`);
    return 2;
  }
  let parsed;
  try {
    parsed = parseArgs({ args: rest, options: { ...command.options, help: { type: 'boolean', short: 'h' } }, allowPositionals: true, strict: true });
  } catch (err) {
    process.stderr.write(`fusekeeper ${name}: ${(err as Error).message}\n${commandHelp(name, command)}\n`);
    return 2;
  }
  if (parsed.values.help) {
    process.stdout.write(`${commandHelp(name, command)}\n`);
    return 0;
  }
  try {
    return await command.run(parsed.values, parsed.positionals);
  } catch (err) {
    const e = err as Error & { code?: string };
    process.stderr.write(`fusekeeper ${name}: ${e.message}${e.code && e.code !== 'EUSAGE' ? ` [${e.code}]` : ''}\n`);
    return e.code === 'EUSAGE' ? 2 : 1;
  }
}
