#!/usr/bin/env bash
# connpool - make sure the Debian packages named as arguments are installed.
#
# As root, missing packages are installed with apt-get (nothing is downloaded when all are
# present). Otherwise the exact apt-get command is printed and the script exits 1.
# Usage: scripts/ensure-packages.sh <package>...
set -euo pipefail

installed() {
  dpkg -s "$1" 2>/dev/null | grep -q '^Status: install ok installed'
}

if ! command -v dpkg >/dev/null 2>&1; then
  echo "ensure-packages: no dpkg (not Debian?); assuming these are installed: $*" >&2
  exit 0
fi

missing=()
for pkg in "$@"; do
  installed "$pkg" || missing+=("$pkg")
done
((${#missing[@]} == 0)) && exit 0

if [[ $(id -u) -eq 0 ]]; then
  echo "ensure-packages: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  apt-get install -y --no-install-recommends "${missing[@]}"
else
  echo "ensure-packages: missing Debian packages: ${missing[*]}" >&2
  echo "Run this as root, then try again:" >&2
  echo "  apt-get update && apt-get install -y --no-install-recommends ${missing[*]}" >&2
  exit 1
fi
