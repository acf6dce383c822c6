#!/usr/bin/env bash
# Installs the host release's backports suite's QEMU and libvirt (10.0 and
# 11.3 on Debian 12) for the end-to-end suite, with apt-get and dpkg as an
# admin would, but inside a private mount namespace over overlays of /etc,
# /usr and /var: the host keeps its own packages, apt lists and dpkg
# database. What each install changed (the overlays' upper dirs, with their
# whiteouts) is kept as a layer in .stacks/backports/:
#   qemu/     QEMU 10.0 over the host's system
#   libvirt/  then libvirt 11.3 over both
# The tests lay qemu/ alone under an upstream libvirt, or both, over /usr
# and /etc of their private worlds (test/e2e/stacks.ts).
#
# The layers are only true over the packages they were made on:
# over-packages lists the host's packages and versions then, and a host
# that has removed or changed one of them gets the layers made anew (new
# packages do not matter). `--check` only says whether they are up to date
# (exit 0), or why not (exit 1, one line); the tests ask it. A second run on
# the same host does nothing. Under a minute.
set -euo pipefail
cd "$(dirname "$0")/.."
# qxl, the module the scenarios change, is packaged apart from QEMU 10.0.
qemu_packages=(qemu-system-x86 qemu-system-modules-spice qemu-utils)
libvirt_packages=(libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients)

out=$PWD/.stacks/backports
packages() { dpkg-query -W -f '${db:Status-Abbrev} ${Package}:${Architecture} ${Version}\n' |
  awk '$1 == "ii" { print $2, $3 }' | LC_ALL=C sort; }
outdated() {
  [ -f "$out/.complete" ] && [ -f "$out/over-packages" ] ||
    { echo ".stacks/backports is not installed (bash build/backports-stack.sh)"; return; }
  local gone
  gone=$(LC_ALL=C comm -23 "$out/over-packages" <(packages) | head -n 3 | tr '\n' ' ')
  [ -z "$gone" ] ||
    echo ".stacks/backports was installed over host packages that have changed since" \
      "(then: ${gone% }; bash build/backports-stack.sh)"
}
if [ "${1:-}" = --check ]; then
  why=$(outdated)
  [ -z "$why" ] || { echo "$why"; exit 1; }
  exit 0
fi
[ -z "$(outdated)" ] && exit 0

codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
read -r uri keyring < <(bash build/host-archive.sh "$codename") ||
  { echo "backports-stack: the host's apt has no source for $codename" >&2; exit 1; }
signed=${keyring:+ [signed-by=$keyring]}
tmp=$out.tmp
rm -rf "$tmp"
mkdir -p "$tmp"
packages > "$tmp/over-packages"

# install LAYER [UNDER-LAYER] -- PACKAGES: one apt-get install in a private
# namespace, its changes kept in $tmp/LAYER. /run is a private tmpfs (QEMU's
# prerm would copy the old modules to /run/qemu if it existed). Laid over
# another overlay later, a layer must hold plain files and whiteouts only:
# redirected or metadata-only copies would point into this host's layers.
install() {
  local layer=$1 under=$2
  shift 3
  for d in etc usr var; do mkdir -p "$tmp/$layer/$d" "$tmp/.work/$layer/$d"; done
  unshare --mount --propagation private -- bash -euo pipefail -c '
    tmp=$1 layer=$2 under=$3 uri=$4 codename=$5 signed=$6; shift 6
    for d in etc usr var; do
      lower=/$d; [ -n "$under" ] && lower=$tmp/$under/$d:/$d
      mount -t overlay overlay \
        -o "lowerdir=$lower,upperdir=$tmp/$layer/$d,workdir=$tmp/.work/$layer/$d,redirect_dir=off,metacopy=off" "/$d"
    done
    mount -t tmpfs tmpfs /run
    echo "deb$signed $uri $codename-backports main" > /etc/apt/sources.list.d/qemu-modwatch-tests-backports.list
    # No service starts (invoke-rc.d asks $POLICYRCD), without a file in the layer.
    printf "#!/bin/sh\nexit 101\n" > "$tmp/policy-rc.d" && chmod 755 "$tmp/policy-rc.d"
    export DEBIAN_FRONTEND=noninteractive POLICYRCD=$tmp/policy-rc.d
    apt-get -q update >/dev/null
    apt-get -q install -y --no-install-recommends -t "$codename-backports" "$@" > "$tmp/$layer.log" 2>&1 ||
      { tail -n 30 "$tmp/$layer.log" >&2; exit 1; }
    apt-get clean
    rm -f /etc/apt/sources.list.d/qemu-modwatch-tests-backports.list
    dpkg-query -W -f "\${Package} \${Version}\n" "$@" > "$tmp/$layer/versions"
  ' bash "$tmp" "$layer" "$under" "$uri" "$codename" "$signed" "$@"
}
install qemu '' -- "${qemu_packages[@]}"
install libvirt qemu -- "${libvirt_packages[@]}"
rm -rf "$tmp/.work" "$tmp/policy-rc.d"
touch "$tmp/.complete"
rm -rf "$out"
mv "$tmp" "$out"
echo "installed $(cat "$out"/qemu/versions "$out"/libvirt/versions | tr '\n' ' ')into ${out#"$PWD"/}"
