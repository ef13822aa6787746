/* Metadata workload driver for bench/metadata.ts, so the timed loop is plain syscalls in a
 * process of its own (not the daemon's, not Node's event loop).
 *   metadriver stat|open|create|unlink DIR N PREFIX   N files DIR/PREFIX%06d
 *   metadriver readdir DIR N                           N full listings of DIR
 * Prints "<operations> <nanoseconds>" and exits 0, or prints the failing call and exits 1. */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int fail(const char *what, const char *path) {
  perror(what);
  fprintf(stderr, "  at %s\n", path);
  return 1;
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: metadriver stat|open|create|unlink DIR N PREFIX | readdir DIR N\n");
    return 64;
  }
  const char *op = argv[1], *dir = argv[2];
  long n = atol(argv[3]);
  const char *prefix = argc > 4 ? argv[4] : "f";
  char path[4096];
  long long ops = 0, t0 = now_ns();
  if (strcmp(op, "readdir") == 0) {
    for (long i = 0; i < n; i++) {
      DIR *d = opendir(dir);
      if (!d) return fail("opendir", dir);
      while (readdir(d)) ops++;
      closedir(d);
    }
  } else {
    struct stat st;
    for (long i = 0; i < n; i++) {
      snprintf(path, sizeof path, "%s/%s%06ld", dir, prefix, i);
      if (strcmp(op, "stat") == 0) {
        if (stat(path, &st) != 0) return fail("stat", path);
      } else if (strcmp(op, "open") == 0) {
        int fd = open(path, O_RDONLY);
        if (fd < 0) return fail("open", path);
        close(fd);
      } else if (strcmp(op, "create") == 0) {
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0644);
        if (fd < 0) return fail("create", path);
        close(fd);
      } else if (strcmp(op, "unlink") == 0) {
        if (unlink(path) != 0) return fail("unlink", path);
      } else {
        fprintf(stderr, "metadriver: unknown operation %s\n", op);
        return 64;
      }
      ops++;
    }
  }
  printf("%lld %lld\n", ops, now_ns() - t0);
  return 0;
}
