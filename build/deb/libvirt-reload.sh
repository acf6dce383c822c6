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
# system. Argument: install (the default) or remove, for MEANING. On install
# a reload that was delivered is awaited, bounded, until the daemon has run
# our daemon hook: what `refresh`, run next, judges hooks-not-loaded by.
qemu_modwatch_reload_libvirt() {
  qmw_why=${1:-install}
  # A daemon in a container reads other hooks than this system's: only one
  # that sees this hooks directory (device and inode, as `check` tells them
  # apart: src/host/daemons.ts) is ours. Gone on removal, its nearest parent
  # here stands in for it. Without stat to tell, every daemon is ours.
  qmw_seen=
  for qmw_dir in /etc/libvirt/hooks /etc/libvirt /etc; do
    qmw_ours=$(stat -Lc %d:%i "$qmw_dir" 2>/dev/null) && qmw_seen=$qmw_dir && break
  done
  for qmw_daemon in libvirtd virtqemud; do
    # What our daemon hook last recorded of this daemon, before the reload.
    qmw_rec_before=$(cat "/var/lib/qemu-modwatch/daemon-hook.$qmw_daemon.json" 2>/dev/null)
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1 &&
      systemctl --quiet is-active "$qmw_daemon.service" 2>/dev/null; then
      # Not --value: systemd before 230 (RHEL 7) prints only NAME=VALUE.
      qmw_pid=$(systemctl show -p MainPID "$qmw_daemon.service" 2>/dev/null | sed -n 's/^MainPID=//p')
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
      elif [ "$qmw_why" = install ]; then
        qemu_modwatch_await_daemon_hook "$qmw_daemon" "$qmw_daemon" "$qmw_pid" "$qmw_rec_before"
      fi
      continue
    fi
    command -v pidof >/dev/null 2>&1 || continue
    for qmw_pid in $(pidof "$qmw_daemon" 2>/dev/null); do
      [ "$(stat -c %u "/proc/$qmw_pid" 2>/dev/null)" = 0 ] || continue
      if [ -n "$qmw_seen" ]; then
        [ "$(stat -Lc %d:%i "/proc/$qmw_pid/root$qmw_seen" 2>/dev/null)" = "$qmw_ours" ] || continue
      fi
      if kill -HUP "$qmw_pid" 2>/dev/null; then
        [ "$qmw_why" != install ] ||
          qemu_modwatch_await_daemon_hook "$qmw_daemon" "$qmw_daemon (pid $qmw_pid)" "$qmw_pid" "$qmw_rec_before"
        continue
      fi
      # Gone meanwhile: it reads the hooks when it starts again.
      [ -d "/proc/$qmw_pid" ] || continue
      qemu_modwatch_reload_failed "$qmw_daemon (pid $qmw_pid)" "SIGHUP not delivered" "$qmw_why" \
        "kill -HUP $qmw_pid"
    done
  done
  return 0
}

# Arguments: the daemon's name, how to name it, its PID, its record before
# the reload. A reload by systemctl returns once the signal is sent (Debian's
# libvirtd.service: /bin/kill -HUP $MAINPID); the daemon runs our daemon hook
# when it handles it, and the hook rewrites its record of that daemon first
# (src/host/paths.ts, stateFiles().daemonHook). At most 5 s: 0.1 s steps, or
# whole seconds where sleep has no fractions; none where there is no sleep.
qemu_modwatch_await_daemon_hook() {
  command -v sleep >/dev/null 2>&1 || return 0
  qmw_step=0.1
  qmw_left=50
  while [ "$(cat "/var/lib/qemu-modwatch/daemon-hook.$1.json" 2>/dev/null)" = "$4" ]; do
    # Gone (or none): it reads the hooks when it starts again. Dead but not
    # yet reaped, its /proc entry stays, without a root.
    [ -n "$3" ] && [ "$3" != 0 ] && [ -d "/proc/$3/root/" ] || return 0
    if [ "$qmw_left" -le 0 ]; then
      echo "qemu-modwatch: no run of qemu-modwatch's daemon hook in $2 was recorded within 5 s of its reload:" \
        "it may not have loaded the hooks; qemu-modwatch status tells" >&2
      return 0
    fi
    if sleep "$qmw_step" 2>/dev/null; then
      qmw_left=$((qmw_left - 1))
    elif [ "$qmw_step" = 0.1 ]; then
      qmw_step=1
      qmw_left=$((qmw_left / 10))
    else
      return 0
    fi
  done
  return 0
}

# Arguments: the daemon as named, what failed, install or remove, the command.
qemu_modwatch_reload_failed() {
  if [ "$3" = remove ]; then
    qmw_meaning="it counts the removed hooks as present until it reloads"
  elif qemu_modwatch_other_hook qemu; then
    # libvirt runs a new drop-in at once for a driver that had a hook when the daemon started or reloaded.
    qmw_meaning="qemu-modwatch's QEMU hook is active in it only if a QEMU hook was there when it started or"
    qmw_meaning="$qmw_meaning last reloaded; qemu-modwatch status tells"
  elif qemu_modwatch_other_hook daemon; then
    qmw_meaning="qemu-modwatch's QEMU hook is not active in it until it reloads"
  else
    qmw_meaning="qemu-modwatch's hooks are not active in it until it reloads"
  fi
  echo "qemu-modwatch: could not reload $1 ($2): $qmw_meaning; run: $4" >&2
}

# Whether libvirt has a hook of this driver besides the package's drop-in:
# any executable file it would run, whoever's (dotfiles and backups too).
qemu_modwatch_other_hook() {
  for qmw_f in "/etc/libvirt/hooks/$1" "/etc/libvirt/hooks/$1.d"/* "/etc/libvirt/hooks/$1.d"/.*; do
    [ "$qmw_f" != "/etc/libvirt/hooks/$1.d/50-qemu-modwatch" ] && [ -f "$qmw_f" ] && [ -x "$qmw_f" ] && return 0
  done
  return 1
}
