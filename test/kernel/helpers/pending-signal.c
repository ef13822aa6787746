// Blocks SIGUSR1, sends it to its own thread (tgkill: the thread's own pending set, not the
// process's), prints "ready" and sleeps: a thread with a signal pending, for the fence test
// (supervisor/recovery.ts reads a thread's pending signals from its /proc stat).
#include <signal.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(void) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGUSR1);
  if (sigprocmask(SIG_BLOCK, &set, NULL) != 0) {
    perror("sigprocmask");
    return 1;
  }
  if (syscall(SYS_tgkill, getpid(), (pid_t)syscall(SYS_gettid), SIGUSR1) != 0) {
    perror("tgkill");
    return 1;
  }
  printf("ready\n");
  fflush(stdout);
  for (;;) pause();
}
