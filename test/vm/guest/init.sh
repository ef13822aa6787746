#!/bin/sh
# PID 1 of the VM tier's guest (started as `init=/bin/sh -- <this file>`, so it needs no exec bit).
# The root is the host's root over 9p, read-only. Mounts what the tests need, runs the command the
# host wrote to the results share, writes its exit status there, and reboots (qemu runs with
# -no-reboot, so the reboot ends qemu). Never exits: PID 1 exiting panics the kernel (which, with
# panic=-1, also ends qemu, but loudly).
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root LANG=C.UTF-8 TERM=dumb

mount -t proc -o nosuid,nodev,noexec proc /proc
mount -t sysfs -o nosuid,nodev,noexec sysfs /sys
mount -t devtmpfs -o mode=0755,nosuid devtmpfs /dev
exec </dev/console >/dev/console 2>&1
echo "fusekeeper-vm: init up at $(cut -d' ' -f1 /proc/uptime)s of guest uptime, kernel $(uname -r)"

fail() {
  echo "fusekeeper-vm: init: $*"
  echo 1 >/proc/sys/kernel/sysrq 2>/dev/null
  echo b >/proc/sysrq-trigger
  sleep 60
}

mkdir -p /dev/pts /dev/shm 2>/dev/null
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /dev/shm
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp || fail "cannot mount /tmp"
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run || fail "cannot mount /run"
mount -t fusectl fusectl /sys/fs/fuse/connections || fail "cannot mount fusectl"
[ -c /dev/fuse ] || fail "/dev/fuse is missing (CONFIG_FUSE_FS=y?)"
ln -s /proc/self/fd /dev/fd 2>/dev/null
ln -s /proc/self/fd/0 /dev/stdin 2>/dev/null
ln -s /proc/self/fd/1 /dev/stdout 2>/dev/null
ln -s /proc/self/fd/2 /dev/stderr 2>/dev/null
mkdir -p /root 2>/dev/null
hostname fusekeeper-vm 2>/dev/null

results=/run/vm-results
mkdir -p $results
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,cache=none results $results || fail "cannot mount the results share"
[ -r $results/command.sh ] || fail "the host wrote no $results/command.sh"
# The checkout, at its host path: below /tmp or /run the tmpfs mounted above hides it.
checkout=$(cat $results/checkout 2>/dev/null)
if [ -n "$checkout" ]; then
  mkdir -p "$checkout" 2>/dev/null
  mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,cache=loose,ro checkout "$checkout" || fail "cannot mount the checkout share on $checkout"
fi

echo "fusekeeper-vm: running the command at $(cut -d' ' -f1 /proc/uptime)s"
/bin/sh $results/command.sh </dev/null
status=$?
echo "$status" >$results/status.tmp && mv $results/status.tmp $results/status
echo "fusekeeper-vm: command exited $status at $(cut -d' ' -f1 /proc/uptime)s"
echo 1 >/proc/sys/kernel/sysrq
echo b >/proc/sysrq-trigger
sleep 60
