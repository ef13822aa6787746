import { readFileSync } from 'node:fs';
import { isAbsolute } from 'node:path';
import { NAME_PATTERN } from '../protocol/index.ts';

/** What to do when a managed daemon has crashed too often to restart. */
export type GiveUpPolicy = 'wait' | 'abort';

/** A daemon the supervisor starts and restarts itself. */
export interface ManagedDaemon {
  /** Session name the daemon acquires (passed as FUSEKEEPER_SESSION). */
  name: string;
  /** argv; the first element is an absolute path or a name on PATH. */
  command: string[];
  /** Extra environment. FUSEKEEPER_SOCKET and FUSEKEEPER_SESSION are always set. */
  env: Record<string, string>;
  /** First restart delay; doubles per consecutive crash up to `maxBackoffMs`. */
  backoffMs: number;
  maxBackoffMs: number;
  /** More than `crashLoopCount` crashes within `crashLoopWindowMs` stop the restarts. */
  crashLoopCount: number;
  crashLoopWindowMs: number;
  /** After giving up: keep the connection waiting for a daemon, or abort it (applications get ENOTCONN). */
  onGiveUp: GiveUpPolicy;
  /** Keep a spare process connected and idle that takes over at once on a crash. */
  standby: boolean;
}

/** Supervisor configuration. Every field has a default: no config file is needed. */
export interface SupervisorConfig {
  /** Control socket: a path, or `@name` in the abstract namespace. */
  socket: string;
  /** Uids besides a session's creator that may acquire it (root always may). */
  allowedUids: number[];
  allowedGids: number[];
  /** An owner that sent no heartbeat for this long counts as hung and is fenced on the next acquire. */
  heartbeatTimeoutMs: number;
  /** How long to wait for a fenced owner to exit after SIGKILL. */
  fenceTimeoutMs: number;
  /** How long an owner asked to drain (`fusekeeper upgrade`) may take before it is fenced. */
  drainTimeoutMs: number;
  /** How long a new owner may take to ADOPT before every inherited backing id is closed. */
  adoptTimeoutMs: number;
  /** `host:port` (loopback) for the Prometheus endpoint, or null. */
  metrics: string | null;
  /**
   * Listen to the kernel's process events to notice a killed owner when its threads exit,
   * before its fds close (docs/systemd.md). Read at start-up only.
   */
  exitEvents: boolean;
  /**
   * SCHED_FIFO priority (1-99) of the supervisor's main thread, or 0 for none (docs/systemd.md,
   * "The supervisor's CPU"). Read at start-up only.
   */
  realtimePriority: number;
  /**
   * How long after a hand-over the new owner's main thread keeps SCHED_FIFO at
   * realtimePriority, lent once the hand-over's last frame is sent; 0 lends none (docs/systemd.md,
   * "The new owner's first milliseconds").
   */
  takeoverRealtimeMs: number;
  daemons: ManagedDaemon[];
}

export const DEFAULT_SOCKET = '/run/fusekeeper/control.sock';

export const DEFAULT_CONFIG: Readonly<SupervisorConfig> = Object.freeze({
  socket: DEFAULT_SOCKET,
  allowedUids: [],
  allowedGids: [],
  heartbeatTimeoutMs: 15_000,
  fenceTimeoutMs: 5_000,
  drainTimeoutMs: 30_000,
  adoptTimeoutMs: 30_000,
  metrics: null,
  exitEvents: true,
  realtimePriority: 1,
  takeoverRealtimeMs: 30,
  daemons: [],
});

