#!/usr/bin/env bash
# Builds upstream libvirt 11.3.0 with its modular daemons (virtqemud,
# virtnetworkd, virtproxyd, virtlogd, ...) for the end-to-end suite, as
# Fedora, RHEL and SLES run them. The source is the release tarball from
# the host release's backports suite (apt-get source, private apt state:
# the host's apt configuration is not touched), checked by its sha256.
# Installs into .stacks/libvirt-11.3.0 in the repository (DESTDIR: nothing
# is installed on the host but the build dependencies); the tests lay it
# over /usr inside their private mount namespaces. A second run with the
# tree in place does nothing. About 2.5 minutes on 2 cores. libvirt's own
# systemd units (sockets and services) are installed in the tree too, for
# the container of test/e2e/systemd.ts.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=11.3.0
SHA256=6bcb0c42c4580436fea262ced56f68a6afe20f7390b1bea2116718cc034a0283
out=$PWD/.stacks/libvirt-$VERSION
# A tree built before the units were installed is rebuilt.
[ -x "$out/usr/sbin/virtqemud" ] && [ -f "$out/usr/lib/systemd/system/virtqemud.socket" ] &&
  [ -f "$out/.complete" ] && exit 0

deps=(gcc ninja-build pkg-config meson libglib2.0-dev libjson-c-dev libxml2-dev libxml2-utils xsltproc
  libgnutls28-dev libtirpc-dev libreadline-dev libnl-3-dev libnl-route-3-dev python3 perl xz-utils)
missing=()
for p in "${deps[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/qemu-modwatch-libvirt-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
read -r uri _ < <(bash build/host-archive.sh "$codename") ||
  { echo "libvirt-modular: the host's apt has no source for $codename" >&2; exit 1; }
mkdir -p "$work/apt/lists/partial" "$work/apt/cache/archives/partial" "$work/apt/parts" "$work/src"
echo "deb-src $uri $codename-backports main" > "$work/apt/sources.list"
apt_opts=(-q -o "Dir::Etc::SourceList=$work/apt/sources.list" -o "Dir::Etc::SourceParts=$work/apt/parts"
  -o "Dir::State::Lists=$work/apt/lists" -o "Dir::Cache=$work/apt/cache" -o APT::Sandbox::User=root)
apt-get "${apt_opts[@]}" update >/dev/null
# It fetches the tarball and fails on the rest of the Debian source package: the tarball's checksum decides.
(cd "$work/src" &&
  apt-get "${apt_opts[@]}" source --download-only "libvirt/$codename-backports" >/dev/null 2>&1 || true)
tarball=$work/src/libvirt_$VERSION.orig.tar.xz
[ -f "$tarball" ] || { echo "libvirt-modular: apt-get source gave no libvirt_$VERSION.orig.tar.xz" >&2; exit 1; }
echo "$SHA256  $tarball" | sha256sum -c --quiet - ||
  { echo "libvirt-modular: $tarball has the wrong sha256" >&2; exit 1; }
tar -C "$work/src" -xf "$tarball"

# Debian's layout (not -Dsystem=true, which picks /usr/lib64 when it exists);
# qemu_user root: the default user must exist when the QEMU driver loads.
(cd "$work/src/libvirt-$VERSION" && meson setup "$work/build" --prefix=/usr --sysconfdir=/etc --localstatedir=/var \
  --libdir=lib/x86_64-linux-gnu -Drunstatedir=/run -Dauto_features=disabled \
  -Ddriver_libvirtd=enabled -Ddriver_qemu=enabled -Ddriver_network=enabled -Ddriver_remote=enabled \
  -Djson_c=enabled -Dlibnl=enabled -Dreadline=enabled -Dqemu_user=root -Dqemu_group=root \
  -Ddocs=disabled -Dtests=disabled -Dinit_script=systemd -Dno_git=true >"$work/configure.log") ||
  { tail -n 30 "$work/configure.log" >&2; exit 1; }
ninja -C "$work/build" >"$work/build.log" 2>&1 || { tail -n 30 "$work/build.log" >&2; exit 1; }
rm -rf "$out.tmp"
DESTDIR="$out.tmp" meson install -C "$work/build" >/dev/null
touch "$out.tmp/.complete"
rm -rf "$out"
mv "$out.tmp" "$out"
echo "built libvirt $VERSION with modular daemons into ${out#"$PWD"/}"
