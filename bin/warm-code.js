// V8 flags for a process whose rare path must be fast the first time it runs: the
// supervisor's recovery of a dead owner, a warm standby's take-over. By default V8 compiles
// a function when it is first called, runs it in the interpreter until it has run often,
// and throws away the bytecode of functions that have not run for a while (a recovery path
// that runs once a month is cold every time). Measured on the failover bench, most of the
// supervisor's time from a death to the hand-over and most of a standby's take-over went
// to compiling and interpreting. Set before the modules load, these flags compile every
// function of them at load, to baseline machine code (Sparkplug), and keep it.
import { setFlagsFromString } from 'node:v8';

/** Applies the flags to every script compiled from now on. */
export function compileEagerly() {
  setFlagsFromString('--no-lazy');
  setFlagsFromString('--always-sparkplug');
  setFlagsFromString('--no-flush-bytecode');
}
