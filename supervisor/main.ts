// `fusekeeper serve`: the supervisor process. Probes the kernel once, binds the control
// socket, starts managed daemons and the optional metrics endpoint, and stops cleanly on
// SIGINT/SIGTERM. Errors inside are logged and never end the process.
import { runDoctor } from '../kernel/doctor.ts';
import { createLogger, type Logger } from './log.ts';
import { DEFAULT_CONFIG, loadConfig, type SupervisorConfig } from './config.ts';
import { Supervisor, type KernelCaps } from './server.ts';
import { DaemonManager } from './daemons.ts';
import { noMetrics, startMetricsServer } from './metrics.ts';
import { ServiceIntegration } from './service.ts';
import { startRealtime } from './realtime.ts';

export interface ServeOptions {
  configFile?: string;
  /** Overrides the configuration's socket. */
  socket?: string;
  /** Overrides the configuration's metrics address. */
  metrics?: string;
  version: string;
  log?: Logger;
}

/** Builds the configuration from defaults, an optional file and command-line overrides. */
export function resolveConfig(opts: Pick<ServeOptions, 'configFile' | 'socket' | 'metrics'>): SupervisorConfig {
  const base: SupervisorConfig = opts.configFile ? loadConfig(opts.configFile) : { ...DEFAULT_CONFIG, allowedUids: [], allowedGids: [], daemons: [] };
  if (opts.socket) base.socket = opts.socket;
  if (opts.metrics) base.metrics = opts.metrics;
  return base;
}

/** Asks the kernel what it can do, by trying it (a throwaway mount; see `fusekeeper doctor`). */
export async function probeKernel(): Promise<{ caps: KernelCaps; problems: string[] }> {
  const report = await runDoctor();
  return {
    caps: { passthrough: report.fuse.passthrough, resend: report.fuse.resend, closeAll: report.fuse.closeAll },
    problems: report.problems.filter((p) => p.severity === 'error').map((p) => `${p.code}: ${p.message}`),
  };
}

/** Runs until SIGINT/SIGTERM; resolves with the exit status. */
export async function serve(opts: ServeOptions): Promise<number> {
  const config = resolveConfig(opts);
  const log = opts.log ?? createLogger();
  // First: take the fds systemd passed (and clear LISTEN_* before anything spawns children).
  const service = new ServiceIntegration({ log });
  const realtime = startRealtime(config.realtimePriority, log);
  const { caps, problems } = await probeKernel();
  if (problems.length > 0) {
    for (const p of problems) log.error({ event: 'supervisor.kernel_problem' }, p);
    if (problems.some((p) => p.startsWith('NO_CAP_SYS_ADMIN') || p.startsWith('NO_DEV_FUSE'))) {
      throw Object.assign(new Error(`cannot supervise FUSE here: ${problems.join('; ')}`), { code: 'ERR_KERNEL' });
    }
  }
  const metricsServer = config.metrics ? await startMetricsServer(config.metrics, log) : null;
  const supervisor = new Supervisor({ config, kernel: caps, version: opts.version, log, metrics: metricsServer?.metrics ?? noMetrics, realtime });
  service.attach(supervisor);
  supervisor.start(service.controlFd());
  const daemons = new DaemonManager(config.socket, config.daemons, log, (d) => {
    if (d.onGiveUp === 'abort') supervisor.abortSession(d.name, `daemon crashed more than ${d.crashLoopCount} times in ${d.crashLoopWindowMs} ms`);
  });
  daemons.start();
  if (metricsServer) log.info({ event: 'metrics.listening', address: metricsServer.address }, `metrics on http://${metricsServer.address}/metrics`);
  const onFault = (err: unknown): void => {
    log.error({ event: 'supervisor.internal_error', err: err instanceof Error ? err.stack : String(err) }, 'internal error; still serving');
  };
  process.on('uncaughtException', onFault);
  process.on('unhandledRejection', onFault);
  const onHangup = (): void => reload(supervisor, opts, service, log);
  process.on('SIGHUP', onHangup);
  // SIGUSR2 (`systemctl kill -s SIGUSR2 fusekeeper`): a planned restart, e.g. after an upgrade.
  // Exits at once without releasing anything, exactly like a crash but with the state saved;
  // systemd (Restart=always) starts the new binary, which takes the fds back from the store
  // (a `systemctl restart` is a stop, and systemd 252 empties the fd store on a stop).
  const onRestart = (): void => {
    if (!service.notifier.enabled || !service.state) {
      log.warn({ event: 'supervisor.restart_refused' }, 'SIGUSR2 restarts only under systemd with an fd store and a state directory; ignoring it');
      return;
    }
    log.info({ event: 'supervisor.restarting' }, 'SIGUSR2: exiting for a restart; sessions stay mounted, their fds stay in the fd store');
    service.restarting();
    process.exit(0);
  };
  process.on('SIGUSR2', onRestart);
  service.ready();
  const signal = await new Promise<NodeJS.Signals>((resolve) => {
    process.once('SIGINT', () => resolve('SIGINT'));
    process.once('SIGTERM', () => resolve('SIGTERM'));
  });
  log.info({ event: 'supervisor.stopping', signal }, `stopping on ${signal}`);
  service.stopping();
  process.off('SIGHUP', onHangup);
  process.off('SIGUSR2', onRestart);
  await daemons.stop();
  supervisor.stop();
  realtime.stop();
  service.close();
  await metricsServer?.close();
  process.off('uncaughtException', onFault);
  process.off('unhandledRejection', onFault);
  return 0;
}

/**
 * SIGHUP (`systemctl reload fusekeeper`): re-reads the configuration file and applies what can
 * change while serving: allowed uids/gids, the timeouts and takeoverRealtimeMs. The socket,
 * metrics address, managed daemons, exit events and real-time priority need a restart; a
 * change to them is logged.
 */
function reload(supervisor: Supervisor, opts: ServeOptions, service: ServiceIntegration, log: Logger): void {
  service.reloading();
  try {
    const next = resolveConfig(opts);
    const cfg = supervisor.config;
    cfg.allowedUids = next.allowedUids;
    cfg.allowedGids = next.allowedGids;
    cfg.heartbeatTimeoutMs = next.heartbeatTimeoutMs;
    cfg.fenceTimeoutMs = next.fenceTimeoutMs;
    cfg.drainTimeoutMs = next.drainTimeoutMs;
    cfg.adoptTimeoutMs = next.adoptTimeoutMs;
    cfg.takeoverRealtimeMs = next.takeoverRealtimeMs;
    const fixed: string[] = (['socket', 'metrics', 'exitEvents', 'realtimePriority'] as const).filter((k) => next[k] !== cfg[k]);
    if (JSON.stringify(next.daemons) !== JSON.stringify(cfg.daemons)) fixed.push('daemons');
    log.info({ event: 'supervisor.reloaded', needsRestart: fixed }, fixed.length ? `configuration reloaded; ${fixed.join(', ')} change only with a restart` : 'configuration reloaded');
  } catch (err) {
    log.error({ event: 'supervisor.reload_failed', err: (err as Error).message }, `configuration not reloaded: ${(err as Error).message}`);
  }
  service.reloaded();
}
