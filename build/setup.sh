#!/usr/bin/env bash
# Installs what building and testing need on Debian/Ubuntu with Node 20,
# then builds. Run as root (it uses apt-get); safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

# QEMU and libvirt for the host check and the end-to-end suite; gcc and
# binutils to make real ELF modules in tests; util-linux for unshare/nsenter;
# the monitoring engines the shipped rules and check commands are tested in
# (none of their daemons is started: no service manager runs them here).
packages=(
  qemu-system-x86 qemu-utils qemu-system-gui qemu-block-extra
  libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients
  gcc binutils util-linux findutils
  dpkg-dev rpm systemd init-system-helpers
  groff-base time
  prometheus prometheus-node-exporter icinga2 nagios4-core
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The real-package tests download two QEMU builds of this release
# (apt-get download): apt must know them.
if [ "$(apt-cache madison qemu-system-x86 2>/dev/null | wc -l)" -lt 2 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
fi

# libvirt's modular daemons for the end-to-end suite (built once; kept in .stacks/).
bash build/libvirt-modular.sh
# The systemd-nspawn container root that runs it under a real systemd
# (.stacks/nspawn-bookworm; installs debootstrap and systemd-container).
bash build/nspawn-root.sh
# The same with Debian's own libvirt, procps and nodejs, for the packages
# (.stacks/nspawn-bookworm-debian).
bash build/nspawn-root.sh debian

# The backports suite's libvirt and QEMU, installed privately as layers
# (.stacks/backports). Last of all: they hold what dpkg changed over the
# host's packages as they are now.
bash build/backports-stack.sh

npm ci --no-audit --no-fund
npm run build
