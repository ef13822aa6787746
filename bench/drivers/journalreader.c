/* Journal reader for bench/journal.ts: stands in for the supervisor's end of the journal
 * socket, in a process of its own, so the benchmark's sender pays only its own sends (and
 * the reader's wake-ups), never the reading.
 *   journalreader FD   reads SOCK_SEQPACKET messages from FD (blocking, recvmmsg in
 *                      batches) until EOF, prints "ready" first and "<messages>" at EOF.
 * Exits 0, or prints the failing call and exits 1. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define BATCH 256
#define MSG_MAX 256

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: journalreader FD\n");
    return 2;
  }
  int fd = atoi(argv[1]);
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) < 0) {
    perror("fcntl");
    return 1;
  }
  static char bufs[BATCH][MSG_MAX];
  static struct iovec iov[BATCH];
  static struct mmsghdr msgs[BATCH];
  for (int i = 0; i < BATCH; i++) {
    iov[i].iov_base = bufs[i];
    iov[i].iov_len = MSG_MAX;
    msgs[i].msg_hdr.msg_iov = &iov[i];
    msgs[i].msg_hdr.msg_iovlen = 1;
  }
  printf("ready\n");
  fflush(stdout);
  long long count = 0;
  for (;;) {
    /* Blocks for the first message, then takes whatever else is queued. */
    int n = recvmmsg(fd, msgs, BATCH, MSG_WAITFORONE, NULL);
    if (n < 0) {
      if (errno == EINTR) continue;
      perror("recvmmsg");
      return 1;
    }
    int eof = 0;
    for (int i = 0; i < n; i++) {
      if (msgs[i].msg_len == 0) eof = 1;
      else count++;
    }
    if (n == 0 || eof) break;
  }
  printf("%lld\n", count);
  return 0;
}
