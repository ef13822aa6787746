// The koffi bindings to glibc. Every other module in native/ goes through these;
// nothing outside native/ imports koffi.
import koffi from 'koffi';

const libc = koffi.load('libc.so.6');

/** Raw glibc functions. Each returns -1 (or a null pointer) and sets errno on failure. */
export const sys = {
  socket: libc.func('int socket(int domain, int type, int protocol)'),
  socketpair: libc.func('int socketpair(int domain, int type, int protocol, _Out_ int *sv)'),
  bind: libc.func('int bind(int fd, void *addr, uint32_t len)'),
  connect: libc.func('int connect(int fd, void *addr, uint32_t len)'),
  listen: libc.func('int listen(int fd, int backlog)'),
  accept4: libc.func('int accept4(int fd, void *addr, void *len, int flags)'),
  sendmsg: libc.func('intptr_t sendmsg(int fd, void *msg, int flags)'),
  recvmsg: libc.func('intptr_t recvmsg(int fd, void *msg, int flags)'),
  getsockopt: libc.func('int getsockopt(int fd, int level, int name, void *val, _Inout_ uint32_t *len)'),
  setsockopt: libc.func('int setsockopt(int fd, int level, int name, void *val, uint32_t len)'),
  shutdown: libc.func('int shutdown(int fd, int how)'),
  ioctlPtr: libc.func('int ioctl(int fd, unsigned long request, void *arg)'),
  ioctlInt: libc.func('int ioctl(int fd, unsigned long request, uintptr_t arg)'),
  open: libc.func('int open(const char *path, int flags, ...)'),
  close: libc.func('int close(int fd)'),
  read: libc.func('intptr_t read(int fd, void *buf, size_t count)'),
  readlink: libc.func('intptr_t readlink(const char *path, void *buf, size_t size)'),
  write: libc.func('intptr_t write(int fd, void *buf, size_t count)'),
  writev: libc.func('intptr_t writev(int fd, void *iov, int iovcnt)'),
  fcntl: libc.func('int fcntl(int fd, int cmd, ...)'),
  fstat: libc.func('int fstat(int fd, void *statbuf)'),
  memfd_create: libc.func('int memfd_create(const char *name, unsigned int flags)'),
  mount: libc.func('int mount(const char *source, const char *target, const char *fstype, unsigned long flags, const char *data)'),
  umount2: libc.func('int umount2(const char *target, int flags)'),
  syscall: libc.func('long syscall(long number, ...)'),
  sched_setscheduler: libc.func('int sched_setscheduler(int pid, int policy, const void *param)'),
  sched_getscheduler: libc.func('int sched_getscheduler(int pid)'),
  sched_getparam: libc.func('int sched_getparam(int pid, void *param)'),
  sched_setaffinity: libc.func('int sched_setaffinity(int pid, size_t size, const void *mask)'),
  sched_getaffinity: libc.func('int sched_getaffinity(int pid, size_t size, void *mask)'),
  sched_getcpu: libc.func('int sched_getcpu(void)'),
  timerfd_create: libc.func('int timerfd_create(int clockid, int flags)'),
  clock_gettime: libc.func('int clock_gettime(int clockid, void *ts)'),
  timerfd_settime: libc.func('int timerfd_settime(int fd, int flags, const void *newValue, void *oldValue)'),
  poll: libc.func('int poll(_Inout_ void *fds, unsigned long nfds, int timeout)'),
  mknod: libc.func('int mknod(const char *path, uint32_t mode, uint64_t dev)'),
  renameat2: libc.func('int renameat2(int olddirfd, const char *oldpath, int newdirfd, const char *newpath, unsigned int flags)'),
  lgetxattr: libc.func('intptr_t lgetxattr(const char *path, const char *name, void *value, size_t size)'),
  lsetxattr: libc.func('int lsetxattr(const char *path, const char *name, void *value, size_t size, int flags)'),
  llistxattr: libc.func('intptr_t llistxattr(const char *path, void *list, size_t size)'),
  lremovexattr: libc.func('int lremovexattr(const char *path, const char *name)'),
  fallocate: libc.func('int fallocate(int fd, int mode, int64_t offset, int64_t len)'),
  lseek: libc.func('int64_t lseek(int fd, int64_t offset, int whence)'),
  utimensat: libc.func('int utimensat(int dirfd, const char *path, void *times, int flags)'),
  futimens: libc.func('int futimens(int fd, void *times)'),
  name_to_handle_at: libc.func('int name_to_handle_at(int dirfd, const char *path, void *handle, _Out_ int *mountId, int flags)'),
  open_by_handle_at: libc.func('int open_by_handle_at(int mountFd, void *handle, int flags)'),
  copy_file_range: libc.func('intptr_t copy_file_range(int fdIn, _Inout_ int64_t *offIn, int fdOut, _Inout_ int64_t *offOut, size_t len, unsigned int flags)'),
  malloc: libc.func('void *malloc(size_t size)'),
  mmap: libc.func('void *mmap(void *addr, size_t len, int prot, int flags, int fd, int64_t offset)'),
  munmap: libc.func('int munmap(void *addr, size_t len)'),
  free: libc.func('void free(void *ptr)'),
};