/** A configuration file that cannot be used; `message` says where and why. */
export class ConfigError extends Error {
  readonly code = 'ERR_CONFIG';
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

type Json = Record<string, unknown>;

function expect(cond: boolean, where: string, what: string): asserts cond {
  if (!cond) throw new ConfigError(`${where}: ${what}`);
}

function int(v: unknown, where: string, min: number, max = Number.MAX_SAFE_INTEGER): number {
  expect(Number.isInteger(v) && (v as number) >= min && (v as number) <= max, where, `expected an integer in ${min}..${max}, got ${JSON.stringify(v)}`);
  return v as number;
}

function intList(v: unknown, where: string): number[] {
  expect(Array.isArray(v), where, 'expected an array of integers');
  return (v as unknown[]).map((x, i) => int(x, `${where}[${i}]`, 0, 0xfffffffe));
}

function onlyKeys(obj: Json, allowed: string[], where: string): void {
  for (const k of Object.keys(obj)) expect(allowed.includes(k), where, `unknown key "${k}" (known: ${allowed.join(', ')})`);
}

function daemon(v: unknown, where: string): ManagedDaemon {
  expect(typeof v === 'object' && v !== null && !Array.isArray(v), where, 'expected an object');
  const o = v as Json;
  onlyKeys(o, ['name', 'command', 'env', 'backoffMs', 'maxBackoffMs', 'crashLoopCount', 'crashLoopWindowMs', 'onGiveUp', 'standby'], where);
  expect(typeof o.name === 'string' && NAME_PATTERN.test(o.name), `${where}.name`, 'expected a session name ([A-Za-z0-9][A-Za-z0-9_.@:-]{0,127})');
  expect(Array.isArray(o.command) && o.command.length > 0 && o.command.every((a) => typeof a === 'string'), `${where}.command`, 'expected a non-empty array of strings');
  const env = o.env ?? {};
  expect(typeof env === 'object' && env !== null && Object.values(env).every((x) => typeof x === 'string'), `${where}.env`, 'expected an object of strings');
  const onGiveUp = o.onGiveUp ?? 'wait';
  expect(onGiveUp === 'wait' || onGiveUp === 'abort', `${where}.onGiveUp`, 'expected "wait" or "abort"');
  const backoffMs = o.backoffMs === undefined ? 100 : int(o.backoffMs, `${where}.backoffMs`, 0);
  return {
    name: o.name as string,
    command: o.command as string[],
    env: env as Record<string, string>,
    backoffMs,
    maxBackoffMs: o.maxBackoffMs === undefined ? 10_000 : int(o.maxBackoffMs, `${where}.maxBackoffMs`, backoffMs),
    crashLoopCount: o.crashLoopCount === undefined ? 10 : int(o.crashLoopCount, `${where}.crashLoopCount`, 1),
    crashLoopWindowMs: o.crashLoopWindowMs === undefined ? 60_000 : int(o.crashLoopWindowMs, `${where}.crashLoopWindowMs`, 1),
    onGiveUp,
    standby: o.standby === undefined ? false : (expect(typeof o.standby === 'boolean', `${where}.standby`, 'expected true or false'), o.standby as boolean),
  };
}

/** Validates a parsed configuration object, filling defaults. Throws `ConfigError`. */
export function parseConfig(value: unknown, source = 'config'): SupervisorConfig {
  expect(typeof value === 'object' && value !== null && !Array.isArray(value), source, 'expected a JSON object');
  const o = value as Json;
  onlyKeys(o, ['socket', 'allowedUids', 'allowedGids', 'heartbeatTimeoutMs', 'fenceTimeoutMs', 'drainTimeoutMs', 'adoptTimeoutMs', 'metrics', 'exitEvents', 'realtimePriority', 'takeoverRealtimeMs', 'daemons'], source);
  const cfg: SupervisorConfig = { ...DEFAULT_CONFIG, allowedUids: [], allowedGids: [], daemons: [] };
  if (o.socket !== undefined) {
    expect(typeof o.socket === 'string' && (isAbsolute(o.socket) || (o.socket.startsWith('@') && o.socket.length > 1)), `${source}.socket`, 'expected an absolute path or @abstract-name');
    cfg.socket = o.socket;
  }
  if (o.allowedUids !== undefined) cfg.allowedUids = intList(o.allowedUids, `${source}.allowedUids`);
  if (o.allowedGids !== undefined) cfg.allowedGids = intList(o.allowedGids, `${source}.allowedGids`);
  if (o.heartbeatTimeoutMs !== undefined) cfg.heartbeatTimeoutMs = int(o.heartbeatTimeoutMs, `${source}.heartbeatTimeoutMs`, 100);
  if (o.fenceTimeoutMs !== undefined) cfg.fenceTimeoutMs = int(o.fenceTimeoutMs, `${source}.fenceTimeoutMs`, 10);
  if (o.drainTimeoutMs !== undefined) cfg.drainTimeoutMs = int(o.drainTimeoutMs, `${source}.drainTimeoutMs`, 10);
  if (o.adoptTimeoutMs !== undefined) cfg.adoptTimeoutMs = int(o.adoptTimeoutMs, `${source}.adoptTimeoutMs`, 10);
  if (o.exitEvents !== undefined) {
    expect(typeof o.exitEvents === 'boolean', `${source}.exitEvents`, 'expected true or false');
    cfg.exitEvents = o.exitEvents as boolean;
  }
  if (o.realtimePriority !== undefined) cfg.realtimePriority = int(o.realtimePriority, `${source}.realtimePriority`, 0, 99);
  if (o.takeoverRealtimeMs !== undefined) cfg.takeoverRealtimeMs = int(o.takeoverRealtimeMs, `${source}.takeoverRealtimeMs`, 0, 10_000);
  if (o.metrics !== undefined && o.metrics !== null) {
    expect(typeof o.metrics === 'string' && /^(127\.\d+\.\d+\.\d+|localhost|\[::1\]):\d{1,5}$/.test(o.metrics), `${source}.metrics`, 'expected a loopback host:port');
    cfg.metrics = o.metrics;
  }
  if (o.daemons !== undefined) {
    expect(Array.isArray(o.daemons), `${source}.daemons`, 'expected an array');
    cfg.daemons = (o.daemons as unknown[]).map((d, i) => daemon(d, `${source}.daemons[${i}]`));
    const names = new Set<string>();
    for (const d of cfg.daemons) {
      expect(!names.has(d.name), `${source}.daemons`, `session "${d.name}" is managed twice`);
      names.add(d.name);
    }
  }
  return cfg;
}

/** Reads and validates a JSON configuration file. Throws `ConfigError`. */
export function loadConfig(path: string): SupervisorConfig {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError(`cannot read ${path}: ${(err as Error).message}`);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new ConfigError(`${path}: not valid JSON: ${(err as Error).message}`);
  }
  return parseConfig(value, path);
}
