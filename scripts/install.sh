#!/usr/bin/env bash
# Installs fusekeeper system-wide and enables it under systemd (docs/systemd.md):
#   PREFIX/lib/fusekeeper/          the package (bin/, dist/, production node_modules/, units/, docs/)
#   PREFIX/bin/fusekeeper           -> ../lib/fusekeeper/bin/fusekeeper.js
#   PREFIX/bin/fusekeeper-mirrorfs  -> ../lib/fusekeeper/bin/fusekeeper-mirrorfs.js
#   UNITDIR/fusekeeper.service, fusekeeper.socket, fusekeeper-mirrorfs@.service
#   /etc/fusekeeper/mirrorfs/       one NAME.env per fusekeeper-mirrorfs@NAME instance
# then `systemctl daemon-reload` and `systemctl enable --now fusekeeper.socket fusekeeper.service`.
#
# Run from a clone after `npm ci` (which builds dist/). Needs no network: the production
# dependencies are copied from node_modules/ and pruned.
#
# usage: scripts/install.sh [--prefix DIR] [--unit-dir DIR] [--destdir DIR] [--no-enable]
#   --prefix DIR    install prefix (default /usr/local); the units' ExecStart= follow it
#   --unit-dir DIR  where the units go (default /etc/systemd/system)
#   --destdir DIR   stage everything under DIR (packaging, tests); implies --no-enable
#   --no-enable     do not run systemctl
set -euo pipefail

prefix=/usr/local
unitdir=/etc/systemd/system
destdir=
enable=1
while (($#)); do
  case "$1" in
    --prefix) prefix=${2:?--prefix needs a directory}; shift 2 ;;
    --unit-dir) unitdir=${2:?--unit-dir needs a directory}; shift 2 ;;
    --destdir) destdir=${2:?--destdir needs a directory}; enable=0; shift 2 ;;
    --no-enable) enable=0; shift ;;
    -h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$prefix" in /*) ;; *) echo "install: --prefix must be absolute" >&2; exit 2 ;; esac

src=$(cd "$(dirname "$0")/.." && pwd)
if [[ ! -f "$src/dist/bundle/fusekeeper.mjs" || ! -d "$src/node_modules/koffi" ]]; then
  echo "install: run \`npm ci\` in $src first (it installs the dependencies and builds dist/)" >&2
  exit 1
fi

lib="$destdir$prefix/lib/fusekeeper"
echo "install: $lib"
rm -rf "$lib.new"
mkdir -p "$lib.new"
cp -a "$src/package.json" "$src/package-lock.json" "$src/bin" "$src/dist" "$src/units" "$src/README.md" "$lib.new/"
mkdir -p "$lib.new/docs" && cp -a "$src/docs/." "$lib.new/docs/"
cp -a "$src/node_modules" "$lib.new/node_modules"
(cd "$lib.new" && npm prune --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null)
rm -rf "$lib.old"
if [[ -e "$lib" ]]; then mv "$lib" "$lib.old"; fi
mv "$lib.new" "$lib"
rm -rf "$lib.old"

mkdir -p "$destdir$prefix/bin"
ln -sfn ../lib/fusekeeper/bin/fusekeeper.js "$destdir$prefix/bin/fusekeeper"
ln -sfn ../lib/fusekeeper/bin/fusekeeper-mirrorfs.js "$destdir$prefix/bin/fusekeeper-mirrorfs"

mkdir -p "$destdir$unitdir" "$destdir/etc/fusekeeper/mirrorfs"
for unit in fusekeeper.service fusekeeper.socket fusekeeper-mirrorfs@.service; do
  sed "s|/usr/local/bin/|$prefix/bin/|g" "$src/units/$unit" > "$destdir$unitdir/$unit"
  chmod 0644 "$destdir$unitdir/$unit"
  echo "install: $destdir$unitdir/$unit"
done

if ((enable)); then
  systemctl daemon-reload
  systemctl enable --now fusekeeper.socket fusekeeper.service
  systemctl --no-pager status fusekeeper.service | head -n 5 || true
  echo "install: done; add a mirror with /etc/fusekeeper/mirrorfs/NAME.env (SOURCE=, MOUNTPOINT=) and \`systemctl enable --now fusekeeper-mirrorfs@NAME\`"
fi
