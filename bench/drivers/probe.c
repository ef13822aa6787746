// The application-side probe of bench/chaos.ts and bench/failover.ts: every INTERVAL_US
// microseconds (on an absolute CLOCK_MONOTONIC schedule; a late tick is not made up with a
// burst) it takes the next of DIR/p0..p<N-1>, then stat(2)s it, open(2)s it, read(2)s up
// to 4 KiB and close(2)s it, timing each call. Every iteration is one 32-byte record in
// OUTFILE (little-endian, as the x86_64 struct below lays it out):
//   i64 start_ns   CLOCK_MONOTONIC when the iteration began (process.hrtime.bigint() reads the same clock)
//   u32 stat_ns, open_ns, read_ns, close_ns   latencies, saturating at 0xffffffff (4.29 s)
//   i32 err        errno of the first call that failed, 0 if none
//   u32 op         which call failed: 0 none, 1 stat, 2 open, 3 read, 4 close
// Records are flushed every 64 iterations and at exit. SIGTERM/SIGINT end the loop after
// the current iteration (a call waiting on the FUSE daemon is not cut short).
//   usage: probe DIR N INTERVAL_US OUTFILE
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct record {
  int64_t start_ns;
  uint32_t lat[4];
  int32_t err;
  uint32_t op;
};

static volatile sig_atomic_t stop;

static void on_signal(int sig) {
  (void)sig;
  stop = 1;
}

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static uint32_t sat(int64_t ns) {
  return ns < 0 ? 0 : ns > 0xffffffffLL ? 0xffffffffu : (uint32_t)ns;
}

int main(int argc, char **argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: probe DIR N INTERVAL_US OUTFILE\n");
    return 2;
  }
  const char *dir = argv[1];
  int n = atoi(argv[2]);
  int64_t interval = (int64_t)atoll(argv[3]) * 1000;
  FILE *out = fopen(argv[4], "wb");
  if (n <= 0 || interval <= 0 || !out) {
    fprintf(stderr, "probe: bad arguments or cannot open %s: %s\n", argv[4], strerror(errno));
    return 2;
  }
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  char path[4096];
  char buf[4096];
  int64_t next = now_ns();
  for (uint64_t i = 0; !stop; i++) {
    snprintf(path, sizeof path, "%s/p%d", dir, (int)(i % (uint64_t)n));
    struct record r;
    memset(&r, 0, sizeof r);
    r.start_ns = now_ns();
    int64_t t = r.start_ns;
    struct stat st;
    do {
      if (stat(path, &st) != 0) {
        r.err = errno;
        r.op = 1;
      }
      int64_t t1 = now_ns();
      r.lat[0] = sat(t1 - t);
      t = t1;
      if (r.op) break;
      int fd = open(path, O_RDONLY);
      if (fd < 0) {
        r.err = errno;
        r.op = 2;
      }
      t1 = now_ns();
      r.lat[1] = sat(t1 - t);
      t = t1;
      if (r.op) break;
      if (read(fd, buf, sizeof buf) < 0) {
        r.err = errno;
        r.op = 3;
      }
      t1 = now_ns();
      r.lat[2] = sat(t1 - t);
      t = t1;
      if (close(fd) != 0 && !r.op) {
        r.err = errno;
        r.op = 4;
      }
      t1 = now_ns();
      r.lat[3] = sat(t1 - t);
    } while (0);
    fwrite(&r, sizeof r, 1, out);
    if ((i & 63) == 63) fflush(out);
    next += interval;
    int64_t now = now_ns();
    if (next < now) next = now;
    struct timespec ts = {.tv_sec = next / 1000000000, .tv_nsec = next % 1000000000};
    while (!stop && clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
  }
  fflush(out);
  fclose(out);
  return 0;
}
