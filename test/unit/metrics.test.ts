import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { startMetricsServer, noMetrics, parseLoopbackAddress, MetricsError } from '../../supervisor/metrics.ts';
import { silentLogger } from '../../supervisor/log.ts';

const log = silentLogger();

/** The value of the sample line `series` (name plus labels exactly as printed), or undefined. */
function sample(body: string, series: string): number | undefined {
  const line = body.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

test('metrics endpoint: every metric shows up on GET /metrics, other paths are 404', async () => {
  const srv = await startMetricsServer('127.0.0.1:0', log);
  try {
    assert.match(srv.address, /^127\.0\.0\.1:\d+$/);
    assert.notEqual(srv.address, '127.0.0.1:0');
    const m = srv.metrics;
    m.setSessions(3);
    m.setOwners(2);
    m.recovery('journal', 'ok', 0.0003);
    m.recovery('journal', 'ok', 0.02);
    m.recovery('close-all', 'failed', 12);
    m.backingIds('adopted', 5);
    m.backingIds('closed', 2);
    m.backingIds('closed', 1);
    m.backingIds('probed', 4);
    m.setLiveBackingIds(7);
    m.fencedOwner();
    m.fencedOwner();
    m.rejectedPeer('uid');
    m.rejectedPeer('busy');
    m.rejectedPeer('uid');

    const res = await fetch(`http://${srv.address}/metrics`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
    const body = await res.text();
    assert.match(body, /^# HELP fusekeeper_sessions /m);
    assert.match(body, /^# TYPE fusekeeper_recovery_duration_seconds histogram$/m);
    assert.equal(sample(body, 'fusekeeper_sessions'), 3);
    assert.equal(sample(body, 'fusekeeper_owners'), 2);
    assert.equal(sample(body, 'fusekeeper_recoveries_total{strategy="journal",outcome="ok"}'), 2);
    assert.equal(sample(body, 'fusekeeper_recoveries_total{strategy="close-all",outcome="failed"}'), 1);
    assert.equal(sample(body, 'fusekeeper_recoveries_total{strategy="none",outcome="ok"}'), 0);
    // Buckets from 100 µs to 10 s; 12 s lands only in +Inf.
    assert.equal(sample(body, 'fusekeeper_recovery_duration_seconds_bucket{le="0.0001"}'), 0);
    assert.equal(sample(body, 'fusekeeper_recovery_duration_seconds_bucket{le="0.0005"}'), 1);
    assert.equal(sample(body, 'fusekeeper_recovery_duration_seconds_bucket{le="0.025"}'), 2);
    assert.equal(sample(body, 'fusekeeper_recovery_duration_seconds_bucket{le="10"}'), 2);
    assert.equal(sample(body, 'fusekeeper_recovery_duration_seconds_bucket{le="+Inf"}'), 3);
    assert.equal(sample(body, 'fusekeeper_recovery_duration_seconds_count'), 3);
    assert.ok(Math.abs(sample(body, 'fusekeeper_recovery_duration_seconds_sum')! - 12.0203) < 1e-9);
    const buckets = [...body.matchAll(/^fusekeeper_recovery_duration_seconds_bucket\{le="([^"]+)"\}/gm)].map((x) => x[1]);
    assert.equal(buckets[0], '0.0001');
    assert.equal(buckets.at(-2), '10');
    assert.equal(sample(body, 'fusekeeper_backing_ids_total{kind="adopted"}'), 5);
    assert.equal(sample(body, 'fusekeeper_backing_ids_total{kind="closed"}'), 3);
    assert.equal(sample(body, 'fusekeeper_backing_ids_total{kind="probed"}'), 4);
    assert.equal(sample(body, 'fusekeeper_backing_ids_live'), 7);
    assert.equal(sample(body, 'fusekeeper_fenced_owners_total'), 2);
    assert.equal(sample(body, 'fusekeeper_rejected_peers_total{reason="uid"}'), 2);
    assert.equal(sample(body, 'fusekeeper_rejected_peers_total{reason="busy"}'), 1);
    // prom-client's default process metrics, unprefixed.
    assert.match(body, /^process_cpu_user_seconds_total /m);
    assert.match(body, /^nodejs_heap_size_used_bytes /m);

    for (const path of ['/', '/metrics/', '/other', '/favicon.ico']) {
      const r = await fetch(`http://${srv.address}${path}`);
      assert.equal(r.status, 404, path);
      await r.text();
    }
    const post = await fetch(`http://${srv.address}/metrics`, { method: 'POST' });
    assert.equal(post.status, 405);
    await post.text();
  } finally {
    await srv.close();
  }
});

test('metrics endpoint: a private registry per server', async () => {
  const a = await startMetricsServer('127.0.0.1:0', log);
  const b = await startMetricsServer('localhost:0', log);
  try {
    a.metrics.setSessions(11);
    b.metrics.setSessions(22);
    assert.equal(sample(await (await fetch(`http://${a.address}/metrics`)).text(), 'fusekeeper_sessions'), 11);
    assert.equal(sample(await (await fetch(`http://${b.address}/metrics`)).text(), 'fusekeeper_sessions'), 22);
  } finally {
    await Promise.all([a.close(), b.close()]);
  }
});

test('metrics endpoint: non-loopback and malformed addresses are refused', async () => {
  for (const addr of ['0.0.0.0:9464', '192.168.1.10:9464', '[::]:9464', '[fe80::1]:9464', 'example.com:9464', ':9464', '127.0.0.1', '127.0.0.1:99999', 'localhost:-1']) {
    await assert.rejects(startMetricsServer(addr, log), (err: unknown) => {
      assert.ok(err instanceof MetricsError, addr);
      assert.equal(err.code, 'ERR_METRICS_ADDRESS', addr);
      assert.ok(err.message.includes(addr), err.message);
      return true;
    });
  }
  assert.deepEqual(parseLoopbackAddress('127.0.0.1:9464'), { host: '127.0.0.1', port: 9464 });
  assert.deepEqual(parseLoopbackAddress('127.3.4.5:0'), { host: '127.3.4.5', port: 0 });
  assert.deepEqual(parseLoopbackAddress('[::1]:9464'), { host: '::1', port: 9464 });
  assert.deepEqual(parseLoopbackAddress('localhost:9464'), { host: '127.0.0.1', port: 9464 });
});

test('metrics endpoint: EADDRINUSE is reported clearly, and close() frees the port', async () => {
  const srv = await startMetricsServer('127.0.0.1:0', log);
  // Keep a connection open: close() must not wait for keep-alive clients.
  const res = await fetch(`http://${srv.address}/metrics`);
  await res.text();
  await assert.rejects(startMetricsServer(srv.address, log), (err: unknown) => {
    assert.ok(err instanceof MetricsError);
    assert.equal(err.code, 'ERR_METRICS_LISTEN');
    assert.equal(err.errno, 'EADDRINUSE');
    assert.match(err.message, /already in use \(EADDRINUSE\)/);
    assert.ok(err.message.includes(srv.address));
    return true;
  });
  await srv.close();
  await srv.close(); // idempotent
  await assert.rejects(fetch(`http://${srv.address}/metrics`));
  // The port is free again: something else can bind it.
  const port = Number(srv.address.split(':')[1]);
  const probe = createServer();
  await new Promise<void>((resolve, reject) => {
    probe.once('error', reject);
    probe.listen({ host: '127.0.0.1', port, exclusive: true }, resolve);
  });
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  const again = await startMetricsServer(srv.address, log);
  assert.equal(again.address, srv.address);
  await again.close();
});

test('noMetrics accepts every call and does nothing', () => {
  noMetrics.setSessions(1);
  noMetrics.setOwners(1);
  noMetrics.recovery('none', 'ok', 0);
  noMetrics.backingIds('probed', 1);
  noMetrics.setLiveBackingIds(1);
  noMetrics.fencedOwner();
  noMetrics.rejectedPeer('x');
  assert.ok(Object.isFrozen(noMetrics));
});
