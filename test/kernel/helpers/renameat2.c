/* renameat2 FLAGS FROM TO: FLAGS is "none", "noreplace" or "exchange". Exits 0 on success,
 * else prints the errno name's description and exits with errno. Coreutils 9.1 (Debian 12)
 * has no `mv --exchange`, and Python has no renameat2, so the tests compile this. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: renameat2 none|noreplace|exchange FROM TO\n");
    return 64;
  }
  unsigned flags = 0;
  if (strcmp(argv[1], "noreplace") == 0) flags = RENAME_NOREPLACE;
  else if (strcmp(argv[1], "exchange") == 0) flags = RENAME_EXCHANGE;
  else if (strcmp(argv[1], "none") != 0) {
    fprintf(stderr, "renameat2: unknown flag %s\n", argv[1]);
    return 64;
  }
  if (renameat2(AT_FDCWD, argv[2], AT_FDCWD, argv[3], flags) != 0) {
    int e = errno;
    fprintf(stderr, "%s\n", strerrorname_np(e));
    return e;
  }
  return 0;
}
