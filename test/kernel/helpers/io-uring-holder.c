// Sets up one io_uring instance (io_uring_setup(2), no liburing), prints "ready", and
// sleeps: a process that holds a ring, for the fence test (supervisor/recovery.ts).
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <linux/io_uring.h>

int main(void) {
  struct io_uring_params p;
  memset(&p, 0, sizeof p);
  int fd = (int)syscall(__NR_io_uring_setup, 4, &p);
  if (fd < 0) {
    perror("io_uring_setup");
    return 1;
  }
  printf("ready\n");
  fflush(stdout);
  for (;;) pause();
}
