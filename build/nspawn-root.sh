#!/usr/bin/env bash
# Builds a root of the systemd-nspawn containers that test/e2e/systemd.ts
# boots: a minimal Debian 12 (the host's release) with systemd as PID 1, dbus
# and QEMU (qemu-system-x86 without recommends). Every test boots an overlay
# of it, so a root is never written to after this. A second run with the
# root in place does nothing.
#   upstream (the default): .stacks/nspawn-bookworm, with the libraries the
#     libvirt of build/libvirt-modular.sh links against (the tests lay that
#     tree over this root; libvirt's own units come with it). About 50 s, 440 MB.
#   debian: .stacks/nspawn-bookworm-debian, with Debian's own libvirt
#     (libvirt-daemon-system, libvirtd as Debian runs it), procps and
#     Debian's nodejs: a host the packages are installed on as an admin
#     would. About 70 s.
set -euo pipefail
cd "$(dirname "$0")/.."
variant=${1:-upstream}
codename=bookworm
case "$variant" in
  upstream) out=$PWD/.stacks/nspawn-$codename ;;
  debian) out=$PWD/.stacks/nspawn-$codename-debian ;;
  *) echo "nspawn-root: unknown variant '$variant' (upstream or debian)" >&2; exit 2 ;;
esac
[ -f "$out/.complete" ] && exit 0

# The libvirt tree is built against this host's libraries: the root must be
# the same release.
host=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
[ "$host" = "$codename" ] ||
  { echo "nspawn-root: this host is ${host:-unknown}, not $codename:" \
      "the container's libraries would not be the ones libvirt was built against" >&2; exit 1; }
# systemd-container at the version of the host's systemd: any other would
# make apt upgrade systemd itself.
sdver=$(dpkg-query -W -f='${Version}' systemd 2>/dev/null || true)
[ -n "$sdver" ] || { echo "nspawn-root: systemd is not installed on this host" >&2; exit 1; }
installed() { [ "$(dpkg-query -W -f='${Status} ${Version}' "$1" 2>/dev/null)" = "install ok installed${2:+ $2}" ]; }
missing=()
installed debootstrap || missing+=(debootstrap)
installed systemd-container "$sdver" || missing+=("systemd-container=$sdver")
if [ "${#missing[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 ||
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }
fi

read -r uri _ < <(bash build/host-archive.sh "$codename") ||
  { echo "nspawn-root: the host's apt has no source for $codename" >&2; exit 1; }

# What libvirt 11.3.0 needs at run time beyond QEMU's own dependencies
# (ldd on the binaries and modules of .stacks/libvirt-11.3.0).
libvirt_libs=libxml2,libglib2.0-0,libgnutls30,libjson-c5,libnl-3-200,libnl-route-3-200,libtirpc3,libreadline8
# The containers have no network: what a test installs there is a package
# file it brings, and its dependencies must be in the root already.
case "$variant" in
  upstream) include=$libvirt_libs ;;
  # adduser and libpam-systemd (logind): polkitd, which libvirt-daemon-system
  # needs, depends on them through alternatives, which debootstrap does not
  # resolve. ca-certificates: nodejs recommends it, and Debian's node warns
  # at every start without it.
  debian) include=adduser,libpam-systemd,libvirt-daemon-system,libvirt-clients,procps,nodejs,ca-certificates ;;
esac
tmp=$out.tmp
log=$out.debootstrap.log
rm -rf "$tmp"
trap 'rm -rf "$tmp"' EXIT
debootstrap --variant=minbase --include="systemd,systemd-sysv,dbus,qemu-system-x86,$include" \
  "$codename" "$tmp" "$uri" >"$log" 2>&1 ||
  { tail -n 30 "$log" >&2; exit 1; }
rm -f "$log"

# Every library the libvirt tree needs and does not bring must be in the
# root, or its daemons fail to start inside: checked here, not at boot.
tree=$PWD/.stacks/libvirt-11.3.0
if [ "$variant" = upstream ] && [ -d "$tree/usr" ]; then
  command -v readelf >/dev/null || { echo "nspawn-root: readelf (binutils) is needed to check the root" >&2; exit 1; }
  lost=$(find "$tree" -type f \( -perm -u+x -o -name '*.so*' \) -print0 |
    { xargs -0 readelf -d 2>/dev/null || true; } | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | sort -u |
    while read -r so; do
      for d in "$tree/usr/lib/x86_64-linux-gnu" "$tmp/usr/lib/x86_64-linux-gnu" "$tmp/lib/x86_64-linux-gnu"; do
        [ -e "$d/$so" ] && continue 2
      done
      echo "$so"
    done)
  [ -z "$lost" ] || { echo "nspawn-root: libraries libvirt needs are missing from the root: $lost" >&2; exit 1; }
fi

touch "$tmp/.complete"
rm -rf "$out"
mv "$tmp" "$out"
trap - EXIT
version() { dpkg-query --admindir="$out/var/lib/dpkg" -W -f='${Version}' "$1"; }
libvirt=
[ "$variant" = debian ] && libvirt=", libvirt $(version libvirt-daemon)"
echo "built a $codename container root ($variant) with systemd $(version systemd)," \
  "QEMU $(version qemu-system-x86)$libvirt into ${out#"$PWD"/}"
