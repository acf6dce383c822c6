# Shared by the .deb's maintainer scripts and the RPM's scriptlets (both
# embed this at build time, as libvirt-reload.sh).
#
# A time before qemu-modwatch's hooks first arrived (README, "State"): a
# dispatcher's ctime says only when it was placed at the latest (an edit or
# chmod makes it later), and `check` needs a bound the other way. Before the
# package's files arrive, qemu_modwatch_hooks_installed_after writes "now"
# when none of ours is there, and leaves the record as it is when ours are
# (an upgrade: they have been there since). qemu_modwatch_forget_hooks_installed_after
# removes it once none of ours is left. Argument: the root (DPKG_ROOT), or
# none. Never fails the transaction: a record that cannot be written is said
# on stderr in one line.

# The line our dispatchers and install --chain's wrapper carry (src/host/paths.ts HOOK_MARKER; a test keeps them
# equal): what tells ours from an admin's hook that merely runs qemu-modwatch.
QMW_HOOK_MARKER='# qemu-modwatch hook: this line marks a hook file as installed by qemu-modwatch'

# Succeeds when one of our hooks is there: an executable file of the hooks
# libvirt runs with our marker line at its top; a package manager's copy
# (the dispatchers' own list) is not.
qemu_modwatch_hooks_ours() {
  for qmw_f in "${1:-}"/etc/libvirt/hooks/qemu "${1:-}"/etc/libvirt/hooks/daemon \
    "${1:-}"/etc/libvirt/hooks/qemu.d/* "${1:-}"/etc/libvirt/hooks/daemon.d/*; do
    case ${qmw_f##*/} in
      *.dpkg-* | *.rpmnew | *.rpmsave | *.rpmorig | *.ucf-* | *~) continue ;;
    esac
    [ -f "$qmw_f" ] && [ -x "$qmw_f" ] || continue
    head -c 512 "$qmw_f" 2>/dev/null | grep -qxF -e "$QMW_HOOK_MARKER" && return 0
  done
  return 1
}

qemu_modwatch_hooks_installed_after() {
  qmw_rec=${1:-}/var/lib/qemu-modwatch/hooks-installed-after
  qemu_modwatch_hooks_ours "${1:-}" && return 0
  # To the ns where date has %N, else whole seconds: both are times before the hooks arrive.
  qmw_now=$(date +%s.%N 2>/dev/null)
  case $qmw_now in
    *[!0-9.]* | '' | .* | *. | *.*.*) qmw_now=$(date +%s 2>/dev/null) ;;
  esac
  # A temporary file left in the way (a FIFO would block the write) goes first.
  if printf '%s\n' "$qmw_now" | grep -Eqx '[0-9]{1,12}(\.[0-9]{1,9})?' && mkdir -p "${qmw_rec%/*}" 2>/dev/null &&
    rm -f "$qmw_rec.tmp" 2>/dev/null && printf '%s\n' "$qmw_now" >"$qmw_rec.tmp" 2>/dev/null &&
    mv -f "$qmw_rec.tmp" "$qmw_rec" 2>/dev/null; then
    return 0
  fi
  rm -f "$qmw_rec.tmp" "$qmw_rec" 2>/dev/null
  echo "qemu-modwatch: could not record when its hooks were installed in $qmw_rec: until libvirt reloads," \
    "check may say cannot-tell of a daemon that started before them" >&2
  return 0
}

qemu_modwatch_forget_hooks_installed_after() {
  qemu_modwatch_hooks_ours "${1:-}" || rm -f "${1:-}/var/lib/qemu-modwatch/hooks-installed-after" 2>/dev/null
  return 0
}
