import { parseArgs, type ParseArgsConfig } from 'node:util';
import { readFileSync } from 'node:fs';
import { runDoctor, formatDoctorReport } from '../../kernel/doctor.ts';

/** One `fusekeeper` command: its usage line, summary, options and implementation. */
interface Command {
  usage: string;
  summary: string;
  options: NonNullable<ParseArgsConfig['options']>;
  optionHelp: string[];
  run(values: Record<string, unknown>, positionals: string[]): Promise<number>;
}

const commands: Record<string, Command> = {
  serve: {
    usage: 'fusekeeper serve',
    summary: 'run the supervisor (not yet available in this version)',
    options: {},
    optionHelp: [],
    async run() {
      process.stderr.write('fusekeeper serve: the supervisor is not yet available in this version; `fusekeeper doctor` is\n');
      return 1;
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
  const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string };
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
    process.stderr.write(`fusekeeper ${name}: ${e.message}${e.code ? ` [${e.code}]` : ''}\n`);
    return 1;
  }
}
