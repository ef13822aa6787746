#!/usr/bin/env bash
# Installs the Debian packages the test tiers need, skipping what is already installed.
set -euo pipefail
packages=(
  gcc libc6-dev   # test/unit/native-layout.test.ts compiles a C program to check struct layouts;
                  # test/kernel/mirrorfs.test.ts compiles a renameat2 helper
  git             # test/kernel/mirrorfs.test.ts: git init/add/commit/fsck inside the mount
  fio             # test/kernel/mirrorfs.test.ts: fio --verify=crc32c through the mount
  attr            # setfattr/getfattr, and cp -a copying xattrs, through the mount
  fuse-overlayfs  # bench/metadata.ts compares mirrorfs with it (pulls in fuse3)
  systemd         # the systemd tier: /lib/systemd/systemd --user, systemctl, systemd-analyze
  util-linux      # the systemd tier runs under `unshare --mount`; test/kernel/realtime.test.ts uses setpriv
  coreutils       # mkfifo, cat (the systemd tier's log FIFO)
  stress-ng       # bench/chaos.ts: file stressors (hdd, dir, rename, ...) through the mount during crashes
  fsmark          # bench/chaos.ts: fs_mark create/fsync/unlink load through the mount during crashes
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
echo "install-deps: ${#packages[@]} packages present"
