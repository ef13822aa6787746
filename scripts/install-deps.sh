#!/usr/bin/env bash
# Installs the Debian packages the test tiers need, skipping what is already installed.
set -euo pipefail
packages=(
  gcc libc6-dev   # test/unit/native-layout.test.ts compiles a C program to check struct layouts
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
