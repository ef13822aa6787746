// `fusekeeper serve`: the supervisor process. Probes the kernel once, binds the control
// socket, starts managed daemons and the optional metrics endpoint, and stops cleanly on
// SIGINT/SIGTERM. Errors inside are logged and never end the process.
import { runDoctor } from '../kernel/doctor.ts';
import { createLogger, type Logger } from './log.ts';
import { DEFAULT_CONFIG, loadConfig, type SupervisorConfig } from './config.ts';
import { Supervisor, type KernelCaps } from './server.ts';
import { DaemonManager } from './daemons.ts';
import { noMetrics, startMetricsServer } from './metrics.ts';

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
  const { caps, problems } = await probeKernel();
  if (problems.length > 0) {
    for (const p of problems) log.error({ event: 'supervisor.kernel_problem' }, p);
    if (problems.some((p) => p.startsWith('NO_CAP_SYS_ADMIN') || p.startsWith('NO_DEV_FUSE'))) {
      throw Object.assign(new Error(`cannot supervise FUSE here: ${problems.join('; ')}`), { code: 'ERR_KERNEL' });
    }
  }
  const metricsServer = config.metrics ? await startMetricsServer(config.metrics, log) : null;
  const supervisor = new Supervisor({ config, kernel: caps, version: opts.version, log, metrics: metricsServer?.metrics ?? noMetrics });
  supervisor.start();
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
  const signal = await new Promise<NodeJS.Signals>((resolve) => {
    process.once('SIGINT', () => resolve('SIGINT'));
    process.once('SIGTERM', () => resolve('SIGTERM'));
  });
  log.info({ event: 'supervisor.stopping', signal }, `stopping on ${signal}`);
  await daemons.stop();
  supervisor.stop();
  await metricsServer?.close();
  process.off('uncaughtException', onFault);
  process.off('unhandledRejection', onFault);
  return 0;
}
