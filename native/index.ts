// The native seam: the only place that talks to the C library (through koffi).
// Every function documents who owns the fds involved, on success and on every error path.
export { NativeError, errnoName, errnoValue } from './errors.ts';
export { pollFd as watchFd, type PollEvents, type PollHandle, type PollInterest } from './libc.ts';
export * from './fd.ts';
export * from './socket.ts';
export * from './mount.ts';
export * from './pidfd.ts';
export * from './files.ts';
export * from './memfd.ts';
export * from './procevents.ts';
export * from './timer.ts';
