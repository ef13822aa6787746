// Sets up one io_uring instance (io_uring_setup(2), no liburing), then either prints "ready"
// and sleeps, or, given a command, runs it holding the ring (the fd is made to survive
// execve): a process that holds a ring, for the fence test (supervisor/recovery.ts).
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <linux/io_uring.h>

int main(int argc, char **argv) {
  struct io_uring_params p;
  memset(&p, 0, sizeof p);
  int fd = (int)syscall(__NR_io_uring_setup, 4, &p);
  if (fd < 0) {
    perror("io_uring_setup");
    return 1;
  }
  if (argc > 1) {
    // io_uring_setup(2) returns the fd with O_CLOEXEC.
    if (fcntl(fd, F_SETFD, 0) < 0) {
      perror("fcntl");
      return 1;
    }
    execvp(argv[1], argv + 1);
    perror("execvp");
    return 1;
  }
  printf("ready\n");
  fflush(stdout);
  for (;;) pause();
}
