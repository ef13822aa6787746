// Optional Prometheus metrics (`fusekeeper serve --metrics 127.0.0.1:PORT`): a private
// prom-client registry served by a plain node:http server on a loopback address, GET /metrics
// only. Without --metrics the supervisor uses `noMetrics`, nothing is collected and
// prom-client is not even loaded (it adds about 13 MB to the process's RSS).
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { isIPv4 } from 'node:net';
import type { Registry } from 'prom-client';
import type { Logger } from './log.ts';

/** What the supervisor reports. Every method is cheap and never throws. */
export interface SupervisorMetrics {
  /** Sessions in the store. */
  setSessions(n: number): void;
  /** Sessions that currently have a connected owner. */
  setOwners(n: number): void;
  /** One finished recovery: the cleanup strategy it used, whether it succeeded, and how long it took. */
  recovery(strategy: 'close-all' | 'journal' | 'none', outcome: 'ok' | 'failed', durationSeconds: number): void;
  /** Backing ids adopted by a new owner, closed by cleanup, or found by probing above the journal (counters). */
  backingIds(kind: 'adopted' | 'closed' | 'probed', n: number): void;
  /** Backing ids currently journaled across all sessions. */
  setLiveBackingIds(n: number): void;
  /** An owner was fenced (killed and reaped) before recovery. */
  fencedOwner(): void;
  /** A peer was refused (`reason`: a short stable word such as `uid`, `busy`, `protocol`). */
  rejectedPeer(reason: string): void;
}

/** Metrics that go nowhere: the default when no metrics endpoint is configured. */
export const noMetrics: SupervisorMetrics = Object.freeze({
  setSessions() {},
  setOwners() {},
  recovery() {},
  backingIds() {},
  setLiveBackingIds() {},
  fencedOwner() {},
  rejectedPeer() {},
});

/** The metrics endpoint could not be started; `code` is stable. */
export class MetricsError extends Error {
  readonly code: 'ERR_METRICS_ADDRESS' | 'ERR_METRICS_LISTEN';
  /** The system error behind an `ERR_METRICS_LISTEN` (`EADDRINUSE`, `EACCES`, ...). */
  readonly errno: string | undefined;
  constructor(code: MetricsError['code'], message: string, errno?: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'MetricsError';
    this.code = code;
    this.errno = errno;
  }
}

/** Recovery duration buckets, seconds: 100 µs to 10 s. */
export const RECOVERY_BUCKETS: readonly number[] = [
  0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
];

/** A fresh private registry with every fusekeeper metric plus the default process metrics. */
export async function createMetrics(): Promise<{ registry: Registry; metrics: SupervisorMetrics }> {
  const { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } = await import('prom-client');
  const registry = new Registry();
  const registers = [registry];
  collectDefaultMetrics({ register: registry });
  const sessions = new Gauge({ name: 'fusekeeper_sessions', help: 'Sessions in the store', registers });
  const owners = new Gauge({ name: 'fusekeeper_owners', help: 'Sessions with a connected owner', registers });
  const recoveries = new Counter({
    name: 'fusekeeper_recoveries_total',
    help: 'Recoveries by backing-id cleanup strategy and outcome',
    labelNames: ['strategy', 'outcome'] as const,
    registers,
  });
  const recoveryDuration = new Histogram({
    name: 'fusekeeper_recovery_duration_seconds',
    help: 'Duration of a recovery, from the owner loss being handled to the hand-over',
    buckets: [...RECOVERY_BUCKETS],
    registers,
  });
  const backingIds = new Counter({
    name: 'fusekeeper_backing_ids_total',
    help: 'Backing ids adopted by a new owner, closed by cleanup, or found by probing',
    labelNames: ['kind'] as const,
    registers,
  });
  const liveBackingIds = new Gauge({ name: 'fusekeeper_backing_ids_live', help: 'Backing ids journaled across all sessions', registers });
  const fenced = new Counter({ name: 'fusekeeper_fenced_owners_total', help: 'Owners killed and reaped before a recovery', registers });
  const rejected = new Counter({
    name: 'fusekeeper_rejected_peers_total',
    help: 'Peers refused, by reason',
    labelNames: ['reason'] as const,
    registers,
  });
  // Zero series for the fixed label sets, so rates work from the first scrape.
  for (const strategy of ['close-all', 'journal', 'none']) for (const outcome of ['ok', 'failed']) recoveries.inc({ strategy, outcome }, 0);
  for (const kind of ['adopted', 'closed', 'probed']) backingIds.inc({ kind }, 0);

  const count = (n: number): number => (Number.isFinite(n) && n > 0 ? n : 0);
  const level = (n: number): number => (Number.isFinite(n) ? n : 0);
  const metrics: SupervisorMetrics = {
    setSessions: (n) => sessions.set(level(n)),
    setOwners: (n) => owners.set(level(n)),
    recovery(strategy, outcome, durationSeconds) {
      recoveries.inc({ strategy, outcome });
      if (Number.isFinite(durationSeconds) && durationSeconds >= 0) recoveryDuration.observe(durationSeconds);
    },
    backingIds: (kind, n) => backingIds.inc({ kind }, count(n)),
    setLiveBackingIds: (n) => liveBackingIds.set(level(n)),
    fencedOwner: () => fenced.inc(),
    rejectedPeer: (reason) => rejected.inc({ reason: reason || 'unknown' }),
  };
  return { registry, metrics };
}

