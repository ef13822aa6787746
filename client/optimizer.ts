// V8's optimizing compiler (TurboFan) around a warm spare's take-over. TurboFan compiles hot
// functions on V8's worker threads, at the daemon's own priority, in jobs of up to a few
// milliseconds. Traced on the failover bench (2 vCPUs, HZ=250): a new owner's worker threads
// compiled for about 4 ms in the 50 ms after the kill, and ran a fifth of a CPU through its
// first second; a request's thread or the application it answered, woken on the CPU of such
// a job, waited behind it for up to 3.4 ms while the other CPU idled. A spare therefore takes
// over with TurboFan off: code its rehearsal already optimized stays optimized, nothing new is
// compiled by TurboFan until OPTIMIZER_HOLD_MS after the take-over, and the rest runs as
// baseline code (Sparkplug; FuseServer's own work per request took 27-30 µs instead of 7-11
// µs, bench/dispatch.ts). Node 24's V8 compiles hot code with its mid tier (Maglev) meanwhile,
// and keeps that code after the release; functions that turn hot later get TurboFan.
import { setFlagsFromString } from 'node:v8';

/** How long after a take-over a spare keeps TurboFan off, ms. */
export const OPTIMIZER_HOLD_MS = 5000;

/**
 * V8 flags that settle the process's optimizing tiers themselves: with one of them on the
 * command line or in NODE_OPTIONS, the hold leaves TurboFan as it was set (turning it back on
 * could undo a --max-opt or --no-turbofan, and --jitless has no compiler at all).
 */
const OPTIMIZER_FLAG = /^--(no-)?(turbofan|opt|max-opt|jitless|maglev|always-turbofan)([=_-]|$)/;

/** Whether `flags` (a Node command line's, NODE_OPTIONS's words) set the optimizing tiers themselves. */
export function optimizerFlagsGiven(flags: readonly string[]): boolean {
  return flags.some((f) => OPTIMIZER_FLAG.test(f.replaceAll('_', '-')));
}

/**
 * When, after the hold begins, a waiting spare runs a little JavaScript (ms). TurboFan jobs
 * its rehearsals queued before the hold go on compiling on V8's worker threads, but V8
 * installs their code on the main thread, at the next interrupt check of running
 * JavaScript; a spare idle in epoll has none until its take-over. Traced on the failover
 * bench (perf), 13 of 20 take-overs began by finalizing such jobs on the main thread, about
 * 0.1-0.2 ms each.
 */
const INSTALL_CHECKS_MS = [20, 100, 500, 2000];

let held = false;
let releaseTimer: NodeJS.Timeout | undefined;

/**
 * Turns TurboFan off for this process until releaseOptimizer, unless its flags set the
 * optimizing tiers themselves. Returns whether it is held now.
 */
export function holdOptimizer(flags: readonly string[] = [...process.execArgv, ...(process.env.NODE_OPTIONS ?? '').split(/\s+/)]): boolean {
  if (held) return true;
  if (optimizerFlagsGiven(flags)) return false;
  setFlagsFromString('--no-turbofan');
  held = true;
  for (const ms of INSTALL_CHECKS_MS) setTimeout(() => {}, ms).unref();
  return true;
}

/** Turns TurboFan back on after `afterMs` (now for 0), if holdOptimizer turned it off. */
export function releaseOptimizer(afterMs = 0): void {
  if (!held) return;
  clearTimeout(releaseTimer);
  const release = (): void => {
    releaseTimer = undefined;
    held = false;
    setFlagsFromString('--turbofan');
  };
  if (afterMs <= 0) release();
  else releaseTimer = setTimeout(release, afterMs).unref();
}

/** Whether holdOptimizer's hold is on. */
export function optimizerHeld(): boolean {
  return held;
}
