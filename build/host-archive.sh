#!/usr/bin/env bash
# Prints "URI KEYRING" of the archive the host's apt takes release $1 from
# (deb822 .sources first, then sources.list; KEYRING may be empty), for the
# build scripts that fetch from that archive with a private apt state.
# Exits non-zero, saying so, when the host's apt has no source for it.
set -euo pipefail
rel=$1
found=$(awk -v rel="$rel" '
  /^URIs:/ { u = $2 } /^Signed-By:/ { k = $2 }
  /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == rel) hit = 1 }
  /^$/ { if (hit && !found) found = u " " k; u = ""; k = ""; hit = 0 }
  END { if (hit && !found) found = u " " k; print found }' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
[ -n "${found// /}" ] ||
  found=$(awk -v rel="$rel" '$1 == "deb" && $3 == rel { print $2; exit }' /etc/apt/sources.list 2>/dev/null || true)
[ -n "${found// /}" ] || { echo "no apt source for $rel on this host" >&2; exit 1; }
echo "$found"