/**
 * Parses a loopback `host:port` (`127.x.y.z:PORT`, `localhost:PORT`, `[::1]:PORT`; port 0
 * picks a free one) into what `listen()` takes. Throws `MetricsError` (`ERR_METRICS_ADDRESS`)
 * for anything else: the endpoint is unauthenticated and must not leave the machine.
 */
export function parseLoopbackAddress(listen: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]*)\]|([^:[\]]*)):(\d{1,5})$/.exec(listen);
  const bad = (why: string): never => {
    throw new MetricsError('ERR_METRICS_ADDRESS', `metrics address ${JSON.stringify(listen)}: ${why}`);
  };
  if (!m) return bad('expected HOST:PORT with a loopback host (127.0.0.1:9464, localhost:9464, [::1]:9464)');
  const port = Number(m[3]);
  if (port > 65535) bad(`port ${port} is out of range (0..65535)`);
  const v6 = m[1];
  const name = m[2] ?? '';
  if (v6 !== undefined) {
    if (v6 !== '::1') bad(`${v6} is not the loopback address; the metrics endpoint listens on loopback only`);
    return { host: '::1', port };
  }
  if (name === 'localhost') return { host: '127.0.0.1', port };
  if (isIPv4(name) && name.startsWith('127.')) return { host: name, port };
  return bad(`${name || '(empty host)'} is not a loopback address; the metrics endpoint listens on loopback only (127.0.0.0/8, localhost, [::1])`);
}

/**
 * Starts the metrics endpoint on a loopback `listen` address. Resolves once listening, with
 * the metrics to report into, the actual `host:port` (useful with port 0), and `close()`,
 * which stops the server, drops open connections and frees the port. Rejects with
 * `MetricsError`: `ERR_METRICS_ADDRESS` for a non-loopback or malformed address,
 * `ERR_METRICS_LISTEN` when the socket cannot be bound (`errno` `EADDRINUSE`, ...).
 */
export async function startMetricsServer(
  listen: string,
  log: Logger,
): Promise<{ metrics: SupervisorMetrics; address: string; close(): Promise<void> }> {
  const { host, port } = parseLoopbackAddress(listen);
  // Created once listening: a failed start leaves no collector (GC observer, loop monitor) behind.
  let registry: Registry | null = null;

  const handle = (req: IncomingMessage, res: ServerResponse): void => {
    const path = (req.url ?? '/').split('?')[0];
    if (path !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' }).end('not found: only GET /metrics is served\n');
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { 'content-type': 'text/plain; charset=utf-8', allow: 'GET, HEAD' }).end('method not allowed\n');
      return;
    }
    const reg = registry;
    if (reg === null) {
      res.writeHead(503, { 'content-type': 'text/plain; charset=utf-8' }).end('metrics not ready\n');
      return;
    }
    reg.metrics().then(
      (body) => {
        res.writeHead(200, { 'content-type': reg.contentType });
        res.end(req.method === 'HEAD' ? undefined : body);
      },
      (err: unknown) => {
        log.warn({ event: 'metrics_collect_failed', err }, 'collecting metrics failed');
        res.writeHead(500, { 'content-type': 'text/plain; charset=utf-8' }).end('collecting metrics failed\n');
      },
    );
  };
  const server = createServer(handle);
  server.keepAliveTimeout = 5_000;

  await new Promise<void>((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException): void => {
      const errno = err.code ?? 'EIO';
      const why =
        errno === 'EADDRINUSE'
          ? 'the address is already in use (EADDRINUSE): another process listens on it; pick another port or stop that process'
          : errno === 'EADDRNOTAVAIL'
            ? 'no such local address (EADDRNOTAVAIL)'
            : errno === 'EACCES'
              ? 'permission denied (EACCES)'
              : `${errno}: ${err.message}`;
      reject(new MetricsError('ERR_METRICS_LISTEN', `metrics endpoint cannot listen on ${listen}: ${why}`, errno, { cause: err }));
    };
    server.once('error', onError);
    server.listen({ host, port, exclusive: true }, () => {
      server.off('error', onError);
      resolve();
    });
  });
  server.on('error', (err) => log.error({ event: 'metrics_server_error', err }, 'metrics server error'));
  const created = await createMetrics();
  registry = created.registry;

  const bound = server.address();
  const actualPort = bound !== null && typeof bound === 'object' ? bound.port : port;
  const address = host.includes(':') ? `[${host}]:${actualPort}` : `${host}:${actualPort}`;
  log.info({ event: 'metrics_listening', address }, `metrics on http://${address}/metrics`);

  let closing: Promise<void> | null = null;
  const close = (): Promise<void> => {
    closing ??= new Promise<void>((resolve) => {
      server.close(() => {
        created.registry.clear();
        log.info({ event: 'metrics_closed', address }, 'metrics endpoint closed');
        resolve();
      });
      server.closeAllConnections();
    });
    return closing;
  };
  return { metrics: created.metrics, address, close };
}
