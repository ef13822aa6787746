// V8 flags for a warm standby, whose take-over path first runs at the take-over. By default
// V8 compiles a function when it is first called, runs it in the interpreter until it has
// run often, and throws away the bytecode of functions that have not run for a while (a
// spare may wait for days). Measured on the failover bench with perf, about half of a
// mirrorfs spare's take-over went to compiling and most of the rest to interpreted code;
// with these flags its CPU from the first ACQUIRE frame to reading the first request went
// from 6.3 to 3.7 ms (median). Set before the modules load, they compile every function of
// them at load, to baseline machine code (Sparkplug), and keep it.
import { setFlagsFromString } from 'node:v8';

/** The flags, also for a process started with them on its command line. */
export const EAGER_COMPILE_FLAGS = ['--no-lazy', '--always-sparkplug', '--no-flush-bytecode'];

/**
 * For the supervisor (`fusekeeper serve`), whose recovery path first runs at the first crash,
 * maybe days after it started, and then rarely: every function compiled at load, to bytecode
 * and baseline machine code, and kept. Without --no-lazy that first recovery compiled its
 * code as it ran, about 3.7 ms of the supervisor's CPU between the kill and ACQUIRED (perf,
 * failover bench, bare-100k-ids), and V8 would drop the bytecode again after a few garbage
 * collections without a crash. A recovery that runs rarely runs cold, so interpreted:
 * --always-sparkplug took the supervisor's recovery steps from 404 to 295 us (median, bare
 * hand-over, 20 rounds each). All three flags cost 7.6 MiB of RSS at idle (62.0 against 54.4
 * MiB, 6 of it for baseline code) and 50 ms of start-up (250 against 199 ms to listening).
 */
export const SUPERVISOR_COMPILE_FLAGS = ['--no-lazy', '--always-sparkplug', '--no-flush-bytecode'];

/** Applies `flags` (by default EAGER_COMPILE_FLAGS) to every script compiled from now on. */
export function compileEagerly(flags = EAGER_COMPILE_FLAGS) {
  for (const flag of flags) setFlagsFromString(flag);
}
