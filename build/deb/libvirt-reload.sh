# Shared by the .deb's maintainer scripts and the RPM's scriptlets (both
# embed this at build time: postrm runs after the package's files are gone).
#
# libvirt decides which drivers have hooks when it starts and on reload
# (SIGHUP): the first hook of a driver is ignored until then. Only a daemon
# that is running is reloaded; a stopped one reads the hooks when it starts.
# Only root's daemons: a user's session daemon is socket-activated and
# exits when idle. Never fails, never blocks: a package transaction must
# not depend on libvirt.
qemu_modwatch_reload_libvirt() {
  for qmw_daemon in libvirtd virtqemud; do
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1 &&
      systemctl --quiet is-active "$qmw_daemon.service" 2>/dev/null; then
      systemctl --no-block reload "$qmw_daemon.service" >/dev/null 2>&1 || true
      continue
    fi
    command -v pidof >/dev/null 2>&1 || continue
    for qmw_pid in $(pidof "$qmw_daemon" 2>/dev/null); do
      [ "$(stat -c %u "/proc/$qmw_pid" 2>/dev/null)" = 0 ] || continue
      kill -HUP "$qmw_pid" 2>/dev/null || true
    done
  done
  return 0
}