/** errno of the last failed call made through `sys`. */
export function lastErrno(): number {
  return koffi.errno();
}

/** Native memory that is never moved by the GC; `view` aliases it, `address` is its address. */
export interface NativeBlock {
  readonly ptr: unknown;
  readonly address: bigint;
  readonly view: Buffer;
}

/** Allocates `size` bytes of native memory for the life of the process. */
export function allocBlock(size: number): NativeBlock {
  const ptr = sys.malloc(size);
  if (ptr === null) throw new Error(`malloc(${size}) failed`);
  return { ptr, address: koffi.address(ptr), view: Buffer.from(koffi.view(ptr, size)) };
}

const PROT_READ = 0x1;
const MAP_SHARED = 0x01;
const MAP_POPULATE = 0x8000;
const MAP_FAILED = 0xffffffffffffffffn;
/** Unmaps a mapRead mapping once nothing references its ArrayBuffer any more. */
const mappings = new FinalizationRegistry<{ ptr: unknown; size: number }>(({ ptr, size }) => sys.munmap(ptr, size));

/**
 * `size` bytes of file `fd` from offset 0, mapped read-only and shared, with the page
 * table filled in at once (MAP_POPULATE): no copy and no page faults. Writing to the Buffer
 * kills the process (SIGSEGV), and so does reading it if the file shrinks: map only files
 * sealed against shrinking. Unmapped when the Buffer (and every view of it) is garbage; the
 * fd may be closed at once. Returns null when mmap fails (errno in `lastErrno()`).
 */
export function mapRead(fd: number, size: number): Buffer | null {
  const ptr = sys.mmap(null, size, PROT_READ, MAP_SHARED | MAP_POPULATE, fd, 0n);
  if (ptr === null || BigInt(koffi.address(ptr)) === MAP_FAILED) return null;
  const ab = koffi.view(ptr, size);
  mappings.register(ab, { ptr, size });
  return Buffer.from(ab);
}

/** Readiness events reported by `watch`. */
export interface PollEvents {
  readable: boolean;
  writable: boolean;
  disconnect: boolean;
  /** libuv reported an error polling the fd (status < 0); reading or writing it tells which. */
  error: boolean;
}

/** What to poll for. */
export interface PollInterest {
  readable?: boolean;
  writable?: boolean;
  disconnect?: boolean;
}

/** A koffi poll handle: libuv readiness on an arbitrary fd. */
export interface PollHandle {
  /** Polls for other events from now on, with the same callback (uv_poll_start again). */
  setEvents(events: PollInterest): void;
  stop(): void;
  close(): void;
  unref(): void;
  ref(): void;
}

interface KoffiPollHandle extends Omit<PollHandle, 'setEvents'> {
  start(events: PollInterest, callback: (status: number, ev: PollEvents) => void): void;
}

/**
 * libuv readiness polling (level-triggered) on `fd`. libuv allows one poll handle per fd:
 * change what one handle polls for with `setEvents` rather than adding a second.
 */
export function pollFd(fd: number, events: PollInterest, callback: (ev: PollEvents) => void): PollHandle {
  // koffi calls back with (status, events).
  const onPoll = (status: number, ev: PollEvents): void => {
    ev.error = status < 0;
    callback(ev);
  };
  const h = koffi.node.poll(fd, events, onPoll as never) as unknown as KoffiPollHandle;
  return {
    setEvents: (e) => h.start(e, onPoll),
    stop: () => h.stop(),
    close: () => h.close(),
    unref: () => h.unref(),
    ref: () => h.ref(),
  };
}
