# Shared by the .deb's maintainer scripts and the RPM's scriptlets (both
# embed this at build time: postrm runs after the package's files are gone).
#
# libvirt decides which drivers have hooks when it starts and on reload
# (SIGHUP): the first hook of a driver is ignored until then. Only a daemon
# that is running is reloaded; a stopped one reads the hooks when it starts.
# Only root's daemons: a user's session daemon is socket-activated and
# exits when idle. Never fails the transaction, never hangs it: a package
# transaction must not depend on libvirt.
#
# A reload that fails is said on stderr in one line (README, "Install"), as
#   qemu-modwatch: could not reload DAEMON (WHAT FAILED): MEANING; run: COMMAND
# COMMAND, to the end of the line, is one that delivers the reload on this
# system. Argument: install (the default) or remove, for MEANING.
qemu_modwatch_reload_libvirt() {
  qmw_why=${1:-install}
  for qmw_daemon in libvirtd virtqemud; do
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1 &&
      systemctl --quiet is-active "$qmw_daemon.service" 2>/dev/null; then
      # Blocking, so that a failure shows: Debian's libvirtd.service reloads
      # with /bin/kill, which libvirt does not depend on. timeout bounds the
      # wait for a job queued behind others; without it, never wait.
      if command -v timeout >/dev/null 2>&1; then
        timeout 30 systemctl reload "$qmw_daemon.service" >/dev/null 2>&1
        qmw_rc=$?
      else
        systemctl --no-block reload "$qmw_daemon.service" >/dev/null 2>&1
        qmw_rc=$?
      fi
      if [ "$qmw_rc" -ne 0 ]; then
        qmw_what="systemctl reload $qmw_daemon.service exited with status $qmw_rc"
        [ "$qmw_rc" -ne 124 ] || qmw_what="systemctl reload $qmw_daemon.service did not finish within 30 s"
        # systemd 252 renamed --kill-who to --kill-whom; each knows only its own in --help.
        qmw_whom=--kill-who
        systemctl --help 2>/dev/null | grep -q -e --kill-whom && qmw_whom=--kill-whom
        qemu_modwatch_reload_failed "$qmw_daemon" "$qmw_what" "$qmw_why" \
          "systemctl kill --signal=HUP $qmw_whom=main $qmw_daemon.service"
      fi
      continue
    fi
    command -v pidof >/dev/null 2>&1 || continue
    for qmw_pid in $(pidof "$qmw_daemon" 2>/dev/null); do
      [ "$(stat -c %u "/proc/$qmw_pid" 2>/dev/null)" = 0 ] || continue
      kill -HUP "$qmw_pid" 2>/dev/null && continue
      # Gone meanwhile: it reads the hooks when it starts again.
      [ -d "/proc/$qmw_pid" ] || continue
      qemu_modwatch_reload_failed "$qmw_daemon (pid $qmw_pid)" "SIGHUP not delivered" "$qmw_why" \
        "kill -HUP $qmw_pid"
    done
  done
  return 0
}

qemu_modwatch_reload_failed() {
  if [ "$3" = remove ]; then
    qmw_meaning="it counts the removed hooks as present until it reloads"
  else
    qmw_meaning="qemu-modwatch's hooks are not active in it until it reloads"
  fi
  echo "qemu-modwatch: could not reload $1 ($2): $qmw_meaning; run: $4" >&2
}
